//! The loaded key set as a lookup table from token hash to what the verifier needs to decide.
//!
//! Built once per reload and then only read, so lookups take no lock. Rate
//! limit buckets are carried over from the previous index for keys whose
//! limit did not change, so a reload neither resets nor tightens them.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use http::HeaderValue;
use jiff::Timestamp;

use super::ratelimit::Bucket;
use crate::keyset::{KeySet, RecordState};
use crate::scope::{Action, Scope};
use crate::token::{KeyHash, KeyId};

/// Hashes a [`KeyHash`] by taking its first eight bytes.
///
/// The keys are SHA-256 digests, already uniform; nobody can aim many tokens
/// at one bucket without finding SHA-256 preimages, so no keyed hash is needed.
#[derive(Default)]
pub struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // The digest arrives as one 32-byte write (after a length prefix, which
        // arrives through write_usize and is ignored); shorter writes are folded in.
        if let Some(first) = bytes.first_chunk::<8>() {
            self.0 ^= u64::from_le_bytes(*first);
        } else {
            for &b in bytes {
                self.0 = self.0.rotate_left(8) ^ u64::from(b);
            }
        }
    }

    fn write_usize(&mut self, _len: usize) {}
}

/// One published token, as the verifier holds it.
#[derive(Debug)]
pub struct Entry {
    /// The token's key id.
    pub key_id: KeyId,
    /// `namespace/name` of the ApiKey, for logs.
    pub owner: Box<str>,
    /// What the key may do.
    pub scopes: Box<[Scope]>,
    /// Refused before this time.
    pub not_before: Timestamp,
    /// Refused from this time on.
    pub not_after: Option<Timestamp>,
    /// Active, inactive or revoked.
    pub state: RecordState,
    /// The key's token bucket, if it has a rate limit.
    pub bucket: Option<Arc<Bucket>>,
    /// `X-Keyward-Key-Id`, ready to send.
    pub key_id_header: HeaderValue,
    /// `X-Keyward-Scopes`: the scopes joined by commas, ready to send.
    pub scopes_header: HeaderValue,
}

impl Entry {
    /// Whether any of the key's scopes allows `action` on `resource`.
    #[must_use]
    pub fn allows(&self, resource: &str, action: Action) -> bool {
        self.scopes.iter().any(|s| s.allows(resource, action))
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
    entries: HashMap<KeyHash, Entry, BuildHasherDefault<DigestHasher>>,
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
        let mut entries = HashMap::with_capacity_and_hasher(total, BuildHasherDefault::default());
        let mut infos = Vec::with_capacity(sets.len());
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
                let scopes_text = record.scopes.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
                let entry = Entry {
                    key_id: record.key_id,
                    owner: format!("{}/{}", record.namespace, record.name).into(),
                    key_id_header: header(record.key_id.as_str()),
                    scopes_header: header(&scopes_text),
                    scopes: record.scopes.into(),
                    not_before: record.not_before,
                    not_after: record.not_after,
                    state: record.state,
                    bucket,
                };
                if entries.insert(record.hash, entry).is_some() {
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
