//! Revocation through the API: unpublished within the reconcile, before anything that could fail.

use std::sync::Arc;

use serde_json::json;

use crate::api::KeyState;
use crate::controller::reconcile;
use crate::plan::{DATA_TOKEN, Settings};

use super::examples::CRM;
use super::harness::harness;

#[tokio::test]
async fn revoking_unpublishes_within_the_reconcile_and_removes_the_token() {
    let h = harness(Settings::default()).await;
    h.create(CRM).await;
    h.settle("crm").await;

    h.patch_spec("crm", json!({ "revoked": true })).await;
    h.reconcile("crm").await; // no publisher flush: revocation must not wait for coalescing

    assert!(h.published("default").await.is_empty());
    assert_eq!(h.secret_token("crm-apikey", DATA_TOKEN).await, None);
    assert_eq!(h.get("crm").await.status.unwrap().state, Some(KeyState::Revoked));
    let reasons = h.event_reasons().await;
    assert!(reasons.contains(&"Revoked".to_owned()) && reasons.contains(&"CleanedUp".to_owned()), "{reasons:?}");
}

#[tokio::test]
async fn revocation_is_published_before_the_secret_write_so_a_failing_write_cannot_keep_it_published() {
    let h = harness(Settings::default()).await;
    h.create(CRM).await;
    h.settle_ready("crm").await;
    assert!(!h.published("default").await.is_empty());
    h.patch_spec("crm", json!({ "revoked": true })).await;
    h.inject("patch Secret", false);

    let result = reconcile(Arc::new(h.get("crm").await), h.ctx.clone()).await;

    assert!(result.is_err(), "the Secret write failed: {:?}", result.map_err(|e| e.to_string()));
    assert!(h.published("default").await.is_empty(), "revoked key still published after its reconcile");
}

#[tokio::test]
async fn revoking_a_key_whose_token_is_held_unpublishes_it_within_the_reconcile() {
    let h = harness(Settings::default()).await;
    h.create(CRM).await;
    h.settle("crm").await;
    assert!(h.get("crm").await.status.is_none(), "the token is held, status not written yet");
    assert_eq!(h.published("default").await.len(), 1, "published from the publisher's memory");

    h.patch_spec("crm", json!({ "revoked": true })).await;
    h.reconcile("crm").await; // no publisher flush: revocation must not wait for coalescing

    assert!(h.published("default").await.is_empty(), "the held token was let go before the withdrawal");
    assert_eq!(h.secret_token("crm-apikey", DATA_TOKEN).await, None);
    assert_eq!(h.get("crm").await.status.unwrap().state, Some(KeyState::Revoked));
    h.ctx.publisher.flush().await;
    assert!(h.published("default").await.is_empty(), "and never comes back");
}
