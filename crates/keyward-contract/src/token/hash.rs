//! Token hashes (`sha256:<hex>`) and the key ids derived from them.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The SHA-256 of a token, written `sha256:<64 lowercase hex>`.
///
/// A token carries over 192 random bits, so a fast hash is enough: there is
/// nothing to brute-force. Equality is constant-time.
#[derive(Clone, Copy, PartialOrd, Ord)]
pub struct KeyHash([u8; 32]);

/// Why a hash string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashParseError {
    /// The text does not start with `sha256:`.
    #[error("hash must start with 'sha256:'")]
    MissingAlgorithm,
    /// The hex part is not 64 lowercase hex digits.
    #[error("hash must have 64 lowercase hex digits after 'sha256:'")]
    InvalidHex,
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl KeyHash {
    pub(crate) fn of_token_text(text: &str) -> KeyHash {
        KeyHash(Sha256::digest(text.as_bytes()).into())
    }

    /// The raw digest.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A hash from a raw digest.
    #[must_use]
    pub fn from_bytes(bytes: [u8; 32]) -> KeyHash {
        KeyHash(bytes)
    }

    /// The key id: the first [`KeyId::LEN`] hex digits of the hash.
    #[must_use]
    pub fn key_id(&self) -> KeyId {
        let mut id = [0u8; KeyId::LEN];
        for (i, slot) in id.iter_mut().enumerate() {
            let byte = self.0[i / 2];
            let nibble = if i % 2 == 0 { byte >> 4 } else { byte & 0x0f };
            *slot = HEX[usize::from(nibble)];
        }
        KeyId(id)
    }
}

impl PartialEq for KeyHash {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for KeyHash {}

impl std::hash::Hash for KeyHash {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl fmt::Display for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Each byte's value as a lowercase hex digit, or 0xff.
const HEX_VALUE: [u8; 256] = {
    let mut table = [0xff; 256];
    let mut i = 0u8;
    while i < 16 {
        table[HEX[i as usize] as usize] = i;
        i += 1;
    }
    table
};

impl FromStr for KeyHash {
    type Err = HashParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = s.strip_prefix("sha256:").ok_or(HashParseError::MissingAlgorithm)?;
        let hex = hex.as_bytes();
        if hex.len() != 64 {
            return Err(HashParseError::InvalidHex);
        }
        // Table lookups without a branch per digit (key sets hold millions of hashes);
        // any byte that is not a lowercase hex digit sets a high bit in `bad`.
        let mut out = [0u8; 32];
        let mut bad = 0u8;
        for (slot, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
            let (hi, lo) = (HEX_VALUE[usize::from(pair[0])], HEX_VALUE[usize::from(pair[1])]);
            bad |= hi | lo;
            *slot = (hi << 4) | (lo & 0x0f);
        }
        if bad & 0xf0 != 0 {
            return Err(HashParseError::InvalidHex);
        }
        Ok(KeyHash(out))
    }
}

impl serde::Serialize for KeyHash {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for KeyHash {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

/// A short, public name for one token: the first 12 hex digits of its hash.
///
/// Being derived from the hash, it needs no storage of its own and anyone
/// holding the token can compute it (`keyward token hash` prints both). It is
/// what status, logs, Events and verifier headers use to name a token.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId([u8; KeyId::LEN]);

/// Why a key id string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key id must be 12 lowercase hex digits")]
pub struct KeyIdParseError;

impl KeyId {
    /// Hex digits in a key id (48 bits).
    pub const LEN: usize = 12;

    /// The id as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever stored (see key_id and from_str).
        std::str::from_utf8(&self.0).expect("key ids hold ASCII hex digits only")
    }
}

impl FromStr for KeyId {
    type Err = KeyIdParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes: [u8; KeyId::LEN] = s.as_bytes().try_into().map_err(|_| KeyIdParseError)?;
        if bytes.iter().all(|&b| hex_value(b).is_some()) { Ok(KeyId(bytes)) } else { Err(KeyIdParseError) }
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.as_str())
    }
}

impl serde::Serialize for KeyId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for KeyId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}
