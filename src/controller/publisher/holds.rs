//! Tokens held in memory: a new key's token is listed in its key set from
//! the publisher's memory until the key's stored status names it.

use std::collections::{HashMap, HashSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{Publisher, stored};
use crate::api::ApiKey;
use crate::controller::{Error, namespace};
use crate::keyset::{KeySetId, Record};
use crate::plan::Held;

/// A new key's token listed from memory until its status names it ([`Held`]).
pub(super) struct HeldEntry {
    namespace: String,
    held: Held,
}

impl Publisher {
    pub(super) fn holds(&self) -> std::sync::MutexGuard<'_, HashMap<String, HeldEntry>> {
        // Poisoning only means another task panicked mid-update; entries are whole values.
        self.holds.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The token held for the ApiKey with `uid`, with `publishedAt` once a
    /// rebuild wrote its hash into the key set.
    #[must_use]
    pub fn held(&self, uid: &str) -> Option<Held> {
        self.holds().get(uid).map(|e| e.held.clone())
    }

    /// List `held` as `key`'s current token while its stored status names
    /// none, or stop listing anything for it (`None`). Call it only once the
    /// finalizer is on `key` and the token is in its Secret.
    ///
    /// A hash the key set already holds when it is first held (a restart
    /// after publication) counts as published from now: later than the truth,
    /// never earlier.
    pub async fn hold(&self, key: &ApiKey, held: Option<&Held>) -> Result<(), Error> {
        let uid = key.metadata.uid.as_deref().ok_or(Error::MissingField("metadata.uid"))?;
        let Some(held) = held else {
            self.holds().remove(uid);
            return Ok(());
        };
        let same = |e: &HeldEntry| {
            e.held.version.hash == held.version.hash
                && e.held.key_set == held.key_set
                && e.held.secret_name == held.secret_name
        };
        if self.holds().get(uid).is_some_and(same) {
            return Ok(());
        }
        let id = KeySetId { namespace: namespace(key)?.to_owned(), name: held.key_set.clone() };
        // Under the set's lock, so that no rebuild of the set runs between the look and the insert.
        let set = self.set(&id);
        let mut state = set.lock().await;
        if state.records.is_none() {
            let shards = stored::read(&self.client, &id).await?;
            state.records = Some(stored::readable_records(&id, &shards));
        }
        let hash = held.hash();
        let already = state.records.iter().flatten().any(|r| Some(r.hash) == hash);
        let mut held = held.clone();
        held.version.published_at = already.then(|| Time((self.clock)()));
        self.holds().insert(uid.to_owned(), HeldEntry { namespace: id.namespace.clone(), held });
        Ok(())
    }

    /// After `records` were written (or found stored) for `id`: note when each
    /// token held for `id` was first written, and forget it when it is not.
    pub(super) fn note_published(&self, id: &KeySetId, records: &[Record]) {
        let now = Time((self.clock)());
        let written: HashSet<_> = records.iter().map(|r| r.hash).collect();
        for entry in self.holds().values_mut() {
            if entry.namespace == id.namespace && entry.held.key_set == id.name {
                if entry.held.hash().is_some_and(|h| written.contains(&h)) {
                    entry.held.version.published_at.get_or_insert_with(|| now.clone());
                } else {
                    entry.held.version.published_at = None;
                }
            }
        }
    }

    /// The tokens held in `id`'s namespace, by uid. Taken before the ApiKeys
    /// are listed: a token released after this copy was recorded in status
    /// before it was released, so the list that follows shows it.
    pub(super) fn held_in(&self, id: &KeySetId) -> HashMap<String, Held> {
        let holds = self.holds();
        holds
            .iter()
            .filter(|(_, e)| e.namespace == id.namespace)
            .map(|(uid, e)| (uid.clone(), e.held.clone()))
            .collect()
    }

    /// Forget tokens held for `id` whose key is gone or whose stored status
    /// now names a current token (status is the record from then on).
    pub(super) fn forget_recorded(&self, id: &KeySetId, unrecorded: &HashSet<String>) {
        self.holds()
            .retain(|uid, e| e.namespace != id.namespace || e.held.key_set != id.name || unrecorded.contains(uid));
    }
}
