//! Reading key-set shards strictly: any deviation from the format is an error
//! naming the line and field, and no input can make the decoder panic.

use std::collections::HashMap;

use super::error::{DecodeError, DecodeErrorKind, Field, at, invalid};
use super::format::{valid_dns_label, valid_dns_subdomain};
use super::grammar::{lines, parse_header, parse_rate_limit, parse_scopes, parse_time, shard_text, split_fields};
use super::record::{Access, KeySetId, Record, RecordState};
use crate::token::{KeyHash, KeyId};

/// One decoded shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// The key set the shard belongs to.
    pub id: KeySetId,
    /// The publisher's generation counter.
    pub generation: u64,
    /// This shard's position, from 1.
    pub index: usize,
    /// How many shards the key set has.
    pub total: usize,
    /// The key set's gate, as this shard's header states it.
    pub access: Access,
    /// The shard's records.
    pub records: Vec<Record>,
}

fn parse_record(text: &str, line: usize) -> Result<Record, DecodeError> {
    let [hash, key_id, owner, scopes, not_before, not_after, state, rate_limit] =
        split_fields(text).map_err(|count| at(line, DecodeErrorKind::FieldCount(count)))?;
    let hash: KeyHash = hash.parse().map_err(|_| invalid(line, Field::Hash))?;
    let key_id: KeyId = key_id.parse().map_err(|_| invalid(line, Field::KeyId))?;
    if key_id != hash.key_id() {
        return Err(at(line, DecodeErrorKind::KeyIdMismatch));
    }
    let (namespace, name) = owner
        .split_once('/')
        .filter(|(ns, name)| valid_dns_label(ns) && valid_dns_subdomain(name))
        .ok_or_else(|| invalid(line, Field::Owner))?;
    let scopes = parse_scopes(scopes, line)?;
    let not_before = parse_time(not_before).ok_or_else(|| invalid(line, Field::NotBefore))?;
    let not_after = match not_after {
        "-" => None,
        t => Some(parse_time(t).ok_or_else(|| invalid(line, Field::NotAfter))?),
    };
    if not_after.is_some_and(|end| end <= not_before) {
        return Err(at(line, DecodeErrorKind::EmptyWindow));
    }
    let state: RecordState = state.parse().map_err(|()| invalid(line, Field::State))?;
    let rate_limit = parse_rate_limit(rate_limit, line)?;
    Ok(Record {
        hash,
        key_id,
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        scopes,
        not_before,
        not_after,
        state,
        rate_limit,
    })
}

/// Decode one stored shard, plain or gzip-compressed. Lines starting with `#` are comments.
pub fn decode_shard(stored: &[u8]) -> Result<Shard, DecodeError> {
    let text = shard_text(stored)?;
    let (header_line, header, lines) = lines(&text)?;
    let (id, generation, index, total, declared, access) =
        parse_header(header).map_err(|e| DecodeError { line: header_line, ..e })?;

    let mut records = Vec::with_capacity(declared.min(16_384));
    let mut seen: HashMap<KeyHash, usize> = HashMap::with_capacity(declared.min(16_384));
    for (number, line) in lines {
        if line.is_empty() {
            return Err(at(number, DecodeErrorKind::BlankLine));
        }
        let record = parse_record(line, number)?;
        if let Some(first) = seen.insert(record.hash, number) {
            return Err(at(number, DecodeErrorKind::DuplicateHash(first)));
        }
        records.push(record);
    }
    if records.len() != declared {
        return Err(at(0, DecodeErrorKind::RecordCount { declared, found: records.len() }));
    }
    Ok(Shard { id, generation, index, total, access, records })
}
