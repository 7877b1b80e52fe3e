use jiff::Timestamp;
use kube_cel::Validator;
use serde_json::{Value, json};

use super::*;

fn schema() -> Value {
    let crd = serde_json::to_value(crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

fn object(spec: &Value) -> Value {
    json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKey", "metadata": {"name": "k"}, "spec": spec})
}

/// The messages of every CEL rule that fails for `new` (and `old`, for transition rules).
fn cel_failures(new: Value, old: Option<Value>) -> Vec<String> {
    let old = old.as_ref().map(object);
    match Validator::new().validate(&schema(), &object(&new), old.as_ref()) {
        Ok(()) => vec![],
        Err(errors) => errors.iter().map(|e| e.message.clone()).collect(),
    }
}

#[test]
fn the_checked_in_crd_matches_the_rust_types() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crds/apikey.yaml");
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == crd_yaml(),
        "crds/apikey.yaml is out of date: run `cargo run -- crd > crds/apikey.yaml` (or `make crds`)"
    );
}

#[test]
fn the_checked_in_keyset_crd_matches_the_rust_types() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crds/keyset.yaml");
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(checked_in == keyset_crd_yaml(), "crds/keyset.yaml is out of date: run `make crds`");
}

#[test]
fn every_cel_rule_compiles() {
    let compiled = kube_cel::compile_schema(&schema());
    assert!(!compiled.has_errors(), "{:?}", compiled.compilation_errors());
}

#[test]
fn admission_rules_accept_and_refuse_the_right_specs() {
    let cases: Vec<(&str, Value, Vec<&str>)> = vec![
        ("minimal key", json!({"scopes": ["leads:read"]}), vec![]),
        ("duplicate scopes", json!({"scopes": ["leads:read", "leads:read"]}), vec!["scopes must be unique"]),
        ("read and write on one resource", json!({"scopes": ["leads:read", "leads:write"]}), vec![]),
        (
            "rotation with both every and schedule",
            json!({"scopes": ["a:read"], "rotation": {"every": "30d", "schedule": "0 3 * * 1"}}),
            vec!["set exactly one of rotation.every and rotation.schedule"],
        ),
        (
            "rotation with neither",
            json!({"scopes": ["a:read"], "rotation": {"gracePeriod": "1h"}}),
            vec!["set exactly one of rotation.every and rotation.schedule"],
        ),
        (
            "rotation by schedule with grace",
            json!({"scopes": ["a:read"], "rotation": {"schedule": "0 3 * * 1", "gracePeriod": "1d"}}),
            vec![],
        ),
        (
            "grace shorter than interval, in days",
            json!({"scopes": ["a:read"], "rotation": {"every": "90d", "gracePeriod": "1d"}}),
            vec![],
        ),
        (
            "grace equal to interval",
            json!({"scopes": ["a:read"], "rotation": {"every": "30d", "gracePeriod": "30d"}}),
            vec!["rotation.gracePeriod must be shorter than rotation.every"],
        ),
        (
            "grace in hours longer than interval in days",
            json!({"scopes": ["a:read"], "rotation": {"every": "30d", "gracePeriod": "721h"}}),
            vec!["rotation.gracePeriod must be shorter than rotation.every"],
        ),
        (
            "grace in hours just under interval in days",
            json!({"scopes": ["a:read"], "rotation": {"every": "30d", "gracePeriod": "719h"}}),
            vec![],
        ),
        (
            "grace in days longer than interval in minutes",
            json!({"scopes": ["a:read"], "rotation": {"every": "90m", "gracePeriod": "1d"}}),
            vec!["rotation.gracePeriod must be shorter than rotation.every"],
        ),
        (
            "grace with mixed units",
            json!({"scopes": ["a:read"], "rotation": {"every": "2h", "gracePeriod": "1h30m"}}),
            vec![],
        ),
        (
            "zero rotation interval",
            json!({"scopes": ["a:read"], "rotation": {"every": "0d"}}),
            vec![
                "rotation.every must be longer than the default gracePeriod (1h): set a shorter gracePeriod",
                "must be longer than zero",
            ],
        ),
        (
            "zero rate-limit period",
            json!({"scopes": ["a:read"], "rateLimit": {"requests": 10, "period": "0h0m0s"}}),
            vec!["must be longer than zero"],
        ),
        (
            "zero grace",
            json!({"scopes": ["a:read"], "rotation": {"every": "1d", "gracePeriod": "0s"}}),
            vec!["must be longer than zero"],
        ),
        ("zero inactivity", json!({"scopes": ["a:read"], "expireAfterUnused": "0m"}), vec!["must be longer than zero"]),
        ("zero retention", json!({"scopes": ["a:read"], "retainExpiredFor": "0s"}), vec!["must be longer than zero"]),
        (
            "reserved secret label",
            json!({"scopes": ["a:read"], "secretTemplate": {"labels": {"keyward.dev/apikey": "other"}}}),
            vec!["keys under keyward.dev/ and app.kubernetes.io/managed-by are reserved"],
        ),
        (
            "managed-by label taken over",
            json!({"scopes": ["a:read"], "secretTemplate": {"labels": {"app.kubernetes.io/managed-by": "me"}}}),
            vec!["keys under keyward.dev/ and app.kubernetes.io/managed-by are reserved"],
        ),
        (
            "reserved secret annotation",
            json!({"scopes": ["a:read"], "secretTemplate": {"annotations": {"keyward.dev/x": "y"}}}),
            vec!["keys under keyward.dev/ and app.kubernetes.io/managed-by are reserved"],
        ),
        (
            "ordinary secret labels",
            json!({"scopes": ["a:read"], "secretTemplate": {"labels": {"team": "x", "app.kubernetes.io/name": "crm"}}}),
            vec![],
        ),
    ];
    for (name, spec, expected) in cases {
        assert_eq!(cel_failures(spec, None), expected, "case: {name}");
    }
}

#[test]
fn an_interval_within_the_default_grace_period_is_refused_at_admission() {
    let cases: Vec<(&str, Value, Vec<&str>)> = vec![
        (
            "interval within the default grace period",
            json!({"scopes": ["a:read"], "rotation": {"every": "30m"}}),
            vec!["rotation.every must be longer than the default gracePeriod (1h): set a shorter gracePeriod"],
        ),
        (
            "interval equal to the default grace period",
            json!({"scopes": ["a:read"], "rotation": {"every": "60m"}}),
            vec!["rotation.every must be longer than the default gracePeriod (1h): set a shorter gracePeriod"],
        ),
        (
            "interval beyond the default grace period",
            json!({"scopes": ["a:read"], "rotation": {"every": "1d"}}),
            vec![],
        ),
        (
            "short interval with a shorter grace",
            json!({"scopes": ["a:read"], "rotation": {"every": "30m", "gracePeriod": "10m"}}),
            vec![],
        ),
    ];
    for (name, spec, expected) in cases {
        assert_eq!(cel_failures(spec, None), expected, "case: {name}");
    }
}

#[test]
fn secret_template_keys_must_be_qualified_names_at_admission() {
    const QUALIFIED: &str = "keys must be qualified names: an optional DNS subdomain prefix of at most 253 characters and '/', then 1 to 63 letters, digits, '-', '_' or '.', alphanumeric at both ends";
    let long_name = "a".repeat(64);
    let long_prefix =
        format!("{}.example.com/x", ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(63)].join("."));
    let cases: Vec<(&str, &str, bool)> = vec![
        ("plain name", "team", true),
        ("prefixed name", "example.com/tier", true),
        ("dots, dashes and underscores inside", "a.b-c_d", true),
        ("63-character name", &long_name[..63], true),
        ("a space", "bad key", false),
        ("leading dash", "-x", false),
        ("trailing dot", "x.", false),
        ("empty name after the prefix", "example.com/", false),
        ("upper-case prefix", "Example.com/x", false),
        ("two slashes", "a/b/c", false),
        ("64-character name", &long_name, false),
        ("prefix over 253 characters", &long_prefix, false),
    ];
    for (name, key, ok) in cases {
        for field in ["labels", "annotations"] {
            let spec = json!({"scopes": ["a:read"], "secretTemplate": {field: {key: "v"}}});
            let expected: Vec<&str> = if ok { vec![] } else { vec![QUALIFIED] };
            assert_eq!(cel_failures(spec, None), expected, "case: {name} in {field}");
        }
    }
}

#[test]
fn revocation_cannot_be_undone_at_admission() {
    let revoked = json!({"scopes": ["a:read"], "revoked": true});
    let cases: Vec<(&str, Value, Value, bool)> = vec![
        ("revoking", json!({"scopes": ["a:read"]}), revoked.clone(), true),
        ("staying revoked", revoked.clone(), revoked.clone(), true),
        ("un-revoking", revoked.clone(), json!({"scopes": ["a:read"], "revoked": false}), false),
        ("dropping the field to un-revoke", revoked.clone(), json!({"scopes": ["a:read"]}), false),
        ("other edits while revoked", revoked.clone(), json!({"scopes": ["a:write"], "revoked": true}), true),
    ];
    for (name, old, new, allowed) in cases {
        let failures = cel_failures(new, Some(old));
        assert_eq!(failures.is_empty(), allowed, "case {name}: {failures:?}");
        if !allowed {
            assert!(failures[0].starts_with("revoked is permanent"), "case {name}: {failures:?}");
        }
    }
}

#[test]
fn yaml_users_write_deserialises_with_defaults() {
    let key: ApiKey = serde_yaml::from_str(
        r"
apiVersion: keyward.dev/v1alpha1
kind: ApiKey
metadata:
  name: crm
  namespace: sales
spec:
  displayName: CRM Integration
  scopes: [leads:read, leads:write]
  expiresAt: 2027-01-01T00:00:00Z
  rotation: {every: 90d, gracePeriod: 1d}
",
    )
    .unwrap();
    assert!(key.spec.active);
    assert!(!key.spec.revoked);
    assert_eq!(key.spec.key_set, "default");
    assert_eq!(key.spec.expires_at.unwrap().0, "2027-01-01T00:00:00Z".parse::<Timestamp>().unwrap());
    assert_eq!(key.spec.rotation.unwrap().every.as_deref(), Some("90d"));
}

#[test]
fn a_spec_with_bad_values_still_deserialises_so_the_operator_can_report_it() {
    let key: ApiKey = serde_json::from_value(json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKey", "metadata": {"name": "bad"},
        "spec": {"scopes": ["NOT A SCOPE"], "prefix": "Bad-Prefix", "rotation": {"every": "soon"}}
    }))
    .unwrap();
    assert_eq!(key.spec.scopes, vec!["NOT A SCOPE".to_owned()]);
}

fn ready<'a>(status: &'a str, reason: &'a str) -> ConditionUpdate<'a> {
    ConditionUpdate { type_: CONDITION_READY, status, reason, message: String::new() }
}

#[test]
fn condition_transition_time_changes_only_with_the_status() {
    let t1: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    let t2: Timestamp = "2026-01-02T00:00:00Z".parse().unwrap();
    let t3: Timestamp = "2026-01-03T00:00:00Z".parse().unwrap();
    let mut conditions = Vec::new();
    set_condition(&mut conditions, ready("True", "A"), Some(1), t1);
    set_condition(&mut conditions, ready("True", "B"), Some(2), t2);
    assert_eq!(conditions[0].last_transition_time.0, t1, "same status keeps the time");
    assert_eq!(conditions[0].reason, "B");
    assert_eq!(conditions[0].observed_generation, Some(2));
    set_condition(&mut conditions, ready("False", "B"), Some(3), t3);
    assert_eq!(conditions[0].last_transition_time.0, t3, "a new status moves the time");
}

#[test]
fn ready_is_always_the_first_condition() {
    let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    let mut conditions = Vec::new();
    let other = ConditionUpdate { type_: "Rotating", status: "True", reason: "Scheduled", message: String::new() };
    set_condition(&mut conditions, other, Some(1), now);
    set_condition(&mut conditions, ready("True", "A"), Some(1), now);
    let types: Vec<&str> = conditions.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(types, ["Ready", "Rotating"]);
}

mod webhook {
    use kube_cel::Validator;
    use serde_json::{Value, json};

    use crate::{webhook_crd, webhook_crd_yaml};

    fn schema() -> Value {
        let crd = serde_json::to_value(webhook_crd()).unwrap();
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
    }

    fn cel_failures(spec: Value) -> Vec<String> {
        let object = json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKeyWebhook", "metadata": {"name": "w"}, "spec": spec});
        match Validator::new().validate(&schema(), &object, None) {
            Ok(()) => vec![],
            Err(errors) => errors.iter().map(|e| e.message.clone()).collect(),
        }
    }

    #[test]
    fn the_checked_in_webhook_crd_matches_the_rust_types() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crds/apikeywebhook.yaml");
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(checked_in == webhook_crd_yaml(), "crds/apikeywebhook.yaml is out of date: run `make crds`");
    }

    #[test]
    fn pending_notices_are_bounded_in_the_schema_as_the_operator_bounds_them() {
        let pending = &schema()["properties"]["status"]["properties"]["pending"];
        assert_eq!(pending["maxItems"], json!(crate::PENDING_MAX_ITEMS), "{pending}");
        assert_eq!(pending["items"]["properties"]["body"]["maxLength"], json!(crate::PENDING_BODY_MAX_BYTES));
        assert_eq!(pending["x-kubernetes-list-map-keys"], json!(["id"]), "one entry per message id");
    }

    #[test]
    fn every_webhook_cel_rule_compiles() {
        let compiled = kube_cel::compile_schema(&schema());
        assert!(!compiled.has_errors(), "{:?}", compiled.compilation_errors());
    }

    #[test]
    fn plain_http_is_refused_unless_it_stays_on_the_node_or_in_the_cluster() {
        let refused =
            "url must start with https://, or http:// to localhost, 127.x.x.x, [::1] or <service>.<namespace>.svc";
        let cases = [
            ("https://hooks.example.com/keyward", true),
            ("http://127.0.0.1:8080/hook", true),
            ("http://localhost/hook", true),
            ("http://[::1]:9000", true),
            ("http://receiver.team-a.svc:8080/notices", true),
            ("http://receiver.team-a.svc.cluster.local/notices", true),
            ("http://hooks.example.com/keyward", false),
            ("http://127.0.0.1.example.com/", false),
            ("http://localhost.example.com/", false),
            ("http://team-a.svc/", false),
            ("ftp://hooks.example.com/", false),
        ];
        for (url, accepted) in cases {
            let failures = cel_failures(json!({"url": url, "secretRef": {"name": "hook"}}));
            let expected: Vec<String> = if accepted { vec![] } else { vec![refused.to_owned()] };
            assert_eq!(failures, expected, "url {url}");
        }
    }

    #[test]
    fn events_are_listed_once_each() {
        let spec = json!({"url": "https://h.example/", "secretRef": {"name": "s"}, "events": ["Revoked", "Revoked"]});
        assert_eq!(cel_failures(spec), vec!["events must be unique".to_owned()]);
    }
}
