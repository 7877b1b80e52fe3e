//! Organisation-wide keys: a `ClusterApiKey` is planned as the ApiKey it looks like.
//!
//! The lifecycle (issue, rotation with grace, disable, revoke, expiry, deletion) is the
//! namespaced key's, unchanged: [`view`] gives the ApiKey a ClusterApiKey stands for, and
//! [`plan`] runs the ordinary [`super::plan`] on it. What only a cluster key has is decided
//! here: which namespaces' key sets carry it ([`selected`]), and its status, which adds the
//! namespaces and a `Published` condition to the lifecycle's.
//!
//! The view's namespace is [`CLUSTER_OWNER`], so its key-set records read `cluster/<name>` in
//! every namespace's key set: a namespace team sees that a cluster key is present, and which
//! one, never its token. The Secret's namespace is `spec.secretNamespace`, which only the
//! controller uses. A cluster key has no ApiKeyClass (classes are for namespaced keys; admission
//! refuses `className` on a ClusterApiKey), so it is planned [`ClassView::Unclassed`].

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::api::{
    ApiKey, CLUSTER_OWNER, ClusterApiKey, ClusterApiKeyStatus, ConditionUpdate, NamespaceSelector, set_condition,
};

use super::class::ClassView;
use super::{EventKind, Observed, Plan, PlannedEvent, Reason, Settings};

/// The status condition saying where the key is published.
pub const CONDITION_PUBLISHED: &str = "Published";

/// The class a cluster key is planned with: none.
pub const CLASS: ClassView = ClassView::Unclassed;

/// The ApiKey `key` stands for: its spec and lifecycle status, its identity, and
/// [`CLUSTER_OWNER`] as its namespace (the owner its key-set records name).
#[must_use]
pub fn view(key: &ClusterApiKey) -> ApiKey {
    let meta = &key.metadata;
    ApiKey {
        metadata: ObjectMeta {
            name: meta.name.clone(),
            namespace: Some(CLUSTER_OWNER.to_owned()),
            uid: meta.uid.clone(),
            generation: meta.generation,
            resource_version: meta.resource_version.clone(),
            creation_timestamp: meta.creation_timestamp.clone(),
            deletion_timestamp: meta.deletion_timestamp.clone(),
            finalizers: meta.finalizers.clone(),
            annotations: meta.annotations.clone(),
            ..ObjectMeta::default()
        },
        spec: key.spec.key.clone(),
        status: key.status.as_ref().map(|s| s.key.clone()),
    }
}

/// Whether `key` is published in a namespace with `labels`. An empty selector selects
/// nothing: admission refuses it, and an object that bypassed admission must not be
/// published everywhere by accident.
#[must_use]
pub fn selects(key: &ClusterApiKey, labels: &BTreeMap<String, String>) -> bool {
    let selector: &NamespaceSelector = &key.spec.namespace_selector;
    let empty = selector.match_labels.is_empty() && selector.match_expressions.is_empty();
    !empty && super::class::selects(selector, labels)
}

/// The names of the namespaces (name and labels) that `key` selects, sorted.
#[must_use]
pub fn selected<'a>(
    key: &ClusterApiKey,
    namespaces: impl IntoIterator<Item = (&'a str, &'a BTreeMap<String, String>)>,
) -> Vec<String> {
    let mut names: Vec<String> =
        namespaces.into_iter().filter(|(_, labels)| selects(key, labels)).map(|(n, _)| n.to_owned()).collect();
    names.sort();
    names.dedup();
    names
}

/// What to do for one ClusterApiKey: the lifecycle's plan (its `status` always `None`)
/// and the status to write, the lifecycle's with the cluster key's fields.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterPlan {
    /// The lifecycle's plan, for the view ([`view`]); its events include the cluster key's.
    pub plan: Plan,
    /// The status to write; `None` means it is already right.
    pub status: Option<ClusterApiKeyStatus>,
}

/// Decide what should happen to `key`, published in `namespaces` (those it selects now).
///
/// `observed.published` holds the key's records that *every* selected namespace's key set
/// carries, so a token counts as published (and the propagation delay starts) only once it
/// has reached them all. Selecting no namespace is not an error of the lifecycle: the key
/// goes on as planned, published nowhere, with `Published=False` (`NoNamespaces`) and one
/// Warning Event when that begins; a rotation then waits, as its next token is never seen
/// published.
#[must_use]
pub fn plan(
    key: &ClusterApiKey,
    observed: &Observed,
    namespaces: Vec<String>,
    settings: &Settings,
    now: Timestamp,
) -> ClusterPlan {
    let mut plan = super::plan(&view(key), observed, settings, now);
    let old = key.status.clone().unwrap_or_default();
    let lifecycle = plan.status.take().unwrap_or_else(|| old.key.clone());
    let count = u32::try_from(namespaces.len()).unwrap_or(u32::MAX);
    let mut status = ClusterApiKeyStatus { key: lifecycle, namespaces, namespace_count: Some(count) };
    let warning = if key.metadata.deletion_timestamp.is_none() {
        published_condition(key, &old, &mut status, super::whole_seconds(now))
    } else {
        None
    };
    // While a token is being minted, status waits for the pass that adopts it (as for ApiKeys).
    let write = plan.mint.is_none() && status != old;
    // Warned with the status write that records it, so once, not once per pass before it.
    plan.events.extend(warning.filter(|_| write));
    ClusterPlan { plan, status: write.then_some(status) }
}

/// Set `Published`; the Warning Event to emit when the selector starts selecting nothing.
fn published_condition(
    key: &ClusterApiKey,
    old: &ClusterApiKeyStatus,
    status: &mut ClusterApiKeyStatus,
    now: Timestamp,
) -> Option<PlannedEvent> {
    let key_set = &key.spec.key.key_set;
    let (state, reason, message) = if status.namespaces.is_empty() {
        let message = "spec.namespaceSelector selects no namespace: the key is published in no key set".to_owned();
        ("False", Reason::NoNamespaces, message)
    } else {
        let count = status.namespaces.len();
        ("True", Reason::Published, format!("In key set {key_set} of {count} namespace(s)"))
    };
    let was_nowhere =
        old.key.conditions.iter().any(|c| c.type_ == CONDITION_PUBLISHED && c.reason == Reason::NoNamespaces.as_str());
    let warning = (reason == Reason::NoNamespaces && !was_nowhere).then(|| PlannedEvent {
        kind: EventKind::Warning,
        reason,
        note: message.clone(),
    });
    let update = ConditionUpdate { type_: CONDITION_PUBLISHED, status: state, reason: reason.as_str(), message };
    set_condition(&mut status.key.conditions, update, key.metadata.generation, now);
    warning
}
