//! What the API server does to an ApiKey before storing it: prune the fields its CRD schema
//! does not declare, fill in the schema's defaults, and check the OpenAPI schema and the CEL
//! rules, refusing with `422 Invalid` as the API server does.
//!
//! The schema and rules are `keyward_api::crd()`'s, evaluated by the same crates as
//! `tests/admission.rs` (jsonschema and kube-cel), whose shared table the real API server is
//! held to (`tests/real_cluster/admission.rs`). What kube-cel cannot know, the API server's
//! static cost estimate, is proven by the real server only.

use std::sync::OnceLock;

use serde_json::{Value, json};

/// The ApiKey CRD's structural schema, compiled once.
pub struct Admission {
    schema: Value,
    compiled: kube_cel::CompiledSchema,
    validator: jsonschema::Validator,
}

/// One reason to refuse an object, named the way the API server names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field, as `spec.scopes[0]`.
    pub field: String,
    /// What is wrong, as `Invalid value: "x": ...` or `Forbidden: ...`.
    pub message: String,
}

/// Admission for ApiKeys (built on first use).
pub fn api_keys() -> &'static Admission {
    static ADMISSION: OnceLock<Admission> = OnceLock::new();
    ADMISSION.get_or_init(Admission::new)
}

impl Admission {
    fn new() -> Admission {
        let crd = serde_json::to_value(keyward_api::crd()).expect("the generated CRD serialises");
        let schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone();
        // Invariant: `keyward crd` generates a valid schema (crates/keyward-api's tests and the
        // real API server's acceptance of crds/apikey.yaml prove it).
        let validator = jsonschema::validator_for(&schema).expect("the CRD schema is valid JSON Schema");
        let compiled = kube_cel::compile_schema(&schema);
        Admission { schema, compiled, validator }
    }

    /// Prune undeclared fields and fill in defaults, as the API server does on every write.
    pub fn normalize(&self, object: &mut Value) {
        if let (Some(map), Some(properties)) =
            (object.as_object_mut(), self.schema.get("properties").and_then(Value::as_object))
        {
            map.retain(|key, _| {
                matches!(key.as_str(), "apiVersion" | "kind" | "metadata") || properties.contains_key(key)
            });
            for (key, value) in map.iter_mut() {
                if let Some(schema) = properties.get(key) {
                    prune(schema, value);
                }
            }
        }
        *object = kube_cel::apply_defaults(&self.schema, object);
    }

    /// Every reason to refuse `object` (an update when `old` is given): schema errors, then CEL rules.
    #[must_use]
    pub fn errors(&self, object: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let mut errors: Vec<FieldError> = self
            .validator
            .iter_errors(object)
            .map(|e| {
                let pointer = e.instance_path().to_string();
                let value = object.pointer(&pointer).map_or_else(String::new, shown);
                FieldError { field: field_path(&pointer), message: format!("Invalid value: {value}: {e}") }
            })
            .collect();
        if let Err(cel) = kube_cel::Validator::new().validate_compiled(&self.compiled, object, old) {
            errors.extend(cel.iter().map(|e| FieldError {
                field: e.field_path.clone(),
                message: format!("Invalid value: \"object\": {}", e.message),
            }));
        }
        errors
    }
}

/// Drop what a structural schema does not declare (unless it preserves unknown fields).
fn prune(schema: &Value, value: &mut Value) {
    if schema.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool) == Some(true) {
        return;
    }
    match value {
        Value::Object(map) => {
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                map.retain(|key, _| properties.contains_key(key));
                for (key, value) in map.iter_mut() {
                    prune(&properties[key], value);
                }
            } else if let Some(additional) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for value in map.values_mut() {
                    prune(additional, value);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = schema.get("items") {
                for value in items.iter_mut() {
                    prune(item, value);
                }
            }
        }
        _ => {}
    }
}

/// A value as the API server quotes it in a refusal: strings quoted, objects by their type.
fn shown(value: &Value) -> String {
    match value {
        Value::Object(_) => "\"object\"".to_owned(),
        Value::Array(_) => "\"array\"".to_owned(),
        other => other.to_string(),
    }
}

/// `/spec/scopes/0` → `spec.scopes[0]`, the way the API server names fields.
#[must_use]
pub fn field_path(pointer: &str) -> String {
    let mut path = String::new();
    for segment in pointer.trim_start_matches('/').split('/').filter(|s| !s.is_empty()) {
        if segment.chars().all(|c| c.is_ascii_digit()) {
            path.push('[');
            path.push_str(segment);
            path.push(']');
        } else {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(segment);
        }
    }
    path
}

/// The `422 Invalid` Status the API server answers with, for `kind` (`ApiKey.keyward.dev`,
/// or `ConfigMap` in the core group) named `name`.
#[must_use]
pub fn invalid(kind: &str, group: &str, name: &str, errors: &[FieldError]) -> Value {
    let each: Vec<String> = errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect();
    let listed = if each.len() == 1 { each[0].clone() } else { format!("[{}]", each.join(", ")) };
    let short_kind = kind.split('.').next().unwrap_or(kind);
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("{kind} \"{name}\" is invalid: {listed}"),
        "reason": "Invalid",
        "details": {
            "name": name, "group": group, "kind": short_kind,
            "causes": errors.iter().map(|e| json!({
                "reason": "FieldValueInvalid", "message": e.message, "field": e.field,
            })).collect::<Vec<_>>(),
        },
        "code": 422,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_key(spec: &Value) -> Value {
        json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKey", "metadata": {"name": "k"}, "spec": spec})
    }

    #[test]
    fn a_valid_key_is_defaulted_and_pruned_like_on_the_api_server() {
        let mut key = api_key(&json!({"scopes": ["a:read"], "bogus": 1}));
        api_keys().normalize(&mut key);
        assert_eq!(key["spec"]["active"], json!(true), "{key}");
        assert_eq!(key["spec"]["revoked"], json!(false), "{key}");
        assert_eq!(key["spec"]["keySet"], json!("default"), "{key}");
        assert!(key["spec"].get("bogus").is_none(), "{key}");
        assert_eq!(api_keys().errors(&key, None), []);
    }

    #[test]
    fn refusals_name_the_field_as_the_api_server_does() {
        let key = api_key(&json!({"scopes": ["not a scope"]}));
        let errors = api_keys().errors(&key, None);
        assert!(errors.iter().any(|e| e.field == "spec.scopes[0]"), "{errors:?}");
        let status = invalid("ApiKey.keyward.dev", "keyward.dev", "k", &errors);
        assert_eq!(status["code"], 422);
        assert!(status["message"].as_str().unwrap().starts_with("ApiKey.keyward.dev \"k\" is invalid: "), "{status}");
    }

    #[test]
    fn un_revoking_is_refused_by_the_transition_rule() {
        let old = api_key(&json!({"scopes": ["a:read"], "revoked": true}));
        let new = api_key(&json!({"scopes": ["a:read"], "revoked": false}));
        assert!(!api_keys().errors(&new, Some(&old)).is_empty());
        assert_eq!(api_keys().errors(&new, None), []);
    }
}
