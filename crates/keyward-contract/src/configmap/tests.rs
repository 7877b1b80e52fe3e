//! The stored form of a key set: names, labels, where each shard goes, and the one reading rule.

use k8s_openapi::ByteString;

use super::*;
use crate::keyset::{KeySet, Record, RecordState, assemble, encode_packed};
use crate::token::KeyHash;

fn id(name: &str) -> KeySetId {
    KeySetId { namespace: "team-a".into(), name: name.into() }
}

fn record(n: u64) -> Record {
    let hash = KeyHash::of_token_text(&format!("stored-token-{n}"));
    Record {
        hash,
        key_id: hash.key_id(),
        namespace: "team-a".into(),
        name: format!("key-{n}"),
        scopes: vec!["orders:read".parse().unwrap()],
        not_before: "2026-11-01T00:00:00Z".parse().unwrap(),
        not_after: None,
        state: RecordState::Active,
        rate_limit: None,
    }
}

/// The ConfigMaps the publisher writes for `records`, with shards of at most `max_bytes`.
fn stored(name: &str, generation: u64, records: &[Record], max_bytes: usize) -> Vec<ConfigMap> {
    let shards = encode_packed(&id(name), generation, records, max_bytes).unwrap();
    layout(&id(name), shards).iter().map(|s| s.to_configmap(&id(name))).collect()
}

fn read_back(configmaps: &[ConfigMap]) -> Vec<KeySet> {
    assemble(read_shards(configmaps).unwrap()).unwrap()
}

#[test]
fn shard_i_of_a_key_set_is_configmap_keyset_name_i_under_key_name_i_keyset() {
    let cms = stored("default", 3, &[record(1)], 512 * 1024);
    assert_eq!(cms.len(), 1);
    let cm = &cms[0];
    assert_eq!(cm.metadata.name.as_deref(), Some("keyset-default-1"));
    assert_eq!(cm.metadata.namespace.as_deref(), Some("team-a"));
    let keys: Vec<_> = cm.data.iter().flatten().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["default.1.keyset"]);
    assert_eq!(cm.binary_data, None);
}

#[test]
fn shards_carry_the_labels_their_readers_select_by() {
    let cm = &stored("payments", 1, &[record(1)], 512 * 1024)[0];
    let labels = cm.metadata.labels.clone().unwrap();
    assert_eq!(labels.get("app.kubernetes.io/managed-by").map(String::as_str), Some("keyward"));
    assert_eq!(labels.get("keyward.dev/keyset").map(String::as_str), Some("payments"));
    assert_eq!(label_selector("payments"), "app.kubernetes.io/managed-by=keyward,keyward.dev/keyset=payments");
    assert_eq!(any_keyset_selector(), "app.kubernetes.io/managed-by=keyward,keyward.dev/keyset");
}

#[test]
fn plain_shards_go_under_data_and_gzip_shards_under_binary_data_and_both_read_back() {
    let records: Vec<Record> = (1..=40).map(record).collect();
    let plain = stored("default", 7, &records[..1], 2048);
    assert!(plain.iter().all(|cm| cm.binary_data.is_none() && cm.data.is_some()), "{plain:?}");
    let gzip = stored("default", 7, &records, 2048);
    assert!(gzip.iter().all(|cm| cm.data.is_none() && cm.binary_data.is_some()), "{gzip:?}");
    let sets = read_back(&gzip);
    assert_eq!(sets.len(), 1);
    assert_eq!((sets[0].generation, sets[0].records.len()), (7, 40));
    assert_eq!(read_back(&plain)[0].records, records[..1].to_vec());
}

#[test]
fn readers_take_every_keyset_key_and_ignore_other_keys() {
    let mut cms = stored("default", 2, &[record(1)], 512 * 1024);
    let data = cms[0].data.as_mut().unwrap();
    data.insert("README".into(), "hand-written".into());
    cms[0].binary_data = Some(BTreeMap::from([("notes.bin".into(), ByteString(vec![0, 1, 2]))]));
    let sets = read_back(&cms);
    assert_eq!(sets[0].records, vec![record(1)]);
    assert_eq!(highest_generation(&cms), 2);
}

#[test]
fn a_shard_that_does_not_decode_names_its_configmap_and_key() {
    let mut cms = stored("default", 2, &[record(1)], 512 * 1024);
    cms[0].data.as_mut().unwrap().values_mut().for_each(|v| v.push_str("garbage"));
    match read_shards(&cms) {
        Err(ReadError::Decode { configmap, key, .. }) => {
            assert_eq!((configmap.as_str(), key.as_str()), ("keyset-default-1", "default.1.keyset"));
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
    assert_eq!(highest_generation(&cms), 0, "an undecodable shard has no generation");
}

#[test]
fn configmaps_without_a_keyset_key_hold_no_shards() {
    let cm = ConfigMap { data: Some(BTreeMap::from([("README".into(), "x".into())])), ..ConfigMap::default() };
    assert!(matches!(read_shards([&cm]), Err(ReadError::NoShards)));
    assert!(matches!(read_shards(std::iter::empty()), Err(ReadError::NoShards)));
}

#[test]
fn the_writer_sees_its_shard_stored_only_when_it_is_the_one_key() {
    let shard = layout(&id("default"), encode_packed(&id("default"), 1, &[record(1)], 512 * 1024).unwrap()).remove(0);
    let mut cm = shard.to_configmap(&id("default"));
    assert!(shard.is_stored_in(&cm));
    assert_eq!(shard.foreign_keys(&cm), (vec![], vec![]));

    cm.data.as_mut().unwrap().insert("README".into(), "x".into());
    cm.binary_data = Some(BTreeMap::from([("default.1.keyset".into(), ByteString(vec![0x1f, 0x8b]))]));
    assert!(!shard.is_stored_in(&cm), "extra keys make the writer rewrite");
    assert_eq!(shard.foreign_keys(&cm), (vec!["README".to_owned()], vec!["default.1.keyset".to_owned()]));

    let other = layout(&id("default"), encode_packed(&id("default"), 2, &[record(1)], 512 * 1024).unwrap()).remove(0);
    assert!(!other.is_stored_in(&shard.to_configmap(&id("default"))), "another generation is another shard");
}
