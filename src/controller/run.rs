//! Wiring: the kube-runtime Controllers for ApiKeys and KeySets, the key-set publisher and the shard watch.
//!
//! Secrets are watched with a label selector only (managed-by keyward): a
//! watch on every Secret of the cluster is the known memory trap. Key-set
//! ConfigMaps are watched the same way; any change to one (ours included)
//! asks the publisher to rebuild that set, which writes nothing when the
//! stored shards are already right and repairs them when they were edited.
//!
//! Memory: the only cache is the ApiKeys' (the Controller's store), and
//! it keeps of each only identity, generation, state and the usage pass's
//! facts ([`slim`]). Secrets and shards are watched metadata
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
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
use kube::{Api, Client, ResourceExt};
use tracing::{info, warn};

use crate::api::{ApiKey, ApiKeyClass, ApiKeySpec, ApiKeyStatus};
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
    /// Lifecycle notices to ApiKeyWebhooks; `None` for off.
    pub webhooks: Option<super::webhooks::WebhookOptions>,
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
            webhooks: Some(super::webhooks::WebhookOptions::default()),
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

/// What the usage pass decides from: the ApiKey `store`, and the ClusterApiKey controller's
/// store once the `publisher` has it (filled).
fn usage_cache(store: reflector::Store<ApiKey>, publisher: Arc<Publisher>) -> super::usage::due::Cache {
    let cluster: super::usage::cluster::Source = Arc::new(move || publisher.cluster_keys_cache());
    super::usage::due::Cache::new(store).with_cluster(cluster)
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
    let base = Context::with(
        client.clone(),
        options.settings.clone(),
        publisher.clone(),
        options.clock.clone(),
        options.mint.clone(),
    );
    let (notifier, delivering) = start_webhooks(&client, &options, &base, shutdown.clone()).await;
    let ctx = Arc::new(Context { restart_delay: options.restart_delay, notifier, ..base });
    let managed = format!("{LABEL_MANAGED_BY}={MANAGED_BY}");

    let publishing = tokio::spawn(publisher.clone().run(shutdown.clone()));
    let shards = tokio::spawn(watch_shards(client.clone(), publisher.clone(), options.resync, shutdown.clone()));
    let keysets = tokio::spawn(super::keysets::run(&ctx, shutdown.clone()));
    let cluster_keys = tokio::spawn(super::cluster::run(ctx.clone(), shutdown.clone()));
    let (store, writer) = reflector::store();
    let usage = options.usage.map(|usage| {
        let cache = usage_cache(store.clone(), publisher.clone());
        let (clock, metrics) = (options.clock.clone(), metrics.clone());
        tokio::spawn(super::usage::run(client.clone(), clock, usage, Some(cache), metrics, shutdown.clone()))
    });

    let keys = watch_keys(&client).reflect(writer).applied_objects();
    let controller = Controller::for_stream(keys, store.clone())
        .with_config(kube::runtime::controller::Config::default().concurrency(options.concurrency));
    metrics.count_keys_from(Some(store.clone()));
    let synced = {
        let health = health.clone();
        tokio::spawn(async move {
            // Poll again now and then: kube-runtime's readiness signal keeps a single waker, and the
            // Controller waits on the same store, so one waiter's wake-up can be lost
            // (shown in controller/tests/readiness.rs).
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
    let mut controller = watch_classes(
        controller.owns(Api::<Secret>::all(client.clone()), watcher::Config::default().labels(&managed)),
        &client,
    );
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
    let _ = cluster_keys.await;
    let _ = publishing.await;
    shards.abort();
    if let Some(usage) = usage {
        usage.abort();
    }
    if let Some(delivering) = delivering {
        // It saw the shutdown too: it writes what it has into the webhooks' status and stops.
        let _ = delivering.await;
    }
    synced.abort();
    metrics.count_keys_from(None);
    health.set_leading(false);
    info!("operator stopped");
}

/// Every ApiKey, as raw objects slimmed to what the cache keeps ([`slim`]): one stored
/// ApiKey the types refuse must not fail the whole list (see `decode`).
fn watch_keys(
    client: &Client,
) -> impl futures::Stream<Item = Result<watcher::Event<ApiKey>, watcher::Error>> + Send + use<> {
    watcher(Api::<DynamicObject>::all_with(client.clone(), &decode::api_resource()), watcher::Config::default())
        .default_backoff()
        .map_ok(|event| match event {
            watcher::Event::Apply(object) => watcher::Event::Apply(slim(object)),
            watcher::Event::Delete(object) => watcher::Event::Delete(slim(object)),
            watcher::Event::InitApply(object) => watcher::Event::InitApply(slim(object)),
            watcher::Event::Init => watcher::Event::Init,
            watcher::Event::InitDone => watcher::Event::InitDone,
        })
}

/// Start webhook delivery when it is on and its CRD is installed; else notices go nowhere.
async fn start_webhooks(
    client: &Client,
    options: &Options,
    ctx: &Context,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> (super::webhooks::Notifier, Option<tokio::task::JoinHandle<()>>) {
    use super::webhooks;
    let Some(settings) = options.webhooks.clone() else { return (webhooks::Notifier::disabled(), None) };
    match webhooks::installed(client).await {
        Ok(true) => {
            let (notifier, task) = webhooks::start(
                client.clone(),
                settings,
                options.clock.clone(),
                options.metrics.clone(),
                ctx.recorder.clone(),
                shutdown,
            );
            (notifier, Some(task))
        }
        Ok(false) => {
            warn!(
                crd = webhooks::WEBHOOK_CRD_NAME,
                "the ApiKeyWebhook CRD is not installed: no webhook notices are sent"
            );
            (webhooks::Notifier::disabled(), None)
        }
        Err(e) => {
            warn!(error = %e, "cannot tell whether the ApiKeyWebhook CRD is installed: no webhook notices are sent");
            (webhooks::Notifier::disabled(), None)
        }
    }
}

/// Reconcile the keys of an ApiKeyClass whenever it changes or goes ([`class_members`]).
fn watch_classes(controller: Controller<ApiKey>, client: &Client) -> Controller<ApiKey> {
    let keys = controller.store();
    controller.watches(Api::<ApiKeyClass>::all(client.clone()), watcher::Config::default(), move |class| {
        class_members(&keys, &class)
    })
}

/// The ApiKeys to reconcile when `class` changed (or was deleted): those that name it, were
/// held to it (`status.className`), or name no class while it is marked default.
fn class_members(keys: &reflector::Store<ApiKey>, class: &ApiKeyClass) -> Vec<ObjectRef<ApiKey>> {
    let name = class.name_any();
    let default = crate::plan::class::is_default(class);
    keys.state()
        .iter()
        .filter(|key| {
            let named = key.spec.class_name.as_ref();
            named == Some(&name)
                || key.status.as_ref().and_then(|s| s.class_name.as_ref()) == Some(&name)
                || (named.is_none() && default)
        })
        .map(|key| ObjectRef::from_obj(key.as_ref()))
        .collect()
}

/// What the cache keeps of an ApiKey: identity, generation, state, class names, and the
/// usage pass's facts (key set, key ids, `lastUsedAt`, `status.usage`, whether it has a
/// ledger: a few hundred bytes).
///
/// Reconcile reads the stored ApiKey with a GET before it plans (the cache may lag
/// its own last write), and the cache only triggers reconciles, counts keys by
/// state (`keyward_keys`) and tells the usage pass which keys it may write
/// (`usage::due`), which then reads those. So the rest of spec and status (the usage
/// ledger among them: kilobytes per busy key), labels, annotations (`kubectl apply`'s
/// last-applied copy among them) and managed fields stay out of memory.
pub(super) fn slim(object: DynamicObject) -> ApiKey {
    fn parsed<T: serde::de::DeserializeOwned>(value: Option<&serde_json::Value>) -> Option<T> {
        value.and_then(|value| T::deserialize(value).ok())
    }
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
    let text = |value: Option<&serde_json::Value>| value.and_then(serde_json::Value::as_str).map(str::to_owned);
    let status = object.data.get("status").map(|status| ApiKeyStatus {
        state: status.get("state").and_then(|state| serde_json::from_value(state.clone()).ok()),
        class_name: text(status.get("className")),
        last_used_at: parsed(status.get("lastUsedAt")),
        usage: parsed(status.get("usage")),
        current_key: parsed(status.get("currentKey")),
        next_key: parsed(status.get("nextKey")),
        previous_key: parsed(status.get("previousKey")),
        // Of the ledger only whether it holds anything (an empty one stands for it): a ledger
        // without `usage` is then read and written again by the usage pass (`plan::usage::due`).
        usage_ledger: status
            .get("usageLedger")
            .and_then(serde_json::Value::as_object)
            .is_some_and(|ledger| !ledger.is_empty())
            .then(Box::default),
        ..ApiKeyStatus::default()
    });
    // The class names, so that a class change requeues the keys of the class ([`class_members`]).
    let spec = ApiKeySpec {
        class_name: text(object.data.pointer("/spec/className")),
        key_set: text(object.data.pointer("/spec/keySet")).unwrap_or_else(|| ApiKeySpec::default().key_set),
        ..ApiKeySpec::default()
    };
    ApiKey { metadata, spec, status }
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
