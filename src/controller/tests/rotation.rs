//! Rotation through the API: publish next, swap after the delay, retire after grace; the rotate annotation.

use std::time::Duration;

use jiff::SignedDuration;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::api::KeyState;
use crate::plan::{DATA_NEXT_TOKEN, DATA_TOKEN, Settings};
use crate::token::KeyHash;

use super::examples::{CRM, ROTATING};
use super::harness::{harness, hash_of};

#[tokio::test]
async fn rotation_publishes_the_next_hash_swaps_after_the_delay_and_retires_after_grace() {
    let h = harness(Settings::default()).await;
    h.create(ROTATING).await;
    h.settle_ready("crm").await;
    let first = h.secret_token("crm-apikey", DATA_TOKEN).await.unwrap();

    h.advance(SignedDuration::from_hours(24 * 30));
    let action = h.settle("crm").await;
    assert_eq!(action, kube::runtime::controller::Action::requeue(Duration::from_secs(5)), "looks for the hash");
    h.advance(SignedDuration::from_secs(5));
    let action = h.settle("crm").await;
    let next = h.secret_token("crm-apikey", DATA_NEXT_TOKEN).await.expect("next token persisted first");
    assert_eq!(h.secret_token("crm-apikey", DATA_TOKEN).await.unwrap(), first, "no swap yet");
    let hashes: Vec<KeyHash> = h.published("default").await.iter().map(|r| r.hash).collect();
    assert!(hashes.contains(&hash_of(&first)) && hashes.contains(&hash_of(&next)), "both published: {hashes:?}");
    assert_eq!(action, kube::runtime::controller::Action::requeue(Duration::from_secs(120)));

    h.advance(SignedDuration::from_secs(120));
    h.settle("crm").await;
    assert_eq!(h.secret_token("crm-apikey", DATA_TOKEN).await.unwrap(), next, "swapped");
    assert_eq!(h.secret_token("crm-apikey", DATA_NEXT_TOKEN).await, None, "next-token removed by the swap");
    assert_eq!(h.published("default").await.len(), 2, "previous token still valid in its grace period");

    h.advance(SignedDuration::from_hours(1));
    h.settle("crm").await;
    let hashes: Vec<KeyHash> = h.published("default").await.iter().map(|r| r.hash).collect();
    assert_eq!(hashes, vec![hash_of(&next)]);
    let reasons = h.event_reasons().await;
    for reason in ["Created", "RotationStarted", "Swapped", "PreviousRetired"] {
        assert!(reasons.contains(&reason.to_owned()), "missing Event {reason} in {reasons:?}");
    }
    assert_eq!(h.minted.lock().unwrap().len(), 2);
    assert_eq!(h.get("crm").await.status.unwrap().state, Some(KeyState::Active));
}

#[tokio::test]
async fn a_new_rotate_annotation_value_rotates_once_and_reapplying_it_does_nothing() {
    let h = harness(Settings::default()).await;
    h.create(CRM).await;
    h.settle_ready("crm").await;
    let first = h.secret_token("crm-apikey", DATA_TOKEN).await.unwrap();
    let annotate = json!({ "metadata": { "annotations": { crate::api::ROTATE_ANNOTATION: "2026-01-01" } } });
    h.keys().patch("crm", &PatchParams::default(), &Patch::Merge(&annotate)).await.unwrap();

    h.settle("crm").await;
    h.advance(SignedDuration::from_secs(5));
    h.settle("crm").await;
    h.advance(SignedDuration::from_mins(2));
    h.settle("crm").await;
    let second = h.secret_token("crm-apikey", DATA_TOKEN).await.unwrap();
    assert_ne!(first, second, "rotated");

    h.keys().patch("crm", &PatchParams::default(), &Patch::Merge(&annotate)).await.unwrap();
    h.advance(SignedDuration::from_mins(5));
    h.settle("crm").await;
    assert_eq!(h.secret_token("crm-apikey", DATA_TOKEN).await.unwrap(), second, "same value, no rotation");
    assert_eq!(h.minted.lock().unwrap().len(), 2);
}
