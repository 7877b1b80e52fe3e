//! Key-set encode/decode throughput at 100,000 keys, plain and gzip-packed, and how many
//! realistic keys fit in one 512 KiB shard.
//!
//! Run: `cargo bench --bench keyset`. The keys-per-shard figure is printed before the timings.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use jiff::Timestamp;
use keyward::keyset::{self, KeySetId, RateLimit, Record, RecordState};
use keyward::token::{KeyHash, Prefix, Token};
use rand::SeedableRng;

/// Keys shaped like real ones: a team's integration names, two or three
/// scopes, a third with an expiry, a quarter with a rate limit.
fn realistic_records(count: usize) -> Vec<Record> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let prefix = Prefix::default();
    let resources = ["orders", "invoices", "leads", "contacts", "appointments", "analytics"];
    let start: Timestamp = "2026-11-01T09:00:00Z".parse().unwrap();
    (0..count)
        .map(|i| {
            let hash: KeyHash = Token::generate(&prefix, &mut rng).hash();
            let scopes = (0..2 + i % 2)
                .map(|j| {
                    format!("{}:{}", resources[(i + j) % resources.len()], ["read", "write"][j % 2]).parse().unwrap()
                })
                .collect();
            Record {
                hash,
                key_id: hash.key_id(),
                namespace: "team-payments".into(),
                name: format!("partner-integration-{i:06}"),
                scopes,
                not_before: start,
                not_after: (i % 3 == 0).then(|| "2027-06-30T00:00:00Z".parse().unwrap()),
                state: RecordState::Active,
                rate_limit: (i % 4 == 0).then(|| RateLimit {
                    requests: 600,
                    period: "1m".parse().unwrap(),
                    burst: 100,
                }),
            }
        })
        .collect()
}

fn keyset_benches(c: &mut Criterion) {
    let id = KeySetId { namespace: "team-payments".into(), name: "default".into() };
    let records = realistic_records(100_000);
    let shards = keyset::encode(&id, 1, &records, keyset::DEFAULT_MAX_SHARD_BYTES).unwrap();
    let first = keyset::decode_shard(shards[0].as_bytes()).unwrap();
    let bytes: usize = shards.iter().map(String::len).sum();
    eprintln!(
        "keys per 512 KiB shard: {} (100,000 keys in {} shards, {}.{:02} bytes per record)",
        first.records.len(),
        shards.len(),
        bytes / 100_000,
        bytes % 100_000 / 1_000
    );

    let packed = keyset::encode_packed(&id, 1, &records, keyset::DEFAULT_MAX_SHARD_BYTES).unwrap();
    let packed_bytes: usize = packed.iter().map(|s| s.as_bytes().len()).sum();
    let first_packed = keyset::decode_shard(packed[0].as_bytes()).unwrap();
    eprintln!(
        "keys per 512 KiB gzip shard: {} (100,000 keys in {} shards, {}.{:02} bytes per record)",
        first_packed.records.len(),
        packed.len(),
        packed_bytes / 100_000,
        packed_bytes % 100_000 / 1_000
    );

    let mut group = c.benchmark_group("keyset_100k");
    group.sample_size(10);
    group.bench_function("encode", |b| {
        b.iter(|| keyset::encode(&id, 1, black_box(&records), keyset::DEFAULT_MAX_SHARD_BYTES).unwrap());
    });
    group.bench_function("decode_and_assemble", |b| {
        b.iter(|| {
            let decoded = shards.iter().map(|s| keyset::decode_shard(black_box(s.as_bytes())).unwrap()).collect();
            keyset::assemble(decoded).unwrap()
        });
    });
    group.bench_function("encode_packed", |b| {
        b.iter(|| keyset::encode_packed(&id, 1, black_box(&records), keyset::DEFAULT_MAX_SHARD_BYTES).unwrap());
    });
    group.bench_function("decode_and_assemble_packed", |b| {
        b.iter(|| {
            let decoded = packed.iter().map(|s| keyset::decode_shard(black_box(s.as_bytes())).unwrap()).collect();
            keyset::assemble(decoded).unwrap()
        });
    });
    group.finish();
}

criterion_group!(benches, keyset_benches);
criterion_main!(benches);
