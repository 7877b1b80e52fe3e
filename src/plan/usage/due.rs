//! Which keys the usage pass reads: the ones whose status it may write.
//!
//! The pass writes a key at most once per `--usage-status-interval` (and when its coarse
//! `lastUsedAt` moves), so reading every key's ledger at every pass mostly folds work only to
//! throw it away. [`may_write`] tells, from facts that fit in the operator's watch cache (the
//! key's `lastUsedAt`, `status.usage` and key ids, none of the ledger) and the namespace's
//! reports, whether [`super::status_write`] could write the key now; only those keys are read
//! (with their ledger) and folded. It never says no where `status_write` would write, except
//! when the cached facts are stale, which only delays: reports are cumulative, so a key not
//! read in a pass loses nothing, and every write still carries the `resourceVersion` it was
//! folded from, so a stale fact can never count anything twice.
//!
//! A ledger stored without `usage` (edited by hand, or `usage` removed) is read once due by
//! time even when no report counts the key, so that it is pruned and its counts written again
//! ([`Cached::ledger`]); an `updatedAt` later than `now` by more than the status interval (no
//! operator wrote it) does not hold a key's counts back ([`time_due`]).
//!
//! A key read and found due by time but with nothing to write (for example one used days ago
//! whose counts only change when a bucket leaves a window) would be read again at every pass.
//! [`Quiet`] remembers such a read: while the key's `resourceVersion`, what the reports hold
//! for its key ids ([`fingerprint`]) and the hour are the same, the fold would be the same, so
//! it is not read again.

use std::hash::{DefaultHasher, Hash, Hasher};

use jiff::Timestamp;

use super::{Budget, HOUR, Live, last_used_write};
use crate::api::Usage;
use crate::token::KeyId;
use crate::usage::Report;

/// What the watch cache holds of a key's usage status.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cached<'a> {
    /// `status.lastUsedAt`.
    pub last_used: Option<Timestamp>,
    /// `status.usage` (counts and `updatedAt`).
    pub usage: Option<&'a Usage>,
    /// The key ids of the key's tokens (current, next, previous).
    pub ids: &'a [KeyId],
    /// Whether `status.usageLedger` holds anything (the cache keeps only that of the ledger).
    pub ledger: bool,
}

/// Why a key may be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Its coarse `lastUsedAt` would move: it is written whatever its counts.
    LastUsed,
    /// Its counts may be written (`status_interval` since `updatedAt`), if the fold changed them.
    Counts,
}

/// Whether [`super::status_write`] may write a key with `cached` status, given `reports` (of its
/// namespace and key set), at `now`, and why: when its coarse `lastUsedAt` would move, or when
/// its counts are due (`status_interval` since `updatedAt`) and it has counts (which may have
/// to leave a window), a ledger (which may need pruning, or its counts written again) or the
/// reports count it. None: it is not read.
#[must_use]
pub fn may_write(cached: Cached<'_>, reports: &[&Report], budget: Budget, now: Timestamp) -> Option<Due> {
    let mut counted = false;
    let mut last_used = None;
    for report in reports {
        for id in cached.ids {
            let Some(counts) = report.keys.get(id) else { continue };
            counted = true;
            let last = counts.last_allowed.and_then(|t| Timestamp::from_second(t).ok()).map(|t| t.min(now));
            last_used = last_used.max(last);
        }
    }
    if last_used_write(cached.last_used, last_used, budget.last_used_step).is_some() {
        return Some(Due::LastUsed);
    }
    (time_due(cached.usage, budget, now) && (counted || cached.ledger || has_counts(cached.usage)))
        .then_some(Due::Counts)
}

/// Whether `usage` counts anything: usage all zero with no ledger and no report stays so (a fold
/// of nothing is nothing), so such a key is not read.
#[must_use]
pub fn has_counts(usage: Option<&Usage>) -> bool {
    usage.is_some_and(|u| [u.last24h, u.last7d, u.last30d].iter().any(|c| c.allowed > 0 || c.denied > 0))
}

/// Whether the counts of a key with `usage` may be written at `now`: never written, written at
/// least `status_interval` ago, or stamped later than `now` by more than `status_interval` (no
/// operator wrote that: a hand edit, which must not hold the key's counts back for ever; a
/// leader whose clock is a little ahead does not make the next one write early).
#[must_use]
pub fn time_due(usage: Option<&Usage>, budget: Budget, now: Timestamp) -> bool {
    usage.and_then(|u| u.updated_at.as_ref()).is_none_or(|at| {
        let since = now.duration_since(at.0);
        since >= budget.status_interval || -since > budget.status_interval
    })
}

/// A digest of everything a fold of a key with key ids `ids` takes from the reports: each
/// report's source and counts for those ids, and which sources are live.
#[must_use]
pub fn fingerprint(reports: &[&Report], ids: &[KeyId], live: &Live) -> u64 {
    let mut hasher = DefaultHasher::new();
    for report in reports {
        for id in ids {
            if let Some(counts) = report.keys.get(id) {
                (super::source(report), id.to_string(), counts.allowed, counts.denied(), counts.last_allowed)
                    .hash(&mut hasher);
            }
        }
    }
    live.sources.hash(&mut hasher);
    live.unreadable_pods.hash(&mut hasher);
    hasher.finish()
}

/// A key read at a pass that was due by time but had nothing to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quiet {
    /// The `resourceVersion` read.
    pub resource_version: String,
    /// [`fingerprint`] of the reports then.
    pub fingerprint: u64,
    /// The hour of that pass: buckets enter and leave the windows only at whole hours.
    pub hour: i64,
}

impl Quiet {
    /// Remember a key read at `now` with `resource_version`, the reports `fingerprint`, and nothing to write.
    #[must_use]
    pub fn at(resource_version: String, fingerprint: u64, now: Timestamp) -> Quiet {
        Quiet { resource_version, fingerprint, hour: hour(now) }
    }

    /// Whether a fold now would be the same as the one remembered (so would write nothing either):
    /// same object, same reports for its key ids, same hour. Being due by time only stays so.
    #[must_use]
    pub fn still(&self, resource_version: Option<&str>, fingerprint: u64, now: Timestamp) -> bool {
        resource_version == Some(self.resource_version.as_str())
            && fingerprint == self.fingerprint
            && hour(now) == self.hour
    }
}

fn hour(now: Timestamp) -> i64 {
    now.as_second().div_euclid(HOUR)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use jiff::SignedDuration;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::api::RequestCounts;
    use crate::usage::Counts;

    const T0: &str = "2026-01-01T10:00:00Z";

    fn now() -> Timestamp {
        T0.parse().unwrap()
    }

    fn id() -> KeyId {
        "0000000000a1".parse().unwrap()
    }

    fn report(allowed: u64, last_allowed: Timestamp) -> Report {
        Report {
            pod: "api-0".to_owned(),
            pod_uid: "uid".to_owned(),
            epoch: "e1".to_owned(),
            at: last_allowed.as_second(),
            key_sets: vec!["team-a/default".to_owned()],
            keys: BTreeMap::from([(
                id(),
                Counts { allowed, last_allowed: Some(last_allowed.as_second()), ..Counts::default() },
            )]),
        }
    }

    fn written_at(at: Timestamp) -> Usage {
        Usage { updated_at: Some(Time(at)), ..Usage::default() }
    }

    #[test]
    fn a_key_nobody_used_is_not_read() {
        let ids = [id()];
        let cached = Cached { ids: &ids, ..Cached::default() };
        assert_eq!(may_write(cached, &[], Budget::default(), now()), None);
    }

    #[test]
    fn a_key_counted_for_the_first_time_is_read() {
        let ids = [id()];
        let r = report(3, now());
        let cached = Cached { ids: &ids, ..Cached::default() };
        // Never used before: its lastUsedAt moves.
        assert_eq!(may_write(cached, &[&r], Budget::default(), now()), Some(Due::LastUsed));
    }

    #[test]
    fn a_key_written_within_the_status_interval_is_not_read_unless_last_used_moves() {
        let ids = [id()];
        let usage = written_at(now() - SignedDuration::from_mins(1));
        let r = report(3, now());
        let cached = Cached { last_used: Some(coarse_hour(now())), usage: Some(&usage), ids: &ids, ledger: true };
        assert_eq!(may_write(cached, &[&r], Budget::default(), now()), None);
        let an_hour_later = now() + SignedDuration::from_hours(1);
        let r = report(4, an_hour_later);
        assert_eq!(may_write(cached, &[&r], Budget::default(), an_hour_later), Some(Due::LastUsed));
    }

    #[test]
    fn a_key_with_usage_is_read_once_its_counts_are_due() {
        let ids = [id()];
        let usage = written_at(now() - SignedDuration::from_mins(5));
        let cached = Cached { last_used: Some(coarse_hour(now())), usage: Some(&usage), ids: &ids, ledger: true };
        // Even with no report left: its buckets may have to leave a window.
        assert_eq!(may_write(cached, &[], Budget::default(), now()), Some(Due::Counts));
    }

    #[test]
    fn quiet_ends_with_a_new_version_new_counts_or_a_new_hour() {
        let ids = [id()];
        let (r, later) = (report(3, now()), report(4, now()));
        let live = Live::of(std::slice::from_ref(&r), []);
        let print = fingerprint(&[&r], &ids, &live);
        let quiet = Quiet::at("7".to_owned(), print, now());
        assert!(quiet.still(Some("7"), print, now() + SignedDuration::from_mins(59)));
        assert!(!quiet.still(Some("8"), print, now()));
        assert!(!quiet.still(Some("7"), fingerprint(&[&later], &ids, &live), now()));
        assert!(!quiet.still(Some("7"), print, now() + SignedDuration::from_mins(60)));
        let restarted = Live::of(&[r.clone(), Report { epoch: "e2".to_owned(), ..r.clone() }], []);
        assert!(!quiet.still(Some("7"), fingerprint(&[&r], &ids, &restarted), now()), "live sources count too");
    }

    #[test]
    fn a_key_whose_counts_are_all_zero_with_no_ledger_and_no_report_is_not_read() {
        let ids = [id()];
        let zero = written_at(now() - SignedDuration::from_hours(2));
        let cached = Cached { usage: Some(&zero), ids: &ids, ..Cached::default() };
        assert_eq!(may_write(cached, &[], Budget::default(), now()), None);
        let counted = Usage { last7d: RequestCounts { allowed: 0, denied: 1 }, ..zero.clone() };
        let cached = Cached { usage: Some(&counted), ids: &ids, ..Cached::default() };
        assert_eq!(may_write(cached, &[], Budget::default(), now()), Some(Due::Counts), "a count may leave a window");
    }

    #[test]
    fn a_ledger_without_usage_is_read_once_due_even_with_no_report() {
        let ids = [id()];
        let cached = Cached { ids: &ids, ledger: true, ..Cached::default() };
        assert_eq!(may_write(cached, &[], Budget::default(), now()), Some(Due::Counts));
        let cached = Cached { ids: &ids, ..Cached::default() };
        assert_eq!(may_write(cached, &[], Budget::default(), now()), None, "nothing stored, nothing counted");
    }

    #[test]
    fn an_update_time_far_in_the_future_does_not_hold_counts_back() {
        let budget = Budget::default();
        let ahead = |d| written_at(now() + d);
        assert!(
            !time_due(Some(&ahead(SignedDuration::from_secs(30))), budget, now()),
            "a leader's clock a little ahead"
        );
        assert!(!time_due(Some(&ahead(budget.status_interval)), budget, now()));
        assert!(time_due(Some(&ahead(SignedDuration::from_hours(24 * 365))), budget, now()), "written by hand");
    }

    fn coarse_hour(t: Timestamp) -> Timestamp {
        super::super::coarse(t, SignedDuration::from_hours(1))
    }
}
