//! 10,000 ApiKeys from creation to Ready: `keyward operator` in its own process, against
//! `keyward fake-apiserver` in another, over loopback HTTP.
//!
//! Run: `cargo bench --bench operator_10k` (release). The bench starts both
//! children (the binary cargo built for this bench), waits for the operator's
//! `/readyz`, creates the ApiKeys over HTTP, and polls the operator's
//! `/metrics` until all are Active and the key set holds all of them. It then
//! prints wall times, the operator process's peak RSS (VmHWM from
//! /proc/PID/status; the API server's memory is its own, printed apart), and
//! the operator's writes per key by resource, counted at the API server (every
//! request but GET; the bench's own creates are taken off). Not a test: no
//! figure here is asserted.
//!
//! Environment: `KEYWARD_BENCH_KEYS` (default 10000); everything else the
//! bench's environment holds reaches both children (so `MALLOC_ARENA_MAX=2` or
//! `TOKIO_WORKER_THREADS=8` try an allocator or runtime setting). Both
//! children are killed when the bench ends, fails or is interrupted (Ctrl-C).

#![allow(clippy::cast_precision_loss)] // Figures printed for people; a few ulps do not matter.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use keyward::api::ApiKey;
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NAMESPACE: &str = "bench";
/// The whole run, creates included, must finish within this.
const DEADLINE: Duration = Duration::from_secs(900);
/// Creates in flight at once (a GitOps tool applying a large directory does the same).
const CREATE_CONCURRENCY: usize = 8;

/// A child process killed (and reaped) when this value is dropped, on success, panic or error.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A figure of /proc/PID/status (KiB for memory fields).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':')?.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn gauge(text: &str, prefix: &str) -> u64 {
    text.lines().find_map(|l| l.strip_prefix(prefix)?.trim().parse().ok()).unwrap_or(0)
}

/// `GET path` over a fresh loopback connection: (status code, body).
async fn get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((code, body.to_owned()))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let keys: usize = std::env::var("KEYWARD_BENCH_KEYS").ok().and_then(|k| k.parse().ok()).unwrap_or(10_000);
    let binary = env!("CARGO_BIN_EXE_keyward");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");

    let mut server = Guard(
        Command::new(binary)
            .args(["fake-apiserver", "--listen", "127.0.0.1:0", "--kubeconfig-out"])
            .arg(&kubeconfig)
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting keyward fake-apiserver"),
    );
    let mut line = String::new();
    BufReader::new(server.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let api_addr = line.trim().rsplit("http://").next().unwrap().to_owned();

    let admin = format!("127.0.0.1:{}", free_port());
    // A key turns Ready once its hash is published and the propagation delay has passed. That
    // delay is a configured wait for kubelet (2 minutes by default), not work; a second here keeps
    // the figure about the operator's own throughput.
    let operator = Guard(
        Command::new(binary)
            .args(["operator", "--admin-listen", &admin, "--propagation-delay", "1s", "--publish-poll", "500ms"])
            .args(["--identity", "bench", "--log", "warn,keyward::controller::publisher=info"])
            .env("KUBECONFIG", &kubeconfig)
            .spawn()
            .expect("starting keyward operator"),
    );
    let pid = operator.0.id();

    keyward::cli::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let outcome = runtime.block_on(async {
        tokio::select! {
            outcome = tokio::time::timeout(DEADLINE, bench(keys, &kubeconfig, &api_addr, &admin, (pid, server.0.id()))) => {
                outcome.unwrap_or_else(|_| Err(format!("not converged within {DEADLINE:?}")))
            }
            _ = tokio::signal::ctrl_c() => Err("interrupted".to_owned()),
        }
    });
    // Stop the operator gracefully (it releases its Lease); the guards kill whatever is left.
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    drop(operator);
    drop(server);
    if let Err(e) = outcome {
        eprintln!("operator_10k failed: {e}");
        std::process::exit(1);
    }
}

async fn bench(
    keys: usize,
    kubeconfig: &std::path::Path,
    api_addr: &str,
    admin: &str,
    pids: (u32, u32),
) -> Result<(), String> {
    let pid = pids.0;
    let started = Instant::now();
    while get(admin, "/readyz").await.map_or(0, |(code, _)| code) != 200 {
        if started.elapsed() > Duration::from_secs(60) {
            return Err("the operator was not ready within 60 s".to_owned());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let idle_kib = status_kib(pid, "VmRSS");
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| e.to_string())?,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let client = Client::try_from(config).map_err(|e| e.to_string())?;
    let api: Api<ApiKey> = Api::namespaced(client, NAMESPACE);

    let started = Instant::now();
    let requests = futures::stream::iter(0..keys).map(|i| {
        let api = api.clone();
        async move {
            let key: ApiKey = serde_json::from_value(serde_json::json!({
                "apiVersion": "keyward.dev/v1alpha1",
                "kind": "ApiKey",
                "metadata": {"name": format!("integration-{i:05}"), "namespace": NAMESPACE},
                "spec": {"scopes": ["orders:read", "invoices:write"]},
            }))
            .unwrap();
            api.create(&PostParams::default(), &key).await.map(|_| i)
        }
    });
    let mut in_flight = std::pin::pin!(requests.buffer_unordered(CREATE_CONCURRENCY));
    let mut done = 0;
    while let Some(created) = in_flight.next().await {
        created.map_err(|e| format!("create: {e}"))?;
        done += 1;
        if done % 2000 == 0 {
            eprintln!(
                "  created {done} at {:.1} s, operator RSS {:.0} MiB (peak {:.0})",
                started.elapsed().as_secs_f64(),
                mib(status_kib(pid, "VmRSS")),
                mib(status_kib(pid, "VmHWM"))
            );
        }
    }
    let creating = started.elapsed();

    let active_line = "keyward_keys{state=\"Active\"} ";
    let records_line = format!("keyward_keyset_records{{namespace=\"{NAMESPACE}\",keyset=\"default\"}} ");
    let (mut all_ready, mut all_published) = (None, None);
    let mut last_report = Instant::now();
    let mut text = String::new();
    while all_ready.is_none() || all_published.is_none() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        text = get(admin, "/metrics").await.map_err(|e| format!("operator /metrics: {e}"))?.1;
        if last_report.elapsed() > Duration::from_secs(5) {
            last_report = Instant::now();
            eprintln!(
                "  {:.0} s: active {}, published {}, reconciles {}, operator RSS {:.0} MiB (peak {:.0})",
                started.elapsed().as_secs_f64(),
                gauge(&text, active_line),
                gauge(&text, &records_line),
                gauge(&text, "keyward_reconciles_total "),
                mib(status_kib(pid, "VmRSS")),
                mib(status_kib(pid, "VmHWM"))
            );
        }
        if all_ready.is_none() && gauge(&text, active_line) == keys as u64 {
            all_ready = Some(started.elapsed());
        }
        if all_published.is_none() && gauge(&text, &records_line) == keys as u64 {
            all_published = Some(started.elapsed());
        }
    }
    let (peak_kib, end_kib, threads) = (status_kib(pid, "VmHWM"), status_kib(pid, "VmRSS"), status_kib(pid, "Threads"));
    let writes: BTreeMap<String, u64> = serde_json::from_str(
        &get(api_addr, "/fakeapi/writes").await.map_err(|e| format!("fake API /fakeapi/writes: {e}"))?.1,
    )
    .map_err(|e| format!("fake API /fakeapi/writes: {e}"))?;
    report(keys, creating, all_ready, all_published, (idle_kib, peak_kib, end_kib, threads), &text, &writes);
    println!("  fake API server peak RSS (its own process, for scale): {:.0} MiB", mib(status_kib(pids.1, "VmHWM")));
    Ok(())
}

fn report(
    keys: usize,
    created: Duration,
    all_ready: Option<Duration>,
    all_published: Option<Duration>,
    (idle_kib, peak_kib, end_kib, threads): (u64, u64, u64, u64),
    text: &str,
    writes: &BTreeMap<String, u64>,
) {
    // The bench's own creates are not the operator's.
    let mut writes = writes.clone();
    if let Some(n) = writes.get_mut("POST apikeys") {
        *n = n.saturating_sub(keys as u64);
    }
    writes.retain(|_, n| *n > 0);
    let sum = |f: &dyn Fn(&str) -> bool| writes.iter().filter(|(k, _)| f(k)).map(|(_, v)| v).sum::<u64>();
    let total = sum(&|_| true);
    let events = sum(&|k| k.ends_with(" events"));
    let leases = sum(&|k| k.ends_with(" leases"));
    let keyset_writes = sum(&|k| k.contains("configmaps"));
    let per_key = |n: u64| n as f64 / keys as f64;
    println!("operator_10k: {keys} ApiKeys, one namespace, one key set; operator and API server in separate processes");
    println!(
        "  creating them (the bench's own API calls, {CREATE_CONCURRENCY} at a time): {:.1} s",
        created.as_secs_f64()
    );
    println!("  creation to all Ready (state Active):      {:.1} s", all_ready.unwrap_or_default().as_secs_f64());
    println!("  creation to all published in the key set:  {:.1} s", all_published.unwrap_or_default().as_secs_f64());
    println!(
        "  operator peak RSS (VmHWM): {:.1} MiB (ready and idle before the creates: {:.1} MiB; at the end: {:.1} MiB; {threads} threads)",
        mib(peak_kib),
        mib(idle_kib),
        mib(end_kib)
    );
    println!("  reconciles: {}", gauge(text, "keyward_reconciles_total "));
    println!(
        "  operator API writes: {total} ({:.2} per key; {:.2} per key without Events and Lease renewals)",
        per_key(total),
        per_key(total - events - leases)
    );
    for (what, n) in &writes {
        println!("    {what}: {n} ({:.3} per key)", per_key(*n));
    }
    println!(
        "  key-set ConfigMap writes in total: {keyset_writes} (metric keyward_keyset_writes_total: {})",
        text.lines()
            .filter_map(|l| l.strip_prefix("keyward_keyset_writes_total")?.split(' ').nth(1)?.parse::<u64>().ok())
            .sum::<u64>()
    );
    println!(
        "  key-set shards at the end: {}",
        gauge(text, &format!("keyward_keyset_shards{{namespace=\"{NAMESPACE}\",keyset=\"default\"}} "))
    );
}
