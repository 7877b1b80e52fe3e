//! The loaded key set as a lookup table from token hash to what the verifier needs to decide.
//!
//! Built once per reload and then only read, so lookups take no lock. Rate
//! limit buckets are carried over from the previous index for keys whose
//! limit did not change, so a reload neither resets nor tightens them.
//!
//! Kept small because there is one slot per key (up to millions): a slot is
//! one 64-byte cache line holding the hash, the validity window in Unix
//! seconds, the state and the key set's gate, the numbers of the key's grant
//! (its scopes, shared by every key with the same scopes) and of its
//! rate-limit bucket in side tables, and the key's allowed-request counters
//! ([`super::usage`]). Its refusal counters are in an array numbered like the
//! slots. The key id is not stored: it is the hash's first six bytes.
//!
//! The owning ApiKey's `namespace/name` is kept only when asked for (the
//! audit log names it), in one string with a number per slot, so a verifier
//! without an audit log pays nothing for it.

use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderValue;
use jiff::Timestamp;

use super::ratelimit::Bucket;
use super::table::{self, Table};
use super::usage::{ColdCounters, KeyCounters, Ledger};
use crate::keyset::{Access, KeySet, OwnerList, RateLimit, RecordState, ScannedSet, ScannedShard};
use crate::scope::{Action, Scope};
use crate::token::{KeyHash, KeyId};

/// A key's scopes with their ready-made `X-Keyward-Scopes` value; shared by every key with the same scopes.
#[derive(Debug)]
pub struct Grant {
    /// What the key may do.
    pub scopes: Box<[Scope]>,
    /// The scopes joined by commas, ready to send.
    pub header: HeaderValue,
}

/// One published token, as the verifier holds it, read out of its slot.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'i> {
    hash: KeyHash,
    /// Active, inactive or revoked.
    pub state: RecordState,
    /// The gate of the key's key set.
    pub access: Access,
    /// Refused before this Unix second.
    not_before: i64,
    /// Refused from this Unix second on; `i64::MAX` for never.
    not_after: i64,
    /// What the key may do.
    pub grant: &'i Grant,
    /// The key's token bucket, if it has a rate limit.
    pub bucket: Option<&'i Bucket>,
    /// The key's usage counters in this index.
    pub usage: KeyCounters<'i>,
    /// `namespace/name` of the ApiKey, when the index keeps owners.
    pub owner: Option<&'i str>,
}

impl Entry<'_> {
    /// The token's key id.
    #[must_use]
    pub fn key_id(&self) -> KeyId {
        self.hash.key_id()
    }

    /// Whether any of the key's scopes allows `action` on `resource`.
    #[must_use]
    pub fn allows(&self, resource: &str, action: Action) -> bool {
        self.grant.scopes.iter().any(|s| s.allows(resource, action))
    }

    /// Whether `now` is inside the validity window: not-before included, not-after excluded.
    #[must_use]
    pub fn in_window(&self, now: Timestamp) -> bool {
        // Whole seconds bound the window, so comparing the floor of now is exact.
        let second = now.as_second() - i64::from(now.subsec_nanosecond() < 0);
        self.not_before <= second && second < self.not_after
    }

    /// Everything the entry holds, comparable across indexes (for tests).
    #[cfg(test)]
    pub(crate) fn facts(&self) -> (KeyId, RecordState, i64, i64, HeaderValue, Option<RateLimit>) {
        let limit = self.bucket.map(|b| b.limit().clone());
        (self.key_id(), self.state, self.not_before, self.not_after, self.grant.header.clone(), limit)
    }

    /// `X-Keyward-Key-Id`, ready to send.
    #[must_use]
    pub fn key_id_header(&self) -> HeaderValue {
        header(self.key_id().as_str())
    }
}

/// A slot's payload: not-before, not-after, bucket (`NO_BUCKET` for none), and one word holding the
/// grant (low 28 bits), the state (1–3, never 0, so that the word marks the slot used) and the gate.
struct Payload {
    not_before: i64,
    not_after: i64,
    grant: u32,
    bucket: u32,
    state: RecordState,
    access: Access,
}

const NO_BUCKET: u32 = u32::MAX;
/// Grants are numbered below this: the word's top four bits are the state and the gate.
const GRANTS: u32 = 1 << 28;

impl Payload {
    fn encode(&self) -> table::Payload {
        let state: u32 = match self.state {
            RecordState::Active => 1,
            RecordState::Inactive => 2,
            RecordState::Revoked => 3,
        };
        let access: u32 = match self.access {
            Access::Enabled => 0,
            Access::PaymentRequired => 1,
            Access::Disabled => 2,
        };
        let word = (self.grant & (GRANTS - 1)) | state << 28 | access << 30;
        table::Payload { not_before: self.not_before, not_after: self.not_after, word, bucket: self.bucket }
    }

    fn decode(payload: table::Payload) -> Payload {
        Payload {
            not_before: payload.not_before,
            not_after: payload.not_after,
            grant: payload.word & (GRANTS - 1),
            bucket: payload.bucket,
            state: match (payload.word >> 28) & 3 {
                1 => RecordState::Active,
                2 => RecordState::Inactive,
                // Only ever 3; anything else would refuse rather than allow.
                _ => RecordState::Revoked,
            },
            access: match payload.word >> 30 {
                0 => Access::Enabled,
                1 => Access::PaymentRequired,
                // Only ever 2; anything else would refuse rather than allow.
                _ => Access::Disabled,
            },
        }
    }
}

/// Each key's owner, by slot number (only when the index keeps owners).
#[derive(Debug, Default)]
struct Owners {
    list: OwnerList,
    /// The owner's number in `list` for each slot; `NO_OWNER` for an empty slot.
    by_slot: Vec<u32>,
}

const NO_OWNER: u32 = u32::MAX;

/// Facts about one loaded key set, for metrics and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetInfo {
    /// `namespace/name` of the key set.
    pub id: String,
    /// The publisher's generation.
    pub generation: u64,
    /// Records in the set.
    pub keys: usize,
    /// The set's gate.
    pub access: Access,
}

/// Every loaded key, by token hash.
#[derive(Debug, Default)]
pub struct KeyIndex {
    table: Table,
    /// Each slot's refusal counters, numbered like the table's slots.
    cold: Box<[ColdCounters]>,
    grants: Vec<Grant>,
    buckets: Vec<Arc<Bucket>>,
    /// Each key's owner; only when asked for.
    owners: Option<Owners>,
    sets: Vec<SetInfo>,
    /// Where this index's counts go when it is folded or dropped; shared with the indexes before and after it.
    ledger: Arc<Ledger>,
}

impl Drop for KeyIndex {
    /// Whatever was counted here and not yet folded (requests that were still
    /// deciding on this index after a reload replaced it) goes to the ledger.
    fn drop(&mut self) {
        self.fold_usage();
    }
}

/// Why key sets could not be turned into an index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    /// The same hash appears twice across the key sets.
    #[error("key id {0} appears in more than one record")]
    DuplicateHash(KeyId),
    /// More distinct scope lists or rate-limited keys than a slot can number (over four billion).
    #[error("key set too large to index")]
    TooLarge,
}

/// Builds a [`KeyIndex`] for a known number of keys, set by set and shard by shard.
///
/// Lets a reader insert each shard as soon as it is scanned and drop it, so
/// that a reload never holds more than a few shards besides the new index.
pub struct IndexBuilder<'p> {
    index: KeyIndex,
    capacity: usize,
    grant_ids: HashMap<Vec<Scope>, u32>,
    previous: Option<&'p KeyIndex>,
}

impl<'p> IndexBuilder<'p> {
    /// A builder for up to `capacity` keys, carrying rate-limit buckets (and the usage ledger) over from `previous`.
    #[must_use]
    pub fn new(capacity: usize, previous: Option<&'p KeyIndex>) -> IndexBuilder<'p> {
        let table = Table::with_capacity(capacity);
        let cold = std::iter::repeat_with(ColdCounters::default).take(table.slot_count()).collect();
        let ledger = previous.map_or_else(Arc::default, |p| Arc::clone(&p.ledger));
        IndexBuilder {
            index: KeyIndex {
                table,
                cold,
                grants: Vec::new(),
                buckets: Vec::new(),
                owners: None,
                sets: Vec::new(),
                ledger,
            },
            capacity,
            grant_ids: HashMap::new(),
            previous,
        }
    }

    /// Keep each key's `namespace/name` owner too (for the audit log).
    #[must_use]
    pub fn keeping_owners(mut self, keep: bool) -> IndexBuilder<'p> {
        let slots = self.index.table.slot_count();
        self.index.owners = keep.then(|| Owners { list: OwnerList::default(), by_slot: vec![NO_OWNER; slots] });
        self
    }

    /// Whether the index being built keeps owners.
    #[must_use]
    pub fn keeps_owners(&self) -> bool {
        self.index.owners.is_some()
    }

    /// Record that a key set of `keys` keys, gated by `access`, is part of the index (for metrics and logs).
    pub fn add_set(&mut self, id: String, generation: u64, keys: usize, access: Access) {
        self.index.sets.push(SetInfo { id, generation, keys, access });
    }

    /// Add every record of a scanned shard; refuses a hash already added.
    pub fn add_shard(&mut self, shard: &ScannedShard) -> Result<(), IndexError> {
        if self.index.len() + shard.records.len() > self.capacity {
            return Err(IndexError::TooLarge);
        }
        // Each shard numbers its own scope lists and limits; map them once per shard.
        let grants = shard.scopes.iter().map(|s| self.grant(s)).collect::<Result<Vec<u32>, _>>()?;
        let limits: Vec<Arc<RateLimit>> = shard.rate_limits.iter().cloned().map(Arc::new).collect();
        for (i, record) in shard.records.iter().enumerate() {
            // The scanner numbers from its own lists, so both lookups succeed.
            let grant = grants.get(record.scopes as usize).copied().ok_or(IndexError::TooLarge)?;
            let limit = match record.rate_limit {
                None => None,
                Some(i) => Some(limits.get(i as usize).ok_or(IndexError::TooLarge)?),
            };
            let owner = shard.owners.as_ref().and_then(|o| o.get(i));
            let window = (record.not_before, record.not_after);
            self.add(&record.hash, record.state, shard.access, window, grant, limit, owner)?;
        }
        Ok(())
    }

    /// The finished index.
    #[must_use]
    pub fn finish(self) -> KeyIndex {
        self.index
    }

    fn grant(&mut self, scopes: &[Scope]) -> Result<u32, IndexError> {
        if let Some(id) = self.grant_ids.get(scopes) {
            return Ok(*id);
        }
        let id = u32::try_from(self.index.grants.len()).ok().filter(|id| *id < GRANTS).ok_or(IndexError::TooLarge)?;
        let text = scopes.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
        self.index.grants.push(Grant { scopes: scopes.into(), header: header(&text) });
        self.grant_ids.insert(scopes.to_vec(), id);
        Ok(id)
    }

    #[allow(clippy::too_many_arguments)] // One key's facts, each from a different place in a record.
    fn add(
        &mut self,
        hash: &KeyHash,
        state: RecordState,
        access: Access,
        (not_before, not_after): (i64, Option<i64>),
        grant: u32,
        limit: Option<&Arc<RateLimit>>,
        owner: Option<&str>,
    ) -> Result<(), IndexError> {
        let bucket = match limit {
            None => NO_BUCKET,
            Some(limit) => {
                let carried = self
                    .previous
                    .and_then(|p| p.bucket(hash))
                    .filter(|b| b.limit() == &**limit)
                    .map_or_else(|| Arc::new(Bucket::shared(Arc::clone(limit))), Arc::clone);
                let id = u32::try_from(self.index.buckets.len())
                    .ok()
                    .filter(|id| *id != NO_BUCKET)
                    .ok_or(IndexError::TooLarge)?;
                self.index.buckets.push(carried);
                id
            }
        };
        let not_after = not_after.unwrap_or(i64::MAX);
        let payload = Payload { not_before, not_after, grant, bucket, state, access };
        let slot =
            self.index.table.insert(hash, payload.encode()).map_err(|_| IndexError::DuplicateHash(hash.key_id()))?;
        if let Some(owners) = &mut self.index.owners {
            let number =
                u32::try_from(owners.list.len()).ok().filter(|n| *n != NO_OWNER).ok_or(IndexError::TooLarge)?;
            // An empty owner (a shard scanned without them) reads back as none.
            owners.list.push(owner.unwrap_or_default()).ok_or(IndexError::TooLarge)?;
            owners.by_slot[slot] = number;
        }
        Ok(())
    }
}

impl KeyIndex {
    /// Build an index from whole decoded key sets, reusing the rate-limit buckets of `previous`.
    pub fn build(sets: Vec<KeySet>, previous: Option<&KeyIndex>) -> Result<KeyIndex, IndexError> {
        Self::build_keeping_owners(sets, previous, false)
    }

    /// [`KeyIndex::build`], keeping each key's `namespace/name` owner when `keep_owners`.
    pub fn build_keeping_owners(
        sets: Vec<KeySet>,
        previous: Option<&KeyIndex>,
        keep_owners: bool,
    ) -> Result<KeyIndex, IndexError> {
        let mut builder =
            IndexBuilder::new(sets.iter().map(|s| s.records.len()).sum(), previous).keeping_owners(keep_owners);
        for set in sets {
            builder.add_set(set.id.to_string(), set.generation, set.records.len(), set.access);
            for record in set.records {
                let grant = builder.grant(&record.scopes)?;
                let limit = record.rate_limit.map(Arc::new);
                let owner = builder.keeps_owners().then(|| format!("{}/{}", record.namespace, record.name));
                builder.add(
                    &record.hash,
                    record.state,
                    set.access,
                    (record.not_before.as_second(), record.not_after.map(Timestamp::as_second)),
                    grant,
                    limit.as_ref(),
                    owner.as_deref(),
                )?;
            }
        }
        Ok(builder.finish())
    }

    /// Build an index from whole scanned key sets, reusing the rate-limit buckets of `previous`.
    ///
    /// Refuses duplicate hashes, which the scanner leaves to this step.
    pub fn from_scanned(sets: &[ScannedSet], previous: Option<&KeyIndex>) -> Result<KeyIndex, IndexError> {
        let mut builder =
            IndexBuilder::new(sets.iter().flat_map(|s| &s.shards).map(|s| s.records.len()).sum(), previous);
        for set in sets {
            let keys = set.shards.iter().map(|s| s.records.len()).sum();
            builder.add_set(set.id.to_string(), set.generation, keys, set.access);
            for shard in &set.shards {
                builder.add_shard(shard)?;
            }
        }
        Ok(builder.finish())
    }

    /// The entry for a token hash.
    #[must_use]
    pub fn get(&self, hash: &KeyHash) -> Option<Entry<'_>> {
        let (at, slot) = self.table.get(hash)?;
        let payload = Payload::decode(slot.payload());
        // Indexes come from this index's own builder, so they are in range; a miss would refuse the key.
        let grant = self.grants.get(payload.grant as usize)?;
        let bucket = match payload.bucket {
            NO_BUCKET => None,
            i => Some(&**self.buckets.get(i as usize)?),
        };
        // Only an address: the refusal counters' line is read when a refusal is counted.
        let usage = KeyCounters { hot: slot.counters(), cold: self.cold.get(at)? };
        let owner = match &self.owners {
            None => None,
            Some(owners) => owners.list.get(*owners.by_slot.get(at)? as usize).filter(|o| !o.is_empty()),
        };
        Some(Entry {
            hash: *hash,
            state: payload.state,
            access: payload.access,
            not_before: payload.not_before,
            not_after: payload.not_after,
            grant,
            bucket,
            usage,
            owner,
        })
    }

    /// Move what this index has counted into its ledger (the usage report's source).
    pub fn fold_usage(&self) {
        let keys = self.table.iter().filter_map(|(at, slot)| {
            Some((slot.hash().key_id(), KeyCounters { hot: slot.counters(), cold: self.cold.get(at)? }))
        });
        self.ledger.take(keys);
    }

    /// Where this index's counts go, shared with the indexes built before and after it.
    #[must_use]
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    fn bucket(&self, hash: &KeyHash) -> Option<&Arc<Bucket>> {
        match Payload::decode(self.table.get(hash)?.1.payload()).bucket {
            NO_BUCKET => None,
            i => self.buckets.get(i as usize),
        }
    }

    /// How many keys are loaded.
    #[must_use]
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no key is loaded.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Approximate heap bytes held by the index: the slot array (with the allowed-request counters),
    /// the refusal counters, rate-limit buckets, owners and shared grants. Not the ledger, which the
    /// indexes of a store share and which holds one row per key used since the process started.
    #[must_use]
    pub fn approx_heap_bytes(&self) -> usize {
        // Arc allocations add two counters to what they hold; each bucket also has its pointer in the side table.
        let arc = 2 * std::mem::size_of::<usize>();
        let buckets = self.buckets.len() * (std::mem::size_of::<Bucket>() + arc + std::mem::size_of::<usize>());
        let cold = self.cold.len() * std::mem::size_of::<ColdCounters>();
        let owners = self.owners.as_ref().map_or(0, |o| o.list.heap_bytes() + o.by_slot.len() * 4);
        // A grant's scope strings: a guess of 64 bytes each set.
        self.table.slot_bytes() + cold + buckets + owners + self.grants.len() * (std::mem::size_of::<Grant>() + 64)
    }

    /// Whether the index keeps each key's owner.
    #[must_use]
    pub fn keeps_owners(&self) -> bool {
        self.owners.is_some()
    }

    /// The loaded key sets.
    #[must_use]
    pub fn sets(&self) -> &[SetInfo] {
        &self.sets
    }
}

fn header(text: &str) -> HeaderValue {
    // Key ids are hex and scopes match SCOPE_PATTERN (ASCII letters, digits, `._-*:`),
    // and commas join them: always a valid header value. The fallback is never taken.
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_reads_back_as_written() {
        let states = [RecordState::Active, RecordState::Inactive, RecordState::Revoked];
        let gates = [Access::Enabled, Access::PaymentRequired, Access::Disabled];
        for (state, access) in states.into_iter().flat_map(|s| gates.map(|a| (s, a))) {
            for grant in [0, 7, GRANTS - 1] {
                let payload = Payload { not_before: -5, not_after: i64::MAX, grant, bucket: NO_BUCKET, state, access };
                let encoded = payload.encode();
                assert_ne!(encoded.word, 0, "a used slot's word is never zero");
                let back = Payload::decode(encoded);
                assert_eq!(
                    (back.not_before, back.not_after, back.grant, back.bucket, back.state, back.access),
                    (-5, i64::MAX, grant, NO_BUCKET, state, access)
                );
            }
        }
    }
}
