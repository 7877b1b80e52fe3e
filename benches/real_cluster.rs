//! keyward on the real Kubernetes API server, side by side with the in-memory API, in one run.
//!
//! Run: `make bench-cluster` (builds the control plane, then `cargo bench --bench real_cluster`).
//! Not a test: no figure here is asserted. Everything runs on loopback, in one temporary
//! directory of the bench's own that is removed at the end (the standard library's
//! `remove_dir_all` never follows a symbolic link out of it); every child is stopped when the
//! bench ends, fails or is interrupted.
//!
//! 1. **Creation, in-memory**: `keyward fake-apiserver` and `keyward operator` (the binary cargo
//!    built for this bench), N ApiKeys created 8 at a time, until all are Active and published:
//!    wall time, writes per key (counted by the fake server), operator peak RSS, CPU seconds.
//! 2. **Creation, real**: `kube-harness up` (etcd, kube-apiserver, kube-controller-manager from
//!    Kubernetes' Go modules), the CRD and `manifests/` installed, the same operator binary as the
//!    ServiceAccount of `manifests/` (a TokenRequest token), the same N ApiKeys: writes per key
//!    from the API server's `apiserver_request_total` by verb and resource, its
//!    `process_cpu_seconds_total`, etcd's and the operator's CPU from /proc.
//! 3. **Revocation, end to end** (real): a `--watch-keyset` verifier as the ServiceAccount of
//!    `examples/workloads/verifier-watch-rbac.yaml`; per round, `revoked: true` is patched on
//!    one ApiKey and `/verify` asked with its token until it answers 401. Done on a 1,000-key set
//!    (a namespace of its own) and on the N-key set of step 2. A watch on the key set's
//!    ConfigMaps splits each round into the operator's part (patch → first shard event) and
//!    the verifier's (→ 401).
//! 4. **Revocation, verifier side, large sets** (real, operator stopped): the bench itself
//!    publishes key sets of 1,000 and 100,000 records as ConfigMaps, with the contract's own
//!    encoder and layout (what the publisher writes), and revokes by writing the next generation
//!    without the record: time from the first shard write to the first 401. Creating 100,000
//!    ApiKeys through the operator does not fit a bench run on 2 cores; this measures the
//!    API server → watch → verifier half at that size, and prints the encode time the
//!    operator's half would add.
//!
//! Environment: `KEYWARD_BENCH_KEYS` (N, default 10,000, at most 100,000), `KEYWARD_BENCH_ROUNDS`
//! (revocations per set, default 20, at most 200), `KEYWARD_BENCH_LARGE_KEYSET` (default 100,000,
//! at most 1,000,000), `KEYWARD_BENCH_SKIP_FAKE=1` (real side only), `KEYWARD_KUBE_HARNESS` (the
//! harness binary; default `target/kube-harness/kube-harness`, which `make harness` builds).
//! The bench's environment reaches the operator (`KEYWARD_COALESCE=100ms` tries another
//! coalescing window). The whole run stops after 45 minutes.

// Figures printed for people, and counters parsed from Prometheus text (floats): a few ulps,
// or a fraction cut off a count that is whole anyway, do not matter.
#![allow(clippy::cast_precision_loss, clippy::cast_possible_truncation, clippy::cast_sign_loss)]

// A bench's root resolves modules beside itself, so the directory is named.
#[path = "real_cluster/procs.rs"]
mod procs;
#[path = "real_cluster/revocation.rs"]
mod revocation;
#[path = "real_cluster/side.rs"]
mod side;

use std::path::{Path, PathBuf};
use std::time::Duration;

use side::Side;

/// The whole run must finish within this.
const DEADLINE: Duration = Duration::from_secs(45 * 60);

/// Settings read from the environment, bounded.
pub struct Settings {
    pub keys: usize,
    pub rounds: usize,
    pub large: usize,
    pub skip_fake: bool,
    pub harness: PathBuf,
}

fn settings() -> Settings {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    Settings {
        keys: procs::env_count("KEYWARD_BENCH_KEYS", 10_000, 100_000),
        rounds: procs::env_count("KEYWARD_BENCH_ROUNDS", 20, 200),
        large: procs::env_count("KEYWARD_BENCH_LARGE_KEYSET", 100_000, 1_000_000),
        skip_fake: std::env::var("KEYWARD_BENCH_SKIP_FAKE").is_ok_and(|v| v == "1"),
        harness: std::env::var_os("KEYWARD_KUBE_HARNESS")
            .map_or_else(|| root.join("target/kube-harness/kube-harness"), PathBuf::from),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let settings = settings();
    let settings = &settings;
    procs::run_bench("real_cluster", &settings.harness, DEADLINE, |dir| async move { run(settings, &dir).await });
}

async fn run(settings: &Settings, dir: &Path) -> Result<(), String> {
    let binary = Path::new(env!("CARGO_BIN_EXE_keyward"));
    println!(
        "real_cluster: {} ApiKeys, {} revocations per set, large set {} records; load average at start: {}",
        settings.keys,
        settings.rounds,
        settings.large,
        procs::load_average()
    );
    let fake = if settings.skip_fake {
        None
    } else {
        eprintln!("== in-memory API: {} ApiKeys", settings.keys);
        let side = Side::start_fake(binary, &dir.join("fake")).await?;
        let creation = side.create_all(settings.keys).await?;
        side.stop();
        Some(creation)
    };

    eprintln!("== real API server: {} ApiKeys", settings.keys);
    let real = Side::start_real(binary, &settings.harness, &dir.join("real")).await?;
    let creation = real.create_all(settings.keys).await?;
    side::print_side_by_side(settings.keys, fake.as_ref(), &creation);

    eprintln!("== revocation through the operator");
    let rounds = settings.rounds;
    let small = revocation::end_to_end(&real, binary, "rev-1k", 1_000, rounds, creation.active).await?;
    let at_n = revocation::end_to_end(&real, binary, side::NAMESPACE, settings.keys, rounds, 0).await?;
    // The bench writes the next key sets itself; the operator would rebuild them from ApiKeys.
    let plane = real.stop_operator();
    eprintln!("== revocation, bench-written key sets (operator stopped)");
    let written_small = revocation::written(&plane, binary, "gen-1k", 1_000, rounds).await?;
    let written_large = revocation::written(&plane, binary, "gen-large", settings.large, rounds).await?;
    revocation::print(&[small, at_n, written_small, written_large]);
    println!("  load average at the end: {}", procs::load_average());
    drop(plane);
    Ok(())
}
