//! The verifier's Prometheus metrics: decisions by outcome, latency, and the state of the loaded key set.
//!
//! Labels are bounded: outcomes are a fixed list and key sets are few. Key ids
//! are never labels (one series per key would grow without bound), and tokens
//! never appear anywhere.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::audit::Counters as AuditCounters;
use super::conns::GateMetrics;
use super::decision::Outcome;

/// The `outcome` label of a decision.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// An [`Outcome`] name, or `not_ready` when no key set has loaded yet.
    pub outcome: &'static str,
}

/// The `keyset` label of per-key-set gauges.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct KeySetLabel {
    /// `namespace/name` of the key set.
    pub keyset: String,
}

/// Label value counted when a request arrives before the first key set loaded.
pub const NOT_READY: &str = "not_ready";

/// Every metric the verifier exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Decisions by outcome.
    pub decisions: Family<OutcomeLabel, Counter>,
    /// Time to decide, from request head to answer (forward-auth) or to forwarding (proxy).
    pub decision_seconds: Histogram,
    /// Keys in the index in force.
    pub keys_loaded: Gauge,
    /// Generation of each loaded key set.
    pub keyset_generation: Family<KeySetLabel, Gauge>,
    /// Seconds since the last successful reload; set when scraped.
    pub seconds_since_reload: Gauge<f64, AtomicU64>,
    /// Successful reloads.
    pub reloads: Counter,
    /// Failed reload attempts (the last good set stayed in force).
    pub reload_failures: Counter,
    /// 1 once a valid key set has loaded.
    pub ready: Gauge,
    /// Upstream failures in proxy mode, by kind (`unavailable`, `timeout`).
    pub upstream_errors: Family<UpstreamLabel, Counter>,
    /// Requests the client broke in proxy mode (a malformed or cut-off body), by kind (`body`).
    pub client_errors: Family<ClientErrorLabel, Counter>,
    /// The main listener's connections: open now, closed to make room, refused at the cap.
    pub connections: GateMetrics,
    /// The main listener's connection cap.
    pub connections_max: Gauge,
    /// Usage reports written.
    pub usage_reports: Counter,
    /// Usage reports that could not be written (the next one carries their counts).
    pub usage_report_failures: Counter,
    /// Audit lines written and dropped (zero while the audit log is off).
    pub audit: AuditCounters,
    by_outcome: [Counter; Outcome::ALL.len()],
    not_ready: Counter,
}

/// The `kind` label of upstream errors.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct UpstreamLabel {
    /// `unavailable` (502) or `timeout` (504).
    pub kind: &'static str,
}

/// The `kind` label of client errors.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ClientErrorLabel {
    /// `body`: the request body could not be read (400).
    pub kind: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Create and register every metric.
    #[must_use]
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("keyward_verifier");
        let decisions = Family::<OutcomeLabel, Counter>::default();
        registry.register("decisions", "Decisions by outcome", decisions.clone());
        // 1 µs .. ~1 s: the decision itself takes microseconds, proxied answers longer.
        let decision_seconds = Histogram::new(exponential_buckets(1e-6, 4.0, 11));
        registry.register("decision_seconds", "Time to decide on one request", decision_seconds.clone());
        let keys_loaded = Gauge::default();
        registry.register("keys_loaded", "Keys in the key set in force", keys_loaded.clone());
        let keyset_generation = Family::<KeySetLabel, Gauge>::default();
        registry.register("keyset_generation", "Generation of each loaded key set", keyset_generation.clone());
        let seconds_since_reload = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "seconds_since_last_reload",
            "Seconds since the key set was last loaded successfully",
            seconds_since_reload.clone(),
        );
        let reloads = Counter::default();
        registry.register("reloads", "Successful key-set reloads", reloads.clone());
        let reload_failures = Counter::default();
        registry.register(
            "reload_failures",
            "Failed key-set reloads; the last good set stayed in force",
            reload_failures.clone(),
        );
        let ready = Gauge::default();
        registry.register("ready", "1 once a valid key set has loaded", ready.clone());
        let upstream_errors = Family::<UpstreamLabel, Counter>::default();
        registry.register("upstream_errors", "Upstream failures in proxy mode", upstream_errors.clone());
        let client_errors = Family::<ClientErrorLabel, Counter>::default();
        registry.register(
            "client_errors",
            "Requests the client broke in proxy mode (answered 400, not forwarded whole)",
            client_errors.clone(),
        );
        let connections = GateMetrics::default();
        registry.register("connections", "Connections open on the main listener", connections.open.clone());
        let connections_max = Gauge::default();
        registry.register("connections_max", "Connection cap of the main listener", connections_max.clone());
        registry.register(
            "connections_evicted",
            "Idle connections closed to make room for a new one at the cap",
            connections.evicted.clone(),
        );
        registry.register(
            "connections_refused",
            "New connections refused at the cap because every open one was busy",
            connections.refused.clone(),
        );
        let usage_reports = Counter::default();
        registry.register("usage_reports", "Usage reports written to the cluster", usage_reports.clone());
        let usage_report_failures = Counter::default();
        registry.register(
            "usage_report_failures",
            "Usage reports that could not be written; the next report carries their counts",
            usage_report_failures.clone(),
        );
        let audit = AuditCounters::default();
        registry.register("audit_lines_written", "Audit log lines written", audit.written.clone());
        registry.register(
            "audit_lines_dropped",
            "Audit log lines dropped because the writer fell behind (buffer full) or its write failed",
            audit.dropped.clone(),
        );
        // Handles to each series, made once, so that counting takes no lock and every outcome shows from the start.
        let by_outcome =
            Outcome::ALL.map(|outcome| decisions.get_or_create(&OutcomeLabel { outcome: outcome.as_str() }).clone());
        let not_ready = decisions.get_or_create(&OutcomeLabel { outcome: NOT_READY }).clone();
        Metrics {
            registry,
            decisions,
            decision_seconds,
            keys_loaded,
            keyset_generation,
            seconds_since_reload,
            reloads,
            reload_failures,
            ready,
            upstream_errors,
            client_errors,
            connections,
            connections_max,
            usage_reports,
            usage_report_failures,
            audit,
            by_outcome,
            not_ready,
        }
    }

    /// Count one decision.
    pub fn count(&self, outcome: Outcome) {
        // Outcome::ALL lists every variant in declaration order, so the index is in range.
        self.by_outcome[outcome as usize].inc();
    }

    /// Count one request answered before any key set loaded.
    pub fn count_not_ready(&self) {
        self.not_ready.inc();
    }

    /// The metrics in the Prometheus text format.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
