//! Disabling and enabling through the API.

use serde_json::json;

use crate::plan::{DATA_TOKEN, Settings};

use super::examples::CRM;
use super::harness::harness;

#[tokio::test]
async fn disabling_marks_the_record_inactive_at_once_and_enabling_restores_the_same_token() {
    let h = harness(Settings::default()).await;
    h.create(CRM).await;
    h.settle("crm").await;
    let token = h.secret_token("crm-apikey", DATA_TOKEN).await.unwrap();

    h.patch_spec("crm", json!({ "active": false })).await;
    h.reconcile("crm").await;
    assert_eq!(h.published("default").await[0].state, crate::keyset::RecordState::Inactive);

    h.patch_spec("crm", json!({ "active": true })).await;
    h.settle("crm").await;
    assert_eq!(h.published("default").await[0].state, crate::keyset::RecordState::Active);
    assert_eq!(h.secret_token("crm-apikey", DATA_TOKEN).await.unwrap(), token);
}
