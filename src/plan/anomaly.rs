//! Usage anomalies: a key suddenly used, or refused, far more than on its recent days, or
//! refused more than it is allowed, judged from its public `status.usage` counts alone.
//!
//! Pure: counts and thresholds in, anomalies out. Only the fields of `status.usage` that
//! users see (`last24h`, `last7d`, `updatedAt`) are read, never how the operator stores
//! usage, so the detector holds whatever that storage becomes. The lifecycle
//! (`lifecycle::anomalies`) turns a detected anomaly into one Warning Event and webhook
//! notice per kind and 24 hours, recorded in `status.usageAnomalies`.
//!
//! The daily baseline is the days before the last 24 hours: `last7d − last24h` over as many
//! whole days as the key existed before them, at most six. A key younger than two days has
//! no baseline and cannot spike; a key that was silent for a week and is suddenly busy does
//! spike (that is what a leaked key looks like).

use std::fmt;

use jiff::{SignedDuration, Timestamp};

use crate::api::Usage;

/// When a usage pattern counts as an anomaly (`--usage-anomaly-*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// A spike is the last 24 hours above this many times the daily average of the days
    /// before; 0 turns spikes off.
    pub factor: u32,
    /// Fewest requests (allowed, or denied) in the last 24 hours for a spike of them, so a
    /// quiet key going from 2 to 40 a day does not alarm.
    pub min_requests: u64,
    /// Fewest denied requests in the last 24 hours for a denial surge.
    pub min_denied: u64,
    /// Share of all requests in the last 24 hours, in percent, that denials must reach for a
    /// denial surge; 0 turns surges off.
    pub denied_percent: u8,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds { factor: 10, min_requests: 1000, min_denied: 100, denied_percent: 50 }
    }
}

/// How long one notice of a kind holds: the same anomaly is notified again at most this often.
pub const RENOTIFY_AFTER: SignedDuration = SignedDuration::from_hours(24);

/// The kinds of anomaly, each notified on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AnomalyKind {
    /// Allowed requests in the last 24 hours far above the daily average.
    AllowedSpike,
    /// Denied requests in the last 24 hours far above the daily average.
    DeniedSpike,
    /// Denied requests in the last 24 hours a large share of all.
    DenialSurge,
}

impl AnomalyKind {
    /// Every kind, in order.
    pub const ALL: [AnomalyKind; 3] = [AnomalyKind::AllowedSpike, AnomalyKind::DeniedSpike, AnomalyKind::DenialSurge];

    /// The name written to status, Events and metrics.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            AnomalyKind::AllowedSpike => "AllowedSpike",
            AnomalyKind::DeniedSpike => "DeniedSpike",
            AnomalyKind::DenialSurge => "DenialSurge",
        }
    }
}

impl fmt::Display for AnomalyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One anomaly found, with the counts that show it (counts only: nothing secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anomaly {
    /// Which.
    pub kind: AnomalyKind,
    /// Allowed requests in the last 24 hours.
    pub allowed: u64,
    /// Denied requests in the last 24 hours.
    pub denied: u64,
    /// For a spike: the requests of that kind over the baseline days, and how many days.
    pub baseline: Option<(u64, u64)>,
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (count, what) = match self.kind {
            AnomalyKind::AllowedSpike => (self.allowed, "allowed"),
            AnomalyKind::DeniedSpike | AnomalyKind::DenialSurge => (self.denied, "denied"),
        };
        match (self.kind, self.baseline) {
            (AnomalyKind::DenialSurge, _) | (_, None) => {
                let total = self.allowed.saturating_add(self.denied);
                let percent = count.saturating_mul(100).checked_div(total).unwrap_or(0);
                write!(f, "{}: {count} of {total} requests {what} in the last 24h ({percent}%)", self.kind)
            }
            (_, Some((before, days))) => {
                let average = before / days.max(1);
                write!(
                    f,
                    "{}: {count} requests {what} in the last 24h, against {average} a day over the {days} days before",
                    self.kind
                )
            }
        }
    }
}

/// Whole days the key existed before the last 24 hours, at most six: the baseline's length.
/// A key of unknown age is taken to have the full six.
#[must_use]
pub fn baseline_days(created: Option<Timestamp>, now: Timestamp) -> u64 {
    let Some(created) = created else { return 6 };
    let days = created.duration_until(now).as_hours() / 24 - 1;
    u64::try_from(days.clamp(0, 6)).unwrap_or(0)
}

/// Whether the counts still describe the last 24 hours: `updatedAt` (when present) within them.
#[must_use]
pub fn is_current(usage: &Usage, now: Timestamp) -> bool {
    usage.updated_at.as_ref().is_none_or(|at| now.duration_since(at.0) < RENOTIFY_AFTER)
}

/// The anomalies in `usage`, for a key with `days` baseline days ([`baseline_days`]).
#[must_use]
pub fn detect(usage: &Usage, days: u64, limits: &Thresholds) -> Vec<Anomaly> {
    let (day, week) = (usage.last24h, usage.last7d);
    let found = |kind, baseline| Anomaly { kind, allowed: day.allowed, denied: day.denied, baseline };
    let mut out = Vec::new();
    let spikes =
        [(AnomalyKind::AllowedSpike, day.allowed, week.allowed), (AnomalyKind::DeniedSpike, day.denied, week.denied)];
    for (kind, last, seven) in spikes {
        if limits.factor == 0 || days == 0 || last < limits.min_requests {
            continue;
        }
        // The week's days are whole UTC days and the last 24 h whole hours: the difference
        // may hold a few hours more than the baseline days, which only raises the bar.
        let before = seven.saturating_sub(last);
        // last > factor × before / days, without rounding.
        if u128::from(last) * u128::from(days) > u128::from(limits.factor) * u128::from(before) {
            out.push(found(kind, Some((before, days))));
        }
    }
    let total = u128::from(day.allowed) + u128::from(day.denied);
    if limits.denied_percent > 0
        && day.denied >= limits.min_denied
        && u128::from(day.denied) * 100 >= u128::from(limits.denied_percent) * total
    {
        out.push(found(AnomalyKind::DenialSurge, None));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::RequestCounts;

    fn usage(day: (u64, u64), week: (u64, u64)) -> Usage {
        Usage {
            last24h: RequestCounts { allowed: day.0, denied: day.1 },
            last7d: RequestCounts { allowed: week.0, denied: week.1 },
            last30d: RequestCounts { allowed: week.0, denied: week.1 },
            updated_at: None,
        }
    }

    /// (what, last 24 h (allowed, denied), last 7 d, baseline days, expected).
    type Case = (&'static str, (u64, u64), (u64, u64), u64, &'static [AnomalyKind]);

    fn kinds(usage: &Usage, days: u64) -> Vec<AnomalyKind> {
        detect(usage, days, &Thresholds::default()).into_iter().map(|a| a.kind).collect()
    }

    #[test]
    fn the_detector_judges_each_pattern_as_documented() {
        use AnomalyKind::{AllowedSpike, DenialSurge, DeniedSpike};
        let cases: &[Case] = &[
            ("a spike: 20,000 against 500 a day", (20_000, 0), (23_000, 0), 6, &[AllowedSpike]),
            ("a steady busy key", (20_000, 10), (140_000, 70), 6, &[]),
            ("tenfold exactly is not above tenfold", (5_000, 0), (8_000, 0), 6, &[]),
            ("a quiet key going from 2 to 900 a day", (900, 0), (912, 0), 6, &[]),
            ("the first day of a new key", (50_000, 0), (50_000, 0), 0, &[]),
            ("the third day of a new key, against its two days before", (30_000, 0), (31_000, 0), 2, &[AllowedSpike]),
            ("a key silent for a week, suddenly busy", (5_000, 0), (5_000, 0), 6, &[AllowedSpike]),
            ("a denial surge: most requests refused", (150, 400), (2_100, 400), 6, &[DenialSurge]),
            ("denials under the minimum", (10, 99), (70, 99), 6, &[]),
            ("many denials, but a small share", (10_000, 500), (70_000, 3_500), 6, &[]),
            ("a spike of denials, most requests refused", (100, 3_000), (700, 3_060), 6, &[DeniedSpike, DenialSurge]),
            ("a brand-new key refused from the start", (0, 200), (0, 200), 0, &[DenialSurge]),
            ("no usage at all", (0, 0), (0, 0), 6, &[]),
        ];
        for (what, day, week, days, expected) in cases {
            assert_eq!(kinds(&usage(*day, *week), *days), *expected, "{what}");
        }
    }

    #[test]
    fn factor_zero_and_share_zero_turn_the_checks_off() {
        let spike = usage((20_000, 5_000), (20_000, 5_000));
        let off = Thresholds { factor: 0, denied_percent: 0, ..Thresholds::default() };
        assert_eq!(detect(&spike, 6, &off), Vec::new());
        assert_eq!(detect(&spike, 6, &Thresholds::default()).len(), 2, "both spikes with the defaults");
    }

    #[test]
    fn the_baseline_is_the_whole_days_before_the_last_24_hours_at_most_six() {
        let now: Timestamp = "2026-12-10T12:00:00Z".parse().unwrap();
        let at = |text: &str| Some(text.parse::<Timestamp>().unwrap());
        assert_eq!(baseline_days(at("2026-12-10T00:00:00Z"), now), 0, "created today");
        assert_eq!(baseline_days(at("2026-12-09T00:00:00Z"), now), 0, "36 hours old: no whole day before");
        assert_eq!(baseline_days(at("2026-12-08T11:00:00Z"), now), 1);
        assert_eq!(baseline_days(at("2026-11-01T00:00:00Z"), now), 6);
        assert_eq!(baseline_days(None, now), 6);
        assert_eq!(baseline_days(at("2026-12-11T00:00:00Z"), now), 0, "a clock behind the creation time");
    }

    #[test]
    fn counts_older_than_a_day_are_not_judged() {
        let now: Timestamp = "2026-12-10T12:00:00Z".parse().unwrap();
        let mut counts = usage((1, 0), (1, 0));
        assert!(is_current(&counts, now), "no updatedAt: taken as current");
        counts.updated_at =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time("2026-12-10T11:55:00Z".parse().unwrap()));
        assert!(is_current(&counts, now));
        counts.updated_at =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time("2026-12-09T11:00:00Z".parse().unwrap()));
        assert!(!is_current(&counts, now));
    }

    #[test]
    fn a_message_names_the_counts_and_the_baseline() {
        let found = detect(&usage((20_000, 0), (23_000, 0)), 6, &Thresholds::default());
        assert_eq!(
            found[0].to_string(),
            "AllowedSpike: 20000 requests allowed in the last 24h, against 500 a day over the 6 days before"
        );
        let surge = detect(&usage((150, 400), (2_100, 400)), 6, &Thresholds::default());
        assert_eq!(surge[0].to_string(), "DenialSurge: 400 of 550 requests denied in the last 24h (72%)");
    }
}
