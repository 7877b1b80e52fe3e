//! Controller tests against kube-fake-client: each lifecycle path, injected faults, idempotence, no leaks.

mod generations;
pub(super) mod harness;
mod undecodable;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::SignedDuration;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use kube_fake_client::ClientBuilder;
use serde_json::{Value, json};

use crate::api::{ApiKey, KeyState};
use crate::keyset::{KeySetId, decode_shard};
use crate::plan::{DATA_NEXT_TOKEN, DATA_TOKEN, FINALIZER, Settings};
use crate::token::KeyHash;

use super::{Context, Publisher, reconcile};
use harness::{LogWriter, NS, T0, harness, hash_of};

const CRM: &str = "
apiVersion: keyward.dev/v1alpha1
kind: ApiKey
metadata: {name: crm, namespace: team-a}
spec:
  scopes: [\"orders:read\"]
  prefix: acme_live
";

const ROTATING: &str = "
apiVersion: keyward.dev/v1alpha1
kind: ApiKey
metadata: {name: crm, namespace: team-a}
spec:
  scopes: [\"orders:read\"]
  rotation: {every: 30d, gracePeriod: 1h}
";

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
    assert_eq!(action, kube::runtime::controller::Action::requeue(super::MAX_REQUEUE), "30 days away, capped");
}

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
async fn an_invalid_spec_is_reported_and_waits_for_a_change() {
    let h = harness(Settings::default()).await;
    h.create(
        "
apiVersion: keyward.dev/v1alpha1
kind: ApiKey
metadata: {name: crm, namespace: team-a}
spec:
  scopes: [\"orders:fly\"]
",
    )
    .await;

    let action = h.settle("crm").await;

    assert_eq!(action, kube::runtime::controller::Action::await_change());
    let status = h.get("crm").await.status.unwrap();
    assert_eq!(status.state, Some(KeyState::Error));
    assert_eq!(status.conditions[0].reason, "InvalidSpec");
    assert!(status.conditions[0].message.contains("spec.scopes[0]"));
    assert!(h.secret("crm-apikey").await.is_none());
    assert!(h.event_reasons().await.contains(&"InvalidSpec".to_owned()));
}

#[tokio::test]
async fn injected_conflicts_and_server_errors_converge_with_one_persisted_token() {
    let h = harness(Settings::default()).await;
    h.create(CRM).await;
    h.inject("patch Secret", false);
    h.inject("status crm", true);
    h.inject("patch ConfigMap", false);

    h.settle("crm").await;
    h.ctx.publisher.flush().await; // the failed publish was requested again
    h.settle_ready("crm").await;

    let token = h.secret_token("crm-apikey", DATA_TOKEN).await.unwrap();
    assert_eq!(h.get("crm").await.status.unwrap().state, Some(KeyState::Active));
    assert_eq!(h.published("default").await.iter().map(|r| r.hash).collect::<Vec<_>>(), vec![hash_of(&token)]);
    assert!(h.tap.faults.lock().unwrap().is_empty(), "every fault was hit");
    let persisted: std::collections::BTreeSet<String> = h
        .tap
        .writes
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(_, body)| body.pointer("/data/token").and_then(Value::as_str).map(str::to_owned))
        .collect();
    assert_eq!(persisted.len(), 1, "one token ever reached the Secret");
}

#[tokio::test]
async fn stopping_the_operator_after_any_write_and_restarting_it_converges_safely() {
    for crash_after in 0..30 {
        let mut h = harness(Settings::default()).await;
        h.create(ROTATING).await;
        *h.tap.budget.lock().unwrap() = Some(crash_after);
        let mut crashed = false;
        // Creation, rotation start, swap, retirement: each step retried after a crash.
        // Creation: publish poll, propagation delay; then rotation, poll, delay, grace.
        for advance in [0, 5, 120, 30 * 24 * 3600, 5, 120, 3600] {
            h.advance(SignedDuration::from_secs(advance));
            for _ in 0..5 {
                if h.try_settle("crm").await {
                    break;
                }
                crashed = true;
                h.restart();
            }
        }
        let total = h.tap.writes.lock().unwrap().len();
        // The last writes are Events, whose failure a reconcile survives by design.
        assert!(crashed || crash_after + 3 >= total, "crash after write {crash_after} of {total} did not happen");
        let token = h.secret_token("crm-apikey", DATA_TOKEN).await.expect("a token in the Secret");
        let published: Vec<KeyHash> = h.published("default").await.iter().map(|r| r.hash).collect();
        assert_eq!(
            published,
            vec![hash_of(&token)],
            "crash after write {crash_after}: Secret token is the published one"
        );
        assert_eq!(h.get("crm").await.status.unwrap().state, Some(KeyState::Active), "crash after write {crash_after}");
        let persisted: std::collections::BTreeSet<String> = h
            .tap
            .writes
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(_, body)| {
                ["/data/token", "/data/next-token"].map(|p| body.pointer(p).and_then(Value::as_str).map(str::to_owned))
            })
            .flatten()
            .collect();
        assert_eq!(persisted.len(), 2, "crash after write {crash_after}: one rotation persists exactly two tokens");
    }
}

#[tokio::test]
async fn deleting_an_apikey_unpublishes_it_before_the_finalizer_goes() {
    let h = harness(Settings::default()).await;
    h.create(CRM).await;
    h.settle("crm").await;
    assert_eq!(h.published("default").await.len(), 1);

    // kube-fake-client deletes at once, ignoring finalizers; what the API server
    // would do (set deletionTimestamp, keep the object) is modelled by a restart
    // from the stored objects with the timestamp set.
    let mut key = h.get("crm").await;
    key.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(T0.parse().unwrap()));
    let secret = h.secret("crm-apikey").await.unwrap();
    let shard = Api::<ConfigMap>::namespaced(h.client.clone(), NS).get("keyset-default-1").await.unwrap();
    let client = ClientBuilder::new()
        .with_resource::<ApiKey>()
        .with_status_subresource::<ApiKey>()
        .with_object(key.clone())
        .with_object(secret)
        .with_object(shard)
        .build()
        .await
        .unwrap();
    let clock: super::Clock = Arc::new(|| T0.parse().unwrap());
    let publisher = Arc::new(Publisher::new(client.clone(), clock.clone(), Duration::from_millis(10)));
    let ctx = Arc::new(Context::with(client.clone(), Settings::default(), publisher, clock, super::os_minter()));

    reconcile(Arc::new(key), ctx).await.unwrap();

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let text = cms.get("keyset-default-1").await.unwrap().data.unwrap().remove("default.1.keyset").unwrap();
    assert!(decode_shard(text.as_bytes()).unwrap().records.is_empty(), "hash removed from the key set");
    assert!(Api::<ApiKey>::namespaced(client, NS).get_opt("crm").await.unwrap().is_none(), "finalizer released");
}

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
async fn no_token_appears_in_any_write_event_status_or_log_line() {
    let logs = Arc::new(Mutex::new(Vec::<u8>::new()));
    let writer = {
        let logs = logs.clone();
        move || LogWriter(logs.clone())
    };
    let subscriber = tracing_subscriber::fmt().with_writer(writer).with_max_level(tracing::Level::TRACE).finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let h = harness(Settings::default()).await;
    h.create(ROTATING).await;
    h.settle("crm").await;
    h.advance(SignedDuration::from_hours(24 * 30));
    h.settle("crm").await;
    h.advance(SignedDuration::from_hours(2));
    h.settle("crm").await;
    Api::<Secret>::namespaced(h.client.clone(), NS)
        .delete("crm-apikey", &kube::api::DeleteParams::default())
        .await
        .unwrap();
    h.settle("crm").await;
    h.patch_spec("crm", json!({ "revoked": true })).await;
    h.settle("crm").await;

    let tokens = h.minted.lock().unwrap().clone();
    assert!(tokens.len() >= 3, "the scenario minted tokens: {}", tokens.len());
    let mut haystack = String::new();
    for (target, body) in h.tap.writes.lock().unwrap().iter() {
        let mut body = body.clone();
        // The Secret's data is the one place a token may be written.
        if target.contains("Secret")
            && let Some(map) = body.as_object_mut()
        {
            map.remove("data");
        }
        haystack.push_str(&body.to_string());
    }
    haystack.push_str(&serde_json::to_string(&h.events().await).unwrap());
    haystack.push_str(&serde_json::to_string(&h.get("crm").await).unwrap());
    haystack.push_str(&String::from_utf8(logs.lock().unwrap().clone()).unwrap());
    assert!(haystack.len() > 1000, "the scan saw the suite's output");
    for token in &tokens {
        let body = token.rsplit_once('_').unwrap().1;
        assert!(!haystack.contains(body), "a token leaked");
    }
}

#[test]
fn conflicts_retry_at_once_other_api_failures_back_off_and_the_rest_wait_long() {
    let api = |code| super::Error::Kube {
        action: "test",
        source: Box::new(kube::Error::Api(kube::core::Status::failure("x", "y").with_code(code).boxed())),
    };
    let action = |e: &super::Error| super::retry_after(e);
    assert_eq!(action(&api(409)), kube::runtime::controller::Action::requeue(Duration::from_millis(200)));
    assert_eq!(action(&api(500)), kube::runtime::controller::Action::requeue(Duration::from_secs(5)));
    assert_eq!(
        action(&super::Error::MissingField("metadata.uid")),
        kube::runtime::controller::Action::requeue(Duration::from_secs(300))
    );
}

#[test]
fn requeues_are_capped_so_distant_deadlines_never_reach_the_scheduler() {
    let now: jiff::Timestamp = T0.parse().unwrap();
    assert_eq!(super::until(now, jiff::Timestamp::MAX), super::MAX_REQUEUE);
    assert_eq!(super::until(now, now.checked_add(SignedDuration::from_millis(1500)).unwrap()), Duration::from_secs(2));
}

#[test]
fn merge_diff_nulls_cleared_fields_and_keeps_unchanged_ones_out() {
    let old = json!({ "a": 1, "b": { "c": 2, "d": 3 }, "e": [1] });
    let new = json!({ "a": 1, "b": { "c": 2 }, "e": [2], "f": "x" });
    assert_eq!(super::apply::merge_diff(&old, &new), json!({ "b": { "d": null }, "e": [2], "f": "x" }));
    let _ = BTreeMap::<String, String>::new();
}

// ---- found in review ----

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

fn generation_of(text: &str) -> u64 {
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

#[test]
fn a_failed_json_patch_test_is_retried_like_a_conflict() {
    let status = |code| kube::Error::Api(kube::core::Status::failure("test failed", "Invalid").with_code(code).boxed());
    let failed_test = super::apply::guarded("add finalizer")(status(422));
    assert!(failed_test.is_conflict(), "{failed_test}");
    assert_eq!(
        super::retry_after(&failed_test),
        kube::runtime::controller::Action::requeue(Duration::from_millis(200))
    );
    let other = super::apply::guarded("add finalizer")(status(500));
    assert!(!other.is_conflict(), "{other}");
}

#[test]
fn event_notes_are_cut_under_one_kib_at_a_character_boundary() {
    let short = "Token abc written";
    assert_eq!(super::apply::truncate_note(short), short);
    let long = "é".repeat(800);
    let cut = super::apply::truncate_note(&long);
    assert!(cut.len() < 1024, "{} bytes", cut.len());
    assert!(cut.ends_with('…') && long.starts_with(cut.trim_end_matches('…')));
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

    assert!(matches!(result, Err(super::Error::GenerationExhausted(_))), "{result:?}");
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

// ---- the creation path's writes ----

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

fn writes_by_kind(h: &harness::Harness, from: usize) -> BTreeMap<&'static str, usize> {
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
