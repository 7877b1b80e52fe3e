//! Fixture builders that read like prose: tokens, records, key sets and their shard files.
//!
//! Every record is for namespace `team-a`, ApiKey `crm`, valid from
//! 2026-11-01 on; tests change what their case is about with the `with_*`
//! builders. The tests' "now" is [`NOW`].

use jiff::Timestamp;
use keyward_contract::keyset::{self, KeySet, KeySetId, RateLimit, Record, RecordState};
use keyward_contract::token::{Prefix, Token};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// The fixed wall-clock "now" of the tests: noon on 2026-11-22.
pub const NOW: &str = "2026-11-22T12:00:00Z";

/// The namespace of every fixture key set and record.
pub const NAMESPACE: &str = "team-a";

/// A token minted from a fixed seed, so every run sees the same one.
///
/// # Panics
/// Never: the default prefix is valid.
#[must_use]
pub fn token(seed: u64) -> Token {
    Token::generate(&Prefix::default(), &mut StdRng::seed_from_u64(seed))
}

/// The `Authorization` header value for `token`.
#[must_use]
pub fn bearer(token: &Token) -> String {
    format!("Bearer {}", token.expose())
}

/// A timestamp from RFC 3339 text.
///
/// # Panics
/// When `s` is not a timestamp.
#[must_use]
pub fn time(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// Key set `team-a/<name>`.
#[must_use]
pub fn keyset_id(name: &str) -> KeySetId {
    KeySetId { namespace: NAMESPACE.into(), name: name.into() }
}

/// An active record for `token` with `scopes`, valid from 2026-11-01 on.
///
/// # Panics
/// When a scope does not parse.
#[must_use]
pub fn record(token: &Token, scopes: &[&str]) -> Record {
    let hash = token.hash();
    Record {
        hash,
        key_id: hash.key_id(),
        namespace: NAMESPACE.into(),
        name: "crm".into(),
        scopes: scopes.iter().map(|s| s.parse().unwrap()).collect(),
        not_before: time("2026-11-01T00:00:00Z"),
        not_after: None,
        state: RecordState::Active,
        rate_limit: None,
    }
}

/// `record` in `state`.
#[must_use]
pub fn with_state(mut record: Record, state: RecordState) -> Record {
    record.state = state;
    record
}

/// `record` valid from `not_before` until `not_after` (or for ever).
#[must_use]
pub fn with_window(mut record: Record, not_before: &str, not_after: Option<&str>) -> Record {
    record.not_before = time(not_before);
    record.not_after = not_after.map(time);
    record
}

/// `record` valid until `not_after`.
#[must_use]
pub fn with_not_after(mut record: Record, not_after: &str) -> Record {
    record.not_after = Some(time(not_after));
    record
}

/// `record` limited to `requests/period[/burst]`, such as `"60/1m/2"` (burst defaults to requests).
///
/// # Panics
/// When `limit` is not of that form.
#[must_use]
pub fn with_limit(mut record: Record, limit: &str) -> Record {
    let mut parts = limit.split('/');
    let requests = parts.next().unwrap().parse().unwrap();
    let period = parts.next().unwrap().parse().unwrap();
    let burst = parts.next().map_or(requests, |b| b.parse().unwrap());
    record.rate_limit = Some(RateLimit { requests, period, burst });
    record
}

/// Key set `team-a/<name>` at `generation`.
#[must_use]
pub fn key_set(name: &str, generation: u64, records: Vec<Record>) -> KeySet {
    KeySet { id: keyset_id(name), generation, access: keyset::Access::Enabled, records }
}

/// The plain shard files of key set `team-a/<name>` at `generation`, as (file name, text).
///
/// # Panics
/// When the records do not encode.
#[must_use]
pub fn shard_files(name: &str, generation: u64, records: &[Record], max_bytes: usize) -> Vec<(String, String)> {
    keyset::encode(&keyset_id(name), generation, records, max_bytes)
        .unwrap()
        .into_iter()
        .enumerate()
        .map(|(i, text)| (keyset::shard_file_name(name, i + 1), text))
        .collect()
}
