//! Adding up verifiers' usage reports: the persisted aggregate of one key set, its windows, and when to write status.
//!
//! Pure, like the rest of `plan`: the controller reads the reports and the
//! aggregate, calls [`Aggregate::fold`] and [`Aggregate::usage`], and writes.
//!
//! Reports hold cumulative counts per (pod, epoch). The aggregate remembers,
//! per (pod, epoch) and key id, what it has already taken (its *watermark*),
//! and adds only the difference to time buckets. Because watermarks and
//! buckets are stored in one object and written with a resourceVersion
//! precondition, a report read twice, a retried write or an operator restart
//! can never count anything twice. A verifier restart starts a new epoch from
//! zero; the old epoch's watermark is dropped once its report is gone or
//! replaced, so at most the counts of the last interval before a crash are lost.
//! Only key ids of ApiKeys in the key set are counted, and the controller
//! passes only reports from the key set's namespace, so no verifier can change
//! the usage of another namespace's keys.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::api::{RequestCounts, Usage};
use crate::token::KeyId;
use crate::usage::{Counts, Report};

const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

/// The persisted usage of one key set: buckets per ApiKey and watermarks per (pod, epoch).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Aggregate {
    /// Per ApiKey name: its buckets.
    #[serde(default)]
    pub keys: BTreeMap<String, KeyTotals>,
    /// Per `<pod>/<epoch>`: the cumulative counts already taken, per key id.
    #[serde(default)]
    pub consumed: BTreeMap<String, BTreeMap<String, [u64; 5]>>,
}

/// One ApiKey's counts in time buckets: `[allowed, denied]` per hour (last 24 h) and per UTC day (last 30 days).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyTotals {
    /// Unix second of the last allowed request reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<i64>,
    /// Hour start (Unix seconds) → `[allowed, denied]`.
    #[serde(default)]
    pub hours: BTreeMap<i64, [u64; 2]>,
    /// Day start (Unix seconds, UTC) → `[allowed, denied]`.
    #[serde(default)]
    pub days: BTreeMap<i64, [u64; 2]>,
}

fn to_array(c: &Counts) -> [u64; 5] {
    [c.allowed, c.inactive, c.expired, c.insufficient_scope, c.rate_limited]
}

fn from_array(a: [u64; 5], last_allowed: Option<i64>) -> Counts {
    Counts { allowed: a[0], inactive: a[1], expired: a[2], insufficient_scope: a[3], rate_limited: a[4], last_allowed }
}

/// The watermark key of a report.
#[must_use]
pub fn source(report: &Report) -> String {
    format!("{}/{}", report.pod, report.epoch)
}

impl Aggregate {
    /// Take what `report` adds for the keys of this key set (`members`: key id → ApiKey name), at `now`.
    ///
    /// New counts go into the buckets of `now` (the operator's clock, not the
    /// verifier's: a skewed or forged report time cannot move counts into the
    /// past); the last use is the report's, but never later than `now`.
    pub fn fold(&mut self, report: &Report, members: &BTreeMap<KeyId, String>, now: Timestamp) {
        let now = now.as_second();
        let watermarks = self.consumed.entry(source(report)).or_default();
        for (id, counts) in &report.keys {
            let Some(name) = members.get(id) else { continue };
            let seen = watermarks.get(id.as_str()).copied().unwrap_or_default();
            let delta = counts.minus(&from_array(seen, None));
            let totals = self.keys.entry(name.clone()).or_default();
            add(totals.hours.entry(now - now.rem_euclid(HOUR)).or_default(), &delta);
            add(totals.days.entry(now - now.rem_euclid(DAY)).or_default(), &delta);
            if let Some(last) = counts.last_allowed.map(|t| t.min(now)) {
                totals.last_used = totals.last_used.max(Some(last));
            }
            let mark = from_array(seen, None).max(counts);
            watermarks.insert(id.to_string(), to_array(&mark));
        }
    }

    /// Forget watermarks of reports no longer in the cluster (`live`: their sources),
    /// buckets older than the windows, and ApiKeys not in `names`.
    pub fn prune(&mut self, live: &BTreeSet<String>, names: &BTreeSet<String>, now: Timestamp) {
        let now = now.as_second();
        self.consumed.retain(|source, _| live.contains(source));
        self.keys.retain(|name, _| names.contains(name));
        for totals in self.keys.values_mut() {
            totals.hours.retain(|start, _| start + HOUR > now - DAY);
            totals.days.retain(|start, _| start + DAY > now - 30 * DAY);
        }
    }

    /// The usage of ApiKey `name` at `now`; `None` if nothing was ever reported for it.
    #[must_use]
    pub fn usage(&self, name: &str, now: Timestamp) -> Option<(Option<Timestamp>, Usage)> {
        let totals = self.keys.get(name)?;
        let now = now.as_second();
        let window = |buckets: &BTreeMap<i64, [u64; 2]>, width: i64, span: i64| {
            let [allowed, denied] = buckets
                .iter()
                .filter(|(start, _)| **start + width > now - span && **start <= now)
                .fold([0, 0], |acc, (_, b)| [acc[0] + b[0], acc[1] + b[1]]);
            RequestCounts { allowed, denied }
        };
        let usage = Usage {
            last24h: window(&totals.hours, HOUR, DAY),
            last7d: window(&totals.days, DAY, 7 * DAY),
            last30d: window(&totals.days, DAY, 30 * DAY),
            updated_at: None,
        };
        let last_used = totals.last_used.and_then(|t| Timestamp::from_second(t).ok());
        Some((last_used, usage))
    }
}

fn add(bucket: &mut [u64; 2], delta: &Counts) {
    bucket[0] += delta.allowed;
    bucket[1] += delta.denied();
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

/// What to write into an ApiKey's status, if anything: `(lastUsedAt, usage)`.
///
/// `lastUsedAt` is written when its coarse value moves forward (at most once
/// per step while a key is in use); counts when they changed and the last
/// counts were written at least `status_interval` ago, or with a `lastUsedAt` move.
#[must_use]
pub fn status_write(
    stored_last_used: Option<Timestamp>,
    stored_usage: Option<&Usage>,
    last_used: Option<Timestamp>,
    usage: &Usage,
    budget: Budget,
    now: Timestamp,
) -> Option<(Option<Timestamp>, Usage)> {
    let moved_to = last_used_write(stored_last_used, last_used, budget.last_used_step);
    let moved = moved_to.is_some();
    let same_counts =
        stored_usage.is_some_and(|s| (s.last24h, s.last7d, s.last30d) == (usage.last24h, usage.last7d, usage.last30d));
    let due = stored_usage
        .and_then(|s| s.updated_at.as_ref())
        .is_none_or(|at| now.duration_since(at.0) >= budget.status_interval);
    if !moved && (same_counts || !due) {
        return None;
    }
    let new_last_used = moved_to.or(stored_last_used);
    let usage = Usage { updated_at: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now)), ..usage.clone() };
    Some((new_last_used, usage))
}

#[cfg(test)]
mod tests;
