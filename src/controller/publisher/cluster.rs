//! Organisation-wide keys in a namespace's key set: every ClusterApiKey that selects the
//! namespace and names the key set is rebuilt into it with the namespace's own ApiKeys.
//!
//! Whether a cluster key goes into a key set is decided only from the namespace's labels and
//! the ClusterApiKeys read afresh for that rebuild (a GET and a LIST), like classes: a
//! namespace whose labels stopped matching must never be rebuilt from a stale copy. A
//! namespace that does not exist or is being deleted carries no cluster key. The
//! ClusterApiKey CRD not being installed reads as no cluster keys.
//!
//! Most rebuilds are of namespaces no cluster key selects, and need neither read. Once the
//! ClusterApiKey controller's caches are filled ([`Publisher::use_cluster_caches`]: its
//! ClusterApiKey store and its Namespace metadata store), a rebuild first asks them whether
//! any cluster key could be in the set; when none could, it reads nothing and carries none.
//! The caches may lag the API by a watch event, and they only ever *skip* reads: a stale
//! "none" leaves a key out (never in), which is the direction a namespace leaving the
//! selector goes anyway, and a key or namespace that has just started matching is added by
//! the key's reconcile, which the same watch event triggers after the cache has it
//! (kube-runtime updates a controller's store before it reconciles). A stale "maybe" costs
//! the two reads of before. So a stale cache never publishes a key into a namespace that
//! left the selector: only the fresh reads can put a key in.
//!
//! A new cluster key's token is held in memory until its status names it, as an ApiKey's is
//! (`holds.rs`); its publication time is set by the key's reconcile once *every* selected
//! key set carries the hash ([`Publisher::note_cluster_published`]), not by one rebuild.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};
use tracing::debug;

use super::Publisher;
use crate::api::ClusterApiKey;
use crate::controller::Error;
use crate::keyset::{KeySetId, Record};
use crate::plan::{Held, cluster, records_with};

/// What the ClusterApiKey controller knows, for rebuilds to skip the reads of cluster keys.
pub(super) enum Known {
    /// The ClusterApiKey CRD is not installed: the controller does not run, no key set carries a cluster key.
    NoClusterKeys,
    /// The controller's caches, used once both `filled` flags are set (their first LIST done).
    Caches { keys: Store<ClusterApiKey>, namespaces: Store<PartialObjectMeta<Namespace>>, filled: [Arc<AtomicBool>; 2] },
}

impl Known {
    /// Whether a cluster key could be in `id`, by the caches: `false` only when the namespace is
    /// known and no cached ClusterApiKey names the key set and selects the namespace's labels.
    fn may_carry(&self, id: &KeySetId) -> bool {
        let Known::Caches { keys, namespaces, filled } = self else { return false };
        if !filled.iter().all(|f| f.load(Ordering::Acquire)) {
            return true;
        }
        let Some(namespace) = namespaces.get(&ObjectRef::new(&id.namespace)) else { return true };
        if namespace.metadata.deletion_timestamp.is_some() {
            return false;
        }
        let labels = namespace.metadata.labels.clone().unwrap_or_default();
        keys.state().iter().any(|k| k.spec.key.key_set == id.name && cluster::selects(k, &labels))
    }
}

impl Publisher {
    /// Skip the reads of cluster keys for key sets that, by `keys` (the ClusterApiKey
    /// controller's store) and `namespaces` (its Namespace metadata store), no cluster key
    /// could be in, from the moment both `filled` flags are set (each store's first LIST is
    /// in). A later call changes nothing.
    pub fn use_cluster_caches(
        &self,
        keys: Store<ClusterApiKey>,
        namespaces: Store<PartialObjectMeta<Namespace>>,
        filled: [Arc<AtomicBool>; 2],
    ) {
        let _ = self.cluster_known.set(Known::Caches { keys, namespaces, filled });
    }

    /// The ClusterApiKey controller's store of keys (without their ledgers), once its first LIST
    /// is in: what the usage pass decides from which cluster keys to read. None before, or
    /// without the CRD.
    #[must_use]
    pub fn cluster_keys_cache(&self) -> Option<Store<ClusterApiKey>> {
        match self.cluster_known.get()? {
            Known::Caches { keys, filled, .. } if filled[0].load(Ordering::Acquire) => Some(keys.clone()),
            _ => None,
        }
    }

    /// The ClusterApiKey CRD is not installed: rebuilds read no cluster keys.
    pub fn no_cluster_keys(&self) {
        let _ = self.cluster_known.set(Known::NoClusterKeys);
    }

    /// The records of every ClusterApiKey published in `id` at `now`.
    pub(super) async fn cluster_records(&self, id: &KeySetId, now: Timestamp) -> Result<Vec<Record>, Error> {
        if self.cluster_known.get().is_some_and(|known| !known.may_carry(id)) {
            return Ok(Vec::new());
        }
        let Some(labels) = live_namespace_labels(&self.client, &id.namespace).await? else { return Ok(Vec::new()) };
        let keys = list(&self.client).await?;
        let holds = self.cluster_holds();
        Ok(keys
            .iter()
            .filter(|k| k.spec.key.key_set == id.name && cluster::selects(k, &labels))
            .flat_map(|k| {
                let held = k.metadata.uid.as_deref().and_then(|uid| holds.get(uid));
                records_with(&cluster::view(k), held, &cluster::CLASS, self.default_grace, now)
            })
            .collect())
    }

    fn cluster_holds(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Held>> {
        // Poisoning only means another task panicked mid-update; entries are whole values.
        self.cluster_holds.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The token held for the ClusterApiKey with `uid`, with `publishedAt` once every
    /// selected key set carried it.
    #[must_use]
    pub fn cluster_held(&self, uid: &str) -> Option<Held> {
        self.cluster_holds().get(uid).cloned()
    }

    /// List `held` as the ClusterApiKey `uid`'s current token while its status names none,
    /// or stop (`None`). The same token held again keeps its publication time.
    pub fn hold_cluster(&self, uid: &str, held: Option<&Held>) {
        let mut holds = self.cluster_holds();
        let Some(held) = held else {
            holds.remove(uid);
            return;
        };
        let same = holds.get(uid).is_some_and(|h| {
            h.version.hash == held.version.hash && h.key_set == held.key_set && h.secret_name == held.secret_name
        });
        if !same {
            let mut held = held.clone();
            held.version.published_at = None;
            holds.insert(uid.to_owned(), held);
        }
    }

    /// After a reconcile found `everywhere` (the key's records every selected key set carries):
    /// the held token counts as published from `now` when it is among them, and not when not.
    pub fn note_cluster_published(&self, uid: &str, everywhere: &[Record], now: Timestamp) {
        if let Some(held) = self.cluster_holds().get_mut(uid) {
            if held.hash().is_some_and(|h| everywhere.iter().any(|r| r.hash == h)) {
                held.version.published_at.get_or_insert(Time(now));
            } else {
                held.version.published_at = None;
            }
        }
    }

    /// The records of ClusterApiKey `name` in `id` as last published.
    pub async fn published_by_cluster_key(&self, id: &KeySetId, name: &str) -> Result<Vec<Record>, Error> {
        self.published_where(id, |r| r.namespace == crate::api::CLUSTER_OWNER && r.name == name).await
    }
}

/// The labels of `namespace`, or `None` when it does not exist or is being deleted.
pub(crate) async fn live_namespace_labels(
    client: &Client,
    namespace: &str,
) -> Result<Option<BTreeMap<String, String>>, Error> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let found = namespaces.get_metadata_opt(namespace).await.map_err(Error::kube("get Namespace"))?;
    Ok(found.filter(|ns| ns.metadata.deletion_timestamp.is_none()).map(|ns| ns.metadata.labels.unwrap_or_default()))
}

/// Every stored ClusterApiKey the types accept; one they refuse is left out (its own reconcile
/// fails on it), and no CRD reads as none.
pub(crate) async fn list(client: &Client) -> Result<Vec<ClusterApiKey>, Error> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ApiResource::erase::<ClusterApiKey>(&()));
    let objects = match api.list(&ListParams::default()).await {
        Ok(list) => list.items,
        Err(kube::Error::Api(status)) if status.code == 404 => return Ok(Vec::new()),
        Err(e) => return Err(Error::kube("list ClusterApiKeys")(e)),
    };
    Ok(objects
        .into_iter()
        .filter_map(|object| {
            let name = object.name_any();
            match serde_json::to_value(&object).and_then(serde_json::from_value::<ClusterApiKey>) {
                Ok(key) => Some(key),
                Err(e) => {
                    debug!(name, error = %e, "ClusterApiKey does not decode; left out of key sets");
                    None
                }
            }
        })
        .collect())
}
