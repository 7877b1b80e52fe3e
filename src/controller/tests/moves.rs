//! `keySet` and `secretName` changes through the API.

use jiff::SignedDuration;
use serde_json::json;

use crate::plan::{DATA_TOKEN, Settings};
use crate::token::KeyHash;

use super::examples::{CRM, ROTATING};
use super::harness::{harness, hash_of};

#[tokio::test]
async fn moving_a_key_to_another_key_set_removes_it_from_the_old_one_in_the_same_reconcile() {
    let h = harness(Settings::default()).await;
    h.create(CRM).await;
    h.settle("crm").await;
    let token = h.secret_token("crm-apikey", DATA_TOKEN).await.unwrap();

    h.patch_spec("crm", json!({ "keySet": "partners" })).await;
    h.reconcile("crm").await;
    assert!(h.published("default").await.is_empty(), "gone from the old set before any coalesced publish");
    h.ctx.publisher.flush().await;

    let moved: Vec<KeyHash> = h.published("partners").await.iter().map(|r| r.hash).collect();
    assert_eq!(moved, vec![hash_of(&token)], "same token, new audience");
}

#[tokio::test]
async fn after_a_secret_name_change_the_old_secret_stays_until_the_previous_token_retires() {
    let h = harness(Settings::default()).await;
    h.create(ROTATING).await;
    h.settle_ready("crm").await;
    let old_token = h.secret_token("crm-apikey", DATA_TOKEN).await.unwrap();

    h.patch_spec("crm", json!({ "secretName": "crm-token" })).await;
    h.settle_ready("crm").await;

    assert_eq!(h.secret_token("crm-apikey", DATA_TOKEN).await, Some(old_token.clone()), "consumers may still read it");
    let new_token = h.secret_token("crm-token", DATA_TOKEN).await.expect("a new token in the new Secret");
    let hashes: Vec<KeyHash> = h.published("default").await.iter().map(|r| r.hash).collect();
    assert!(hashes.contains(&hash_of(&old_token)) && hashes.contains(&hash_of(&new_token)), "{hashes:?}");
    assert_eq!(h.get("crm").await.status.unwrap().conditions[0].status, "True");

    h.advance(SignedDuration::from_hours(1));
    h.settle("crm").await;

    assert!(h.secret("crm-apikey").await.is_none(), "deleted when the grace period ended");
    let hashes: Vec<KeyHash> = h.published("default").await.iter().map(|r| r.hash).collect();
    assert_eq!(hashes, vec![hash_of(&new_token)]);
}
