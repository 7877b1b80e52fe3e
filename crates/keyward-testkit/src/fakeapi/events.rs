//! Events are one resource with two APIs: core/v1 (what `kubectl get events` and
//! `kubectl describe` read) and events.k8s.io/v1 (what keyward writes). On the API server an
//! Event written through one is read through the other with its fields renamed; here each is
//! stored where it was written and converted when read or watched through the other API.

use serde_json::{Map, Value};

/// The core/v1 Events prefix.
pub const CORE: &str = "api/v1";
/// The events.k8s.io/v1 Events prefix.
pub const EVENTS: &str = "apis/events.k8s.io/v1";

/// Fields with another name in the other API: (events.k8s.io/v1, core/v1).
const RENAMED: [(&str, &str); 7] = [
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// The other API's prefix for Events served under `prefix`, if `resource` is Events.
#[must_use]
pub fn twin(prefix: &str, resource: &str) -> Option<&'static str> {
    match (prefix, resource) {
        (CORE, "events") => Some(EVENTS),
        (EVENTS, "events") => Some(CORE),
        _ => None,
    }
}

/// `event` as the API under `to` shows it.
#[must_use]
pub fn convert(event: &Value, to: &str) -> Value {
    let Some(fields) = event.as_object() else { return event.clone() };
    let to_core = to == CORE;
    let mut out = Map::new();
    for (key, value) in fields {
        let renamed = RENAMED.iter().find_map(|(new, old)| {
            if to_core && key == new {
                Some(*old)
            } else if !to_core && key == old {
                Some(*new)
            } else {
                None
            }
        });
        out.insert(renamed.unwrap_or(key).to_owned(), value.clone());
    }
    out.insert("apiVersion".to_owned(), Value::String(if to_core { "v1" } else { "events.k8s.io/v1" }.to_owned()));
    out.insert("kind".to_owned(), Value::String("Event".to_owned()));
    Value::Object(out)
}

/// Whether an Event matches a field selector of `path=value` and `path!=value` terms, each path
/// a dotted field of the Event (`involvedObject.uid`, `regarding.name`, `reason`).
#[must_use]
pub fn fields_match(selector: Option<&str>, event: &Value) -> bool {
    let Some(selector) = selector.filter(|s| !s.is_empty()) else { return true };
    selector.split(',').all(|term| {
        let (path, wanted, equal) = match term.split_once("!=") {
            Some((path, wanted)) => (path, wanted, false),
            None => match term.split_once('=') {
                Some((path, wanted)) => (path, wanted.trim_start_matches('='), true),
                None => return true,
            },
        };
        let found = event.pointer(&format!("/{}", path.replace('.', "/"))).and_then(Value::as_str).unwrap_or("");
        (found == wanted) == equal
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_are_renamed_both_ways() {
        let new = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "regarding": {"name": "x"}, "note": "n", "reason": "R"});
        let core = convert(&new, CORE);
        assert_eq!(
            core,
            json!({"apiVersion": "v1", "kind": "Event", "involvedObject": {"name": "x"}, "message": "n", "reason": "R"})
        );
        assert_eq!(convert(&core, EVENTS), new);
    }

    #[test]
    fn field_selectors_pick_events_by_any_field() {
        let event = json!({"involvedObject": {"uid": "u1", "kind": "ApiKey"}, "reason": "Ready"});
        assert!(fields_match(Some("involvedObject.uid=u1,involvedObject.kind=ApiKey"), &event));
        assert!(!fields_match(Some("involvedObject.uid=u2"), &event));
        assert!(fields_match(Some("reason!=Failed"), &event));
        assert!(fields_match(None, &event));
    }
}
