//! The `ApiKeyWebhook` custom resource: where a team wants its keys' lifecycle notices sent, signed.
//!
//! A team creates one in the namespace of its ApiKeys; the operator POSTs a
//! JSON notice, signed the way the Standard Webhooks specification describes,
//! for each lifecycle step the webhook asks for (`docs/webhooks.md`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// The CEL rule on `spec.url`: https anywhere; plain http only to loopback or an in-cluster Service.
///
/// Plain http to the outside would carry signed notices (and the names of
/// keys) in clear text over networks nobody here controls; inside the Pod or
/// to a Service in the cluster it stays on the node or the cluster network.
pub const URL_RULE: &str = r"self.startsWith('https://') || self.matches('^http://(localhost|127\\.[0-9]+\\.[0-9]+\\.[0-9]+|\\[::1\\]|[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+\\.svc(\\.cluster\\.local)?)(:[0-9]{1,5})?(/.*)?$')";

/// Sends signed lifecycle notices of this namespace's ApiKeys to one HTTP endpoint.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "keyward.dev",
    version = "v1alpha1",
    kind = "ApiKeyWebhook",
    plural = "apikeywebhooks",
    singular = "apikeywebhook",
    shortname = "akwh",
    category = "keyward",
    namespaced,
    doc = "A webhook receiving signed lifecycle notices (Standard Webhooks) of the ApiKeys in its namespace.",
    status = "ApiKeyWebhookStatus",
    derive = "PartialEq",
    derive = "Default",
    printcolumn(name = "URL", type_ = "string", json_path = ".spec.url", description = "Where notices are sent"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the last notice was delivered"
    ),
    printcolumn(
        name = "Last delivery",
        type_ = "date",
        json_path = ".status.lastDeliveryAt",
        description = "When a notice was last delivered or given up"
    ),
    printcolumn(
        name = "Failures",
        type_ = "integer",
        json_path = ".status.consecutiveFailures",
        description = "Notices given up in a row"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyWebhookSpec {
    /// Where notices are POSTed. `https://` anywhere; plain `http://` only to
    /// loopback (`localhost`, `127.x.x.x`, `[::1]`) or a Service in the cluster
    /// (`<service>.<namespace>.svc[.cluster.local]`).
    #[schemars(length(min = 8, max = 2048))]
    #[x_kube(validation = Rule::new(URL_RULE).message("url must start with https://, or http:// to localhost, 127.x.x.x, [::1] or <service>.<namespace>.svc"))]
    pub url: String,

    /// The Secret key holding the signing secret: `whsec_` followed by the
    /// base64 of 24 to 64 random bytes, as the Standard Webhooks specification
    /// describes (`openssl rand -base64 32` gives the part after `whsec_`).
    pub secret_ref: SecretKeyRef,

    /// Which notices to send; all of them when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 8))]
    #[x_kube(validation = Rule::new("self.all(e, self.exists_one(f, f == e))").message("events must be unique"))]
    pub events: Option<Vec<NoticeType>>,

    /// Only ApiKeys whose labels match; every ApiKey of the namespace when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,

    /// How long one delivery attempt may take before it counts as failed. Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 60))]
    pub timeout_seconds: Option<u32>,
}

/// A key of a Secret in the webhook's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
    /// The data key; default `secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(r"^[-._a-zA-Z0-9]+$"))]
    pub key: Option<String>,
}

/// The data key of the signing Secret when `secretRef.key` is absent.
pub const DEFAULT_SECRET_KEY: &str = "secret";

/// A kind of lifecycle notice.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NoticeType {
    /// A rotation swapped a new token into the Secret (`apikey.rotated`).
    Rotated,
    /// A notice point before expiry was reached (`apikey.expiring_soon`).
    ExpiringSoon,
    /// The key expired: past `expiresAt`, or unused for `expireAfterUnused` (`apikey.expired`).
    Expired,
    /// The key was revoked for good (`apikey.revoked`).
    Revoked,
    /// The key was switched off with `active: false` (`apikey.disabled`).
    Disabled,
    /// The key works again after being disabled (`apikey.enabled`).
    Enabled,
    /// The key's usage looks unusual: a spike of requests or of refusals (`apikey.usage_anomaly`).
    UsageAnomaly,
}

impl NoticeType {
    /// Every notice type, in declaration order.
    pub const ALL: [NoticeType; 7] = [
        NoticeType::Rotated,
        NoticeType::ExpiringSoon,
        NoticeType::Expired,
        NoticeType::Revoked,
        NoticeType::Disabled,
        NoticeType::Enabled,
        NoticeType::UsageAnomaly,
    ];

    /// The payload's `type`: `apikey.` and the name in snake case.
    #[must_use]
    pub const fn event_type(self) -> &'static str {
        match self {
            NoticeType::Rotated => "apikey.rotated",
            NoticeType::ExpiringSoon => "apikey.expiring_soon",
            NoticeType::Expired => "apikey.expired",
            NoticeType::Revoked => "apikey.revoked",
            NoticeType::Disabled => "apikey.disabled",
            NoticeType::Enabled => "apikey.enabled",
            NoticeType::UsageAnomaly => "apikey.usage_anomaly",
        }
    }
}

/// What the operator last saw delivering to this webhook. Written only by the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyWebhookStatus {
    /// `Ready`: True while notices are delivered, False (reason `DeliveryFailing`,
    /// `SecretNotFound` or `InvalidSecret`) once one was given up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// When a notice was last delivered or given up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivery_at: Option<Time>,

    /// How that went: `Delivered`, or why it was given up (`HTTP 500`, `Timeout`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivery_result: Option<String>,

    /// When a notice was last delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_at: Option<Time>,

    /// Notices given up in a row since the last delivered one.
    #[serde(default)]
    pub consecutive_failures: u32,

    /// Notices not yet delivered to this webhook and still being retried, oldest
    /// first, so that the next operator leader resumes them (with the same
    /// `webhook-id`) after a restart or a leader change. At most
    /// `--webhook-max-pending` entries; when more are waiting the oldest is dropped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["id".into()]))]
    pub pending: Vec<PendingDelivery>,
}

/// The most entries `status.pending` may hold (the schema's `maxItems`).
pub const PENDING_MAX_ITEMS: usize = 100;

/// The longest notice body `status.pending` keeps (the schema's `maxLength`): with
/// [`PENDING_MAX_ITEMS`] entries a status stays well under the API server's object limit.
pub const PENDING_BODY_MAX_BYTES: usize = 8192;

/// One notice still to be delivered to the webhook, as the operator resumes it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PendingDelivery {
    /// The notice's message id (`webhook-id`), the same on every attempt.
    #[schemars(length(min = 1, max = 64))]
    pub id: String,
    /// The kind of notice.
    #[serde(rename = "type")]
    pub type_: NoticeType,
    /// The JSON body, byte for byte as every attempt sends it. Names, ids and
    /// times of the key only: never a token, a hash or the signing secret.
    #[schemars(length(max = 8192))]
    pub body: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due.
    pub next_attempt_at: Time,
    /// HMAC-SHA256 (base64) of the id, type and body under the webhook's signing
    /// secret, set once an attempt has read the secret. The next leader sends an
    /// entry only if its seal checks out, so whoever can write this status but
    /// cannot read the signing Secret cannot have a message of theirs signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub seal: Option<String>,
}
