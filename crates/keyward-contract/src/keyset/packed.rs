//! Shards as stored: plain text while a key set fits in one shard, gzip beyond.
//!
//! Small key sets (the common case) stay readable in `kubectl get configmap
//! -o yaml`. Large ones are gzip-compressed, which holds about four times as
//! many keys per shard: hex hashes compress to roughly their 32 bytes of
//! entropy and names, scopes and times to a few bytes each. The text inside is
//! the same format either way, and readers detect gzip by its magic bytes.

use super::encode::{EncodeError, encode_gated, encode_text};
use super::format::MAX_TEXT_BYTES;
use super::gzip::gzip;
use super::record::{Access, KeySetId, Record};

/// One stored shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardBytes {
    /// Plain text; stored as a ConfigMap `data` entry.
    Text(String),
    /// Gzip-compressed text; stored as a ConfigMap `binaryData` entry.
    Gzip(Vec<u8>),
}

impl ShardBytes {
    /// The stored bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            ShardBytes::Text(text) => text.as_bytes(),
            ShardBytes::Gzip(bytes) => bytes,
        }
    }
}

/// Encode a key set for storage, each stored shard at most `max_bytes`.
///
/// One plain shard when everything fits; otherwise gzip shards whose text is
/// split so that each compressed shard fits. Output is deterministic.
pub fn encode_packed(
    id: &KeySetId,
    generation: u64,
    records: &[Record],
    max_bytes: usize,
) -> Result<Vec<ShardBytes>, EncodeError> {
    encode_packed_gated(id, generation, Access::Enabled, records, max_bytes)
}

/// [`encode_packed`] with a gate, written into every shard's header ([`super::encode_gated`]).
pub fn encode_packed_gated(
    id: &KeySetId,
    generation: u64,
    access: Access,
    records: &[Record],
    max_bytes: usize,
) -> Result<Vec<ShardBytes>, EncodeError> {
    let plain = encode_gated(id, generation, access, records, max_bytes)?;
    if plain.len() == 1 {
        return Ok(plain.into_iter().map(ShardBytes::Text).collect());
    }
    // Try ever smaller text budgets until every compressed shard fits. The
    // ratio is steady for real key sets, so the first or second try succeeds.
    let mut text_budget = (max_bytes * 4).min(MAX_TEXT_BYTES);
    loop {
        // The text budget is above the stored limit on purpose; the compressed size is checked below.
        let texts = encode_text(id, generation, access, records, text_budget)?;
        let packed: Vec<Vec<u8>> = texts.iter().map(|t| gzip(t)).collect();
        let largest = packed.iter().map(Vec::len).max().unwrap_or(0);
        if largest <= max_bytes {
            return Ok(packed.into_iter().map(ShardBytes::Gzip).collect());
        }
        // Shrink in proportion to the overshoot, with a margin. Text that does
        // not compress at all (never the case for real key sets) falls back to
        // the plain shards, which are known to fit.
        let shrunk = text_budget * max_bytes / largest * 95 / 100;
        if shrunk <= max_bytes {
            return Ok(plain.into_iter().map(ShardBytes::Text).collect());
        }
        text_budget = shrunk;
    }
}
