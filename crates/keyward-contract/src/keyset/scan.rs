//! A fast reader of shards for the verifier: the same acceptance as [`decode_shard`], compact output, no reasons.
//!
//! The verifier reloads whole key sets of up to millions of keys, and needs of
//! each record only its hash, validity window, state, scopes and rate limit.
//! [`scan_shard`] reads a stored shard into exactly that, without allocating
//! per record: namespace and name are checked but not kept (unless asked for,
//! with [`scan_shard_keeping_owners`], into one [`OwnerList`] per shard), and
//! scopes and rate limits are parsed once per distinct spelling in the shard
//! and referred to by number.
//!
//! [`decode_shard`] stays the specification. The scanner shares its pieces
//! (size, gzip and ASCII checks, line splitting, header, times, owner, scope
//! and rate-limit parsing) and says only whether a shard is acceptable: on
//! `None` a caller decodes the same bytes with [`decode_shard`] to learn why,
//! so every error message comes from the strict decoder (line and field,
//! never the input). Property tests check that both accept the same shards
//! and read the same values.
//!
//! One check is left to the caller: duplicate hashes, which the verifier's
//! table detects across all shards at once anyway.
//!
//! [`decode_shard`]: super::decode_shard

use std::collections::HashMap;

use super::assemble::{AssembleError, ShardGroup, group};
use super::format::{MAX_DECODE_BYTES, MAX_TEXT_BYTES, valid_dns_label, valid_dns_subdomain};
use super::grammar::{lines, parse_header, parse_rate_limit, parse_scopes, parse_time, shard_text, split_fields};
use super::gzip::GZIP_MAGIC;
use super::record::{Access, KeySetId, RateLimit, RecordState};
use crate::scope::Scope;
use crate::token::KeyHash;

/// One record as the verifier keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactRecord {
    /// SHA-256 of the token.
    pub hash: KeyHash,
    /// Refused before this Unix second.
    pub not_before: i64,
    /// Refused from this Unix second on; `None` for never.
    pub not_after: Option<i64>,
    /// Active, inactive or revoked.
    pub state: RecordState,
    /// Index into [`ScannedShard::scopes`].
    pub scopes: u32,
    /// Index into [`ScannedShard::rate_limits`], if the key has a rate limit.
    pub rate_limit: Option<u32>,
}

/// One shard, read by [`scan_shard`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedShard {
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
    /// Each distinct scope list of the shard, once.
    pub scopes: Vec<Vec<Scope>>,
    /// Each distinct rate limit of the shard, once.
    pub rate_limits: Vec<RateLimit>,
    /// The records, in shard order.
    pub records: Vec<CompactRecord>,
    /// Each record's `namespace/name` owner, in record order, when the scan kept them.
    pub owners: Option<OwnerList>,
}

/// `namespace/name` owners, one per record, kept in one string (no allocation per record).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnerList {
    text: String,
    /// Where each owner ends in `text`.
    ends: Vec<u32>,
}

impl OwnerList {
    /// Add the next record's owner; `None` once the text would pass 4 GiB.
    pub fn push(&mut self, owner: &str) -> Option<()> {
        let end = u32::try_from(self.text.len() + owner.len()).ok()?;
        self.text.push_str(owner);
        self.ends.push(end);
        Some(())
    }

    /// The owner of record `i`.
    #[must_use]
    pub fn get(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)? as usize;
        let start = match i.checked_sub(1) {
            Some(before) => *self.ends.get(before)? as usize,
            None => 0,
        };
        self.text.get(start..end)
    }

    /// How many owners the list holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether the list holds no owner.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Approximate heap bytes held.
    #[must_use]
    pub fn heap_bytes(&self) -> usize {
        self.text.capacity() + self.ends.capacity() * std::mem::size_of::<u32>()
    }
}

/// What a shard's header line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardHeader {
    /// The key set the shard belongs to.
    pub id: KeySetId,
    /// The publisher's generation counter.
    pub generation: u64,
    /// This shard's position, from 1.
    pub index: usize,
    /// How many shards the key set has.
    pub total: usize,
    /// How many records the shard says it holds.
    pub records: usize,
    /// The key set's gate.
    pub access: Access,
}

impl ScannedShard {
    /// The header this shard was read with.
    #[must_use]
    pub fn header(&self) -> ShardHeader {
        ShardHeader {
            id: self.id.clone(),
            generation: self.generation,
            index: self.index,
            total: self.total,
            records: self.records.len(),
            access: self.access,
        }
    }
}

/// How much text [`peek_header`] reads to find the header line.
const PEEK_BYTES: usize = 64 * 1024;

/// A shard's header, read from its first bytes only (for gzip: inflating only those).
///
/// Lets a reader size its index before scanning. `None` if the header is not
/// among the first 64 KiB or is malformed, or if the shard could not hold the
/// records it declares (every record takes over 100 bytes), so that a lying
/// header cannot make a reader reserve memory. It is only a preview: the
/// header [`scan_shard`] then reads must be the same.
#[must_use]
pub fn peek_header(stored: &[u8]) -> Option<ShardHeader> {
    use std::io::Read as _;
    if stored.len() > MAX_DECODE_BYTES {
        return None;
    }
    let (prefix, whole, most_text) = if stored.starts_with(&GZIP_MAGIC) {
        let mut prefix = Vec::with_capacity(PEEK_BYTES);
        let limit = u64::try_from(PEEK_BYTES).ok()?;
        flate2::bufread::GzDecoder::new(stored).take(limit).read_to_end(&mut prefix).ok()?;
        let whole = prefix.len() < PEEK_BYTES;
        (std::borrow::Cow::Owned(prefix), whole, MAX_TEXT_BYTES)
    } else {
        let end = stored.len().min(PEEK_BYTES);
        (std::borrow::Cow::Borrowed(&stored[..end]), end == stored.len(), stored.len())
    };
    let mut rest: &[u8] = &prefix;
    let line = loop {
        let line = match rest.iter().position(|b| *b == b'\n') {
            Some(end) => {
                let line = &rest[..end];
                rest = &rest[end + 1..];
                line
            }
            None if whole => std::mem::take(&mut rest),
            None => return None,
        };
        if !line.starts_with(b"#") {
            break line;
        }
    };
    let (id, generation, index, total, records, access) = parse_header(std::str::from_utf8(line).ok()?).ok()?;
    (records <= most_text / 100).then_some(ShardHeader { id, generation, index, total, records, access })
}

/// One whole key set's tagged shard headers, in shard order, with its id, generation and gate.
pub type HeaderSet<T> = ShardGroup<(T, ShardHeader)>;

/// Check that shard headers form whole key sets (as [`super::assemble`] does) and group them.
///
/// Each header comes with a caller's tag (such as its position in a list of files); every set's
/// shards come back in shard order.
pub fn assemble_headers<T>(headers: Vec<(T, ShardHeader)>) -> Result<Vec<HeaderSet<T>>, AssembleError> {
    group(headers, |(_, h)| (&h.id, h.generation, h.index, h.total, h.access))
}

/// One whole key set: its scanned shards, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedSet {
    /// Which key set this is.
    pub id: KeySetId,
    /// The generation all its shards carry.
    pub generation: u64,
    /// The gate all its shards carry.
    pub access: Access,
    /// Shards 1 to n.
    pub shards: Vec<ScannedShard>,
}

/// Parsed-once values of one shard, by their spelling.
#[derive(Default)]
struct Interner<'a> {
    scopes: HashMap<&'a str, u32>,
    rate_limits: HashMap<&'a str, u32>,
    scope_lists: Vec<Vec<Scope>>,
    limits: Vec<RateLimit>,
}

impl<'a> Interner<'a> {
    fn scopes(&mut self, text: &'a str) -> Option<u32> {
        if let Some(id) = self.scopes.get(text) {
            return Some(*id);
        }
        let scopes = parse_scopes(text, 0).ok()?;
        let id = u32::try_from(self.scope_lists.len()).ok()?;
        self.scope_lists.push(scopes);
        self.scopes.insert(text, id);
        Some(id)
    }

    /// The number of a rate limit other than `-`.
    fn rate_limit(&mut self, text: &'a str) -> Option<u32> {
        if let Some(id) = self.rate_limits.get(text) {
            return Some(*id);
        }
        let limit = parse_rate_limit(text, 0).ok()??;
        let id = u32::try_from(self.limits.len()).ok()?;
        self.limits.push(limit);
        self.rate_limits.insert(text, id);
        Some(id)
    }

    fn record(&mut self, line: &'a str) -> Option<(CompactRecord, &'a str)> {
        // An empty line has one field, so the field count refuses blank lines too.
        let [hash_text, key_id, owner, scopes, not_before, not_after, state, rate_limit] = split_fields(line).ok()?;
        let hash: KeyHash = hash_text.parse().ok()?;
        // Both are lowercase hex once the hash parsed, so equal text is an equal key id.
        if key_id.as_bytes() != hash_text.as_bytes().get(7..19)? {
            return None;
        }
        let (namespace, name) = owner.split_once('/')?;
        if !valid_dns_label(namespace) || !valid_dns_subdomain(name) {
            return None;
        }
        let scopes = self.scopes(scopes)?;
        let not_before = parse_time(not_before)?;
        let not_after = match not_after {
            "-" => None,
            t => Some(parse_time(t)?),
        };
        if not_after.is_some_and(|end| end <= not_before) {
            return None;
        }
        let state = state.parse().ok()?;
        let rate_limit = match rate_limit {
            "-" => None,
            limit => Some(self.rate_limit(limit)?),
        };
        let record = CompactRecord {
            hash,
            not_before: not_before.as_second(),
            not_after: not_after.map(jiff::Timestamp::as_second),
            state,
            scopes,
            rate_limit,
        };
        Some((record, owner))
    }
}

/// Read one stored shard (plain or gzip) if [`super::decode_shard`] would accept it, apart from duplicate hashes.
///
/// `None` says only that the shard is not acceptable; decode it to learn why.
#[must_use]
pub fn scan_shard(stored: &[u8]) -> Option<ScannedShard> {
    scan(stored, false)
}

/// [`scan_shard`], also keeping each record's `namespace/name` owner (for an audit log).
#[must_use]
pub fn scan_shard_keeping_owners(stored: &[u8]) -> Option<ScannedShard> {
    scan(stored, true)
}

fn scan(stored: &[u8], keep_owners: bool) -> Option<ScannedShard> {
    let text = shard_text(stored).ok()?;
    let (_, header, lines) = lines(&text).ok()?;
    let (id, generation, index, total, declared, access) = parse_header(header).ok()?;
    // A record takes well over 64 bytes, so this bounds what a lying header can make us reserve.
    let mut records = Vec::with_capacity(declared.min(text.len() / 64 + 1));
    let mut interner = Interner::default();
    let mut owners = keep_owners.then(OwnerList::default);
    for (_, line) in lines {
        let (record, owner) = interner.record(line)?;
        records.push(record);
        if let Some(owners) = &mut owners {
            owners.push(owner)?;
        }
    }
    if records.len() != declared {
        return None;
    }
    Some(ScannedShard {
        id,
        generation,
        index,
        total,
        access,
        scopes: interner.scope_lists,
        rate_limits: interner.limits,
        records,
        owners,
    })
}

/// Put scanned shards together into whole key sets, with the checks of [`super::assemble`] except duplicate hashes.
pub fn assemble_scanned(shards: Vec<ScannedShard>) -> Result<Vec<ScannedSet>, AssembleError> {
    Ok(group(shards, |s| (&s.id, s.generation, s.index, s.total, s.access))?
        .into_iter()
        .map(|(id, generation, access, shards)| ScannedSet { id, generation, access, shards })
        .collect())
}
