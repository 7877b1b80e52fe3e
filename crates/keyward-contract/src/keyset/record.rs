//! One published key: what the verifier needs to decide on a token with this hash.

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::duration::KeyDuration;
use crate::scope::Scope;
use crate::token::{KeyHash, KeyId};

/// Names a key set: the namespace of its ApiKeys and the `keySet` they name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KeySetId {
    /// Namespace of the ApiKeys in the set.
    pub namespace: String,
    /// The key set's name (ApiKey `spec.keySet`).
    pub name: String,
}

impl fmt::Display for KeySetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Why text is not a key set's `NAMESPACE/NAME`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected NAMESPACE/NAME, both DNS labels")]
pub struct KeySetIdParseError;

/// `NAMESPACE/NAME`, both RFC 1123 labels (the form [`KeySetId`] displays as).
impl FromStr for KeySetId {
    type Err = KeySetIdParseError;

    fn from_str(text: &str) -> Result<KeySetId, KeySetIdParseError> {
        use super::format::valid_dns_label;
        match text.split_once('/') {
            Some((namespace, name)) if valid_dns_label(namespace) && valid_dns_label(name) => {
                Ok(KeySetId { namespace: namespace.to_owned(), name: name.to_owned() })
            }
            _ => Err(KeySetIdParseError),
        }
    }
}

/// Whether the verifier may accept a key with this record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordState {
    /// The key works (within its validity window).
    Active,
    /// The key is switched off for now (`active: false`); refused as inactive.
    Inactive,
    /// The key is revoked for good; refused as revoked. The operator removes
    /// revoked keys instead; this state exists for hand-built sets.
    Revoked,
}

impl RecordState {
    /// The word used in the text format.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            RecordState::Active => "active",
            RecordState::Inactive => "inactive",
            RecordState::Revoked => "revoked",
        }
    }
}

impl FromStr for RecordState {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(RecordState::Active),
            "inactive" => Ok(RecordState::Inactive),
            "revoked" => Ok(RecordState::Revoked),
            _ => Err(()),
        }
    }
}

/// Whether the keys of a key set may be used at all: the key set's gate.
///
/// Set by platform teams on a `KeySet` object, published in the key set's
/// header and enforced by the verifier before any per-key check but after the
/// token is found, so that a stranger's token still gets 401.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Access {
    /// No gate: every key is judged on its own (format `v1`, no `access` word).
    #[default]
    Enabled,
    /// Every key is refused with 402 `payment_required` (the plan lacks the feature).
    PaymentRequired,
    /// Every key is refused with 403 `access_disabled`.
    Disabled,
}

impl Access {
    /// The word used in the header's `access=` (and `-` for no gate).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Enabled => "enabled",
            Access::PaymentRequired => "payment-required",
            Access::Disabled => "disabled",
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A gate as the header spells it: only the two closed ones; `enabled` is written by leaving the gate out.
impl FromStr for Access {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "payment-required" => Ok(Access::PaymentRequired),
            "disabled" => Ok(Access::Disabled),
            _ => Err(()),
        }
    }
}

/// A per-key token bucket: `requests` per `period`, with bursts up to `burst`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests allowed per period (at least 1).
    pub requests: u32,
    /// The period, in the ApiKey duration grammar (`1m`, `1h`, `1d`).
    #[serde(with = "duration_text")]
    pub period: KeyDuration,
    /// Largest burst (bucket size); at least 1. Defaults to `requests`.
    pub burst: u32,
}

mod duration_text {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::duration::KeyDuration;

    pub fn serialize<S: Serializer>(d: &KeyDuration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(d.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<KeyDuration, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// One published token of one ApiKey.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Record {
    /// SHA-256 of the token.
    pub hash: KeyHash,
    /// The token's key id (derived from the hash).
    pub key_id: KeyId,
    /// Namespace of the ApiKey.
    pub namespace: String,
    /// Name of the ApiKey.
    pub name: String,
    /// What the key may do; never empty.
    pub scopes: Vec<Scope>,
    /// The token is refused before this time. Stored in whole seconds, rounded down.
    pub not_before: Timestamp,
    /// The token is refused from this time on; `None` means never. Stored in
    /// whole seconds, rounded down (so a key ends up to a second early, never late).
    pub not_after: Option<Timestamp>,
    /// Active, inactive or revoked.
    pub state: RecordState,
    /// Per-key rate limit, if any.
    pub rate_limit: Option<RateLimit>,
}

impl Record {
    /// Check the invariants the text format relies on, so that whatever is
    /// encoded also decodes. The reason names the field, never its value.
    pub fn validate(&self) -> Result<(), &'static str> {
        use super::format::{valid_dns_label, valid_dns_subdomain};
        if self.key_id != self.hash.key_id() {
            return Err("keyId does not match the hash");
        }
        if !valid_dns_label(&self.namespace) {
            return Err("namespace is not a DNS label");
        }
        if !valid_dns_subdomain(&self.name) {
            return Err("name is not a DNS subdomain");
        }
        if self.scopes.is_empty() {
            return Err("scopes is empty");
        }
        if self.scopes.iter().enumerate().any(|(i, s)| self.scopes[..i].contains(s)) {
            return Err("a scope is listed twice");
        }
        let in_range = |t: Timestamp| (1970..=9999).contains(&t.to_zoned(jiff::tz::TimeZone::UTC).year());
        if !in_range(self.not_before) || self.not_after.is_some_and(|t| !in_range(t)) {
            return Err("times must fall in the years 1970 to 9999");
        }
        // Times are written in whole seconds, rounded down; compare them as written.
        if self.not_after.is_some_and(|end| end.as_second() <= self.not_before.as_second()) {
            return Err("notAfter is not later than notBefore");
        }
        if let Some(limit) = &self.rate_limit
            && (limit.requests == 0 || limit.burst == 0 || limit.period.get().is_zero())
        {
            return Err("rateLimit needs requests, burst and period above zero");
        }
        Ok(())
    }
}

/// A whole key set: every shard's records, in order, with the shared header facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySet {
    /// Which key set this is.
    pub id: KeySetId,
    /// The publisher's generation counter; all shards of a set carry the same one.
    pub generation: u64,
    /// The key set's gate; all shards of a set carry the same one.
    pub access: Access,
    /// The records of all shards.
    pub records: Vec<Record>,
}
