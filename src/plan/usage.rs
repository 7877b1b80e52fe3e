//! Adding up verifiers' usage reports into each ApiKey's own ledger, its windows, and when to write status.
//!
//! Pure, like the rest of `plan`: the controller reads the reports and the
//! ApiKeys, calls [`fold`] and [`status_write`] per key, and writes.
//!
//! Reports hold cumulative counts per (pod, epoch). Each ApiKey's
//! `status.usageLedger` remembers, per (pod, epoch) and key id, what it has
//! already added (its *watermark*), and adds only the difference to its time
//! buckets. The ledger lives with its key, so no object grows with the number
//! of keys; it is folded only when the key's status is written (reports are
//! cumulative, so a fold that waits for the write budget loses nothing), and
//! written with a resourceVersion precondition, so a report read twice, a
//! retried write, a second operator or an operator restart can never add
//! anything twice. A verifier restart starts a new epoch from zero; the old
//! epoch's watermark is dropped once its report is gone or replaced. Only the
//! key's own key ids are counted, and the controller passes only reports from
//! the key's namespace and key set, so no verifier can change the usage of
//! another namespace's keys.

use std::collections::BTreeSet;

use jiff::{SignedDuration, Timestamp};

use crate::api::{RequestCounts, Usage, UsageLedger};
use crate::token::KeyId;
use crate::usage::{Counts, Report};

const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

/// The most verifier processes one key's ledger keeps a watermark for. A process beyond it is
/// not added up for that key until another one's report is gone; its report is cumulative, so
/// its counts are then added in full (lost only if it also goes away before that).
pub const MAX_SOURCES: usize = 256;

/// The watermark key of a report: `<pod>/<epoch>`.
#[must_use]
pub fn source(report: &Report) -> String {
    format!("{}/{}", report.pod, report.epoch)
}

/// The reports that still exist, by watermark key; a watermark of any other source is dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Live {
    /// `<pod>/<epoch>` of every readable report of the namespace.
    pub sources: BTreeSet<String>,
    /// Pods whose report exists but cannot be read right now: their watermarks are kept, so
    /// that they are not counted again from zero later.
    pub unreadable_pods: BTreeSet<String>,
}

impl Live {
    /// The sources of `reports`, plus the pods whose report could not be read.
    #[must_use]
    pub fn of(reports: &[Report], unreadable_pods: impl IntoIterator<Item = String>) -> Live {
        Live { sources: reports.iter().map(source).collect(), unreadable_pods: unreadable_pods.into_iter().collect() }
    }

    fn contains(&self, source: &str) -> bool {
        self.sources.contains(source)
            || source.rsplit_once('/').is_some_and(|(pod, _)| self.unreadable_pods.contains(pod))
    }
}

/// One key's ledger with what the reports add, ready to be written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fold {
    /// The ledger after the fold and pruning.
    pub ledger: UsageLedger,
    /// `[allowed, denied]` added by this fold.
    pub added: [u64; 2],
    /// The last allowed use the reports show, never later than now.
    pub last_used: Option<Timestamp>,
    /// Reporting processes left out because the ledger holds [`MAX_SOURCES`] already.
    pub waiting: usize,
}

/// Fold `reports` (of the key's namespace and key set) into `stored`, the ledger of an ApiKey
/// whose tokens have key ids `ids`, at `now`.
///
/// New counts go into the buckets of `now` (the operator's clock, not the verifier's: a skewed
/// or forged report time cannot move counts into the past); the last use is the reports', but
/// never later than `now`. Watermarks of sources not `live` and buckets outside the windows are
/// dropped first.
#[must_use]
pub fn fold(stored: Option<&UsageLedger>, reports: &[&Report], ids: &[KeyId], live: &Live, now: Timestamp) -> Fold {
    fold_sources(stored, reports.iter().map(|r| (source(r), *r)), ids, live, now)
}

/// [`fold`] of reports each with its watermark key given (a cluster key's are namespace-qualified).
fn fold_sources<'a>(
    stored: Option<&UsageLedger>,
    reports: impl IntoIterator<Item = (String, &'a Report)>,
    ids: &[KeyId],
    live: &Live,
    now: Timestamp,
) -> Fold {
    let now_s = now.as_second();
    let mut out = Fold { ledger: stored.cloned().unwrap_or_default(), ..Fold::default() };
    prune(&mut out.ledger, live, now_s);
    for (source, report) in reports {
        for id in ids {
            let Some(counts) = report.keys.get(id) else { continue };
            let last = counts.last_allowed.and_then(|t| Timestamp::from_second(t).ok()).map(|t| t.min(now));
            out.last_used = out.last_used.max(last);
            let known = out.ledger.folded.contains_key(&source);
            if !known && out.ledger.folded.len() >= MAX_SOURCES {
                out.waiting += 1;
                continue;
            }
            let marks = out.ledger.folded.entry(source.clone()).or_default();
            let mark = marks.entry(id.to_string()).or_default();
            let delta = minus(pair(counts), *mark);
            *mark = [mark[0].max(counts.allowed), mark[1].max(counts.denied())];
            if delta != [0, 0] {
                add(out.ledger.hours.entry(bucket(now_s, HOUR)).or_default(), delta);
                add(out.ledger.days.entry(bucket(now_s, DAY)).or_default(), delta);
                add(&mut out.added, delta);
            }
        }
    }
    out
}

fn pair(c: &Counts) -> [u64; 2] {
    [c.allowed, c.denied()]
}

/// What was counted since the watermark; a counter lower than its watermark (which cumulative
/// counters never are) counts as zero.
fn minus(now: [u64; 2], mark: [u64; 2]) -> [u64; 2] {
    [now[0].saturating_sub(mark[0]), now[1].saturating_sub(mark[1])]
}

/// Saturating: a bucket edited by hand to a huge count stays huge, and never wraps to a small one.
fn add(total: &mut [u64; 2], delta: [u64; 2]) {
    total[0] = total[0].saturating_add(delta[0]);
    total[1] = total[1].saturating_add(delta[1]);
}

/// The bucket key of the `width`-second bucket holding `t`.
fn bucket(t: i64, width: i64) -> String {
    (t - t.rem_euclid(width)).to_string()
}

/// Drop watermarks of sources no longer live and buckets no longer in any window.
fn prune(ledger: &mut UsageLedger, live: &Live, now: i64) {
    ledger.folded.retain(|source, _| live.contains(source));
    let keep = |width: i64, span: i64| move |start: &String, _: &mut [u64; 2]| in_window(start, width, span, now);
    ledger.hours.retain(keep(HOUR, DAY));
    ledger.days.retain(keep(DAY, 30 * DAY));
}

/// Whether the bucket starting at `start` overlaps the `span` seconds before `now`. A bucket
/// key that is not a number (written by hand) is in no window.
fn in_window(start: &str, width: i64, span: i64, now: i64) -> bool {
    start.parse::<i64>().is_ok_and(|start| start + width > now - span && start <= now)
}

/// The public counts of `ledger` at `now` (without `updatedAt`).
#[must_use]
pub fn usage(ledger: &UsageLedger, now: Timestamp) -> Usage {
    let now = now.as_second();
    let window = |buckets: &std::collections::BTreeMap<String, [u64; 2]>, width: i64, span: i64| {
        let [allowed, denied] =
            buckets.iter().filter(|(start, _)| in_window(start, width, span, now)).fold([0, 0], |mut acc, (_, b)| {
                add(&mut acc, *b);
                acc
            });
        RequestCounts { allowed, denied }
    };
    Usage {
        last24h: window(&ledger.hours, HOUR, DAY),
        last7d: window(&ledger.days, DAY, 7 * DAY),
        last30d: window(&ledger.days, DAY, 30 * DAY),
        updated_at: None,
    }
}

/// The status write budget: how often counts may be written, how coarse `lastUsedAt` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Counts are written at most once per this long per key (`--usage-status-interval`).
    pub status_interval: SignedDuration,
    /// `lastUsedAt` is rounded down to this step (`--usage-last-used-step`).
    pub last_used_step: SignedDuration,
}

impl Default for Budget {
    fn default() -> Self {
        Budget { status_interval: SignedDuration::from_mins(5), last_used_step: SignedDuration::from_hours(1) }
    }
}

/// `t` rounded down to a whole `step`.
#[must_use]
pub fn coarse(t: Timestamp, step: SignedDuration) -> Timestamp {
    let step = step.as_secs().max(1);
    let s = t.as_second();
    Timestamp::from_second(s - s.rem_euclid(step)).unwrap_or(t)
}

/// The `lastUsedAt` to write, if it moved: `last_used` rounded down to `step`, when later
/// than the stored one. A maximum, so writing it again never counts anything twice.
#[must_use]
pub fn last_used_write(
    stored: Option<Timestamp>,
    last_used: Option<Timestamp>,
    step: SignedDuration,
) -> Option<Timestamp> {
    let last_used = coarse(last_used?, step);
    stored.is_none_or(|s| last_used > s).then_some(last_used)
}

/// An ApiKey's usage status as stored.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stored<'a> {
    /// `status.lastUsedAt`.
    pub last_used: Option<Timestamp>,
    /// `status.usage`.
    pub usage: Option<&'a Usage>,
    /// `status.usageLedger`.
    pub ledger: Option<&'a UsageLedger>,
}

/// What to write into an ApiKey's status.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusWrite {
    /// `lastUsedAt`.
    pub last_used: Option<Timestamp>,
    /// The counts, with `updatedAt` now.
    pub usage: Usage,
    /// The ledger they are added up from.
    pub ledger: UsageLedger,
}

/// What to write into an ApiKey's status after `fold`, if anything.
///
/// `lastUsedAt` is written when its coarse value moves forward (at most once per step while a
/// key is in use); the fold (ledger and counts) when it changed anything and the last one was
/// written at least `status_interval` ago, or together with a `lastUsedAt` move, which costs
/// that write anyway. A fold not written is simply done again later: the reports still hold it.
///
/// The stored status is only ever an input to the fold, never trusted beyond it: a ledger
/// stored without `usage` (removed or edited by hand) is written with its counts again, and one
/// holding buckets outside the windows or not numbers, or watermarks of reports that are gone,
/// is written pruned (by [`fold`]), whether or not any report moved. `usage` is always computed
/// from the ledger, never added to, so a wrong stored `usage` is replaced, not built upon.
#[must_use]
pub fn status_write(stored: Stored<'_>, fold: Fold, budget: Budget, now: Timestamp) -> Option<StatusWrite> {
    let moved_to = last_used_write(stored.last_used, fold.last_used, budget.last_used_step);
    let usage = usage(&fold.ledger, now);
    let counts_moved = match stored.usage {
        Some(s) => (s.last24h, s.last7d, s.last30d) != (usage.last24h, usage.last7d, usage.last30d),
        // Counts missing beside a ledger: they are written again.
        None => fold.ledger != UsageLedger::default(),
    };
    let ledger_moved = stored.ledger.map_or(fold.ledger != UsageLedger::default(), |l| *l != fold.ledger);
    let due = due::time_due(stored.usage, budget, now);
    if moved_to.is_none() && !((counts_moved || ledger_moved) && due) {
        return None;
    }
    let updated_at = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
    Some(StatusWrite {
        last_used: moved_to.or(stored.last_used),
        usage: Usage { updated_at, ..usage },
        ledger: fold.ledger,
    })
}

pub mod cluster;
pub mod due;
pub mod pace;

#[cfg(test)]
mod tests;
