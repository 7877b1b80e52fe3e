//! The usage write budget on the real API server: N ApiKeys (default 10,000), all in use, and
//! R verifier replicas (default 100) reporting; API writes per minute by verb and resource,
//! with the operator's budget flags at their defaults and at a tighter setting.
//!
//! Run: `make bench-usage` (builds the control plane, then `cargo bench --bench usage_budget`).
//! Not a test: no figure is asserted. Loopback only; one temporary directory of the bench's own,
//! removed at the end; every child stopped when the bench ends, fails or is interrupted.
//!
//! 1. `kube-harness up`, the CRD and `manifests/`, the operator as its ServiceAccount; N ApiKeys
//!    created and waited for until all are Active (as `benches/real_cluster.rs`).
//! 2. R Pod objects (nothing runs them: the harness has no kubelet) own R usage reports. The
//!    bench writes the reports itself instead of running R verifier processes: every
//!    `--usage-report-interval` (60 s, the verifier's default) each replica's report is written
//!    with the verifier's own code (`Reporter`-shaped ConfigMap, `api_report::write`: server-side
//!    apply, field manager `keyward-verifier`), in the real report format, every key in it with
//!    its cumulative counts grown since the last report. One process stands for R verifiers: the
//!    API server sees the same R objects and writes; what is not measured is R processes' CPU.
//! 3. For each budget (defaults; then `--usage-status-interval 30m`), the operator is started
//!    with those flags and the API server's `apiserver_request_total` is read every minute for
//!    `KEYWARD_BENCH_MINUTES` (default 5): writes per minute by verb and resource, and writes
//!    the server refused, by code. At the end, the size of the busiest ApiKeys' status (with
//!    its usage ledger: one watermark per reporting process) as the API server returns it.
//! 4. Before the cluster starts, each key's usage ledger is built with the operator's own pure
//!    code (`plan::usage::fold`) from synthetic reports of the same shape, for all N keys and R
//!    replicas after one round, and for a few keys after 30 days of R replicas' reports: its
//!    JSON size is what each ApiKey's status holds. No object holds more than one key's.
//!
//! Environment: `KEYWARD_BENCH_KEYS` (N, default 10,000), `KEYWARD_BENCH_REPLICAS` (R, default
//! 100), `KEYWARD_BENCH_MINUTES` (per budget, default 5), `KEYWARD_KUBE_HARNESS` (the harness
//! binary; default `target/kube-harness/kube-harness`, which `make harness` builds);
//! `KEYWARD_BENCH_MODEL_ONLY=1` prints the ledger sizes of step 4 and starts no cluster.
//! `KEYWARD_BENCH_PACE=N` runs the operator with `--usage-max-writes-per-second N` (default: its own, 40).

// Figures printed for people, and counters parsed from Prometheus text (floats, in the shared
// side.rs): a few ulps, or a fraction cut off a count that is whole anyway, do not matter.
#![allow(clippy::cast_precision_loss, clippy::cast_possible_truncation, clippy::cast_sign_loss)]

// A bench's root resolves modules beside itself, so the directory is named.
#[path = "real_cluster/procs.rs"]
mod procs;
// Shared with benches/real_cluster.rs, which uses all of it; this bench uses the real side only.
#[allow(dead_code)]
#[path = "real_cluster/side.rs"]
mod side;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use keyward::api::ApiKey;
use keyward::api::UsageLedger;
use keyward::plan::usage::{Live, fold, source};
use keyward::token::KeyId;
use keyward::usage::{Counts, Report};
use keyward::verifier::api_report::{self, PodRef, Reporter};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};

use side::{NAMESPACE, Side};

/// The verifier's default `--usage-report-interval`.
const REPORT_INTERVAL: Duration = Duration::from_secs(60);
/// The whole run must finish within this.
const DEADLINE: Duration = Duration::from_secs(90 * 60);
/// Reports written at once.
const WRITE_CONCURRENCY: usize = 4;

/// One operator configuration to measure.
struct Budget {
    name: &'static str,
    flags: &'static [&'static str],
}

const BUDGETS: [Budget; 2] = [
    Budget { name: "defaults (pass 60s, status 5m, lastUsedAt step 1h)", flags: &[] },
    Budget { name: "tighter (status 30m)", flags: &["--usage-status-interval", "30m"] },
];

struct Settings {
    keys: usize,
    replicas: usize,
    minutes: usize,
    harness: PathBuf,
    /// `--usage-max-writes-per-second` for every budget (`KEYWARD_BENCH_PACE`); the operator's default without.
    pace: Option<String>,
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let settings = Settings {
        keys: procs::env_count("KEYWARD_BENCH_KEYS", 10_000, 20_000),
        replicas: procs::env_count("KEYWARD_BENCH_REPLICAS", 100, 500),
        minutes: procs::env_count("KEYWARD_BENCH_MINUTES", 5, 60),
        harness: std::env::var_os("KEYWARD_KUBE_HARNESS")
            .map_or_else(|| root.join("target/kube-harness/kube-harness"), PathBuf::from),
        pace: std::env::var("KEYWARD_BENCH_PACE").ok(),
    };
    let settings = &settings;
    if std::env::var_os("KEYWARD_BENCH_MODEL_ONLY").is_some() {
        print_model(settings);
        return;
    }
    procs::run_bench("usage_budget", &settings.harness, DEADLINE, |dir| async move { run(settings, &dir).await });
}

async fn run(settings: &Settings, dir: &Path) -> Result<(), String> {
    let binary = Path::new(env!("CARGO_BIN_EXE_keyward"));
    println!(
        "usage_budget: {} ApiKeys all in use, {} verifier replicas reporting every {}s, {} minutes per budget; load {}",
        settings.keys,
        settings.replicas,
        REPORT_INTERVAL.as_secs(),
        settings.minutes,
        procs::load_average()
    );
    print_model(settings);
    let real = Side::start_real(binary, &settings.harness, &dir.join("real")).await?;
    let started = Instant::now();
    side::create_keys(&real.client, NAMESPACE, settings.keys).await?;
    real.converge(started, settings.keys as u64, NAMESPACE, settings.keys as u64).await?;
    eprintln!("  {} ApiKeys Active after {:.0} s", settings.keys, started.elapsed().as_secs_f64());
    let plane = real.stop_operator();
    let client = plane.client.clone();
    let ids = key_ids(&client).await?;
    let mut fleet = Fleet::start(&client, settings.replicas, ids).await?;

    let mut results = Vec::new();
    for (i, budget) in BUDGETS.iter().enumerate() {
        eprintln!("== {}", budget.name);
        let phase_dir = dir.join(format!("budget-{i}"));
        std::fs::create_dir_all(&phase_dir).map_err(|e| e.to_string())?;
        let operator_kc = plane.service_account_kubeconfig("keyward-system", "keyward-operator")?;
        let mut flags: Vec<&str> = budget.flags.to_vec();
        if let Some(pace) = &settings.pace {
            flags.extend(["--usage-max-writes-per-second", pace.as_str()]);
        }
        let (operator, _admin) = side::start_operator(binary, &operator_kc, &phase_dir, &flags).await?;
        let minutes = measure(&plane, &mut fleet, settings.minutes).await?;
        drop(operator);
        let warnings = std::fs::read_to_string(phase_dir.join("operator.log")).unwrap_or_default();
        let usage_warnings = warnings.lines().filter(|l| l.contains("usage")).count();
        let first = warnings.lines().find(|l| l.contains("usage")).map(str::to_owned);
        results.push((budget, minutes, usage_warnings, first));
    }
    print_results(settings, &fleet, &results);
    print_status_sizes(&client).await?;
    Ok(())
}

/// The size of the ApiKeys' status as stored (JSON), and of the usage ledger within it.
async fn print_status_sizes(client: &Client) -> Result<(), String> {
    let keys: Api<ApiKey> = Api::namespaced(client.clone(), NAMESPACE);
    let listed = keys.list(&ListParams::default()).await.map_err(|e| format!("list ApiKeys: {e}"))?;
    let sizes: Vec<(usize, usize, usize)> = listed
        .items
        .iter()
        .filter_map(|k| {
            let status = k.status.as_ref()?;
            let ledger = status.usage_ledger.as_ref()?;
            let bytes = |text: serde_json::Result<String>| text.map_or(0, |t| t.len());
            Some((bytes(serde_json::to_string(status)), bytes(serde_json::to_string(ledger)), ledger.folded.len()))
        })
        .collect();
    let max = |f: fn(&(usize, usize, usize)) -> usize| sizes.iter().map(f).max().unwrap_or(0);
    let mean = |f: fn(&(usize, usize, usize)) -> usize| sizes.iter().map(f).sum::<usize>() / sizes.len().max(1);
    println!(
        "\n  ApiKeys with a usage ledger: {} of {}; status {} bytes largest ({} mean), of which the ledger {} bytes \
         largest ({} mean); watermarks per key {} largest",
        sizes.len(),
        listed.items.len(),
        max(|s| s.0),
        mean(|s| s.0),
        max(|s| s.1),
        mean(|s| s.1),
        max(|s| s.2)
    );
    Ok(())
}

fn print_model(settings: &Settings) {
    let model = ledger_model(settings.keys, settings.replicas);
    println!(
        "  each key's usage ledger, built by the operator's own code from synthetic reports ({} keys, {} replicas): \
         after one round {} bytes a key (largest; {} bytes for all keys together, in {} objects); after 30 days of \
         the same replicas' reports {} bytes a key; no object holds more than one key's, an object may hold 1,048,576",
        settings.keys, settings.replicas, model.first_max, model.first_total, settings.keys, model.month_max
    );
}

/// Sizes of the per-key usage ledgers the operator writes, from [`ledger_model`].
struct Model {
    /// Largest ledger (JSON bytes) after one round of every replica's report.
    first_max: usize,
    /// All keys' ledgers together after that round.
    first_total: usize,
    /// Largest ledger after 30 days of the replicas' reports (one round a day for 29 days, then
    /// one an hour), pruned as the operator prunes; computed for a few keys, since a key's
    /// ledger depends on its own key ids only.
    month_max: usize,
}

/// The JSON size of each key's usage ledger for `keys` busy keys and `replicas` reporting
/// verifier processes. Pure: the plan's own code.
fn ledger_model(keys: usize, replicas: usize) -> Model {
    let ids: Vec<KeyId> = (0..keys)
        .map(|i| format!("{:012x}", 0x0a00_0000_0000_u64 + i as u64).parse().expect("12 hex digits"))
        .collect();
    let reports = |ids: &[KeyId], round: u64, at: jiff::Timestamp| -> Vec<Report> {
        (0..replicas)
            .map(|pod| Report {
                pod: format!("api-{pod:03}"),
                pod_uid: "00000000-0000-0000-0000-000000000000".to_owned(),
                epoch: format!("{:016x}", 0xbe0c_0000_0000_0000_u64 + pod as u64),
                at: at.as_second(),
                key_sets: vec![format!("{NAMESPACE}/default")],
                keys: ids
                    .iter()
                    .map(|id| {
                        let counts = Counts {
                            allowed: 10 * round,
                            rate_limited: round,
                            last_allowed: Some(at.as_second()),
                            ..Counts::default()
                        };
                        (*id, counts)
                    })
                    .collect(),
            })
            .collect()
    };
    let size = |ledger: &UsageLedger| serde_json::to_string(ledger).map_or(0, |t| t.len());
    let start = keyward::runtime::clock::now();
    let first = reports(&ids, 1, start);
    let all: Vec<&Report> = first.iter().collect();
    let live = Live { sources: first.iter().map(source).collect(), ..Live::default() };
    let (mut first_max, mut first_total) = (0, 0);
    for id in &ids {
        let n = size(&fold(None, &all, std::slice::from_ref(id), &live, start).ledger);
        first_max = first_max.max(n);
        first_total += n;
    }
    let hour = jiff::SignedDuration::from_hours(1);
    let times: Vec<jiff::Timestamp> =
        (0..29).map(|d| start + hour * (24 * d)).chain((0..24).map(|h| start + hour * (24 * 29 + h))).collect();
    let sample = &ids[..ids.len().min(10)];
    let mut ledgers = vec![None::<UsageLedger>; sample.len()];
    for (round, at) in times.iter().enumerate() {
        let round_reports = reports(sample, round as u64 + 1, *at);
        let all: Vec<&Report> = round_reports.iter().collect();
        for (ledger, id) in ledgers.iter_mut().zip(sample) {
            *ledger = Some(fold(ledger.as_ref(), &all, std::slice::from_ref(id), &live, *at).ledger);
        }
    }
    let month_max = ledgers.iter().flatten().map(size).max().unwrap_or(0);
    Model { first_max, first_total, month_max }
}

/// Every ApiKey's current key id (as the verifiers would count it) and name.
async fn key_ids(client: &Client) -> Result<Vec<(KeyId, String)>, String> {
    let keys: Api<ApiKey> = Api::namespaced(client.clone(), NAMESPACE);
    let listed = keys.list(&ListParams::default()).await.map_err(|e| format!("list ApiKeys: {e}"))?;
    listed
        .items
        .iter()
        .map(|k| {
            let id = k.status.as_ref().and_then(|s| s.current_key.as_ref()).map(|v| v.key_id.clone());
            let id = id.ok_or("an ApiKey without a current key")?.parse::<KeyId>().map_err(|e| e.to_string())?;
            Ok((id, k.metadata.name.clone().unwrap_or_default()))
        })
        .collect()
}

/// The simulated verifier replicas: their Pods, epochs and cumulative counts.
struct Fleet {
    client: Client,
    replicas: Vec<Reporter>,
    ids: Vec<(KeyId, String)>,
    /// Reports written so far by each replica.
    rounds: u64,
    /// Bytes of one report's text at the last round.
    report_bytes: usize,
    written: u64,
    failed: BTreeMap<String, u64>,
}

impl Fleet {
    async fn start(client: &Client, replicas: usize, ids: Vec<(KeyId, String)>) -> Result<Fleet, String> {
        let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
        let mut reporters = Vec::with_capacity(replicas);
        for i in 0..replicas {
            let name = format!("api-{i:03}");
            let pod: Pod = serde_json::from_value(serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name},
                "spec": {"containers": [{"name": "verifier", "image": "keyward:bench"}]}
            }))
            .map_err(|e| e.to_string())?;
            let created = pods.create(&PostParams::default(), &pod).await.map_err(|e| format!("create Pod: {e}"))?;
            let uid = created.metadata.uid.ok_or("a Pod without uid")?;
            let pod = PodRef { namespace: NAMESPACE.to_owned(), name, uid };
            reporters.push(Reporter::new(pod, format!("{:016x}", 0xbe0c_0000_0000_0000_u64 + i as u64)));
        }
        Ok(Fleet {
            client: client.clone(),
            replicas: reporters,
            ids,
            rounds: 0,
            report_bytes: 0,
            written: 0,
            failed: BTreeMap::new(),
        })
    }

    /// One report interval: every replica writes its report, every key grown by 10 allowed
    /// and 1 denied request since the last one, last used now.
    async fn round(&mut self) {
        use futures::StreamExt;
        self.rounds += 1;
        let now = keyward::runtime::clock::now().as_second();
        let counts = Counts {
            allowed: 10 * self.rounds,
            rate_limited: self.rounds,
            last_allowed: Some(now),
            ..Counts::default()
        };
        let keys: BTreeMap<KeyId, Counts> = self.ids.iter().map(|(id, _)| (*id, counts)).collect();
        let configmaps: Vec<_> = self
            .replicas
            .iter_mut()
            .map(|reporter| {
                let report = Report {
                    keys: keys.clone(),
                    at: now,
                    key_sets: vec![format!("{NAMESPACE}/default")],
                    ..reporter.report(None, keyward::runtime::clock::now())
                };
                reporter.configmap(&report)
            })
            .collect();
        self.report_bytes =
            configmaps.first().and_then(|c| c.data.as_ref()).and_then(|d| d.values().next()).map_or(0, String::len);
        let client = &self.client;
        let writes = futures::stream::iter(configmaps.iter().map(|c| api_report::write(client, c)))
            .buffer_unordered(WRITE_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        for outcome in writes {
            match outcome {
                Ok(()) => self.written += 1,
                Err(e) => *self.failed.entry(short_error(&e)).or_default() += 1,
            }
        }
    }
}

fn short_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => format!("{} {}", status.code, status.reason),
        other => other.to_string().chars().take(80).collect(),
    }
}

/// What one minute of a phase cost: API writes (successful, refused) by "VERB resource".
struct Minute {
    writes: BTreeMap<String, u64>,
    refused: BTreeMap<String, u64>,
}

async fn counts(plane: &side::Plane) -> Result<(BTreeMap<String, u64>, BTreeMap<String, u64>), String> {
    let text = plane.apiserver_metrics().await?;
    let (writes, refused, _reads) = side::request_counts(&text);
    Ok((writes, refused))
}

/// Run the fleet's rounds for `minutes`, reading the API server's counters every minute.
async fn measure(plane: &side::Plane, fleet: &mut Fleet, minutes: usize) -> Result<Vec<Minute>, String> {
    let mut out = Vec::new();
    let mut before = counts(plane).await?;
    let mut tick = tokio::time::interval(REPORT_INTERVAL);
    tick.tick().await;
    for minute in 1..=minutes {
        fleet.round().await;
        tick.tick().await;
        let after = counts(plane).await?;
        let m =
            Minute { writes: side::difference(&after.0, &before.0), refused: side::difference(&after.1, &before.1) };
        eprintln!(
            "  minute {minute}: {} writes ({}), refused {:?}; load {}",
            m.writes.values().sum::<u64>(),
            m.writes.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", "),
            m.refused,
            procs::load_average()
        );
        out.push(m);
        before = after;
    }
    Ok(out)
}

fn print_results(settings: &Settings, fleet: &Fleet, results: &[(&Budget, Vec<Minute>, usize, Option<String>)]) {
    println!(
        "\n{} ApiKeys all in use, {} simulated verifier replicas, one report each per {} s ({} bytes each, {} written, refused {:?})",
        settings.keys,
        settings.replicas,
        REPORT_INTERVAL.as_secs(),
        fleet.report_bytes,
        fleet.written,
        fleet.failed
    );
    for (budget, minutes, usage_warnings, first_warning) in results {
        println!("\n  operator: {} — API writes per minute, by minute", budget.name);
        let mut kinds: Vec<&String> = minutes.iter().flat_map(|m| m.writes.keys().chain(m.refused.keys())).collect();
        kinds.sort();
        kinds.dedup();
        let header: Vec<String> = (1..=minutes.len()).map(|i| format!("m{i}")).collect();
        println!("  {:<40} {:>8}  {}", "verb resource", "mean", header.join(" "));
        for kind in kinds {
            let refused = minutes.iter().any(|m| m.refused.contains_key(kind));
            let per: Vec<u64> = minutes
                .iter()
                .map(|m| if refused { m.refused.get(kind) } else { m.writes.get(kind) }.copied().unwrap_or(0))
                .collect();
            let mean = per.iter().sum::<u64>() as f64 / per.len().max(1) as f64;
            let label = if refused { format!("{kind} (refused)") } else { kind.clone() };
            let cells: Vec<String> = per.iter().map(u64::to_string).collect();
            println!("  {label:<40} {mean:>8.1}  {}", cells.join(" "));
        }
        println!("  operator log lines about usage: {usage_warnings}");
        if let Some(line) = first_warning {
            println!("  first: {}", line.chars().take(400).collect::<String>());
        }
    }
    println!("  load average at the end: {}", procs::load_average());
}
