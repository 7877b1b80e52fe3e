//! Writing a key set as text shards.

use std::fmt::Write as _;

use super::format::{FORMAT_VERSION, GATED_FORMAT_VERSION, MAGIC, MAX_DECODE_BYTES, MAX_SHARDS, valid_dns_label};
use super::grammar::format_time;
use super::record::{Access, KeySetId, Record};

/// Room kept for the header line, whatever its numbers turn out to be.
const HEADER_BUDGET: usize = 512;

/// Why a key set could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// One record alone is larger than a shard may be.
    #[error("a record of {namespace}/{name} does not fit in a shard of {max_bytes} bytes")]
    RecordTooLarge {
        /// Namespace of the ApiKey whose record is too large.
        namespace: String,
        /// Name of the ApiKey whose record is too large.
        name: String,
        /// The shard size limit.
        max_bytes: usize,
    },
    /// Two records carry the same hash, which would make the verifier's answer ambiguous.
    #[error("two records carry the same hash (key id {0})")]
    DuplicateHash(String),
    /// A record breaks an invariant of the format.
    #[error("record with key id {key_id}: {reason}")]
    InvalidRecord {
        /// The record's key id.
        key_id: String,
        /// What is wrong, naming the field.
        reason: &'static str,
    },
    /// The shard size limit is larger than readers accept, or the set needs more shards than they accept.
    #[error("shards must be at most {max} bytes and at most {max_shards} per key set", max = MAX_DECODE_BYTES, max_shards = MAX_SHARDS)]
    Limits,
    /// The key set's name or namespace cannot be written in a header.
    #[error("key set name {0:?} is not a valid namespace/name")]
    InvalidName(String),
}

fn record_line(record: &Record) -> String {
    let mut line = String::with_capacity(160);
    let scopes: Vec<String> = record.scopes.iter().map(ToString::to_string).collect();
    // Writing into a String cannot fail.
    let _ = write!(
        line,
        "{} {} {}/{} {} {} {} {}",
        record.hash,
        record.key_id,
        record.namespace,
        record.name,
        scopes.join(","),
        format_time(record.not_before),
        record.not_after.map_or_else(|| "-".to_owned(), format_time),
        record.state.as_str(),
    );
    match &record.rate_limit {
        None => line.push_str(" -"),
        Some(limit) => {
            let _ = write!(line, " {}/{}", limit.requests, limit.period);
            if limit.burst != limit.requests {
                let _ = write!(line, "/{}", limit.burst);
            }
        }
    }
    line.push('\n');
    line
}

/// Encode `records` as the shards of key set `id` at `generation`, each at most `max_bytes`.
///
/// Records are sorted (by namespace, name, not-before, hash) so that the same
/// set always encodes to the same bytes and a publisher can skip writes when
/// nothing changed. An empty set still yields one shard, so that verifiers can
/// tell "no keys" from "no key set".
pub fn encode(
    id: &KeySetId,
    generation: u64,
    records: &[Record],
    max_bytes: usize,
) -> Result<Vec<String>, EncodeError> {
    encode_gated(id, generation, Access::Enabled, records, max_bytes)
}

/// [`encode`] with a gate: [`Access::Enabled`] writes format `v1` exactly as
/// [`encode`] does; a closed gate writes `v2` with `access=` in every shard's header.
pub fn encode_gated(
    id: &KeySetId,
    generation: u64,
    access: Access,
    records: &[Record],
    max_bytes: usize,
) -> Result<Vec<String>, EncodeError> {
    if max_bytes > MAX_DECODE_BYTES {
        return Err(EncodeError::Limits);
    }
    encode_text(id, generation, access, records, max_bytes)
}

/// [`encode`] with a budget on the text only, which may exceed what readers
/// accept as stored bytes: gzip shards hold more text than that, and are
/// checked against the stored limit once compressed.
pub(super) fn encode_text(
    id: &KeySetId,
    generation: u64,
    access: Access,
    records: &[Record],
    max_bytes: usize,
) -> Result<Vec<String>, EncodeError> {
    if !valid_dns_label(&id.namespace) || !valid_dns_label(&id.name) {
        return Err(EncodeError::InvalidName(id.to_string()));
    }
    let mut sorted: Vec<&Record> = records.iter().collect();
    sorted.sort_by(|a, b| {
        (&a.namespace, &a.name, a.not_before, a.hash).cmp(&(&b.namespace, &b.name, b.not_before, b.hash))
    });
    let mut seen = std::collections::HashSet::with_capacity(sorted.len());
    for record in &sorted {
        record.validate().map_err(|reason| EncodeError::InvalidRecord { key_id: record.key_id.to_string(), reason })?;
        if !seen.insert(record.hash) {
            return Err(EncodeError::DuplicateHash(record.key_id.to_string()));
        }
    }

    let body_budget = max_bytes.saturating_sub(HEADER_BUDGET);
    let mut bodies: Vec<(String, usize)> = vec![(String::new(), 0)];
    for record in sorted {
        let line = record_line(record);
        if line.len() > body_budget {
            return Err(EncodeError::RecordTooLarge {
                namespace: record.namespace.clone(),
                name: record.name.clone(),
                max_bytes,
            });
        }
        let needs_new = bodies.last().is_some_and(|(body, _)| body.len() + line.len() > body_budget);
        if needs_new {
            bodies.push((String::new(), 0));
        }
        let (body, count) = bodies.last_mut().expect("bodies always has at least one shard");
        body.push_str(&line);
        *count += 1;
    }

    let total = bodies.len();
    if total > MAX_SHARDS {
        return Err(EncodeError::Limits);
    }
    let (version, gate) = match access {
        Access::Enabled => (FORMAT_VERSION, String::new()),
        closed => (GATED_FORMAT_VERSION, format!(" access={closed}")),
    };
    Ok(bodies
        .into_iter()
        .enumerate()
        .map(|(i, (body, count))| {
            format!(
                "{MAGIC} {version} keyset={id} generation={generation} shard={}/{total} records={count}{gate}\n{body}",
                i + 1
            )
        })
        .collect())
}
