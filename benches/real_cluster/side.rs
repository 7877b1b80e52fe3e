//! One side of the comparison: an API server (the in-memory one or the real control plane)
//! with `keyward operator` on it, and the N-ApiKeys-to-Ready measure.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use keyward::api::ApiKey;
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};

use crate::procs::{self, Guard, cpu_seconds, mib, status_kib};

/// Where the N ApiKeys go.
pub const NAMESPACE: &str = "bench";
/// Creates in flight at once (a GitOps tool applying a large directory does the same).
const CREATE_CONCURRENCY: usize = 8;
/// Creation to all Ready must take no longer than this many seconds (`KEYWARD_BENCH_CONVERGE_SECS`,
/// default 20 minutes; a loaded 2-core machine makes about 4 keys Active a second with a debug build).
fn converge_limit() -> Duration {
    let secs = procs::env_count("KEYWARD_BENCH_CONVERGE_SECS", 20 * 60, 80 * 60);
    Duration::from_secs(secs as u64)
}
/// Verbs of `apiserver_request_total` that write.
const WRITE_VERBS: [&str; 6] = ["POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"];

/// The real control plane: `kube-harness up`, stopped when this is dropped.
pub struct Plane {
    /// Closing it stops the harness too, should the bench die before the guard runs.
    _stdin: ChildStdin,
    pub harness: Guard,
    pub kubeconfig: PathBuf,
    pub server: String,
    pub dir: PathBuf,
    pub client: Client,
}

pub enum Server {
    /// `keyward fake-apiserver` at this address.
    Fake(Guard, String),
    Real(Plane),
}

pub struct Side {
    // Dropped first: the operator stops before its API server.
    operator: Guard,
    pub server: Server,
    /// The operator's admin listener.
    pub admin: String,
    /// An admin client of the API server.
    pub client: Client,
}

/// What N ApiKeys to Ready cost on one side.
pub struct Creation {
    pub creating: Duration,
    pub to_ready: Duration,
    pub to_published: Duration,
    pub idle_kib: u64,
    pub peak_kib: u64,
    pub operator_cpu: f64,
    pub server_cpu: f64,
    /// The API server's own `process_cpu_seconds_total` (real side only).
    pub server_cpu_metric: Option<f64>,
    pub etcd_cpu: Option<f64>,
    pub server_peak_kib: u64,
    pub reconciles: u64,
    /// Writes by "VERB resource", the bench's own creates taken off.
    pub writes: BTreeMap<String, u64>,
    /// Writes the server answered with an error, by "VERB resource code" (real side only).
    pub failed_writes: BTreeMap<String, u64>,
    /// GET and LIST requests by "VERB resource" (real side only; the fake does not count them).
    pub reads: Option<BTreeMap<String, u64>>,
    pub keyset_writes_metric: u64,
    pub shards: u64,
    /// ApiKeys Active on the operator's metrics at the end.
    pub active: u64,
}

pub async fn client_from(kubeconfig: &Path) -> Result<Client, String> {
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(kubeconfig).map_err(|e| e.to_string())?,
        &KubeConfigOptions::default(),
    )
    .await
    .map_err(|e| e.to_string())?;
    Client::try_from(config).map_err(|e| e.to_string())
}

pub fn gauge(text: &str, prefix: &str) -> u64 {
    text.lines().find_map(|l| l.strip_prefix(prefix)?.trim().parse::<f64>().ok()).map_or(0, |v| v as u64)
}

pub fn records_line(namespace: &str) -> String {
    format!("keyward_keyset_records{{namespace=\"{namespace}\",keyset=\"default\"}} ")
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Start the operator (fast test timings, as `operator_10k`, then `extra` flags) with
/// `kubeconfig`; wait for /readyz.
pub async fn start_operator(
    binary: &Path,
    kubeconfig: &Path,
    dir: &Path,
    extra: &[&str],
) -> Result<(Guard, String), String> {
    let admin = format!("127.0.0.1:{}", procs::free_port());
    let log = std::fs::File::create(dir.join("operator.log")).map_err(|e| e.to_string())?;
    // A key turns Ready once its hash is published and the propagation delay has passed: a
    // configured wait for kubelet (2 minutes by default), not work. A second keeps the figure
    // about throughput.
    let operator = Guard(
        Command::new(binary)
            .args(["operator", "--admin-listen", &admin, "--propagation-delay", "1s", "--publish-poll", "500ms"])
            .args(["--identity", "bench", "--lease-namespace", "keyward-system"])
            .args(["--log", "warn,keyward::controller::publisher=info"])
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting keyward operator: {e}"))?,
    );
    procs::poll("the operator's /readyz", Duration::from_secs(120), Duration::from_millis(50), || async {
        (procs::get(&admin, "/readyz").await.map_or(0, |(code, _)| code) == 200).then_some(())
    })
    .await?;
    Ok((operator, admin))
}

pub fn kubectl(kubeconfig: &Path, args: &[&str]) -> Result<String, String> {
    let output = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .map_err(|e| format!("kubectl: {e}"))?;
    if !output.status.success() {
        return Err(format!("kubectl {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr)));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

impl Side {
    pub async fn start_fake(binary: &Path, dir: &Path) -> Result<Side, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let kubeconfig = dir.join("kubeconfig");
        let mut server = Guard(
            Command::new(binary)
                .args(["fake-apiserver", "--listen", "127.0.0.1:0", "--kubeconfig-out"])
                .arg(&kubeconfig)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()
                .map_err(|e| format!("starting keyward fake-apiserver: {e}"))?,
        );
        let mut line = String::new();
        BufReader::new(server.0.stdout.take().ok_or("no stdout")?).read_line(&mut line).map_err(|e| e.to_string())?;
        let addr = line.trim().rsplit("http://").next().unwrap_or_default().to_owned();
        let (operator, admin) = start_operator(binary, &kubeconfig, dir, &[]).await?;
        let client = client_from(&kubeconfig).await?;
        Ok(Side { operator, server: Server::Fake(server, addr), admin, client })
    }

    pub async fn start_real(binary: &Path, harness: &Path, dir: &Path) -> Result<Side, String> {
        let plane = Plane::start(harness, dir).await?;
        let admin_kc = plane.kubeconfig.clone();
        kubectl(&admin_kc, &["apply", "--server-side", "-f", &repo("crds/apikey.yaml").to_string_lossy()])?;
        kubectl(&admin_kc, &["wait", "--for=condition=Established", "crd/apikeys.keyward.dev", "--timeout=60s"])?;
        kubectl(&admin_kc, &["apply", "-k", &repo("manifests").to_string_lossy()])?;
        kubectl(&admin_kc, &["create", "namespace", NAMESPACE])?;
        let operator_kc = plane.service_account_kubeconfig("keyward-system", "keyward-operator")?;
        let (operator, admin) = start_operator(binary, &operator_kc, dir, &[]).await?;
        let client = plane.client.clone();
        Ok(Side { operator, server: Server::Real(plane), admin, client })
    }

    /// Stop the operator and the in-memory API.
    pub fn stop(self) {
        drop(self.operator);
    }

    /// Stop the operator; the control plane runs on.
    pub fn stop_operator(self) -> Plane {
        drop(self.operator);
        match self.server {
            Server::Real(plane) => plane,
            Server::Fake(..) => panic!("stop_operator is for the real side"),
        }
    }

    pub fn plane(&self) -> Option<&Plane> {
        match &self.server {
            Server::Real(plane) => Some(plane),
            Server::Fake(..) => None,
        }
    }

    pub async fn metrics(&self) -> Result<String, String> {
        Ok(procs::get(&self.admin, "/metrics").await.map_err(|e| format!("operator /metrics: {e}"))?.1)
    }

    /// Create N ApiKeys in [`NAMESPACE`] and wait until all are Active and published.
    pub async fn create_all(&self, keys: usize) -> Result<Creation, String> {
        let before = self.snapshot().await?;
        let idle_kib = status_kib(self.operator.pid(), "VmRSS");
        let started = Instant::now();
        create_keys(&self.client, NAMESPACE, keys).await?;
        let creating = started.elapsed();
        let (to_ready, to_published) = self.converge(started, keys as u64, NAMESPACE, keys as u64).await?;
        let peak_kib = status_kib(self.operator.pid(), "VmHWM");
        let after = self.snapshot().await?;
        let text = self.metrics().await?;
        Ok(Creation {
            creating,
            to_ready,
            to_published,
            idle_kib,
            peak_kib,
            operator_cpu: after.operator_cpu - before.operator_cpu,
            server_cpu: after.server_cpu - before.server_cpu,
            server_cpu_metric: after.server_cpu_metric.zip(before.server_cpu_metric).map(|(a, b)| a - b),
            etcd_cpu: after.etcd_cpu.zip(before.etcd_cpu).map(|(a, b)| a - b),
            server_peak_kib: after.server_peak_kib,
            reconciles: gauge(&text, "keyward_reconciles_total "),
            writes: own_writes(&after.writes, &before.writes, keys),
            failed_writes: difference(&after.failed_writes, &before.failed_writes),
            reads: after.reads.as_ref().zip(before.reads.as_ref()).map(|(a, b)| difference(a, b)),
            keyset_writes_metric: text
                .lines()
                .filter_map(|l| l.strip_prefix("keyward_keyset_writes_total")?.split(' ').nth(1)?.parse::<u64>().ok())
                .sum(),
            shards: gauge(&text, &format!("keyward_keyset_shards{{namespace=\"{NAMESPACE}\",keyset=\"default\"}} ")),
            active: gauge(&text, "keyward_keys{state=\"Active\"} "),
        })
    }

    /// Wait until `active` ApiKeys are Active and the key set of `namespace` holds `records`:
    /// the time from `started` to each.
    pub async fn converge(
        &self,
        started: Instant,
        active: u64,
        namespace: &str,
        records: u64,
    ) -> Result<(Duration, Duration), String> {
        let active_line = "keyward_keys{state=\"Active\"} ";
        let records_line = records_line(namespace);
        let (mut all_ready, mut all_published) = (None, None);
        let mut last_report = Instant::now();
        while all_ready.is_none() || all_published.is_none() {
            if started.elapsed() > converge_limit() {
                return Err(format!("not all Ready within {:?}", converge_limit()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let text = self.metrics().await?;
            if last_report.elapsed() > Duration::from_secs(10) {
                last_report = Instant::now();
                eprintln!(
                    "  {:.0} s: active {}, published {}, reconciles {}, operator RSS {:.0} MiB (peak {:.0}), load {}",
                    started.elapsed().as_secs_f64(),
                    gauge(&text, active_line),
                    gauge(&text, &records_line),
                    gauge(&text, "keyward_reconciles_total "),
                    mib(status_kib(self.operator.pid(), "VmRSS")),
                    mib(status_kib(self.operator.pid(), "VmHWM")),
                    procs::load_average()
                );
            }
            if all_ready.is_none() && gauge(&text, active_line) >= active {
                all_ready = Some(started.elapsed());
            }
            if all_published.is_none() && gauge(&text, &records_line) == records {
                all_published = Some(started.elapsed());
            }
        }
        Ok((all_ready.unwrap_or_default(), all_published.unwrap_or_default()))
    }

    async fn snapshot(&self) -> Result<Snapshot, String> {
        let operator_cpu = cpu_seconds(self.operator.pid());
        match &self.server {
            Server::Fake(server, addr) => {
                let body = procs::get(addr, "/fakeapi/writes").await.map_err(|e| format!("/fakeapi/writes: {e}"))?.1;
                Ok(Snapshot {
                    operator_cpu,
                    server_cpu: cpu_seconds(server.pid()),
                    server_cpu_metric: None,
                    etcd_cpu: None,
                    server_peak_kib: status_kib(server.pid(), "VmHWM"),
                    writes: serde_json::from_str(&body).map_err(|e| format!("/fakeapi/writes: {e}"))?,
                    failed_writes: BTreeMap::new(),
                    reads: None,
                })
            }
            Server::Real(plane) => {
                let text = plane.apiserver_metrics().await?;
                let (writes, failed_writes, reads) = request_counts(&text);
                let apiserver = plane.component("kube-apiserver");
                Ok(Snapshot {
                    operator_cpu,
                    server_cpu: apiserver.map_or(0.0, cpu_seconds),
                    server_cpu_metric: text
                        .contains("\nprocess_cpu_seconds_total ")
                        .then(|| float(&text, "process_cpu_seconds_total ")),
                    // etcd runs embedded in the `up` process itself.
                    etcd_cpu: Some(cpu_seconds(plane.harness.pid())),
                    server_peak_kib: apiserver.map_or(0, |pid| status_kib(pid, "VmHWM")),
                    writes,
                    failed_writes,
                    reads: Some(reads),
                })
            }
        }
    }
}

struct Snapshot {
    operator_cpu: f64,
    server_cpu: f64,
    server_cpu_metric: Option<f64>,
    etcd_cpu: Option<f64>,
    server_peak_kib: u64,
    writes: BTreeMap<String, u64>,
    failed_writes: BTreeMap<String, u64>,
    reads: Option<BTreeMap<String, u64>>,
}

fn float(text: &str, prefix: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(prefix)?.trim().parse().ok()).unwrap_or(0.0)
}

pub fn difference(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v.saturating_sub(before.get(k).copied().unwrap_or(0))))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// The writes made during the run, without the bench's own creates.
fn own_writes(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>, keys: usize) -> BTreeMap<String, u64> {
    let mut writes = difference(after, before);
    if let Some(n) = writes.get_mut("POST apikeys") {
        *n = n.saturating_sub(keys as u64);
    }
    writes.retain(|_, n| *n > 0);
    writes
}

/// `name="value"` pairs of one metric line's label set.
fn labels(line: &str) -> BTreeMap<&str, &str> {
    let inner = line.split_once('{').and_then(|(_, rest)| rest.rsplit_once('}')).map_or("", |(inner, _)| inner);
    let mut out = BTreeMap::new();
    let mut rest = inner;
    while let Some((name, after)) = rest.split_once("=\"") {
        let Some((value, tail)) = after.split_once('"') else { break };
        out.insert(name.trim_start_matches(',').trim(), value);
        rest = tail;
    }
    out
}

/// From the API server's metrics: successful writes by "VERB resource[/subresource]",
/// failed writes by "VERB resource code", and GET and LIST requests by "VERB resource".
pub fn request_counts(text: &str) -> (BTreeMap<String, u64>, BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let (mut writes, mut failed, mut reads) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let value = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) as u64;
        let labels = labels(line);
        let (verb, code) = (labels.get("verb").copied().unwrap_or(""), labels.get("code").copied().unwrap_or(""));
        let mut resource = labels.get("resource").copied().unwrap_or("").to_owned();
        if let Some(sub) = labels.get("subresource").filter(|s| !s.is_empty()) {
            resource = format!("{resource}/{sub}");
        }
        if matches!(verb, "GET" | "LIST") {
            *reads.entry(format!("{verb} {resource}")).or_default() += value;
        } else if WRITE_VERBS.contains(&verb) {
            if code.starts_with('2') {
                *writes.entry(format!("{verb} {resource}")).or_default() += value;
            } else {
                *failed.entry(format!("{verb} {resource} {code}")).or_default() += value;
            }
        }
    }
    (writes, failed, reads)
}

/// Create `keys` ApiKeys `integration-00000`... in `namespace`, 8 at a time.
pub async fn create_keys(client: &Client, namespace: &str, keys: usize) -> Result<(), String> {
    let api: Api<ApiKey> = Api::namespaced(client.clone(), namespace);
    let started = Instant::now();
    let requests = futures::stream::iter(0..keys).map(|i| {
        let api = api.clone();
        async move {
            let key: ApiKey = serde_json::from_value(serde_json::json!({
                "apiVersion": "keyward.dev/v1alpha1",
                "kind": "ApiKey",
                "metadata": {"name": format!("integration-{i:05}"), "namespace": namespace},
                "spec": {"scopes": ["orders:read", "invoices:write"]},
            }))
            .map_err(|e| e.to_string())?;
            api.create(&PostParams::default(), &key).await.map(|_| ()).map_err(|e| format!("create: {e}"))
        }
    });
    let mut in_flight = std::pin::pin!(requests.buffer_unordered(CREATE_CONCURRENCY));
    let mut done = 0;
    while let Some(created) = in_flight.next().await {
        created?;
        done += 1;
        if done % 2000 == 0 {
            eprintln!("  created {done} at {:.1} s", started.elapsed().as_secs_f64());
        }
    }
    Ok(())
}

impl Plane {
    async fn start(harness: &Path, dir: &Path) -> Result<Plane, String> {
        let cp = dir.join("cp");
        std::fs::create_dir_all(&cp).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(dir.join("harness.log")).map_err(|e| e.to_string())?;
        let mut child = Command::new(harness)
            .arg("up")
            .arg("--dir")
            .arg(&cp)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", harness.display()))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let harness = Guard(child);
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        let ready: serde_json::Value = serde_json::from_str(&line).map_err(|_| {
            format!("the control plane did not start ({line:?}); see {}", dir.join("harness.log").display())
        })?;
        let field = |name: &str| ready[name].as_str().map(str::to_owned).ok_or(format!("no {name} in {line}"));
        let kubeconfig = PathBuf::from(field("kubeconfig")?);
        let client = client_from(&kubeconfig).await?;
        Ok(Plane { _stdin: stdin, harness, kubeconfig, server: field("server")?, dir: cp, client })
    }

    /// The pid of a component the harness runs as a child.
    pub fn component(&self, name: &str) -> Option<u32> {
        procs::child_running(self.harness.pid(), name)
    }

    pub async fn apiserver_metrics(&self) -> Result<String, String> {
        let request = http::Request::get("/metrics").body(Vec::new()).map_err(|e| e.to_string())?;
        self.client.request_text(request).await.map_err(|e| format!("kube-apiserver /metrics: {e}"))
    }

    /// A kubeconfig acting as ServiceAccount `namespace/name` through a TokenRequest token.
    pub fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> Result<PathBuf, String> {
        let token =
            kubectl(&self.kubeconfig, &["create", "token", name, "-n", namespace, "--duration=24h"])?.trim().to_owned();
        let admin: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&self.kubeconfig).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        let ca = admin["clusters"][0]["cluster"]["certificate-authority-data"].as_str().ok_or("no CA")?.to_owned();
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: bench\n  cluster:\n    server: {server}\n    \
             certificate-authority-data: {ca}\nusers:\n- name: {name}\n  user:\n    token: {token}\ncontexts:\n- name: sa\n  \
             context:\n    cluster: bench\n    user: {name}\n    namespace: {namespace}\ncurrent-context: sa\n",
            server = self.server,
        );
        let path = self.dir.join(format!("sa-{namespace}-{name}.kubeconfig"));
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
        Ok(path)
    }
}

/// The two sides' figures, one line per measure.
pub fn print_side_by_side(keys: usize, fake: Option<&Creation>, real: &Creation) {
    let per_key = |n: u64| n as f64 / keys as f64;
    let both = |what: &str, f: &dyn Fn(&Creation) -> String| {
        println!("  {what:<58} {:>14} {:>14}", fake.map_or_else(|| "-".to_owned(), f), f(real));
    };
    println!("\n{keys} ApiKeys to Ready, one namespace, one key set (same operator binary and flags on both sides)");
    println!("  {:<58} {:>14} {:>14}", "measure", "in-memory API", "real API");
    both("bench's creates (8 in flight)", &|c| format!("{:.1} s", c.creating.as_secs_f64()));
    both("first create to all Ready (Active)", &|c| format!("{:.1} s", c.to_ready.as_secs_f64()));
    both("first create to all in the published key set", &|c| format!("{:.1} s", c.to_published.as_secs_f64()));
    both("operator peak RSS (VmHWM)", &|c| format!("{:.1} MiB", mib(c.peak_kib)));
    both("operator RSS ready and idle before the creates", &|c| format!("{:.1} MiB", mib(c.idle_kib)));
    both("operator CPU seconds", &|c| format!("{:.1} s", c.operator_cpu));
    both("API server CPU seconds (/proc)", &|c| format!("{:.1} s", c.server_cpu));
    both("API server process_cpu_seconds_total", &|c| {
        c.server_cpu_metric.map_or_else(|| "-".to_owned(), |v| format!("{v:.1} s"))
    });
    both("etcd CPU seconds (embedded in kube-harness up)", &|c| {
        c.etcd_cpu.map_or_else(|| "-".to_owned(), |v| format!("{v:.1} s"))
    });
    both("API server peak RSS", &|c| format!("{:.0} MiB", mib(c.server_peak_kib)));
    both("reconciles", &|c| c.reconciles.to_string());
    both("operator writes per key, all", &|c| format!("{:.2}", per_key(c.writes.values().sum())));
    both("operator writes per key, without Events and Leases", &|c| format!("{:.2}", per_key(core_writes(c))));
    both("reads (GET, LIST) per key", &|c| {
        c.reads.as_ref().map_or_else(|| "-".to_owned(), |r| format!("{:.2}", per_key(r.values().sum())))
    });
    both("key-set writes (keyward_keyset_writes_total)", &|c| c.keyset_writes_metric.to_string());
    both("key-set shards at the end", &|c| c.shards.to_string());
    let mut kinds: Vec<&String> =
        real.writes.keys().chain(fake.map(|f| f.writes.keys()).into_iter().flatten()).collect();
    kinds.sort();
    kinds.dedup();
    for kind in kinds {
        both(&format!("  writes {kind}"), &|c| c.writes.get(kind).map_or_else(|| "0".to_owned(), u64::to_string));
    }
    for (kind, n) in real.reads.iter().flatten().filter(|(_, n)| **n >= 10) {
        println!("  real API reads {kind}: {n}");
    }
    for (kind, n) in &real.failed_writes {
        println!("  real API refused: {kind}: {n}");
    }
    println!("  (real API leases include the API server's own identity Leases; writes are counted by the server)");
}

fn core_writes(c: &Creation) -> u64 {
    c.writes.iter().filter(|(k, _)| !k.ends_with(" events") && !k.ends_with(" leases")).map(|(_, v)| v).sum()
}
