//! The format's constants, limits and name rules: the leaf every other key-set module stands on.

/// The format version of an ungated key set, which this build writes and reads.
pub const FORMAT_VERSION: &str = "v1";

/// The format version of a gated key set (one whose header carries `access=`), which this build writes and reads.
///
/// A gate gets its own version so that a verifier built before gates existed
/// refuses a gated set as an unknown version (and keeps its last good set)
/// instead of serving the gated keys as open. Ungated sets stay `v1`, which
/// every verifier reads.
pub const GATED_FORMAT_VERSION: &str = "v2";

/// The first word of every shard, so a stray file is never taken for a key set.
pub const MAGIC: &str = "keyward-keyset";

/// Largest shard the decoder reads; a ConfigMap cannot hold more.
pub const MAX_DECODE_BYTES: usize = 1024 * 1024;

/// Most shards one key set may have.
pub const MAX_SHARDS: usize = 10_000;

/// Largest text a gzip shard may expand to; a bigger one is refused as a decompression bomb.
pub const MAX_TEXT_BYTES: usize = 8 * 1024 * 1024;

/// Largest shard written by default: half the 1 MiB object limit, leaving room for metadata.
pub const DEFAULT_MAX_SHARD_BYTES: usize = 512 * 1024;

/// Every shard file name ends with this; the verifier reads only such files.
pub const SHARD_FILE_SUFFIX: &str = ".keyset";

/// The file (ConfigMap data key) name of shard `index` (1-based) of key set `name`.
#[must_use]
pub fn shard_file_name(name: &str, index: usize) -> String {
    format!("{name}.{index}{SHARD_FILE_SUFFIX}")
}

/// Whether `s` is an RFC 1123 label: what Kubernetes accepts as a namespace.
pub(crate) fn valid_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    let edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= 63
        && b.first().is_some_and(edge)
        && b.last().is_some_and(edge)
        && b.iter().all(|c| edge(c) || *c == b'-')
}

/// Whether `s` is an RFC 1123 subdomain: what Kubernetes accepts as an object name.
pub(crate) fn valid_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(valid_dns_label)
}
