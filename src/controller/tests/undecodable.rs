//! One stored ApiKey the types cannot read costs only itself: the rest of its namespace converges.

use std::sync::{Arc, Mutex};

use kube::Api;
use kube::api::{DynamicObject, PostParams};
use serde_json::json;

use super::super::decode::api_resource;
use super::super::reconcile;
use super::examples::CRM;
use super::harness::{LogWriter, NS, harness};
use crate::api::KeyState;
use crate::plan::Settings;

#[tokio::test]
async fn an_undecodable_apikey_is_reported_on_itself_and_does_not_block_its_namespace() {
    let h = harness(Settings::default()).await;
    let logs = Arc::new(Mutex::new(Vec::new()));
    let subscriber = tracing_subscriber::fmt().json().with_writer({
        let logs = logs.clone();
        move || LogWriter(logs.clone())
    });
    let _guard = tracing::subscriber::set_default(subscriber.finish());
    // Stored before a CRD tightened its rules, or with validation bypassed.
    let raw: Api<DynamicObject> = Api::namespaced_with(h.client.clone(), NS, &api_resource());
    let bad: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKey",
        "metadata": { "name": "broken", "namespace": NS },
        "spec": { "description": "x".repeat(4000) },
    }))
    .unwrap();
    let bad = raw.create(&PostParams::default(), &bad).await.unwrap();

    h.create(CRM).await;
    h.settle_ready("crm").await;

    let crm = h.get("crm").await.status.unwrap();
    assert_eq!((crm.state, crm.conditions[0].status.as_str()), (Some(KeyState::Active), "True"), "{crm:?}");
    assert_eq!(h.published("default").await.len(), 1, "the valid key is published");

    let slim: crate::api::ApiKey = serde_json::from_value(json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKey",
        "metadata": { "name": "broken", "namespace": NS, "uid": bad.metadata.uid },
        "spec": { "scopes": [] },
    }))
    .unwrap();
    let action = reconcile(Arc::new(slim), h.ctx.clone()).await.unwrap();
    assert_eq!(action, kube::runtime::controller::Action::await_change());
    let stored = raw.get("broken").await.unwrap();
    let ready = &stored.data["status"]["conditions"][0];
    assert_eq!((ready["type"].as_str(), ready["status"].as_str()), (Some("Ready"), Some("False")), "{ready}");
    assert_eq!(ready["reason"], "InvalidSpec");
    assert_eq!(ready["message"], "spec.scopes is missing");
    assert_eq!(stored.data["status"]["state"], "Error");
    assert!(h.event_reasons().await.contains(&"InvalidSpec".to_owned()));

    let text = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(!text.contains("xxxxxxxxxx"), "a stored object's contents reached the logs");
    assert!(text.lines().all(|line| line.len() < 1024), "log lines stay short");
}

#[tokio::test(start_paused = true)]
async fn the_operator_starts_and_converges_with_an_undecodable_apikey_already_stored() {
    // Stored past admission (the in-memory API refuses it now, as the API server would).
    let bad: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKey",
        "metadata": { "name": "broken", "namespace": NS, "uid": "u-broken" }, "spec": {},
    }))
    .unwrap();
    let client = keyward_testkit::fakeapi::FakeCluster::new().with_object(bad).client().await.unwrap();
    let raw: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &api_resource());
    let keys: Api<crate::api::ApiKey> = Api::namespaced(client.clone(), NS);
    keys.create(&PostParams::default(), &serde_yaml::from_str(CRM).unwrap()).await.unwrap();

    let settings = Settings {
        propagation_delay: jiff::SignedDuration::from_millis(200),
        publish_poll: jiff::SignedDuration::from_millis(200),
        ..Settings::default()
    };
    let start = tokio::time::Instant::now();
    let t0: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    let clock: crate::controller::Clock = Arc::new(move || {
        t0.checked_add(jiff::SignedDuration::try_from(tokio::time::Instant::now() - start).unwrap()).unwrap()
    });
    let options = crate::controller::Options { settings, clock, ..crate::controller::Options::default() };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let operator = tokio::spawn(crate::controller::run(client.clone(), options, async move {
        let _ = stopped.await;
    }));
    let mut states = (None, serde_json::Value::Null);
    for _ in 0..60 {
        let crm = keys.get("crm").await.unwrap().status.and_then(|s| s.state);
        let broken = raw.get("broken").await.unwrap().data["status"]["conditions"][0]["reason"].clone();
        states = (crm, broken);
        if states.0 == Some(KeyState::Active) && states.1 == "InvalidSpec" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    stop.send(()).unwrap();
    operator.await.unwrap();
    assert_eq!(
        states,
        (Some(KeyState::Active), json!("InvalidSpec")),
        "the valid key converges, the broken one reports"
    );
}

#[tokio::test]
async fn a_deleted_apikey_the_types_cannot_read_is_let_go_not_left_terminating() {
    // Stored before a CRD tightened its rules: seeded past admission, with the operator's finalizer.
    let bad: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKey",
        "metadata": { "name": "broken", "namespace": NS, "uid": "u-broken", "finalizers": [crate::plan::FINALIZER] },
        "spec": { "keySet": "default" },
    }))
    .unwrap();
    let client = keyward_testkit::fakeapi::FakeCluster::new().with_object(bad).client().await.unwrap();
    let raw: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &api_resource());
    raw.delete("broken", &kube::api::DeleteParams::default()).await.unwrap();
    let held = raw.get("broken").await.expect("the finalizer holds it");
    assert!(held.metadata.deletion_timestamp.is_some());

    let clock: crate::controller::Clock = Arc::new(|| super::harness::T0.parse().unwrap());
    let publisher = Arc::new(crate::controller::Publisher::new(
        client.clone(),
        clock.clone(),
        std::time::Duration::from_millis(10),
    ));
    let ctx = Arc::new(crate::controller::Context::with(
        client.clone(),
        Settings::default(),
        publisher,
        clock,
        crate::controller::os_minter(),
    ));
    let slim: crate::api::ApiKey = serde_json::from_value(json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKey",
        "metadata": { "name": "broken", "namespace": NS, "uid": "u-broken" },
        "spec": { "scopes": [] },
    }))
    .unwrap();

    reconcile(Arc::new(slim), ctx).await.unwrap();

    assert!(raw.get_opt("broken").await.unwrap().is_none(), "finalizer released, object gone");
}
