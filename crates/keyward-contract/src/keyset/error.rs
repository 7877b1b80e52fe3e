//! Why a shard does not decode: the line and field, never the offending text.
//!
//! Errors never quote the input: a hand-edited file could hold a token where
//! a hash belongs, and error messages end up in logs.

use std::fmt;

use super::format::{FORMAT_VERSION, GATED_FORMAT_VERSION, MAGIC, MAX_DECODE_BYTES, MAX_TEXT_BYTES};

/// The part of a shard a decode error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The leading `keyward-keyset` word.
    Magic,
    /// The format version.
    Version,
    /// `keyset=<namespace>/<name>`.
    KeySet,
    /// `generation=<n>`.
    Generation,
    /// `shard=<i>/<n>`.
    Shard,
    /// `records=<n>`.
    Records,
    /// `access=<gate>` (format `v2` only).
    Access,
    /// A record's hash.
    Hash,
    /// A record's key id.
    KeyId,
    /// A record's `namespace/name`.
    Owner,
    /// A record's scopes.
    Scopes,
    /// A record's not-before time.
    NotBefore,
    /// A record's not-after time.
    NotAfter,
    /// A record's state.
    State,
    /// A record's rate limit.
    RateLimit,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Magic => "magic",
            Field::Version => "version",
            Field::KeySet => "keyset",
            Field::Generation => "generation",
            Field::Shard => "shard",
            Field::Records => "records",
            Field::Access => "access",
            Field::Hash => "hash",
            Field::KeyId => "key id",
            Field::Owner => "namespace/name",
            Field::Scopes => "scopes",
            Field::NotBefore => "not-before",
            Field::NotAfter => "not-after",
            Field::State => "state",
            Field::RateLimit => "rate limit",
        })
    }
}

/// What is wrong with a shard.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeErrorKind {
    /// The shard is larger than [`MAX_DECODE_BYTES`].
    #[error("shard is larger than {MAX_DECODE_BYTES} bytes")]
    TooLarge,
    /// The shard is gzip-compressed but the stream is corrupt or truncated.
    #[error("shard is gzip-compressed but the stream is corrupt or truncated")]
    CorruptCompression,
    /// The shard's compressed text expands beyond [`MAX_TEXT_BYTES`].
    #[error("shard expands to more than {} bytes", MAX_TEXT_BYTES)]
    TextTooLarge,
    /// The shard is not text in ASCII.
    #[error("shard contains bytes other than printable ASCII")]
    NotAscii,
    /// There is no header line.
    #[error("shard has no header line")]
    MissingHeader,
    /// The file is not a keyward key set at all.
    #[error("not a keyward key set (the first line must start with '{MAGIC}')")]
    NotAKeySet,
    /// The shard was written by a format version this build does not read.
    #[error("unsupported format version (this build reads {FORMAT_VERSION} and {GATED_FORMAT_VERSION})")]
    UnsupportedVersion,
    /// A header or record field is missing or malformed.
    #[error("field {0} is missing or malformed")]
    InvalidField(Field),
    /// A blank line, which the format never contains.
    #[error("blank line")]
    BlankLine,
    /// A record does not have eight space-separated fields.
    #[error("record has {0} fields, expected 8")]
    FieldCount(usize),
    /// A record's key id is not the prefix of its hash.
    #[error("key id does not match the hash")]
    KeyIdMismatch,
    /// A record's not-after is not later than its not-before.
    #[error("not-after is not later than not-before")]
    EmptyWindow,
    /// A record lists the same scope twice.
    #[error("a scope is listed twice")]
    DuplicateScope,
    /// Two records in the shard carry the same hash.
    #[error("hash already appears on line {0}")]
    DuplicateHash(usize),
    /// The header's record count differs from the records present: the shard is truncated or padded.
    #[error("header says {declared} records, found {found}")]
    RecordCount {
        /// What the header says.
        declared: usize,
        /// What the shard holds.
        found: usize,
    },
}

/// A shard that could not be decoded: which line, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct DecodeError {
    /// 1-based line number (0 for problems with the whole shard).
    pub line: usize,
    /// What is wrong.
    pub kind: DecodeErrorKind,
}

pub(super) fn at(line: usize, kind: DecodeErrorKind) -> DecodeError {
    DecodeError { line, kind }
}

pub(super) fn invalid(line: usize, field: Field) -> DecodeError {
    at(line, DecodeErrorKind::InvalidField(field))
}
