//! Setting status conditions the way Kubernetes tools expect them.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The summary condition: `kubectl wait --for=condition=Ready`, Argo CD and Flux read it.
pub const CONDITION_READY: &str = "Ready";

/// The new facts for one condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionUpdate<'a> {
    /// Condition type, such as `Ready`.
    pub type_: &'a str,
    /// `"True"`, `"False"` or `"Unknown"`.
    pub status: &'a str,
    /// CamelCase machine-readable reason.
    pub reason: &'a str,
    /// Human-readable explanation.
    pub message: String,
}

/// Set one condition in `conditions`.
///
/// `lastTransitionTime` changes only when the status changes, so watchers see
/// a stable time; `observedGeneration` is always updated. `Ready` is kept first.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    update: ConditionUpdate<'_>,
    generation: Option<i64>,
    now: Timestamp,
) {
    let existing = conditions.iter().position(|c| c.type_ == update.type_);
    let last_transition_time = match existing.map(|i| &conditions[i]) {
        Some(old) if old.status == update.status => old.last_transition_time.clone(),
        _ => Time(now),
    };
    let condition = Condition {
        type_: update.type_.to_owned(),
        status: update.status.to_owned(),
        reason: update.reason.to_owned(),
        message: update.message,
        observed_generation: generation,
        last_transition_time,
    };
    match existing {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
    if let Some(ready) = conditions.iter().position(|c| c.type_ == CONDITION_READY) {
        let ready = conditions.remove(ready);
        conditions.insert(0, ready);
    }
}
