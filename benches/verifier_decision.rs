//! The verifier's decision path at 1k, 100k and 1M keys, and a full reload of 100k keys from a directory.
//!
//! Run: `cargo bench --bench verifier_decision`. The index's approximate memory
//! per key is printed before the timings.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use jiff::Timestamp;
use keyward::keyset::{self, KeySet, KeySetId, RateLimit, Record, RecordState};
use keyward::token::{Prefix, Token};
use keyward::verifier::decision::{Now, Outcome, Request, decide};
use keyward::verifier::index::KeyIndex;
use keyward::verifier::routes::Routes;
use rand::SeedableRng;

/// How many distinct tokens the lookups cycle through, so that caches see a spread of keys.
const PROBES: usize = 4096;

/// `count` keys shaped like real ones (as in the key-set bench), with the Authorization values of the first few.
fn keys(count: usize) -> (Vec<Record>, Vec<String>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let prefix = Prefix::default();
    let resources = ["orders", "invoices", "leads", "contacts", "appointments", "analytics"];
    let start: Timestamp = "2026-11-01T09:00:00Z".parse().unwrap();
    let mut probes = Vec::with_capacity(PROBES);
    let records = (0..count)
        .map(|i| {
            let token = Token::generate(&prefix, &mut rng);
            if probes.len() < PROBES {
                probes.push(format!("Bearer {}", token.expose()));
            }
            let hash = token.hash();
            // Every key can read leads, so the probed request is allowed.
            let mut scopes: Vec<_> = vec!["leads:read".parse().unwrap()];
            scopes.push(format!("{}:write", resources[i % resources.len()]).parse().unwrap());
            Record {
                hash,
                key_id: hash.key_id(),
                namespace: "team-payments".into(),
                name: format!("partner-integration-{i:07}"),
                scopes,
                not_before: start,
                not_after: (i % 3 == 0).then(|| "2027-06-30T00:00:00Z".parse().unwrap()),
                state: RecordState::Active,
                rate_limit: (i % 4 == 0).then(|| RateLimit {
                    requests: 1_000_000,
                    period: "1s".parse().unwrap(),
                    burst: 1_000_000,
                }),
            }
        })
        .collect();
    (records, probes)
}

fn set(records: Vec<Record>) -> KeySet {
    KeySet { id: KeySetId { namespace: "team-payments".into(), name: "default".into() }, generation: 1, records }
}

fn decision_benches(c: &mut Criterion) {
    let routes = Routes::default();
    let now = Now { wall: "2026-11-22T12:00:00Z".parse().unwrap(), monotonic: Duration::from_secs(1) };
    let unknown =
        format!("Bearer {}", Token::generate(&Prefix::default(), &mut rand::rngs::StdRng::seed_from_u64(7)).expose());
    let mut group = c.benchmark_group("decide");
    for count in [1_000, 100_000, 1_000_000] {
        let (records, probes) = keys(count);
        let index = KeyIndex::build(vec![set(records)], None).unwrap();
        eprintln!("{count} keys: index holds about {} bytes per key", index.approx_heap_bytes() / count);
        let mut i = 0;
        group.bench_with_input(BenchmarkId::new("allowed", count), &index, |b, index| {
            b.iter(|| {
                i = (i + 1) % probes.len();
                let request = Request { method: "GET", uri: "/leads/42", authorization: [probes[i].as_bytes()] };
                let decision = decide(black_box(index), &routes, request, now);
                assert_eq!(decision.outcome, Outcome::Allowed);
            });
        });
        group.bench_with_input(BenchmarkId::new("unknown", count), &index, |b, index| {
            b.iter(|| {
                let request = Request { method: "GET", uri: "/leads/42", authorization: [unknown.as_bytes()] };
                decide(black_box(index), &routes, request, now).outcome
            });
        });
    }
    group.finish();
}

fn reload_benches(c: &mut Criterion) {
    let (records, _) = keys(100_000);
    let dir = tempfile::tempdir().unwrap();
    let id = KeySetId { namespace: "team-payments".into(), name: "default".into() };
    for (i, text) in keyset::encode(&id, 1, &records, keyset::DEFAULT_MAX_SHARD_BYTES).unwrap().into_iter().enumerate()
    {
        std::fs::write(dir.path().join(keyset::shard_file_name("default", i + 1)), text).unwrap();
    }
    let dirs = vec![dir.path().to_owned()];
    let mut group = c.benchmark_group("reload_100k");
    group.sample_size(10);
    group.bench_function("read_decode_assemble_index", |b| {
        b.iter(|| KeyIndex::build(keyset::load_dirs(black_box(&dirs)).unwrap(), None).unwrap());
    });
    group.finish();
}

criterion_group!(benches, decision_benches, reload_benches);
criterion_main!(benches);
