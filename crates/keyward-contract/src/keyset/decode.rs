//! Reading key-set shards strictly: any deviation from the format is an error
//! naming the line and field, and no input can make the decoder panic.
//!
//! Errors never quote the offending text: a hand-edited file could hold a
//! token where a hash belongs, and error messages end up in logs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use jiff::Timestamp;

use super::{FORMAT_VERSION, KeySet, KeySetId, MAGIC, RateLimit, Record, RecordState};
use crate::duration::KeyDuration;
use crate::scope::Scope;
use crate::token::{KeyHash, KeyId};

/// Largest shard the decoder reads; a ConfigMap cannot hold more.
pub const MAX_DECODE_BYTES: usize = 1024 * 1024;

/// Most shards one key set may have.
pub const MAX_SHARDS: usize = 10_000;

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
    /// The shard's records.
    pub records: Vec<Record>,
}

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
    /// The shard's compressed text expands beyond [`super::MAX_TEXT_BYTES`].
    #[error("shard expands to more than {} bytes", super::MAX_TEXT_BYTES)]
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
    #[error("unsupported format version (this build reads {FORMAT_VERSION})")]
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

fn at(line: usize, kind: DecodeErrorKind) -> DecodeError {
    DecodeError { line, kind }
}

fn invalid(line: usize, field: Field) -> DecodeError {
    at(line, DecodeErrorKind::InvalidField(field))
}

/// Whether `s` is an RFC 1123 label: what Kubernetes accepts as a namespace.
pub(super) fn valid_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    let edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= 63
        && b.first().is_some_and(edge)
        && b.last().is_some_and(edge)
        && b.iter().all(|c| edge(c) || *c == b'-')
}

/// Whether `s` is an RFC 1123 subdomain: what Kubernetes accepts as an object name.
pub(super) fn valid_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(valid_dns_label)
}

pub(super) fn parse_time(text: &str) -> Option<Timestamp> {
    // Exactly YYYY-MM-DDTHH:MM:SSZ, so that one instant has one spelling.
    let b = text.as_bytes();
    let shape_ok = b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        });
    if !shape_ok {
        return None;
    }
    // Every field is a fixed run of digits, so the fields name one civil time and
    // one spelling; building it refuses what is out of range (month 13, February
    // 30, a leap second `23:59:60`). Faster than parsing and formatting back to
    // compare, which a reload of 100,000 keys does twice per record.
    let number = |range: std::ops::Range<usize>| b[range].iter().fold(0i16, |n, d| n * 10 + i16::from(d - b'0'));
    let [hour, minute, second] = [number(11..13), number(14..16), number(17..19)].map(|n| i8::try_from(n).ok());
    let date =
        jiff::civil::Date::new(number(0..4), i8::try_from(number(5..7)).ok()?, i8::try_from(number(8..10)).ok()?)
            .ok()?;
    let time = jiff::civil::Time::new(hour?, minute?, second?, 0).ok()?;
    jiff::tz::Offset::UTC.to_timestamp(date.to_datetime(time)).ok()
}

fn parse_u64(text: &str) -> Option<u64> {
    // Digits only, no leading zeros: one number, one spelling.
    if text.is_empty()
        || text.len() > 20
        || !text.bytes().all(|b| b.is_ascii_digit())
        || (text.len() > 1 && text.starts_with('0'))
    {
        return None;
    }
    text.parse().ok()
}

fn parse_u32_positive(text: &str) -> Option<u32> {
    parse_u64(text).and_then(|n| u32::try_from(n).ok()).filter(|n| *n > 0)
}

pub(super) fn parse_header(line: &str) -> Result<(KeySetId, u64, usize, usize, usize), DecodeError> {
    let mut words = line.split(' ');
    if words.next() != Some(MAGIC) {
        return Err(at(1, DecodeErrorKind::NotAKeySet));
    }
    match words.next() {
        Some(FORMAT_VERSION) => {}
        Some(v) if v.starts_with('v') => return Err(at(1, DecodeErrorKind::UnsupportedVersion)),
        _ => return Err(invalid(1, Field::Version)),
    }
    let mut value = |key: &str, field: Field| -> Result<&str, DecodeError> {
        words
            .next()
            .and_then(|w| w.strip_prefix(key))
            .and_then(|w| w.strip_prefix('='))
            .ok_or_else(|| invalid(1, field))
    };
    let keyset = value("keyset", Field::KeySet)?;
    let id = keyset
        .split_once('/')
        .filter(|(ns, name)| valid_dns_label(ns) && valid_dns_label(name))
        .map(|(ns, name)| KeySetId { namespace: ns.to_owned(), name: name.to_owned() })
        .ok_or_else(|| invalid(1, Field::KeySet))?;
    let generation = parse_u64(value("generation", Field::Generation)?).ok_or_else(|| invalid(1, Field::Generation))?;
    let (index, total) = value("shard", Field::Shard)?
        .split_once('/')
        .and_then(|(i, n)| Some((parse_u64(i)?, parse_u64(n)?)))
        .and_then(|(i, n)| Some((usize::try_from(i).ok()?, usize::try_from(n).ok()?)))
        .filter(|(i, n)| *i >= 1 && i <= n && *n <= MAX_SHARDS)
        .ok_or_else(|| invalid(1, Field::Shard))?;
    let records = value("records", Field::Records)?;
    let records = parse_u64(records).and_then(|n| usize::try_from(n).ok()).ok_or_else(|| invalid(1, Field::Records))?;
    if words.next().is_some() {
        return Err(invalid(1, Field::Records));
    }
    Ok((id, generation, index, total, records))
}

pub(super) fn parse_scopes(text: &str, line: usize) -> Result<Vec<Scope>, DecodeError> {
    let mut scopes = Vec::new();
    for part in text.split(',') {
        let scope: Scope = part.parse().map_err(|_| invalid(line, Field::Scopes))?;
        if scopes.contains(&scope) {
            return Err(at(line, DecodeErrorKind::DuplicateScope));
        }
        scopes.push(scope);
    }
    Ok(scopes)
}

pub(super) fn parse_rate_limit(text: &str, line: usize) -> Result<Option<RateLimit>, DecodeError> {
    if text == "-" {
        return Ok(None);
    }
    let bad = || invalid(line, Field::RateLimit);
    let mut parts = text.split('/');
    let requests = parts.next().and_then(parse_u32_positive).ok_or_else(bad)?;
    let period: KeyDuration = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    if period.get().is_zero() {
        return Err(bad());
    }
    let burst = match parts.next() {
        None => requests,
        // A burst equal to requests is written by leaving it out.
        Some(b) => parse_u32_positive(b).filter(|b| *b != requests).ok_or_else(bad)?,
    };
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(Some(RateLimit { requests, period, burst }))
}

/// A record line's eight fields, or how many fields it has instead.
pub(super) fn split_fields(text: &str) -> Result<[&str; 8], usize> {
    // Split by hand without collecting: this runs once per key on every reload, and
    // `str::split` searches for each short field with a memchr call.
    let mut fields = [""; 8];
    let mut count = 0;
    let mut start = 0;
    for (i, b) in text.bytes().enumerate() {
        if b == b' ' {
            if let Some(field) = fields.get_mut(count) {
                *field = text.get(start..i).unwrap_or_default();
            }
            count += 1;
            start = i + 1;
        }
    }
    if let Some(field) = fields.get_mut(count) {
        *field = text.get(start..).unwrap_or_default();
    }
    count += 1;
    if count == 8 { Ok(fields) } else { Err(count) }
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

/// The text of a stored shard, checked as a whole (size, compression, ASCII), with one final `\n` removed.
///
/// Shared by [`decode_shard`] and the verifier's scanner ([`super::scan`]), so both see the same text.
pub(super) fn shard_text(stored: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, DecodeError> {
    if stored.len() > MAX_DECODE_BYTES {
        return Err(at(0, DecodeErrorKind::TooLarge));
    }
    let text = super::packed::unpack(stored).map_err(|e| {
        at(
            0,
            match e {
                super::packed::UnpackError::Corrupt => DecodeErrorKind::CorruptCompression,
                super::packed::UnpackError::TooLarge => DecodeErrorKind::TextTooLarge,
            },
        )
    })?;
    // Printable ASCII (space to `~`) or `\n`; folded per chunk without early exit so it vectorises.
    let printable = |b: u8| b.wrapping_sub(b' ') < 0x5f || b == b'\n';
    if !text.chunks(256).all(|chunk| chunk.iter().fold(true, |ok, &b| ok & printable(b))) {
        return Err(at(0, DecodeErrorKind::NotAscii));
    }
    Ok(text)
}

/// The numbered non-comment lines of checked shard text, and the header line's number and text.
pub(super) fn lines(bytes: &[u8]) -> Result<(usize, &str, impl Iterator<Item = (usize, &str)>), DecodeError> {
    // Checked by shard_text: every byte is ASCII.
    let text = std::str::from_utf8(bytes).map_err(|_| at(0, DecodeErrorKind::NotAscii))?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    if text.is_empty() {
        return Err(at(0, DecodeErrorKind::MissingHeader));
    }
    let mut lines = text.split('\n').enumerate().map(|(i, l)| (i + 1, l)).filter(|(_, l)| !l.starts_with('#'));
    let (header_line, header) = lines.next().ok_or(at(0, DecodeErrorKind::MissingHeader))?;
    if header.is_empty() {
        return Err(at(header_line, DecodeErrorKind::MissingHeader));
    }
    Ok((header_line, header, lines))
}

/// Decode one stored shard, plain or gzip-compressed. Lines starting with `#` are comments.
pub fn decode_shard(stored: &[u8]) -> Result<Shard, DecodeError> {
    let text = shard_text(stored)?;
    let (header_line, header, lines) = lines(&text)?;
    let (id, generation, index, total, declared) =
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
    Ok(Shard { id, generation, index, total, records })
}

/// Why a set of shards does not form whole key sets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssembleError {
    /// Shards of one key set carry different generations: an update is still arriving.
    #[error("key set {id}: shards from generations {a} and {b} are mixed")]
    MixedGenerations {
        /// The key set.
        id: KeySetId,
        /// One generation seen.
        a: u64,
        /// Another generation seen.
        b: u64,
    },
    /// Shards disagree on how many shards there are.
    #[error("key set {0}: shards disagree on the shard count")]
    ShardCountDisagrees(KeySetId),
    /// The same shard index appears twice.
    #[error("key set {id}: shard {index} appears twice")]
    DuplicateShard {
        /// The key set.
        id: KeySetId,
        /// The repeated index.
        index: usize,
    },
    /// A shard is missing.
    #[error("key set {id}: shard {index} of {total} is missing")]
    MissingShard {
        /// The key set.
        id: KeySetId,
        /// The missing index.
        index: usize,
        /// The shard count.
        total: usize,
    },
    /// The same hash appears in two shards or two key sets.
    #[error("key id {0} appears in more than one record")]
    DuplicateHash(KeyId),
}

/// Put decoded shards together into whole key sets, checking that each set is complete and consistent.
///
/// Any doubt is an error: a verifier that gets one keeps its last good key
/// set rather than serve a partial or mixed one.
pub fn assemble(shards: Vec<Shard>) -> Result<Vec<KeySet>, AssembleError> {
    let mut seen_hashes = HashSet::with_capacity(shards.iter().map(|s| s.records.len()).sum());
    let mut sets = Vec::new();
    for (id, generation, shards) in group(shards, |s| (&s.id, s.generation, s.index, s.total))? {
        let mut records = Vec::with_capacity(shards.iter().map(|s| s.records.len()).sum());
        for record in shards.into_iter().flat_map(|s| s.records) {
            if !seen_hashes.insert(record.hash) {
                return Err(AssembleError::DuplicateHash(record.key_id));
            }
            records.push(record);
        }
        sets.push(KeySet { id, generation, records });
    }
    Ok(sets)
}

/// Group shards by key set, each group in shard order, checking that every set is whole and of one generation.
///
/// `header` gives a shard's key set, generation, index and shard count. Hashes are not looked at.
pub(super) fn group<T>(
    shards: Vec<T>,
    header: impl Fn(&T) -> (&KeySetId, u64, usize, usize),
) -> Result<Vec<(KeySetId, u64, Vec<T>)>, AssembleError> {
    let mut by_set: BTreeMap<KeySetId, Vec<T>> = BTreeMap::new();
    for shard in shards {
        by_set.entry(header(&shard).0.clone()).or_default().push(shard);
    }
    let mut sets = Vec::with_capacity(by_set.len());
    for (id, mut shards) in by_set {
        shards.sort_by_key(|s| header(s).2);
        let (_, generation, _, total) = header(&shards[0]);
        for shard in &shards {
            let (_, shard_generation, _, shard_total) = header(shard);
            if shard_generation != generation {
                return Err(AssembleError::MixedGenerations { id, a: generation, b: shard_generation });
            }
            if shard_total != total {
                return Err(AssembleError::ShardCountDisagrees(id));
            }
        }
        for (expected, shard) in (1..).zip(&shards) {
            let index = header(shard).2;
            if index != expected {
                return Err(if index < expected {
                    AssembleError::DuplicateShard { id, index }
                } else {
                    AssembleError::MissingShard { id, index: expected, total }
                });
            }
        }
        if shards.len() != total {
            return Err(AssembleError::MissingShard { id, index: shards.len() + 1, total });
        }
        sets.push((id, generation, shards));
    }
    Ok(sets)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// What `parse_time` did before it built the time from its digits: parse, then insist on the canonical spelling.
    fn parse_then_compare(text: &str) -> Option<Timestamp> {
        let time: Timestamp = text.parse().ok()?;
        (super::super::encode::format_time(time) == text).then_some(time)
    }

    #[test]
    fn times_at_the_edges_are_read_as_before() {
        for text in [
            "2026-11-22T12:00:00Z",
            "1970-01-01T00:00:00Z",
            "0000-01-01T00:00:00Z",
            "9999-12-30T21:59:59Z",
            "9999-12-31T23:59:59Z",
            "2024-02-29T23:59:59Z",
            "2025-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-00-10T00:00:00Z",
            "2026-01-00T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T23:60:00Z",
            "2027-12-31T23:59:60Z",
            "2027-12-31T23:59:99Z",
        ] {
            assert_eq!(parse_time(text), parse_then_compare(text), "{text}");
        }
    }

    proptest! {
        #[test]
        fn any_digits_are_read_as_before(text in "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z") {
            prop_assert_eq!(parse_time(&text), parse_then_compare(&text));
        }

        #[test]
        fn plausible_times_are_read_as_before(y in 1960u16..2100, m in 0u8..14, d in 0u8..33, h in 0u8..26, min in 0u8..62, s in 0u8..62) {
            let text = format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}Z");
            prop_assert_eq!(parse_time(&text), parse_then_compare(&text));
        }
    }
}
