//! When a key expires: at `expiresAt`, or once nobody has used it for `expireAfterUnused`.
//!
//! The unused clock starts at `status.lastUsedAt` (verifiers' usage, rounded
//! down to the operator's step, so a key may expire up to one step early), or,
//! for a key never used, when it last became Ready. A use moves `lastUsedAt`
//! and with it the deadline: a key used before its deadline is no longer expiring.

use jiff::{SignedDuration, Timestamp};

use super::validate::ValidSpec;
use crate::api::ApiKeyStatus;

/// The default notice points, in days before expiry.
pub const DEFAULT_NOTICES: [i64; 3] = [15, 7, 1];

/// What makes a key expire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// `spec.expiresAt`.
    ExpiresAt,
    /// `spec.expireAfterUnused` since the last use (or since Ready).
    Unused,
}

/// The moment the unused clock started: the last use, or when the key last became Ready.
#[must_use]
pub fn unused_since(status: Option<&ApiKeyStatus>) -> Option<Timestamp> {
    let status = status?;
    if let Some(used) = &status.last_used_at {
        return Some(used.0);
    }
    status.conditions.iter().find(|c| c.type_ == "Ready" && c.status == "True").map(|c| c.last_transition_time.0)
}

/// The earliest expiry of the key and its cause, if it has one.
#[must_use]
pub fn expiry(spec: &ValidSpec, status: Option<&ApiKeyStatus>) -> Option<(Timestamp, Cause)> {
    let unused = spec.expire_after_unused.as_ref().and_then(|d| {
        let since = unused_since(status)?;
        let after = SignedDuration::try_from(d.get()).ok()?;
        Some((since.checked_add(after).unwrap_or(Timestamp::MAX), Cause::Unused))
    });
    let at = spec.expires_at.map(|t| (t, Cause::ExpiresAt));
    match (at, unused) {
        (Some(a), Some(u)) => Some(if u.0 < a.0 { u } else { a }),
        (a, u) => a.or(u),
    }
}

/// Whether the key has expired at `now` (by either cause), or status says it already did.
#[must_use]
pub fn has_expired(spec: &ValidSpec, status: Option<&ApiKeyStatus>, now: Timestamp) -> bool {
    status.is_some_and(|s| s.expired_at.is_some()) || expiry(spec, status).is_some_and(|(t, _)| t <= now)
}
