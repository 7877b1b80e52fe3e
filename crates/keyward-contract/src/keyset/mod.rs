//! The key set: the contract between the operator, which publishes it, and the verifier, which enforces it.
//!
//! A key set is named by a namespace and a name (the ApiKey's `keySet`) and
//! holds one [`Record`] per published token: its hash, never the token. It is
//! stored as one or more text shards, each small enough for a ConfigMap; the
//! format is documented in `docs/keyset-format.md` and pinned by golden files.
//!
//! This module depends on serde, jiff and the token types only, never on kube or tokio.

mod decode;
mod dir;
mod encode;
mod packed;
mod record;
mod scan;

pub use decode::{AssembleError, DecodeError, DecodeErrorKind, Field, Shard, assemble, decode_shard};
pub use dir::{LoadError, StoredBytes, load_dirs, read_shards, read_stored};
pub use encode::{DEFAULT_MAX_SHARD_BYTES, EncodeError, SHARD_FILE_SUFFIX, encode, shard_file_name};
pub use packed::{GZIP_MAGIC, MAX_TEXT_BYTES, ShardBytes, encode_packed};
pub use record::{KeySetId, KeySetIdParseError, RateLimit, Record, RecordState};
pub use scan::{
    CompactRecord, ScannedSet, ScannedShard, ShardHeader, assemble_headers, assemble_scanned, peek_header, scan_shard,
};

/// The format version this build writes and reads.
pub const FORMAT_VERSION: &str = "v1";

/// The first word of every shard, so a stray file is never taken for a key set.
pub const MAGIC: &str = "keyward-keyset";

/// A whole key set: every shard's records, in order, with the shared header facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySet {
    /// Which key set this is.
    pub id: KeySetId,
    /// The publisher's generation counter; all shards of a set carry the same one.
    pub generation: u64,
    /// The records of all shards.
    pub records: Vec<Record>,
}

#[cfg(test)]
mod scan_tests;
#[cfg(test)]
mod tests;
