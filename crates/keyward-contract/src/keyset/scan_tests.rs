//! The scanner against the strict decoder: same acceptance, same values, on valid and mutated shards.

use proptest::prelude::*;

use super::tests::{arb_record, golden_text, id};
use super::*;

/// What the strict decoder says about a shard, in the terms the scanner can be held to.
fn check_agreement(stored: &[u8]) -> Result<(), TestCaseError> {
    let strict = decode_shard(stored);
    let fast = scan_shard(stored);
    // Keeping owners changes nothing else, and keeps each record's owner.
    let with_owners = scan_shard_keeping_owners(stored);
    prop_assert_eq!(fast.is_some(), with_owners.is_some());
    if let (Some(fast), Some(with_owners)) = (&fast, &with_owners) {
        prop_assert_eq!(&fast.records, &with_owners.records);
        prop_assert_eq!(fast.owners.as_ref(), None);
        prop_assert_eq!(with_owners.owners.as_ref().map(OwnerList::len), Some(fast.records.len()));
    }
    if let (Ok(shard), Some(with_owners)) = (&strict, &with_owners) {
        let owners = with_owners.owners.as_ref().expect("kept");
        for (i, record) in shard.records.iter().enumerate() {
            let owner = format!("{}/{}", record.namespace, record.name);
            prop_assert_eq!(owners.get(i), Some(owner.as_str()));
        }
        prop_assert_eq!(owners.get(shard.records.len()), None);
    }
    match (&strict, &fast) {
        (Ok(shard), Some(scanned)) => {
            prop_assert_eq!(
                (&shard.id, shard.generation, shard.index, shard.total, shard.access),
                (&scanned.id, scanned.generation, scanned.index, scanned.total, scanned.access)
            );
            prop_assert_eq!(shard.records.len(), scanned.records.len());
            for (record, compact) in shard.records.iter().zip(&scanned.records) {
                prop_assert_eq!(record.hash, compact.hash);
                prop_assert_eq!(record.not_before.as_second(), compact.not_before);
                prop_assert_eq!(record.not_after.map(jiff::Timestamp::as_second), compact.not_after);
                prop_assert_eq!(record.state, compact.state);
                prop_assert_eq!(&record.scopes, &scanned.scopes[compact.scopes as usize]);
                prop_assert_eq!(
                    record.rate_limit.as_ref(),
                    compact.rate_limit.map(|i| &scanned.rate_limits[i as usize])
                );
            }
        }
        // The scanner leaves duplicate hashes to its caller; whatever it says then is fine.
        (Err(DecodeError { kind: DecodeErrorKind::DuplicateHash(_), .. }), _) | (Err(_), None) => {}
        (Ok(_), None) => prop_assert!(false, "the scanner refused a shard the strict decoder accepts"),
        (Err(e), Some(_)) => prop_assert!(false, "the scanner accepted a shard the strict decoder refuses: {e}"),
    }
    Ok(())
}

/// Bytes that matter to the grammar, so that mutations land on its edges often.
const INTERESTING: &[u8] = b" \n#-/:,.09afgAFZz_=*\t\x7f\x80";

/// Field values that are one step off valid (or valid in an unusual way).
const FIELD_VALUES: &[&str] = &[
    "",
    "-",
    "sha256:ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789",
    "sha256:abcdef0123456789abcdef0123456789abcdef0123456789abcdef012345678",
    "sha1:abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789",
    "187b7d415364",
    "187B7D415364",
    "team-a/a.b",
    "team-a/-a",
    "Team-a/x",
    "team-a/",
    "/x",
    "leads:read,leads:read",
    "leads:read,",
    "*:admin",
    "leads:Read",
    "2026-02-29T00:00:00Z",
    "2024-02-29T00:00:00Z",
    "2026-11-01T09:00:00.000Z",
    "2026-11-01T24:00:00Z",
    "1969-12-31T23:59:59Z",
    "9999-12-31T23:59:59Z",
    "2026-11-01T09:00:00Z",
    "2026-11-01T08:59:59Z",
    "active",
    "Active",
    "revoked",
    "1/1m",
    "01/1m",
    "0/1m",
    "1/0s",
    "5/1m/5",
    "5/1m/6",
    "5/1m/6/7",
    "4294967296/1s",
    "100/1h30m",
];

fn encoded(records: &[Record], generation: u64, gzip: bool) -> Vec<u8> {
    let mut unique = records.to_vec();
    unique.sort_by_key(|r| r.hash);
    unique.dedup_by_key(|r| r.hash);
    // The generation picks the gate too, so mutations hit v1 and v2 headers alike.
    let access = [Access::Enabled, Access::PaymentRequired, Access::Disabled][(generation % 3) as usize];
    let text = encode_gated(&id("ns", "set"), generation, access, &unique, 1024 * 1024).unwrap().remove(0);
    if gzip { gz(text.as_bytes()) } else { text.into_bytes() }
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// One edit of shard text.
#[derive(Debug, Clone)]
enum Edit {
    Replace(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
    Delete(prop::sample::Index),
    Field(prop::sample::Index, prop::sample::Index, prop::sample::Index),
    DuplicateLine(prop::sample::Index),
    DeleteLine(prop::sample::Index),
    Truncate(prop::sample::Index),
}

fn arb_edit() -> impl Strategy<Value = Edit> {
    let byte = prop_oneof![prop::sample::select(INTERESTING), any::<u8>()];
    prop_oneof![
        (any::<prop::sample::Index>(), byte.clone()).prop_map(|(i, b)| Edit::Replace(i, b)),
        (any::<prop::sample::Index>(), byte).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<prop::sample::Index>().prop_map(Edit::Delete),
        (any::<prop::sample::Index>(), any::<prop::sample::Index>(), any::<prop::sample::Index>())
            .prop_map(|(l, f, v)| Edit::Field(l, f, v)),
        // Field edits twice over: they reach the most interesting checks.
        (any::<prop::sample::Index>(), any::<prop::sample::Index>(), any::<prop::sample::Index>())
            .prop_map(|(l, f, v)| Edit::Field(l, f, v)),
        any::<prop::sample::Index>().prop_map(Edit::DuplicateLine),
        any::<prop::sample::Index>().prop_map(Edit::DeleteLine),
        any::<prop::sample::Index>().prop_map(Edit::Truncate),
    ]
}

fn apply(text: &mut Vec<u8>, edit: &Edit) {
    if text.is_empty() {
        return;
    }
    let mut lines: Vec<Vec<u8>> = text.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
    match edit {
        Edit::Replace(i, b) => {
            let i = i.index(text.len());
            text[i] = *b;
            return;
        }
        Edit::Insert(i, b) => {
            let i = i.index(text.len() + 1);
            text.insert(i, *b);
            return;
        }
        Edit::Delete(i) => {
            text.remove(i.index(text.len()));
            return;
        }
        Edit::Truncate(i) => {
            text.truncate(i.index(text.len()));
            return;
        }
        Edit::Field(l, f, v) => {
            let l = l.index(lines.len());
            let line = &mut lines[l];
            let mut fields: Vec<Vec<u8>> = line.split(|b| *b == b' ').map(<[u8]>::to_vec).collect();
            let n = fields.len();
            fields[f.index(n)] = FIELD_VALUES[v.index(FIELD_VALUES.len())].as_bytes().to_vec();
            *line = fields.join(&b' ');
        }
        Edit::DuplicateLine(l) => {
            let l = l.index(lines.len());
            let copy = lines[l].clone();
            lines.insert(l, copy);
        }
        Edit::DeleteLine(l) => {
            lines.remove(l.index(lines.len()));
        }
    }
    *text = lines.join(&b'\n');
}

#[test]
fn the_golden_shard_scans_to_what_it_decodes_to() {
    let golden = golden_text();
    let scanned = scan_shard(golden.as_bytes()).expect("the golden shard is valid");
    assert_eq!(scanned.records.len(), 4);
    assert_eq!(scanned.rate_limits.len(), 2, "two distinct limits, each parsed once");
    check_agreement(golden.as_bytes()).unwrap();
}

#[test]
fn every_case_the_strict_decoder_refuses_by_name_the_scanner_refuses() {
    // The strict decoder's own table of malformed fields, through the scanner.
    let golden = golden_text();
    for line in 1..=5 {
        for field in 0..8 {
            for value in FIELD_VALUES {
                let mut lines: Vec<String> = golden.lines().map(str::to_owned).collect();
                let mut fields: Vec<&str> = lines[line - 1].split(' ').collect();
                if field >= fields.len() {
                    continue;
                }
                fields[field] = value;
                lines[line - 1] = fields.join(" ");
                let text = lines.join("\n") + "\n";
                check_agreement(text.as_bytes()).unwrap_or_else(|e| panic!("line {line} field {field}: {e}"));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn valid_shards_scan_to_the_values_they_decode_to(records in prop::collection::vec(arb_record(), 0..40), generation in any::<u64>(), gzip in any::<bool>()) {
        let stored = encoded(&records, generation, gzip);
        prop_assert!(scan_shard(&stored).is_some());
        check_agreement(&stored)?;
    }

    #[test]
    fn mutated_shards_are_accepted_by_both_or_neither(records in prop::collection::vec(arb_record(), 1..12), edits in prop::collection::vec(arb_edit(), 1..4), gzip in any::<bool>()) {
        let mut text = encoded(&records, 4, false);
        for edit in &edits {
            apply(&mut text, edit);
        }
        check_agreement(&text)?;
        if gzip {
            check_agreement(&gz(&text))?;
        }
    }

    #[test]
    fn mutated_golden_shards_are_accepted_by_both_or_neither(edits in prop::collection::vec(arb_edit(), 1..4)) {
        let mut text = golden_text().into_bytes();
        for edit in &edits {
            apply(&mut text, edit);
        }
        check_agreement(&text)?;
    }

    #[test]
    fn arbitrary_bytes_are_accepted_by_both_or_neither(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        check_agreement(&bytes)?;
    }
}

#[test]
fn a_peeked_header_is_the_header_the_scan_reads() {
    let golden = golden_text();
    let scanned = scan_shard(golden.as_bytes()).unwrap();
    assert_eq!(peek_header(golden.as_bytes()), Some(scanned.header()));
    assert_eq!(peek_header(&gz(golden.as_bytes())), Some(scanned.header()), "gzip");
    let commented = format!("# a comment\n{golden}");
    assert_eq!(peek_header(commented.as_bytes()), Some(scanned.header()), "after comments");
    let empty = "keyward-keyset v1 keyset=ns/set generation=1 shard=1/1 records=0";
    assert_eq!(peek_header(empty.as_bytes()).map(|h| h.records), Some(0), "a header without a newline");
}

#[test]
fn a_header_claiming_more_records_than_fit_is_not_peeked() {
    // A reader sizes its index from peeked headers; a lying count must not make it reserve memory.
    let lying = golden_text().replace("records=4", "records=99999999999");
    assert_eq!(peek_header(lying.as_bytes()), None);
    assert_eq!(peek_header(&gz(lying.as_bytes())), None);
    assert_eq!(scan_shard(lying.as_bytes()), None);
}

#[test]
fn a_header_behind_64_kib_of_comments_is_not_peeked_but_the_shard_is_valid() {
    // The fast reader then falls back to the strict decoder, which accepts it.
    let long = format!("{}{}", "# padding\n".repeat(7_000), golden_text());
    assert_eq!(peek_header(long.as_bytes()), None);
    assert!(decode_shard(long.as_bytes()).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn a_peeked_header_never_disagrees_with_an_accepted_scan(records in prop::collection::vec(arb_record(), 1..12), edits in prop::collection::vec(arb_edit(), 0..3), gzip in any::<bool>()) {
        let mut text = encoded(&records, 4, false);
        for edit in &edits {
            apply(&mut text, edit);
        }
        let stored = if gzip { gz(&text) } else { text };
        if let Some(scanned) = scan_shard(&stored) {
            prop_assert_eq!(peek_header(&stored), Some(scanned.header()));
        }
    }
}
