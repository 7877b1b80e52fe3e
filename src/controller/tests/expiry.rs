//! Expiry through the API: tokens cleaned up, the ApiKey deleted after its retention.

use std::time::Duration;

use jiff::SignedDuration;

use crate::api::KeyState;
use crate::plan::{DATA_TOKEN, Settings};

use super::examples::CRM;
use super::harness::harness;

#[tokio::test]
async fn at_expiry_the_token_is_cleaned_up_and_the_key_marked_expired() {
    let h = harness(Settings::default()).await;
    h.create(&format!("{CRM}  expiresAt: \"2026-01-01T02:00:00Z\"\n")).await;
    let action = h.settle_ready("crm").await;
    // Ready 125 s after creation (publish poll plus propagation delay).
    assert_eq!(action, kube::runtime::controller::Action::requeue(Duration::from_secs(7_075)), "requeued at expiry");

    h.advance(SignedDuration::from_secs(7_075));
    h.reconcile("crm").await;

    assert_eq!(h.get("crm").await.status.unwrap().state, Some(KeyState::Expired));
    assert_eq!(h.secret_token("crm-apikey", DATA_TOKEN).await, None);
    assert!(h.published("default").await.is_empty());
}

#[tokio::test]
async fn an_expired_key_is_deleted_after_its_retention_and_its_finalizer_released() {
    let h = harness(Settings::default()).await;
    h.create(&format!("{CRM}  expiresAt: \"2026-01-01T01:00:00Z\"\n  retainExpiredFor: 1h\n")).await;
    h.settle("crm").await;
    h.advance(SignedDuration::from_hours(1));
    let action = h.settle("crm").await;
    assert_eq!(action, kube::runtime::controller::Action::requeue(Duration::from_secs(3_600)), "until retention ends");

    h.advance(SignedDuration::from_hours(1));
    h.settle("crm").await;

    assert!(h.keys().get_opt("crm").await.unwrap().is_none(), "deleted (the fake ignores finalizers)");
    assert!(h.event_reasons().await.contains(&"Deleted".to_owned()));
}
