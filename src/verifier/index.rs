//! The loaded key set as a lookup table from token hash to what the verifier needs to decide.
//!
//! Built once per reload and then only read, so lookups take no lock. Rate
//! limit buckets are carried over from the previous index for keys whose
//! limit did not change, so a reload neither resets nor tightens them.

use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderValue;
use jiff::Timestamp;

use super::ratelimit::Bucket;
use super::table::Table;
use crate::keyset::{KeySet, RecordState};
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

/// One published token, as the verifier holds it.
///
/// Kept small because there is one per key (up to millions): times as Unix
/// seconds (records hold whole seconds), scopes shared through [`Grant`].
#[derive(Debug)]
pub struct Entry {
    /// The token's key id.
    pub key_id: KeyId,
    /// Active, inactive or revoked.
    pub state: RecordState,
    /// Refused before this Unix second.
    not_before: i64,
    /// Refused from this Unix second on; `i64::MAX` for never.
    not_after: i64,
    /// What the key may do.
    pub grant: Arc<Grant>,
    /// The key's token bucket, if it has a rate limit.
    pub bucket: Option<Arc<Bucket>>,
}

impl Entry {
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

    /// `X-Keyward-Key-Id`, ready to send.
    #[must_use]
    pub fn key_id_header(&self) -> HeaderValue {
        header(self.key_id.as_str())
    }
}

/// Facts about one loaded key set, for metrics and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetInfo {
    /// `namespace/name` of the key set.
    pub id: String,
    /// The publisher's generation.
    pub generation: u64,
    /// Records in the set.
    pub keys: usize,
}

/// Every loaded key, by token hash.
#[derive(Debug, Default)]
pub struct KeyIndex {
    entries: Table<Entry>,
    sets: Vec<SetInfo>,
}

/// Why key sets could not be turned into an index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    /// The same hash appears twice across the key sets.
    #[error("key id {0} appears in more than one record")]
    DuplicateHash(KeyId),
}

impl KeyIndex {
    /// Build an index from whole key sets, reusing the rate-limit buckets of `previous`.
    pub fn build(sets: Vec<KeySet>, previous: Option<&KeyIndex>) -> Result<KeyIndex, IndexError> {
        let total = sets.iter().map(|s| s.records.len()).sum();
        let mut entries = Table::with_capacity(total);
        let mut infos = Vec::with_capacity(sets.len());
        let mut grants: HashMap<Vec<Scope>, Arc<Grant>> = HashMap::new();
        for set in sets {
            infos.push(SetInfo { id: set.id.to_string(), generation: set.generation, keys: set.records.len() });
            for record in set.records {
                let bucket = record.rate_limit.as_ref().map(|limit| {
                    previous
                        .and_then(|p| p.entries.get(&record.hash))
                        .and_then(|e| e.bucket.as_ref())
                        .filter(|b| b.limit() == limit)
                        .map_or_else(|| Arc::new(Bucket::new(limit)), Arc::clone)
                });
                let grant = grants
                    .entry(record.scopes)
                    .or_insert_with_key(|scopes| {
                        let text = scopes.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
                        Arc::new(Grant { scopes: scopes.clone().into(), header: header(&text) })
                    })
                    .clone();
                let entry = Entry {
                    key_id: record.key_id,
                    state: record.state,
                    not_before: record.not_before.as_second(),
                    not_after: record.not_after.map_or(i64::MAX, Timestamp::as_second),
                    grant,
                    bucket,
                };
                if entries.insert(record.hash, entry).is_err() {
                    return Err(IndexError::DuplicateHash(record.key_id));
                }
            }
        }
        Ok(KeyIndex { entries, sets: infos })
    }

    /// The entry for a token hash.
    #[must_use]
    pub fn get(&self, hash: &KeyHash) -> Option<&Entry> {
        self.entries.get(hash)
    }

    /// How many keys are loaded.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is loaded.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Approximate heap bytes held by the index: the slot array, rate-limit buckets and shared grants.
    #[must_use]
    pub fn approx_heap_bytes(&self) -> usize {
        // Arc allocations add two counters to what they hold.
        let arc = 2 * std::mem::size_of::<usize>();
        let buckets =
            self.entries.values().filter(|e| e.bucket.is_some()).count() * (std::mem::size_of::<Bucket>() + arc);
        let mut grants: Vec<*const Grant> = self.entries.values().map(|e| Arc::as_ptr(&e.grant)).collect();
        grants.sort_unstable();
        grants.dedup();
        // A grant's scope strings: a guess of 64 bytes each set.
        self.entries.slot_bytes() + buckets + grants.len() * (std::mem::size_of::<Grant>() + arc + 64)
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
