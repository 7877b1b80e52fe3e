//! Key-set gates through the API: a KeySet's access published into every shard, reported on the
//! KeySet (status, Events), held through rotation, lifted by `Enabled` or by deleting the KeySet.

use std::sync::Arc;

use jiff::SignedDuration;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::api::{KeySet, KeySetStatus};
use crate::configmap::{label_selector, read_shards};
use crate::keyset::{Access, KeySetId, assemble};
use crate::plan::{DATA_TOKEN, Settings};

use super::super::keysets::{KeySetContext, reconcile};
use super::examples::{CRM, ROTATING};
use super::harness::{Harness, NS, harness, hash_of};

fn keysets(h: &Harness) -> Api<KeySet> {
    Api::namespaced(h.client.clone(), NS)
}

async fn create_keyset(h: &Harness, name: &str, access: &str) {
    let set: KeySet = serde_json::from_value(json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "KeySet",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"access": access},
    }))
    .unwrap();
    keysets(h).create(&PostParams::default(), &set).await.unwrap();
}

async fn set_access(h: &Harness, name: &str, access: &str) {
    let patch = json!({ "spec": { "access": access } });
    keysets(h).patch(name, &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();
}

/// One KeySet reconcile, as the KeySet controller runs it.
async fn reconcile_keyset(h: &Harness, name: &str) {
    let ctx = KeySetContext::from_context(&h.ctx);
    let set = keysets(h).get(name).await.unwrap();
    reconcile(Arc::new(set), ctx).await.unwrap();
}

async fn status(h: &Harness, name: &str) -> KeySetStatus {
    keysets(h).get(name).await.unwrap().status.unwrap_or_default()
}

/// The gate the stored shards of `name` carry, read as a verifier reads them.
async fn published_access(h: &Harness, name: &str) -> Access {
    let cms: Api<ConfigMap> = Api::namespaced(h.client.clone(), NS);
    let list = cms.list(&ListParams::default().labels(&label_selector(name))).await.unwrap();
    let sets = assemble(read_shards(&list.items).unwrap()).unwrap();
    let id = KeySetId { namespace: NS.into(), name: name.into() };
    sets.into_iter().find(|s| s.id == id).expect("the key set is published").access
}

/// The Events about KeySets, oldest first.
async fn events_about_keysets(h: &Harness) -> Vec<(String, String)> {
    let mut events: Vec<_> = h
        .events()
        .await
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("KeySet"))
        .collect();
    events.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    events.into_iter().map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default())).collect()
}

#[tokio::test]
async fn a_gate_is_published_reported_and_lifted_without_touching_the_key() {
    let h = harness(Settings::default()).await;
    h.create(CRM).await;
    h.settle_ready("crm").await;
    let token = h.secret_token("crm-apikey", DATA_TOKEN).await.unwrap();
    assert_eq!(published_access(&h, "default").await, Access::Enabled, "no KeySet, no gate");

    create_keyset(&h, "default", "PaymentRequired").await;
    reconcile_keyset(&h, "default").await;
    assert_eq!(published_access(&h, "default").await, Access::PaymentRequired);
    let status = status(&h, "default").await;
    assert_eq!((status.published_access.as_deref(), status.keys), (Some("PaymentRequired"), Some(1)));
    assert_eq!(status.conditions[0].status, "True");
    assert_eq!(status.observed_generation, keysets(&h).get("default").await.unwrap().metadata.generation);
    assert_eq!(h.published("default").await[0].hash, hash_of(&token), "the key is still published");

    // A reconcile with nothing new writes no second Event.
    reconcile_keyset(&h, "default").await;
    set_access(&h, "default", "Disabled").await;
    reconcile_keyset(&h, "default").await;
    assert_eq!(published_access(&h, "default").await, Access::Disabled);

    set_access(&h, "default", "Enabled").await;
    reconcile_keyset(&h, "default").await;
    assert_eq!(published_access(&h, "default").await, Access::Enabled);
    assert_eq!(h.secret_token("crm-apikey", DATA_TOKEN).await.unwrap(), token, "the same token, no new one");
    assert_eq!(h.minted.lock().unwrap().len(), 1);

    let events = events_about_keysets(&h).await;
    let reasons: Vec<&str> = events.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(reasons, ["PaymentRequired", "AccessDisabled", "AccessEnabled"], "{events:?}");
    assert!(events[0].1.contains("402 payment_required"), "{events:?}");
    for (_, note) in &events {
        assert!(!note.contains(&token), "no token in Events");
    }
}

#[tokio::test]
async fn a_key_rotating_while_its_set_is_gated_rotates_and_stays_gated() {
    let h = harness(Settings::default()).await;
    h.create(ROTATING).await;
    h.settle_ready("crm").await;
    let first = h.secret_token("crm-apikey", DATA_TOKEN).await.unwrap();
    create_keyset(&h, "default", "PaymentRequired").await;
    reconcile_keyset(&h, "default").await;

    h.advance(SignedDuration::from_hours(24 * 30));
    h.settle("crm").await;
    h.advance(SignedDuration::from_secs(5));
    h.settle("crm").await;
    h.advance(SignedDuration::from_secs(120));
    h.settle("crm").await;
    let next = h.secret_token("crm-apikey", DATA_TOKEN).await.unwrap();
    assert_ne!(next, first, "the rotation went ahead");
    let hashes: Vec<_> = h.published("default").await.iter().map(|r| r.hash).collect();
    assert!(hashes.contains(&hash_of(&first)) && hashes.contains(&hash_of(&next)), "both published");
    assert_eq!(published_access(&h, "default").await, Access::PaymentRequired, "every rebuild keeps the gate");

    set_access(&h, "default", "Enabled").await;
    reconcile_keyset(&h, "default").await;
    assert_eq!(published_access(&h, "default").await, Access::Enabled);
    assert_eq!(h.secret_token("crm-apikey", DATA_TOKEN).await.unwrap(), next);
}

#[tokio::test]
async fn deleting_the_keyset_lifts_the_gate_at_the_next_rebuild() {
    let h = harness(Settings::default()).await;
    h.create(CRM).await;
    h.settle_ready("crm").await;
    create_keyset(&h, "default", "Disabled").await;
    reconcile_keyset(&h, "default").await;
    assert_eq!(published_access(&h, "default").await, Access::Disabled);

    keysets(&h).delete("default", &DeleteParams::default()).await.unwrap();
    // What the KeySet watch does on the deletion.
    h.ctx.publisher.request(KeySetId { namespace: NS.into(), name: "default".into() });
    h.ctx.publisher.flush().await;
    assert_eq!(published_access(&h, "default").await, Access::Enabled);
}

/// An access the types do not know (admission would refuse it; the in-memory API does not check
/// KeySets) is published as Disabled, with one Warning Event and a condition naming `spec.access`.
#[tokio::test]
async fn an_unknown_access_closes_the_set_and_says_which_field_is_wrong() {
    let h = harness(Settings::default()).await;
    h.create(CRM).await;
    h.settle_ready("crm").await;
    create_keyset(&h, "default", "Free").await;
    reconcile_keyset(&h, "default").await;
    reconcile_keyset(&h, "default").await;
    assert_eq!(published_access(&h, "default").await, Access::Disabled, "fails closed");
    let status = status(&h, "default").await;
    assert_eq!(
        (status.conditions[0].status.as_str(), status.conditions[0].reason.as_str()),
        ("False", "InvalidAccess")
    );
    assert!(status.conditions[0].message.contains("spec.access"), "{:?}", status.conditions[0]);
    let events = events_about_keysets(&h).await;
    let warnings = events.iter().filter(|(r, _)| r == "InvalidAccess").count();
    assert_eq!(warnings, 1, "one Warning per generation, not per reconcile: {events:?}");
    assert!(events.iter().all(|(_, note)| !note.contains("Free")), "the bad value is not echoed");
}

/// A KeySet no ApiKey can name (a dot is fine in an object name, not in `spec.keySet`) publishes nothing.
#[tokio::test]
async fn a_keyset_whose_name_is_no_key_set_name_is_refused_by_name() {
    let h = harness(Settings::default()).await;
    create_keyset(&h, "paid.eu", "PaymentRequired").await;
    reconcile_keyset(&h, "paid.eu").await;
    let status = status(&h, "paid.eu").await;
    assert_eq!((status.conditions[0].status.as_str(), status.conditions[0].reason.as_str()), ("False", "InvalidName"));
    assert!(status.conditions[0].message.contains("metadata.name"));
    assert_eq!(status.published_access, None);
    let cms: Api<ConfigMap> = Api::namespaced(h.client.clone(), NS);
    assert!(cms.list(&ListParams::default()).await.unwrap().items.is_empty(), "nothing published");
    assert_eq!(events_about_keysets(&h).await.len(), 1);
}
