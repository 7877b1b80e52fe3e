//! The operator's Prometheus metrics and its health flags, read by the admin listener.
//!
//! Label values are bounded by construction: error labels are [`Error::label`]
//! variant names, states are [`KeyState`] names, key sets are (namespace,
//! name) pairs that exist in the cluster, as are the ApiKeys of the expiry gauge
//! (one series per live key with an expiry); usage anomalies are counted by namespace and
//! one of three kinds. No label or value ever holds a token.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use kube::runtime::reflector::Store;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::api::{ApiKey, KeyState};
use crate::keyset::KeySetId;

use super::Error;

/// Every state a key can report, so that a state nobody is in reads 0, not absent.
const STATES: [KeyState; 7] = [
    KeyState::Pending,
    KeyState::Active,
    KeyState::Inactive,
    KeyState::Rotating,
    KeyState::Expired,
    KeyState::Revoked,
    KeyState::Error,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExpiryLabels {
    namespace: String,
    name: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AnomalyLabels {
    namespace: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    namespace: String,
    webhook: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    namespace: String,
    webhook: String,
    result: String,
}

/// The expiry reasons of `keyward_apikey_expiry_timestamp_seconds`.
const EXPIRY_REASONS: [&str; 2] = ["ExpiresAt", "Unused"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeySetLabels {
    namespace: String,
    keyset: String,
}

impl KeySetLabels {
    fn of(id: &KeySetId) -> KeySetLabels {
        KeySetLabels { namespace: id.namespace.clone(), keyset: id.name.clone() }
    }
}

/// The operator's metrics, all under the `keyward_` prefix.
pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    failures: Family<ErrorLabels, Counter>,
    duration: Histogram,
    keys: Family<StateLabels, Gauge>,
    keyset_records: Family<KeySetLabels, Gauge>,
    keyset_shards: Family<KeySetLabels, Gauge>,
    keyset_writes: Family<KeySetLabels, Counter>,
    leader: Gauge,
    expiry: Family<ExpiryLabels, Gauge>,
    webhook_deliveries: Family<DeliveryLabels, Counter>,
    webhook_failing: Family<WebhookLabels, Gauge>,
    webhook_dropped: Counter,
    webhook_pending: Family<WebhookLabels, Gauge>,
    webhook_pending_dropped: Family<WebhookLabels, Counter>,
    usage_anomalies: Family<AnomalyLabels, Counter>,
    usage_deferred: Counter,
    /// The controller's ApiKey cache while this replica leads; keys by state are counted from it at scrape time.
    keys_source: Mutex<Option<Store<ApiKey>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry with every operator metric registered.
    #[must_use]
    pub fn new() -> Metrics {
        let mut root = Registry::default();
        let registry = root.sub_registry_with_prefix("keyward");
        let reconciles = Counter::default();
        registry.register("reconciles", "ApiKey reconciles run", reconciles.clone());
        let failures = Family::<ErrorLabels, Counter>::default();
        registry.register("reconcile_failures", "Failed ApiKey reconciles, by error", failures.clone());
        // 1 ms to about 33 s.
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register("reconcile_duration_seconds", "Duration of one ApiKey reconcile", duration.clone());
        let keys = Family::<StateLabels, Gauge>::default();
        registry.register("keys", "ApiKeys by state (counted by the leader)", keys.clone());
        let keyset_records = Family::<KeySetLabels, Gauge>::default();
        registry.register("keyset_records", "Records published in a key set", keyset_records.clone());
        let keyset_shards = Family::<KeySetLabels, Gauge>::default();
        registry.register("keyset_shards", "ConfigMap shards of a key set", keyset_shards.clone());
        let keyset_writes = Family::<KeySetLabels, Counter>::default();
        registry.register("keyset_writes", "Key-set ConfigMap writes and deletes", keyset_writes.clone());
        let leader = Gauge::default();
        registry.register("leader", "Whether this replica holds the leader Lease (1) or not (0)", leader.clone());
        let expiry = Family::<ExpiryLabels, Gauge>::default();
        registry.register(
            "apikey_expiry_timestamp_seconds",
            "When a live ApiKey will expire (Unix seconds), by reason: ExpiresAt or Unused (expireAfterUnused)",
            expiry.clone(),
        );
        let webhook_deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Lifecycle notices a webhook received (result delivered) or that were given up after every attempt (failed)",
            webhook_deliveries.clone(),
        );
        let webhook_failing = Family::<WebhookLabels, Gauge>::default();
        registry.register(
            "webhook_failing",
            "Whether a webhook's last notice was given up (1) or delivered (0)",
            webhook_failing.clone(),
        );
        let webhook_dropped = Counter::default();
        registry.register(
            "webhook_notices_dropped",
            "Lifecycle notices dropped because the delivery queue was full",
            webhook_dropped.clone(),
        );
        let webhook_pending = Family::<WebhookLabels, Gauge>::default();
        registry.register(
            "webhook_pending",
            "Notices not yet delivered to a webhook and still retried (kept in its status.pending)",
            webhook_pending.clone(),
        );
        let webhook_pending_dropped = Family::<WebhookLabels, Counter>::default();
        registry.register(
            "webhook_pending_dropped",
            "Undelivered notices dropped, oldest first, because a webhook had more than --webhook-max-pending waiting",
            webhook_pending_dropped.clone(),
        );
        let usage_anomalies = Family::<AnomalyLabels, Counter>::default();
        registry.register(
            "usage_anomalies",
            "Usage anomalies notified (Warning Event UsageAnomaly), by namespace and kind",
            usage_anomalies.clone(),
        );
        let usage_deferred = Counter::default();
        registry.register(
            "usage_writes_deferred",
            "Usage status writes (and due keys not read) left for a later pass by --usage-max-writes-per-second",
            usage_deferred.clone(),
        );
        Metrics {
            registry: root,
            usage_anomalies,
            usage_deferred,
            expiry,
            webhook_deliveries,
            webhook_failing,
            webhook_dropped,
            webhook_pending,
            webhook_pending_dropped,
            reconciles,
            failures,
            duration,
            keys,
            keyset_records,
            keyset_shards,
            keyset_writes,
            leader,
            keys_source: Mutex::new(None),
        }
    }

    /// Count one reconcile, and its failure if it failed.
    pub fn reconciled(&self, took: Duration, error: Option<&Error>) {
        self.reconciles.inc();
        self.duration.observe(took.as_secs_f64());
        if let Some(error) = error {
            self.failures.get_or_create(&ErrorLabels { error: error.label().to_owned() }).inc();
        }
    }

    /// Record the size of a key set as stored.
    pub fn keyset_size(&self, id: &KeySetId, records: usize, shards: usize) {
        let labels = KeySetLabels::of(id);
        self.keyset_records.get_or_create(&labels).set(i64::try_from(records).unwrap_or(i64::MAX));
        self.keyset_shards.get_or_create(&labels).set(i64::try_from(shards).unwrap_or(i64::MAX));
    }

    /// Count ConfigMap writes (applies, prunes and deletes) of a key set.
    pub fn keyset_written(&self, id: &KeySetId, writes: u64) {
        self.keyset_writes.get_or_create(&KeySetLabels::of(id)).inc_by(writes);
    }

    /// Key-set writes so far, over every key set.
    #[must_use]
    pub fn keyset_writes_total(&self) -> u64 {
        // Family has no iterator; the encoded text is the one complete view of it.
        self.encode()
            .lines()
            .filter(|line| line.starts_with("keyward_keyset_writes_total{"))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// Set the coming expiry of ApiKey `namespace/name` (`None`: none, or already expired or deleted).
    /// At most one series per key: a series of the other reason is removed.
    pub fn key_expiry(&self, namespace: &str, name: &str, expiry: Option<(jiff::Timestamp, &str)>) {
        for reason in EXPIRY_REASONS {
            let labels =
                ExpiryLabels { namespace: namespace.to_owned(), name: name.to_owned(), reason: reason.to_owned() };
            match expiry {
                Some((at, wanted)) if wanted == reason => {
                    self.expiry.get_or_create(&labels).set(at.as_second());
                }
                _ => {
                    self.expiry.remove(&labels);
                }
            }
        }
    }

    /// Count one notice delivered to, or given up for, webhook `namespace/webhook`, and set its failing gauge.
    pub fn webhook_delivery(&self, namespace: &str, webhook: &str, delivered: bool) {
        let result = if delivered { "delivered" } else { "failed" };
        let labels =
            DeliveryLabels { namespace: namespace.to_owned(), webhook: webhook.to_owned(), result: result.to_owned() };
        self.webhook_deliveries.get_or_create(&labels).inc();
        let labels = WebhookLabels { namespace: namespace.to_owned(), webhook: webhook.to_owned() };
        self.webhook_failing.get_or_create(&labels).set(i64::from(!delivered));
    }

    /// Forget webhook `namespace/webhook` (deleted): its series go.
    pub fn webhook_removed(&self, namespace: &str, webhook: &str) {
        let labels = WebhookLabels { namespace: namespace.to_owned(), webhook: webhook.to_owned() };
        self.webhook_failing.remove(&labels);
        self.webhook_pending.remove(&labels);
        self.webhook_pending_dropped.remove(&labels);
        for result in ["delivered", "failed"] {
            let labels = DeliveryLabels {
                namespace: namespace.to_owned(),
                webhook: webhook.to_owned(),
                result: result.to_owned(),
            };
            self.webhook_deliveries.remove(&labels);
        }
    }

    /// Set how many notices wait to be delivered to webhook `namespace/webhook`.
    pub fn webhook_pending(&self, namespace: &str, webhook: &str, pending: usize) {
        let labels = WebhookLabels { namespace: namespace.to_owned(), webhook: webhook.to_owned() };
        self.webhook_pending.get_or_create(&labels).set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    /// Count `dropped` undelivered notices of webhook `namespace/webhook` dropped over its bound.
    pub fn webhook_pending_dropped(&self, namespace: &str, webhook: &str, dropped: usize) {
        let labels = WebhookLabels { namespace: namespace.to_owned(), webhook: webhook.to_owned() };
        self.webhook_pending_dropped.get_or_create(&labels).inc_by(u64::try_from(dropped).unwrap_or(u64::MAX));
    }

    /// Count one notice dropped because the delivery queue was full.
    pub fn webhook_notice_dropped(&self) {
        self.webhook_dropped.inc();
    }

    /// Count one usage anomaly notified for a key of `namespace`.
    pub fn usage_anomaly(&self, namespace: &str, kind: crate::plan::anomaly::AnomalyKind) {
        let labels = AnomalyLabels { namespace: namespace.to_owned(), kind: kind.as_str().to_owned() };
        self.usage_anomalies.get_or_create(&labels).inc();
    }

    /// Count usage status writes left for a later pass by the write pace.
    pub fn usage_writes_deferred(&self, deferred: usize) {
        self.usage_deferred.inc_by(u64::try_from(deferred).unwrap_or(u64::MAX));
    }

    /// Whether this replica leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Count keys by state from `store` while it is set (the leader's cache).
    pub fn count_keys_from(&self, store: Option<Store<ApiKey>>) {
        *self.keys_source.lock().unwrap_or_else(PoisonError::into_inner) = store;
    }

    /// The metrics in the OpenMetrics text format.
    #[must_use]
    pub fn encode(&self) -> String {
        self.refresh_keys();
        let mut text = String::new();
        // Writing into a String cannot fail; an error here would be a bug in the encoder.
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }

    fn refresh_keys(&self) {
        let source = self.keys_source.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let mut counts = [0_i64; STATES.len()];
        if let Some(store) = source {
            for key in store.state() {
                let state = key.status.as_ref().and_then(|s| s.state).unwrap_or(KeyState::Pending);
                if let Some(i) = STATES.iter().position(|s| *s == state) {
                    counts[i] += 1;
                }
            }
        }
        for (state, count) in STATES.iter().zip(counts) {
            self.keys.get_or_create(&StateLabels { state: format!("{state:?}") }).set(count);
        }
    }
}

/// What `/healthz` and `/readyz` report.
#[derive(Default)]
pub struct Health {
    crd_checked: AtomicBool,
    leading: AtomicBool,
    synced: AtomicBool,
}

impl Health {
    /// The start-up CRD check passed.
    pub fn crd_checked(&self) {
        self.crd_checked.store(true, Ordering::SeqCst);
    }

    /// This replica started or stopped leading (its caches start empty).
    pub fn set_leading(&self, leading: bool) {
        self.leading.store(leading, Ordering::SeqCst);
        self.synced.store(false, Ordering::SeqCst);
    }

    /// The leader's ApiKey cache has synced.
    pub fn synced(&self) {
        self.synced.store(true, Ordering::SeqCst);
    }

    /// Ready once the CRD check passed and, when leading, the caches synced. A follower is ready:
    /// it is a healthy standby, and an unready follower would block rollouts behind the PodDisruptionBudget.
    #[must_use]
    pub fn ready(&self) -> bool {
        self.crd_checked.load(Ordering::SeqCst)
            && (!self.leading.load(Ordering::SeqCst) || self.synced.load(Ordering::SeqCst))
    }
}
