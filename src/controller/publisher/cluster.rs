//! Organisation-wide keys in a namespace's key set: every ClusterApiKey that selects the
//! namespace and names the key set is rebuilt into it with the namespace's own ApiKeys.
//!
//! The namespace's labels and the ClusterApiKeys are read afresh on each rebuild (a GET and
//! a LIST), like classes: a namespace whose labels stopped matching must never be rebuilt
//! from a stale copy. A namespace that does not exist or is being deleted carries no
//! cluster key. The ClusterApiKey CRD not being installed reads as no cluster keys.
//!
//! A new cluster key's token is held in memory until its status names it, as an ApiKey's is
//! (`holds.rs`); its publication time is set by the key's reconcile once *every* selected
//! key set carries the hash ([`Publisher::note_cluster_published`]), not by one rebuild.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::{Api, Client, ResourceExt};
use tracing::debug;

use super::Publisher;
use crate::api::ClusterApiKey;
use crate::controller::Error;
use crate::keyset::{KeySetId, Record};
use crate::plan::{Held, cluster, records_with};

impl Publisher {
    /// The records of every ClusterApiKey published in `id` at `now`.
    pub(super) async fn cluster_records(&self, id: &KeySetId, now: Timestamp) -> Result<Vec<Record>, Error> {
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
