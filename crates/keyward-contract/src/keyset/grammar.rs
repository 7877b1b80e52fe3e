//! The grammar of shard text, shared by the strict decoder and the verifier's scanner so that
//! both read the same language: times, numbers, the header, scopes, rate limits, fields and lines.

use jiff::Timestamp;

use super::error::{DecodeError, DecodeErrorKind, Field, at, invalid};
use super::format::{FORMAT_VERSION, GATED_FORMAT_VERSION, MAGIC, MAX_DECODE_BYTES, MAX_SHARDS, valid_dns_label};
use super::gzip::{UnpackError, unpack};
use super::record::{Access, KeySetId, RateLimit};
use crate::duration::KeyDuration;
use crate::scope::Scope;

pub(super) fn format_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A time in the one spelling the format allows.
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

/// A header's facts: key set, generation, shard index, shard count, declared records, gate.
pub(super) type HeaderFields = (KeySetId, u64, usize, usize, usize, Access);

/// Read a header line. `v1` has no gate ([`Access::Enabled`]); `v2` must end
/// with `access=payment-required` or `access=disabled`, the only spellings.
pub(super) fn parse_header(line: &str) -> Result<HeaderFields, DecodeError> {
    let mut words = line.split(' ');
    if words.next() != Some(MAGIC) {
        return Err(at(1, DecodeErrorKind::NotAKeySet));
    }
    let gated = match words.next() {
        Some(FORMAT_VERSION) => false,
        Some(GATED_FORMAT_VERSION) => true,
        Some(v) if v.starts_with('v') => return Err(at(1, DecodeErrorKind::UnsupportedVersion)),
        _ => return Err(invalid(1, Field::Version)),
    };
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
    let access = if gated {
        // A gate that is missing, unknown or misspelt refuses the whole shard: the set is never served open.
        let word = words.next().and_then(|w| w.strip_prefix("access=")).ok_or_else(|| invalid(1, Field::Access))?;
        word.parse().map_err(|()| invalid(1, Field::Access))?
    } else {
        Access::Enabled
    };
    if words.next().is_some() {
        return Err(invalid(1, if gated { Field::Access } else { Field::Records }));
    }
    Ok((id, generation, index, total, records, access))
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

/// The text of a stored shard, checked as a whole (size, compression, ASCII), with one final `\n` removed.
///
/// Shared by [`decode_shard`](super::decode_shard) and the verifier's scanner ([`super::scan`]), so both see the same text.
pub(super) fn shard_text(stored: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, DecodeError> {
    if stored.len() > MAX_DECODE_BYTES {
        return Err(at(0, DecodeErrorKind::TooLarge));
    }
    let text = unpack(stored).map_err(|e| {
        at(
            0,
            match e {
                UnpackError::Corrupt => DecodeErrorKind::CorruptCompression,
                UnpackError::TooLarge => DecodeErrorKind::TextTooLarge,
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// What `parse_time` did before it built the time from its digits: parse, then insist on the canonical spelling.
    fn parse_then_compare(text: &str) -> Option<Timestamp> {
        let time: Timestamp = text.parse().ok()?;
        (format_time(time) == text).then_some(time)
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
