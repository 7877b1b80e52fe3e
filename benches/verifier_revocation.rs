//! Revocation latency, reload under load, and resident memory per loaded key (issue 4's benchmarks).
//!
//! Run: `cargo bench --bench verifier_revocation`. Not criterion: each part
//! starts the verifier in process on a kubelet-style directory (timestamped
//! directory, `..data` symlink swapped by rename, as kubelet does) and talks to
//! it over loopback, so what it measures is what a deployment sees:
//!
//! 1. revocation: a client keeps asking `/verify` with a key; `..data` is
//!    swapped to a set without it; the delay from the swap to the first 401 is
//!    recorded. Repeated `KEYWARD_BENCH_ROUNDS` times (default 20) with 1,000
//!    keys, and a quarter as often with 100,000.
//! 2. reload of 100,000 keys under load: clients keep asking with a key present
//!    in both sets while `..data` swaps to the next generation; the delay from
//!    the swap until the new generation is in force, and every non-200 answer,
//!    are recorded.
//! 3. memory: VmRSS (`/proc/self/status`) of a fresh process before and after
//!    loading 1,000,000 keys from a directory the way the verifier's loader
//!    does, per key; then again after three more reloads of the same keys
//!    (each replacing the index in force), which is the steady state a
//!    long-running verifier sits at. VmHWM gives the peak.
//!
//! 4. reload cost: the loader's read + scan + index of 100,000 keys (gzip
//!    shards), repeated in a loop, timed by the wall clock and by the
//!    process's CPU time (`/proc/self/stat`, all threads), beside the strict
//!    decoder on the same files: CPU time shows the work even when other
//!    processes compete for the cores and stretch the wall-clock figure.
//!
//! Timings vary with machine load; results and commands are in BENCHMARKS.md.

// Byte and key counts become f64 only to print them.
#![allow(clippy::cast_precision_loss)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use keyward::keyset::{self, KeySetId, Record, RecordState};
use keyward::token::{Prefix, Token};
use keyward::verifier::Config;
use keyward::verifier::index::KeyIndex;
use keyward::verifier::loader::index_from_stored;
use keyward_testkit::kubelet::KubeletDir;
use rand::SeedableRng;
use rand::rngs::StdRng;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn main() {
    if let Some(dir) = std::env::var_os(MEMORY_CHILD) {
        memory_child(Path::new(&dir));
        return;
    }
    // `cargo bench` passes `--bench`; a filter argument (as criterion takes) selects parts.
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let wanted = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    // Memory first, while the process is small and the heap clean.
    if wanted("memory") {
        memory_per_key(1_000_000);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    if wanted("revocation") {
        let rounds = std::env::var("KEYWARD_BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(20);
        runtime.block_on(revocation(rounds, 1_000));
        // The revoking reload reads the whole set, so its size shows in the delay.
        runtime.block_on(revocation(rounds.div_ceil(4), 100_000));
    }
    if wanted("reload") {
        runtime.block_on(reload_under_load(100_000, 5));
    }
    if wanted("cost") {
        reload_cost(100_000, 20);
    }
}

/// User plus system CPU time of this process so far (all threads), from `/proc/self/stat`.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name (which is in parentheses and may hold spaces): utime is the 14th field overall.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // The kernel reports in USER_HZ, 100 on Linux.
    Duration::from_millis(ticks * 10)
}

/// Wall-clock and CPU time of reloading `keys` keys from gzip shards, fast path and strict decoder.
fn reload_cost(keys: usize, rounds: u32) {
    let (set, _) = records(keys, 0, 4);
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in shards(1, &set) {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    let dirs = vec![dir.path().to_owned()];
    let fast = || {
        let stored = keyset::read_stored(&dirs[0]).unwrap();
        drop(index_from_stored(&stored, None).unwrap());
    };
    let strict = || drop(KeyIndex::build(keyset::load_dirs(&dirs).unwrap(), None).unwrap());
    for (label, run) in [("read + scan + index (the loader)", &fast as &dyn Fn()), ("strict decoder", &strict)] {
        run();
        let (cpu_before, mut walls) = (cpu_time(), Vec::new());
        for _ in 0..rounds {
            let started = Instant::now();
            run();
            walls.push(started.elapsed());
        }
        let cpu = cpu_time().saturating_sub(cpu_before) / rounds;
        walls.sort();
        println!(
            "reload cost, {keys} keys, gzip shards, {label}: wall median {:.1} ms (min {:.1}), CPU {:.1} ms per reload ({rounds} rounds)",
            percentile(&walls, 50).as_secs_f64() * 1e3,
            walls[0].as_secs_f64() * 1e3,
            cpu.as_secs_f64() * 1e3,
        );
    }
}

/// `count` records shaped like real keys, and the tokens of the first `tokens` of them.
fn records(count: usize, tokens: usize, seed: u64) -> (Vec<Record>, Vec<Token>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let prefix = Prefix::default();
    let start: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    let mut kept = Vec::new();
    let records = (0..count)
        .map(|i| {
            let token = Token::generate(&prefix, &mut rng);
            let hash = token.hash();
            if kept.len() < tokens {
                kept.push(token);
            }
            Record {
                hash,
                key_id: hash.key_id(),
                namespace: "team-payments".into(),
                name: format!("partner-integration-{i:07}"),
                scopes: vec!["leads:read".parse().unwrap(), "orders:write".parse().unwrap()],
                not_before: start,
                not_after: (i % 3 == 0).then(|| "2099-06-30T00:00:00Z".parse().unwrap()),
                state: RecordState::Active,
                rate_limit: None,
            }
        })
        .collect();
    (records, kept)
}

fn shards(generation: u64, records: &[Record]) -> Vec<(String, Vec<u8>)> {
    let id = KeySetId { namespace: "team-payments".into(), name: "default".into() };
    keyset::encode_packed(&id, generation, records, keyset::DEFAULT_MAX_SHARD_BYTES)
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, s)| (keyset::shard_file_name("default", i + 1), s.as_bytes().to_vec()))
        .collect()
}

fn config(dir: &KubeletDir) -> Config {
    Config {
        keyset_dirs: vec![dir.path.clone()],
        watch_keyset: None,
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        upstream: None,
        routes: None,
        // The default: revocation must not depend on polling.
        poll_interval: Duration::from_secs(5),
        header_read_timeout: Duration::from_secs(10),
        upstream_timeout: Duration::from_secs(10),
        shutdown_grace: Duration::from_secs(1),
        workers: 0,
        hardening: keyward::verifier::Hardening::default(),
        usage: None,
        audit: None,
    }
}

async fn verify(client: &HttpClient, addr: std::net::SocketAddr, authorization: &str) -> Option<StatusCode> {
    let request = Request::get(format!("http://{addr}/verify"))
        .header("x-original-method", "GET")
        .header("x-original-uri", "/leads/42")
        .header("authorization", authorization)
        .body(Full::default())
        .unwrap();
    let response = client.request(request).await.ok()?;
    let status = response.status();
    response.into_body().collect().await.ok()?;
    Some(status)
}

/// The nearest-rank percentile `p` (0 to 100) of sorted samples.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let rank = (p * sorted.len()).div_ceil(100);
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{label}: median {:.2} ms, p95 {:.2} ms, min {:.2} ms, max {:.2} ms ({} rounds)",
        ms(percentile(&samples, 50)),
        ms(percentile(&samples, 95)),
        ms(samples[0]),
        ms(samples[samples.len() - 1]),
        samples.len()
    );
}

/// From the `..data` swap that removes a key to the first 401 for it.
async fn revocation(rounds: usize, keys: usize) {
    let (with, tokens) = records(keys, 1, 1);
    let without = &with[1..];
    let bearer = format!("Bearer {}", tokens[0].expose());
    let mut dir = KubeletDir::new();
    let mut generation = 1;
    let first = dir.stage(&shards(generation, &with));
    dir.swap(&first);
    let running = keyward::verifier::start(config(&dir)).await.unwrap();
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let mut delays = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        // The key works (bounded wait: the previous round put it back).
        let deadline = Instant::now() + Duration::from_secs(10);
        while verify(&client, running.addr, &bearer).await != Some(StatusCode::OK) {
            assert!(Instant::now() < deadline, "the key never became valid");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        generation += 1;
        let staged = dir.stage(&shards(generation, without));
        let swapped = Instant::now();
        dir.swap(&staged);
        let deadline = swapped + Duration::from_secs(10);
        loop {
            match verify(&client, running.addr, &bearer).await {
                Some(StatusCode::UNAUTHORIZED) => break,
                Some(StatusCode::OK) => {}
                other => panic!("unexpected answer during revocation: {other:?}"),
            }
            assert!(Instant::now() < deadline, "the key was not revoked within 10 s");
        }
        delays.push(swapped.elapsed());
        generation += 1;
        let staged = dir.stage(&shards(generation, &with));
        dir.swap(&staged);
    }
    summary(&format!("revocation, {keys} keys: swap to first 401"), delays);
    running.shutdown().await;
}

/// Swap `..data` to the next generation of a 100k-key set while clients keep asking; count any non-200.
async fn reload_under_load(keys: usize, rounds: usize) {
    let (set, tokens) = records(keys, 1, 2);
    let bearer = Arc::new(format!("Bearer {}", tokens[0].expose()));
    let mut dir = KubeletDir::new();
    let first = dir.stage(&shards(1, &set));
    dir.swap(&first);
    let running = keyward::verifier::start(config(&dir)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !running.store.is_ready() {
        assert!(Instant::now() < deadline, "the first key set did not load");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (requests, failures) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, requests, failures, bearer) =
            (Arc::clone(&stop), Arc::clone(&requests), Arc::clone(&failures), Arc::clone(&bearer));
        let addr = running.addr;
        clients.push(tokio::spawn(async move {
            let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
            while !stop.load(Ordering::Relaxed) {
                requests.fetch_add(1, Ordering::Relaxed);
                if verify(&client, addr, &bearer).await != Some(StatusCode::OK) {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let mut delays = Vec::with_capacity(rounds);
    for generation in 2..2 + rounds as u64 {
        let staged = dir.stage(&shards(generation, &set));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let swapped = Instant::now();
        dir.swap(&staged);
        let deadline = swapped + Duration::from_secs(30);
        loop {
            let index = running.store.current().unwrap();
            if index.sets()[0].generation == generation {
                break;
            }
            assert!(Instant::now() < deadline, "generation {generation} not in force within 30 s");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        delays.push(swapped.elapsed());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    summary(&format!("reload of {keys} keys under load: swap to new generation in force"), delays);
    println!(
        "reload of {keys} keys under load: {} requests during the run, {} not answered 200",
        requests.load(Ordering::Relaxed),
        failures.load(Ordering::Relaxed)
    );
    running.shutdown().await;
}

/// Resident memory per key: a fresh process (this bench binary re-run) loads `count` keys from a directory.
///
/// A fresh process, so the heap holds nothing but the load: VmRSS before, after
/// loading (what a verifier holds with one index in force, including what the
/// allocator keeps from decoding), and VmHWM (the peak during the load).
fn memory_per_key(count: usize) {
    let dir = tempfile::tempdir().unwrap();
    {
        let (set, _) = records(count, 0, 3);
        for (name, bytes) in shards(1, &set) {
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
    }
    let out =
        std::process::Command::new(std::env::current_exe().unwrap()).env(MEMORY_CHILD, dir.path()).output().unwrap();
    assert!(out.status.success(), "memory child failed: {}", String::from_utf8_lossy(&out.stderr));
    print!("{}", String::from_utf8_lossy(&out.stdout));
}

const MEMORY_CHILD: &str = "KEYWARD_BENCH_MEMORY_DIR";

/// The child's side of [`memory_per_key`].
fn memory_child(dir: &Path) {
    let status = |field: &str| {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with(field)).unwrap().to_owned();
        let kib: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib * 1024
    };
    let huge = || {
        let rollup = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
        let line = rollup.lines().find(|l| l.starts_with("AnonHugePages:")).unwrap_or("AnonHugePages: 0 kB").to_owned();
        line.split_whitespace().nth(1).and_then(|n| n.parse::<usize>().ok()).unwrap_or(0) * 1024
    };
    let before = status("VmRSS:");
    // What the loader does on every reload: read the snapshot's bytes, scan them into the index.
    let load = |previous: Option<&KeyIndex>| {
        let stored = keyset::read_stored(dir).unwrap();
        index_from_stored(&stored, previous).unwrap()
    };
    let mut index = load(None);
    let after = status("VmRSS:");
    let peak_first = status("VmHWM:");
    for _ in 0..3 {
        let next = load(Some(&index));
        index = next;
    }
    let steady = status("VmRSS:");
    let peak = status("VmHWM:");
    let count = index.len();
    let mib = |bytes: usize| bytes as f64 / 1_048_576.0;
    let per_key = |bytes: usize| bytes.saturating_sub(before) as f64 / count as f64;
    println!(
        "memory, {count} keys (fresh process): VmRSS {:.1} MiB before loading, {:.1} MiB after: {:.0} bytes per key; \
         after 3 more reloads (steady state) {:.1} MiB: {:.0} bytes per key; \
         peak (VmHWM) {:.1} MiB after the first load ({:.0} bytes per key), {:.1} MiB with reloads ({:.0} bytes per key, two indexes overlap during a reload); \
         the index's own estimate {:.0} bytes per key; on huge pages {:.1} MiB",
        mib(before),
        mib(after),
        per_key(after),
        mib(steady),
        per_key(steady),
        mib(peak_first),
        per_key(peak_first),
        mib(peak),
        per_key(peak),
        index.approx_heap_bytes() as f64 / count as f64,
        mib(huge()),
    );
}
