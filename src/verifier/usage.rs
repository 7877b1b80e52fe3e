//! Per-key usage counters: what the verifier decided for each loaded key, and when it was last allowed.
//!
//! The counters live in the index, next to what the lookup already reads:
//! the count of allowed requests and the second of the last one are two
//! 32-bit atomics inside the key's own 64-byte table slot ([`HotCounters`]),
//! so an allowed request touches no cache line that the lookup did not; the
//! refusals by reason are four more in an array beside the table, numbered
//! like its slots ([`ColdCounters`]), touched only when a request is refused.
//! Counting is a relaxed `fetch_add` on those: no lock shared between
//! requests, no allocation.
//!
//! Each index counts from zero, and every count is at any moment in exactly
//! one place: the slot counters of some index, or the [`Ledger`] that all the
//! indexes of one key store share (each index is built from the one before
//! and takes its ledger). Counts move only by atomic swaps, so none is lost
//! or counted twice:
//! - the usage report folds the index in force into the ledger (each nonzero
//!   counter swapped to zero and added), at least once a minute
//!   ([`FOLD_AT_LEAST_EVERY`]), so a 32-bit counter never has to hold more
//!   than a minute of one key's requests;
//! - an index that is dropped (replaced by a reload, once the last request
//!   holding it has let go) drains what is left into the ledger: a request
//!   still deciding on a replaced index counts into that index's slots, and
//!   those counts reach the report when it is dropped.
//!
//! So a reload neither resets nor loses counts. Outcomes that cannot be
//! attributed to a key (missing, malformed, unknown token, revoked, invalid
//! request) are counted only in the verifier's metrics by outcome: a token
//! that is not loaded never creates state, so memory is bounded by the loaded
//! keys (and, while reports are on, one ledger row per key used since the
//! process started, as the report itself holds). So are refusals by a key-set
//! gate (`payment_required`, `access_disabled`): they are about the key set,
//! not the key, have their own outcome label, and the usage report (format
//! `keyward-usage v1`) has no column for them.
//!
//! [`Tally`] folds and reads the ledger for the usage report; it runs off the hot path.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use super::decision::Outcome;
use super::index::KeyIndex;
use crate::token::KeyId;
use crate::usage::Counts;

/// How often at most the index in force is folded into the ledger while reports are on.
///
/// A slot's allowed counter is 32 bits: between two folds one key would need
/// 2³² requests to one verifier, over 71 million a second at this interval.
pub const FOLD_AT_LEAST_EVERY: Duration = Duration::from_secs(60);

/// The counters read on every allowed request: inside the key's table slot.
#[derive(Debug, Default)]
#[repr(C)]
pub struct HotCounters {
    /// Allowed requests since this index was built or last folded (wrapping).
    allowed: AtomicU32,
    /// Unix second of the last allowed request, 0 for none (32 bits: until 2106).
    last_allowed: AtomicU32,
}

/// Refusals by reason, one set per table slot, beside the table.
#[derive(Debug, Default)]
#[repr(C)]
pub struct ColdCounters {
    inactive: AtomicU32,
    expired: AtomicU32,
    insufficient_scope: AtomicU32,
    rate_limited: AtomicU32,
}

/// One loaded key's counters in one index.
#[derive(Debug, Clone, Copy)]
pub struct KeyCounters<'i> {
    pub(super) hot: &'i HotCounters,
    pub(super) cold: &'i ColdCounters,
}

/// A Unix second as the slot stores it: 0 (none) before 1970, the last second of 2106 after it.
fn stored_second(second: i64) -> u32 {
    u32::try_from(second.max(0)).unwrap_or(u32::MAX)
}

impl KeyCounters<'_> {
    /// Count one decision about this key at Unix second `second`.
    /// Outcomes that are not about the key's use are ignored.
    #[inline]
    pub fn count(&self, outcome: Outcome, second: i64) {
        let counter = match outcome {
            Outcome::Allowed => {
                let second = stored_second(second);
                // A store only when the second changes: a busy key's slot is
                // written once a second for this, not once a request.
                if self.hot.last_allowed.load(Ordering::Relaxed) < second {
                    self.hot.last_allowed.fetch_max(second, Ordering::Relaxed);
                }
                &self.hot.allowed
            }
            Outcome::Inactive => &self.cold.inactive,
            Outcome::Expired => &self.cold.expired,
            Outcome::InsufficientScope => &self.cold.insufficient_scope,
            Outcome::RateLimited => &self.cold.rate_limited,
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

    /// What this index counted for the key and has not yet moved to the ledger.
    #[must_use]
    pub fn snapshot(&self) -> Counts {
        let read = |c: &AtomicU32| u64::from(c.load(Ordering::Relaxed));
        Counts {
            allowed: read(&self.hot.allowed),
            inactive: read(&self.cold.inactive),
            expired: read(&self.cold.expired),
            insufficient_scope: read(&self.cold.insufficient_scope),
            rate_limited: read(&self.cold.rate_limited),
            last_allowed: last_allowed(&self.hot.last_allowed),
        }
    }

    /// Move the counts to the caller: each nonzero counter swapped to zero. The last second stays (a maximum).
    fn take(&self) -> Counts {
        // Read first: most keys counted nothing since the last fold, and a swap would write their line.
        let take =
            |c: &AtomicU32| if c.load(Ordering::Relaxed) == 0 { 0 } else { u64::from(c.swap(0, Ordering::Relaxed)) };
        Counts {
            allowed: take(&self.hot.allowed),
            inactive: take(&self.cold.inactive),
            expired: take(&self.cold.expired),
            insufficient_scope: take(&self.cold.insufficient_scope),
            rate_limited: take(&self.cold.rate_limited),
            last_allowed: last_allowed(&self.hot.last_allowed),
        }
    }
}

fn last_allowed(second: &AtomicU32) -> Option<i64> {
    Some(i64::from(second.load(Ordering::Relaxed))).filter(|s| *s > 0)
}

/// The counts moved out of indexes: folded from the one in force, or drained from one dropped.
///
/// Shared by every index of one key store (each takes its predecessor's).
/// Locked only when counts move (a report, a dropped index), never by a request.
#[derive(Debug, Default)]
pub struct Ledger {
    totals: Mutex<HashMap<KeyId, Counts>>,
    /// Nobody will read it (usage reports off): counts moved here are let go, so it holds nothing.
    discard: AtomicBool,
}

impl Ledger {
    /// Stop keeping what moves here (nobody reads it), or keep it again.
    pub fn set_discard(&self, discard: bool) {
        self.discard.store(discard, Ordering::Relaxed);
    }

    /// Take every nonzero counter of `keys` into the totals.
    pub(super) fn take<'i>(&self, keys: impl Iterator<Item = (KeyId, KeyCounters<'i>)>) {
        let moved = keys.map(|(id, counters)| (id, counters.take())).filter(|(_, counts)| !counts.is_zero());
        if self.discard.load(Ordering::Relaxed) {
            // Still swapped to zero, so that a later reader finds no stale counts.
            moved.for_each(drop);
            return;
        }
        let mut totals = self.totals.lock().unwrap_or_else(PoisonError::into_inner);
        for (id, counts) in moved {
            add(totals.entry(id).or_default(), &counts);
        }
    }

    /// The totals so far, per key id, for keys counted at least once.
    #[must_use]
    pub fn totals(&self) -> HashMap<KeyId, Counts> {
        self.totals.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// Cumulative counts per key id since this process started, for the usage report.
///
/// Each update folds the index in force into the key store's [`Ledger`] and
/// reads it: counts made on an index since replaced are there as soon as that
/// index was dropped. The totals only grow, whatever the reloads do.
#[derive(Debug, Default)]
pub struct Tally {
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
        if let Some(index) = index {
            index.fold_usage();
            self.totals = index.ledger().totals();
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
