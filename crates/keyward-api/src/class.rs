//! The `ApiKeyClass` custom resource: cluster-scoped policy that platform admins write and
//! every ApiKey of the class must keep, in the spirit of StorageClass and IngressClass.
//!
//! Admission enforces a class through the ValidatingAdmissionPolicy shipped in
//! `manifests/classes/`; the operator re-checks the same rules (`keyward::plan::class`)
//! for keys stored before a class tightened or while the policy was not installed.

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use serde::{Deserialize, Serialize};

use keyward_contract::duration::DURATION_PATTERN;

use super::RateLimitSpec;

/// Annotation marking the class that ApiKeys without `spec.className` belong to (value `"true"`).
pub const DEFAULT_CLASS_ANNOTATION: &str = "apikeyclass.keyward.dev/is-default-class";

/// The resource part of an allowed scope: a resource name, `*` (every resource), or a
/// prefix ending in `*` (`crm.*` allows `crm.leads` and `crm.deals`, not `*`).
pub const RESOURCE_PATTERN_PATTERN: &str = r"^(\*|[a-z0-9][a-z0-9._-]*\*|[a-z0-9]([a-z0-9._-]*[a-z0-9])?)$";

/// What keys of a class may be: scopes, lifetime, rotation, rate limit, prefixes, key sets
/// and namespaces. An absent field does not restrict.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "keyward.dev",
    version = "v1alpha1",
    kind = "ApiKeyClass",
    plural = "apikeyclasses",
    singular = "apikeyclass",
    shortname = "akc",
    category = "keyward",
    doc = "Policy for ApiKeys that name this class (or for keys naming none, when marked default): written by platform admins.",
    derive = "PartialEq",
    printcolumn(
        name = "Default",
        type_ = "string",
        json_path = ".metadata.annotations.apikeyclass\\.keyward\\.dev/is-default-class",
        description = "\"true\" for the class of ApiKeys that name none"
    ),
    printcolumn(
        name = "Max lifetime",
        type_ = "string",
        json_path = ".spec.maxLifetime",
        description = "Longest time from a key's creation to its expiresAt"
    ),
    printcolumn(
        name = "Max rotation",
        type_ = "string",
        json_path = ".spec.maxRotationInterval",
        description = "Longest rotation.every"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyClassSpec {
    /// What the class is for, for people reading `kubectl get apikeyclass -o yaml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,

    /// The scopes keys of this class may hold: each scope of a key must be allowed by
    /// one entry. Absent allows every scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub allowed_scopes: Option<Vec<ScopeRule>>,

    /// Longest lifetime: keys must set `expiresAt`, at most this long after their
    /// creation (`metadata.creationTimestamp`), such as `90d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16), pattern(DURATION_PATTERN))]
    #[x_kube(validation = Rule::new(keyward_contract::duration::cel_positive_rule()).message("must be longer than zero"))]
    pub max_lifetime: Option<String>,

    /// Required rotation: keys must set `rotation.every`, at most this long (`30d`).
    /// A cron `rotation.schedule` is not accepted under it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16), pattern(DURATION_PATTERN))]
    #[x_kube(validation = Rule::new(keyward_contract::duration::cel_positive_rule()).message("must be longer than zero"))]
    pub max_rotation_interval: Option<String>,

    /// Longest `rotation.gracePeriod` (the documented default, `1h`, when a key sets none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16), pattern(DURATION_PATTERN))]
    #[x_kube(validation = Rule::new(keyward_contract::duration::cel_positive_rule()).message("must be longer than zero"))]
    pub max_grace_period: Option<String>,

    /// The rate limit published for keys of the class that set none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_rate_limit: Option<RateLimitSpec>,

    /// The highest rate limit a key may have (requests per period, and burst; burst
    /// defaults to requests). Keys must set a `rateLimit` within it, unless the class
    /// has a `defaultRateLimit` within it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rate_limit: Option<RateLimitSpec>,

    /// Token prefixes keys may use (`kw` when a key sets none). Absent allows every prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 16), inner(length(max = 24), pattern(keyward_contract::token::PREFIX_PATTERN)))]
    pub allowed_prefixes: Option<Vec<String>>,

    /// Key sets (verifier audiences) keys may be published to. Absent allows every key set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32), inner(length(max = 40), pattern(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")))]
    pub allowed_key_sets: Option<Vec<String>>,

    /// The namespaces whose keys may use the class, by their labels (`matchLabels`
    /// and `matchExpressions` as in every Kubernetes label selector). Absent allows
    /// every namespace; an empty selector too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<NamespaceSelector>,
}

/// One allowed scope pattern: a resource pattern and the actions allowed on it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScopeRule {
    /// A resource name (`analytics`), `*` for every resource, or a prefix ending in `*`
    /// (`crm.*`). A key's `*:read` needs the pattern `*`.
    #[schemars(length(min = 1, max = 128), pattern(RESOURCE_PATTERN_PATTERN))]
    pub resource: String,
    /// Allowed actions: `read`, `write`, `admin`; `admin` allows every action.
    #[schemars(length(min = 1, max = 3), inner(pattern(r"^(read|write|admin)$")))]
    pub actions: Vec<String>,
}

/// A label selector over namespaces, as Kubernetes has it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceSelector {
    /// Labels a namespace must carry with exactly these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16))]
    pub match_labels: BTreeMap<String, String>,
    /// Requirements a namespace's labels must all meet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub match_expressions: Vec<SelectorRequirement>,
}

/// One requirement of a [`NamespaceSelector`].
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(self.operator in ['In', 'NotIn']) == (has(self.values) && size(self.values) > 0)").message("In and NotIn need values; Exists and DoesNotExist take none"))]
pub struct SelectorRequirement {
    /// The label key.
    #[schemars(length(min = 1, max = 317))]
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    #[schemars(pattern(r"^(In|NotIn|Exists|DoesNotExist)$"))]
    pub operator: String,
    /// The values for `In` and `NotIn`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(max = 63)))]
    pub values: Vec<String>,
}

/// The ApiKeyClass CRD.
#[must_use]
pub fn class_crd() -> CustomResourceDefinition {
    let mut crd = ApiKeyClass::crd();
    for version in &mut crd.spec.versions {
        if let Some(schema) = version.schema.as_mut().and_then(|s| s.open_api_v3_schema.as_mut()) {
            super::crd::kubernetes_integer_formats(schema);
        }
    }
    crd
}

/// The ApiKeyClass CRD as YAML, exactly what `keyward crd --kind ApiKeyClass` prints.
#[must_use]
pub fn class_crd_yaml() -> String {
    let yaml = serde_yaml::to_string(&class_crd()).expect("a CRD always serialises to YAML");
    format!(
        "# Generated by `keyward crd --kind ApiKeyClass`; do not edit. A test fails when this drifts from the Rust types.\n{yaml}"
    )
}
