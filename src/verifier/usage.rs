//! Per-key usage counters: what the verifier decided for each loaded key, and when it was last allowed.
//!
//! Each loaded key has one [`KeyUsage`] of atomics, made when the key first
//! loads and carried over to every later index by hash (as rate-limit buckets
//! are), so a reload neither resets nor loses counts, and a request still
//! holding the replaced index counts into the same atomics. Counting is a
//! relaxed `fetch_add` on the key's own counters: no lock shared between
//! requests, no allocation. Outcomes that cannot be attributed to a key
//! (missing, malformed, unknown token, revoked, invalid request) are counted
//! only in the verifier's metrics by outcome: a token that is not loaded
//! never creates state, so memory is bounded by the loaded keys. So are
//! refusals by a key-set gate (`payment_required`, `access_disabled`): they
//! are about the key set, not the key, have their own outcome label, and the
//! usage report (format `keyward-usage v1`) has no column for them.
//!
//! [`Tally`] turns the live counters into cumulative totals since the
//! process started (its epoch), for the usage report; it runs off the hot path.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use super::decision::Outcome;
use super::index::KeyIndex;
use crate::token::KeyId;
use crate::usage::Counts;

/// The counters of one loaded key.
#[derive(Debug)]
pub struct KeyUsage {
    key_id: KeyId,
    allowed: AtomicU64,
    inactive: AtomicU64,
    expired: AtomicU64,
    insufficient_scope: AtomicU64,
    rate_limited: AtomicU64,
    /// Unix second of the last allowed request; 0 for never.
    last_allowed: AtomicI64,
}

impl KeyUsage {
    /// Fresh counters for a key.
    #[must_use]
    pub fn new(key_id: KeyId) -> KeyUsage {
        KeyUsage {
            key_id,
            allowed: AtomicU64::new(0),
            inactive: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            insufficient_scope: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            last_allowed: AtomicI64::new(0),
        }
    }

    /// The key these counters belong to.
    #[must_use]
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// Count one decision about this key at Unix second `second`.
    /// Outcomes that are not about the key's use are ignored.
    #[inline]
    pub fn count(&self, outcome: Outcome, second: i64) {
        let counter = match outcome {
            Outcome::Allowed => {
                // A store only when the second changes: a busy key's cache line is
                // written once a second for this, not once a request.
                if self.last_allowed.load(Ordering::Relaxed) < second {
                    self.last_allowed.fetch_max(second, Ordering::Relaxed);
                }
                &self.allowed
            }
            Outcome::Inactive => &self.inactive,
            Outcome::Expired => &self.expired,
            Outcome::InsufficientScope => &self.insufficient_scope,
            Outcome::RateLimited => &self.rate_limited,
            Outcome::Missing
            | Outcome::Malformed
            | Outcome::Unknown
            | Outcome::PaymentRequired
            | Outcome::AccessDisabled
            | Outcome::Revoked
            | Outcome::InvalidRequest => {
                return;
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far.
    #[must_use]
    pub fn snapshot(&self) -> Counts {
        let last = self.last_allowed.load(Ordering::Relaxed);
        Counts {
            allowed: self.allowed.load(Ordering::Relaxed),
            inactive: self.inactive.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            insufficient_scope: self.insufficient_scope.load(Ordering::Relaxed),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
            last_allowed: (last > 0).then_some(last),
        }
    }
}

/// Cumulative counts per key id since this process started, built from the live counters.
///
/// Counters are read, never reset: the tally remembers what it last read from
/// each key's counters and adds the difference. A key that leaves the key set
/// is read one last time and forgotten by the tally (not by the totals); if it
/// comes back it gets new counters, which the tally notices by identity. So
/// the totals only grow, whatever the reloads do.
#[derive(Debug, Default)]
pub struct Tally {
    seen: HashMap<KeyId, (Arc<KeyUsage>, Counts)>,
    totals: HashMap<KeyId, Counts>,
}

impl Tally {
    /// An empty tally.
    #[must_use]
    pub fn new() -> Tally {
        Tally::default()
    }

    /// Read every loaded key's counters into the totals.
    pub fn update(&mut self, index: Option<&KeyIndex>) {
        let mut live: HashMap<KeyId, Arc<KeyUsage>> = HashMap::new();
        for usage in index.map(KeyIndex::usages).into_iter().flatten() {
            live.insert(usage.key_id(), Arc::clone(usage));
        }
        // Keys read before: add what changed, and let go of counters no longer loaded.
        let mut retired = Vec::new();
        for (id, (usage, last)) in &mut self.seen {
            let now = usage.snapshot();
            add(self.totals.entry(*id).or_default(), &now.minus(last));
            *last = now;
            match live.get(id) {
                Some(current) if Arc::ptr_eq(current, usage) => {}
                _ => retired.push(*id),
            }
        }
        for id in retired {
            self.seen.remove(&id);
        }
        // Keys not followed yet (new, or loaded again with new counters): follow once used.
        for (id, usage) in live {
            if self.seen.contains_key(&id) {
                continue;
            }
            let now = usage.snapshot();
            if now.is_zero() {
                continue;
            }
            add(self.totals.entry(id).or_default(), &now);
            self.seen.insert(id, (usage, now));
        }
    }

    /// Cumulative totals per key id, for keys used at least once.
    #[must_use]
    pub fn totals(&self) -> &HashMap<KeyId, Counts> {
        &self.totals
    }
}

fn add(total: &mut Counts, delta: &Counts) {
    total.allowed += delta.allowed;
    total.inactive += delta.inactive;
    total.expired += delta.expired;
    total.insufficient_scope += delta.insufficient_scope;
    total.rate_limited += delta.rate_limited;
    total.last_allowed = total.last_allowed.max(delta.last_allowed);
}
