//! Fixture builders shared by the verifier's tests: tokens, records and key sets that read like prose.

use jiff::Timestamp;
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::keyset::{KeySet, KeySetId, RateLimit, Record, RecordState};
use crate::token::{Prefix, Token};
use crate::verifier::decision::Now;

/// A token minted from a fixed seed, so every run sees the same one.
pub fn token(seed: u64) -> Token {
    Token::generate(&Prefix::default(), &mut StdRng::seed_from_u64(seed))
}

pub fn time(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// The fixed "now" of the tests: noon on 2026-11-22, 1000 s into the process.
pub fn now() -> Now {
    Now { wall: time("2026-11-22T12:00:00Z"), monotonic: std::time::Duration::from_secs(1000) }
}

/// An active record for `token` with `scopes`, valid from 2026-11-01 on.
pub fn record(token: &Token, scopes: &[&str]) -> Record {
    let hash = token.hash();
    Record {
        hash,
        key_id: hash.key_id(),
        namespace: "team-a".into(),
        name: "crm".into(),
        scopes: scopes.iter().map(|s| s.parse().unwrap()).collect(),
        not_before: time("2026-11-01T00:00:00Z"),
        not_after: None,
        state: RecordState::Active,
        rate_limit: None,
    }
}

pub fn with_state(mut record: Record, state: RecordState) -> Record {
    record.state = state;
    record
}

pub fn with_window(mut record: Record, not_before: &str, not_after: Option<&str>) -> Record {
    record.not_before = time(not_before);
    record.not_after = not_after.map(time);
    record
}

pub fn with_limit(mut record: Record, limit: &str) -> Record {
    let mut parts = limit.split('/');
    let requests = parts.next().unwrap().parse().unwrap();
    let period = parts.next().unwrap().parse().unwrap();
    let burst = parts.next().map_or(requests, |b| b.parse().unwrap());
    record.rate_limit = Some(RateLimit { requests, period, burst });
    record
}

pub fn key_set(name: &str, generation: u64, records: Vec<Record>) -> KeySet {
    KeySet { id: KeySetId { namespace: "team-a".into(), name: name.into() }, generation, records }
}
