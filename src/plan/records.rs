//! The key-set records of one ApiKey, derived from its spec and persisted status (and a held new token).
//!
//! The publisher rebuilds a whole key set from the records of every ApiKey in
//! it, so this must depend on nothing but the stored object and, for a new
//! key, the token the publisher holds for it ([`records_with`]): any other
//! token's hash is published only once status records it, and spec facts
//! that take access away (revoked, inactive, expired, deleted, invalid) apply
//! at once, even before the key's own reconcile has run. Revocation and expiry recorded in
//! status (`revokedAt`, `expiredAt`) are final whatever the spec says later.

use jiff::{SignedDuration, Timestamp};

use crate::api::{ApiKey, ApiKeyStatus, KeyState, KeyVersion};
use crate::keyset::{Record, RecordState};
use crate::token::KeyHash;

use super::Held;
use super::class::{ClassView, effective_rate_limit, problem};
use super::validate::validate;

/// The records `key` contributes to its key set at `now`; `default_grace` is
/// the operator's default grace period, which decides whether the spec is valid.
///
/// `class` is the key's ApiKeyClass as resolved ([`super::class::resolve`]): a key that
/// breaks its class, names a class that does not exist, or has several default classes
/// contributes nothing; a key without a rate limit is published with its class's default.
///
/// Deleted, revoked, expired or invalid keys contribute nothing (fail closed);
/// an inactive key's tokens stay listed as inactive so the verifier can say why
/// it refuses them.
#[must_use]
pub fn records_for(key: &ApiKey, class: &ClassView, default_grace: SignedDuration, now: Timestamp) -> Vec<Record> {
    records_from(key, key.status.as_ref(), None, class, default_grace, now)
}

/// The records `key` contributes while the publisher holds `held` for it
/// ([`Held`]): the held token counts as the current one as long as status
/// names none. Everything that takes access away from a stored key (deleted,
/// revoked, expired, invalid, inactive) applies to the held token alike.
#[must_use]
pub fn records_with(
    key: &ApiKey,
    held: Option<&Held>,
    class: &ClassView,
    default_grace: SignedDuration,
    now: Timestamp,
) -> Vec<Record> {
    records_from(key, key.status.as_ref(), held.map(|h| &h.version), class, default_grace, now)
}

/// The records of `key` with `status` in place of its stored one, and `held`
/// as the current token if that status names none.
pub(super) fn records_from(
    key: &ApiKey,
    status: Option<&ApiKeyStatus>,
    held: Option<&KeyVersion>,
    class: &ClassView,
    default_grace: SignedDuration,
    now: Timestamp,
) -> Vec<Record> {
    let Ok(spec) = validate(&key.spec, default_grace) else { return Vec::new() };
    if problem(key, class, default_grace).is_some() {
        return Vec::new();
    }
    let rate_limit = match (&spec.rate_limit, effective_rate_limit(key, class)) {
        (Some(own), _) => Some(own.clone()),
        (None, Some(default)) => super::validate::rate_limit(default),
        (None, None) => None,
    };
    let (Some(namespace), Some(name)) = (key.metadata.namespace.as_deref(), key.metadata.name.as_deref()) else {
        return Vec::new();
    };
    let current = status.and_then(|s| s.current_key.as_ref()).or(held);
    if status.is_none() && current.is_none() {
        return Vec::new();
    }
    let expired = super::unused::has_expired(&spec, status, now);
    let revoked =
        key.spec.revoked || status.is_some_and(|s| s.revoked_at.is_some() || s.state == Some(KeyState::Revoked));
    if key.metadata.deletion_timestamp.is_some() || revoked || expired {
        return Vec::new();
    }
    let state = if key.spec.active { RecordState::Active } else { RecordState::Inactive };
    let versions = [status.and_then(|s| s.previous_key.as_ref()), current, status.and_then(|s| s.next_key.as_ref())];
    let mut records: Vec<Record> = Vec::with_capacity(3);
    for version in versions.into_iter().flatten() {
        let Some(hash) = version_hash(version) else { continue };
        let not_before = whole(version.not_before.0);
        let not_after = match (version.not_after.as_ref().map(|t| whole(t.0)), spec.expires_at.map(whole)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let retired = not_after.is_some_and(|end| end <= not_before || end <= now);
        if retired || records.iter().any(|r| r.hash == hash) {
            continue;
        }
        records.push(Record {
            hash,
            key_id: hash.key_id(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            scopes: spec.scopes.clone(),
            not_before,
            not_after,
            state,
            rate_limit: rate_limit.clone(),
        });
    }
    records
}

/// The hash of a status key version, if it is recorded and consistent with its key id.
pub(super) fn version_hash(version: &KeyVersion) -> Option<KeyHash> {
    let hash: KeyHash = version.hash.as_deref()?.parse().ok()?;
    (hash.key_id().as_str() == version.key_id).then_some(hash)
}

/// The key-set format holds whole seconds; times from hand-edited objects may not be.
fn whole(t: Timestamp) -> Timestamp {
    super::whole_seconds(t)
}
