//! The operator under fire, on a real API server in a control plane of its own (these
//! tests kill processes and restart the API server, so they share it with nothing).
//!
//! Seeded fault runs: a fault-injecting proxy (`kube-harness fault-proxy`) sits between
//! the operator and the API server and adds latency, 500s, 409s, 429s with Retry-After,
//! connections reset before and after a write is applied, and watches cut or expired
//! with 410, while keys are created, rotated, disabled, enabled, revoked and deleted and
//! the operator is killed with SIGKILL at random points. The faults then stop and the
//! invariants are checked:
//!
//! 1. every live, unrevoked key is Ready, its Secret's token is its status's current key
//!    and that hash is published (inactive when the key is disabled);
//! 2. no revoked or deleted key's hash is published, and no token is left in its Secret;
//! 3. one token minted per rotation: a Secret's `token` held at most one value per
//!    rotation asked for, plus the first;
//! 4. no token lost that a consumer could hold: every token a live, unrevoked key's
//!    Secret ever held is still published (rotations keep the old one for an hour);
//! 5. converged keys cause no writes (leases aside) over a quiet window;
//! 6. no token in the operator's logs.
//!
//! `KEYWARD_FAULT_SEED` (first seed, default 1), `KEYWARD_FAULT_RUNS` (default 1),
//! `KEYWARD_FAULT_KEYS` (default 24) and `KEYWARD_FAULT_RATE` (default 0.15) size the
//! runs; CI runs the defaults, `make faults` a longer series (figures in BENCHMARKS.md).
//!
//! The restart test restarts kube-apiserver (etcd keeps its data) while keys are being
//! created and a `--watch-keyset` verifier serves: the verifier keeps answering from its
//! last good key set while the API is away, and both reconnect and converge.

#[path = "real_cluster/control_plane.rs"]
mod control_plane;
#[path = "real_cluster/support.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use keyward::api::{ApiKey, KeyState};
use keyward::keyset::RecordState;
use keyward::token::Token;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client};
use serde_json::{Value, json};

use control_plane::{ControlPlane, client_from, harness_binary};
use support::{
    Tethered, cluster_with_manifests, eventually, free_port, is_ready, records, run_ok, start_operator_with,
    start_watch_verifier, verify,
};

/// One test at a time: the restart test takes the API server away from everyone.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// SplitMix64: a small seeded generator, so a run is replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.below(n.max(1)) == 0
    }
}

/// A plain HTTP/1.1 request to the fault proxy's control endpoints; the JSON it answers.
async fn control(addr: SocketAddr, method: &str, path: &str) -> Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("the fault proxy listens");
    let request = format!("{method} {path} HTTP/1.1\r\nHost: proxy\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("fault proxy answered {answer:?}: {e}"))
}

/// What the test asked of one key.
#[derive(Debug, Default, Clone)]
struct Intent {
    rotations: usize,
    active: bool,
    revoked: bool,
    deleted: bool,
}

fn key_yaml(name: &str) -> ApiKey {
    serde_json::from_value(json!({
        "apiVersion": "keyward.dev/v1alpha1",
        "kind": "ApiKey",
        "metadata": { "name": name },
        "spec": { "scopes": ["orders:read"], "rotation": { "every": "90d", "gracePeriod": "1h" } },
    }))
    .unwrap()
}

/// Every value each Secret's `token` and `next-token` ever held, as token hashes, seen by
/// a watch of the admin's own (no proxy, no faults).
#[derive(Default)]
struct SecretHistory {
    tokens: BTreeMap<String, BTreeSet<String>>,
    exposed: BTreeSet<String>,
}

fn watch_secrets(client: Client, namespace: &str) -> (Arc<Mutex<SecretHistory>>, tokio::task::JoinHandle<()>) {
    let history = Arc::new(Mutex::new(SecretHistory::default()));
    let seen = Arc::clone(&history);
    let secrets: Api<Secret> = Api::namespaced(client, namespace);
    let task = tokio::spawn(async move {
        let mut events = watcher(secrets, watcher::Config::default()).boxed();
        while let Some(event) = events.next().await {
            let Ok(watcher::Event::Apply(secret) | watcher::Event::InitApply(secret)) = event else { continue };
            let name = secret.metadata.name.clone().unwrap_or_default();
            let mut seen = seen.lock().unwrap();
            for (field, raw) in secret.data.unwrap_or_default() {
                let Ok(text) = std::str::from_utf8(&raw.0) else { continue };
                let Ok(token) = Token::parse(text) else { continue };
                seen.exposed.insert(token.expose().to_owned());
                if field == "token" {
                    seen.tokens.entry(name.clone()).or_default().insert(token.hash().to_string());
                }
            }
        }
    });
    (history, task)
}

/// The operator, killed and restarted as a node failure would: each incarnation is a new
/// "Pod" with an identity of its own, so it waits for the dead one's Lease to expire.
struct Operator<'a> {
    kubeconfig: &'a Path,
    dir: &'a Path,
    name: String,
    incarnation: usize,
    process: Option<Tethered>,
    logs: Vec<std::path::PathBuf>,
}

impl Operator<'_> {
    fn start(&mut self) {
        self.incarnation += 1;
        let process = start_operator_with(self.kubeconfig, &format!("{}-{}", self.name, self.incarnation), self.dir);
        self.logs.push(process.log.clone());
        self.process = Some(process);
    }

    fn kill(&mut self) {
        if let Some(process) = self.process.take() {
            process.kill_hard();
        }
    }

    /// Restarts it if it exited by itself (a lost Lease ends the process, as in a Pod).
    fn keep_running(&mut self) {
        if !self.process.as_ref().is_some_and(Tethered::is_running) {
            self.process = None;
            self.start();
        }
    }

    fn log_text(&self) -> String {
        self.logs.iter().map(|p| std::fs::read_to_string(p).unwrap_or_default()).collect()
    }
}

/// Copies a failed run's logs out of the control plane's directory (removed when the
/// test binary exits) into cargo's temporary directory for integration tests.
fn keep_logs(dir: &Path) -> std::path::PathBuf {
    let kept = Path::new(env!("CARGO_TARGET_TMPDIR")).join(dir.file_name().unwrap());
    std::fs::create_dir_all(&kept).unwrap();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            let _ = std::fs::copy(entry.path(), kept.join(entry.file_name()));
        }
    }
    kept
}

#[derive(Debug)]
struct RunReport {
    seed: u64,
    keys: usize,
    operations: usize,
    kills: usize,
    requests: u64,
    faults: BTreeMap<String, u64>,
    failures: Vec<String>,
}

fn state(key: &ApiKey) -> Option<KeyState> {
    key.status.as_ref()?.state
}

fn settled(key: &ApiKey, intent: &Intent) -> bool {
    let Some(status) = key.status.as_ref() else { return false };
    if status.observed_generation != key.metadata.generation {
        return false;
    }
    if intent.revoked {
        return state(key) == Some(KeyState::Revoked);
    }
    if !intent.active {
        return state(key) == Some(KeyState::Inactive);
    }
    let rotated = intent.rotations == 0
        || (status.last_rotation_request.as_deref() == Some(&format!("r{}", intent.rotations))
            && status.next_key.is_none());
    is_ready(key) && rotated
}

/// Invariants 1 to 4 of the keys' end state (see the module docs), one line per failure.
async fn end_state_failures(
    admin: &Client,
    ns: &str,
    names: &[String],
    intents: &[Intent],
    history: &Mutex<SecretHistory>,
) -> Vec<String> {
    let api: Api<ApiKey> = Api::namespaced(admin.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), ns);
    let mut failures = Vec::new();
    let published = records(admin, ns, "default").await;
    let history_now = history.lock().unwrap().tokens.clone();
    for (name, intent) in names.iter().zip(intents) {
        let secret_name = format!("{name}-apikey");
        let held = history_now.get(&secret_name).cloned().unwrap_or_default();
        let published_hashes: BTreeSet<String> =
            published.iter().filter(|r| r.name == *name).map(|r| r.hash.to_string()).collect();
        // 3: one token per rotation asked for, plus the first.
        if held.len() > 1 + intent.rotations {
            failures.push(format!("{name}: {} tokens for {} rotations", held.len(), intent.rotations));
        }
        if intent.revoked || intent.deleted {
            // 2
            if !published_hashes.is_empty() {
                failures.push(format!("{name}: revoked or deleted yet published ({} records)", published_hashes.len()));
            }
            let token = secrets.get_opt(&secret_name).await.unwrap().and_then(|s| s.data?.remove("token"));
            if token.is_some() {
                failures.push(format!("{name}: revoked or deleted yet its Secret holds a token"));
            }
            continue;
        }
        // 1
        let key = api.get(name).await.unwrap();
        let current = key.status.as_ref().and_then(|s| s.current_key.as_ref()).map(|k| k.key_id.clone());
        let token = secrets.get_opt(&secret_name).await.unwrap().and_then(|s| s.data?.remove("token"));
        let token = token.and_then(|raw| Token::parse(std::str::from_utf8(&raw.0).ok()?).ok());
        match (&token, &current) {
            (Some(token), Some(current)) if token.hash().key_id().as_str() == current => {}
            _ => failures.push(format!("{name}: the Secret's token is not status.currentKey {current:?}")),
        }
        let record = token.as_ref().and_then(|t| published.iter().find(|r| r.hash == t.hash())).map(|r| r.state);
        if intent.active {
            if record != Some(RecordState::Active) {
                failures.push(format!("{name}: current token published as {record:?}, wanted Active"));
            }
            // 4: every token the Secret ever held is still valid (grace periods are an hour).
            for lost in held.difference(&published_hashes) {
                failures.push(format!("{name}: a token its Secret held is no longer published ({}…)", &lost[..12]));
            }
        } else if record.is_some_and(|state| state != RecordState::Inactive) {
            // A disabled key's token is listed as inactive, or not at all: never as active.
            failures.push(format!("{name}: disabled yet its token is published as {record:?}"));
        }
    }
    failures
}

#[allow(clippy::too_many_lines)]
async fn fault_run(plane: &ControlPlane, admin: &Client, seed: u64, keys: usize, rate: f64) -> RunReport {
    let ns = format!("faults-{seed}");
    run_ok(plane.kubectl().args(["create", "namespace", &ns]));
    let dir = plane.ready.dir.join(&ns);
    std::fs::create_dir_all(&dir).unwrap();

    let proxy_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _proxy = Tethered::spawn(
        &harness_binary(),
        &[
            "fault-proxy".to_owned(),
            "--upstream".to_owned(),
            plane.ready.server.clone(),
            "--ca".to_owned(),
            plane.ready.ca_file.display().to_string(),
            "--listen".to_owned(),
            proxy_addr.to_string(),
            "--seed".to_owned(),
            seed.to_string(),
            "--rate".to_owned(),
            rate.to_string(),
        ],
        &[],
        dir.join("fault-proxy.log"),
    );
    eventually("the fault proxy to listen", Duration::from_secs(60), || async {
        tokio::net::TcpStream::connect(proxy_addr).await.ok().map(drop)
    })
    .await;
    let kubeconfig =
        plane.service_account_kubeconfig_via("keyward-system", "keyward-operator", &format!("http://{proxy_addr}"));
    let mut operator =
        Operator { kubeconfig: &kubeconfig, dir: &dir, name: ns.clone(), incarnation: 0, process: None, logs: vec![] };
    operator.start();

    let (history, watch_task) = watch_secrets(admin.clone(), &ns);
    let api: Api<ApiKey> = Api::namespaced(admin.clone(), &ns);
    let mut rng = Rng(seed);
    let mut intents: Vec<Intent> = vec![Intent { active: true, ..Intent::default() }; keys];
    let names: Vec<String> = (0..keys).map(|i| format!("k-{i}")).collect();
    let mut kills = 0;
    let mut operations = 0;

    // Keys arrive in a burst, then change while the operator works on them.
    for name in &names {
        api.create(&PostParams::default(), &key_yaml(name)).await.unwrap();
        operations += 1;
    }
    for _ in 0..keys * 2 {
        tokio::time::sleep(Duration::from_millis(rng.below(400))).await;
        // About one kill per two thirds of the keys' worth of operations.
        if rng.one_in(keys as u64 * 2 / 3) {
            operator.kill();
            kills += 1;
            tokio::time::sleep(Duration::from_millis(rng.below(2_000))).await;
            operator.start();
        }
        operator.keep_running();
        let i = usize::try_from(rng.below(keys as u64)).unwrap();
        let intent = &mut intents[i];
        if intent.deleted {
            continue;
        }
        let name = &names[i];
        let merge = |patch: Value| Patch::Merge(patch);
        match rng.below(10) {
            // One rotation per key: a second waits for the first one's hour of grace.
            0..=3 if !intent.revoked && intent.rotations == 0 => {
                intent.rotations += 1;
                let value = format!("r{}", intent.rotations);
                let patch = json!({ "metadata": { "annotations": { keyward::api::ROTATE_ANNOTATION: value } } });
                api.patch(name, &PatchParams::default(), &merge(patch)).await.unwrap();
            }
            4..=6 if !intent.revoked => {
                intent.active = !intent.active;
                api.patch(name, &PatchParams::default(), &merge(json!({ "spec": { "active": intent.active } })))
                    .await
                    .unwrap();
            }
            7 | 8 if !intent.revoked => {
                intent.revoked = true;
                api.patch(name, &PatchParams::default(), &merge(json!({ "spec": { "revoked": true } }))).await.unwrap();
            }
            9 => {
                intent.deleted = true;
                api.delete(name, &DeleteParams::default()).await.unwrap();
            }
            _ => continue,
        }
        operations += 1;
    }

    // The storm ends; everything must converge without help.
    let stats = control(proxy_addr, "POST", "/__faults/off").await;
    operator.keep_running();
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &ns);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    let mut failures = Vec::new();
    loop {
        operator.keep_running();
        let mut pending = Vec::new();
        for (name, intent) in names.iter().zip(&intents) {
            match api.get_opt(name).await.unwrap() {
                // Deleted: the finalizer released, then the garbage collector takes the Secret.
                None if intent.deleted => {
                    if secrets.get_opt(&format!("{name}-apikey")).await.unwrap().is_some() {
                        pending.push(format!("{name}: its Secret outlived it"));
                    }
                }
                Some(key) if !intent.deleted && settled(&key, intent) => {}
                other => pending.push(format!("{name} ({intent:?}): {:?}", other.as_ref().and_then(state))),
            }
        }
        if pending.is_empty() {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            failures.push(format!("did not converge in 240 s: {pending:?}"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Status settles before the key set is rebuilt (an enabled key's record turns Active
    // after its status does): the published invariants are awaited too, within the deadline.
    let converged = failures.is_empty();
    loop {
        operator.keep_running();
        let end_state = end_state_failures(admin, &ns, &names, &intents, &history).await;
        if end_state.is_empty() || !converged || tokio::time::Instant::now() > deadline {
            failures.extend(end_state);
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // 5: converged keys write nothing (Lease renewals aside).
    control(proxy_addr, "POST", "/__faults/reset").await;
    tokio::time::sleep(Duration::from_secs(15)).await;
    let quiet = control(proxy_addr, "GET", "/__faults").await;
    let writes = quiet["writes"].as_object().cloned().unwrap_or_default();
    if !writes.is_empty() {
        failures.push(format!("converged keys still cause writes: {writes:?}"));
    }

    // 6
    let log = operator.log_text();
    for token in &history.lock().unwrap().exposed {
        if log.contains(token.as_str()) {
            failures.push("a token appears in the operator's log".to_owned());
            break;
        }
    }
    operator.kill();
    watch_task.abort();
    if !failures.is_empty() {
        failures.push(format!("logs kept in {}", keep_logs(&dir).display()));
    }

    let faults = stats["faults"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0))).collect())
        .unwrap_or_default();
    RunReport { seed, keys, operations, kills, requests: stats["requests"].as_u64().unwrap_or(0), faults, failures }
}

#[tokio::test]
async fn seeded_fault_runs_keep_every_invariant() {
    let _serial = SERIAL.lock().await;
    let plane = cluster_with_manifests();
    let admin = client_from(plane.kubeconfig()).await;
    let first: u64 = env_or("KEYWARD_FAULT_SEED", 1);
    let runs: u64 = env_or("KEYWARD_FAULT_RUNS", 1);
    let keys: usize = env_or("KEYWARD_FAULT_KEYS", 24);
    let rate: f64 = env_or("KEYWARD_FAULT_RATE", 0.15);

    let mut failed = Vec::new();
    for seed in first..first + runs {
        let report = fault_run(plane, &admin, seed, keys, rate).await;
        let injected: u64 = report.faults.values().sum();
        // One line per run for BENCHMARKS.md (make faults collects them).
        println!(
            "fault-run seed={} keys={} operations={} operator_kills={} requests={} faults_injected={} faults={:?} invariant_failures={}",
            report.seed,
            report.keys,
            report.operations,
            report.kills,
            report.requests,
            injected,
            report.faults,
            report.failures.len()
        );
        assert!(injected > 0, "seed {seed}: the proxy injected no fault; the run proves nothing");
        if !report.failures.is_empty() {
            failed.push((seed, report.failures));
        }
    }
    assert!(failed.is_empty(), "invariants broken (seed, failures): {failed:#?}");
}

#[tokio::test]
#[allow(clippy::too_many_lines)]
async fn the_api_server_restarted_under_load_loses_nothing_and_the_verifier_keeps_serving() {
    let _serial = SERIAL.lock().await;
    let ns = "restart";
    let plane = cluster_with_manifests();
    let admin = client_from(plane.kubeconfig()).await;
    run_ok(plane.kubectl().args(["create", "namespace", ns]));
    let kubeconfig = plane.service_account_kubeconfig("keyward-system", "keyward-operator");
    let dir = plane.ready.dir.join(ns);
    std::fs::create_dir_all(&dir).unwrap();
    let mut operator = Operator {
        kubeconfig: &kubeconfig,
        dir: &dir,
        name: ns.to_owned(),
        incarnation: 0,
        process: None,
        logs: vec![],
    };
    operator.start();
    let api: Api<ApiKey> = Api::namespaced(admin.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), ns);
    let token_of = |name: String| {
        let secrets = secrets.clone();
        async move {
            let raw = secrets.get_opt(&format!("{name}-apikey")).await.ok()??.data?.remove("token")?.0;
            Token::parse(std::str::from_utf8(&raw).ok()?).ok()
        }
    };
    api.create(&PostParams::default(), &key_yaml("before")).await.unwrap();
    eventually("the first key Ready", Duration::from_secs(60), || async {
        api.get_opt("before").await.unwrap().filter(is_ready)
    })
    .await;
    let before = token_of("before".to_owned()).await.unwrap();
    let (verifier, addr) = start_watch_verifier(plane, ns);
    eventually("the verifier to allow the key", Duration::from_secs(60), || async {
        (verify(addr, &before).await == Some(200)).then_some(())
    })
    .await;

    // Load: a key created every 250 ms, throughout the restart (failures while it is away).
    let load_api = api.clone();
    let load = tokio::spawn(async move {
        let mut created = Vec::new();
        let until = tokio::time::Instant::now() + Duration::from_secs(120);
        for i in 0.. {
            if tokio::time::Instant::now() > until {
                break;
            }
            let name = format!("load-{i}");
            if load_api.create(&PostParams::default(), &key_yaml(&name)).await.is_ok() {
                created.push(name);
            }
            if created.len() >= 30 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        created
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    run_ok(std::process::Command::new("kill").args(["-HUP", &plane.ready.pid.to_string()]));

    // While the API server is away (and until it is back), the verifier answers from its
    // last good key set.
    let mut was_down = false;
    let mut answers = BTreeMap::<u16, usize>::new();
    let back = tokio::time::timeout(Duration::from_secs(180), async {
        loop {
            let up = admin.apiserver_version().await.is_ok();
            was_down |= !up;
            *answers.entry(verify(addr, &before).await.unwrap_or(0)).or_default() += 1;
            if was_down && up {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(back.is_ok(), "kube-apiserver did not come back");
    assert!(was_down, "the API server never went away; the test proves nothing");
    assert_eq!(answers.keys().copied().collect::<Vec<_>>(), vec![200], "answers while the API restarted: {answers:?}");

    // Both reconnect: every load key becomes Ready, and a revocation made after the
    // restart reaches the verifier.
    let created = load.await.unwrap();
    assert!(created.len() >= 10, "only {} keys could be created around the restart", created.len());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        // A replica that could not renew its Lease while the API was away exits, and its
        // Pod is restarted, as kubelet would.
        operator.keep_running();
        let mut waiting = Vec::new();
        for name in &created {
            if !api.get_opt(name).await.ok().flatten().is_some_and(|k| is_ready(&k)) {
                waiting.push(name.clone());
            }
        }
        if waiting.is_empty() {
            break;
        }
        let tail: String = operator.log_text().lines().rev().take(20).collect::<Vec<_>>().join("\n");
        assert!(
            tokio::time::Instant::now() < deadline,
            "not Ready after the restart: {waiting:?}; logs kept in {}\n{tail}",
            keep_logs(&dir).display()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "API server restart: {} operator incarnation(s), verifier answers during the restart {answers:?}",
        operator.incarnation
    );
    let last = token_of(created.last().unwrap().clone()).await.unwrap();
    eventually("the verifier to allow a key made after the restart", Duration::from_secs(60), || async {
        (verify(addr, &last).await == Some(200)).then_some(())
    })
    .await;
    api.patch("before", &PatchParams::default(), &Patch::Merge(json!({ "spec": { "revoked": true } }))).await.unwrap();
    eventually("the verifier to refuse the key revoked after the restart", Duration::from_secs(60), || async {
        (verify(addr, &before).await == Some(401)).then_some(())
    })
    .await;
    assert!(verifier.is_running(), "the verifier stayed up:\n{}", verifier.log_text());
    let log = operator.log_text() + &verifier.log_text();
    assert!(!log.contains(before.expose()) && !log.contains(last.expose()), "no token in the logs");
}

/// Issue 9 and 10 on the real API server: an ApiKey stored before the CRD tightened a rule
/// (here `spec.scopes` required) is still there once the CRD is back; the operator writes
/// its status through the status subresource (the API server ratchets the unchanged,
/// now-invalid spec) and the rest of its namespace converges. This binary's tests run one
/// at a time, so loosening the CRD touches no other test.
#[tokio::test]
async fn a_key_stored_before_the_crd_tightened_gets_its_status_and_costs_only_itself() {
    let _serial = SERIAL.lock().await;
    let ns = "tightened";
    let plane = cluster_with_manifests();
    let admin = client_from(plane.kubeconfig()).await;
    run_ok(plane.kubectl().args(["create", "namespace", ns]));
    let loosen = r#"[{"op": "remove", "path": "/spec/versions/0/schema/openAPIV3Schema/properties/spec/required"}]"#;
    run_ok(plane.kubectl().args(["patch", "crd", "apikeys.keyward.dev", "--type=json", "-p", loosen]));
    let raw: Api<kube::api::DynamicObject> =
        Api::namespaced_with(admin.clone(), ns, &kube::api::ApiResource::erase::<ApiKey>(&()));
    let broken: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKey",
        "metadata": { "name": "broken" }, "spec": { "description": "stored before scopes were required" },
    }))
    .unwrap();
    // The API server serves the loosened schema within a moment.
    eventually("the loosened CRD to take an ApiKey without scopes", Duration::from_secs(60), || async {
        raw.create(&PostParams::default(), &broken).await.ok()
    })
    .await;
    run_ok(
        plane
            .kubectl()
            .args(["apply", "--server-side", "--force-conflicts", "-f"])
            .arg(support::repo("crds/apikey.yaml")),
    );
    eventually("the tightened CRD to refuse an ApiKey without scopes", Duration::from_secs(60), || async {
        let mut again = broken.clone();
        again.metadata.name = Some("refused".to_owned());
        raw.create(&PostParams { dry_run: true, ..PostParams::default() }, &again).await.err()
    })
    .await;

    let kubeconfig = plane.service_account_kubeconfig("keyward-system", "keyward-operator");
    let dir = plane.ready.dir.join(ns);
    std::fs::create_dir_all(&dir).unwrap();
    let mut operator = Operator {
        kubeconfig: &kubeconfig,
        dir: &dir,
        name: ns.to_owned(),
        incarnation: 0,
        process: None,
        logs: vec![],
    };
    operator.start();
    let api: Api<ApiKey> = Api::namespaced(admin.clone(), ns);
    api.create(&PostParams::default(), &key_yaml("good")).await.unwrap();

    eventually("the valid key Ready beside the broken one", Duration::from_secs(90), || async {
        api.get_opt("good").await.ok().flatten().filter(is_ready)
    })
    .await;
    let status = eventually("the broken key's own status", Duration::from_secs(60), || async {
        let stored = raw.get("broken").await.ok()?;
        let ready = stored.data.pointer("/status/conditions/0")?.clone();
        (ready["reason"] == "InvalidSpec").then_some(ready)
    })
    .await;
    assert_eq!((status["type"].as_str(), status["status"].as_str()), (Some("Ready"), Some("False")), "{status}");
    assert_eq!(status["message"], "spec.scopes is missing");
    let published = records(&admin, ns, "default").await;
    assert_eq!(published.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), vec!["good"]);
    let log = operator.log_text();
    assert!(!log.to_lowercase().contains("forbidden"), "RBAC suffices:\n{log}");
    assert!(log.lines().all(|l| l.len() < 2048), "log lines stay short");
}
