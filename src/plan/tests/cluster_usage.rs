//! Unused expiry, its notices and usage anomalies for a ClusterApiKey: the shared lifecycle plan
//! through [`crate::plan::cluster`], fed the usage the usage pass writes into the key's own status.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{ClusterApiKey, ClusterApiKeyStatus, KeyState, RequestCounts, Usage};
use crate::plan::anomaly::AnomalyKind;
use crate::plan::cluster::{self, ClusterPlan};
use crate::plan::{Observed, Settings};

use super::fixtures::{T0, World};

const AGENCY: &str = r#"
apiVersion: keyward.dev/v1alpha1
kind: ClusterApiKey
metadata: {name: agency, uid: uid-agency, generation: 1, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  scopes: ["contacts:read"]
  secretNamespace: platform
  namespaceSelector: {matchLabels: {agency: acme}}
  expireAfterUnused: 30d
"#;

/// A cluster key converged at [`T0`] (Ready, published in two namespaces), planned as the controller does.
struct Agency {
    key: ClusterApiKey,
    observed: Observed,
    settings: Settings,
    now: Timestamp,
    events: Vec<&'static str>,
}

impl Agency {
    fn converged() -> Agency {
        let mut key: ClusterApiKey = serde_yaml::from_str(AGENCY).unwrap();
        // The lifecycle of the ApiKey it stands for, carried out by the plan's simulation.
        let world = World::converged(cluster::view(&key), T0);
        key.metadata.finalizers = world.key.metadata.finalizers.clone();
        let namespaces = vec!["loc-a".to_owned(), "loc-b".to_owned()];
        key.status = Some(ClusterApiKeyStatus {
            key: world.key.status.clone().expect("converged"),
            namespaces,
            namespace_count: Some(2),
        });
        Agency {
            key,
            observed: world.observed.clone(),
            settings: world.settings.clone(),
            now: world.now,
            events: Vec::new(),
        }
    }

    /// Plan at `self.now` and write the status it asks for.
    fn reconcile(&mut self) -> ClusterPlan {
        let namespaces = self.status().namespaces.clone();
        let plan = cluster::plan(&self.key, &self.observed, namespaces, &self.settings, self.now);
        if let Some(status) = &plan.status {
            self.key.status = Some(status.clone());
        }
        self.events.extend(plan.plan.events.iter().map(|e| e.reason.as_str()));
        plan
    }

    fn status(&self) -> &ClusterApiKeyStatus {
        self.key.status.as_ref().expect("a status")
    }

    fn ready(&self) -> (String, String) {
        let c = &self.status().key.conditions[0];
        (c.status.clone(), c.reason.clone())
    }

    fn notices(&self) -> usize {
        self.events.iter().filter(|r| **r == "ExpiringSoon").count()
    }

    /// What the usage pass writes after a verifier of a selected namespace allowed a request.
    fn used_at(&mut self, at: Timestamp) {
        self.key.status.as_mut().unwrap().key.last_used_at = Some(Time(at));
    }

    fn deadline_unused(&self) -> Timestamp {
        let since = crate::plan::unused::unused_since(Some(&self.status().key)).expect("Ready");
        since + SignedDuration::from_hours(30 * 24)
    }
}

#[test]
fn a_never_used_cluster_key_expires_with_reason_unused_exactly_at_its_deadline() {
    let mut agency = Agency::converged();
    agency.settings.expiry_notices.clear();
    let deadline = agency.deadline_unused();
    assert_eq!(agency.reconcile().plan.requeue_at, Some(deadline), "looked at exactly at its deadline");

    agency.now = deadline - SignedDuration::from_secs(1);
    agency.reconcile();
    assert_eq!(agency.status().key.state, Some(KeyState::Active), "one second before its deadline");

    agency.now = deadline;
    let plan = agency.reconcile();
    assert_eq!(agency.status().key.state, Some(KeyState::Expired));
    assert_eq!(agency.status().key.expired_at.as_ref().map(|t| t.0), Some(deadline));
    assert_eq!(agency.ready(), ("False".to_owned(), "Unused".to_owned()));
    assert!(plan.plan.records.is_empty(), "withdrawn from every key set: {:?}", plan.plan.records);
    assert_eq!(agency.status().namespaces, ["loc-a", "loc-b"], "still selected, no longer carried");
}

#[test]
fn a_cluster_key_used_after_a_notice_is_no_longer_expiring_and_does_not_expire() {
    let mut agency = Agency::converged();
    let deadline = agency.deadline_unused();
    agency.now = deadline - SignedDuration::from_hours(7 * 24);
    agency.reconcile();
    assert_eq!(agency.notices(), 1, "the 7-day notice");
    let notice = agency.status().key.expiry_notice.clone().expect("the notice is recorded");
    assert_eq!((notice.reason.as_str(), notice.before.as_str()), ("Unused", "7d"));

    // A verifier of loc-b allowed a request; the usage pass wrote lastUsedAt (to the hour).
    agency.now += SignedDuration::from_hours(2);
    let used = agency.now - SignedDuration::from_mins(30);
    agency.used_at(used);
    let plan = agency.reconcile();
    let soon = agency.status().key.conditions.iter().find(|c| c.type_ == "ExpiringSoon").unwrap();
    assert_eq!((soon.status.as_str(), soon.reason.as_str()), ("False", "NotExpiringSoon"));
    assert_eq!(agency.deadline_unused(), used + SignedDuration::from_hours(30 * 24), "the clock restarts at the use");
    assert!(plan.plan.requeue_at.is_some_and(|at| at > deadline), "{:?}", plan.plan.requeue_at);

    agency.now = deadline;
    agency.reconcile();
    assert_eq!(agency.status().key.state, Some(KeyState::Active), "used before its deadline: not expired");
    assert_eq!(agency.notices(), 1, "no notice for the old deadline");
}

#[test]
fn a_usage_spike_of_a_cluster_key_is_notified_once_and_recorded_in_its_status() {
    let mut agency = Agency::converged();
    agency.now += SignedDuration::from_hours(8 * 24);
    agency.reconcile();
    // The usage pass wrote the counts of both namespaces: 20,000 today against 500 a day before.
    let counts = |allowed| RequestCounts { allowed, denied: 0 };
    agency.key.status.as_mut().unwrap().key.usage = Some(Usage {
        last24h: counts(20_000),
        last7d: counts(23_000),
        last30d: counts(23_000),
        updated_at: Some(Time(agency.now)),
    });
    let plan = agency.reconcile();
    assert_eq!(plan.plan.anomalies, [AnomalyKind::AllowedSpike]);
    let note = plan.plan.events.iter().find(|e| e.reason.as_str() == "UsageAnomaly").map(|e| e.note.clone());
    assert!(note.as_deref().is_some_and(|n| n.starts_with("Unusual usage: AllowedSpike: 20000")), "{note:?}");
    let recorded = &agency.status().key.usage_anomalies;
    assert_eq!(recorded.iter().map(|r| r.kind.as_str()).collect::<Vec<_>>(), ["AllowedSpike"]);

    agency.now += SignedDuration::from_hours(1);
    let again = agency.reconcile();
    assert!(again.plan.anomalies.is_empty(), "not again within 24 hours: {:?}", again.plan.anomalies);
    assert_eq!(agency.events.iter().filter(|r| **r == "UsageAnomaly").count(), 1);
}
