//! The ClusterApiKey controller: an organisation-wide key's lifecycle, with the ApiKey's plan.
//!
//! The script is the ApiKey's (`observe` → [`plan`](crate::plan::cluster::plan) → `apply`),
//! with three differences, all here:
//! - the Secret lives in `spec.secretNamespace`, owned by the ClusterApiKey (a namespaced
//!   object may have a cluster-scoped owner, so the garbage collector deletes it with the
//!   key); the finalizer unpublishes the hash from every key set before the key goes;
//! - the key set is every selected namespace's (`spec.keySet`), and the key counts as
//!   published only where all of them carry it;
//! - a namespace that stopped being selected (its labels changed, or the selector did) is
//!   rebuilt at once, before anything else is written, so it loses the key without waiting.
//!
//! Namespaces are read with a LIST on each reconcile, and any change of a Namespace
//! reconciles every ClusterApiKey ([`run`]): namespaces and cluster keys are few. The
//! operator's Secrets are watched too (metadata only, selected by the managed-by label, as
//! the ApiKey controller's are): a Secret owned by a ClusterApiKey that is deleted or edited
//! reconciles that key at once. kube-runtime's `owns` cannot be used for that: it looks the
//! owner up in the Secret's own namespace, and a ClusterApiKey is in none.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::{instrument, warn};

use crate::api::{ClusterApiKey, UsageLedger};
use crate::keyset::{KeySetId, Record};
use crate::plan::cluster::{self, ClusterPlan};
use crate::plan::{Finalizer, Observed, Publish, SecretView, secret_name};

use super::apply::{
    add_finalizer_on, delete_old_secret_in, event_key_id, merge_diff, record_event, release_finalizer_on,
    write_secret_in,
};
use super::{Context, Error, FIELD_MANAGER, MAX_PASSES, until};

/// Reconcile one ClusterApiKey.
#[instrument(skip_all, fields(name = key.name_any(), generation = key.metadata.generation.unwrap_or_default()))]
pub async fn reconcile(key: Arc<ClusterApiKey>, ctx: Arc<Context>) -> Result<Action, Error> {
    // The cached object may lag our own last status write; plan from the stored one.
    let Some(mut key) = api(&ctx).get_opt(&key.name_any()).await.map_err(Error::kube("get ClusterApiKey"))? else {
        ctx.publisher.metrics().key_expiry(crate::api::CLUSTER_OWNER, &key.name_any(), None);
        return Ok(Action::await_change());
    };
    // Its coming expiry (expiresAt or unused) under namespace `cluster`, as its key-set records.
    super::gauge_expiry(&ctx, &cluster::view(&key));
    for _ in 0..MAX_PASSES {
        let now = (ctx.clock)();
        let seen = observe(&ctx, &key, now).await?;
        let plan = cluster::plan(&key, &seen.observed, seen.selected.clone(), &ctx.settings, now);
        // Boxed: the writes' futures are large, and every caller of reconcile would carry them.
        key = Box::pin(apply(&ctx, key, &seen, &plan)).await?;
        if plan.plan.finalizer == Finalizer::Remove || plan.plan.delete_apikey {
            return Ok(Action::await_change());
        }
        let restart_at = super::restarts::restart_for_cluster_key(&ctx, &key).await?;
        match super::earliest(plan.plan.requeue_at, restart_at) {
            Some(at) if at <= now => {}
            Some(at) => return Ok(Action::requeue(until(now, at))),
            None => return Ok(Action::await_change()),
        }
    }
    warn!("plan did not settle; trying again shortly");
    Ok(Action::requeue(Duration::from_secs(1)))
}

/// What to do after a failed reconcile (as for ApiKeys).
#[allow(clippy::needless_pass_by_value)] // kube-runtime's Controller::run fixes this signature.
pub fn error_policy(key: Arc<ClusterApiKey>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!(name = %key.name_any(), error = %crate::token::redact(&error.to_string()), kind = error.label(), "ClusterApiKey reconcile failed");
    super::retry_after(error)
}

fn api(ctx: &Context) -> Api<ClusterApiKey> {
    Api::all(ctx.client.clone())
}

/// What was read for one pass.
struct Seen {
    observed: Observed,
    /// The Secret as read (its tokens are copied when the plan moves them).
    secret: Option<Secret>,
    /// The namespaces the key selects now, sorted.
    selected: Vec<String>,
    /// Every namespace that exists and is not being deleted.
    live: Vec<String>,
}

async fn observe(ctx: &Context, key: &ClusterApiKey, now: jiff::Timestamp) -> Result<Seen, Error> {
    let uid = key.metadata.uid.as_deref().ok_or(Error::MissingField("metadata.uid"))?;
    let view = cluster::view(key);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &key.spec.secret_namespace);
    let secret = secrets.get_opt(&secret_name(&view)).await.map_err(Error::kube("get Secret"))?;
    let secret_view =
        secret.as_ref().map_or(SecretView::Absent, |s| SecretView::Present(Box::new(super::observe::facts(s, uid))));
    let namespaces = Api::<Namespace>::all(ctx.client.clone())
        .list_metadata(&ListParams::default())
        .await
        .map_err(Error::kube("list Namespaces"))?;
    let live: Vec<(String, BTreeMap<String, String>)> = namespaces
        .items
        .into_iter()
        .filter(|ns| ns.metadata.deletion_timestamp.is_none())
        .map(|ns| (ns.name_any(), ns.metadata.labels.unwrap_or_default()))
        .collect();
    let selected = cluster::selected(key, live.iter().map(|(n, l)| (n.as_str(), l)));
    let mut sets = Vec::with_capacity(selected.len());
    for namespace in &selected {
        sets.push(ctx.publisher.published_by_cluster_key(&key_set(key, namespace), &key.name_any()).await?);
    }
    let published = in_every(sets);
    ctx.publisher.note_cluster_published(uid, &published, now);
    let observed =
        Observed { secret: secret_view, published, held: ctx.publisher.cluster_held(uid), class: cluster::CLASS };
    Ok(Seen { observed, secret, selected, live: live.into_iter().map(|(n, _)| n).collect() })
}

/// The records every one of `sets` carries; none when there are no sets.
fn in_every(sets: Vec<Vec<Record>>) -> Vec<Record> {
    let mut sets = sets.into_iter();
    let Some(first) = sets.next() else { return Vec::new() };
    sets.fold(first, |kept, set| kept.into_iter().filter(|r| set.contains(r)).collect())
}

fn key_set(key: &ClusterApiKey, namespace: &str) -> KeySetId {
    KeySetId { namespace: namespace.to_owned(), name: key.spec.key.key_set.clone() }
}

/// Carry out `plan` in the ApiKey's order (`apply.rs`); returns the key as it now is.
async fn apply(
    ctx: &Context,
    key: ClusterApiKey,
    seen: &Seen,
    cluster_plan: &ClusterPlan,
) -> Result<ClusterApiKey, Error> {
    let plan = &cluster_plan.plan;
    let key = if plan.finalizer == Finalizer::Add { add_finalizer_on(&api(ctx), &key.metadata).await? } else { key };
    let uid = key.metadata.uid.clone().ok_or(Error::MissingField("metadata.uid"))?;
    ctx.publisher.hold_cluster(&uid, plan.hold.as_ref());
    // Namespaces that stopped being selected lose the key first, whatever else happens.
    for namespace in left(&key, seen) {
        ctx.publisher.publish_now(&key_set(&key, &namespace)).await?;
    }
    let withdrawing = plan.publish == Publish::Now || plan.finalizer == Finalizer::Remove;
    if withdrawing {
        publish_everywhere(ctx, &key, seen).await?;
    }
    write_secret_in(ctx, &key.spec.secret_namespace, owner(&key, &uid), seen.secret.as_ref(), plan).await?;
    delete_old_secret_in(ctx, &key.spec.secret_namespace, &uid, plan).await?;
    if let Some(old) = &plan.leave_key_set {
        for namespace in &seen.selected {
            let id = KeySetId { namespace: namespace.clone(), name: old.clone() };
            ctx.publisher.publish_now(&id).await?;
        }
    }
    let key = write_status(ctx, key, cluster_plan).await?;
    emit_events(ctx, &key, cluster_plan).await;
    match plan.publish {
        Publish::Unchanged => {}
        Publish::Soon => seen.selected.iter().for_each(|ns| ctx.publisher.request(key_set(&key, ns))),
        Publish::Now => publish_everywhere(ctx, &key, seen).await?,
    }
    let key = if plan.finalizer == Finalizer::Remove { release_finalizer_on(&api(ctx), key).await? } else { key };
    if plan.delete_apikey {
        api(ctx)
            .delete(&key.name_any(), &DeleteParams::default())
            .await
            .map_err(Error::kube("delete expired ClusterApiKey"))?;
    }
    Ok(key)
}

/// Namespaces the stored status lists that the key no longer selects and that still exist.
fn left(key: &ClusterApiKey, seen: &Seen) -> Vec<String> {
    let before = key.status.as_ref().map(|s| s.namespaces.as_slice()).unwrap_or_default();
    before.iter().filter(|ns| !seen.selected.contains(ns) && seen.live.contains(ns)).cloned().collect()
}

async fn publish_everywhere(ctx: &Context, key: &ClusterApiKey, seen: &Seen) -> Result<(), Error> {
    for namespace in &seen.selected {
        ctx.publisher.publish_now(&key_set(key, namespace)).await?;
    }
    Ok(())
}

fn owner(key: &ClusterApiKey, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: ClusterApiKey::api_version(&()).into_owned(),
        kind: ClusterApiKey::kind(&()).into_owned(),
        name: key.name_any(),
        uid: uid.to_owned(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

async fn write_status(ctx: &Context, key: ClusterApiKey, plan: &ClusterPlan) -> Result<ClusterApiKey, Error> {
    let Some(status) = &plan.status else { return Ok(key) };
    let old = serde_json::to_value(key.status.clone().unwrap_or_default())?;
    let new = serde_json::to_value(status)?;
    let patch = json!({ "status": merge_diff(&old, &new) });
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PatchParams::default() };
    api(ctx).patch_status(&key.name_any(), &params, &Patch::Merge(patch)).await.map_err(Error::kube("patch status"))
}

async fn emit_events(ctx: &Context, key: &ClusterApiKey, plan: &ClusterPlan) {
    let mut reference = key.object_ref(&());
    // Cluster-scoped: its Events live in `default`, where `kubectl describe` looks for them.
    reference.namespace = None;
    let view = cluster::view(key);
    for kind in &plan.plan.anomalies {
        ctx.publisher.metrics().usage_anomaly(crate::api::CLUSTER_OWNER, *kind);
    }
    let key_id = event_key_id(&view, &plan.plan);
    let now = (ctx.clock)();
    for planned in &plan.plan.events {
        record_event(ctx, &reference, key_id, planned).await;
        // The same step, to the webhooks of the Secret's namespace: queued, never awaited.
        if let Some(notice) = crate::notice::cluster_notice(key, planned, key_id, now) {
            ctx.notifier.notify(notice);
        }
    }
}

/// The ClusterApiKey CRD's name: the controller runs only where it is installed.
pub const CLUSTER_CRD_NAME: &str = "clusterapikeys.keyward.dev";

/// The ClusterApiKey that owns a Secret, if one does (its owner reference, whatever its namespace).
#[must_use]
pub fn owning_key(
    secret: &kube::core::PartialObjectMeta<Secret>,
) -> Option<kube::runtime::reflector::ObjectRef<ClusterApiKey>> {
    let group = ClusterApiKey::group(&());
    secret
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.kind == ClusterApiKey::kind(&()) && o.api_version.split('/').next() == Some(group.as_ref()))
        .map(|o| kube::runtime::reflector::ObjectRef::new(&o.name))
}

/// Reconcile ClusterApiKeys until `shutdown`: each on its own changes and its Secret's, and all
/// of them when a Namespace appears, changes its labels or goes. Does nothing (and says so)
/// without the CRD.
pub async fn run(ctx: Arc<Context>, shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static) {
    use futures::{StreamExt, TryStreamExt};
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::runtime::reflector::ObjectRef;
    use kube::runtime::{Controller, WatchStreamExt, watcher};

    let crds: Api<CustomResourceDefinition> = Api::all(ctx.client.clone());
    match crds.get_opt(CLUSTER_CRD_NAME).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            warn!(crd = CLUSTER_CRD_NAME, "the ClusterApiKey CRD is not installed: no organisation-wide keys");
            ctx.publisher.no_cluster_keys();
            return;
        }
        Err(e) => {
            warn!(error = %e, "cannot tell whether the ClusterApiKey CRD is installed: no organisation-wide keys");
            return;
        }
    }
    // The controller's store, reflected here; with the Namespace metadata store, key-set
    // rebuilds skip reading cluster keys where none could be (publisher/cluster.rs), once both are filled.
    let (key_cache, key_writer) = kube::runtime::reflector::store();
    let keys_filled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let own = watcher(api(&ctx), watcher::Config::default())
        .default_backoff()
        .map_ok(|event| event.modify(without_ledger))
        .reflect(key_writer)
        .inspect(filled(&keys_filled))
        .applied_objects();
    let controller = Controller::for_stream(own, key_cache.clone());
    let keys = controller.store();
    let namespaces = Api::<kube::core::PartialObjectMeta<Namespace>>::all(ctx.client.clone());
    let (namespace_cache, namespace_writer) = kube::runtime::reflector::store();
    let namespaces_filled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let changes = watcher(namespaces, watcher::Config::default())
        .default_backoff()
        .reflect(namespace_writer)
        .inspect(filled(&namespaces_filled));
    ctx.publisher.use_cluster_caches(key_cache, namespace_cache, [keys_filled, namespaces_filled]);
    let managed = format!("{}={}", crate::plan::LABEL_MANAGED_BY, crate::plan::MANAGED_BY);
    let secrets = Api::<kube::core::PartialObjectMeta<Secret>>::all(ctx.client.clone());
    let secrets = watcher(secrets, watcher::Config::default().labels(&managed)).default_backoff();
    controller
        .watches_stream(changes.touched_objects(), move |_namespace| {
            keys.state().iter().map(|k| ObjectRef::from_obj(k.as_ref())).collect::<Vec<_>>()
        })
        .watches_stream(secrets.touched_objects(), |secret| owning_key(&secret))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                warn!(error = %crate::token::redact(&e.to_string()), "ClusterApiKey controller error");
            }
        })
        .await;
}

/// What the controller's store keeps of a ClusterApiKey: all but its usage ledger (kilobytes
/// per busy key; reconcile reads the stored key, the publisher needs spec and namespaces),
/// of which it keeps only whether there is one (an empty one stands for it), for the usage
/// pass to tell which keys it may write (`usage::cluster`).
pub fn without_ledger(key: &mut ClusterApiKey) {
    if let Some(status) = key.status.as_mut() {
        let any = status.key.usage_ledger.as_deref().is_some_and(|ledger| *ledger != UsageLedger::default());
        status.key.usage_ledger = any.then(Box::default);
    }
}

/// Sets `flag` once a watch stream has listed everything (`InitDone`): its store is filled.
/// Placed after `reflect`, so the flag is never up before the store holds the list. Not
/// `Store::wait_until_ready`: kube-runtime wakes only one of the tasks waiting on a store, and
/// the Controller waits on this one (controller/tests/readiness.rs).
fn filled<K>(
    flag: &Arc<std::sync::atomic::AtomicBool>,
) -> impl FnMut(&Result<kube::runtime::watcher::Event<K>, kube::runtime::watcher::Error>) + use<K> {
    let flag = flag.clone();
    move |event| {
        if matches!(event, Ok(kube::runtime::watcher::Event::InitDone)) {
            flag.store(true, std::sync::atomic::Ordering::Release);
        }
    }
}
