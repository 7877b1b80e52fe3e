//! The usage pass from the operator's watch cache: only the keys it may write are read.
//!
//! The operator's ApiKey store ([`run`](super::super::run)) keeps, besides identity and
//! state, what [`plan::usage::due`](crate::plan::usage::due) needs to tell whether a key's
//! status may be written now: its key set, key ids, `lastUsedAt` and `status.usage`, and of its
//! ledger only whether it has one. Each pass, per namespace with reports, reads the reports (as
//! before), picks the keys that may be written, and reads only those, with their ledgers: one GET each, or one
//! list of the namespace when most are due (the first pass after a start, or keys written
//! in step). What is read is folded and written exactly as by [`super::pass_all`], under the
//! `resourceVersion` read, so a stale cache can only delay a write (the reports are
//! cumulative) or cost a read, never count twice. Keys read with nothing to write are
//! remembered ([`Quiet`]) and not read again while nothing they depend on changed.
//!
//! ClusterApiKeys get the same treatment from the ClusterApiKey controller's store, which keeps
//! every key without its ledger ([`cluster::Source`]): only those that may be written are read,
//! a GET each (`cluster::add_up_due`); until that store is filled they are listed in full.
//!
//! The pace ([`Pace`]) bounds what is read too: a namespace's due keys beyond the turns left in
//! the pass are not read but left for a later pass (which starts with them), like a write
//! without a turn.

use std::collections::{BTreeSet, HashMap};

use futures::FutureExt;
use jiff::Timestamp;
use kube::api::GetParams;
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};
use tracing::warn;

use super::cluster;
use super::pace::Pace;
use super::{Error, add_up, any_version, key_ids, namespaces_with_reports, read_reports, reports_of};
use crate::api::ApiKey;
use crate::controller::Clock;
use crate::keyset::KeySetId;
use crate::plan::usage::cluster::{ByNamespace, NamespaceReports, only_keys};
use crate::plan::usage::due::{Cached, Due, Quiet, fingerprint, has_counts, may_write, time_due};
use crate::plan::usage::{Budget, Live};

/// The operator's ApiKey store and what the usage pass remembers between passes.
pub struct Cache {
    store: Store<ApiKey>,
    /// The ClusterApiKey controller's store, once filled; without it cluster keys are listed.
    cluster: Option<cluster::Source>,
    /// Keys read with nothing to write, by namespace and name.
    quiet: HashMap<(String, String), Quiet>,
}

/// What one pass read and wrote (requests to the API server for ApiKeys; reports are read as before).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reads {
    /// ApiKeys in the cache, in namespaces with reports.
    pub cached: usize,
    /// Keys that may be written, so read.
    pub due: usize,
    /// Keys due by time but not read: read before with nothing to write, and nothing changed.
    pub quiet: usize,
    /// GETs of one ApiKey.
    pub gets: usize,
    /// Lists of a namespace's ApiKeys.
    pub lists: usize,
    /// GETs of one ClusterApiKey (0 when they were listed, without the controller's store).
    pub cluster_gets: usize,
    /// Status writes.
    pub status_writes: usize,
    /// Writes refused because the key changed since it was read.
    pub conflicts: usize,
    /// Due keys left for a later pass by the pace: not read, or read and not written.
    pub deferred: usize,
}

impl Cache {
    /// Passes over `store`, which the operator's ApiKey watch fills.
    #[must_use]
    pub fn new(store: Store<ApiKey>) -> Cache {
        Cache { store, cluster: None, quiet: HashMap::new() }
    }

    /// Cluster keys from `source` (the ClusterApiKey controller's store, without ledgers) once it
    /// is filled: only those that may be written are read.
    #[must_use]
    pub fn with_cluster(self, source: cluster::Source) -> Cache {
        Cache { cluster: Some(source), ..self }
    }

    /// Whether the store holds every ApiKey (its first list is done).
    #[must_use]
    pub fn ready(&self) -> bool {
        self.store.wait_until_ready().now_or_never().is_some_and(|ready| ready.is_ok())
    }

    /// [`super::pass_all`], reading only the ApiKeys that may be written (and have a turn by `pace`).
    pub async fn pass_all(
        &mut self,
        client: &Client,
        clock: &Clock,
        budget: Budget,
        pace: &mut Pace,
    ) -> Result<Reads, Error> {
        let cluster_store = self.cluster.as_ref().and_then(|source| source());
        let cluster_keys = match &cluster_store {
            Some(store) => cluster::cached(store),
            None => cluster::list(client).await,
        };
        pace.start(cluster_keys.len());
        let cluster_ids = cluster::key_ids(&cluster_keys);
        let mut for_cluster = ByNamespace::new();
        let mut reads = Reads::default();
        let mut quiet = HashMap::new();
        let mut passed = Passed { quiet: &mut quiet, reads: &mut reads, pace };
        let with_reports = namespaces_with_reports(client).await?;
        let mut namespaces = self.namespaces_with_usage();
        namespaces.extend(with_reports.iter().cloned());
        for namespace in passed.pace.namespaces(namespaces) {
            if !with_reports.contains(&namespace) {
                // No report any more: counts still leave their windows, ledgers are still pruned.
                let none = NamespaceReports::default();
                self.namespace(client, &namespace, &none, budget, (clock)(), &mut passed).await?;
                continue;
            }
            let reports = read_reports(&Api::namespaced(client.clone(), &namespace)).await?;
            let now = (clock)();
            self.namespace(client, &namespace, &reports, budget, now, &mut passed).await?;
            if !cluster_keys.is_empty() {
                for_cluster.insert(namespace, only_keys(reports, &cluster_ids));
            }
        }
        self.quiet = quiet;
        if !cluster_keys.is_empty() {
            pace.release();
            let done = if cluster_store.is_some() {
                let (done, gets) =
                    cluster::add_up_due(client, &cluster_keys, &for_cluster, (clock)(), budget, pace).await;
                reads.cluster_gets += gets;
                done
            } else {
                cluster::add_up(client, &cluster_keys, &for_cluster, (clock)(), budget, pace).await
            };
            reads.deferred += done.deferred;
        }
        Ok(reads)
    }

    /// The namespaces of keys with usage status (counts or a ledger) in the cache: visited by a
    /// pass even when they have no report (any more), so that their counts leave the windows and
    /// their ledgers are pruned like any other (what may be written is still [`may_write`]'s).
    fn namespaces_with_usage(&self) -> BTreeSet<String> {
        let with_usage = |key: &ApiKey| {
            key.status.as_ref().is_some_and(|s| s.usage_ledger.is_some() || has_counts(s.usage.as_ref()))
        };
        self.store.state().iter().filter(|key| with_usage(key)).filter_map(|key| key.namespace()).collect()
    }

    /// One namespace: pick, read, fold and write; remember into `quiet` the keys with nothing to write.
    async fn namespace(
        &self,
        client: &Client,
        namespace: &str,
        reports: &NamespaceReports,
        budget: Budget,
        now: Timestamp,
        passed: &mut Passed<'_>,
    ) -> Result<(), Error> {
        let Passed { quiet, reads, pace } = passed;
        let live = Live::of(&reports.reports, reports.unreadable_pods.iter().cloned());
        let cached = self.store.state_filter(|key| key.namespace().as_deref() == Some(namespace));
        reads.cached += cached.len();
        let mut due = BTreeSet::new();
        for key in &cached {
            let id = KeySetId { namespace: namespace.to_owned(), name: key.spec.key_set.clone() };
            let of_set = reports_of(reports, &id);
            let ids = key_ids(key.status.as_ref());
            let status = key.status.as_ref();
            let facts = Cached {
                last_used: status.and_then(|s| s.last_used_at.as_ref()).map(|t| t.0),
                usage: status.and_then(|s| s.usage.as_ref()),
                ids: &ids,
                ledger: status.is_some_and(|s| s.usage_ledger.is_some()),
            };
            let name = (namespace.to_owned(), key.name_any());
            match may_write(facts, &of_set, budget, now) {
                None => {}
                Some(Due::LastUsed) => {
                    due.insert(key.name_any());
                }
                Some(Due::Counts) => match self.quiet.get(&name) {
                    Some(q) if q.still(key.resource_version().as_deref(), fingerprint(&of_set, &ids, &live), now) => {
                        reads.quiet += 1;
                        quiet.insert(name, q.clone());
                    }
                    _ => {
                        due.insert(key.name_any());
                    }
                },
            }
        }
        // In turn, and no more than the pass has turns for: the rest waits for a later pass.
        let mut in_turn = pace.names(namespace, due);
        for name in in_turn.split_off(pace.room().min(in_turn.len())) {
            pace.defer(namespace, &name);
            reads.deferred += 1;
        }
        reads.due += in_turn.len();
        if in_turn.is_empty() {
            return Ok(());
        }
        let api: Api<ApiKey> = Api::namespaced(client.clone(), namespace);
        let members = read(&api, &in_turn, cached.len(), reads).await?;
        let (done, unwritten) = match add_up(&api, namespace, members.iter(), reports, now, budget, pace).await {
            Ok(added) => added,
            Err(err) => {
                warn!(namespace = %namespace, error = %err, "usage of namespace not added up");
                return Ok(());
            }
        };
        reads.status_writes += done.status_writes;
        reads.conflicts += done.conflicts;
        reads.deferred += done.deferred;
        for key in unwritten {
            let status = key.status.as_ref();
            let (Some(rv), true) =
                (key.resource_version(), time_due(status.and_then(|s| s.usage.as_ref()), budget, now))
            else {
                continue;
            };
            let id = KeySetId { namespace: namespace.to_owned(), name: key.spec.key_set.clone() };
            let print = fingerprint(&reports_of(reports, &id), &key_ids(status), &live);
            quiet.insert((namespace.to_owned(), key.name_any()), Quiet::at(rv, print, now));
        }
        Ok(())
    }
}

/// What a pass carries from namespace to namespace.
struct Passed<'a> {
    /// Keys read with nothing to write.
    quiet: &'a mut HashMap<(String, String), Quiet>,
    reads: &'a mut Reads,
    pace: &'a mut Pace,
}

/// Read the keys named `due` of the namespace `api` (which has `cached` keys), in that order: a
/// GET each, or one list when they are most of it. Keys gone meanwhile are left out.
async fn read(api: &Api<ApiKey>, due: &[String], cached: usize, reads: &mut Reads) -> Result<Vec<ApiKey>, Error> {
    if due.len() * 2 > cached {
        reads.lists += 1;
        let listed = api.list(&any_version()).await.map_err(Error::kube("list ApiKeys"))?;
        let mut by_name: HashMap<String, ApiKey> = listed.items.into_iter().map(|key| (key.name_any(), key)).collect();
        return Ok(due.iter().filter_map(|name| by_name.remove(name)).collect());
    }
    let mut out = Vec::with_capacity(due.len());
    for name in due {
        reads.gets += 1;
        match api.get_with(name, &GetParams::any()).await {
            Ok(key) => out.push(key),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(err) => return Err(Error::kube("get ApiKey")(err)),
        }
    }
    Ok(out)
}
