//! The `ClusterApiKey` custom resource: one organisation-wide key (an agency's key valid in every
//! location it runs), written by cluster admins.
//!
//! Its spec is an ApiKey's spec (the same fields, the same admission rules, the same lifecycle)
//! plus where its token Secret lives (`secretNamespace`) and which namespaces' key sets carry
//! its hash (`namespaceSelector`). Its status is an ApiKey's status (usage included: the
//! requests of every namespace it is published to) plus the namespaces it is published to.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{ApiKeySpec, ApiKeyStatus, NamespaceSelector};

/// The label every namespace carries with its own name (set by the API server since
/// Kubernetes 1.21): `{key: kubernetes.io/metadata.name, operator: Exists}` selects every namespace.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The owner namespace written into key-set records of a cluster key (`cluster/<name>`), so that
/// a namespace team reading its key set tells a cluster key from its own ApiKeys.
pub const CLUSTER_OWNER: &str = "cluster";

/// An organisation-wide API key: one token, published to the key sets of every selected namespace.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "keyward.dev",
    version = "v1alpha1",
    kind = "ClusterApiKey",
    plural = "clusterapikeys",
    singular = "clusterapikey",
    shortname = "cak",
    category = "keyward",
    doc = "An organisation-wide API key: its token lives in a Secret of spec.secretNamespace, its hash in the key sets of every namespace spec.namespaceSelector selects.",
    status = "ClusterApiKeyStatus",
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
        name = "Namespaces",
        type_ = "integer",
        json_path = ".status.namespaceCount",
        description = "How many namespaces' key sets carry the key"
    ),
    printcolumn(
        name = "Secret namespace",
        type_ = "string",
        json_path = ".spec.secretNamespace",
        description = "The namespace of the Secret holding the token"
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
        description = "Last request a verifier of any selected namespace allowed with this key, to the hour"
    ),
    printcolumn(
        name = "Requests 24h",
        type_ = "integer",
        json_path = ".status.usage.last24h.allowed",
        description = "Requests allowed in the last 24 hours, in every selected namespace",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.className)").message("className is for namespaced ApiKeys: ApiKeyClasses do not apply to a ClusterApiKey, which only cluster admins may write"))]
pub struct ClusterApiKeySpec {
    /// Every field of an ApiKey's spec (scopes, active, revoked, expiresAt, rotation, keySet,
    /// secretName, prefix, rateLimit, ...), with the same meaning.
    #[serde(flatten)]
    pub key: ApiKeySpec,

    /// The one namespace whose Secret (`secretName`, default `<name>-apikey`) holds the token.
    /// It cannot be changed: create a new ClusterApiKey instead.
    #[schemars(length(min = 1, max = 63), pattern(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("secretNamespace cannot be changed: create a new ClusterApiKey instead"))]
    pub secret_namespace: String,

    /// The namespaces whose key set `keySet` carries the key's hash, by their labels. It must
    /// not be empty: to mean every namespace, say so with
    /// `matchExpressions: [{key: kubernetes.io/metadata.name, operator: Exists}]`.
    #[x_kube(validation = Rule::new("(has(self.matchLabels) && size(self.matchLabels) > 0) || (has(self.matchExpressions) && size(self.matchExpressions) > 0)").message("namespaceSelector must not be empty: an empty selector would publish the key in every namespace; to mean every namespace, write matchExpressions: [{key: kubernetes.io/metadata.name, operator: Exists}]"))]
    pub namespace_selector: NamespaceSelector,
}

/// What the operator observed and did: an ApiKey's status, plus where the key is published.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ClusterApiKeyStatus {
    /// The lifecycle status, as an ApiKey has it (conditions, state, key ids, rotation times).
    #[serde(flatten)]
    pub key: ApiKeyStatus,

    /// The namespaces whose key set carries the key, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,

    /// How many namespaces' key sets carry the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_count: Option<u32>,
}

/// The ClusterApiKey CRD.
#[must_use]
pub fn cluster_crd() -> CustomResourceDefinition {
    super::crd::with_kubernetes_formats(ClusterApiKey::crd())
}

/// The ClusterApiKey CRD as YAML, exactly what `keyward crd --kind ClusterApiKey` prints.
#[must_use]
pub fn cluster_crd_yaml() -> String {
    super::crd::as_yaml(&cluster_crd(), "keyward crd --kind ClusterApiKey")
}
