//! ApiKeyClass rules: which class a key is held to, and whether it keeps it.
//!
//! The same rules as the ValidatingAdmissionPolicy in `manifests/classes/policy.yaml`,
//! word for word in their messages: admission refuses a key that breaks its class, and
//! the operator re-checks stored keys (created before the class tightened, or while the
//! policy was not installed). One table of cases (`tests/classes/cases.yaml`) is judged
//! by this module (`tests/classes.rs`) and by the real API server's policy
//! (`tests/real_cluster_classes.rs`).
//!
//! Pure: no client, no clock. A key's lifetime is measured from its
//! `metadata.creationTimestamp`, which admission sees too, so both judges agree
//! without reading a clock.

use std::collections::BTreeMap;

use jiff::SignedDuration;

use crate::api::{
    ApiKey, ApiKeyClass, ApiKeyClassSpec, DEFAULT_CLASS_ANNOTATION, NamespaceSelector, RateLimitSpec, ScopeRule,
};
use crate::duration::KeyDuration;

/// The token prefix of a key that sets none (as admission has it).
const DEFAULT_PREFIX: &str = "kw";

/// The class a key is held to, as the controller found it.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum ClassView {
    /// The key names no class and no class is marked default: no class applies.
    #[default]
    Unclassed,
    /// The key's class (named, or the default), with the labels of the key's namespace.
    Found(Box<FoundClass>),
    /// The key names a class that does not exist (or no longer does).
    Missing(String),
    /// The key names no class and more than one class is marked default.
    AmbiguousDefault(Vec<String>),
}

/// A key's class and the labels of the key's namespace.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundClass {
    /// The class's name.
    pub name: String,
    /// Its spec.
    pub spec: ApiKeyClassSpec,
    /// The labels of the key's namespace (empty when the namespace was not found).
    pub namespace_labels: BTreeMap<String, String>,
}

/// Whether `class` is marked as the default class.
#[must_use]
pub fn is_default(class: &ApiKeyClass) -> bool {
    class.metadata.annotations.as_ref().and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION)).is_some_and(|v| v == "true")
}

/// The class `key` is held to among `classes`: `spec.className`, else the one default
/// class, else the class it was held to before (`status.className`), so a key never
/// leaves a class because the default class went away.
#[must_use]
pub fn resolve(key: &ApiKey, classes: &[ApiKeyClass], namespace_labels: &BTreeMap<String, String>) -> ClassView {
    let found = |class: &ApiKeyClass| {
        ClassView::Found(Box::new(FoundClass {
            name: class.metadata.name.clone().unwrap_or_default(),
            spec: class.spec.clone(),
            namespace_labels: namespace_labels.clone(),
        }))
    };
    if let Some(name) = &key.spec.class_name {
        return classes
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(name))
            .map_or_else(|| ClassView::Missing(name.clone()), found);
    }
    let defaults: Vec<&ApiKeyClass> = classes.iter().filter(|c| is_default(c)).collect();
    match defaults[..] {
        // Held to a default class before: still held to it (or held back when it is gone),
        // so deleting or un-marking the default class never widens a key.
        [] => match key.status.as_ref().and_then(|s| s.class_name.as_ref()) {
            Some(previous) => classes
                .iter()
                .find(|c| c.metadata.name.as_ref() == Some(previous))
                .map_or_else(|| ClassView::Missing(previous.clone()), found),
            None => ClassView::Unclassed,
        },
        [class] => found(class),
        _ => {
            let mut names: Vec<String> = defaults.iter().filter_map(|c| c.metadata.name.clone()).collect();
            names.sort();
            ClassView::AmbiguousDefault(names)
        }
    }
}

/// One rule of a class that a key breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ApiKeyClass {class} ({rule}): {problem}")]
pub struct ClassViolation {
    /// The class.
    pub class: String,
    /// The rule: the class field (`allowedScopes`, `maxLifetime`, ...).
    pub rule: &'static str,
    /// What is wrong, naming the key's field; never a secret.
    pub problem: String,
}

/// Why a key may not be published under its class, if it may not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClassProblem {
    /// The key breaks rules of its class.
    Violations(Vec<ClassViolation>),
    /// The named class does not exist.
    Missing(String),
    /// Several classes are marked default.
    AmbiguousDefault(Vec<String>),
}

impl ClassProblem {
    /// The condition reason.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            ClassProblem::Violations(_) => "ClassViolation",
            ClassProblem::Missing(_) => "ClassNotFound",
            ClassProblem::AmbiguousDefault(_) => "ClassAmbiguous",
        }
    }

    /// The condition message: the class and every rule broken.
    #[must_use]
    pub fn message(&self) -> String {
        match self {
            ClassProblem::Violations(violations) => {
                violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
            }
            ClassProblem::Missing(name) => {
                format!("ApiKeyClass {name} (spec.className) does not exist; the key is not published until it does")
            }
            ClassProblem::AmbiguousDefault(names) => format!(
                "ApiKeyClasses {} are all marked default ({DEFAULT_CLASS_ANNOTATION}); set spec.className or keep one default",
                names.join(", ")
            ),
        }
    }
}

/// The problem that keeps `key` from being published under `view`, if any.
/// `default_grace` is the operator's grace period for keys that set none.
#[must_use]
pub fn problem(key: &ApiKey, view: &ClassView, default_grace: SignedDuration) -> Option<ClassProblem> {
    match view {
        ClassView::Unclassed => None,
        ClassView::Missing(name) => Some(ClassProblem::Missing(name.clone())),
        ClassView::AmbiguousDefault(names) => Some(ClassProblem::AmbiguousDefault(names.clone())),
        ClassView::Found(found) => {
            let violations = check(key, found, default_grace);
            (!violations.is_empty()).then_some(ClassProblem::Violations(violations))
        }
    }
}

/// The class's name, if one applies.
#[must_use]
pub fn class_name(view: &ClassView) -> Option<&str> {
    match view {
        ClassView::Found(found) => Some(&found.name),
        ClassView::Missing(name) => Some(name),
        ClassView::Unclassed | ClassView::AmbiguousDefault(_) => None,
    }
}

/// The rate limit `key` is published with: its own, else its class's default.
#[must_use]
pub fn effective_rate_limit<'a>(key: &'a ApiKey, view: &'a ClassView) -> Option<&'a RateLimitSpec> {
    key.spec.rate_limit.as_ref().or(match view {
        ClassView::Found(found) => found.spec.default_rate_limit.as_ref(),
        _ => None,
    })
}

/// Every rule of `class` that `key` breaks, in the policy's order.
#[must_use]
pub fn check(key: &ApiKey, class: &FoundClass, default_grace: SignedDuration) -> Vec<ClassViolation> {
    let spec = &class.spec;
    let mut out = Vec::new();
    let mut broken = |rule: &'static str, problem: String| {
        out.push(ClassViolation { class: class.name.clone(), rule, problem });
    };
    if let Some(rules) = &spec.allowed_scopes {
        let denied: Vec<&str> =
            key.spec.scopes.iter().map(String::as_str).filter(|s| !rules.iter().any(|r| allows(r, s))).collect();
        if !denied.is_empty() {
            broken("allowedScopes", format!("not allowed: {}", denied.join(", ")));
        }
    }
    if let Some(max) = &spec.max_lifetime {
        let lifetime = match (&key.spec.expires_at, &key.metadata.creation_timestamp) {
            (Some(expires), Some(created)) => Some(expires.0.duration_since(created.0).as_secs()),
            _ => None,
        };
        if lifetime.is_none_or(|life| seconds(max).is_none_or(|max| life > max)) {
            broken("maxLifetime", format!("expiresAt is required, at most {max} after the key was created"));
        }
    }
    if let Some(max) = &spec.max_rotation_interval {
        let every = key.spec.rotation.as_ref().and_then(|r| r.every.as_deref()).and_then(seconds);
        if every.is_none_or(|every| seconds(max).is_none_or(|max| every > max)) {
            broken("maxRotationInterval", format!("rotation.every is required, at most {max}"));
        }
    }
    if let (Some(max), Some(rotation)) = (&spec.max_grace_period, &key.spec.rotation) {
        let grace = match rotation.grace_period.as_deref() {
            Some(text) => seconds(text),
            None => Some(default_grace.as_secs()),
        };
        if grace.is_none_or(|grace| seconds(max).is_none_or(|max| grace > max)) {
            broken("maxGracePeriod", format!("rotation.gracePeriod (1h when absent) must be at most {max}"));
        }
    }
    if let Some(max) = &spec.max_rate_limit {
        let within =
            key.spec.rate_limit.as_ref().or(spec.default_rate_limit.as_ref()).is_some_and(|r| rate_within(r, max));
        if !within {
            broken(
                "maxRateLimit",
                format!(
                    "rateLimit (or the class defaultRateLimit) is required, at most {} per {} with a burst of at most {}",
                    max.requests,
                    max.period,
                    max.burst.unwrap_or(max.requests)
                ),
            );
        }
    }
    if let Some(prefixes) = &spec.allowed_prefixes {
        let prefix = key.spec.prefix.as_deref().unwrap_or(DEFAULT_PREFIX);
        if !prefixes.iter().any(|p| p == prefix) {
            broken("allowedPrefixes", format!("prefix {prefix} is not allowed"));
        }
    }
    if let Some(sets) = &spec.allowed_key_sets
        && !sets.contains(&key.spec.key_set)
    {
        broken("allowedKeySets", format!("key set {} is not allowed", key.spec.key_set));
    }
    if let Some(selector) = &spec.namespace_selector
        && !selects(selector, &class.namespace_labels)
    {
        let namespace = key.metadata.namespace.as_deref().unwrap_or_default();
        broken("namespaceSelector", format!("namespace {namespace} is not selected by the class"));
    }
    out
}

/// Whether `rule` allows the scope `scope` (`resource:action`).
fn allows(rule: &ScopeRule, scope: &str) -> bool {
    let Some((resource, action)) = scope.rsplit_once(':') else { return false };
    let resource_ok = rule.resource == "*"
        || rule.resource == resource
        || rule.resource.strip_suffix('*').is_some_and(|prefix| resource.starts_with(prefix));
    resource_ok && rule.actions.iter().any(|a| a == "admin" || a == action)
}

/// Whether `key` (requests per period, burst) is within `max`: cross-multiplied, so no rounding.
fn rate_within(key: &RateLimitSpec, max: &RateLimitSpec) -> bool {
    let (Some(key_period), Some(max_period)) = (seconds(&key.period), seconds(&max.period)) else { return false };
    let rate_ok =
        i128::from(key.requests) * i128::from(max_period) <= i128::from(max.requests) * i128::from(key_period);
    rate_ok && key.burst.unwrap_or(key.requests) <= max.burst.unwrap_or(max.requests)
}

/// Whether a namespace with `labels` is selected (Kubernetes label-selector semantics).
pub(crate) fn selects(selector: &NamespaceSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v));
    let expressions_ok = selector.match_expressions.iter().all(|e| {
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| e.values.contains(v)),
            "NotIn" => value.is_none_or(|v| !e.values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_ok && expressions_ok
}

/// Whole seconds of a duration written as keys write them (`30d`, `1h30m`).
fn seconds(text: &str) -> Option<i64> {
    text.parse::<KeyDuration>().ok().and_then(|d| i64::try_from(d.get().as_secs()).ok())
}
