//! What admission would say about ApiKeys: the generated CRD's OpenAPI schema
//! (patterns, bounds) and its CEL rules, applied to the shipped examples and
//! to tables of specs users might write.

use keyward::api::{ApiKey, crd};
use serde_json::{Value, json};

fn schema() -> Value {
    let crd = serde_json::to_value(crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// Every reason admission would refuse `object`: schema violations by path, then CEL messages.
fn admission_errors(object: &Value) -> Vec<String> {
    let schema = schema();
    let validator = jsonschema::validator_for(&schema).expect("the CRD schema is valid JSON Schema");
    let mut errors: Vec<String> =
        validator.iter_errors(object).map(|e| format!("{}: {}", e.instance_path(), e.kind().keyword())).collect();
    if let Err(cel) = kube_cel::Validator::new().validate(&schema, object, None) {
        errors.extend(cel.iter().map(|e| e.message.clone()));
    }
    errors
}

fn object(spec: &Value) -> Value {
    json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKey", "metadata": {"name": "k"}, "spec": spec})
}

#[test]
fn every_example_apikey_passes_admission_and_deserialises() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/apikeys");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let value: Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(admission_errors(&value), Vec::<String>::new(), "{}", path.display());
        let key: ApiKey = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!key.spec.scopes.is_empty());
        seen += 1;
    }
    assert!(seen >= 5, "expected the five example keys, found {seen}");
}

#[test]
fn schema_patterns_refuse_malformed_fields() {
    let cases: Vec<(&str, Value, &str)> = vec![
        ("no scopes", json!({"scopes": []}), "/spec/scopes: minItems"),
        ("scope without action", json!({"scopes": ["leads"]}), "/spec/scopes/0: pattern"),
        ("unknown action", json!({"scopes": ["leads:delete"]}), "/spec/scopes/0: pattern"),
        ("uppercase resource", json!({"scopes": ["Leads:read"]}), "/spec/scopes/0: pattern"),
        ("prefix with a dash", json!({"scopes": ["a:read"], "prefix": "acme-live"}), "/spec/prefix: pattern"),
        ("prefix ending in underscore", json!({"scopes": ["a:read"], "prefix": "acme_"}), "/spec/prefix: pattern"),
        (
            "duration in weeks",
            json!({"scopes": ["a:read"], "rotation": {"every": "2w"}}),
            "/spec/rotation/every: pattern",
        ),
        (
            "fractional hours",
            json!({"scopes": ["a:read"], "expireAfterUnused": "1.5h"}),
            "/spec/expireAfterUnused: pattern",
        ),
        (
            "secret name with capitals",
            json!({"scopes": ["a:read"], "secretName": "My-Secret"}),
            "/spec/secretName: pattern",
        ),
        ("key set with a dot", json!({"scopes": ["a:read"], "keySet": "a.b"}), "/spec/keySet: pattern"),
        (
            "zero requests",
            json!({"scopes": ["a:read"], "rateLimit": {"requests": 0, "period": "1m"}}),
            "/spec/rateLimit/requests: minimum",
        ),
        ("rate limit without period", json!({"scopes": ["a:read"], "rateLimit": {"requests": 5}}), ": required"),
        (
            "label value with a space",
            json!({"scopes": ["a:read"], "secretTemplate": {"labels": {"team": "two words"}}}),
            "/spec/secretTemplate/labels/team: pattern",
        ),
        (
            "label value ending in a dash",
            json!({"scopes": ["a:read"], "secretTemplate": {"labels": {"team": "x-"}}}),
            "/spec/secretTemplate/labels/team: pattern",
        ),
        (
            "label value over 63 characters",
            json!({"scopes": ["a:read"], "secretTemplate": {"labels": {"team": "a".repeat(64)}}}),
            "/spec/secretTemplate/labels/team: maxLength",
        ),
    ];
    for (name, spec, expected) in cases {
        let errors = admission_errors(&object(&spec));
        assert!(
            errors.iter().any(|e| e.ends_with(expected) || e == expected),
            "case {name}: expected {expected:?} in {errors:?}"
        );
    }
}

#[test]
fn a_full_spec_is_accepted() {
    let spec = json!({
        "displayName": "Everything set",
        "scopes": ["orders:read", "orders:write", "*:admin"],
        "active": false,
        "revoked": false,
        "expiresAt": "2027-01-01T00:00:00Z",
        "rotation": {"every": "1h30m", "gracePeriod": "15m"},
        "keySet": "partners",
        "secretName": "partner.token",
        "secretTemplate": {"labels": {"team": "x", "example.com/tier": "gold-1.2_a", "empty": ""}, "annotations": {"note": "any text at all"}},
        "prefix": "acme_live2",
        "rateLimit": {"requests": 100, "period": "1s", "burst": 10},
        "expireAfterUnused": "90d",
        "retainExpiredFor": "30d"
    });
    assert_eq!(admission_errors(&object(&spec)), Vec::<String>::new());
}
