//! The key-set publisher: the one writer of each key set's ConfigMap shards.
//!
//! ```text
//!            reconcile (controller/mod.rs)
//!   observe ──────────► plan ──────────► apply
//!      │  published_by()   ▲                 │ hold() a new key's token,
//!      │  held()           │ records_with()  │ request() / publish_now()
//!      ▼                   │                 ▼
//!   ┌──────────────── Publisher (this module) ────────────────┐
//!   │ memory: per key set the records last written and its     │
//!   │ high-water generation; tokens held until status names    │
//!   │ them (holds.rs); pending key sets, coalesced             │
//!   └───────────────┬──────────────────────────────────────────┘
//!                   │ list ApiKeys of the key set, records_with() each (plan)
//!                   ▼
//!         key-set ConfigMaps (stored.rs, in the contract's stored form)
//! ```
//!
//! Observe reads the publisher's memory that apply writes: what is
//! published (`published_by`) and when a held token was first written
//! (`held`), and the plan decides from those. The publisher in turn calls
//! back into the plan ([`records_with`]) to turn every stored ApiKey of a key
//! set into its records, judged with the operator's default grace period
//! ([`Publisher::with_default_grace`]).
//!
//! A key set is rebuilt as a whole from the stored ApiKeys of its namespace
//! and name, so that what is published follows from persisted status, plus
//! one thing kept in memory: the token of a new key that the plan holds until
//! it is Ready ([`Publisher::hold`], see [`Held`]), which the Secret already
//! records crash-safely. Requests are coalesced: many ApiKeys changing at
//! once cause one rebuild per coalescing window. Urgent changes (access taken
//! away) call [`Publisher::publish_now`] and wait for the write. A rebuild
//! that would produce the bytes already stored writes nothing; a hand-edited
//! or extra shard is rewritten or deleted.
//!
//! The key set's gate (its `KeySet` object's `spec.access`, [`gate`]) is read
//! with every rebuild and written into every shard's header, so a gate change
//! is just another rebuild: [`Publisher::publish_now`] when it takes access
//! away, the same when it gives it back. No `KeySet` object means no gate.
//!
//! The generation written never goes backwards: it is one above both the
//! highest stored generation and the highest this process ever wrote for the
//! set (a hand edit or deleted shard cannot rewind it), at least the wall
//! clock in milliseconds since the Unix epoch ([`next_generation`]: it keeps
//! rising across operator restarts after the set's shards were deleted), and
//! it never wraps. Verifiers refuse a set older than the one in force.
//!
//! How shards are stored (names, labels, `data` or `binaryData`) is the
//! contract's [`crate::configmap`]; [`stored`] does the API calls.

mod cluster;
mod holds;
mod stored;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::SignedDuration;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DynamicObject, ListParams};
use kube::{Api, Client, ResourceExt};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::api::{ApiKey, KeySet, KeySetAccess};
use crate::configmap::{highest_generation, layout};
use crate::keyset::{Access, DEFAULT_MAX_SHARD_BYTES, KeySetId, Record, encode_packed_gated};
use crate::plan::{Settings, records_with};

use super::{Clock, Error, Metrics, decode};
use holds::HeldEntry;

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
    /// The gate last written (or found stored), `None` until this process published the set.
    access: Option<Access>,
}

/// What a key set's shards say, as last published by this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The gate in every shard's header.
    pub access: Access,
    /// ApiKeys with at least one record in the set.
    pub keys: usize,
}

/// One key set's lock: at most one rebuild of a set at a time.
type SetLock = Arc<tokio::sync::Mutex<SetState>>;

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
    /// Held tokens of ClusterApiKeys by uid; `publishedAt` set by their reconcile once every
    /// selected key set carries the hash (`cluster.rs`).
    cluster_holds: Mutex<HashMap<String, crate::plan::Held>>,
    /// What the ClusterApiKey controller's caches let a rebuild skip (`cluster.rs`); unset,
    /// every rebuild reads the Namespace and the ClusterApiKeys.
    cluster_known: std::sync::OnceLock<cluster::Known>,
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
            cluster_holds: Mutex::new(HashMap::new()),
            cluster_known: std::sync::OnceLock::new(),
            wake: Notify::new(),
            metrics: Arc::new(Metrics::new()),
        }
    }

    /// The metrics it reports to (shared with the reconciler).
    #[must_use]
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
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

    /// Ask for `id` to be rebuilt soon, together with whatever else changes meanwhile.
    pub fn request(&self, id: KeySetId) {
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id);
        self.wake.notify_one();
    }

    /// The records of `id` as last published (read from the API the first time).
    ///
    /// Read back the way verifiers read it ([`assemble`](crate::keyset::assemble)): a set with mixed
    /// generations, a missing or undecodable shard counts as publishing nothing.
    pub async fn published(&self, id: &KeySetId) -> Result<Vec<Record>, Error> {
        self.published_where(id, |_| true).await
    }

    /// The records of ApiKey `name` in `id` as last published. Every reconcile asks this, so
    /// only the matching records are copied out, not the whole set (10,000 keys made that quadratic).
    pub async fn published_by(&self, id: &KeySetId, name: &str) -> Result<Vec<Record>, Error> {
        // The namespace too: a ClusterApiKey of the same name is listed as `cluster/<name>`.
        self.published_where(id, |r| r.namespace == id.namespace && r.name == name).await
    }

    async fn published_where(&self, id: &KeySetId, keep: impl Fn(&Record) -> bool) -> Result<Vec<Record>, Error> {
        let set = self.set(id);
        let mut state = set.lock().await;
        if state.records.is_none() {
            let shards = stored::read(&self.client, id).await?;
            state.records = Some(stored::readable_records(id, &shards));
        }
        Ok(state.records.iter().flatten().filter(|r| keep(r)).cloned().collect())
    }

    /// Rebuild `id` now, wait until it is written, and say what its shards now carry.
    pub async fn publish_reporting(&self, id: &KeySetId) -> Result<Published, Error> {
        self.publish_now(id).await?;
        let set = self.set(id);
        let state = set.lock().await;
        let keys: HashSet<&str> = state.records.iter().flatten().map(|r| r.name.as_str()).collect();
        Ok(Published { access: state.access.unwrap_or_default(), keys: keys.len() })
    }

    /// Rebuild `id` now and wait until it is written.
    pub async fn publish_now(&self, id: &KeySetId) -> Result<(), Error> {
        let set = self.set(id);
        let mut state = set.lock().await;
        let now = (self.clock)();
        let access = gate(&self.client, id).await?;
        let held = self.held_in(id);
        // Raw, decoded one by one: an object the types refuse is left out (its own reconcile reports it).
        let keys: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &id.namespace, &decode::api_resource());
        // A page at a time: only one page of ApiKeys is held while records are built.
        let classes = super::classes::read(&self.client, &id.namespace).await?;
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
                records_with(k, held, &classes.resolve(k), self.default_grace, now).into_iter().filter(publishable)
            }));
            match page.metadata.continue_ {
                Some(token) if !token.is_empty() => {
                    params = params.continue_token(&token);
                }
                _ => break,
            }
        }
        // Boxed: every reconcile awaits a rebuild, and this would grow all their futures.
        all.extend(Box::pin(self.cluster_records(id, now)).await?.into_iter().filter(publishable));
        self.forget_recorded(id, &unrecorded);
        let records = unique(all.into_iter());
        let existing = stored::read(&self.client, id).await?;
        let generation = highest_generation(existing.values()).max(state.high_water);
        let current = layout(id, encode_packed_gated(id, generation, access, &records, self.max_shard_bytes)?);
        if stored::matches(&existing, &current) {
            self.metrics.keyset_size(id, records.len(), current.len());
            self.note_published(id, &records);
            state.records = Some(records);
            state.access = Some(access);
            return Ok(());
        }
        let next = next_generation(generation, now).ok_or_else(|| Error::GenerationExhausted(id.to_string()))?;
        let desired = layout(id, encode_packed_gated(id, next, access, &records, self.max_shard_bytes)?);
        // From here on a partial write may have stored `next` somewhere: never reuse it.
        state.high_water = next;
        let config_maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), &id.namespace);
        for shard in &desired {
            let writes = stored::write(&config_maps, id, shard).await?;
            self.metrics.keyset_written(id, writes);
        }
        for name in existing.keys().filter(|n| !desired.iter().any(|shard| shard.name == **n)) {
            let writes = stored::delete(&config_maps, name).await?;
            if writes > 0 {
                self.metrics.keyset_written(id, writes);
            }
        }
        info!(namespace = %id.namespace, keyset = %id.name, generation = next, records = records.len(), shards = desired.len(), %access, "key set published");
        self.metrics.keyset_size(id, records.len(), desired.len());
        self.note_published(id, &records);
        state.records = Some(records);
        state.access = Some(access);
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
}

/// Key set `id`'s gate, from its `KeySet` object: none (no object) is [`Access::Enabled`].
///
/// An access the types do not know (only possible past admission) is published as
/// [`Access::Disabled`]: a gate that cannot be read never opens a set. A failed read
/// fails the rebuild, which is retried; the shards keep the gate they carry.
pub(crate) async fn gate(client: &Client, id: &KeySetId) -> Result<Access, Error> {
    let sets: Api<KeySet> = Api::namespaced(client.clone(), &id.namespace);
    let Some(set) = sets.get_opt(&id.name).await.map_err(Error::kube("get KeySet"))? else {
        return Ok(Access::Enabled);
    };
    Ok(gate_of(&set.spec.access))
}

/// The published gate for a `spec.access` text; anything unknown is [`Access::Disabled`].
pub(crate) fn gate_of(access: &str) -> Access {
    match KeySetAccess::parse(access) {
        Some(KeySetAccess::Enabled) => Access::Enabled,
        Some(KeySetAccess::PaymentRequired) => Access::PaymentRequired,
        Some(KeySetAccess::Disabled) | None => Access::Disabled,
    }
}

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

/// The generation after `generation`, written at `now`: one above it and at
/// least `now` in milliseconds since the Unix epoch. Nothing stored may
/// remember the last generation (the set's ConfigMaps deleted while the
/// operator restarted), yet verifiers still hold it and refuse anything
/// older; the wall clock keeps rising across both. `None` when exhausted.
fn next_generation(generation: u64, now: jiff::Timestamp) -> Option<u64> {
    let floor = u64::try_from(now.as_millisecond()).unwrap_or(0);
    generation.checked_add(1).map(|next| next.max(floor))
}
