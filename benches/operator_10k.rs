//! 10,000 ApiKeys from creation to Ready through the real Controller on the in-memory API.
//!
//! Run: `cargo bench --bench operator_10k` (release). Prints wall time, peak
//! RSS (VmHWM, which includes the in-memory API server and its watch history,
//! since both live in this process), the operator's API writes per key by
//! resource, and key-set ConfigMap writes in total. Not a test: no figure here
//! is asserted.

#![allow(clippy::cast_precision_loss)] // Figures printed for people; a few ulps do not matter.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use http::{Request, Response};
use keyward::api::ApiKey;
use keyward::controller::{Metrics, Options, run};
use kube::api::PostParams;
use kube::client::Body;
use kube::{Api, Client};

const KEYS: usize = 10_000;
const NAMESPACE: &str = "bench";

/// Counts the operator's writes (every non-GET request) by resource, subresource included.
#[derive(Clone)]
struct Counting {
    inner: Client,
    writes: Arc<Mutex<BTreeMap<String, u64>>>,
}

fn resource_of(path: &str) -> String {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.iter().position(|p| *p == "namespaces") {
        Some(i) => match (parts.get(i + 2), parts.get(i + 4)) {
            (Some(resource), Some(sub)) => format!("{resource}/{sub}"),
            (Some(resource), None) => (*resource).to_owned(),
            _ => "namespaces".to_owned(),
        },
        None => parts.get(parts.len().saturating_sub(2)).copied().unwrap_or("?").to_owned(),
    }
}

impl tower::Service<Request<Body>> for Counting {
    type Response = Response<Body>;
    type Error = kube::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        if req.method() != http::Method::GET {
            let key = format!("{} {}", req.method(), resource_of(req.uri().path()));
            *self.writes.lock().unwrap().entry(key).or_default() += 1;
        }
        let inner = self.inner.clone();
        Box::pin(async move { inner.send(req).await })
    }
}

fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmHWM:")?.trim().strip_suffix("kB")?.trim().parse().ok()).unwrap_or(0)
}

fn gauge(text: &str, prefix: &str) -> u64 {
    text.lines().find_map(|l| l.strip_prefix(prefix)?.trim().parse().ok()).unwrap_or(0)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse. Warnings (failed publishes, conflicts) go to stderr.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn,keyward::controller::publisher=info"))
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(bench());
}

async fn bench() {
    let api = keyward::fakeapi::client().await.unwrap();
    let writes = Arc::new(Mutex::new(BTreeMap::new()));
    let operator_client = Client::new(Counting { inner: api.clone(), writes: writes.clone() }, "default");
    let metrics = Arc::new(Metrics::new());
    // A key turns Ready once its hash is published and the propagation delay has passed. That
    // delay is a configured wait for kubelet (2 minutes by default), not work; a second here keeps
    // the figure about the operator's own throughput.
    let settings = keyward::plan::Settings {
        propagation_delay: jiff::SignedDuration::from_secs(1),
        publish_poll: jiff::SignedDuration::from_millis(500),
        ..keyward::plan::Settings::default()
    };
    let options = Options { metrics: metrics.clone(), settings, ..Options::default() };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let baseline_kib = vm_hwm_kib();

    let started = Instant::now();
    let operator = tokio::spawn(run(operator_client, options, async move {
        let _ = stopped.await;
    }));
    let keys: Api<ApiKey> = Api::namespaced(api.clone(), NAMESPACE);
    for i in 0..KEYS {
        let key: ApiKey = serde_json::from_value(serde_json::json!({
            "apiVersion": "keyward.dev/v1alpha1",
            "kind": "ApiKey",
            "metadata": {"name": format!("integration-{i:05}"), "namespace": NAMESPACE},
            "spec": {"scopes": ["orders:read", "invoices:write"]},
        }))
        .unwrap();
        keys.create(&PostParams::default(), &key).await.unwrap();
        if (i + 1) % 1000 == 0 {
            eprintln!(
                "  created {} at {:.1} s, RSS peak {} MiB",
                i + 1,
                started.elapsed().as_secs_f64(),
                vm_hwm_kib() / 1024
            );
        }
    }
    let created = started.elapsed();

    let active_line = "keyward_keys{state=\"Active\"} ";
    let records_line = format!("keyward_keyset_records{{namespace=\"{NAMESPACE}\",keyset=\"default\"}} ");
    let (mut all_ready, mut all_published) = (None, None);
    let mut last_report = Instant::now();
    while all_ready.is_none() || all_published.is_none() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let text = metrics.encode();
        if last_report.elapsed() > Duration::from_secs(5) {
            last_report = Instant::now();
            eprintln!(
                "  {:.0} s: active {}, published {}, reconciles {}, writes {}",
                started.elapsed().as_secs_f64(),
                gauge(&text, active_line),
                gauge(&text, &records_line),
                gauge(&text, "keyward_reconciles_total "),
                writes.lock().unwrap().values().sum::<u64>()
            );
        }
        if all_ready.is_none() && gauge(&text, active_line) == KEYS as u64 {
            all_ready = Some(started.elapsed());
        }
        if all_published.is_none() && gauge(&text, &records_line) == KEYS as u64 {
            all_published = Some(started.elapsed());
        }
        assert!(started.elapsed() < Duration::from_secs(900), "not converged after 15 minutes:\n{text}");
    }
    let peak_kib = vm_hwm_kib();
    let text = metrics.encode();
    stop.send(()).unwrap();
    operator.await.unwrap();

    let writes = writes.lock().unwrap().clone();
    let total: u64 = writes.values().sum();
    let events = writes.iter().filter(|(k, _)| k.ends_with(" events")).map(|(_, v)| v).sum::<u64>();
    let keyset_writes = writes.iter().filter(|(k, _)| k.contains("configmaps")).map(|(_, v)| v).sum::<u64>();
    let per_key = |n: u64| n as f64 / KEYS as f64;
    println!("operator_10k: {KEYS} ApiKeys, one namespace, one key set");
    println!("  creating them (the bench's own API calls): {:.1} s", created.as_secs_f64());
    println!("  creation to all Ready (state Active):      {:.1} s", all_ready.unwrap_or_default().as_secs_f64());
    println!("  creation to all published in the key set:  {:.1} s", all_published.unwrap_or_default().as_secs_f64());
    println!(
        "  peak RSS (VmHWM, operator + in-memory API): {:.1} MiB (before start {:.1} MiB)",
        peak_kib as f64 / 1024.0,
        baseline_kib as f64 / 1024.0
    );
    println!("  reconciles: {}", gauge(&text, "keyward_reconciles_total "));
    println!(
        "  operator API writes: {total} ({:.2} per key; {:.2} per key without Events)",
        per_key(total),
        per_key(total - events)
    );
    for (what, n) in &writes {
        println!("    {what}: {n} ({:.3} per key)", per_key(*n));
    }
    println!(
        "  key-set ConfigMap writes in total: {keyset_writes} (metric keyward_keyset_writes_total: {})",
        metrics.keyset_writes_total()
    );
    println!(
        "  key-set shards at the end: {}",
        gauge(&text, &format!("keyward_keyset_shards{{namespace=\"{NAMESPACE}\",keyset=\"default\"}} "))
    );
}
