//! Standard Webhooks symmetric signatures: `v1,` and the base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// The prefix the Standard Webhooks specification gives symmetric secrets.
pub const SECRET_PREFIX: &str = "whsec_";

/// Shortest and longest secret the specification allows, in bytes (192 and 512 bits).
const SECRET_BYTES: std::ops::RangeInclusive<usize> = 24..=64;

/// A webhook's signing key, decoded. Never printed.
pub struct SigningSecret(Zeroizing<Vec<u8>>);

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(<redacted>)")
    }
}

/// Why a Secret's value is not a signing secret. The messages never quote the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The value is not base64 (after an optional `whsec_`).
    #[error("the signing secret is not base64 after its whsec_ prefix")]
    NotBase64,
    /// The decoded value is too short or too long.
    #[error("the signing secret decodes to {0} bytes; the Standard Webhooks specification asks for 24 to 64")]
    Length(usize),
}

impl SigningSecret {
    /// Decode `value`: `whsec_` (optional, as the specification's libraries accept) and
    /// base64 of 24 to 64 bytes. Surrounding whitespace (a file's newline) is ignored.
    pub fn parse(value: &[u8]) -> Result<SigningSecret, SecretError> {
        let text = std::str::from_utf8(value).map_err(|_| SecretError::NotBase64)?.trim();
        let encoded = text.strip_prefix(SECRET_PREFIX).unwrap_or(text);
        let bytes = Zeroizing::new(STANDARD.decode(encoded).map_err(|_| SecretError::NotBase64)?);
        if !SECRET_BYTES.contains(&bytes.len()) {
            return Err(SecretError::Length(bytes.len()));
        }
        Ok(SigningSecret(bytes))
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

/// What a seal's MAC starts with. The NUL bytes keep a seal from ever being a message
/// signature: a message id travels in an HTTP header, which cannot hold a NUL.
const SEAL_CONTEXT: &[u8] = b"keyward.dev/pending-delivery/v1\0";

impl SigningSecret {
    fn seal_mac(&self, id: &str, kind: &str, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(SEAL_CONTEXT);
        mac.update(id.as_bytes());
        mac.update(b"\0");
        mac.update(kind.as_bytes());
        mac.update(b"\0");
        mac.update(body);
        mac
    }
}

/// The seal of a delivery kept for a later attempt (`status.pending`): base64 HMAC-SHA256 of
/// its id, kind and body under the webhook's secret.
#[must_use]
pub fn seal(secret: &SigningSecret, id: &str, kind: &str, body: &[u8]) -> String {
    STANDARD.encode(secret.seal_mac(id, kind, body).finalize().into_bytes())
}

/// Whether `seal` is the seal of this delivery under `secret`, compared in constant time.
#[must_use]
pub fn verify_seal(secret: &SigningSecret, id: &str, kind: &str, body: &[u8], seal: &str) -> bool {
    STANDARD.decode(seal).is_ok_and(|bytes| secret.seal_mac(id, kind, body).verify_slice(&bytes).is_ok())
}

/// The `webhook-signature` header value for one attempt.
#[must_use]
pub fn sign(secret: &SigningSecret, id: &str, timestamp: i64, body: &[u8]) -> String {
    format!("v1,{}", STANDARD.encode(secret.mac(id, timestamp, body).finalize().into_bytes()))
}

/// Whether `header` (space-separated `version,signature` pairs) holds a valid `v1` signature
/// of this message, compared in constant time. What a receiver does; tests use it.
#[must_use]
pub fn verify(secret: &SigningSecret, id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    header.split(' ').filter_map(|pair| pair.strip_prefix("v1,")).any(|signature| {
        STANDARD.decode(signature).is_ok_and(|bytes| secret.mac(id, timestamp, body).verify_slice(&bytes).is_ok())
    })
}
