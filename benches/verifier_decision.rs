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
use keyward::verifier::loader::index_from_stored;
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
    // Copied together after the records: a server decides on a header it has just read, so the
    // token's bytes are in cache. Left where they were made, between a million records' strings,
    // every probe would first miss the caches and the TLB on the header itself.
    let probes = probes.iter().map(|p| p.as_str().to_owned()).collect();
    (records, probes)
}

fn set(records: Vec<Record>) -> KeySet {
    KeySet {
        id: KeySetId { namespace: "team-payments".into(), name: "default".into() },
        generation: 1,
        access: keyward::keyset::Access::Enabled,
        records,
    }
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
    let id = KeySetId { namespace: "team-payments".into(), name: "default".into() };
    let (plain, gzip) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for (i, text) in keyset::encode(&id, 1, &records, keyset::DEFAULT_MAX_SHARD_BYTES).unwrap().into_iter().enumerate()
    {
        std::fs::write(plain.path().join(keyset::shard_file_name("default", i + 1)), text).unwrap();
    }
    // As `keyward keyset build` and the operator store a set of this size.
    for (i, shard) in
        keyset::encode_packed(&id, 1, &records, keyset::DEFAULT_MAX_SHARD_BYTES).unwrap().iter().enumerate()
    {
        std::fs::write(gzip.path().join(keyset::shard_file_name("default", i + 1)), shard.as_bytes()).unwrap();
    }
    let mut group = c.benchmark_group("reload_100k");
    group.sample_size(10);
    for (name, dir) in [("plain", &plain), ("gzip", &gzip)] {
        let dirs = vec![dir.path().to_owned()];
        // What the loader does: read the snapshot's bytes, scan (in parallel) into the index.
        group.bench_function(format!("{name}/read_scan_index"), |b| {
            b.iter(|| index_from_stored(&keyset::read_stored(black_box(&dirs[0])).unwrap(), None).unwrap());
        });
        // The strict decoder, as every reload used before: for comparison.
        group.bench_function(format!("{name}/read_decode_assemble_index"), |b| {
            b.iter(|| KeyIndex::build(keyset::load_dirs(black_box(&dirs)).unwrap(), None).unwrap());
        });
        // Where the time goes, one thread: reading, scanning (inflate + parse), building the table.
        let stored = keyset::read_stored(dir.path()).unwrap();
        group.bench_function(format!("{name}/read_only"), |b| {
            b.iter(|| keyset::read_stored(black_box(dir.path())).unwrap());
        });
        group.bench_function(format!("{name}/scan_one_thread"), |b| {
            b.iter(|| {
                stored.iter().map(|(_, bytes)| keyset::scan_shard(black_box(bytes)).unwrap()).collect::<Vec<_>>()
            });
        });
        let shards: Vec<_> = stored.iter().map(|(_, bytes)| keyset::scan_shard(bytes).unwrap()).collect();
        let sets = keyset::assemble_scanned(shards).unwrap();
        group.bench_function(format!("{name}/build_table"), |b| {
            b.iter(|| KeyIndex::from_scanned(black_box(&sets), None).unwrap());
        });
    }
    group.finish();
}

criterion_group!(benches, decision_benches, reload_benches);
criterion_main!(benches);
