//! `keyward demo`: the real operator and the real verifier, on an in-memory
//! cluster seeded with the example ApiKeys, walked through a key's whole life
//! with real HTTP requests. With `--kubeconfig` the same walkthrough runs on a
//! real cluster (the operator in process, with the demo's leaping clock).
//!
//! ```text
//!  examples/*.yaml ──► in-memory API ◄──► operator (same controller code as `keyward operator`)
//!                          │ key-set ConfigMaps
//!                          ▼
//!                  kubelet-style volume sync ──► verifier (proxy) ──► demo API
//!                                                    ▲
//!                          walkthrough requests ─────┘
//! ```
//!
//! A [`DemoClock`] shared by the operator and the verifier leaps over the days
//! and months between steps, so the walkthrough finishes in seconds.

pub mod apiserver;
mod client;
mod clock;
mod dump;
mod script;
mod table;
mod upstream;

pub use clock::DemoClock;
pub use dump::dump;
pub use table::apikeys_table;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use jiff::{SignedDuration, Timestamp};
use keyward_testkit::fakeapi::FakeCluster;
use keyward_testkit::kubelet::VolumeSync;
use kube::api::PostParams;
use kube::{Api, Client};

use crate::api::ApiKey;
use crate::controller::usage::UsageOptions;
use crate::controller::{Options, check_crd};
use crate::plan::Settings;
use crate::plan::usage::Budget;
use crate::verifier::Config;
use crate::verifier::api_report::{PodRef, Reporting};

/// The namespace the examples are created in.
pub const NAMESPACE: &str = "demo";

/// The instant the demo starts at, whatever day it runs.
pub const ORIGIN: &str = "2026-11-23T09:00:00Z";

/// What to run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Directory of ApiKey YAML files to seed the cluster with.
    pub examples: PathBuf,
    /// Write every object of the cluster here at the end.
    pub dump: Option<PathBuf>,
    /// Run on the cluster of this kubeconfig instead of the in-memory API. It needs the CRDs (ApiKey, KeySet, ClusterApiKey)
    /// installed and no other operator running; the namespace `demo` must hold no ApiKeys.
    pub kubeconfig: Option<PathBuf>,
}

/// Everything the walkthrough drives.
pub(crate) struct Demo {
    client: Client,
    clock: Arc<DemoClock>,
    reconcile_all: Arc<tokio::sync::Notify>,
    caller: client::Caller,
    /// The examples as loaded, by name.
    names: Vec<String>,
}

/// Run the demo; `Ok(true)` when every step behaved as documented.
pub async fn run(options: DemoOptions) -> anyhow::Result<bool> {
    let examples = load_examples(&options.examples)?;
    let workdir = tempfile::tempdir().context("creating a scratch directory")?;

    let (client, where_) = match &options.kubeconfig {
        None => (in_memory_cluster().await?, "an in-memory cluster".to_owned()),
        Some(path) => (cluster_client(path).await?, format!("the cluster of {}", path.display())),
    };
    check_crd(&client).await?;
    if options.kubeconfig.is_some() {
        empty_namespace(&client).await?;
    }

    let clock = Arc::new(DemoClock::starting_at(ORIGIN.parse().expect("ORIGIN is a valid timestamp")));
    let reconcile_all = Arc::new(tokio::sync::Notify::new());
    let operator_clock = Arc::clone(&clock);
    let options_operator = Options {
        settings: Settings {
            // Seconds instead of minutes: the demo's "kubelet" syncs every 200 ms.
            propagation_delay: SignedDuration::from_secs(2),
            publish_poll: SignedDuration::from_millis(300),
            ..Settings::default()
        },
        coalesce: Duration::from_millis(100),
        clock: Arc::new(move || operator_clock.now()),
        reconcile_all: Some(Arc::clone(&reconcile_all)),
        // Reports added up every 300 ms; counts written at most every 2 s of demo time, so the
        // table shows them within the walkthrough (a cluster's defaults are 60 s and 5 min).
        usage: Some(UsageOptions {
            interval: Duration::from_millis(300),
            budget: Budget { status_interval: SignedDuration::from_secs(2), ..Budget::default() },
            ..UsageOptions::default()
        }),
        // The demo's examples configure no ApiKeyWebhook (and its in-memory API has no such CRD).
        webhooks: None,
        ..Options::default()
    };
    let (stop_operator, operator_stopped) = tokio::sync::oneshot::channel::<()>();
    let operator = tokio::spawn(crate::controller::run(client.clone(), options_operator, async move {
        let _ = operator_stopped.await;
    }));

    // One volume per key set, synced like kubelet does, read by the verifier.
    let mut keysets: Vec<String> = examples.iter().map(|k| k.spec.key_set.clone()).collect();
    keysets.sort();
    keysets.dedup();
    let mut volumes = Vec::new();
    let mut syncs = Vec::new();
    for keyset in &keysets {
        let dir = workdir.path().join("keysets").join(keyset);
        // The directory exists before the verifier starts, as a mounted volume would.
        std::fs::create_dir_all(&dir)?;
        let sync = VolumeSync::new(client.clone(), NAMESPACE, keyset, dir.clone());
        syncs.push(tokio::spawn(sync.run(Duration::from_millis(200))));
        volumes.push(dir);
    }
    let reporting = usage_reporting(&client).await?;
    let (upstream_addr, upstream) = upstream::start().await?;
    let verifier_clock: Arc<dyn crate::verifier::clock::Clock> = clock.clone();
    let verifier = crate::verifier::server::start_with_clock(
        Config {
            keyset_dirs: volumes,
            watch_keyset: None,
            listen: "127.0.0.1:0".parse().expect("a literal address"),
            admin_listen: "127.0.0.1:0".parse().expect("a literal address"),
            upstream: Some(format!("http://{upstream_addr}")),
            routes: None,
            poll_interval: Duration::from_millis(100),
            header_read_timeout: Duration::from_secs(5),
            // Generous: on a loaded machine (tests in parallel) the in-process upstream can stall.
            upstream_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(1),
            workers: 0,
            hardening: crate::verifier::Hardening::default(),
            usage: Some(reporting),
            audit: None,
        },
        verifier_clock,
    )
    .await?;

    println!("keyward demo: operator and verifier on {where_} (namespace {NAMESPACE})");
    println!(
        "  verifier (proxy) on {}, admin on {}; demo clock starts at {ORIGIN}",
        verifier.addr, verifier.admin_addr
    );
    println!("  seeding {} ApiKeys from {}", examples.len(), options.examples.display());
    let keys: Api<ApiKey> = Api::namespaced(client.clone(), NAMESPACE);
    let mut names = Vec::new();
    for mut key in examples {
        key.metadata.namespace = Some(NAMESPACE.to_owned());
        names.push(key.metadata.name.clone().unwrap_or_default());
        keys.create(&PostParams::default(), &key).await.context("creating an example ApiKey")?;
    }

    let demo = Demo { client: client.clone(), clock, reconcile_all, caller: client::Caller::new(verifier.addr), names };
    let outcome = script::walk(&demo, &verifier).await;

    let _ = stop_operator.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), operator).await;
    verifier.shutdown().await;
    upstream.abort();
    syncs.iter().for_each(tokio::task::JoinHandle::abort);

    if let Some(dir) = &options.dump {
        let files = dump(&client, dir).await?;
        println!("\nwrote {files} objects to {}", dir.display());
    }
    let passed = outcome?;
    Ok(passed)
}

/// The name of the Pod object standing for the demo's in-process verifier.
pub const VERIFIER_POD: &str = "keyward-demo-verifier";

/// Usage reports from the demo's verifier, as a sidecar's would be written: every 200 ms, to
/// `keyward-usage-<pod>`, owned by a Pod. The verifier runs in this process, so a Pod object
/// stands for it, held back from every scheduler by a scheduling gate (nothing ever runs it):
/// on a real cluster the garbage collector would delete a report whose owner does not exist,
/// and it goes with the namespace.
async fn usage_reporting(client: &Client) -> anyhow::Result<Reporting> {
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let existing = pods.get_opt(VERIFIER_POD).await.context("reading the demo verifier's Pod")?;
    let pod = if let Some(pod) = existing {
        pod
    } else {
        let pod = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": VERIFIER_POD, "labels": {"app.kubernetes.io/name": "keyward-demo"}},
            "spec": {
                "schedulingGates": [{"name": "keyward.dev/demo-in-process"}],
                "containers": [{"name": "verifier", "image": "keyward:demo"}],
            },
        }))?;
        pods.create(&PostParams::default(), &pod).await.context("creating the demo verifier's Pod")?
    };
    let uid = pod.metadata.uid.context("the demo verifier's Pod has no uid")?;
    Ok(Reporting {
        client: client.clone(),
        pod: PodRef { namespace: NAMESPACE.to_owned(), name: VERIFIER_POD.to_owned(), uid },
        interval: Duration::from_millis(200),
        epoch: crate::usage::new_epoch(&mut crate::token::os_rng()),
    })
}

/// The in-memory API, with the CRDs the walkthrough uses (ApiKey, KeySet, ClusterApiKey)
/// installed the way `kubectl apply` would.
async fn in_memory_cluster() -> anyhow::Result<Client> {
    let cluster = FakeCluster::new().with_crd().with_object(crate::api::cluster_crd());
    cluster.client().await.context("starting the in-memory API")
}

/// A client for the cluster of the kubeconfig at `path`.
async fn cluster_client(path: &Path) -> anyhow::Result<Client> {
    let kubeconfig =
        kube::config::Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
        .await
        .with_context(|| format!("using {}", path.display()))?;
    Client::try_from(config).context("building a client for the cluster")
}

/// Create the namespace [`NAMESPACE`] if it is missing, and refuse to run where ApiKeys
/// already are (an earlier run's, or someone's): the walkthrough counts on its own.
async fn empty_namespace(client: &Client) -> anyhow::Result<()> {
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    if namespaces.get_opt(NAMESPACE).await.context("reading the demo namespace")?.is_none() {
        let mut namespace = k8s_openapi::api::core::v1::Namespace::default();
        namespace.metadata.name = Some(NAMESPACE.to_owned());
        namespaces.create(&PostParams::default(), &namespace).await.context("creating the demo namespace")?;
    }
    let keys: Api<ApiKey> = Api::namespaced(client.clone(), NAMESPACE);
    let existing = keys.list(&kube::api::ListParams::default().limit(1)).await.context("listing ApiKeys")?;
    anyhow::ensure!(
        existing.items.is_empty(),
        "namespace {NAMESPACE} already holds ApiKeys (an earlier run?): `kubectl delete namespace {NAMESPACE}` first"
    );
    Ok(())
}

/// Every `*.yaml` file of `dir`, as ApiKeys, sorted by name.
fn load_examples(dir: &Path) -> anyhow::Result<Vec<ApiKey>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {} (run from the repository root, or pass -f DIR)", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    paths.sort();
    anyhow::ensure!(!paths.is_empty(), "{} holds no *.yaml files", dir.display());
    paths
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
            serde_yaml::from_str::<ApiKey>(&text).with_context(|| format!("{} is not an ApiKey", path.display()))
        })
        .collect()
}

impl Demo {
    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Leap the shared clock forward and have the operator look at every key again,
    /// as its requeue timers would have after that much real time.
    fn leap(&self, by: SignedDuration) {
        self.clock.advance(by);
        self.reconcile_all.notify_one();
    }
}
