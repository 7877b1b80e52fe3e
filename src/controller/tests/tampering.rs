//! Objects changed behind the operator's back: Secrets and key-set shards.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::api::KeyState;
use crate::controller::reconcile;
use crate::keyset::KeySetId;
use crate::plan::{DATA_TOKEN, Settings};
use crate::token::KeyHash;

use super::examples::CRM;
use super::harness::{NS, harness, hash_of};

#[tokio::test]
async fn a_secret_that_belongs_to_someone_else_is_never_overwritten() {
    let h = harness(Settings::default()).await;
    let foreign: Secret = serde_yaml::from_str(
        "
metadata: {name: crm-apikey, namespace: team-a}
stringData: {token: theirs}
",
    )
    .unwrap();
    Api::<Secret>::namespaced(h.client.clone(), NS).create(&kube::api::PostParams::default(), &foreign).await.unwrap();
    h.create(CRM).await;

    let action = h.settle("crm").await;

    let status = h.get("crm").await.status.unwrap();
    assert_eq!((status.state, status.conditions[0].reason.as_str()), (Some(KeyState::Error), "SecretConflict"));
    let secret = h.secret("crm-apikey").await.unwrap();
    assert!(secret.metadata.owner_references.is_none(), "left as it was");
    assert!(h.minted.lock().unwrap().is_empty());
    assert_eq!(action, kube::runtime::controller::Action::requeue(Duration::from_secs(300)), "no hot loop");
}

#[tokio::test]
async fn a_deleted_secret_is_repaired_and_the_repair_is_reported() {
    let h = harness(Settings::default()).await;
    h.create(CRM).await;
    h.settle("crm").await;
    let old = h.secret_token("crm-apikey", DATA_TOKEN).await.unwrap();
    Api::<Secret>::namespaced(h.client.clone(), NS)
        .delete("crm-apikey", &kube::api::DeleteParams::default())
        .await
        .unwrap();

    h.settle("crm").await;

    let new = h.secret_token("crm-apikey", DATA_TOKEN).await.expect("Secret recreated");
    assert_ne!(new, old);
    let hashes: Vec<KeyHash> = h.published("default").await.iter().map(|r| r.hash).collect();
    assert!(hashes.contains(&hash_of(&new)) && hashes.contains(&hash_of(&old)), "old token keeps its grace period");
    let warning = h.events().await.into_iter().find(|e| e.reason.as_deref() == Some("SecretRepaired")).expect("Event");
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
}

#[tokio::test]
async fn a_hand_edited_key_set_shard_is_rewritten() {
    let h = harness(Settings::default()).await;
    h.create(CRM).await;
    h.settle("crm").await;
    let cms: Api<ConfigMap> = Api::namespaced(h.client.clone(), NS);
    let planted = json!({ "data": { "default.1.keyset": "keyward-keyset v1 keyset=team-a/default generation=9 shard=1/1 records=0\n", "evil.keyset": "x" } });
    cms.patch("keyset-default-1", &PatchParams::default(), &Patch::Merge(planted)).await.unwrap();

    h.ctx.publisher.publish_now(&KeySetId { namespace: NS.to_owned(), name: "default".to_owned() }).await.unwrap();

    let data = cms.get("keyset-default-1").await.unwrap().data.unwrap();
    assert_eq!(data.keys().collect::<Vec<_>>(), vec!["default.1.keyset"], "foreign keys removed");
    assert_eq!(h.published("default").await.len(), 1);
}

#[tokio::test]
async fn a_held_token_whose_secret_is_taken_over_leaves_the_key_set_at_once() {
    let h = harness(Settings::default()).await;
    h.create(CRM).await;
    h.settle("crm").await;
    assert_eq!(h.published("default").await.len(), 1);
    let secrets: Api<Secret> = Api::namespaced(h.client.clone(), NS);
    let disowned = json!({ "metadata": { "ownerReferences": null } });
    secrets.patch("crm-apikey", &PatchParams::default(), &Patch::Merge(disowned)).await.unwrap();

    h.inject("status crm", false);

    let result = reconcile(Arc::new(h.get("crm").await), h.ctx.clone()).await;

    assert!(result.is_err(), "the status write failed");
    assert!(h.published("default").await.is_empty(), "the held token was let go and withdrawn before any write");
    h.reconcile("crm").await;
    let status = h.get("crm").await.status.unwrap();
    assert_eq!((status.state, status.conditions[0].reason.as_str()), (Some(KeyState::Error), "SecretConflict"));
    assert!(h.published("default").await.is_empty());
}
