//! Revocation through a `--watch-keyset` verifier on the real API server: from the revoking
//! write to the first 401 for the revoked token.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use keyward::api::ApiKey;
use keyward::configmap::{label_selector, layout};
use keyward::keyset::{DEFAULT_MAX_SHARD_BYTES, KeySetId, Record, RecordState, encode_packed};
use keyward::token::{Prefix, Token};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Api, Client};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::procs::{self, Guard};
use crate::side::{self, Plane, Side};

/// How often `/verify` is asked while waiting for the 401 (so the figures are this much coarse).
const POLL: Duration = Duration::from_millis(2);
/// One revocation must show within this.
const ROUND_LIMIT: Duration = Duration::from_secs(60);

/// The rounds of one revocation measure.
pub struct Revocations {
    pub what: String,
    pub keys: usize,
    /// Revoking write (start) to the first 401.
    pub total: Vec<Duration>,
    /// Revoking write to the first key-set ConfigMap event a watch saw (through the operator).
    pub to_shard: Vec<Duration>,
    /// Encoding the next key set, before the revoking write (bench-written sets).
    pub encode: Vec<Duration>,
    /// The shard writes themselves (bench-written sets).
    pub writes: Vec<Duration>,
}

/// A `--watch-keyset` verifier for `namespace/default`, as the ServiceAccount and Role of
/// `examples/workloads/verifier-watch-rbac.yaml`; its main listener's address.
fn start_verifier(plane: &Plane, binary: &Path, namespace: &str) -> Result<(Guard, String), String> {
    let rbac = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/workloads/verifier-watch-rbac.yaml");
    side::kubectl(&plane.kubeconfig, &["apply", "-n", namespace, "-f", &rbac.to_string_lossy()])?;
    let kubeconfig = plane.service_account_kubeconfig(namespace, "keyward-verifier")?;
    let listen = format!("127.0.0.1:{}", procs::free_port());
    let log = std::fs::File::create(plane.dir.join(format!("verifier-{namespace}.log"))).map_err(|e| e.to_string())?;
    let verifier = Guard(
        Command::new(binary)
            .args(["verifier", "--watch-keyset", &format!("{namespace}/default"), "--listen", &listen])
            .args(["--admin-listen", &format!("127.0.0.1:{}", procs::free_port())])
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting keyward verifier: {e}"))?,
    );
    Ok((verifier, listen))
}

/// One forward-auth request; the status code.
async fn verify(addr: &str, token: &Token) -> u16 {
    let head = format!(
        "GET /verify HTTP/1.1\r\nHost: verifier\r\nAuthorization: Bearer {}\r\nX-Original-Method: GET\r\n\
         X-Original-URI: /orders/1\r\nConnection: close\r\n\r\n",
        token.expose()
    );
    procs::http(addr, &head).await.map_or(0, |(code, _)| code)
}

async fn until_status(addr: &str, token: &Token, code: u16, limit: Duration, every: Duration) -> Result<(), String> {
    procs::poll(&format!("the verifier to answer {code}"), limit, every, || async {
        (verify(addr, token).await == code).then_some(())
    })
    .await
}

/// When each key-set ConfigMap event of `namespace` arrived, from a watch of the bench's own.
fn watch_shards(client: &Client, namespace: &str) -> (Arc<Mutex<Vec<Instant>>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let config = watcher::Config::default().labels(&label_selector("default"));
    let record = seen.clone();
    let task = tokio::spawn(async move {
        let mut events = std::pin::pin!(watcher(api, config));
        while let Some(event) = events.next().await {
            if let Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) = event {
                record.lock().unwrap().push(Instant::now());
            }
        }
    });
    (seen, task)
}

/// Revoke `rounds` ApiKeys of `namespace` through the operator, one at a time. When
/// `namespace` is not the creation bench's, `keys` ApiKeys are created there first and the
/// operator's Active count must reach `active_before + keys`.
pub async fn end_to_end(
    side: &Side,
    binary: &Path,
    namespace: &str,
    keys: usize,
    rounds: usize,
    active_before: u64,
) -> Result<Revocations, String> {
    let plane = side.plane().ok_or("revocation runs on the real API server")?;
    if namespace != side::NAMESPACE {
        side::kubectl(&plane.kubeconfig, &["create", "namespace", namespace])?;
        let started = Instant::now();
        side::create_keys(&side.client, namespace, keys).await?;
        let (ready, _) = side.converge(started, active_before + keys as u64, namespace, keys as u64).await?;
        eprintln!("  {keys} ApiKeys in {namespace} Ready in {:.1} s", ready.as_secs_f64());
    }
    let (_verifier, addr) = start_verifier(plane, binary, namespace)?;
    let (shard_events, watch) = watch_shards(&side.client, namespace);
    let keys_api: Api<ApiKey> = Api::namespaced(side.client.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(side.client.clone(), namespace);
    let mut result = Revocations::new(format!("through the operator, {namespace}"), keys);
    for round in 0..rounds.min(keys) {
        let name = format!("integration-{round:05}");
        let raw = secrets.get(&format!("{name}-apikey")).await.map_err(|e| e.to_string())?;
        let token = raw.data.and_then(|mut d| d.remove("token")).ok_or("a Secret without a token")?;
        let token = Token::parse(std::str::from_utf8(&token.0).map_err(|e| e.to_string())?)
            .map_err(|e| format!("the Secret's token: {e}"))?;
        until_status(&addr, &token, 200, ROUND_LIMIT, Duration::from_millis(50)).await?;
        let started = Instant::now();
        let patch = Patch::Merge(serde_json::json!({"spec": {"revoked": true}}));
        keys_api.patch(&name, &PatchParams::default(), &patch).await.map_err(|e| format!("revoke {name}: {e}"))?;
        until_status(&addr, &token, 401, ROUND_LIMIT, POLL).await?;
        result.total.push(started.elapsed());
        if let Some(first) = shard_events.lock().unwrap().iter().find(|t| **t >= started) {
            result.to_shard.push(first.duration_since(started));
        }
        eprintln!("  {namespace} round {round}: {:.0} ms", started.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    watch.abort();
    Ok(result)
}

/// `count` realistic records in `namespace`; the tokens of the first `keep`.
fn records(namespace: &str, count: usize, keep: usize) -> (Vec<Record>, Vec<Token>) {
    let mut rng = StdRng::seed_from_u64(9);
    let prefix = Prefix::default();
    let start: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    let mut kept = Vec::new();
    let records = (0..count)
        .map(|i| {
            let token = Token::generate(&prefix, &mut rng);
            let hash = token.hash();
            if kept.len() < keep {
                kept.push(token);
            }
            Record {
                hash,
                key_id: hash.key_id(),
                namespace: namespace.into(),
                name: format!("partner-integration-{i:07}"),
                scopes: vec!["orders:read".parse().unwrap(), "invoices:write".parse().unwrap()],
                not_before: start,
                not_after: (i % 3 == 0).then(|| "2099-06-30T00:00:00Z".parse().unwrap()),
                state: RecordState::Active,
                rate_limit: None,
            }
        })
        .collect();
    (records, kept)
}

/// Write generation `generation` of `records` as the publisher does (server-side apply of
/// each shard in order, then stale shards deleted). Returns (encode time, write time from
/// `started`).
async fn publish(
    api: &Api<ConfigMap>,
    id: &KeySetId,
    generation: u64,
    records: &[Record],
) -> Result<(Duration, Instant), String> {
    let encoding = Instant::now();
    let shards =
        layout(id, encode_packed(id, generation, records, DEFAULT_MAX_SHARD_BYTES).map_err(|e| e.to_string())?);
    let encode = encoding.elapsed();
    let started = Instant::now();
    let params = PatchParams::apply("keyward-bench").force();
    for shard in &shards {
        api.patch(&shard.name, &params, &Patch::Apply(&shard.to_configmap(id))).await.map_err(|e| e.to_string())?;
    }
    let existing =
        api.list(&ListParams::default().labels(&label_selector(&id.name))).await.map_err(|e| e.to_string())?;
    for map in existing.items {
        let name = map.metadata.name.unwrap_or_default();
        if !shards.iter().any(|s| s.name == name) {
            api.delete(&name, &DeleteParams::default()).await.map_err(|e| e.to_string())?;
        }
    }
    Ok((encode, started))
}

/// Revoke `rounds` keys of a `count`-record key set the bench publishes itself in
/// `namespace` (the operator is stopped): first shard write to the first 401.
pub async fn written(
    plane: &Plane,
    binary: &Path,
    namespace: &str,
    count: usize,
    rounds: usize,
) -> Result<Revocations, String> {
    side::kubectl(&plane.kubeconfig, &["create", "namespace", namespace])?;
    let rounds = rounds.min(count);
    let (mut all, tokens) = records(namespace, count, rounds);
    let id = KeySetId { namespace: namespace.into(), name: "default".into() };
    let api: Api<ConfigMap> = Api::namespaced(plane.client.clone(), namespace);
    let mut generation = 1;
    publish(&api, &id, generation, &all).await?;
    let (_verifier, addr) = start_verifier(plane, binary, namespace)?;
    until_status(&addr, &tokens[0], 200, Duration::from_secs(120), Duration::from_millis(50)).await?;
    let mut result = Revocations::new(format!("bench-written key set, {namespace}"), count);
    for token in &tokens {
        until_status(&addr, token, 200, ROUND_LIMIT, Duration::from_millis(50)).await?;
        let hash = token.hash();
        all.retain(|r| r.hash != hash);
        generation += 1;
        let (encode, started) = publish(&api, &id, generation, &all).await?;
        let written = started.elapsed();
        until_status(&addr, token, 401, ROUND_LIMIT, POLL).await?;
        result.total.push(started.elapsed());
        result.encode.push(encode);
        result.writes.push(written);
        eprintln!("  {namespace}: {:.0} ms", started.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(result)
}

impl Revocations {
    fn new(what: String, keys: usize) -> Revocations {
        Revocations { what, keys, total: Vec::new(), to_shard: Vec::new(), encode: Vec::new(), writes: Vec::new() }
    }
}

/// Nearest-rank percentile in milliseconds; with 20 rounds p99 is the slowest round.
fn percentile(values: &[Duration], p: f64) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.saturating_sub(1).min(sorted.len().saturating_sub(1))).copied()
}

fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
}

pub fn print(results: &[Revocations]) {
    println!(
        "\nrevocation through a --watch-keyset verifier on the real API server (ms; /verify polled every {POLL:?})"
    );
    println!(
        "  {:<44} {:>8} {:>7} {:>8} {:>8} {:>8} {:>8} {:>12} {:>10} {:>9}",
        "set", "keys", "rounds", "median", "p99", "min", "max", "to shard p50", "encode p50", "write p50"
    );
    for r in results {
        println!(
            "  {:<44} {:>8} {:>7} {:>8} {:>8} {:>8} {:>8} {:>12} {:>10} {:>9}",
            r.what,
            r.keys,
            r.total.len(),
            ms(percentile(&r.total, 50.0)),
            ms(percentile(&r.total, 99.0)),
            ms(percentile(&r.total, 0.0)),
            ms(percentile(&r.total, 100.0)),
            ms(percentile(&r.to_shard, 50.0)),
            ms(percentile(&r.encode, 50.0)),
            ms(percentile(&r.writes, 50.0)),
        );
    }
    println!("  through the operator: from sending the revoked: true patch; \"to shard\" is when the bench's own");
    println!("  watch saw the first key-set ConfigMap change. Bench-written: from the first shard write (the");
    println!("  encode before it, which the operator's publisher would also do, is shown apart).");
}
