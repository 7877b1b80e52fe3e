//! The `ApiKey` custom resource (`keyward.dev/v1alpha1`): what users write, and the status the operator reports;
//! and `ApiKeyWebhook` (`webhook.rs`), where lifecycle notices of a namespace's keys are sent.
//!
//! Spec fields are deliberately lenient Rust types (strings where admission
//! applies a pattern) so that an object that slipped past admission still
//! deserialises and can be given a `Ready=False` condition naming the bad
//! field, instead of vanishing from the controller's view.

#![forbid(unsafe_code)]
// Test helpers take owned fixtures so that tables of cases read as plain values.
#![cfg_attr(test, allow(clippy::needless_pass_by_value))]

mod class;
mod cluster;
mod conditions;
mod crd;
mod keyset;
mod webhook;

pub use class::{
    ApiKeyClass, ApiKeyClassSpec, DEFAULT_CLASS_ANNOTATION, NamespaceSelector, RESOURCE_PATTERN_PATTERN, ScopeRule,
    SelectorRequirement, class_crd, class_crd_yaml,
};
pub use cluster::{
    CLUSTER_OWNER, ClusterApiKey, ClusterApiKeySpec, ClusterApiKeyStatus, NAMESPACE_NAME_LABEL, cluster_crd,
    cluster_crd_yaml,
};
pub use conditions::{CONDITION_READY, ConditionUpdate, set_condition};
pub use crd::{crd, crd_yaml, keyset_crd, keyset_crd_yaml, webhook_crd, webhook_crd_yaml};
pub use keyset::{KeySet, KeySetAccess, KeySetSpec, KeySetStatus};
pub use webhook::{
    ApiKeyWebhook, ApiKeyWebhookSpec, ApiKeyWebhookStatus, DEFAULT_SECRET_KEY, NoticeType, PENDING_BODY_MAX_BYTES,
    PENDING_MAX_ITEMS, PendingDelivery, SecretKeyRef, URL_RULE,
};

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use keyward_contract::duration::DURATION_PATTERN;

/// API group of the ApiKey resource.
pub const GROUP: &str = "keyward.dev";
/// Most notice points `spec.expiryNotices` may list.
pub const MAX_EXPIRY_NOTICES: usize = 10;
/// Annotation whose value, when it changes, asks for an immediate rotation.
pub const ROTATE_ANNOTATION: &str = "keyward.dev/rotate";

/// Declares one API key: who may do what, until when, and how its token is rotated.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "keyward.dev",
    version = "v1alpha1",
    kind = "ApiKey",
    plural = "apikeys",
    singular = "apikey",
    shortname = "ak",
    category = "keyward",
    namespaced,
    doc = "An API key managed by keyward: its token lives in a Secret, its hash in a key set.",
    status = "ApiKeyStatus",
    derive = "PartialEq",
    derive = "Default",
    printcolumn(
        name = "State",
        type_ = "string",
        json_path = ".status.state",
        description = "Active, Inactive, Rotating, Expired, Revoked, Pending or Error"
    ),
    printcolumn(
        name = "Prefix",
        type_ = "string",
        json_path = ".status.prefix",
        description = "The first characters of the current token"
    ),
    printcolumn(
        name = "Class",
        type_ = "string",
        json_path = ".status.className",
        description = "The ApiKeyClass the key is checked against: spec.className, or the default class"
    ),
    printcolumn(name = "Scopes", type_ = "string", json_path = ".spec.scopes", description = "What the key may do"),
    printcolumn(
        name = "Expires",
        type_ = "string",
        json_path = ".spec.expiresAt",
        description = "When the key stops working; empty means never"
    ),
    printcolumn(
        name = "Next rotation",
        type_ = "string",
        json_path = ".status.nextRotationAt",
        description = "When the token is next rotated"
    ),
    printcolumn(
        name = "Last used",
        type_ = "date",
        json_path = ".status.lastUsedAt",
        description = "Last request a verifier allowed with this key, to the hour"
    ),
    printcolumn(
        name = "Requests 24h",
        type_ = "integer",
        json_path = ".status.usage.last24h.allowed",
        description = "Requests allowed in the last 24 hours",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeySpec {
    /// Human-readable label such as "CRM Integration". Defaults to the object's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub display_name: Option<String>,

    /// What the key may do: one or more `resource:action` grants, action one of
    /// `read`, `write`, `admin`. `write` does not imply `read`; `admin` allows
    /// every action on its resource. Resource `*` means every resource.
    #[schemars(length(min = 1, max = 64), inner(length(max = 128), pattern(keyward_contract::scope::SCOPE_PATTERN)))]
    #[x_kube(validation = Rule::new("self.all(s, self.exists_one(t, t == s))").message("scopes must be unique"))]
    pub scopes: Vec<String>,

    /// Whether the key works. `false` stops access without deleting anything;
    /// setting it back to `true` restores the same token.
    #[serde(default = "default_true")]
    pub active: bool,

    /// Revoke the key for good. The token is destroyed and its hash unpublished;
    /// the ApiKey stays as an audit record. Cannot be set back to `false`.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self || !oldSelf").message("revoked is permanent: a revoked ApiKey cannot be un-revoked; create a new ApiKey instead"))]
    pub revoked: bool,

    /// When the key stops working (RFC 3339). Absent means never. The verifier
    /// enforces it with its own clock, so it holds even while the operator is down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,

    /// Automatic rotation of the token. Absent means the token is rotated only on request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationSpec>,

    /// The key set (verifier audience) the key is published to.
    #[serde(default = "default_key_set")]
    #[schemars(length(min = 1, max = 40), pattern(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"))]
    pub key_set: String,

    /// Name of the Secret the token is written to. Defaults to `<name>-apikey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")
    )]
    pub secret_name: Option<String>,

    /// Extra labels and annotations for the Secret, for example to have it
    /// picked up by a secret-sync tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_template: Option<SecretTemplate>,

    /// Token prefix such as `acme_live`: lowercase letters, digits and single
    /// underscores, starting with a letter. Defaults to `kw`. Changing it rotates the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 24), pattern(keyward_contract::token::PREFIX_PATTERN))]
    pub prefix: Option<String>,

    /// Per-key request limit enforced by the verifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitSpec>,

    /// Expire the key once nobody has used it for this long (`90d`, `720h`):
    /// counted from `status.lastUsedAt`, or from when the key became Ready if
    /// it was never used. The key then expires with reason `Unused`. Needs
    /// verifiers that report usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16), pattern(DURATION_PATTERN))]
    #[x_kube(validation = Rule::new(keyward_contract::duration::cel_positive_rule()).message("must be longer than zero"))]
    pub expire_after_unused: Option<String>,

    /// When to warn before the key expires (`expiresAt` or `expireAfterUnused`):
    /// one Warning Event `ExpiringSoon` at each of these durations before expiry
    /// (`["30d", "7d"]`). Overrides the operator's `--expiry-notices` (default
    /// `15d`, `7d`, `1d`) for this key; an empty list sends no notices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_EXPIRY_NOTICES), inner(length(max = 16), pattern(DURATION_PATTERN)))]
    #[x_kube(validation = Rule::new("self.all(d, d.matches('[1-9]'))").message("expiryNotices must be longer than zero"))]
    #[x_kube(validation = Rule::new("self.all(d, self.exists_one(e, e == d))").message("expiryNotices must be unique"))]
    pub expiry_notices: Option<Vec<String>>,

    /// Delete the ApiKey object itself this long after it expired (`30d`).
    /// Absent keeps expired ApiKeys as audit records until someone deletes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16), pattern(DURATION_PATTERN))]
    #[x_kube(validation = Rule::new(keyward_contract::duration::cel_positive_rule()).message("must be longer than zero"))]
    pub retain_expired_for: Option<String>,

    /// The ApiKeyClass whose policy the key must keep. Absent means the class annotated
    /// `apikeyclass.keyward.dev/is-default-class: "true"`, if there is one (as StorageClass
    /// does); `status.className` shows the class in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")
    )]
    pub class_name: Option<String>,
}

/// The spec as an empty YAML body would deserialise (no scopes yet, so not valid).
impl Default for ApiKeySpec {
    fn default() -> Self {
        ApiKeySpec {
            display_name: None,
            scopes: Vec::new(),
            active: true,
            revoked: false,
            expires_at: None,
            rotation: None,
            key_set: default_key_set(),
            secret_name: None,
            secret_template: None,
            prefix: None,
            rate_limit: None,
            expire_after_unused: None,
            expiry_notices: None,
            retain_expired_for: None,
            class_name: None,
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_key_set() -> String {
    "default".to_owned()
}

/// When the token is replaced, and how long the previous one keeps working.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.every) != has(self.schedule)").message("set exactly one of rotation.every and rotation.schedule"))]
#[x_kube(validation = Rule::new(crd::grace_shorter_than_every_rule()).message("rotation.gracePeriod must be shorter than rotation.every"))]
#[x_kube(validation = Rule::new(crd::default_grace_shorter_than_every_rule()).message("rotation.every must be longer than the default gracePeriod (1h): set a shorter gracePeriod"))]
pub struct RotationSpec {
    /// Rotate this long after the previous rotation (`30d`, `720h`, `1h30m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16), pattern(DURATION_PATTERN))]
    #[x_kube(validation = Rule::new(keyward_contract::duration::cel_positive_rule()).message("must be longer than zero"))]
    pub every: Option<String>,

    /// Rotate on a cron schedule in UTC, five fields (`0 3 * * 1` is Mondays at 03:00).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 9, max = 128))]
    pub schedule: Option<String>,

    /// How long the previous token keeps working after a rotation. Defaults to
    /// `1h` (the operator's `--default-grace-period`). Must be shorter than
    /// `every`, and than the shortest interval of `schedule` (checked by the
    /// operator): the next rotation waits until the previous token's grace
    /// period has ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16), pattern(DURATION_PATTERN))]
    #[x_kube(validation = Rule::new(keyward_contract::duration::cel_positive_rule()).message("must be longer than zero"))]
    pub grace_period: Option<String>,
}

/// The CEL rule keeping users' Secret labels and annotations off the operator's own keys.
const RESERVED_KEYS_RULE: &str = "self.all(k, !k.startsWith('keyward.dev/') && k != 'app.kubernetes.io/managed-by')";

/// The CEL rule holding Secret template keys to Kubernetes' qualified names:
/// `[prefix/]name`, prefix a DNS subdomain of at most 253 characters, name 1
/// to 63 characters. Kubernetes estimates map keys as empty strings, so the
/// rule stays within the cost budget; the `size` guard bounds it at run time.
const QUALIFIED_KEYS_RULE: &str = r"self.all(k, size(k) <= 317 && k.matches('^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?([.][a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$') && (!k.contains('/') || k.matches('^[^/]{1,253}/')))";

/// What [`QUALIFIED_KEYS_RULE`] says when it fails.
const QUALIFIED_KEYS_MESSAGE: &str = "keys must be qualified names: an optional DNS subdomain prefix of at most 253 characters and '/', then 1 to 63 letters, digits, '-', '_' or '.', alphanumeric at both ends";

/// A Kubernetes label value: at most 63 characters, alphanumeric at both ends.
const LABEL_VALUE_PATTERN: &str = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";

/// Labels and annotations added to the Secret holding the token.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecretTemplate {
    /// Labels to add to the Secret. Keys under `keyward.dev/` and
    /// `app.kubernetes.io/managed-by` are reserved for the operator. Keys must
    /// be qualified names (`example.com/tier`) and values valid label values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"type": "string", "maxLength": 63, "pattern": LABEL_VALUE_PATTERN}))]
    #[x_kube(validation = Rule::new(RESERVED_KEYS_RULE).message("keys under keyward.dev/ and app.kubernetes.io/managed-by are reserved"))]
    #[x_kube(validation = Rule::new(QUALIFIED_KEYS_RULE).message(QUALIFIED_KEYS_MESSAGE))]
    pub labels: BTreeMap<String, String>,
    /// Annotations to add to the Secret. Keys under `keyward.dev/` are reserved
    /// for the operator. Keys must be qualified names; all annotations
    /// together at most 256 KiB (checked by the operator).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = Rule::new(RESERVED_KEYS_RULE).message("keys under keyward.dev/ and app.kubernetes.io/managed-by are reserved"))]
    #[x_kube(validation = Rule::new(QUALIFIED_KEYS_RULE).message(QUALIFIED_KEYS_MESSAGE))]
    pub annotations: BTreeMap<String, String>,
}

/// A token bucket: `requests` per `period`, bursts up to `burst`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitSpec {
    /// Requests allowed per period.
    #[schemars(range(min = 1, max = 1_000_000_000))]
    pub requests: u32,
    /// The period (`1s`, `1m`, `1h`, `1d`).
    #[schemars(length(max = 16), pattern(DURATION_PATTERN))]
    #[x_kube(validation = Rule::new(keyward_contract::duration::cel_positive_rule()).message("must be longer than zero"))]
    pub period: String,
    /// Largest burst allowed at once. Defaults to `requests`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000_000))]
    pub burst: Option<u32>,
}

/// One-word summary of a key, for `kubectl get`.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyState {
    /// Being set up: no token published yet.
    Pending,
    /// The token works.
    Active,
    /// Switched off by `active: false`; reversible.
    Inactive,
    /// A rotation is under way: a new token is being published or the previous one is in its grace period.
    Rotating,
    /// Past `expiresAt` or unused for `expireAfterUnused`; the token is gone.
    Expired,
    /// Revoked for good; the token is gone.
    Revoked,
    /// The spec is invalid or the operator cannot act on it; see the Ready condition.
    Error,
}

/// One token of a key, named by its key id, with when it works.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KeyVersion {
    /// The token's key id: the first 12 hex digits of its SHA-256.
    pub key_id: String,
    /// The token's SHA-256 (`sha256:<hex>`), as published in the key set. The
    /// operator needs it to keep publishing a token that is no longer in the
    /// Secret (the previous token during its grace period); it is not secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// The token is accepted from this time.
    pub not_before: Time,
    /// The token is refused from this time; absent means no end yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<Time>,
    /// When the operator first saw this token's hash in the key set it had
    /// written. Verifiers are given the propagation delay from this time
    /// before the token is handed to consumers (swap, or Ready after issuing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_at: Option<Time>,
}

/// Requests seen with this key (all its tokens), as reported by verifiers and added up by the operator.
///
/// Granularity: the last 24 hours are counted in whole hours, 7 and 30 days in
/// whole days (UTC), so a window may include up to one bucket more than its
/// length. Written at most once per `--usage-status-interval` (default 5 min).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Requests in the last 24 hours.
    pub last24h: RequestCounts,
    /// Requests in the last 7 days.
    pub last7d: RequestCounts,
    /// Requests in the last 30 days.
    pub last30d: RequestCounts,
    /// When the operator computed these counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Time>,
}

/// The operator's bookkeeping behind `usage`, kept with the key so that no object grows with the
/// number of keys: time buckets, and what each verifier process's cumulative report has already
/// added (its watermark), so that no request is counted twice. Written only together with
/// `usage`, under a `resourceVersion` precondition. At most 256 watermarks.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct UsageLedger {
    /// Hour start (Unix seconds) → `[allowed, denied]`: the last 24 hours.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hours: BTreeMap<String, [u64; 2]>,
    /// UTC day start (Unix seconds) → `[allowed, denied]`: the last 30 days.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub days: BTreeMap<String, [u64; 2]>,
    /// Verifier process (`<pod>/<epoch>`; a ClusterApiKey's, `<namespace>/<pod>/<epoch>`) → key
    /// id → the cumulative `[allowed, denied]` of its report already added to the buckets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub folded: BTreeMap<String, BTreeMap<String, [u64; 2]>>,
}

/// Allowed and refused requests in one window.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RequestCounts {
    /// Requests the verifiers allowed.
    pub allowed: u64,
    /// Requests refused for this key: inactive, expired, insufficient scope or rate limited.
    pub denied: u64,
}

/// The last advance notice of expiry sent for a key, so that each notice point is sent once.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ExpiryNotice {
    /// What expires the key: `ExpiresAt` or `Unused`.
    pub reason: String,
    /// The expiry the notice was about.
    pub expires_at: Time,
    /// The notice point (`15d`, `7d`, `1d`): how long before expiry it was due.
    pub before: String,
}

/// What the operator observed and did. Written only by the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyStatus {
    /// Current conditions; `Ready` is always first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The ApiKeyClass the key was last checked against: `spec.className`, or the default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,

    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// One-word summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<KeyState>,

    /// The first characters of the current token (prefix and a few more), to
    /// recognise it; never the whole token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,

    /// The Secret holding the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,

    /// The key set the key is published to; when `spec.keySet` changes, the
    /// operator unpublishes the key from this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_set: Option<String>,

    /// The token in the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_key: Option<KeyVersion>,

    /// The token replaced by the last rotation, valid until its `notAfter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_key: Option<KeyVersion>,

    /// A token minted and published by a rotation in progress, not yet swapped into the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_key: Option<KeyVersion>,

    /// When the token was last rotated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotated_at: Option<Time>,

    /// When the token is next rotated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation_at: Option<Time>,

    /// The value of the `keyward.dev/rotate` annotation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation_request: Option<String>,

    /// When the key expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired_at: Option<Time>,

    /// When the key was revoked. Revocation is permanent: once this is set the
    /// operator never publishes the key again, even if `spec.revoked` is cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<Time>,

    /// A Secret this key wrote before `spec.secretName` changed. It still holds
    /// the previous token and is deleted when that token's grace period ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret_name: Option<String>,

    /// Last request a verifier allowed with this key, rounded down to the operator's
    /// `--usage-last-used-step` (default one hour): it moves only by whole steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<Time>,

    /// The last `ExpiringSoon` notice sent (one Warning Event per notice point and expiry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_notice: Option<ExpiryNotice>,

    /// Request counts, as reported by verifiers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,

    /// What `usage` is added up from: time buckets, and per verifier process what its report already added.
    // Boxed: most keys have none, and every ApiKey held across an await counts against clippy's future size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_ledger: Option<Box<UsageLedger>>,

    /// The usage anomalies last notified, one per kind: each kind is notified at most once per 24 hours.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["kind".into()]))]
    pub usage_anomalies: Vec<UsageAnomalyNotice>,
}

/// A usage anomaly the operator notified (Warning Event `UsageAnomaly` and webhook notice).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UsageAnomalyNotice {
    /// `AllowedSpike`, `DeniedSpike` or `DenialSurge`.
    pub kind: String,
    /// When it was notified.
    pub notified_at: Time,
}

#[cfg(test)]
mod tests;
