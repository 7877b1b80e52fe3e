//! The decision on one request: a pure function of the request, the loaded keys, the routes and the time.
//!
//! The checks run in a fixed order, and the first that fails decides:
//! Bearer header → token format and checksum (before any lookup) → SHA-256 →
//! lookup → key-set gate → state → validity window → scope → rate limit. Only
//! an allowed request takes a rate-limit token. The gate comes after the
//! lookup, so a missing or unknown token gets 401 and a stranger learns
//! nothing of the gate; it comes before every per-key check, so every key of
//! a gated set gets the same answer.

use std::time::Duration;

use jiff::Timestamp;

use super::bearer::{BearerError, bearer_token};
use super::index::{Entry, KeyIndex};
use super::routes::{PathError, Routes};
use crate::keyset::{Access, RecordState};
use crate::scope::Scope;
use crate::token::{KeyId, Token};

/// What the verifier answered, as counted in metrics and named in response bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// The request may go on.
    Allowed,
    /// No `Authorization` header.
    Missing,
    /// The header or the token in it is not well formed (including a wrong checksum).
    Malformed,
    /// No loaded key has this token's hash.
    Unknown,
    /// The key's key set is gated: the plan lacks the feature (402).
    PaymentRequired,
    /// The key's key set is switched off (403).
    AccessDisabled,
    /// The key is switched off.
    Inactive,
    /// The key is revoked.
    Revoked,
    /// Outside the key's validity window (not yet valid, or expired).
    Expired,
    /// The key's scopes do not allow this request.
    InsufficientScope,
    /// The key's rate limit is exhausted.
    RateLimited,
    /// The request path cannot be decided on safely (see [`PathError`]).
    InvalidRequest,
}

impl Outcome {
    /// Every outcome, for metrics that should show zeros.
    pub const ALL: [Outcome; 12] = [
        Outcome::Allowed,
        Outcome::Missing,
        Outcome::Malformed,
        Outcome::Unknown,
        Outcome::PaymentRequired,
        Outcome::AccessDisabled,
        Outcome::Inactive,
        Outcome::Revoked,
        Outcome::Expired,
        Outcome::InsufficientScope,
        Outcome::RateLimited,
        Outcome::InvalidRequest,
    ];

    /// The machine-readable name, as used in metrics labels and response bodies.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Missing => "missing",
            Outcome::Malformed => "malformed",
            Outcome::Unknown => "unknown",
            Outcome::PaymentRequired => "payment_required",
            Outcome::AccessDisabled => "access_disabled",
            Outcome::Inactive => "inactive",
            Outcome::Revoked => "revoked",
            Outcome::Expired => "expired",
            Outcome::InsufficientScope => "insufficient_scope",
            Outcome::RateLimited => "rate_limited",
            Outcome::InvalidRequest => "invalid_request",
        }
    }
}

/// The request facts a decision depends on. Header values are raw bytes, as received.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a, I> {
    /// The method of the request being authorised.
    pub method: &'a str,
    /// Its URI: a path with an optional query, or absolute form.
    pub uri: &'a str,
    /// Every `Authorization` header value, in order.
    pub authorization: I,
}

/// The verifier's two clocks, read once per request by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Wall-clock time, for validity windows.
    pub wall: Timestamp,
    /// Monotonic time since an arbitrary start, for rate limits.
    pub monotonic: Duration,
}

/// The answer for one request.
#[derive(Debug)]
pub struct Decision<'i> {
    /// What was decided.
    pub outcome: Outcome,
    /// The key, once the token has been found (for headers and logs).
    pub entry: Option<Entry<'i>>,
    /// For [`Outcome::RateLimited`]: when to try again.
    pub retry_after: Option<Duration>,
    /// For [`Outcome::InsufficientScope`]: the scope the request needed, e.g.
    /// `leads:write`. A [`Scope`], so only characters a scope allows can reach an answer.
    pub required_scope: Option<Scope>,
}

impl Decision<'_> {
    fn new(outcome: Outcome) -> Self {
        Decision { outcome, entry: None, retry_after: None, required_scope: None }
    }

    /// The key id of the token, once known.
    #[must_use]
    pub fn key_id(&self) -> Option<KeyId> {
        self.entry.map(|e| e.key_id())
    }
}

/// Decide on one request.
pub fn decide<'i, 'a, I>(index: &'i KeyIndex, routes: &Routes, request: Request<'a, I>, now: Now) -> Decision<'i>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let text = match bearer_token(request.authorization) {
        Ok(text) => text,
        Err(BearerError::Missing) => return Decision::new(Outcome::Missing),
        Err(_) => return Decision::new(Outcome::Malformed),
    };
    let Ok(hash) = Token::hash_if_well_formed(text) else {
        return Decision::new(Outcome::Malformed);
    };
    let Some(entry) = index.get(&hash) else {
        return Decision::new(Outcome::Unknown);
    };
    // Every decision about a loaded key is counted on the key's own counters (no lock, no allocation).
    let with = |outcome| {
        entry.usage.count(outcome, now.wall.as_second());
        Decision { entry: Some(entry), ..Decision::new(outcome) }
    };
    match entry.access {
        Access::Enabled => {}
        Access::PaymentRequired => return with(Outcome::PaymentRequired),
        Access::Disabled => return with(Outcome::AccessDisabled),
    }
    match entry.state {
        RecordState::Active => {}
        RecordState::Inactive => return with(Outcome::Inactive),
        RecordState::Revoked => return with(Outcome::Revoked),
    }
    if !entry.in_window(now.wall) {
        return with(Outcome::Expired);
    }
    let requirement = match routes.requirement(request.method, request.uri) {
        Ok(requirement) => requirement,
        Err(
            PathError::Missing
            | PathError::NotAbsolute
            | PathError::TooLong
            | PathError::BadEncoding
            | PathError::NotCanonical
            | PathError::BadTarget
            | PathError::Ambiguous
            | PathError::BadResource,
        ) => {
            return with(Outcome::InvalidRequest);
        }
    };
    if !entry.allows(&requirement.resource, requirement.action) {
        // Routes only yield valid resources; should one not be, refuse without naming it.
        let Ok(scope) = requirement.to_string().parse::<Scope>() else {
            return with(Outcome::InvalidRequest);
        };
        return Decision { required_scope: Some(scope), ..with(Outcome::InsufficientScope) };
    }
    if let Some(bucket) = &entry.bucket
        && let Err(wait) = bucket.try_acquire(now.monotonic)
    {
        return Decision { retry_after: Some(wait), ..with(Outcome::RateLimited) };
    }
    with(Outcome::Allowed)
}
