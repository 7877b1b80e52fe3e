//! Usage anomalies of a working key: one Warning Event `UsageAnomaly` (and so one webhook
//! notice) per kind and 24 hours, remembered in `status.usageAnomalies`.
//!
//! A usage write is a change of the ApiKey, so the controller plans again after each one
//! and this step sees the new counts. The record in status makes a restarted operator
//! (or a second reconcile of the same counts) stay silent about what it already said.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{KeyState, UsageAnomalyNotice};
use crate::plan::anomaly::{Anomaly, RENOTIFY_AFTER, baseline_days, detect, is_current};
use crate::plan::{EventKind, Reason};

use super::Draft;

impl Draft<'_> {
    /// Judge `status.usage` of a key that works (Active or Rotating): a disabled key's
    /// refusals are expected, and a key not issued yet has no usage.
    pub(super) fn usage_anomalies(&mut self) {
        let Some(limits) = self.settings.anomalies else { return };
        let working = matches!(self.status.state, Some(KeyState::Active | KeyState::Rotating));
        let found: Vec<Anomaly> = match &self.status.usage {
            Some(usage) if working && is_current(usage, self.now) => {
                let created = self.key.metadata.creation_timestamp.as_ref().map(|t| t.0);
                detect(usage, baseline_days(created, self.now), &limits)
            }
            _ => Vec::new(),
        };
        let now = self.now;
        let fresh = |record: &UsageAnomalyNotice| now.duration_since(record.notified_at.0) < RENOTIFY_AFTER;
        // Records that no longer hold anything back go, so status stays small.
        self.status.usage_anomalies.retain(|r| fresh(r) || found.iter().any(|a| a.kind.as_str() == r.kind));
        let new: Vec<&Anomaly> = found
            .iter()
            .filter(|a| !self.status.usage_anomalies.iter().any(|r| r.kind == a.kind.as_str() && fresh(r)))
            .collect();
        if new.is_empty() {
            return;
        }
        let said: Vec<String> = new.iter().map(ToString::to_string).collect();
        self.event(EventKind::Warning, Reason::UsageAnomaly, format!("Unusual usage: {}", said.join("; ")));
        for anomaly in new {
            self.status.usage_anomalies.retain(|r| r.kind != anomaly.kind.as_str());
            self.status
                .usage_anomalies
                .push(UsageAnomalyNotice { kind: anomaly.kind.as_str().to_owned(), notified_at: Time(now) });
            self.out.anomalies.push(anomaly.kind);
        }
        self.status.usage_anomalies.sort_by(|a, b| a.kind.cmp(&b.kind));
    }
}
