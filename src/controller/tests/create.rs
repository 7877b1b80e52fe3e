//! Creating keys: an owned Secret, the hash published, Ready; what it costs in writes; crashes on the way.

use std::collections::BTreeMap;

use jiff::SignedDuration;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, ResourceExt};
use serde_json::Value;

use crate::api::KeyState;
use crate::keyset::KeySetId;
use crate::plan::{DATA_TOKEN, FINALIZER, Settings};
use crate::token::KeyHash;

use super::examples::{CRM, ROTATING};
use super::harness::{Harness, NS, harness, hash_of};

#[tokio::test]
async fn creating_an_apikey_writes_an_owned_secret_publishes_the_hash_and_becomes_ready() {
    let h = harness(Settings::default()).await;
    let created = h.create(CRM).await;

    h.settle("crm").await;
    assert!(h.get("crm").await.status.is_none(), "no status write before verifiers can have the hash");
    assert_eq!(h.published("default").await.len(), 1, "published from the publisher's memory");
    h.settle_ready("crm").await;

    let secret = h.secret("crm-apikey").await.expect("Secret written");
    let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("ApiKey", created.metadata.uid.as_deref().unwrap()));
    let labels = secret.metadata.labels.clone().unwrap();
    assert_eq!(labels.get("app.kubernetes.io/managed-by").map(String::as_str), Some("keyward"));
    assert_eq!(labels.get("keyward.dev/apikey").map(String::as_str), Some("crm"));
    let token = h.secret_token("crm-apikey", DATA_TOKEN).await.unwrap();
    assert!(token.starts_with("acme_live_"));

    let key = h.get("crm").await;
    let status = key.status.clone().unwrap();
    assert_eq!(status.state, Some(KeyState::Active));
    assert_eq!(status.conditions[0].status, "True");
    assert_eq!(status.current_key.as_ref().unwrap().key_id, hash_of(&token).key_id().to_string());
    assert!(key.finalizers().contains(&FINALIZER.to_owned()));

    let records = h.published("default").await;
    assert_eq!(records.iter().map(|r| r.hash).collect::<Vec<_>>(), vec![hash_of(&token)]);
    let cm = Api::<ConfigMap>::namespaced(h.client.clone(), NS).get("keyset-default-1").await.unwrap();
    assert!(cm.data.unwrap().contains_key("default.1.keyset"));
    assert!(h.event_reasons().await.contains(&"Created".to_owned()));
    assert_eq!(h.minted.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn reconciling_a_converged_apikey_writes_nothing() {
    let h = harness(Settings::default()).await;
    h.create(ROTATING).await;
    h.settle_ready("crm").await;
    let before = h.write_count();

    let action = h.settle("crm").await;
    h.ctx.publisher.publish_now(&KeySetId { namespace: NS.to_owned(), name: "default".to_owned() }).await.unwrap();

    let after: Vec<String> = h.tap.writes.lock().unwrap()[before..].iter().map(|(t, _)| t.clone()).collect();
    assert!(after.is_empty(), "expected no writes, got {after:?}");
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(crate::controller::MAX_REQUEUE),
        "30 days away, capped"
    );
}

/// What a recorded write was aimed at, by kind of write.
fn write_kind(target: &str) -> &'static str {
    if target.starts_with("status ") {
        "status"
    } else if target.contains(" Secret ") {
        "Secret"
    } else if target.contains(" ConfigMap ") {
        "key-set shard"
    } else if target.contains(" Event ") {
        "Event"
    } else if target.starts_with("patch  ") {
        "ApiKey metadata" // the finalizer's JSON patch
    } else {
        "other"
    }
}

fn writes_by_kind(h: &Harness, from: usize) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for (target, _) in &h.tap.writes.lock().unwrap()[from..] {
        *counts.entry(write_kind(target)).or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn creating_keys_costs_a_finalizer_a_secret_one_status_write_and_one_event_per_key_plus_coalesced_shards() {
    const KEYS: usize = 5;
    let h = harness(Settings::default()).await;
    let names: Vec<String> = (0..KEYS).map(|i| format!("crm-{i}")).collect();
    for name in &names {
        h.create(&CRM.replace("name: crm", &format!("name: {name}"))).await;
    }
    let created = h.write_count();

    // As the Controller runs them: each key reconciled, the publisher's coalesced flush,
    // the look a publish poll later, and the one at Ready.
    for name in &names {
        h.reconcile(name).await;
    }
    h.ctx.publisher.flush().await;
    for step in [h.ctx.settings.publish_poll, h.ctx.settings.propagation_delay] {
        h.advance(step);
        for name in &names {
            h.settle(name).await;
        }
    }

    for name in &names {
        let status = h.get(name).await.status.unwrap();
        assert_eq!((status.state, status.conditions[0].status.as_str()), (Some(KeyState::Active), "True"), "{name}");
    }
    let expected = BTreeMap::from([
        ("ApiKey metadata", KEYS),
        ("Secret", KEYS),
        ("status", KEYS),
        ("Event", KEYS),
        ("key-set shard", 1),
    ]);
    let targets: Vec<String> = h.tap.writes.lock().unwrap()[created..].iter().map(|(t, _)| t.clone()).collect();
    assert_eq!(writes_by_kind(&h, created), expected, "the operator's writes: {targets:#?}");

    let before = h.write_count();
    h.advance(SignedDuration::from_hours(1));
    for name in &names {
        h.settle(name).await;
    }
    assert_eq!(writes_by_kind(&h, before), BTreeMap::new(), "converged keys write nothing");
}

#[tokio::test]
async fn stopping_the_operator_after_any_write_of_the_creation_path_mints_once_and_is_never_ready_early() {
    let delay = Settings::default().propagation_delay;
    for crash_after in 0..6 {
        let mut h = harness(Settings::default()).await;
        h.create(CRM).await;
        *h.tap.budget.lock().unwrap() = Some(crash_after);
        let mut crashed = false;
        // Since when the Secret's token has been in the stored key set without a break.
        let mut in_key_set_since: Option<jiff::Timestamp> = None;
        for advance in [0, 5, 120, 5, 120] {
            h.advance(SignedDuration::from_secs(advance));
            for _ in 0..5 {
                let settled = h.try_settle("crm").await;
                let token = h.secret_token("crm-apikey", DATA_TOKEN).await;
                let published = h.published("default").await;
                let now = *h.clock.lock().unwrap();
                match token.filter(|t| published.iter().any(|r| r.hash == hash_of(t))) {
                    Some(_) => in_key_set_since = in_key_set_since.or(Some(now)),
                    None => in_key_set_since = None,
                }
                let status = h.get("crm").await.status;
                if let Some(status) = status.filter(|s| s.conditions[0].status == "True") {
                    let published_at = status.current_key.as_ref().and_then(|k| k.published_at.as_ref()).map(|t| t.0);
                    let since = in_key_set_since.expect("a Ready key's token is in the key set");
                    assert!(
                        published_at.is_some_and(|p| p >= since && p.checked_add(delay).unwrap() <= now),
                        "crash after write {crash_after}: Ready at {now} with publishedAt {published_at:?}, in the key set since {since}"
                    );
                }
                if settled {
                    break;
                }
                crashed = true;
                h.restart();
            }
        }
        assert!(crashed || crash_after >= 5, "crash after write {crash_after} did not happen");
        let token = h.secret_token("crm-apikey", DATA_TOKEN).await.expect("a token in the Secret");
        let published: Vec<KeyHash> = h.published("default").await.iter().map(|r| r.hash).collect();
        assert_eq!(published, vec![hash_of(&token)], "crash after write {crash_after}");
        let status = h.get("crm").await.status.unwrap();
        assert_eq!(status.state, Some(KeyState::Active), "crash after write {crash_after}");
        let writes = h.tap.writes.lock().unwrap().clone();
        let persisted: std::collections::BTreeSet<&str> =
            writes.iter().filter_map(|(_, body)| body.pointer("/data/token").and_then(Value::as_str)).collect();
        assert_eq!(persisted.len(), 1, "crash after write {crash_after}: one token ever reached the Secret");
        let statuses = writes.iter().filter(|(t, _)| t.starts_with("status ")).count();
        assert_eq!(statuses, 1, "crash after write {crash_after}: one status write, at Ready");
    }
}
