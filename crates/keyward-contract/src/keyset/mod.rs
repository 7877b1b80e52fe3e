//! The key set: the contract between the operator, which publishes it, and the verifier, which enforces it.
//!
//! A key set is named by a namespace and a name (the ApiKey's `keySet`) and
//! holds one [`Record`] per published token: its hash, never the token. It is
//! stored as one or more text shards, each small enough for a ConfigMap; the
//! format is documented in `docs/keyset-format.md` and pinned by golden files.
//!
//! This module depends on serde, jiff, flate2 and the token types only, never on kube or tokio.
//!
//! ```text
//!  format   gzip           leaves: constants, limits, name rules; the gzip layer as bytes only
//!  record   error          the types: records, key-set ids, decode errors
//!  grammar                 the text's grammar, shared by the strict decoder and the scanner
//!  decode   encode         one shard, read strictly or written
//!  assemble                shards put together into whole key sets
//!  scan  packed  dir       the verifier's fast reader, stored (plain or gzip) shards, directories
//! ```
//!
//! Each module uses only modules on the lines above its own; none reaches back down.

mod assemble;
mod decode;
mod dir;
mod encode;
mod error;
mod format;
mod grammar;
mod gzip;
mod packed;
mod record;
mod scan;

pub use assemble::{AssembleError, assemble};
pub use decode::{Shard, decode_shard};
pub use dir::{LoadError, StoredBytes, load_dirs, read_shards, read_stored};
pub use encode::{EncodeError, encode, encode_gated};
pub use error::{DecodeError, DecodeErrorKind, Field};
pub use format::{
    DEFAULT_MAX_SHARD_BYTES, FORMAT_VERSION, GATED_FORMAT_VERSION, MAGIC, MAX_DECODE_BYTES, MAX_SHARDS, MAX_TEXT_BYTES,
    SHARD_FILE_SUFFIX, shard_file_name,
};
pub use gzip::GZIP_MAGIC;
pub use packed::{ShardBytes, encode_packed, encode_packed_gated};
pub use record::{Access, KeySet, KeySetId, KeySetIdParseError, RateLimit, Record, RecordState};
pub use scan::{
    CompactRecord, OwnerList, ScannedSet, ScannedShard, ShardHeader, assemble_headers, assemble_scanned, peek_header,
    scan_shard, scan_shard_keeping_owners,
};

#[cfg(test)]
mod scan_tests;
#[cfg(test)]
mod tests;
