//! The key set as stored: coalesced writes, shard clean-up, generations.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;

use crate::controller::Publisher;
use crate::keyset::KeySetId;
use crate::plan::Settings;

use super::examples::CRM;
use super::harness::{NS, harness};

#[tokio::test]
async fn many_keys_changing_together_cause_one_coalesced_key_set_write() {
    let h = harness(Settings::default()).await;
    for i in 0..20 {
        h.create(&CRM.replace("name: crm", &format!("name: crm-{i}"))).await;
    }
    for i in 0..20 {
        h.reconcile(&format!("crm-{i}")).await;
    }
    let before = h.write_count();

    h.ctx.publisher.flush().await;

    let shard_writes = h.tap.writes.lock().unwrap()[before..].iter().filter(|(t, _)| t.contains("ConfigMap")).count();
    assert_eq!(shard_writes, 1, "one shard write for 20 keys");
    assert_eq!(h.published("default").await.len(), 20);
}

#[tokio::test]
async fn shards_no_longer_needed_are_deleted() {
    let h = harness(Settings::default()).await;
    let small = Arc::new(
        Publisher::new(h.client.clone(), h.ctx.clock.clone(), Duration::from_millis(10)).with_max_shard_bytes(1024),
    );
    for i in 0..40 {
        h.create(&CRM.replace("name: crm", &format!("name: crm-{i}"))).await;
        h.reconcile(&format!("crm-{i}")).await;
    }
    // Until Ready the tokens live in the context's publisher only; then status records them.
    h.ctx.publisher.flush().await;
    h.advance(h.ctx.settings.propagation_delay);
    for i in 0..40 {
        h.reconcile(&format!("crm-{i}")).await;
    }
    let id = KeySetId { namespace: NS.to_owned(), name: "default".to_owned() };
    small.publish_now(&id).await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(h.client.clone(), NS);
    let count =
        || async { cms.list(&ListParams::default().labels("keyward.dev/keyset=default")).await.unwrap().items.len() };
    assert!(count().await > 1, "several shards at 1 KiB");
    let first = cms.get("keyset-default-1").await.unwrap();
    assert!(first.binary_data.is_some_and(|b| b.contains_key("default.1.keyset")), "multi-shard sets are gzip");

    for i in 0..40 {
        h.patch_spec(&format!("crm-{i}"), json!({ "revoked": true })).await;
    }
    small.publish_now(&id).await.unwrap();

    assert_eq!(count().await, 1, "an empty set keeps exactly one shard");
    let last = cms.get("keyset-default-1").await.unwrap();
    assert!(last.binary_data.unwrap_or_default().is_empty(), "the gzip key of a formerly large set is gone");
    assert_eq!(last.data.unwrap_or_default().keys().collect::<Vec<_>>(), vec!["default.1.keyset"]);
}

#[tokio::test]
async fn a_stored_key_set_with_a_missing_shard_counts_as_publishing_nothing() {
    let mut h = harness(Settings::default()).await;
    h.create(CRM).await;
    h.settle_ready("crm").await;
    let cms: Api<ConfigMap> = Api::namespaced(h.client.clone(), NS);
    let text = cms.get("keyset-default-1").await.unwrap().data.unwrap()["default.1.keyset"].clone();
    assert!(text.contains("shard=1/1"), "{text}");
    let broken = json!({ "data": { "default.1.keyset": text.replace("shard=1/1", "shard=1/2") } });
    cms.patch("keyset-default-1", &PatchParams::default(), &Patch::Merge(broken)).await.unwrap();
    h.restart();

    let id = KeySetId { namespace: NS.to_owned(), name: "default".to_owned() };
    let published = h.ctx.publisher.published(&id).await.unwrap();

    assert!(published.is_empty(), "verifiers refuse an incomplete set: {published:?}");
}

pub(super) fn generation_of(text: &str) -> u64 {
    let field = text.split_whitespace().find_map(|w| w.strip_prefix("generation=")).expect("header has a generation");
    field.parse().expect("generation is a number")
}

#[tokio::test]
async fn the_key_set_generation_never_goes_backwards_even_after_a_hand_edit() {
    let h = harness(Settings::default()).await;
    h.create(CRM).await;
    h.settle_ready("crm").await;
    let cms: Api<ConfigMap> = Api::namespaced(h.client.clone(), NS);
    let shard = || async { cms.get("keyset-default-1").await.unwrap().data.unwrap()["default.1.keyset"].clone() };
    for active in [false, true] {
        h.patch_spec("crm", json!({ "active": active })).await;
        h.settle("crm").await;
    }
    let before = generation_of(&shard().await);
    assert!(before >= 3, "created, disabled, enabled: {before}");
    let rewound = json!({ "data": { "default.1.keyset": "keyward-keyset v1 keyset=team-a/default generation=1 shard=1/1 records=0\n" } });
    cms.patch("keyset-default-1", &PatchParams::default(), &Patch::Merge(rewound)).await.unwrap();

    h.ctx.publisher.publish_now(&KeySetId { namespace: NS.to_owned(), name: "default".to_owned() }).await.unwrap();

    let after = generation_of(&shard().await);
    assert!(after > before, "generation went from {before} to {after}");
    assert_eq!(h.published("default").await.len(), 1);
}

#[tokio::test]
async fn a_key_set_at_the_largest_generation_is_not_wrapped_around() {
    let h = harness(Settings::default()).await;
    h.create(CRM).await;
    h.settle_ready("crm").await;
    let cms: Api<ConfigMap> = Api::namespaced(h.client.clone(), NS);
    let last = format!("keyward-keyset v1 keyset=team-a/default generation={} shard=1/1 records=0\n", u64::MAX);
    cms.patch(
        "keyset-default-1",
        &PatchParams::default(),
        &Patch::Merge(json!({ "data": { "default.1.keyset": last } })),
    )
    .await
    .unwrap();

    let result = h.ctx.publisher.publish_now(&KeySetId { namespace: NS.to_owned(), name: "default".to_owned() }).await;

    assert!(matches!(result, Err(crate::controller::Error::GenerationExhausted(_))), "{result:?}");
}
