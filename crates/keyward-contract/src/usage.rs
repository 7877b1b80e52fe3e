//! The usage report: what one verifier process counted per key id since it started, as it stores it in the cluster.
//!
//! Each verifier pod writes one ConfigMap ([`report_name`], labelled
//! [`LABEL_USAGE_REPORT`]) in its own namespace, owned by its Pod so that
//! garbage collection removes it with the Pod. The report holds *cumulative*
//! counts since a random per-process `epoch`, so the operator can add up any
//! number of replicas and restarts: it remembers, per (pod, epoch), what it
//! already took, and takes only the difference. A report written twice, or
//! read twice, adds nothing the second time.
//!
//! The text format, one item per line:
//!
//! ```text
//! keyward-usage v1
//! pod <pod name> <pod uid>
//! epoch <16 hex digits>
//! at <Unix seconds when written>
//! keyset <namespace>/<name>            (one line per loaded key set)
//! key <key id> <allowed> <inactive> <expired> <insufficient_scope> <rate_limited> <last allowed, Unix seconds, or ->
//! ```
//!
//! Only key ids and numbers: no token, hash or request detail is ever in a report.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::token::KeyId;

/// Label on every usage report ConfigMap (value `"true"`).
pub const LABEL_USAGE_REPORT: &str = "keyward.dev/usage-report";
/// The ConfigMap data key holding the report text.
pub const REPORT_KEY: &str = "usage.report";
/// First line of every report.
const MAGIC: &str = "keyward-usage v1";
/// Largest report accepted, well under the 1 MiB object limit.
pub const MAX_REPORT_BYTES: usize = 900 * 1024;

/// Counts for one key id, cumulative since an epoch (or a difference of two such).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Allowed requests.
    pub allowed: u64,
    /// Refused: the key is switched off.
    pub inactive: u64,
    /// Refused: outside the key's validity window.
    pub expired: u64,
    /// Refused: the key's scopes do not allow the request.
    pub insufficient_scope: u64,
    /// Refused: the key's rate limit was exhausted.
    pub rate_limited: u64,
    /// Unix second of the last allowed request.
    pub last_allowed: Option<i64>,
}

impl Counts {
    /// Refused requests of every reason.
    #[must_use]
    pub fn denied(&self) -> u64 {
        self.inactive + self.expired + self.insufficient_scope + self.rate_limited
    }

    /// Whether nothing was counted.
    #[must_use]
    pub fn is_zero(&self) -> bool {
        self.allowed == 0 && self.denied() == 0 && self.last_allowed.is_none()
    }

    /// What was counted since `earlier` (a reading of the same counters): a
    /// counter lower than before (which cumulative counters never are) counts as zero.
    #[must_use]
    pub fn minus(&self, earlier: &Counts) -> Counts {
        Counts {
            allowed: self.allowed.saturating_sub(earlier.allowed),
            inactive: self.inactive.saturating_sub(earlier.inactive),
            expired: self.expired.saturating_sub(earlier.expired),
            insufficient_scope: self.insufficient_scope.saturating_sub(earlier.insufficient_scope),
            rate_limited: self.rate_limited.saturating_sub(earlier.rate_limited),
            last_allowed: self.last_allowed.filter(|t| earlier.last_allowed.is_none_or(|e| *t > e)),
        }
    }

    /// The larger of each counter (for watermarks).
    #[must_use]
    pub fn max(&self, other: &Counts) -> Counts {
        Counts {
            allowed: self.allowed.max(other.allowed),
            inactive: self.inactive.max(other.inactive),
            expired: self.expired.max(other.expired),
            insufficient_scope: self.insufficient_scope.max(other.insufficient_scope),
            rate_limited: self.rate_limited.max(other.rate_limited),
            last_allowed: self.last_allowed.max(other.last_allowed),
        }
    }
}

/// One verifier process's report.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    /// The Pod's name.
    pub pod: String,
    /// The Pod's uid.
    pub pod_uid: String,
    /// Random per process: a restart starts a new epoch whose counts start at zero.
    pub epoch: String,
    /// When the report was written (Unix seconds).
    pub at: i64,
    /// The key sets the verifier had loaded (`namespace/name`).
    pub key_sets: Vec<String>,
    /// Cumulative counts since the epoch began, per key id.
    pub keys: BTreeMap<KeyId, Counts>,
}

/// Why a report was refused. Never quotes the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// The first line is not the format's.
    #[error("not a keyward usage report (version line)")]
    Version,
    /// A line does not follow the format.
    #[error("usage report line {0} is malformed")]
    Line(usize),
    /// A header line is missing.
    #[error("usage report lacks its {0} line")]
    Missing(&'static str),
    /// The report is larger than [`MAX_REPORT_BYTES`].
    #[error("usage report is too large")]
    TooLarge,
}

/// The ConfigMap name of the report of pod `pod`: `keyward-usage-<pod>`, shortened to fit a name.
#[must_use]
pub fn report_name(pod: &str) -> String {
    let mut name = format!("keyward-usage-{pod}");
    name.truncate(253);
    while name.ends_with(['-', '.']) {
        name.pop();
    }
    name
}

/// Whether `epoch` has the form a verifier writes (16 lowercase hex digits).
fn valid_epoch(epoch: &str) -> bool {
    epoch.len() == 16 && epoch.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A fresh epoch from `rng`.
#[must_use]
pub fn new_epoch(rng: &mut impl rand::Rng) -> String {
    format!("{:016x}", rng.random::<u64>())
}

impl Report {
    /// The report as text.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(128 + self.keys.len() * 64);
        // Writing into a String cannot fail.
        let _ = writeln!(out, "{MAGIC}");
        let _ = writeln!(out, "pod {} {}", self.pod, self.pod_uid);
        let _ = writeln!(out, "epoch {}", self.epoch);
        let _ = writeln!(out, "at {}", self.at);
        for set in &self.key_sets {
            let _ = writeln!(out, "keyset {set}");
        }
        for (id, c) in &self.keys {
            let last = c.last_allowed.map_or_else(|| "-".to_owned(), |t| t.to_string());
            let _ = writeln!(
                out,
                "key {} {} {} {} {} {} {last}",
                id.as_str(),
                c.allowed,
                c.inactive,
                c.expired,
                c.insufficient_scope,
                c.rate_limited
            );
        }
        out
    }

    /// Read a report strictly.
    pub fn decode(text: &str) -> Result<Report, ReportError> {
        if text.len() > MAX_REPORT_BYTES {
            return Err(ReportError::TooLarge);
        }
        let mut lines = text.lines();
        if lines.next() != Some(MAGIC) {
            return Err(ReportError::Version);
        }
        let mut report = Report::default();
        let (mut pod, mut epoch, mut at) = (false, false, false);
        for (n, line) in lines.enumerate() {
            let number = n + 2;
            let bad = || ReportError::Line(number);
            let mut words = line.split(' ');
            match words.next() {
                Some("pod") => {
                    words.next().filter(|w| !w.is_empty()).ok_or_else(bad)?.clone_into(&mut report.pod);
                    words.next().ok_or_else(bad)?.clone_into(&mut report.pod_uid);
                    pod = true;
                }
                Some("epoch") => {
                    words.next().filter(|e| valid_epoch(e)).ok_or_else(bad)?.clone_into(&mut report.epoch);
                    epoch = true;
                }
                Some("at") => {
                    report.at = words.next().and_then(|w| w.parse().ok()).ok_or_else(bad)?;
                    at = true;
                }
                Some("keyset") => {
                    report.key_sets.push(words.next().filter(|w| w.contains('/')).ok_or_else(bad)?.to_owned());
                }
                Some("key") => {
                    let id: KeyId = words.next().and_then(|w| w.parse().ok()).ok_or_else(bad)?;
                    let mut number = || words.next().and_then(|w| w.parse::<u64>().ok()).ok_or_else(bad);
                    let (allowed, inactive, expired, insufficient_scope, rate_limited) =
                        (number()?, number()?, number()?, number()?, number()?);
                    let last_allowed = match words.next() {
                        Some("-") => None,
                        Some(w) => Some(w.parse::<i64>().map_err(|_| bad())?),
                        None => return Err(bad()),
                    };
                    let counts = Counts { allowed, inactive, expired, insufficient_scope, rate_limited, last_allowed };
                    if report.keys.insert(id, counts).is_some() {
                        return Err(bad());
                    }
                }
                _ => return Err(bad()),
            }
            if words.next().is_some() {
                return Err(bad());
            }
        }
        for (present, what) in [(pod, "pod"), (epoch, "epoch"), (at, "at")] {
            if !present {
                return Err(ReportError::Missing(what));
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> KeyId {
        text.parse().unwrap()
    }

    fn sample() -> Report {
        let mut keys = BTreeMap::new();
        keys.insert(
            id("0123456789ab"),
            Counts {
                allowed: 41,
                inactive: 1,
                expired: 2,
                insufficient_scope: 3,
                rate_limited: 4,
                last_allowed: Some(1_764_000_000),
            },
        );
        keys.insert(id("ba9876543210"), Counts { expired: 7, ..Counts::default() });
        Report {
            pod: "crm-api-7d9f-abcde".into(),
            pod_uid: "6f1c2d4e-0000-4000-8000-000000000001".into(),
            epoch: "00000000deadbeef".into(),
            at: 1_764_000_060,
            key_sets: vec!["crm/default".into()],
            keys,
        }
    }

    #[test]
    fn a_report_reads_back_as_written() {
        let report = sample();
        let text = report.encode();
        assert_eq!(Report::decode(&text), Ok(report), "{text}");
    }

    #[test]
    fn the_format_is_pinned() {
        let expected = "keyward-usage v1\npod crm-api-7d9f-abcde 6f1c2d4e-0000-4000-8000-000000000001\nepoch 00000000deadbeef\nat 1764000060\nkeyset crm/default\nkey 0123456789ab 41 1 2 3 4 1764000000\nkey ba9876543210 0 0 7 0 0 -\n";
        assert_eq!(sample().encode(), expected);
    }

    #[test]
    fn malformed_reports_are_refused_without_quoting_them() {
        let good = sample().encode();
        let cases = [
            ("", ReportError::Version),
            ("keyward-usage v2\n", ReportError::Version),
            ("keyward-usage v1\nepoch 00000000deadbeef\nat 1\n", ReportError::Missing("pod")),
            (&good.replace("epoch 00000000deadbeef", "epoch xyz"), ReportError::Line(3)),
            (&good.replace(" 41 ", " -41 "), ReportError::Line(6)),
            (&format!("{good}key 0123456789ab 1 1 1 1 1 -\n"), ReportError::Line(8)),
            (&format!("{good}secret kw_sometoken\n"), ReportError::Line(8)),
        ];
        for (text, want) in cases {
            let got = Report::decode(text);
            assert_eq!(got, Err(want.clone()), "for {text:?}");
            assert!(!want.to_string().contains("kw_"), "an error quoted its input: {want}");
        }
    }

    #[test]
    fn differences_never_go_below_zero() {
        let later = Counts { allowed: 5, last_allowed: Some(10), ..Counts::default() };
        let earlier = Counts { allowed: 7, last_allowed: Some(10), expired: 1, ..Counts::default() };
        assert_eq!(later.minus(&earlier), Counts::default());
        assert_eq!(earlier.minus(&Counts::default()).denied(), 1);
    }

    #[test]
    fn report_names_fit_a_configmap_name() {
        assert_eq!(report_name("crm-api-0"), "keyward-usage-crm-api-0");
        assert!(report_name(&"a".repeat(300)).len() <= 253);
    }
}
