//! The key-set publisher: the one writer of each key set's ConfigMap shards.
//!
//! A key set is rebuilt as a whole from the stored ApiKeys of its namespace
//! and name ([`records_for`] each), so that what is published follows from
//! persisted status alone. Requests are coalesced: many ApiKeys changing at
//! once cause one rebuild per coalescing window. Urgent changes (access taken
//! away) call [`Publisher::publish_now`] and wait for the write. A rebuild
//! that would produce the bytes already stored writes nothing; a hand-edited
//! or extra shard is rewritten or deleted.
//!
//! Shards are ConfigMaps `keyset-<keySet>-<i>` (i from 1), each with one data
//! key [`shard_file_name`], labelled managed-by keyward and
//! `keyward.dev/keyset=<keySet>`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::api::ApiKey;
use crate::keyset::{DEFAULT_MAX_SHARD_BYTES, KeySetId, Record, decode_shard, encode, shard_file_name};
use crate::plan::{LABEL_KEYSET, LABEL_MANAGED_BY, MANAGED_BY, records_for};

use super::{Clock, Error, FIELD_MANAGER};

/// One key set's lock, guarding the records last written (`None` until first known).
type SetLock = Arc<tokio::sync::Mutex<Option<Vec<Record>>>>;

/// The one writer of every key set this operator publishes.
pub struct Publisher {
    client: Client,
    clock: Clock,
    coalesce: Duration,
    max_shard_bytes: usize,
    /// One lock per key set: at most one rebuild of a set at a time. Holds
    /// the records last written (or read back), `None` until first known.
    sets: Mutex<HashMap<KeySetId, SetLock>>,
    pending: Mutex<BTreeSet<KeySetId>>,
    wake: Notify,
}

impl Publisher {
    /// A publisher writing through `client`, coalescing requests for `coalesce`.
    #[must_use]
    pub fn new(client: Client, clock: Clock, coalesce: Duration) -> Publisher {
        Publisher {
            client,
            clock,
            coalesce,
            max_shard_bytes: DEFAULT_MAX_SHARD_BYTES,
            sets: Mutex::new(HashMap::new()),
            pending: Mutex::new(BTreeSet::new()),
            wake: Notify::new(),
        }
    }

    /// Use smaller shards (tests exercise multi-shard sets this way).
    #[must_use]
    pub fn with_max_shard_bytes(mut self, bytes: usize) -> Publisher {
        self.max_shard_bytes = bytes;
        self
    }

    fn set(&self, id: &KeySetId) -> SetLock {
        // A poisoned map only means another task panicked mid-insert; the map itself is still sound.
        let mut sets = self.sets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        sets.entry(id.clone()).or_default().clone()
    }

    /// Ask for `id` to be rebuilt soon, together with whatever else changes meanwhile.
    pub fn request(&self, id: KeySetId) {
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id);
        self.wake.notify_one();
    }

    /// The records of `id` as last published (read from the API the first time).
    pub async fn published(&self, id: &KeySetId) -> Result<Vec<Record>, Error> {
        let set = self.set(id);
        let mut known = set.lock().await;
        if known.is_none() {
            let shards = self.read_shards(id).await?;
            let records = shards
                .values()
                .filter_map(|cm| cm.data.as_ref()?.values().next().cloned())
                .filter_map(|text| decode_shard(text.as_bytes()).ok())
                .flat_map(|shard| shard.records)
                .collect();
            *known = Some(records);
        }
        Ok(known.clone().unwrap_or_default())
    }

    /// Rebuild `id` now and wait until it is written.
    pub async fn publish_now(&self, id: &KeySetId) -> Result<(), Error> {
        let set = self.set(id);
        let mut known = set.lock().await;
        let now = (self.clock)();
        let keys: Api<ApiKey> = Api::namespaced(self.client.clone(), &id.namespace);
        let keys = keys.list(&ListParams::default()).await.map_err(Error::kube("list ApiKeys"))?;
        let records = unique(keys.items.iter().filter(|k| k.spec.key_set == id.name).flat_map(|k| records_for(k, now)));
        let existing = self.read_shards(id).await?;
        let generation = existing
            .values()
            .filter_map(|cm| cm.data.as_ref()?.values().next().cloned())
            .filter_map(|text| decode_shard(text.as_bytes()).ok())
            .map(|shard| shard.generation)
            .max()
            .unwrap_or(0);
        if matches(&existing, &shard_map(id, &encode(id, generation, &records, self.max_shard_bytes)?)) {
            *known = Some(records);
            return Ok(());
        }
        let desired = shard_map(id, &encode(id, generation + 1, &records, self.max_shard_bytes)?);
        let config_maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), &id.namespace);
        for (name, (file, text)) in &desired {
            write_shard(&config_maps, id, name, file, text).await?;
        }
        for name in existing.keys().filter(|n| !desired.contains_key(*n)) {
            match config_maps.delete(name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(e) => return Err(Error::kube("delete key-set shard")(e)),
            }
        }
        info!(namespace = %id.namespace, keyset = %id.name, generation = generation + 1, records = records.len(), shards = desired.len(), "key set published");
        *known = Some(records);
        Ok(())
    }

    /// Rebuild every requested key set, once per coalescing window, until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = self.wake.notified() => {}
                () = &mut shutdown => return,
            }
            tokio::time::sleep(self.coalesce).await;
            self.flush().await;
        }
    }

    /// Rebuild every key set requested so far; failed ones are requested again.
    pub async fn flush(&self) {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        for id in pending {
            if let Err(e) = self.publish_now(&id).await {
                warn!(namespace = %id.namespace, keyset = %id.name, error = %e, "key-set publish failed; will retry");
                self.request(id);
            }
        }
    }

    /// Whether any key set is waiting to be rebuilt.
    #[must_use]
    pub fn has_pending(&self) -> bool {
        !self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_empty()
    }

    async fn read_shards(&self, id: &KeySetId) -> Result<BTreeMap<String, ConfigMap>, Error> {
        let config_maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), &id.namespace);
        let selector = format!("{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_KEYSET}={}", id.name);
        let list = config_maps
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(Error::kube("list key-set shards"))?;
        Ok(list.items.into_iter().map(|cm| (cm.name_any(), cm)).collect())
    }
}

/// Two records with one hash would make the verifier's answer ambiguous;
/// neither is published (fail closed) and the clash is logged by key id.
fn unique(records: impl Iterator<Item = Record>) -> Vec<Record> {
    let all: Vec<Record> = records.collect();
    let mut count: HashMap<_, usize> = HashMap::new();
    for r in &all {
        *count.entry(r.hash).or_default() += 1;
    }
    all.into_iter()
        .filter(|r| {
            let single = count[&r.hash] == 1;
            if !single {
                warn!(namespace = %r.namespace, name = %r.name, key_id = %r.key_id, "hash published by two ApiKeys; withheld");
            }
            single
        })
        .collect()
}

/// ConfigMap name → (data key, content) for each shard.
fn shard_map(id: &KeySetId, shards: &[String]) -> BTreeMap<String, (String, String)> {
    shards
        .iter()
        .enumerate()
        .map(|(i, text)| (format!("keyset-{}-{}", id.name, i + 1), (shard_file_name(&id.name, i + 1), text.clone())))
        .collect()
}

/// Whether the stored shards are exactly the desired ones.
fn matches(existing: &BTreeMap<String, ConfigMap>, desired: &BTreeMap<String, (String, String)>) -> bool {
    existing.len() == desired.len()
        && desired.iter().all(|(name, (file, text))| {
            existing.get(name).is_some_and(|cm| {
                let data = cm.data.clone().unwrap_or_default();
                data.len() == 1
                    && data.get(file) == Some(text)
                    && cm.binary_data.as_ref().is_none_or(BTreeMap::is_empty)
            })
        })
}

async fn write_shard(api: &Api<ConfigMap>, id: &KeySetId, name: &str, file: &str, text: &str) -> Result<(), Error> {
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(id.namespace.clone()),
            labels: Some(BTreeMap::from([
                (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
                (LABEL_KEYSET.to_owned(), id.name.clone()),
            ])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(file.to_owned(), text.to_owned())])),
        ..ConfigMap::default()
    };
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let written = api.patch(name, &params, &Patch::Apply(&cm)).await.map_err(Error::kube("apply key-set shard"))?;
    // The verifier reads every `*.keyset` key: a key added by hand must go.
    let extra: BTreeMap<String, Value> = written
        .data
        .iter()
        .flatten()
        .map(|(k, _)| k)
        .filter(|k| *k != file)
        .map(|k| (k.clone(), Value::Null))
        .collect();
    let binary: BTreeMap<String, Value> =
        written.binary_data.iter().flatten().map(|(k, _)| (k.clone(), Value::Null)).collect();
    if !extra.is_empty() || !binary.is_empty() {
        debug!(namespace = %id.namespace, shard = name, "removing foreign keys from key-set shard");
        api.patch(name, &PatchParams::default(), &Patch::Merge(json!({ "data": extra, "binaryData": binary })))
            .await
            .map_err(Error::kube("prune key-set shard"))?;
    }
    Ok(())
}
