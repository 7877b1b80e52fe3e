//! The key-set publisher: the one writer of each key set's ConfigMap shards.
//!
//! A key set is rebuilt as a whole from the stored ApiKeys of its namespace
//! and name ([`records_with`] each), so that what is published follows from
//! persisted status, plus one thing kept in memory: the token of a new key
//! that the plan holds until it is Ready ([`Publisher::hold`], see
//! [`Held`]), which the Secret already records crash-safely. Requests are
//! coalesced: many ApiKeys changing at once cause one rebuild per coalescing
//! window. Urgent changes (access taken
//! away) call [`Publisher::publish_now`] and wait for the write. A rebuild
//! that would produce the bytes already stored writes nothing; a hand-edited
//! or extra shard is rewritten or deleted.
//!
//! The generation written never goes backwards: it is one above both the
//! highest stored generation and the highest this process ever wrote for the
//! set (a hand edit or deleted shard cannot rewind it), at least the wall
//! clock in milliseconds since the Unix epoch ([`next_generation`]: it keeps
//! rising across operator restarts after the set's shards were deleted), and
//! it never wraps. Verifiers refuse a set older than the one in force.
//!
//! Shards are ConfigMaps `keyset-<keySet>-<i>` (i from 1), each with one key
//! [`shard_file_name`], labelled managed-by keyward and
//! `keyward.dev/keyset=<keySet>`: under `data` while the set fits one plain
//! shard, under `binaryData` (gzip) beyond ([`encode_packed`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::SignedDuration;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::api::ApiKey;
use crate::keyset::{
    DEFAULT_MAX_SHARD_BYTES, KeySetId, Record, ShardBytes, assemble, decode_shard, encode_packed, shard_file_name,
};
use crate::plan::{Held, LABEL_KEYSET, LABEL_MANAGED_BY, MANAGED_BY, Settings, records_with};

use super::{Clock, Error, FIELD_MANAGER, Metrics, decode, namespace};

/// ApiKeys per page when a key set is rebuilt from a list.
const LIST_PAGE: u32 = 500;

/// Pause after a flush in which some key set could not be written.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// What the publisher knows of one key set.
#[derive(Default)]
struct SetState {
    /// The records last written (or read back), `None` until first known.
    records: Option<Vec<Record>>,
    /// The highest generation this process wrote for the set.
    high_water: u64,
}

/// One key set's lock: at most one rebuild of a set at a time.
type SetLock = Arc<tokio::sync::Mutex<SetState>>;

/// A new key's token listed from memory until its status names it ([`Held`]).
struct HeldEntry {
    namespace: String,
    held: Held,
}

/// The one writer of every key set this operator publishes.
pub struct Publisher {
    client: Client,
    clock: Clock,
    coalesce: Duration,
    max_shard_bytes: usize,
    /// The default grace period, which decides whether a spec is valid ([`records_with`]).
    default_grace: SignedDuration,
    /// One lock per key set: at most one rebuild of a set at a time.
    sets: Mutex<HashMap<KeySetId, SetLock>>,
    pending: Mutex<BTreeSet<KeySetId>>,
    /// Held tokens by ApiKey uid; `publishedAt` set when a rebuild wrote the hash.
    holds: Mutex<HashMap<String, HeldEntry>>,
    wake: Notify,
    metrics: Arc<Metrics>,
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
            default_grace: Settings::default().default_grace_period,
            sets: Mutex::new(HashMap::new()),
            pending: Mutex::new(BTreeSet::new()),
            holds: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            metrics: Arc::new(Metrics::new()),
        }
    }

    /// Report key-set sizes and writes to `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Publisher {
        self.metrics = metrics;
        self
    }

    /// Use smaller shards (tests exercise multi-shard sets this way).
    #[must_use]
    pub fn with_max_shard_bytes(mut self, bytes: usize) -> Publisher {
        self.max_shard_bytes = bytes;
        self
    }

    /// Judge specs with the operator's default grace period (the controller's [`Settings`]).
    #[must_use]
    pub fn with_default_grace(mut self, grace: SignedDuration) -> Publisher {
        self.default_grace = grace;
        self
    }

    fn set(&self, id: &KeySetId) -> SetLock {
        // A poisoned map only means another task panicked mid-insert; the map itself is still sound.
        let mut sets = self.sets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        sets.entry(id.clone()).or_default().clone()
    }

    fn holds(&self) -> std::sync::MutexGuard<'_, HashMap<String, HeldEntry>> {
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
            let shards = self.read_shards(&id).await?;
            state.records = Some(readable_records(&id, &shards));
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
    fn note_published(&self, id: &KeySetId, records: &[Record]) {
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
    fn held_in(&self, id: &KeySetId) -> HashMap<String, Held> {
        let holds = self.holds();
        holds
            .iter()
            .filter(|(_, e)| e.namespace == id.namespace)
            .map(|(uid, e)| (uid.clone(), e.held.clone()))
            .collect()
    }

    /// Forget tokens held for `id` whose key is gone or whose stored status
    /// now names a current token (status is the record from then on).
    fn forget_recorded(&self, id: &KeySetId, unrecorded: &HashSet<String>) {
        self.holds()
            .retain(|uid, e| e.namespace != id.namespace || e.held.key_set != id.name || unrecorded.contains(uid));
    }

    /// Ask for `id` to be rebuilt soon, together with whatever else changes meanwhile.
    pub fn request(&self, id: KeySetId) {
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id);
        self.wake.notify_one();
    }

    /// The records of `id` as last published (read from the API the first time).
    ///
    /// Read back the way verifiers read it ([`assemble`]): a set with mixed
    /// generations, a missing or undecodable shard counts as publishing nothing.
    pub async fn published(&self, id: &KeySetId) -> Result<Vec<Record>, Error> {
        self.published_where(id, |_| true).await
    }

    /// The records of ApiKey `name` in `id` as last published. Every reconcile asks this, so
    /// only the matching records are copied out, not the whole set (10,000 keys made that quadratic).
    pub async fn published_by(&self, id: &KeySetId, name: &str) -> Result<Vec<Record>, Error> {
        self.published_where(id, |r| r.name == name).await
    }

    async fn published_where(&self, id: &KeySetId, keep: impl Fn(&Record) -> bool) -> Result<Vec<Record>, Error> {
        let set = self.set(id);
        let mut state = set.lock().await;
        if state.records.is_none() {
            let shards = self.read_shards(id).await?;
            state.records = Some(readable_records(id, &shards));
        }
        Ok(state.records.iter().flatten().filter(|r| keep(r)).cloned().collect())
    }

    /// Rebuild `id` now and wait until it is written.
    pub async fn publish_now(&self, id: &KeySetId) -> Result<(), Error> {
        let set = self.set(id);
        let mut state = set.lock().await;
        let now = (self.clock)();
        let held = self.held_in(id);
        // Raw, decoded one by one: an object the types refuse is left out (its own reconcile reports it).
        let keys: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &id.namespace, &decode::api_resource());
        // A page at a time: only one page of ApiKeys is held while records are built.
        let mut all = Vec::new();
        let mut unrecorded = HashSet::new();
        let mut params = ListParams::default().limit(LIST_PAGE);
        loop {
            let page = keys.list(&params).await.map_err(Error::kube("list ApiKeys"))?;
            let items: Vec<ApiKey> = page.items.iter().filter_map(|object| decoded(id, object)).collect();
            unrecorded.extend(
                items
                    .iter()
                    .filter(|k| k.status.as_ref().is_none_or(|s| s.current_key.is_none()))
                    .filter_map(|k| k.metadata.uid.clone()),
            );
            all.extend(items.iter().filter(|k| k.spec.key_set == id.name).flat_map(|k| {
                let held = k.metadata.uid.as_deref().and_then(|uid| held.get(uid));
                records_with(k, held, self.default_grace, now).into_iter().filter(publishable)
            }));
            match page.metadata.continue_ {
                Some(token) if !token.is_empty() => {
                    params = params.continue_token(&token);
                }
                _ => break,
            }
        }
        self.forget_recorded(id, &unrecorded);
        let records = unique(all.into_iter());
        let existing = self.read_shards(id).await?;
        let stored = existing.values().filter_map(stored_shard).map(|shard| shard.generation).max().unwrap_or(0);
        let generation = stored.max(state.high_water);
        let current = shard_map(id, encode_packed(id, generation, &records, self.max_shard_bytes)?);
        if matches(&existing, &current) {
            self.metrics.keyset_size(id, records.len(), current.len());
            self.note_published(id, &records);
            state.records = Some(records);
            return Ok(());
        }
        let next = next_generation(generation, now).ok_or_else(|| Error::GenerationExhausted(id.to_string()))?;
        let desired = shard_map(id, encode_packed(id, next, &records, self.max_shard_bytes)?);
        // From here on a partial write may have stored `next` somewhere: never reuse it.
        state.high_water = next;
        let config_maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), &id.namespace);
        for (name, (file, shard)) in &desired {
            let writes = write_shard(&config_maps, id, name, file, shard).await?;
            self.metrics.keyset_written(id, writes);
        }
        for name in existing.keys().filter(|n| !desired.contains_key(*n)) {
            match config_maps.delete(name, &DeleteParams::default()).await {
                Ok(_) => self.metrics.keyset_written(id, 1),
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(e) => return Err(Error::kube("delete key-set shard")(e)),
            }
        }
        info!(namespace = %id.namespace, keyset = %id.name, generation = next, records = records.len(), shards = desired.len(), "key set published");
        self.metrics.keyset_size(id, records.len(), desired.len());
        self.note_published(id, &records);
        state.records = Some(records);
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
            if self.flush().await > 0 {
                // The API is failing: do not retry at the coalescing pace.
                tokio::time::sleep(RETRY_AFTER_FAILURE).await;
            }
        }
    }

    /// Rebuild every key set requested so far; failed ones are requested
    /// again. Returns how many failed.
    pub async fn flush(&self) -> usize {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        let mut failed = 0;
        for id in pending {
            if let Err(e) = self.publish_now(&id).await {
                warn!(namespace = %id.namespace, keyset = %id.name, error = %e, "key-set publish failed; will retry");
                self.request(id);
                failed += 1;
            }
        }
        failed
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
/// `object` as an ApiKey; `None` (logged briefly) when it does not decode.
fn decoded(id: &KeySetId, object: &DynamicObject) -> Option<ApiKey> {
    match decode::decode(object) {
        Ok(key) => Some(key),
        Err(why) => {
            debug!(namespace = %id.namespace, name = %object.name_any(), problem = %why.problem, "ApiKey does not decode; left out of the key set");
            None
        }
    }
}

/// Whether `record` can be written in the key-set format (a stored name the API took may not be a DNS subdomain).
fn publishable(record: &Record) -> bool {
    match record.validate() {
        Ok(()) => true,
        Err(problem) => {
            warn!(namespace = %record.namespace, key_id = %record.key_id, problem, "record cannot be published; withheld");
            false
        }
    }
}

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

/// The records of `id` as a verifier would take them from `shards`: nothing
/// unless every shard decodes and they form one complete set of one generation.
fn readable_records(id: &KeySetId, shards: &BTreeMap<String, ConfigMap>) -> Vec<Record> {
    let decoded: Option<Vec<crate::keyset::Shard>> = shards.values().map(stored_shard).collect();
    let Some(decoded) = decoded.filter(|d| !d.is_empty()) else { return Vec::new() };
    match assemble(decoded) {
        Ok(sets) => sets.into_iter().filter(|set| set.id == *id).flat_map(|set| set.records).collect(),
        Err(e) => {
            warn!(namespace = %id.namespace, keyset = %id.name, error = %e, "stored key set is not readable; counting nothing as published");
            Vec::new()
        }
    }
}

/// The shard a ConfigMap stores, if it holds exactly one that decodes.
fn stored_shard(cm: &ConfigMap) -> Option<crate::keyset::Shard> {
    let text = cm.data.iter().flatten().map(|(_, v)| v.as_bytes());
    let binary = cm.binary_data.iter().flatten().map(|(_, v)| v.0.as_slice());
    let mut all = text.chain(binary);
    let bytes = all.next()?;
    if all.next().is_some() {
        return None;
    }
    decode_shard(bytes).ok()
}

/// ConfigMap name → (key, stored shard) for each shard.
fn shard_map(id: &KeySetId, shards: Vec<ShardBytes>) -> BTreeMap<String, (String, ShardBytes)> {
    shards
        .into_iter()
        .enumerate()
        .map(|(i, shard)| (format!("keyset-{}-{}", id.name, i + 1), (shard_file_name(&id.name, i + 1), shard)))
        .collect()
}

/// Whether the stored shards are exactly the desired ones.
fn matches(existing: &BTreeMap<String, ConfigMap>, desired: &BTreeMap<String, (String, ShardBytes)>) -> bool {
    existing.len() == desired.len()
        && desired.iter().all(|(name, (file, shard))| {
            existing.get(name).is_some_and(|cm| {
                let data = cm.data.clone().unwrap_or_default();
                let binary = cm.binary_data.clone().unwrap_or_default();
                match shard {
                    ShardBytes::Text(text) => binary.is_empty() && data.len() == 1 && data.get(file) == Some(text),
                    ShardBytes::Gzip(bytes) => {
                        data.is_empty() && binary.len() == 1 && binary.get(file).is_some_and(|b| &b.0 == bytes)
                    }
                }
            })
        })
}

async fn write_shard(
    api: &Api<ConfigMap>,
    id: &KeySetId,
    name: &str,
    file: &str,
    shard: &ShardBytes,
) -> Result<u64, Error> {
    let (data, binary_data) = match shard {
        ShardBytes::Text(text) => (Some(BTreeMap::from([(file.to_owned(), text.clone())])), None),
        ShardBytes::Gzip(bytes) => (None, Some(BTreeMap::from([(file.to_owned(), ByteString(bytes.clone()))]))),
    };
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
        data,
        binary_data,
        ..ConfigMap::default()
    };
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let written = api.patch(name, &params, &Patch::Apply(&cm)).await.map_err(Error::kube("apply key-set shard"))?;
    // The verifier reads every `*.keyset` key: anything else (a key added by
    // hand, or the plain key left over when a shard became gzip) must go.
    let (keep_text, keep_binary) = match shard {
        ShardBytes::Text(_) => (Some(file), None),
        ShardBytes::Gzip(_) => (None, Some(file)),
    };
    let extra: BTreeMap<String, Value> = written
        .data
        .iter()
        .flatten()
        .map(|(k, _)| k)
        .filter(|k| Some(k.as_str()) != keep_text)
        .map(|k| (k.clone(), Value::Null))
        .collect();
    let extra_binary: BTreeMap<String, Value> = written
        .binary_data
        .iter()
        .flatten()
        .map(|(k, _)| k)
        .filter(|k| Some(k.as_str()) != keep_binary)
        .map(|k| (k.clone(), Value::Null))
        .collect();
    if !extra.is_empty() || !extra_binary.is_empty() {
        debug!(namespace = %id.namespace, shard = name, "removing foreign keys from key-set shard");
        api.patch(name, &PatchParams::default(), &Patch::Merge(json!({ "data": extra, "binaryData": extra_binary })))
            .await
            .map_err(Error::kube("prune key-set shard"))?;
        return Ok(2);
    }
    Ok(1)
}

/// The generation after `generation`, written at `now`: one above it and at
/// least `now` in milliseconds since the Unix epoch. Nothing stored may
/// remember the last generation (the set's ConfigMaps deleted while the
/// operator restarted), yet verifiers still hold it and refuse anything
/// older; the wall clock keeps rising across both. `None` when exhausted.
fn next_generation(generation: u64, now: jiff::Timestamp) -> Option<u64> {
    let floor = u64::try_from(now.as_millisecond()).unwrap_or(0);
    generation.checked_add(1).map(|next| next.max(floor))
}
