//! The `KeySet` custom resource (`keyward.dev/v1alpha1`): a key set's own settings, owned by platform teams.
//!
//! A key set (verifier audience) exists implicitly as soon as an ApiKey names
//! it in `spec.keySet`. A `KeySet` object of the same name, in the same
//! namespace, adds what belongs to the audience rather than to any one key:
//! today its access gate (plan gating). A key set without a `KeySet` object
//! is open ([`KeySetAccess::Enabled`]), which is how every key set worked
//! before the resource existed. The operator publishes the gate into the key
//! set's own shards, so verifiers enforce it even while the operator is down.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// The CEL rule holding a KeySet's name to what ApiKey `spec.keySet` accepts. The API server
/// already holds object names to RFC 1123 subdomains, so no dot and at most 40 characters is
/// exactly the `spec.keySet` pattern; a regex here cost a quarter of the CEL budget.
const NAME_RULE: &str = "self.metadata.name.size() <= 40 && !self.metadata.name.contains('.')";

/// What [`NAME_RULE`] says when it fails.
const NAME_MESSAGE: &str = "metadata.name must be a key-set name (what ApiKey spec.keySet accepts): at most 40 lowercase letters, digits and '-', alphanumeric at both ends";

/// The settings of one key set: the ApiKeys of this namespace whose `spec.keySet` is this object's name.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "keyward.dev",
    version = "v1alpha1",
    kind = "KeySet",
    plural = "keysets",
    singular = "keyset",
    shortname = "ks",
    category = "keyward",
    namespaced,
    doc = "A key set's settings (its access gate), for the ApiKeys whose spec.keySet is its name.",
    status = "KeySetStatus",
    derive = "PartialEq",
    derive = "Default",
    printcolumn(
        name = "Access",
        type_ = "string",
        json_path = ".spec.access",
        description = "Enabled, PaymentRequired or Disabled, as declared"
    ),
    printcolumn(
        name = "Published",
        type_ = "string",
        json_path = ".status.publishedAccess",
        description = "The access the key set's shards carry, which verifiers enforce"
    ),
    printcolumn(name = "Keys", type_ = "integer", json_path = ".status.keys", description = "ApiKeys published in the set"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new(NAME_RULE).message(NAME_MESSAGE)
)]
#[serde(rename_all = "camelCase")]
pub struct KeySetSpec {
    /// Whether the set's keys may be used. `Enabled` (the default) judges each
    /// key on its own; `PaymentRequired` answers every key of the set with
    /// `402 Payment Required` (reason `payment_required`); `Disabled` with
    /// `403 Forbidden` (reason `access_disabled`). Keys, tokens and rotations
    /// are untouched; setting `Enabled` again restores the same tokens.
    #[serde(default = "default_access")]
    #[schemars(extend("enum" = ["Enabled", "PaymentRequired", "Disabled"]))]
    pub access: String,
}

fn default_access() -> String {
    KeySetAccess::Enabled.as_str().to_owned()
}

/// The values of [`KeySetSpec::access`].
///
/// The spec keeps the text (admission enforces the enum), so that an object
/// that slipped past admission still deserialises and gets a condition naming
/// `spec.access`; the operator then publishes it as `Disabled` (fail closed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySetAccess {
    /// No gate.
    Enabled,
    /// Every key refused with 402 `payment_required`.
    PaymentRequired,
    /// Every key refused with 403 `access_disabled`.
    Disabled,
}

impl KeySetAccess {
    /// The spelling in `spec.access` and `status.publishedAccess`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            KeySetAccess::Enabled => "Enabled",
            KeySetAccess::PaymentRequired => "PaymentRequired",
            KeySetAccess::Disabled => "Disabled",
        }
    }

    /// Parse `spec.access`; `None` for anything but the three spellings.
    #[must_use]
    pub fn parse(text: &str) -> Option<KeySetAccess> {
        [KeySetAccess::Enabled, KeySetAccess::PaymentRequired, KeySetAccess::Disabled]
            .into_iter()
            .find(|a| a.as_str() == text)
    }
}

/// What the operator published for the key set. Written only by the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct KeySetStatus {
    /// Current conditions; `Ready` is always first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The access the key set's published shards carry: what verifiers enforce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_access: Option<String>,

    /// ApiKeys with at least one token published in the set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<u32>,
}
