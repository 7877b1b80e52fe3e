//! API key tokens: generation, the `<prefix>_<random><checksum>` format, and hashing.
//!
//! A token is `<prefix>_<random><checksum>`: a short lowercase prefix, an
//! underscore, [`RANDOM_LEN`] base62 characters from the OS CSPRNG (over 192
//! bits), and [`CHECKSUM_LEN`] base62 characters encoding the CRC32 of
//! everything before them. The checksum lets the verifier and secret scanners
//! reject mistyped or made-up tokens without a lookup. Only the SHA-256 of a
//! token ([`KeyHash`]) ever leaves the Secret the token lives in.
//!
//! This module depends on hashing and encoding crates only, never on kube or tokio.

mod format;
mod hash;

pub use format::{
    CHECKSUM_LEN, FormatError, MAX_PREFIX_LEN, PREFIX_PATTERN, Prefix, PrefixError, RANDOM_LEN, SCANNER_REGEX,
};
pub use hash::{HashParseError, KeyHash, KeyId, KeyIdParseError};

use std::fmt;

use rand::{CryptoRng, RngCore};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// A plaintext API key. It never prints itself and cannot be serialised.
///
/// The text is wiped from memory when the value is dropped. The only ways to
/// reach the text are [`Token::expose`], used where the token must be written
/// into a Secret or sent as a header, and [`Token::hash`].
#[derive(Clone)]
pub struct Token(Zeroizing<String>);

impl Token {
    /// Mint a new token with `prefix`, drawing randomness from `rng`.
    ///
    /// Production code passes the OS CSPRNG ([`os_rng`]); tests pass a seeded one.
    pub fn generate<R: RngCore + CryptoRng>(prefix: &Prefix, rng: &mut R) -> Token {
        let mut text = String::with_capacity(prefix.as_str().len() + 1 + RANDOM_LEN + CHECKSUM_LEN);
        text.push_str(prefix.as_str());
        text.push('_');
        format::push_random(&mut text, rng);
        format::push_checksum(&mut text);
        Token(Zeroizing::new(text))
    }

    /// Check the format and checksum of `text` and wrap it as a token.
    pub fn parse(text: &str) -> Result<Token, FormatError> {
        format::check(text)?;
        Ok(Token(Zeroizing::new(text.to_owned())))
    }

    /// The hash of `text` if it is a well-formed token (format and checksum), without copying it.
    ///
    /// For the verifier, which hashes the text of every request's header: the
    /// text already sits in the request buffer, so a wiped copy would protect nothing.
    pub fn hash_if_well_formed(text: &str) -> Result<KeyHash, FormatError> {
        format::check(text)?;
        Ok(KeyHash::of_token_text(text))
    }

    /// Like [`Token::parse`], and also require a particular prefix.
    pub fn parse_with_prefix(text: &str, prefix: &Prefix) -> Result<Token, FormatError> {
        let token = Token::parse(text)?;
        if token.prefix() != prefix.as_str() {
            return Err(FormatError::WrongPrefix { expected: prefix.to_string() });
        }
        Ok(token)
    }

    /// The token's SHA-256, the only form of it that may be published.
    #[must_use]
    pub fn hash(&self) -> KeyHash {
        KeyHash::of_token_text(self.expose())
    }

    /// The prefix part (before the last underscore); not secret.
    #[must_use]
    pub fn prefix(&self) -> &str {
        self.0.rsplit_once('_').map_or("", |(p, _)| p)
    }

    /// What people may see of the token: the prefix, the underscore and the
    /// first [`DISPLAY_RANDOM_CHARS`] random characters (about 24 bits, not
    /// enough to help guess the remaining 168 bits or more).
    #[must_use]
    pub fn display_prefix(&self) -> String {
        let cut = self.prefix().len() + 1 + DISPLAY_RANDOM_CHARS;
        self.0[..cut].to_owned()
    }

    /// The plaintext, for writing into a Secret or an `Authorization` header.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// How many random characters [`Token::display_prefix`] shows.
pub const DISPLAY_RANDOM_CHARS: usize = 4;

impl PartialEq for Token {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl Eq for Token {}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The operating system's CSPRNG, as an infallible generator.
///
/// If the OS cannot supply randomness the process panics rather than mint a
/// weak token; there is no safe way to go on.
#[must_use]
pub fn os_rng() -> impl CryptoRng {
    use rand::TryRngCore;
    rand::rngs::OsRng.unwrap_err()
}

#[cfg(test)]
mod tests;

/// Replace anything in `text` shaped like a token body (`_` then
/// [`RANDOM_LEN`] + [`CHECKSUM_LEN`] base62 characters) with `_<redacted>`.
///
/// A safety net for messages built from outside input (a third-party error
/// text that might quote a value): keyward's own messages never include tokens.
#[must_use]
pub fn redact(text: &str) -> String {
    const BODY: usize = RANDOM_LEN + CHECKSUM_LEN;
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let body_end = i + 1 + BODY;
        let is_token_body = bytes[i] == b'_'
            && body_end <= bytes.len()
            && bytes[i + 1..body_end].iter().all(u8::is_ascii_alphanumeric)
            && bytes.get(body_end).is_none_or(|b| !b.is_ascii_alphanumeric());
        if is_token_body {
            out.push_str("_<redacted>");
            i = body_end;
        } else {
            let ch = text[i..].chars().next().expect("i is on a char boundary below len");
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}
