use jiff::Timestamp;
use proptest::prelude::*;

use super::*;
use crate::token::KeyHash;

pub(super) fn id(ns: &str, name: &str) -> KeySetId {
    KeySetId { namespace: ns.into(), name: name.into() }
}

fn hash_of(n: u64) -> KeyHash {
    KeyHash::of_token_text(&format!("golden-token-{n}"))
}

fn time(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn record(n: u64, name: &str, scopes: &[&str]) -> Record {
    let hash = hash_of(n);
    Record {
        hash,
        key_id: hash.key_id(),
        namespace: "team-a".into(),
        name: name.into(),
        scopes: scopes.iter().map(|s| s.parse().unwrap()).collect(),
        not_before: time("2026-11-01T09:00:00Z"),
        not_after: None,
        state: RecordState::Active,
        rate_limit: None,
    }
}

/// Three keys that cover every field variant the format has.
fn golden_records() -> Vec<Record> {
    let crm = record(1, "crm-integration", &["leads:read", "leads:write", "contacts:read", "contacts:write"]);
    let mut partner_new = record(2, "partner", &["orders:read"]);
    partner_new.not_before = time("2026-11-20T12:00:00Z");
    partner_new.rate_limit = Some(RateLimit { requests: 100, period: "1m".parse().unwrap(), burst: 20 });
    let mut partner_old = partner_new.clone();
    partner_old.hash = hash_of(3);
    partner_old.key_id = partner_old.hash.key_id();
    partner_old.not_before = time("2026-08-22T12:00:00Z");
    partner_old.not_after = Some(time("2026-11-21T12:00:00Z"));
    partner_old.rate_limit = Some(RateLimit { requests: 100, period: "1m".parse().unwrap(), burst: 100 });
    let mut paused = record(4, "analytics-ro", &["analytics:read"]);
    paused.state = RecordState::Inactive;
    paused.not_after = Some(time("2027-01-01T00:00:00Z"));
    vec![partner_new, crm, paused, partner_old]
}

fn golden_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden").join(name)
}

/// Compare with a golden file; `UPDATE_GOLDEN=1` rewrites it instead.
fn assert_golden(name: &str, actual: &str) {
    let path = golden_path(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(actual, expected, "encoding changed; if on purpose, bump the format or rerun with UPDATE_GOLDEN=1");
}

#[test]
fn the_format_is_pinned_by_a_golden_file() {
    let shards = encode(&id("team-a", "default"), 7, &golden_records(), DEFAULT_MAX_SHARD_BYTES).unwrap();
    assert_eq!(shards.len(), 1);
    assert_golden("team-a.default.1.keyset", &shards[0]);
}

#[test]
fn an_empty_key_set_is_one_shard_with_no_records() {
    let shards = encode(&id("team-a", "default"), 1, &[], DEFAULT_MAX_SHARD_BYTES).unwrap();
    assert_eq!(shards, vec!["keyward-keyset v1 keyset=team-a/default generation=1 shard=1/1 records=0\n".to_owned()]);
    let decoded = decode_shard(shards[0].as_bytes()).unwrap();
    assert!(decoded.records.is_empty());
}

#[test]
fn the_golden_file_decodes_to_the_records_it_was_made_from() {
    let text = std::fs::read(golden_path("team-a.default.1.keyset")).unwrap();
    let shard = decode_shard(&text).unwrap();
    let mut expected = golden_records();
    expected.sort_by(|a, b| (&a.name, a.not_before).cmp(&(&b.name, b.not_before)));
    assert_eq!(shard.records, expected);
    assert_eq!((shard.generation, shard.index, shard.total), (7, 1, 1));
}

#[test]
fn large_sets_split_into_shards_under_the_limit_and_reassemble() {
    let records: Vec<Record> = (0..2_000).map(|n| record(n, &format!("key-{n:05}"), &["orders:read"])).collect();
    let max = 16 * 1024;
    let shards = encode(&id("team-a", "big"), 3, &records, max).unwrap();
    assert!(shards.len() > 10, "expected many shards, got {}", shards.len());
    for shard in &shards {
        assert!(shard.len() <= max, "shard of {} bytes exceeds {max}", shard.len());
    }
    let decoded: Vec<Shard> = shards.iter().map(|s| decode_shard(s.as_bytes()).unwrap()).collect();
    let sets = assemble(decoded).unwrap();
    assert_eq!(sets.len(), 1);
    assert_eq!(sets[0].records.len(), 2_000);
}

#[test]
fn encoding_the_same_records_in_any_order_gives_the_same_bytes() {
    let mut records = golden_records();
    let a = encode(&id("team-a", "default"), 1, &records, DEFAULT_MAX_SHARD_BYTES).unwrap();
    records.reverse();
    let b = encode(&id("team-a", "default"), 1, &records, DEFAULT_MAX_SHARD_BYTES).unwrap();
    assert_eq!(a, b);
}

#[test]
fn records_outside_the_format_are_refused_when_encoding() {
    let mut ancient = record(1, "a", &["x:read"]);
    ancient.not_before = "-000005-01-01T00:00:00Z".parse().unwrap();
    let mut empty_window = record(2, "b", &["x:read"]);
    empty_window.not_before = "2026-01-01T00:00:00.9Z".parse().unwrap();
    empty_window.not_after = Some("2026-01-01T00:00:00.95Z".parse().unwrap());
    for bad in [ancient, empty_window] {
        let err = encode(&id("team-a", "default"), 1, &[bad], DEFAULT_MAX_SHARD_BYTES).unwrap_err();
        assert!(matches!(err, EncodeError::InvalidRecord { .. }), "{err:?}");
    }
    let err = encode(&id("team-a", "default"), 1, &[], 2 * 1024 * 1024).unwrap_err();
    assert_eq!(err, EncodeError::Limits);
}

#[test]
fn sub_second_times_are_written_rounded_down() {
    let mut precise = record(1, "a", &["x:read"]);
    precise.not_before = "2026-01-01T00:00:00.7Z".parse().unwrap();
    precise.not_after = Some("2026-02-01T00:00:00.7Z".parse().unwrap());
    let shards = encode(&id("team-a", "default"), 1, &[precise], DEFAULT_MAX_SHARD_BYTES).unwrap();
    let back = decode_shard(shards[0].as_bytes()).unwrap().records.remove(0);
    assert_eq!(back.not_before, time("2026-01-01T00:00:00Z"));
    assert_eq!(back.not_after, Some(time("2026-02-01T00:00:00Z")));
}

#[test]
fn duplicate_hashes_are_refused_when_encoding() {
    let records = vec![record(1, "a", &["x:read"]), record(1, "b", &["x:read"])];
    let err = encode(&id("team-a", "default"), 1, &records, DEFAULT_MAX_SHARD_BYTES).unwrap_err();
    assert!(matches!(err, EncodeError::DuplicateHash(_)), "{err:?}");
}

pub(super) fn golden_text() -> String {
    std::fs::read_to_string(golden_path("team-a.default.1.keyset")).unwrap()
}

/// Replace the `field`th space-separated field of line `line` (1-based) of the golden shard.
fn with_field(line: usize, field: usize, value: &str) -> String {
    let mut lines: Vec<String> = golden_text().lines().map(str::to_owned).collect();
    let mut fields: Vec<&str> = lines[line - 1].split(' ').collect();
    fields[field] = value;
    lines[line - 1] = fields.join(" ");
    lines.join("\n") + "\n"
}

#[test]
fn every_malformed_field_is_reported_with_its_line() {
    use DecodeErrorKind as K;
    let cases: Vec<(String, DecodeError)> = vec![
        (String::new(), DecodeError { line: 0, kind: K::MissingHeader }),
        ("hello\n".into(), DecodeError { line: 1, kind: K::NotAKeySet }),
        (golden_text().replacen(" v1 ", " v3 ", 1), DecodeError { line: 1, kind: K::UnsupportedVersion }),
        (golden_text().replacen(" v1 ", " v2 ", 1), DecodeError { line: 1, kind: K::InvalidField(Field::Access) }),
        (with_field(1, 2, "keyset=Team/x"), DecodeError { line: 1, kind: K::InvalidField(Field::KeySet) }),
        (with_field(1, 3, "generation=-1"), DecodeError { line: 1, kind: K::InvalidField(Field::Generation) }),
        (with_field(1, 4, "shard=2/1"), DecodeError { line: 1, kind: K::InvalidField(Field::Shard) }),
        (with_field(1, 5, "records=x"), DecodeError { line: 1, kind: K::InvalidField(Field::Records) }),
        (with_field(1, 5, "records=3"), DecodeError { line: 0, kind: K::RecordCount { declared: 3, found: 4 } }),
        (with_field(2, 0, "sha256:xyz"), DecodeError { line: 2, kind: K::InvalidField(Field::Hash) }),
        (with_field(2, 1, "000000000000"), DecodeError { line: 2, kind: K::KeyIdMismatch }),
        (with_field(2, 1, "nothex"), DecodeError { line: 2, kind: K::InvalidField(Field::KeyId) }),
        (with_field(2, 2, "team-a"), DecodeError { line: 2, kind: K::InvalidField(Field::Owner) }),
        (with_field(2, 3, "leads:delete"), DecodeError { line: 2, kind: K::InvalidField(Field::Scopes) }),
        (with_field(2, 3, "leads:read,leads:read"), DecodeError { line: 2, kind: K::DuplicateScope }),
        (with_field(2, 4, "2026-11-01 09:00"), DecodeError { line: 2, kind: K::FieldCount(9) }),
        (
            with_field(2, 4, "2026-11-01T09:00:00+00:00"),
            DecodeError { line: 2, kind: K::InvalidField(Field::NotBefore) },
        ),
        (with_field(2, 5, "2020-01-01T00:00:00Z"), DecodeError { line: 2, kind: K::EmptyWindow }),
        (with_field(2, 5, "soon"), DecodeError { line: 2, kind: K::InvalidField(Field::NotAfter) }),
        (with_field(2, 6, "enabled"), DecodeError { line: 2, kind: K::InvalidField(Field::State) }),
        (with_field(2, 7, "0/1m"), DecodeError { line: 2, kind: K::InvalidField(Field::RateLimit) }),
        (with_field(2, 7, "10/0s"), DecodeError { line: 2, kind: K::InvalidField(Field::RateLimit) }),
        (with_field(2, 7, "10/1m/5/1"), DecodeError { line: 2, kind: K::InvalidField(Field::RateLimit) }),
        (with_field(1, 3, "generation=07"), DecodeError { line: 1, kind: K::InvalidField(Field::Generation) }),
        (with_field(1, 4, "shard=01/1"), DecodeError { line: 1, kind: K::InvalidField(Field::Shard) }),
        (with_field(2, 5, "2027-12-31T23:59:60Z"), DecodeError { line: 2, kind: K::InvalidField(Field::NotAfter) }),
        (with_field(2, 7, "10/1m/10"), DecodeError { line: 2, kind: K::InvalidField(Field::RateLimit) }),
        (with_field(2, 7, "010/1m"), DecodeError { line: 2, kind: K::InvalidField(Field::RateLimit) }),
        (golden_text().replacen('\n', "\n\n", 1), DecodeError { line: 2, kind: K::BlankLine }),
        (golden_text().replacen("analytics", "analytics\u{e9}", 1), DecodeError { line: 0, kind: K::NotAscii }),
        (golden_text().replacen(' ', "\t", 1), DecodeError { line: 0, kind: K::NotAscii }),
    ];
    for (input, expected) in cases {
        assert_eq!(decode_shard(input.as_bytes()), Err(expected), "input:\n{input}");
    }
}

#[test]
fn a_repeated_hash_names_both_lines() {
    let text = golden_text();
    let mut lines: Vec<&str> = text.lines().collect();
    let copy = lines[1];
    lines.push(copy);
    let text = lines.join("\n").replacen("records=4", "records=5", 1);
    assert_eq!(
        decode_shard(text.as_bytes()).unwrap_err(),
        DecodeError { line: 6, kind: DecodeErrorKind::DuplicateHash(2) }
    );
}

#[test]
fn comments_are_ignored_and_do_not_shift_line_numbers() {
    let text = format!("# hand edited\n{}", with_field(1, 5, "records=x"));
    assert_eq!(decode_shard(text.as_bytes()).unwrap_err().line, 2);
    let text = format!("# hand edited\n{}", golden_text());
    assert_eq!(decode_shard(text.as_bytes()).unwrap().records.len(), 4);
}

#[test]
fn errors_never_quote_the_offending_text() {
    let secret = "kw_ThisCouldBeATokenPastedByMistake0000000";
    let text = with_field(2, 0, secret);
    let message = decode_shard(text.as_bytes()).unwrap_err().to_string();
    assert!(!message.contains("ThisCouldBe"), "{message}");
}

#[test]
fn incomplete_or_mixed_shard_sets_are_refused() {
    let records: Vec<Record> = (0..300).map(|n| record(n, &format!("k{n}"), &["a:read"])).collect();
    let encode_gen = |generation| {
        encode(&id("team-a", "s"), generation, &records, 8 * 1024)
            .unwrap()
            .iter()
            .map(|s| decode_shard(s.as_bytes()).unwrap())
            .collect::<Vec<_>>()
    };
    let shards = encode_gen(1);
    assert!(shards.len() >= 3);

    let mut missing = shards.clone();
    missing.remove(1);
    assert!(matches!(assemble(missing), Err(AssembleError::MissingShard { index: 2, .. })));

    let mut last_missing = shards.clone();
    last_missing.pop();
    assert!(matches!(assemble(last_missing), Err(AssembleError::MissingShard { .. })));

    let mut twice = shards.clone();
    twice.push(shards[0].clone());
    assert!(matches!(assemble(twice), Err(AssembleError::DuplicateShard { index: 1, .. })));

    let mut mixed = shards.clone();
    mixed[0] = encode_gen(2).remove(0);
    assert!(matches!(assemble(mixed), Err(AssembleError::MixedGenerations { .. })));

    let mut two_sets = encode_gen(1);
    let mut other = two_sets[0].clone();
    other.id = id("team-b", "s");
    other.total = 1;
    two_sets.push(other);
    assert!(matches!(assemble(two_sets), Err(AssembleError::DuplicateHash(_))));
}

pub(super) fn arb_record() -> impl Strategy<Value = Record> {
    let scope = prop_oneof![Just("read"), Just("write"), Just("admin")]
        .prop_flat_map(|action| "[a-z][a-z0-9_.-]{0,10}[a-z0-9]".prop_map(move |r| format!("{r}:{action}")));
    (
        any::<[u8; 32]>(),
        "[a-z][a-z0-9-]{0,20}[a-z0-9]",
        "[a-z0-9]([a-z0-9.-]{0,30}[a-z0-9])?",
        prop::collection::btree_set(scope, 1..5),
        0i64..4_000_000_000,
        prop::option::of(1i64..1_000_000_000),
        prop_oneof![Just(RecordState::Active), Just(RecordState::Inactive), Just(RecordState::Revoked)],
        prop::option::of((
            1u32..100_000,
            prop_oneof![Just("1s"), Just("1m"), Just("1h"), Just("1d"), Just("1h30m")],
            1u32..1_000,
        )),
    )
        .prop_filter("names must be DNS subdomains", |(_, _, name, ..)| {
            name.split('.').all(|l| !l.is_empty() && !l.starts_with('-') && !l.ends_with('-'))
        })
        .prop_map(|(hash, namespace, name, scopes, start, length, state, limit)| {
            let hash = KeyHash::from_bytes(hash);
            let not_before = Timestamp::from_second(start).unwrap();
            Record {
                hash,
                key_id: hash.key_id(),
                namespace,
                name,
                scopes: scopes.iter().map(|s| s.parse().unwrap()).collect(),
                not_before,
                not_after: length.map(|l| Timestamp::from_second(start + l).unwrap()),
                state,
                rate_limit: limit.map(|(requests, period, burst)| RateLimit {
                    requests,
                    period: period.parse().unwrap(),
                    burst,
                }),
            }
        })
}

proptest! {
    // Each case encodes and decodes dozens of records; 64 cases keep the suite quick.
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_set_of_records_round_trips(records in prop::collection::vec(arb_record(), 0..60), generation in any::<u64>()) {
        let mut unique = records;
        unique.sort_by_key(|r| r.hash);
        unique.dedup_by_key(|r| r.hash);
        let shards = encode(&id("ns", "set"), generation, &unique, 4 * 1024).unwrap();
        let decoded: Vec<Shard> = shards.iter().map(|s| decode_shard(s.as_bytes()).unwrap()).collect();
        let mut back = assemble(decoded).unwrap().remove(0).records;
        back.sort_by_key(|r| r.hash);
        prop_assert_eq!(back, unique);
    }
}

proptest! {
    // Cheap cases: many of them.
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = decode_shard(&bytes);
    }

    #[test]
    fn decoding_mutated_shards_never_panics(pos in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
        let mut text = golden_text().into_bytes();
        let i = pos.index(text.len());
        text[i] = byte;
        let _ = decode_shard(&text);
        text.truncate(cut.index(text.len()));
        let _ = decode_shard(&text);
    }
}

mod packed {
    use super::*;

    fn many(count: u64) -> Vec<Record> {
        (0..count).map(|n| record(n, &format!("integration-{n:05}"), &["orders:read", "orders:write"])).collect()
    }

    #[test]
    fn a_set_that_fits_one_shard_stays_plain_text() {
        let records = golden_records();
        let packed = encode_packed(&id("team-a", "default"), 7, &records, DEFAULT_MAX_SHARD_BYTES).unwrap();
        let plain = encode(&id("team-a", "default"), 7, &records, DEFAULT_MAX_SHARD_BYTES).unwrap();
        assert_eq!(packed, vec![ShardBytes::Text(plain[0].clone())]);
    }

    #[test]
    fn a_large_set_is_gzipped_into_fewer_shards_that_each_fit() {
        let records = many(3_000);
        let max = 32 * 1024;
        let plain = encode(&id("team-a", "big"), 1, &records, max).unwrap();
        let packed = encode_packed(&id("team-a", "big"), 1, &records, max).unwrap();
        assert!(packed.iter().all(|s| matches!(s, ShardBytes::Gzip(_))), "expected gzip shards");
        assert!(packed.iter().all(|s| s.as_bytes().len() <= max), "a shard exceeds {max} bytes");
        assert!(packed.len() * 3 <= plain.len(), "gzip gave {} shards, plain {}", packed.len(), plain.len());
        let decoded = packed.iter().map(|s| decode_shard(s.as_bytes()).unwrap()).collect();
        let mut back = assemble(decoded).unwrap().remove(0).records;
        let mut expected = records;
        back.sort_by_key(|r| r.hash);
        expected.sort_by_key(|r| r.hash);
        assert_eq!(back, expected);
    }

    #[test]
    fn a_set_larger_than_one_plain_shard_packs_at_the_default_shard_size() {
        // The text budget for gzip shards (four times the stored size) is above the
        // stored-shard limit; it must be bounded by the inflate limit instead.
        let records = many(5_000);
        let packed = encode_packed(&id("team-a", "big"), 1, &records, DEFAULT_MAX_SHARD_BYTES).unwrap();
        assert!(packed.iter().all(|s| matches!(s, ShardBytes::Gzip(_))), "expected gzip shards");
        let decoded = packed.iter().map(|s| decode_shard(s.as_bytes()).unwrap()).collect();
        assert_eq!(assemble(decoded).unwrap().remove(0).records.len(), records.len());
    }

    #[test]
    fn packing_is_deterministic() {
        let records = many(2_000);
        let a = encode_packed(&id("team-a", "big"), 1, &records, 16 * 1024).unwrap();
        let b = encode_packed(&id("team-a", "big"), 1, &records, 16 * 1024).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn corrupt_or_truncated_gzip_is_refused() {
        let packed = encode_packed(&id("team-a", "big"), 1, &many(2_000), 16 * 1024).unwrap();
        let mut bytes = packed[0].as_bytes().to_vec();
        let kind = |b: &[u8]| decode_shard(b).unwrap_err().kind;
        assert_eq!(kind(&bytes[..bytes.len() / 2]), DecodeErrorKind::CorruptCompression);
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        assert_eq!(kind(&bytes), DecodeErrorKind::CorruptCompression);
    }

    #[test]
    fn bytes_after_the_gzip_stream_are_refused() {
        let packed = encode_packed(&id("team-a", "big"), 1, &many(2_000), 16 * 1024).unwrap();
        let mut bytes = packed[0].as_bytes().to_vec();
        assert!(decode_shard(&bytes).is_ok());
        bytes.extend_from_slice(b"trailing");
        assert_eq!(decode_shard(&bytes).unwrap_err().kind, DecodeErrorKind::CorruptCompression);
    }

    #[test]
    fn a_decompression_bomb_is_refused() {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(&vec![b'#'; MAX_TEXT_BYTES + 1]).unwrap();
        let bomb = encoder.finish().unwrap();
        assert!(bomb.len() < 64 * 1024, "the bomb should be small: {}", bomb.len());
        assert_eq!(decode_shard(&bomb).unwrap_err().kind, DecodeErrorKind::TextTooLarge);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn packed_sets_round_trip(records in prop::collection::vec(arb_record(), 0..80)) {
            let mut unique = records;
            unique.sort_by_key(|r| r.hash);
            unique.dedup_by_key(|r| r.hash);
            let packed = encode_packed(&id("ns", "set"), 3, &unique, 2 * 1024).unwrap();
            prop_assert!(packed.iter().all(|s| s.as_bytes().len() <= 2 * 1024));
            let decoded = packed.iter().map(|s| decode_shard(s.as_bytes()).unwrap()).collect();
            let mut back = assemble(decoded).unwrap().remove(0).records;
            back.sort_by_key(|r| r.hash);
            prop_assert_eq!(back, unique);
        }
    }

    proptest! {
        #[test]
        fn decoding_mutated_gzip_never_panics(pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
            static PACKED: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
                encode_packed(&id("team-a", "big"), 1, &many(300), 4 * 1024).unwrap()[0].as_bytes().to_vec()
            });
            let mut bytes = PACKED.clone();
            let i = pos.index(bytes.len());
            bytes[i] = byte;
            let _ = decode_shard(&bytes);
        }
    }
}

mod dir {
    use super::*;

    /// Lay out `files` the way kubelet writes a ConfigMap volume and return the volume directory.
    fn kubelet_volume(files: &[(&str, &[u8])]) -> tempfile::TempDir {
        let volume = tempfile::tempdir().unwrap();
        let data = volume.path().join("..2026_11_22_10_00_00.000000001");
        std::fs::create_dir(&data).unwrap();
        for (name, bytes) in files {
            std::fs::write(data.join(name), bytes).unwrap();
            std::os::unix::fs::symlink(format!("..data/{name}"), volume.path().join(name)).unwrap();
        }
        std::os::unix::fs::symlink(data.file_name().unwrap(), volume.path().join("..data")).unwrap();
        volume
    }

    #[test]
    fn a_kubelet_volume_is_read_through_its_data_link_and_other_files_are_ignored() {
        let golden = golden_text();
        let volume = kubelet_volume(&[("default.1.keyset", golden.as_bytes()), ("README", b"not a shard")]);
        let sets = load_dirs(&[volume.path().to_owned()]).unwrap();
        assert_eq!(sets.len(), 1);
        assert_eq!(sets[0].records.len(), 4);
    }

    #[test]
    fn a_directory_without_shards_is_an_error_not_an_empty_set() {
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(load_dirs(&[empty.path().to_owned()]), Err(LoadError::NoShards(_))));
    }

    #[test]
    fn one_corrupt_shard_fails_the_whole_load_naming_the_file() {
        let volume = kubelet_volume(&[("default.1.keyset", golden_text().as_bytes()), ("other.1.keyset", b"garbage")]);
        let err = load_dirs(&[volume.path().to_owned()]).unwrap_err();
        assert!(matches!(&err, LoadError::Decode { path, .. } if path.ends_with("other.1.keyset")), "{err}");
    }
}

#[test]
fn a_key_set_beyond_one_plain_shard_packs_at_the_default_shard_size() {
    // 5,000 keys need more than one plain 512 KiB shard, so the text budget for gzip shards
    // (four times the stored limit) exceeds what a stored shard may be; that must not be refused.
    let records: Vec<Record> =
        (0..5_000).map(|n| record(n, &format!("integration-{n:05}"), &["orders:read", "invoices:write"])).collect();
    let packed = encode_packed(&id("team-a", "default"), 2, &records, DEFAULT_MAX_SHARD_BYTES).unwrap();
    assert!(packed.iter().all(|s| matches!(s, ShardBytes::Gzip(_))), "stored gzip-compressed");
    assert!(packed.iter().all(|s| s.as_bytes().len() <= DEFAULT_MAX_SHARD_BYTES));
    let decoded: Vec<Shard> = packed.iter().map(|s| decode_shard(s.as_bytes()).unwrap()).collect();
    assert_eq!(assemble(decoded).unwrap()[0].records.len(), 5_000);
}

mod gates {
    use super::*;

    fn header_of(shard: &str) -> &str {
        shard.lines().next().unwrap()
    }

    #[test]
    fn an_ungated_set_is_written_as_v1_exactly_as_before() {
        let records = golden_records();
        let plain = encode(&id("team-a", "default"), 7, &records, DEFAULT_MAX_SHARD_BYTES).unwrap();
        let enabled =
            encode_gated(&id("team-a", "default"), 7, Access::Enabled, &records, DEFAULT_MAX_SHARD_BYTES).unwrap();
        assert_eq!(plain, enabled);
        assert!(header_of(&enabled[0]).starts_with("keyward-keyset v1 "));
        assert_eq!(decode_shard(enabled[0].as_bytes()).unwrap().access, Access::Enabled);
    }

    #[test]
    fn a_gate_is_written_as_v2_with_its_access_word_and_round_trips() {
        for (access, word) in [(Access::PaymentRequired, "payment-required"), (Access::Disabled, "disabled")] {
            let shards =
                encode_gated(&id("team-a", "paid"), 9, access, &golden_records(), DEFAULT_MAX_SHARD_BYTES).unwrap();
            assert_eq!(
                header_of(&shards[0]),
                format!("keyward-keyset v2 keyset=team-a/paid generation=9 shard=1/1 records=4 access={word}")
            );
            let decoded: Vec<Shard> = shards.iter().map(|s| decode_shard(s.as_bytes()).unwrap()).collect();
            assert_eq!(decoded[0].access, access);
            let sets = assemble(decoded).unwrap();
            assert_eq!((sets[0].access, sets[0].records.len()), (access, 4));
            let scanned = scan_shard(shards[0].as_bytes()).unwrap();
            assert_eq!(scanned.access, access);
            assert_eq!(peek_header(shards[0].as_bytes()).unwrap().access, access);
        }
    }

    #[test]
    fn every_gzip_shard_of_a_large_gated_set_carries_the_gate() {
        let records: Vec<Record> = (0..3_000).map(|n| record(n, &format!("key-{n:05}"), &["orders:read"])).collect();
        let shards =
            encode_packed_gated(&id("team-a", "big"), 3, Access::PaymentRequired, &records, 32 * 1024).unwrap();
        assert!(shards.len() > 1);
        let decoded: Vec<Shard> = shards.iter().map(|s| decode_shard(s.as_bytes()).unwrap()).collect();
        assert!(decoded.iter().all(|s| s.access == Access::PaymentRequired));
        assert_eq!(assemble(decoded).unwrap()[0].access, Access::PaymentRequired);
    }

    /// A gate that is missing, unknown, misspelt, spelt `enabled`, or written under `v1` refuses the whole shard,
    /// so no reader serves a gated set as open; the error names the field, never the text.
    #[test]
    fn a_malformed_gate_refuses_the_shard() {
        let v2 = |tail: &str| format!("keyward-keyset v2 keyset=team-a/paid generation=1 shard=1/1 records=0{tail}\n");
        for (text, field) in [
            (v2(""), Field::Access),
            (v2(" access=enabled"), Field::Access),
            (v2(" access=open"), Field::Access),
            (v2(" access=Disabled"), Field::Access),
            (v2(" access="), Field::Access),
            (v2(" acces=disabled"), Field::Access),
            (v2(" access=disabled access=disabled"), Field::Access),
            (
                "keyward-keyset v1 keyset=team-a/paid generation=1 shard=1/1 records=0 access=disabled\n".to_owned(),
                Field::Records,
            ),
        ] {
            let error = decode_shard(text.as_bytes()).unwrap_err();
            assert_eq!(error, DecodeError { line: 1, kind: DecodeErrorKind::InvalidField(field) }, "{text}");
            assert!(scan_shard(text.as_bytes()).is_none(), "{text}");
            assert!(peek_header(text.as_bytes()).is_none(), "{text}");
        }
    }

    /// What a reader that knows only v1 does with a gated set: the version word is all it needs to refuse.
    #[test]
    fn a_reader_refuses_a_version_it_does_not_know() {
        let text = "keyward-keyset v3 keyset=team-a/paid generation=1 shard=1/1 records=0 access=disabled\n";
        assert_eq!(decode_shard(text.as_bytes()).unwrap_err().kind, DecodeErrorKind::UnsupportedVersion);
        let gated = encode_gated(&id("team-a", "paid"), 1, Access::Disabled, &[], DEFAULT_MAX_SHARD_BYTES).unwrap();
        assert!(gated[0].starts_with(&format!("{MAGIC} {GATED_FORMAT_VERSION} ")));
        assert_ne!(GATED_FORMAT_VERSION, FORMAT_VERSION);
    }

    #[test]
    fn shards_that_disagree_on_the_gate_are_refused() {
        let records: Vec<Record> = (0..300).map(|n| record(n, &format!("k{n}"), &["a:read"])).collect();
        let shards_with = |access| {
            encode_gated(&id("team-a", "s"), 1, access, &records, 8 * 1024)
                .unwrap()
                .iter()
                .map(|s| decode_shard(s.as_bytes()).unwrap())
                .collect::<Vec<_>>()
        };
        let mut mixed = shards_with(Access::PaymentRequired);
        assert!(mixed.len() >= 2);
        mixed[1] = shards_with(Access::Enabled).remove(1);
        assert!(matches!(assemble(mixed), Err(AssembleError::AccessDisagrees(_))));

        let texts = encode_gated(&id("team-a", "s"), 1, Access::Disabled, &records, 8 * 1024).unwrap();
        let open = encode(&id("team-a", "s"), 1, &records, 8 * 1024).unwrap();
        let mut scanned: Vec<ScannedShard> = texts.iter().map(|t| scan_shard(t.as_bytes()).unwrap()).collect();
        scanned[0] = scan_shard(open[0].as_bytes()).unwrap();
        assert!(matches!(assemble_scanned(scanned.clone()), Err(AssembleError::AccessDisagrees(_))));
        let headers: Vec<(usize, ShardHeader)> = scanned.iter().map(ScannedShard::header).enumerate().collect();
        assert!(matches!(assemble_headers(headers), Err(AssembleError::AccessDisagrees(_))));
    }
}
