//! ApiKeys read as raw objects and decoded one at a time, so that one stored object the types cannot read costs only itself.
//!
//! The API server can hold ApiKeys that today's types refuse: created before
//! the CRD tightened a rule, or with validation bypassed (`spec: {}`). Listed
//! or watched as typed objects, one such object fails the whole list: every
//! key of its namespace (or, for the watch, of the cluster) stops converging.
//! So lists and watches read raw objects ([`DynamicObject`]) and decode each
//! on its own; an object that does not decode is left out of key sets, and its
//! reconcile reports it (`Ready=False`, reason `InvalidSpec`, and an Event)
//! naming the field, never quoting the stored value. Deleted, it is let go:
//! its key sets are rebuilt without it and the operator's finalizer released,
//! so it never hangs in `Terminating`.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use tracing::warn;

use crate::api::{ApiKey, ApiKeySpec, CONDITION_READY, ConditionUpdate, KeyState, set_condition};
use crate::keyset::KeySetId;
use crate::plan::FINALIZER;

use super::{Context, Error, FIELD_MANAGER};

/// The ApiKey kind, for raw lists and watches.
#[must_use]
pub fn api_resource() -> ApiResource {
    ApiResource::erase::<ApiKey>(&())
}

/// A stored ApiKey that the types cannot read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undecodable {
    /// What is wrong, naming the field (`spec.scopes is missing`).
    pub problem: String,
}

/// `object` as an ApiKey, or what keeps it from being one.
pub fn decode(object: &DynamicObject) -> Result<ApiKey, Undecodable> {
    let value = serde_json::to_value(object).map_err(|_| Undecodable { problem: "object does not encode".into() })?;
    serde_json::from_value::<ApiKey>(value.clone()).map_err(|_| Undecodable { problem: problem(&value) })
}

/// Which field keeps `object` from decoding, found by decoding parts of it; never its value.
fn problem(object: &Value) -> String {
    let Some(spec) = object.get("spec").and_then(Value::as_object) else {
        return "spec is missing or not an object".to_owned();
    };
    let Err(first) = serde_json::from_value::<ApiKeySpec>(Value::Object(spec.clone())) else {
        return "status or metadata does not decode".to_owned();
    };
    if let Some(field) = missing_field(&first) {
        return format!("spec.{field} is missing");
    }
    // The field whose removal makes the spec decode (or merely miss that field) is the culprit.
    for key in spec.keys() {
        let mut rest = spec.clone();
        rest.remove(key);
        match serde_json::from_value::<ApiKeySpec>(Value::Object(rest)) {
            Ok(_) => return format!("spec.{} has a value of the wrong type or form", short(key)),
            Err(e) if missing_field(&e).as_deref() == Some(key.as_str()) => {
                return format!("spec.{} has a value of the wrong type or form", short(key));
            }
            Err(_) => {}
        }
    }
    "spec does not decode".to_owned()
}

/// The field a "missing field `x`" error names (a field of the type, not input).
fn missing_field(error: &serde_json::Error) -> Option<String> {
    let text = error.to_string();
    let rest = text.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_owned())
}

/// A field name from the object, cut so that a message stays short.
fn short(key: &str) -> String {
    key.chars().take(64).collect()
}

/// Let a deleted, undecodable ApiKey go: every key set it may be in (its
/// stored `spec.keySet` and `status.keySet` where readable, else `default`) is
/// rebuilt now (without it, as it does not decode), then the finalizer is
/// released. Its Secret is owned by it and goes with it.
pub(super) async fn release(ctx: &Context, object: &DynamicObject) -> Result<(), Error> {
    let namespace = object.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let Some(list) = object.metadata.finalizers.as_ref().filter(|l| l.iter().any(|f| f == FINALIZER)) else {
        return Ok(());
    };
    let named = |path: &str| object.data.pointer(path).and_then(Value::as_str).map(str::to_owned);
    let mut sets: Vec<String> = [named("/spec/keySet"), named("/status/keySet")].into_iter().flatten().collect();
    if sets.is_empty() {
        sets.push(ApiKeySpec::default().key_set);
    }
    sets.dedup();
    for name in sets {
        let id = KeySetId { namespace: namespace.clone(), name };
        if id.to_string().parse::<KeySetId>().is_ok() {
            ctx.publisher.publish_now(&id).await?;
        }
    }
    let kept: Vec<&String> = list.iter().filter(|f| *f != FINALIZER).collect();
    let patch: json_patch::Patch = serde_json::from_value(json!([
        { "op": "test", "path": "/metadata/finalizers", "value": list },
        { "op": "replace", "path": "/metadata/finalizers", "value": kept },
    ]))?;
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &namespace, &api_resource());
    match api.patch(&object.name_any(), &PatchParams::default(), &Patch::<()>::Json(patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(super::apply::guarded("release finalizer")(e)),
    }
}

/// Record on the object itself why it is not working: status `Error`,
/// `Ready=False` with reason `InvalidSpec`, and a Warning Event, both written
/// only when the reason changed.
pub(super) async fn report(ctx: &Context, object: &DynamicObject, why: &Undecodable) -> Result<(), Error> {
    let namespace = object.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let name = object.name_any();
    let status = object.data.get("status");
    let mut conditions = status
        .and_then(|s| s.get("conditions"))
        .and_then(|c| serde_json::from_value(c.clone()).ok())
        .unwrap_or_default();
    let unchanged = status.and_then(|s| s.get("conditions")).and_then(|c| c.get(0)).is_some_and(|ready| {
        ready.get("reason") == Some(&json!("InvalidSpec")) && ready.get("message") == Some(&json!(why.problem))
    });
    if unchanged {
        return Ok(());
    }
    warn!(%namespace, %name, problem = %why.problem, "ApiKey does not decode; it is left out of its key set");
    let now: Timestamp = (ctx.clock)();
    let update = ConditionUpdate {
        type_: CONDITION_READY,
        status: "False",
        reason: "InvalidSpec",
        message: why.problem.clone(),
    };
    set_condition(&mut conditions, update, object.metadata.generation, now);
    let patch = json!({ "status": {
        "state": KeyState::Error,
        "conditions": conditions,
        "observedGeneration": object.metadata.generation,
    }});
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &namespace, &api_resource());
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PatchParams::default() };
    api.patch_status(&name, &params, &Patch::Merge(patch)).await.map_err(Error::kube("patch status"))?;
    let reference = ObjectReference {
        api_version: Some(api_resource().api_version),
        kind: Some(api_resource().kind),
        namespace: Some(namespace.clone()),
        name: Some(name.clone()),
        uid: object.metadata.uid.clone(),
        resource_version: object.metadata.resource_version.clone(),
        ..ObjectReference::default()
    };
    let event = Event {
        type_: EventType::Warning,
        reason: "InvalidSpec".to_owned(),
        note: Some(format!("The key does not work until the spec is fixed: {}", why.problem)),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &reference).await {
        warn!(%namespace, %name, error = %e, "could not publish Event");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(yaml: &str) -> DynamicObject {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn a_stored_object_the_types_refuse_is_named_by_its_field_never_its_value() {
        let cases = [
            ("spec: {}", "spec.scopes is missing"),
            (
                "spec: {scopes: [\"a:read\"], active: \"kw_secretlooking\"}",
                "spec.active has a value of the wrong type or form",
            ),
            ("spec: {scopes: 7}", "spec.scopes has a value of the wrong type or form"),
            ("spec: []", "spec is missing or not an object"),
            ("status: {}", "spec is missing or not an object"),
        ];
        for (body, expected) in cases {
            let yaml = format!(
                "apiVersion: keyward.dev/v1alpha1\nkind: ApiKey\nmetadata: {{name: x, namespace: a}}\n{body}\n"
            );
            let err = decode(&object(&yaml)).expect_err(body);
            assert_eq!(err.problem, expected, "{body}");
            assert!(!err.problem.contains("kw_"), "{}", err.problem);
        }
        let good = "apiVersion: keyward.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: x, namespace: a}\nspec: {scopes: [\"a:read\"]}\n";
        assert!(decode(&object(good)).is_ok());
    }
}
