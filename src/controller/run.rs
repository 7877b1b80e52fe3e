//! Wiring: the kube-runtime Controllers for ApiKeys and KeySets, the key-set publisher and the shard watch.
//!
//! Secrets are watched with a label selector only (managed-by keyward): a
//! watch on every Secret of the cluster is the known memory trap. Key-set
//! ConfigMaps are watched the same way; any change to one (ours included)
//! asks the publisher to rebuild that set, which writes nothing when the
//! stored shards are already right and repairs them when they were edited.
//!
//! Memory: the only cache is the ApiKeys' (the Controller's store), and
//! it keeps of each only identity, generation and state ([`slim`]). Secrets and shards are watched metadata
//! only (kube-runtime's `owns` does so for Secrets): tokens and key-set data
//! are read with a GET when needed, never kept.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::DynamicObject;
use kube::core::PartialObjectMeta;
use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
use kube::{Api, Client, ResourceExt};
use tracing::{info, warn};

use crate::api::{ApiKey, ApiKeySpec, ApiKeyStatus};
use crate::keyset::KeySetId;
use crate::plan::{LABEL_KEYSET, LABEL_MANAGED_BY, MANAGED_BY, Settings};

use super::{Clock, Context, Health, Metrics, Minter, Publisher, decode, error_policy, reconcile};

/// The CRD's name, checked at start-up.
pub const CRD_NAME: &str = "apikeys.keyward.dev";

/// Reconciles in flight at once unless configured.
pub const DEFAULT_CONCURRENCY: u16 = 16;

/// Operator options.
#[derive(Clone)]
pub struct Options {
    /// Lifecycle settings.
    pub settings: Settings,
    /// Coalescing window of the key-set publisher.
    pub coalesce: Duration,
    /// Full rebuild of every known key set this often (repairs drift nobody reported).
    pub resync: Duration,
    /// Reconciles in flight at once. Each holds an API connection (HTTP/1.1); unbounded,
    /// 10,000 new keys opened over 2,000 connections and held hundreds of MiB.
    pub concurrency: u16,
    /// The clock.
    pub clock: Clock,
    /// The token minter.
    pub mint: Minter,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Readiness, for `/readyz`.
    pub health: Arc<Health>,
    /// When notified, reconcile every ApiKey (the demo uses it after leaping its clock).
    pub reconcile_all: Option<Arc<tokio::sync::Notify>>,
    /// Adding up verifiers' usage reports; `None` for off.
    pub usage: Option<super::usage::UsageOptions>,
    /// How long after a rotation's swap opted-in workloads are restarted.
    pub restart_delay: jiff::SignedDuration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            settings: Settings::default(),
            coalesce: Duration::from_millis(500),
            resync: Duration::from_secs(300),
            concurrency: DEFAULT_CONCURRENCY,
            clock: super::system_clock(),
            mint: super::os_minter(),
            metrics: Arc::new(Metrics::new()),
            health: Arc::new(Health::default()),
            reconcile_all: None,
            usage: Some(super::usage::UsageOptions::default()),
            restart_delay: crate::plan::restarts::DEFAULT_RESTART_DELAY,
        }
    }
}

/// Why the operator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The ApiKey CRD is not installed.
    #[error("the ApiKey CRD ({CRD_NAME}) is not installed; install it with `keyward crd | kubectl apply -f -`")]
    CrdMissing,
    /// The API server could not be asked.
    #[error("cannot reach the Kubernetes API: {0}")]
    Api(#[from] kube::Error),
}

/// Fail early and clearly when the CRD is missing.
pub async fn check_crd(client: &Client) -> Result<(), StartError> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    match crds.get_opt(CRD_NAME).await? {
        Some(_) => Ok(()),
        None => Err(StartError::CrdMissing),
    }
}

/// Run the operator until `shutdown` resolves, then finish in-flight reconciles and return.
pub async fn run(client: Client, options: Options, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let shutdown = shutdown.shared();
    let (metrics, health) = (options.metrics.clone(), options.health.clone());
    health.set_leading(true);
    let publisher = Arc::new(
        Publisher::new(client.clone(), options.clock.clone(), options.coalesce)
            .with_default_grace(options.settings.default_grace_period)
            .with_metrics(metrics.clone()),
    );
    let ctx = Arc::new(Context {
        restart_delay: options.restart_delay,
        ..Context::with(
            client.clone(),
            options.settings.clone(),
            publisher.clone(),
            options.clock.clone(),
            options.mint.clone(),
        )
    });
    let managed = format!("{LABEL_MANAGED_BY}={MANAGED_BY}");

    let publishing = tokio::spawn(publisher.clone().run(shutdown.clone()));
    let shards = tokio::spawn(watch_shards(client.clone(), publisher.clone(), options.resync, shutdown.clone()));
    let keysets = tokio::spawn(super::keysets::run(&ctx, shutdown.clone()));
    let usage = options
        .usage
        .map(|usage| tokio::spawn(super::usage::run(client.clone(), options.clock.clone(), usage, shutdown.clone())));

    let (store, writer) = reflector::store();
    // Raw objects: one stored ApiKey the types refuse must not fail the whole list (see `decode`).
    let keys =
        watcher(Api::<DynamicObject>::all_with(client.clone(), &decode::api_resource()), watcher::Config::default())
            .default_backoff()
            .map_ok(|event| match event {
                watcher::Event::Apply(object) => watcher::Event::Apply(slim(object)),
                watcher::Event::Delete(object) => watcher::Event::Delete(slim(object)),
                watcher::Event::InitApply(object) => watcher::Event::InitApply(slim(object)),
                watcher::Event::Init => watcher::Event::Init,
                watcher::Event::InitDone => watcher::Event::InitDone,
            })
            .reflect(writer)
            .applied_objects();
    let controller = Controller::for_stream(keys, store.clone())
        .with_config(kube::runtime::controller::Config::default().concurrency(options.concurrency));
    metrics.count_keys_from(Some(store.clone()));
    let synced = {
        let health = health.clone();
        tokio::spawn(async move {
            // Poll again now and then: kube-runtime's readiness signal keeps a single waker, and the
            // Controller waits on the same store, so one waiter's wake-up can be lost.
            loop {
                match tokio::time::timeout(Duration::from_millis(250), store.wait_until_ready()).await {
                    Ok(Ok(())) => return health.synced(),
                    Ok(Err(_)) => return,
                    Err(_) => {}
                }
            }
        })
    };
    let measured = metrics.clone();
    let mut controller =
        controller.owns(Api::<Secret>::all(client.clone()), watcher::Config::default().labels(&managed));
    if let Some(notify) = options.reconcile_all.clone() {
        let nudges = futures::stream::unfold(notify, |notify| async move {
            notify.notified().await;
            Some(((), notify))
        });
        controller = controller.reconcile_all_on(nudges);
    }
    controller
        .graceful_shutdown_on(shutdown.clone())
        .run(
            move |key, ctx| {
                let metrics = measured.clone();
                async move {
                    // Measures work, not decisions: the one place std's monotonic clock is read.
                    let started = std::time::Instant::now();
                    let result = reconcile(key, ctx).await;
                    metrics.reconciled(started.elapsed(), result.as_ref().err());
                    result
                }
            },
            error_policy,
            ctx,
        )
        .for_each(|result| async move {
            match result {
                Ok((object, action)) => {
                    tracing::debug!(namespace = object.namespace.as_deref().unwrap_or(""), name = %object.name, ?action, "reconciled");
                }
                Err(e) => warn!(error = %crate::token::redact(&e.to_string()), "controller error"),
            }
        })
        .await;
    // The publisher flushes what is pending before it stops.
    publisher.flush().await;
    let _ = keysets.await;
    let _ = publishing.await;
    shards.abort();
    if let Some(usage) = usage {
        usage.abort();
    }
    synced.abort();
    metrics.count_keys_from(None);
    health.set_leading(false);
    info!("operator stopped");
}

/// What the cache keeps of an ApiKey: identity, generation and state.
///
/// Reconcile reads the stored ApiKey with a GET before it plans (the cache may lag
/// its own last write), and the cache only triggers reconciles and counts keys by
/// state (`keyward_keys`). So spec, the rest of status, labels, annotations
/// (`kubectl apply`'s last-applied copy among them) and managed fields stay out of memory.
fn slim(object: DynamicObject) -> ApiKey {
    let meta = object.metadata;
    let metadata = ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        uid: meta.uid,
        resource_version: meta.resource_version,
        generation: meta.generation,
        deletion_timestamp: meta.deletion_timestamp,
        ..ObjectMeta::default()
    };
    let status = object.data.get("status").map(|status| ApiKeyStatus {
        state: status.get("state").and_then(|state| serde_json::from_value(state.clone()).ok()),
        ..ApiKeyStatus::default()
    });
    ApiKey { metadata, spec: ApiKeySpec::default(), status }
}

async fn watch_shards(client: Client, publisher: Arc<Publisher>, resync: Duration, shutdown: impl Future<Output = ()>) {
    let selector = crate::configmap::any_keyset_selector();
    // Metadata only: a shard's labels name its set; its (up to 1 MiB) data is read by the publisher.
    let events =
        watcher(Api::<PartialObjectMeta<ConfigMap>>::all(client), watcher::Config::default().labels(&selector))
            .default_backoff();
    let mut events = std::pin::pin!(events);
    let mut tick = tokio::time::interval(resync);
    let mut known: std::collections::BTreeSet<KeySetId> = std::collections::BTreeSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = tick.tick() => known.iter().cloned().for_each(|id| publisher.request(id)),
            event = events.next() => {
                let Some(event) = event else { return };
                let objects = match event {
                    Ok(watcher::Event::Apply(cm) | watcher::Event::Delete(cm) | watcher::Event::InitApply(cm)) => vec![cm],
                    Ok(_) => Vec::new(),
                    Err(e) => {
                        warn!(error = %e, "key-set shard watch failed");
                        Vec::new()
                    }
                };
                for cm in objects {
                    let set = cm.labels().get(LABEL_KEYSET).cloned();
                    if let (Some(namespace), Some(name)) = (cm.namespace(), set) {
                        let id = KeySetId { namespace, name };
                        known.insert(id.clone());
                        publisher.request(id);
                    }
                }
            }
        }
    }
}
