//! ClusterApiKeys' usage: the reports of every namespace a key is published to, in its own ledger.
//!
//! Part of the usage pass ([`super::pass_all`]): after the namespaces' ApiKeys, with the reports
//! each namespace's pass read (trimmed to the cluster keys' key ids), each ClusterApiKey is
//! folded by [`plan::usage::cluster`](crate::plan::usage::cluster) (which namespaces and key set
//! count, namespace-qualified watermarks) and written like an ApiKey: the same budget, one merge
//! patch of `lastUsedAt`, `usage` and `usageLedger` on `clusterapikeys/status` carrying the
//! `resourceVersion` read, so a conflict (409) is folded again at the next pass, never counted
//! twice. Their writes take turns by the same pace as the ApiKeys', after them. From the
//! ClusterApiKey controller's store (every key without its ledger, [`Source`]), only the keys
//! that may be written are read, a GET each (`add_up_due`); until it is filled, every key is
//! listed (`list`). Without the ClusterApiKey CRD there is nothing to do.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use jiff::Timestamp;
use kube::api::GetParams;
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};
use tracing::{debug, warn};

use crate::api::ClusterApiKey;
use crate::plan::usage::cluster::{ByNamespace, counted, fold, live, only_keys};
use crate::plan::usage::due::{Cached, may_write};
use crate::plan::usage::{Budget, MAX_SOURCES, status_write};
use crate::token::KeyId;

use super::pace::Pace;
use super::{Error, Pass, any_version, namespaces_with_reports, read_reports, stored, usage_patch, write_status};

/// Where the usage pass finds the ClusterApiKey controller's store (every key, without its
/// ledger: [`crate::controller::cluster::without_ledger`]) once its first LIST is in; None
/// until then, or without the CRD.
pub type Source = Arc<dyn Fn() -> Option<Store<ClusterApiKey>> + Send + Sync>;

/// The cluster keys in `store` (without ledgers).
pub(super) fn cached(store: &Store<ClusterApiKey>) -> Vec<ClusterApiKey> {
    store.state().iter().map(|key| (**key).clone()).collect()
}

/// Every ClusterApiKey (from the watch cache). None when the CRD is not installed, or when they
/// cannot be listed (said in the log): ApiKeys are added up all the same.
pub(super) async fn list(client: &Client) -> Vec<ClusterApiKey> {
    match Api::<ClusterApiKey>::all(client.clone()).list(&any_version()).await {
        Ok(listed) => listed.items,
        Err(kube::Error::Api(status)) if status.code == 404 => Vec::new(),
        Err(err) => {
            warn!(error = %err, "ClusterApiKeys not listed; their usage is added up at a later pass");
            Vec::new()
        }
    }
}

/// The key ids of every token of every key in `keys`.
pub(super) fn key_ids(keys: &[ClusterApiKey]) -> BTreeSet<KeyId> {
    keys.iter().flat_map(key_ids_of).collect()
}

fn key_ids_of(key: &ClusterApiKey) -> Vec<KeyId> {
    super::key_ids(key.status.as_ref().map(|s| &s.key))
}

/// Fold the reports `seen` (every namespace with reports) into each of `keys` and write those
/// due, each in its turn by `pace` (from the key the last pass stopped at).
pub(super) async fn add_up(
    client: &Client,
    keys: &[ClusterApiKey],
    seen: &ByNamespace,
    now: Timestamp,
    budget: Budget,
    pace: &mut Pace,
) -> Pass {
    let api: Api<ClusterApiKey> = Api::all(client.clone());
    let live = live(seen);
    let mut done = Pass::default();
    let by_name: BTreeMap<String, &ClusterApiKey> = keys.iter().map(|key| (key.name_any(), key)).collect();
    let order = pace.names("", by_name.keys().cloned());
    for key in order.iter().filter_map(|name| by_name.get(name)) {
        let Some(status) = &key.status else { continue };
        let counted = counted(seen, &status.namespaces, &key.spec.key.key_set);
        let stored = stored(Some(&status.key));
        let folded = fold(stored.ledger, &counted, &key_ids_of(key), &live, now);
        done.waiting += folded.waiting;
        let Some(write) = status_write(stored, folded, budget, now) else { continue };
        if !pace.turn().await {
            pace.defer("", &key.name_any());
            done.deferred += 1;
            continue;
        }
        let written = match usage_patch(stored, &write, key.resource_version().as_deref()) {
            Ok(patch) => write_status(&api, &key.name_any(), patch).await,
            Err(err) => Err(err),
        };
        match written {
            Ok(written) => done.count(written),
            Err(err) => warn!(name = %key.name_any(), error = %err, "usage of ClusterApiKey not written"),
        }
    }
    if done.waiting > 0 {
        warn!(
            waiting = done.waiting,
            max = MAX_SOURCES,
            "more verifier processes report a ClusterApiKey than its ledger keeps; they are added up once others are gone"
        );
    }
    debug!(keys = keys.len(), namespaces = seen.len(), ?done, "usage of ClusterApiKeys added up");
    done
}

/// [`add_up`] from `slim` (the store's keys, without ledgers): only the keys whose status may be
/// written now ([`may_write`], from their key ids, `lastUsedAt`, `usage`, whether they have a
/// ledger, and the reports that count for them) are read, a GET each, and folded and written
/// as by [`add_up`], under the `resourceVersion` read. A stale store costs a read or a pass of
/// delay, never a count twice. Also returns the GETs.
pub(super) async fn add_up_due(
    client: &Client,
    slim: &[ClusterApiKey],
    seen: &ByNamespace,
    now: Timestamp,
    budget: Budget,
    pace: &mut Pace,
) -> (Pass, usize) {
    let api: Api<ClusterApiKey> = Api::all(client.clone());
    let mut read = Vec::new();
    let mut gets = 0;
    for key in slim {
        let Some(status) = &key.status else { continue };
        let reports: Vec<_> =
            counted(seen, &status.namespaces, &key.spec.key.key_set).into_iter().map(|(_, r)| r).collect();
        let ids = key_ids_of(key);
        let facts = Cached {
            last_used: status.key.last_used_at.as_ref().map(|t| t.0),
            usage: status.key.usage.as_ref(),
            ids: &ids,
            ledger: status.key.usage_ledger.is_some(),
        };
        if may_write(facts, &reports, budget, now).is_none() {
            continue;
        }
        gets += 1;
        match api.get_with(&key.name_any(), &GetParams::any()).await {
            Ok(full) => read.push(full),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(err) => {
                warn!(name = %key.name_any(), error = %err, "ClusterApiKey not read; its usage is added up at a later pass");
            }
        }
    }
    (add_up(client, &read, seen, now, budget, pace).await, gets)
}

/// The cluster keys' part of a pass on its own (unpaced): read every namespace's reports and fold
/// them into `keys` as read by the caller (possibly stale: such a write is refused).
pub async fn pass_with(client: &Client, keys: &[ClusterApiKey], now: Timestamp, budget: Budget) -> Result<Pass, Error> {
    let ids = key_ids(keys);
    let mut seen = ByNamespace::new();
    for namespace in namespaces_with_reports(client).await? {
        let reports = read_reports(&Api::namespaced(client.clone(), &namespace)).await?;
        seen.insert(namespace, only_keys(reports, &ids));
    }
    Ok(add_up(client, keys, &seen, now, budget, &mut Pace::unpaced()).await)
}
