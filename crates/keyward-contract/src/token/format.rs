//! The text format of a token: prefix rules, base62 body and CRC32 checksum.

use std::fmt;
use std::str::FromStr;

use rand::{CryptoRng, RngCore};

/// Random base62 characters in a token: 33 × log2(62) ≈ 196.5 bits.
pub const RANDOM_LEN: usize = 33;
/// Base62 characters encoding the CRC32 checksum (62^6 > 2^32).
pub const CHECKSUM_LEN: usize = 6;
/// Longest prefix accepted.
pub const MAX_PREFIX_LEN: usize = 24;

/// A regular expression secret scanners can use to find keyward tokens.
///
/// It matches the shape only; run `keyward token check` on a hit to verify
/// the checksum and drop false positives.
pub const SCANNER_REGEX: &str = r"\b[a-z][a-z0-9_]{0,23}_[0-9A-Za-z]{39}\b";

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A validated token prefix such as `acme_live`: lowercase letters, digits and
/// single underscores, starting with a letter, ending with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Prefix(String);

/// Why a prefix was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// The prefix is empty.
    #[error("prefix is empty")]
    Empty,
    /// The prefix is longer than [`MAX_PREFIX_LEN`].
    #[error("prefix is longer than {MAX_PREFIX_LEN} characters")]
    TooLong,
    /// The prefix has a character other than a-z, 0-9 and `_`, or misplaced underscores.
    #[error(
        "prefix must start with a lowercase letter, end with a letter or digit, and contain only a-z, 0-9 and single underscores"
    )]
    Invalid,
}

/// The admission pattern for prefixes; [`Prefix::from_str`] accepts exactly this language.
pub const PREFIX_PATTERN: &str = r"^[a-z]([a-z0-9]|_[a-z0-9]){0,23}$";

impl Prefix {
    /// The prefix text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Prefix {
    /// `kw`, used when an ApiKey names no prefix.
    fn default() -> Self {
        Prefix("kw".to_owned())
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        check_prefix(s)?;
        Ok(Prefix(s.to_owned()))
    }
}

/// The rules of [`Prefix::from_str`], without allocating when the prefix is valid.
fn check_prefix(s: &str) -> Result<(), PrefixError> {
    if s.is_empty() {
        return Err(PrefixError::Empty);
    }
    if s.len() > MAX_PREFIX_LEN {
        return Err(PrefixError::TooLong);
    }
    let b = s.as_bytes();
    let ok = b[0].is_ascii_lowercase()
        && b[b.len() - 1] != b'_'
        && !s.contains("__")
        && b.iter().all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_');
    if ok { Ok(()) } else { Err(PrefixError::Invalid) }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a string is not a well-formed token. Never carries the token text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// There is no `_` separating prefix and body.
    #[error("token has no '_' between prefix and body")]
    MissingSeparator,
    /// The part before the last `_` is not a valid prefix.
    #[error("token prefix is not valid: {0}")]
    InvalidPrefix(PrefixError),
    /// The token's prefix differs from the one required.
    #[error("token prefix is not {expected:?}")]
    WrongPrefix {
        /// The prefix that was required.
        expected: String,
    },
    /// The body has a character outside base62.
    #[error("token body has a character outside 0-9, A-Z, a-z")]
    InvalidCharacter,
    /// The body has the wrong number of characters.
    #[error("token body has {found} characters, expected {expected}")]
    WrongLength {
        /// Characters found after the separator.
        found: usize,
        /// Characters a token has after the separator.
        expected: usize,
    },
    /// The checksum does not match: a typo, a truncated copy, or not a keyward token.
    #[error("token checksum does not match")]
    ChecksumMismatch,
}

pub(super) fn push_random<R: RngCore + CryptoRng>(out: &mut String, rng: &mut R) {
    // Rejection sampling keeps every character uniform: bytes >= 248 (4 × 62) are redrawn.
    let mut pushed = 0;
    let mut buf = [0u8; 64];
    while pushed < RANDOM_LEN {
        rng.fill_bytes(&mut buf);
        for &byte in &buf {
            if byte < 248 && pushed < RANDOM_LEN {
                out.push(char::from(ALPHABET[usize::from(byte % 62)]));
                pushed += 1;
            }
        }
    }
}

fn checksum_chars(payload: &str) -> [u8; CHECKSUM_LEN] {
    let mut value = u64::from(crc32fast::hash(payload.as_bytes()));
    let mut chars = [b'0'; CHECKSUM_LEN];
    for slot in chars.iter_mut().rev() {
        // value % 62 < 62, so the index is in range and the cast cannot truncate.
        *slot = ALPHABET[(value % 62) as usize];
        value /= 62;
    }
    chars
}

pub(super) fn push_checksum(out: &mut String) {
    let chars = checksum_chars(out);
    out.extend(chars.iter().map(|&b| char::from(b)));
}

/// Check format and checksum without copying the text.
pub(crate) fn check(text: &str) -> Result<(), FormatError> {
    let (prefix, body) = text.rsplit_once('_').ok_or(FormatError::MissingSeparator)?;
    // Checked without building a Prefix: the verifier calls this on every request.
    check_prefix(prefix).map_err(FormatError::InvalidPrefix)?;
    if !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(FormatError::InvalidCharacter);
    }
    let expected = RANDOM_LEN + CHECKSUM_LEN;
    if body.len() != expected {
        return Err(FormatError::WrongLength { found: body.len(), expected });
    }
    let (payload, checksum) = text.split_at(text.len() - CHECKSUM_LEN);
    if checksum.as_bytes() != checksum_chars(payload) {
        return Err(FormatError::ChecksumMismatch);
    }
    Ok(())
}
