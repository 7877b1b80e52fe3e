//! Shards as stored: plain text while a key set fits in one shard, gzip beyond.
//!
//! Small key sets (the common case) stay readable in `kubectl get configmap
//! -o yaml`. Large ones are gzip-compressed, which holds about four times as
//! many keys per shard: hex hashes compress to roughly their 32 bytes of
//! entropy and names, scopes and times to a few bytes each. The text inside is
//! the same format either way, and readers detect gzip by its magic bytes.

use std::io::{Read, Write};

use flate2::Compression;
use flate2::bufread::GzDecoder;
use flate2::write::GzEncoder;

use super::encode::{EncodeError, encode, encode_text};
use super::{KeySetId, Record};

/// Largest text a gzip shard may expand to; a bigger one is refused as a decompression bomb.
pub const MAX_TEXT_BYTES: usize = 8 * 1024 * 1024;

/// The first two bytes of every gzip stream.
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

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

fn gzip(text: &str) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(text.len() / 3), Compression::default());
    // Writing into a Vec cannot fail.
    encoder.write_all(text.as_bytes()).expect("writing to memory");
    encoder.finish().expect("writing to memory")
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
    let plain = encode(id, generation, records, max_bytes)?;
    if plain.len() == 1 {
        return Ok(plain.into_iter().map(ShardBytes::Text).collect());
    }
    // Try ever smaller text budgets until every compressed shard fits. The
    // ratio is steady for real key sets, so the first or second try succeeds.
    let mut text_budget = (max_bytes * 4).min(MAX_TEXT_BYTES);
    loop {
        // The text budget is above the stored limit on purpose; the compressed size is checked below.
        let texts = encode_text(id, generation, records, text_budget)?;
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

/// Why stored bytes could not be turned back into text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UnpackError {
    /// The gzip stream is corrupt or truncated.
    Corrupt,
    /// The text inside is larger than [`MAX_TEXT_BYTES`].
    TooLarge,
}

/// The text of a stored shard: gzip streams are inflated (bounded), anything else is returned as is.
pub(super) fn unpack(bytes: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, UnpackError> {
    if !bytes.starts_with(&GZIP_MAGIC) {
        return Ok(std::borrow::Cow::Borrowed(bytes));
    }
    let mut text = Vec::with_capacity(bytes.len() * 4);
    let limit = u64::try_from(MAX_TEXT_BYTES).unwrap_or(u64::MAX) + 1;
    let mut decoder = GzDecoder::new(bytes);
    (&mut decoder).take(limit).read_to_end(&mut text).map_err(|_| UnpackError::Corrupt)?;
    if text.len() > MAX_TEXT_BYTES {
        return Err(UnpackError::TooLarge);
    }
    // One gzip member and nothing after it: appended bytes would be ignored by
    // the decoder, so a shard carrying them is not what its writer wrote.
    if !decoder.into_inner().is_empty() {
        return Err(UnpackError::Corrupt);
    }
    Ok(std::borrow::Cow::Owned(text))
}
