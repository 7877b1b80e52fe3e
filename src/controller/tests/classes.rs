//! ApiKeyClasses through the API: the operator re-checks every key against its class, holds
//! back (unpublishes) a key whose class is missing, deleted or narrowed, names the class and
//! rule in its Ready condition and an Event, and never widens a published key silently.

use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::api::{ApiKeyClass, KeyState};
use crate::plan::{DATA_TOKEN, Settings};

use super::harness::{Harness, harness};

const KEY: &str = "
apiVersion: keyward.dev/v1alpha1
kind: ApiKey
metadata: {name: partner, namespace: team-a}
spec:
  className: partner
  scopes: [orders:read, orders:write]
";

fn classes(h: &Harness) -> Api<ApiKeyClass> {
    Api::all(h.client.clone())
}

async fn create_class(h: &Harness, name: &str, annotations: Value, spec: Value) {
    let class: ApiKeyClass = serde_json::from_value(json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKeyClass",
        "metadata": {"name": name, "annotations": annotations}, "spec": spec,
    }))
    .unwrap();
    classes(h).create(&PostParams::default(), &class).await.expect("create ApiKeyClass");
}

async fn ready(h: &Harness, name: &str) -> (String, String, String) {
    let key = h.get(name).await;
    let status = key.status.unwrap();
    let ready = &status.conditions[0];
    (ready.status.clone(), ready.reason.clone(), ready.message.clone())
}

/// Warning Events of `reason`, by note.
async fn notes(h: &Harness, reason: &str) -> Vec<String> {
    h.events().await.into_iter().filter(|e| e.reason.as_deref() == Some(reason)).filter_map(|e| e.note).collect()
}

#[tokio::test]
async fn a_key_naming_a_missing_class_is_held_back_and_published_once_the_class_exists() {
    let h = harness(Settings::default()).await;
    h.create(KEY).await;
    h.settle_ready("partner").await;

    let (status, reason, message) = ready(&h, "partner").await;
    assert_eq!((status.as_str(), reason.as_str()), ("False", "ClassNotFound"));
    assert!(message.contains("ApiKeyClass partner (spec.className) does not exist"), "{message}");
    let key = h.get("partner").await;
    assert_eq!(key.status.as_ref().unwrap().state, Some(KeyState::Error));
    assert_eq!(key.status.as_ref().unwrap().class_name.as_deref(), Some("partner"));
    assert!(h.published("default").await.is_empty(), "nothing is published for a key without its class");
    assert_eq!(notes(&h, "ClassNotFound").await.len(), 1, "one Event, not one per pass");

    create_class(
        &h,
        "partner",
        json!({}),
        json!({"allowedScopes": [{"resource": "orders", "actions": ["read", "write"]}]}),
    )
    .await;
    h.settle_ready("partner").await;
    assert_eq!(ready(&h, "partner").await.0, "True");
    assert_eq!(h.published("default").await.len(), 1);
    assert!(notes(&h, "Created").await.len() == 1, "a new key says Created once it is published");
}

#[tokio::test]
async fn narrowing_a_class_unpublishes_its_keys_with_an_event_naming_class_and_rule() {
    let h = harness(Settings::default()).await;
    create_class(
        &h,
        "partner",
        json!({}),
        json!({"allowedScopes": [{"resource": "orders", "actions": ["read", "write"]}]}),
    )
    .await;
    h.create(KEY).await;
    h.settle_ready("partner").await;
    assert_eq!(ready(&h, "partner").await.0, "True");
    let token = h.secret_token("partner-apikey", DATA_TOKEN).await.unwrap();
    assert_eq!(h.published("default").await.len(), 1);

    let narrowed = json!({"spec": {"allowedScopes": [{"resource": "orders", "actions": ["read"]}]}});
    classes(&h).patch("partner", &PatchParams::default(), &Patch::Merge(&narrowed)).await.unwrap();
    h.settle("partner").await;

    let (status, reason, message) = ready(&h, "partner").await;
    assert_eq!((status.as_str(), reason.as_str()), ("False", "ClassViolation"));
    assert_eq!(message, "ApiKeyClass partner (allowedScopes): not allowed: orders:write");
    assert!(h.published("default").await.is_empty(), "the key's hash left the key set");
    let events = notes(&h, "ClassViolation").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].contains("(allowedScopes)"), "{events:?}");
    // The team fixes the key: the same token is published again.
    h.patch_spec("partner", json!({"scopes": ["orders:read"]})).await;
    h.settle_ready("partner").await;
    assert_eq!(ready(&h, "partner").await.0, "True");
    assert_eq!(h.secret_token("partner-apikey", DATA_TOKEN).await.unwrap(), token);
    assert_eq!(h.published("default").await[0].hash, super::harness::hash_of(&token));
    assert_eq!(notes(&h, "ClassSatisfied").await.len(), 1, "published again, and it says so");
    let all = serde_json::to_string(&h.events().await).unwrap();
    assert!(!all.contains(&token), "no token in Events");
}

#[tokio::test]
async fn deleting_a_class_holds_its_keys_back_even_the_default_class_s() {
    let h = harness(Settings::default()).await;
    let default = json!({"apikeyclass.keyward.dev/is-default-class": "true"});
    create_class(&h, "client", default, json!({"allowedScopes": [{"resource": "*", "actions": ["admin"]}]})).await;
    h.create(
        "
apiVersion: keyward.dev/v1alpha1
kind: ApiKey
metadata: {name: plain, namespace: team-a}
spec: {scopes: [orders:read]}
",
    )
    .await;
    h.settle_ready("plain").await;
    let key = h.get("plain").await;
    assert_eq!(key.status.as_ref().unwrap().class_name.as_deref(), Some("client"), "the default class is shown");
    assert_eq!(h.published("default").await.len(), 1);

    classes(&h).delete("client", &DeleteParams::default()).await.unwrap();
    h.settle("plain").await;
    let (status, reason, message) = ready(&h, "plain").await;
    assert_eq!((status.as_str(), reason.as_str()), ("False", "ClassNotFound"), "{message}");
    assert!(message.contains("ApiKeyClass client"), "{message}");
    assert!(h.published("default").await.is_empty(), "losing the default class never widens a key");
}

#[tokio::test]
async fn widening_a_class_changes_no_published_key_and_a_new_default_rate_limit_is_announced() {
    let h = harness(Settings::default()).await;
    let spec = json!({
        "allowedScopes": [{"resource": "orders", "actions": ["read", "write"]}],
        "defaultRateLimit": {"requests": 10, "period": "1s"},
    });
    create_class(&h, "partner", json!({}), spec).await;
    h.create(KEY).await;
    h.settle_ready("partner").await;
    let before = h.published("default").await;
    assert_eq!(before.len(), 1);
    assert_eq!(before[0].rate_limit.as_ref().map(|r| r.requests), Some(10), "the class default is published");

    // More scopes allowed: the key keeps exactly what it had.
    let wider = json!({"spec": {"allowedScopes": [{"resource": "*", "actions": ["admin"]}]}});
    classes(&h).patch("partner", &PatchParams::default(), &Patch::Merge(&wider)).await.unwrap();
    h.settle("partner").await;
    assert_eq!(h.published("default").await, before, "widening a class changes no published key");
    assert!(notes(&h, "ClassDefaultChanged").await.is_empty());

    // A higher default rate limit reaches keys relying on it, each with an Event.
    let faster = json!({"spec": {"defaultRateLimit": {"requests": 50, "period": "1s"}}});
    classes(&h).patch("partner", &PatchParams::default(), &Patch::Merge(&faster)).await.unwrap();
    h.settle("partner").await;
    assert_eq!(h.published("default").await[0].rate_limit.as_ref().map(|r| r.requests), Some(50));
    let events = notes(&h, "ClassDefaultChanged").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].contains("50 per 1s"), "{events:?}");
}

#[tokio::test]
async fn two_default_classes_hold_back_keys_that_name_none() {
    let h = harness(Settings::default()).await;
    let default = json!({"apikeyclass.keyward.dev/is-default-class": "true"});
    create_class(&h, "a", default.clone(), json!({})).await;
    create_class(&h, "b", default, json!({})).await;
    h.create(
        "
apiVersion: keyward.dev/v1alpha1
kind: ApiKey
metadata: {name: plain, namespace: team-a}
spec: {scopes: [orders:read]}
",
    )
    .await;
    h.settle_ready("plain").await;
    let (status, reason, message) = ready(&h, "plain").await;
    assert_eq!((status.as_str(), reason.as_str()), ("False", "ClassAmbiguous"));
    assert!(message.contains("a, b"), "{message}");
    assert!(h.published("default").await.is_empty());
}
