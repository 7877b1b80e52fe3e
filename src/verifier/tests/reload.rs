//! Reloading from stored shards: the fast path builds the same index as the strict decoder, and refusals keep its errors.

use std::path::PathBuf;

use proptest::prelude::*;

use super::fixtures::*;
use crate::keyset::{self, KeySetId, Record, RecordState, assemble, assemble_scanned, decode_shard, scan_shard};
use crate::verifier::index::KeyIndex;
use crate::verifier::loader::{ReloadError, index_from_stored};

fn stored(name: &str, generation: u64, records: &[Record], max_bytes: usize) -> Vec<(PathBuf, Vec<u8>)> {
    let id = KeySetId { namespace: "team-a".into(), name: name.into() };
    keyset::encode_packed(&id, generation, records, max_bytes)
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, s)| (PathBuf::from(keyset::shard_file_name(name, i + 1)), s.as_bytes().to_vec()))
        .collect()
}

fn strict(stored: &[(PathBuf, Vec<u8>)], previous: Option<&KeyIndex>) -> KeyIndex {
    let shards = stored.iter().map(|(_, b)| decode_shard(b).unwrap()).collect();
    KeyIndex::build(assemble(shards).unwrap(), previous).unwrap()
}

/// The index built by the scanner alone, without the strict fallback.
fn scanned(stored: &[(PathBuf, Vec<u8>)], previous: Option<&KeyIndex>) -> KeyIndex {
    let shards = stored.iter().map(|(_, b)| scan_shard(b).expect("the scanner accepts a valid shard")).collect();
    KeyIndex::from_scanned(&assemble_scanned(shards).unwrap(), previous).unwrap()
}

fn arb_records() -> impl Strategy<Value = Vec<Record>> {
    let scopes = prop::sample::subsequence(vec!["leads:read", "leads:write", "*:admin", "orders:read"], 1..4);
    let limit = prop::option::of(prop::sample::select(vec!["1/1h", "10/1m/2", "100/1s"]));
    let state = prop::sample::select(vec![RecordState::Active, RecordState::Inactive, RecordState::Revoked]);
    prop::collection::vec((scopes, limit, state, any::<bool>()), 0..200).prop_map(|keys| {
        keys.into_iter()
            .enumerate()
            .map(|(i, (scopes, limit, state, expires))| {
                let mut r = with_state(record(&token(i as u64), &scopes), state);
                if expires {
                    r = with_window(r, "2026-11-01T00:00:00Z", Some("2026-12-01T00:00:00Z"));
                }
                if let Some(limit) = limit {
                    r = with_limit(r, limit);
                }
                r
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn the_scanner_and_the_strict_decoder_build_the_same_index(records in arb_records(), shard_bytes in 2_000usize..40_000) {
        let files = stored("default", 4, &records, shard_bytes);
        let (fast, slow) = (scanned(&files, None), strict(&files, None));
        prop_assert_eq!(fast.len(), slow.len());
        prop_assert_eq!(fast.sets(), slow.sets());
        for r in &records {
            let (f, s) = (fast.get(&r.hash).unwrap(), slow.get(&r.hash).unwrap());
            prop_assert_eq!(f.facts(), s.facts());
        }
        prop_assert!(fast.get(&token(100_000).hash()).is_none());
    }
}

#[test]
fn a_set_split_over_many_gzip_shards_loads_through_the_fast_path() {
    let records: Vec<Record> = (0..3_000).map(|i| record(&token(i), &["leads:read"])).collect();
    let files = stored("default", 1, &records, 16 * 1024);
    assert!(files.len() > 3, "several shards, so the parallel scan has work to split");
    let index = index_from_stored(&files, None).unwrap();
    assert_eq!(index.len(), 3_000);
    assert!(records.iter().all(|r| index.get(&r.hash).is_some()));
}

#[test]
fn a_hash_in_two_key_sets_is_refused_with_the_strict_decoders_error() {
    let shared = record(&token(1), &["leads:read"]);
    let mut files = stored("one", 1, &[shared.clone(), record(&token(2), &["leads:read"])], 512 * 1024);
    files.extend(stored("two", 1, &[shared], 512 * 1024));
    let err = index_from_stored(&files, None).unwrap_err();
    assert!(matches!(err, ReloadError::Load(keyset::LoadError::Assemble(_))), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("key set not loaded: key id {} appears in more than one record", token(1).hash().key_id())
    );
}

#[test]
fn a_malformed_shard_is_refused_naming_file_line_and_field_without_quoting_it() {
    let mut files = stored("default", 1, &[record(&token(1), &["leads:read"])], 512 * 1024);
    let text = String::from_utf8(files[0].1.clone()).unwrap();
    let secret = token(9);
    files[0].1 = text.replace("2026-11-01T00:00:00Z", secret.expose()).into_bytes();
    let err = index_from_stored(&files, None).unwrap_err().to_string();
    assert_eq!(err, "key set not loaded: default.1.keyset: line 2: field not-before is missing or malformed");
    assert!(!err.contains(secret.expose()));
}

#[test]
fn a_reload_through_the_fast_path_keeps_buckets_whose_limit_did_not_change() {
    let (same, changed) = (token(1), token(2));
    let records = |changed_limit: &str| {
        vec![
            with_limit(record(&same, &["leads:read"]), "1/1h/1"),
            with_limit(record(&changed, &["leads:read"]), changed_limit),
        ]
    };
    let first = index_from_stored(&stored("default", 1, &records("1/1h/1"), 512 * 1024), None).unwrap();
    for t in [&same, &changed] {
        let bucket = first.get(&t.hash()).unwrap().bucket.unwrap();
        assert!(bucket.try_acquire(now().monotonic).is_ok());
    }
    let second = index_from_stored(&stored("default", 2, &records("2/1h/2"), 512 * 1024), Some(&first)).unwrap();
    let bucket = |t: &crate::token::Token| second.get(&t.hash()).unwrap().bucket.unwrap();
    assert!(bucket(&same).try_acquire(now().monotonic).is_err(), "the used-up bucket carried over");
    assert!(bucket(&changed).try_acquire(now().monotonic).is_ok(), "a changed limit starts a full bucket");
}

#[test]
fn a_valid_shard_the_fast_path_cannot_preview_still_loads() {
    // Over 64 KiB of comments before the header: no peek, so the strict decoder reads it.
    let mut files = stored("default", 1, &[record(&token(1), &["leads:read"])], 512 * 1024);
    let text = String::from_utf8(files[0].1.clone()).unwrap();
    files[0].1 = format!("{}{text}", "# padding\n".repeat(7_000)).into_bytes();
    let index = index_from_stored(&files, None).unwrap();
    assert!(index.get(&token(1).hash()).is_some());
}

#[test]
fn a_corrupt_shard_among_many_stops_the_scan_and_is_named() {
    let records: Vec<Record> = (0..3_000).map(|i| record(&token(i), &["leads:read"])).collect();
    let mut files = stored("default", 1, &records, 16 * 1024);
    let last = files.len() - 1;
    let middle = files.len() / 2;
    for i in [middle, last] {
        let bytes = &mut files[i].1;
        let at = bytes.len() / 2;
        bytes[at] ^= 0xff;
    }
    let err = index_from_stored(&files, None).unwrap_err().to_string();
    let named = files[middle].0.display().to_string();
    assert!(err.starts_with(&format!("key set not loaded: {named}: ")), "{err}");
}

#[test]
fn reloading_identical_files_keeps_the_index_in_force_and_a_change_replaces_it() {
    use std::sync::Arc;

    use crate::verifier::loader::{KeyStore, Loader};
    use crate::verifier::metrics::Metrics;

    let dir = tempfile::tempdir().unwrap();
    let write = |records: &[Record], generation| {
        for (name, bytes) in stored("default", generation, records, 512 * 1024) {
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
    };
    let (a, b) = (token(1), token(2));
    write(&[record(&a, &["leads:read"])], 1);
    let (store, metrics) = (Arc::new(KeyStore::default()), Arc::new(Metrics::new()));
    let mut loader = Loader::new(vec![dir.path().to_owned()], Arc::clone(&store), Arc::clone(&metrics));
    loader.reload().unwrap();
    let first = store.current().unwrap();
    loader.reload().unwrap();
    assert!(Arc::ptr_eq(&first, &store.current().unwrap()), "same bytes: the index in force stays");
    assert!(metrics.encode().contains("keyward_verifier_reloads_total 2"), "{}", metrics.encode());
    write(&[record(&a, &["leads:read"]), record(&b, &["leads:read"])], 2);
    loader.reload().unwrap();
    let second = store.current().unwrap();
    assert!(!Arc::ptr_eq(&first, &second));
    assert!(second.get(&b.hash()).is_some());
    assert_eq!(second.sets()[0].generation, 2);
}
