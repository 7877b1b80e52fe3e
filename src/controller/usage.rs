//! Usage: verifiers' reports added up per key set into a persisted aggregate, and into each ApiKey's `status.usage`.
//!
//! Every `--usage-aggregate-interval` the leader, for each namespace that has
//! usage reports (ConfigMaps labelled [`LABEL_USAGE_REPORT`]) and each key set
//! of that namespace:
//!
//! 1. reads the ApiKeys of the key set (their current, next and previous key
//!    ids are the only ids that count), the namespace's reports and the key
//!    set's aggregate ConfigMap ([`aggregate_name`]);
//! 2. folds the reports into the aggregate ([`Aggregate::fold`], pure) and
//!    writes it back with a `resourceVersion` precondition: buckets and
//!    watermarks change in one atomic write, so a retried or re-read report,
//!    a conflicting writer or an operator restart never counts twice;
//! 3. derives each ApiKey's `lastUsedAt` and counts from the stored aggregate
//!    and writes them within the write budget ([`status_write`]). When the
//!    aggregate cannot be stored, only `lastUsedAt` (a maximum) is written.
//!
//! Reports are read only from the key set's own namespace, and only key ids
//! of that key set's ApiKeys count, so no verifier can change another
//! namespace's usage.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tracing::{debug, warn};

use crate::api::ApiKey;
use crate::configmap::{LABEL_MANAGED_BY, MANAGED_BY};
use crate::keyset::KeySetId;
use crate::plan::usage::{Aggregate, Budget, last_used_write, source, status_write};
use crate::token::KeyId;
use crate::usage::{LABEL_USAGE_REPORT, REPORT_KEY, Report, report_name};

use super::{Clock, Error, FIELD_MANAGER};

/// Label on each key set's usage aggregate ConfigMap; its value is the key set's name.
pub const LABEL_USAGE_AGGREGATE: &str = "keyward.dev/usage-aggregate";
/// The data key of the aggregate (JSON).
pub const AGGREGATE_KEY: &str = "aggregate.json";

/// The name of key set `name`'s aggregate: `keyward-usage.<name>`. Reports are
/// `keyward-usage-<pod>`; the dot keeps the two apart whatever a pod is called.
#[must_use]
pub fn aggregate_name(name: &str) -> String {
    format!("keyward-usage.{name}")
}

/// How usage is gathered and written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageOptions {
    /// How often reports are read and added up (`--usage-aggregate-interval`).
    pub interval: Duration,
    /// The status write budget.
    pub budget: Budget,
}

impl Default for UsageOptions {
    fn default() -> Self {
        UsageOptions { interval: Duration::from_secs(60), budget: Budget::default() }
    }
}

/// What one pass over one key set did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    /// Whether the aggregate was written.
    pub aggregate_written: bool,
    /// ApiKey status writes.
    pub status_writes: usize,
}

/// Add up the reports of every namespace that has any, every `options.interval`, until `shutdown`.
pub async fn run(client: Client, clock: Clock, options: UsageOptions, shutdown: impl Future<Output = ()>) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut tick = tokio::time::interval(options.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = tick.tick() => {
                if let Err(err) = pass_all(&client, &clock, options.budget).await {
                    warn!(error = %err, "usage pass failed; trying again at the next interval");
                }
            }
        }
    }
}

/// One pass over every namespace with reports.
pub async fn pass_all(client: &Client, clock: &Clock, budget: Budget) -> Result<(), Error> {
    let reports: Api<ConfigMap> = Api::all(client.clone());
    let listed = reports
        .list_metadata(&ListParams::default().labels(LABEL_USAGE_REPORT))
        .await
        .map_err(Error::kube("list usage reports"))?;
    let namespaces: BTreeSet<String> = listed.items.iter().filter_map(ResourceExt::namespace).collect();
    for namespace in namespaces {
        let keys: Api<ApiKey> = Api::namespaced(client.clone(), &namespace);
        let listed = keys.list(&ListParams::default()).await.map_err(Error::kube("list ApiKeys"))?;
        let sets: BTreeSet<String> = listed.items.iter().map(|k| k.spec.key_set.clone()).collect();
        for name in sets {
            let id = KeySetId { namespace: namespace.clone(), name };
            if let Err(err) = pass(client, &id, (clock)(), budget).await {
                warn!(namespace = %id.namespace, key_set = %id.name, error = %err, "usage of key set not added up");
            }
        }
    }
    Ok(())
}

/// Read the reports of `id`'s namespace into its aggregate, then write the usage of its ApiKeys.
pub async fn pass(client: &Client, id: &KeySetId, now: Timestamp, budget: Budget) -> Result<Pass, Error> {
    let keys: Api<ApiKey> = Api::namespaced(client.clone(), &id.namespace);
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &id.namespace);
    let members: Vec<ApiKey> = keys
        .list(&ListParams::default())
        .await
        .map_err(Error::kube("list ApiKeys"))?
        .items
        .into_iter()
        .filter(|k| k.spec.key_set == id.name)
        .collect();
    let ids = key_ids(&members);
    let names: BTreeSet<String> = members.iter().map(ResourceExt::name_any).collect();

    let Reports { reports, undecodable } = read_reports(&configmaps).await?;
    let stored = configmaps.get_opt(&aggregate_name(&id.name)).await.map_err(Error::kube("get usage aggregate"))?;
    let mut aggregate = match stored.as_ref().and_then(|cm| cm.data.as_ref()).and_then(|d| d.get(AGGREGATE_KEY)) {
        Some(text) => serde_json::from_str(text).unwrap_or_else(|err| {
            // Counts are lost, never invented: start again rather than stop counting.
            warn!(namespace = %id.namespace, key_set = %id.name, error = %err, "usage aggregate unreadable; starting afresh");
            Aggregate::default()
        }),
        None => Aggregate::default(),
    };
    let before = aggregate.clone();
    let wanted = format!("{}/{}", id.namespace, id.name);
    for report in reports.iter().filter(|r| r.key_sets.contains(&wanted)) {
        aggregate.fold(report, &ids, now);
    }
    // A watermark is dropped only when its (pod, epoch) report is gone: a report that does not
    // list this key set right now, or cannot be read right now, keeps its watermark, so that it
    // is not counted again from zero later.
    let mut live: BTreeSet<String> = reports.iter().map(source).collect();
    live.extend(
        aggregate.consumed.keys().filter(|s| undecodable.iter().any(|pod| s.starts_with(&format!("{pod}/")))).cloned(),
    );
    aggregate.prune(&live, &names, now);

    let mut done = Pass::default();
    if aggregate != before
        && let Err(err) = write_aggregate(&configmaps, id, stored.as_ref(), &aggregate).await
    {
        // Counts come only from a stored aggregate, so that nothing is counted twice. lastUsedAt is
        // a maximum, never counted twice: it still follows the reports, so that keys in use do not
        // expire as unused while the aggregate cannot be stored (too large, a conflict).
        for key in &members {
            let stored_last = key.status.as_ref().and_then(|s| s.last_used_at.as_ref()).map(|t| t.0);
            let last_used = aggregate.usage(&key.name_any(), now).and_then(|(last, _)| last);
            if let Some(moved) = last_used_write(stored_last, last_used, budget.last_used_step) {
                write_status(&keys, &key.name_any(), json!({ "status": { "lastUsedAt": Time(moved) } })).await?;
            }
        }
        return Err(err);
    }
    done.aggregate_written = aggregate != before;
    for key in &members {
        let Some((last_used, usage)) = aggregate.usage(&key.name_any(), now) else { continue };
        let status = key.status.as_ref();
        let stored_last = status.and_then(|s| s.last_used_at.as_ref()).map(|t| t.0);
        let stored_usage = status.and_then(|s| s.usage.as_ref());
        let Some((last_used, usage)) = status_write(stored_last, stored_usage, last_used, &usage, budget, now) else {
            continue;
        };
        let patch = json!({ "status": { "lastUsedAt": last_used.map(Time), "usage": usage } });
        if write_status(&keys, &key.name_any(), patch).await? {
            done.status_writes += 1;
        }
    }
    debug!(namespace = %id.namespace, key_set = %id.name, reports = reports.len(), ?done, "usage added up");
    Ok(done)
}

/// Merge-patch an ApiKey's status; `false` if it is gone meanwhile (the next pass forgets it).
async fn write_status(keys: &Api<ApiKey>, name: &str, patch: serde_json::Value) -> Result<bool, Error> {
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PatchParams::default() };
    match keys.patch_status(name, &params, &Patch::Merge(patch)).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(err) => Err(Error::kube("patch usage status")(err)),
    }
}

/// Key id → ApiKey name, for every token of the key set's ApiKeys that a verifier may hold.
fn key_ids(members: &[ApiKey]) -> BTreeMap<KeyId, String> {
    let mut ids = BTreeMap::new();
    for key in members {
        let Some(status) = &key.status else { continue };
        for version in [&status.current_key, &status.next_key, &status.previous_key].into_iter().flatten() {
            if let Ok(id) = version.key_id.parse::<KeyId>() {
                ids.insert(id, key.name_any());
            }
        }
    }
    ids
}

/// A namespace's usage reports.
struct Reports {
    /// The readable ones stored under their own pod's name.
    reports: Vec<Report>,
    /// Pods whose report could not be read.
    undecodable: Vec<String>,
}

/// The namespace's reports. One report object per pod: a report claiming another pod's name is not counted.
async fn read_reports(configmaps: &Api<ConfigMap>) -> Result<Reports, Error> {
    let listed = configmaps
        .list(&ListParams::default().labels(LABEL_USAGE_REPORT))
        .await
        .map_err(Error::kube("list usage reports"))?;
    let mut out = Reports { reports: Vec::new(), undecodable: Vec::new() };
    for cm in listed.items {
        let Some(text) = cm.data.as_ref().and_then(|d| d.get(REPORT_KEY)) else { continue };
        match Report::decode(text) {
            Ok(report) if report_name(&report.pod) == cm.name_any() => out.reports.push(report),
            Ok(_) => warn!(name = %cm.name_any(), "usage report names another pod; not counted"),
            Err(err) => {
                warn!(name = %cm.name_any(), error = %err, "usage report refused");
                if let Some(pod) = cm.name_any().strip_prefix("keyward-usage-") {
                    out.undecodable.push(pod.to_owned());
                }
            }
        }
    }
    Ok(out)
}

/// Create or replace the aggregate; a replace carries the `resourceVersion` read, so a concurrent writer makes it fail (409).
async fn write_aggregate(
    configmaps: &Api<ConfigMap>,
    id: &KeySetId,
    stored: Option<&ConfigMap>,
    aggregate: &Aggregate,
) -> Result<(), Error> {
    let configmap = ConfigMap {
        metadata: ObjectMeta {
            name: Some(aggregate_name(&id.name)),
            namespace: Some(id.namespace.clone()),
            labels: Some(BTreeMap::from([
                (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
                (LABEL_USAGE_AGGREGATE.to_owned(), id.name.clone()),
            ])),
            resource_version: stored.and_then(|cm| cm.metadata.resource_version.clone()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(AGGREGATE_KEY.to_owned(), serde_json::to_string(aggregate)?)])),
        ..ConfigMap::default()
    };
    let params = PostParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PostParams::default() };
    match stored {
        Some(_) => configmaps
            .replace(&aggregate_name(&id.name), &params, &configmap)
            .await
            .map_err(Error::kube("replace usage aggregate"))?,
        None => configmaps.create(&params, &configmap).await.map_err(Error::kube("create usage aggregate"))?,
    };
    Ok(())
}
