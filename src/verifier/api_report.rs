//! `--usage-report-interval`: the verifier's usage report, written to its own ConfigMap through the Kubernetes API.
//!
//! With [`api_source`](super::api_source), the only verifier code that uses
//! kube. Every interval (and once more at shutdown) the counters of the
//! loaded keys are read into cumulative totals ([`Tally`]) and written with
//! server-side apply as one ConfigMap per pod ([`crate::usage::report_name`]),
//! owned by the Pod (from the downward API: `POD_NAME`, `POD_UID`,
//! `POD_NAMESPACE`) so that garbage collection removes it with the Pod. A
//! failed write is counted and retried at the next interval with the totals
//! as they are then: the report is cumulative, so nothing is lost but the
//! delay, and serving never waits for the API. Between reports the counters
//! of the index in force are folded into the ledger at least every
//! [`FOLD_AT_LEAST_EVERY`] (their 32 bits hold a minute of any key's requests
//! with room to spare, not a day's).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Patch, PatchParams};
use tokio::sync::watch;

use super::clock::Clock;
use super::index::KeyIndex;
use super::loader::KeyStore;
use super::metrics::Metrics;
use super::usage::{FOLD_AT_LEAST_EVERY, Tally};
use crate::configmap::{LABEL_MANAGED_BY, MANAGED_BY};
use crate::usage::{LABEL_USAGE_REPORT, REPORT_KEY, Report, report_name};

/// The field manager of the verifier's report writes.
pub const FIELD_MANAGER: &str = "keyward-verifier";

/// The Pod the verifier runs in, from the downward API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    /// Its namespace (`POD_NAMESPACE`).
    pub namespace: String,
    /// Its name (`POD_NAME`).
    pub name: String,
    /// Its uid (`POD_UID`).
    pub uid: String,
}

impl PodRef {
    /// The Pod named by `POD_NAMESPACE`, `POD_NAME` and `POD_UID`; `None` unless all three are set.
    #[must_use]
    pub fn from_env() -> Option<PodRef> {
        let var = |name| std::env::var(name).ok().filter(|v| !v.is_empty());
        Some(PodRef { namespace: var("POD_NAMESPACE")?, name: var("POD_NAME")?, uid: var("POD_UID")? })
    }
}

/// Usage reporting, when on.
#[derive(Clone)]
pub struct Reporting {
    /// Where to write.
    pub client: kube::Client,
    /// The Pod the report belongs to.
    pub pod: PodRef,
    /// How often to write.
    pub interval: Duration,
    /// This process's epoch ([`crate::usage::new_epoch`]).
    pub epoch: String,
}

impl std::fmt::Debug for Reporting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporting")
            .field("pod", &self.pod)
            .field("interval", &self.interval)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

/// Builds reports: the pod, the epoch and the running totals.
#[derive(Debug)]
pub struct Reporter {
    pod: PodRef,
    epoch: String,
    tally: Tally,
}

impl Reporter {
    /// A reporter for `pod` in epoch `epoch`.
    #[must_use]
    pub fn new(pod: PodRef, epoch: String) -> Reporter {
        Reporter { pod, epoch, tally: Tally::new() }
    }

    /// The report as of now: every loaded key's counters read into the totals.
    pub fn report(&mut self, index: Option<&KeyIndex>, at: jiff::Timestamp) -> Report {
        self.tally.update(index);
        Report {
            pod: self.pod.name.clone(),
            pod_uid: self.pod.uid.clone(),
            epoch: self.epoch.clone(),
            at: at.as_second(),
            key_sets: index.map(|i| i.sets().iter().map(|s| s.id.clone()).collect()).unwrap_or_default(),
            keys: self.tally.totals().iter().map(|(id, c)| (*id, *c)).collect(),
        }
    }

    /// The report's ConfigMap: labelled, owned by the Pod.
    #[must_use]
    pub fn configmap(&self, report: &Report) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(report_name(&self.pod.name)),
                namespace: Some(self.pod.namespace.clone()),
                labels: Some(BTreeMap::from([
                    (LABEL_USAGE_REPORT.to_owned(), "true".to_owned()),
                    (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
                ])),
                owner_references: Some(vec![OwnerReference {
                    api_version: "v1".to_owned(),
                    kind: "Pod".to_owned(),
                    name: self.pod.name.clone(),
                    uid: self.pod.uid.clone(),
                    controller: None,
                    block_owner_deletion: None,
                }]),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([(REPORT_KEY.to_owned(), report.encode())])),
            ..ConfigMap::default()
        }
    }
}

/// Write one report.
pub async fn write(client: &kube::Client, configmap: &ConfigMap) -> Result<(), kube::Error> {
    let namespace = configmap.metadata.namespace.as_deref().unwrap_or_default();
    let name = configmap.metadata.name.as_deref().unwrap_or_default();
    let api = kube::Api::<ConfigMap>::namespaced(client.clone(), namespace);
    let mut body = configmap.clone();
    body.metadata.managed_fields = None;
    let body = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": body.metadata,
        "data": body.data,
    });
    api.patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body)).await.map(|_| ())
}

/// Write a report every interval, and once more when `stop` turns true; fold the counters in between.
pub async fn run(
    reporting: Reporting,
    store: Arc<KeyStore>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut reporter = Reporter::new(reporting.pod.clone(), reporting.epoch.clone());
    tracing::info!(epoch = %reporting.epoch, interval = ?reporting.interval, "usage reports on");
    let mut next_report = tokio::time::Instant::now() + reporting.interval;
    loop {
        let wake = next_report.min(tokio::time::Instant::now() + FOLD_AT_LEAST_EVERY);
        let stopping = tokio::select! {
            () = tokio::time::sleep_until(wake) => false,
            _ = stop.wait_for(|stop| *stop) => true,
        };
        if !stopping && tokio::time::Instant::now() < next_report {
            if let Some(index) = store.current() {
                index.fold_usage();
            }
            continue;
        }
        next_report = tokio::time::Instant::now() + reporting.interval;
        let report = reporter.report(store.current().as_deref(), clock.now().wall);
        match write(&reporting.client, &reporter.configmap(&report)).await {
            Ok(()) => {
                metrics.usage_reports.inc();
            }
            Err(err) => {
                metrics.usage_report_failures.inc();
                // Cumulative: the next report carries these counts too.
                tracing::warn!(error = %err, "usage report not written; retrying at the next interval");
            }
        }
        if stopping {
            return;
        }
    }
}
