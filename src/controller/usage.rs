//! Usage: verifiers' reports added up into each ApiKey's own ledger and `status.usage`.
//!
//! Every `--usage-aggregate-interval` the leader, for each namespace that has
//! usage reports (ConfigMaps labelled [`LABEL_USAGE_REPORT`]) and each key set
//! of that namespace:
//!
//! 1. reads the ApiKeys of the key set (their current, next and previous key
//!    ids are the only ids that count) and the namespace's reports; with the
//!    operator's ApiKey cache synced, only the keys whose status may be
//!    written now ([`due`]), else all of them;
//! 2. per ApiKey, folds the reports into the key's `status.usageLedger`
//!    ([`fold`], pure) and decides within the write budget whether to write
//!    ([`status_write`]): a fold not written now is done again later, since
//!    reports are cumulative;
//! 3. writes `lastUsedAt`, `usage` and the ledger in one merge patch carrying
//!    the `resourceVersion` read: buckets and watermarks change in one atomic
//!    write, so a retried or re-read report, a second operator or an
//!    operator restart never counts twice (a conflict waits for the next pass);
//! 4. paces those writes ([`pace`]): at most `--usage-max-writes-per-second`,
//!    all started within the pass; a key left without a turn is folded again at
//!    a later pass (the next one starts with it).
//!
//! Reports are read only from the key set's own namespace, and only key ids
//! of the key's own tokens count, so no verifier can change another
//! namespace's usage. No object grows with the number of keys: each key's
//! ledger holds its own buckets and at most [`MAX_SOURCES`] watermarks.
//!
//! ClusterApiKeys are added up in the same pass ([`cluster`]), from the reports of
//! the namespaces they are published to, read once for both.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::api::{ApiKey, ApiKeyStatus};
use crate::keyset::KeySetId;
use crate::plan::usage::cluster::{ByNamespace, NamespaceReports, only_keys};
use crate::plan::usage::{Budget, Live, MAX_SOURCES, StatusWrite, Stored, fold, status_write};
use crate::token::KeyId;
use crate::usage::{LABEL_USAGE_REPORT, REPORT_KEY, Report, report_name};

use super::apply::merge_diff;
use super::metrics::Metrics;
use super::{Clock, Error, FIELD_MANAGER};

pub mod cluster;
pub mod due;
pub mod pace;

use pace::Pace;

/// Label of the per-key-set usage aggregate ConfigMaps (`keyward-usage.<keySet>`) that operators
/// before the per-key ledger wrote. They are no longer read; [`run`] deletes them once.
pub const LABEL_OLD_USAGE_AGGREGATE: &str = "keyward.dev/usage-aggregate";

/// How usage is gathered and written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageOptions {
    /// How often reports are read and added up (`--usage-aggregate-interval`).
    pub interval: Duration,
    /// The status write budget.
    pub budget: Budget,
    /// At most this many status writes a second (`--usage-max-writes-per-second`); 0: no limit.
    pub max_writes_per_second: u32,
}

/// The default of `--usage-max-writes-per-second`: 10,000 busy keys written once per default
/// `--usage-status-interval` (5 minutes) take 33.3 a second; 40 leaves a sixth for the hourly
/// `lastUsedAt` moves and keys written late (docs/lifecycle.md, Usage, write pace).
pub const MAX_WRITES_PER_SECOND: u32 = 40;

impl Default for UsageOptions {
    fn default() -> Self {
        UsageOptions {
            interval: Duration::from_secs(60),
            budget: Budget::default(),
            max_writes_per_second: MAX_WRITES_PER_SECOND,
        }
    }
}

/// What one pass over one key set (or over the cluster keys) did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    /// Status writes.
    pub status_writes: usize,
    /// Writes refused because the key changed since it was read (409): folded again next pass.
    pub conflicts: usize,
    /// Reporting processes not added up for some key because its ledger is full ([`MAX_SOURCES`]).
    pub waiting: usize,
    /// Writes left for a later pass by the pace (`--usage-max-writes-per-second`).
    pub deferred: usize,
}

/// Add up the reports of every namespace that has any, every `options.interval`, until `shutdown`.
///
/// With `cache` (the operator's ApiKey store, and the ClusterApiKey controller's) synced, a pass reads only the keys it may write
/// ([`due`]); before that, or without it, it lists every key. Writes left by the pace are
/// counted in `metrics`.
pub async fn run(
    client: Client,
    clock: Clock,
    options: UsageOptions,
    mut cache: Option<due::Cache>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let mut pace = Pace::new(options.max_writes_per_second, options.interval);
    if let Err(err) = delete_old_aggregates(&client).await {
        warn!(error = %err, "old usage aggregates not deleted; they are not read and can be deleted by hand");
    }
    let mut shutdown = std::pin::pin!(shutdown);
    let mut tick = tokio::time::interval(options.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = tick.tick() => {
                let passed = match cache.as_mut().filter(|cache| cache.ready()) {
                    Some(cache) => cache.pass_all(&client, &clock, options.budget, &mut pace).await.map(|reads| {
                        debug!(?reads, "usage pass from the cache");
                    }),
                    None => pass_all(&client, &clock, options.budget, &mut pace).await,
                };
                metrics.usage_writes_deferred(pace.deferred());
                if pace.deferred() > 0 {
                    debug!(deferred = pace.deferred(), "usage writes left for the next pass by --usage-max-writes-per-second");
                }
                if let Err(err) = passed {
                    warn!(error = %err, "usage pass failed; trying again at the next interval");
                }
            }
        }
    }
}

/// Delete the usage aggregates of operators before the per-key ledger (one ConfigMap per key
/// set, which outgrew the object size limit): nothing reads them any more. Returns how many.
pub async fn delete_old_aggregates(client: &Client) -> Result<usize, Error> {
    let all: Api<ConfigMap> = Api::all(client.clone());
    let listed = all
        .list_metadata(&ListParams::default().labels(LABEL_OLD_USAGE_AGGREGATE))
        .await
        .map_err(Error::kube("list old usage aggregates"))?;
    let mut deleted = 0;
    for old in &listed.items {
        let Some(namespace) = old.namespace() else { continue };
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
        match api.delete(&old.name_any(), &DeleteParams::default()).await {
            Ok(_) => deleted += 1,
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(err) => return Err(Error::kube("delete old usage aggregate")(err)),
        }
    }
    if deleted > 0 {
        info!(deleted, "old usage aggregates deleted (usage is now kept in each ApiKey's status)");
    }
    Ok(deleted)
}

/// One pass over every namespace with reports, then over the ClusterApiKeys: each namespace's
/// ApiKeys and reports are read once, and what the cluster keys need of the reports is kept.
/// Writes take turns by `pace`; the pass starts where the last one stopped.
pub async fn pass_all(client: &Client, clock: &Clock, budget: Budget, pace: &mut Pace) -> Result<(), Error> {
    let cluster_keys = cluster::list(client).await;
    pace.start(cluster_keys.len());
    let cluster_ids = cluster::key_ids(&cluster_keys);
    let mut for_cluster = ByNamespace::new();
    for namespace in pace.namespaces(namespaces_with_reports(client).await?) {
        let keys: Api<ApiKey> = Api::namespaced(client.clone(), &namespace);
        let listed = keys.list(&any_version()).await.map_err(Error::kube("list ApiKeys"))?.items;
        let members = in_turn(pace, &namespace, listed);
        let reports = read_reports(&Api::namespaced(client.clone(), &namespace)).await?;
        if let Err(err) = add_up(&keys, &namespace, members.iter(), &reports, (clock)(), budget, pace).await {
            warn!(namespace = %namespace, error = %err, "usage of namespace not added up");
        }
        if !cluster_keys.is_empty() {
            for_cluster.insert(namespace, only_keys(reports, &cluster_ids));
        }
    }
    if !cluster_keys.is_empty() {
        pace.release();
        cluster::add_up(client, &cluster_keys, &for_cluster, (clock)(), budget, pace).await;
    }
    Ok(())
}

/// `keys` of `namespace` in the order `pace` gives them turns.
fn in_turn(pace: &Pace, namespace: &str, keys: Vec<ApiKey>) -> Vec<ApiKey> {
    let mut by_name: HashMap<String, ApiKey> = keys.into_iter().map(|key| (key.name_any(), key)).collect();
    let mut names: Vec<String> = by_name.keys().cloned().collect();
    names.sort_unstable();
    pace.names(namespace, names).into_iter().filter_map(|name| by_name.remove(&name)).collect()
}

/// The namespaces that have usage reports.
async fn namespaces_with_reports(client: &Client) -> Result<BTreeSet<String>, Error> {
    let reports: Api<ConfigMap> = Api::all(client.clone());
    let listed = reports
        .list_metadata(&ListParams::default().labels(LABEL_USAGE_REPORT))
        .await
        .map_err(Error::kube("list usage reports"))?;
    Ok(listed.items.iter().filter_map(ResourceExt::namespace).collect())
}

/// A list served from the API server's watch cache (`resourceVersion=0`): it may be slightly
/// stale, which is safe here, since every write carries the `resourceVersion` it was folded from.
fn any_version() -> ListParams {
    ListParams::default().match_any()
}

/// Fold the reports of `id`'s namespace into the ledgers of its ApiKeys that are due, and write
/// them (unpaced: a pass run by hand).
pub async fn pass(client: &Client, id: &KeySetId, now: Timestamp, budget: Budget) -> Result<Pass, Error> {
    let keys: Api<ApiKey> = Api::namespaced(client.clone(), &id.namespace);
    let members = keys.list(&any_version()).await.map_err(Error::kube("list ApiKeys"))?.items;
    pass_with(client, id, &members, now, budget).await
}

/// [`pass`] with the ApiKeys as read by the caller (possibly stale: such a write is refused).
pub(super) async fn pass_with(
    client: &Client,
    id: &KeySetId,
    members: &[ApiKey],
    now: Timestamp,
    budget: Budget,
) -> Result<Pass, Error> {
    let keys: Api<ApiKey> = Api::namespaced(client.clone(), &id.namespace);
    let reports = read_reports(&Api::namespaced(client.clone(), &id.namespace)).await?;
    let of_set = members.iter().filter(|k| k.spec.key_set == id.name);
    Ok(add_up(&keys, &id.namespace, of_set, &reports, now, budget, &mut Pace::unpaced()).await?.0)
}

/// Fold `reports` (of `namespace`) into each of `members` (ApiKeys of `namespace`, of any key
/// set, in the order they get their turns) and write those due, each in its turn by `pace`.
///
/// Also returns the keys folded with nothing to write (not those left without a turn).
async fn add_up<'a>(
    keys: &Api<ApiKey>,
    namespace: &str,
    members: impl Iterator<Item = &'a ApiKey>,
    reports: &NamespaceReports,
    now: Timestamp,
    budget: Budget,
    pace: &mut Pace,
) -> Result<(Pass, Vec<&'a ApiKey>), Error> {
    let live = Live::of(&reports.reports, reports.unreadable_pods.iter().cloned());
    let mut of_sets: HashMap<String, Vec<&Report>> = HashMap::new();
    let mut done = Pass::default();
    let mut unwritten = Vec::new();
    for key in members {
        let of_set = of_sets.entry(key.spec.key_set.clone()).or_insert_with(|| {
            reports_of(reports, &KeySetId { namespace: namespace.to_owned(), name: key.spec.key_set.clone() })
        });
        let stored = stored(key.status.as_ref());
        let folded = fold(stored.ledger, of_set, &key_ids(key.status.as_ref()), &live, now);
        done.waiting += folded.waiting;
        let Some(write) = status_write(stored, folded, budget, now) else {
            unwritten.push(key);
            continue;
        };
        if !pace.turn().await {
            pace.defer(namespace, &key.name_any());
            done.deferred += 1;
            continue;
        }
        let patch = usage_patch(stored, &write, key.resource_version().as_deref())?;
        done.count(write_status(keys, &key.name_any(), patch).await?);
    }
    if done.waiting > 0 {
        warn!(namespace = %namespace, waiting = done.waiting, max = MAX_SOURCES,
            "more verifier processes report a key than its ledger keeps; they are added up once others are gone");
    }
    debug!(namespace = %namespace, reports = reports.reports.len(), ?done, "usage added up");
    Ok((done, unwritten))
}

/// The reports of verifiers serving key set `id`.
fn reports_of<'a>(reports: &'a NamespaceReports, id: &KeySetId) -> Vec<&'a Report> {
    let wanted = format!("{}/{}", id.namespace, id.name);
    reports.reports.iter().filter(|r| r.key_sets.contains(&wanted)).collect()
}

impl Pass {
    fn count(&mut self, written: Written) {
        match written {
            Written::Yes => self.status_writes += 1,
            Written::Conflict => self.conflicts += 1,
            Written::Gone => {}
        }
    }
}

/// A key's usage status as stored (an ApiKey's, or the one a ClusterApiKey's status flattens).
fn stored(status: Option<&ApiKeyStatus>) -> Stored<'_> {
    Stored {
        last_used: status.and_then(|s| s.last_used_at.as_ref()).map(|t| t.0),
        usage: status.and_then(|s| s.usage.as_ref()),
        ledger: status.and_then(|s| s.usage_ledger.as_deref()),
    }
}

/// The merge patch writing `write` over `stored` under `resource_version`, the one read: only
/// `lastUsedAt`, `usage` and the ledger (as a diff, so dropped watermarks and buckets go).
fn usage_patch(
    stored: Stored<'_>,
    write: &StatusWrite,
    resource_version: Option<&str>,
) -> Result<serde_json::Value, Error> {
    let old = serde_json::to_value(stored.ledger.cloned().unwrap_or_default())?;
    let ledger = merge_diff(&old, &serde_json::to_value(&write.ledger)?);
    Ok(json!({
        "metadata": { "resourceVersion": resource_version },
        "status": { "lastUsedAt": write.last_used.map(Time), "usage": write.usage, "usageLedger": ledger },
    }))
}

/// What became of a status write.
#[derive(Clone, Copy)]
enum Written {
    Yes,
    /// The key changed since it was read: nothing was written; the next pass folds again.
    Conflict,
    /// The key is gone meanwhile.
    Gone,
}

/// Merge-patch a key's status under the `resourceVersion` the patch carries.
async fn write_status<K>(keys: &Api<K>, name: &str, patch: serde_json::Value) -> Result<Written, Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PatchParams::default() };
    match keys.patch_status(name, &params, &Patch::Merge(patch)).await {
        Ok(_) => Ok(Written::Yes),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(Written::Conflict),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(Written::Gone),
        Err(err) => Err(Error::kube("patch usage status")(err)),
    }
}

/// The key ids of every token of a key with `status` that a verifier may hold (current, next, previous).
fn key_ids(status: Option<&ApiKeyStatus>) -> Vec<KeyId> {
    let Some(status) = status else { return Vec::new() };
    [&status.current_key, &status.next_key, &status.previous_key]
        .into_iter()
        .flatten()
        .filter_map(|version| version.key_id.parse::<KeyId>().ok())
        .collect()
}

/// The namespace's reports. One report object per pod: a report claiming another pod's name is not counted.
async fn read_reports(configmaps: &Api<ConfigMap>) -> Result<NamespaceReports, Error> {
    let listed = configmaps
        .list(&ListParams::default().labels(LABEL_USAGE_REPORT))
        .await
        .map_err(Error::kube("list usage reports"))?;
    let mut out = NamespaceReports::default();
    for cm in listed.items {
        let Some(text) = cm.data.as_ref().and_then(|d| d.get(REPORT_KEY)) else { continue };
        match Report::decode(text) {
            Ok(report) if report_name(&report.pod) == cm.name_any() => out.reports.push(report),
            Ok(_) => warn!(name = %cm.name_any(), "usage report names another pod; not counted"),
            Err(err) => {
                warn!(name = %cm.name_any(), error = %err, "usage report refused");
                if let Some(pod) = cm.name_any().strip_prefix("keyward-usage-") {
                    out.unreadable_pods.push(pod.to_owned());
                }
            }
        }
    }
    Ok(out)
}
