//! Failing API calls and crashes: retry policy, requeue bounds, convergence with one token.

use std::time::Duration;

use jiff::SignedDuration;
use serde_json::Value;

use crate::api::KeyState;
use crate::plan::{DATA_TOKEN, Settings};
use crate::token::KeyHash;

use super::examples::{CRM, ROTATING};
use super::harness::{T0, harness, hash_of};

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

#[test]
fn conflicts_retry_at_once_other_api_failures_back_off_and_the_rest_wait_long() {
    let api = |code| crate::controller::Error::Kube {
        action: "test",
        source: Box::new(kube::Error::Api(kube::core::Status::failure("x", "y").with_code(code).boxed())),
    };
    let action = |e: &crate::controller::Error| crate::controller::retry_after(e);
    assert_eq!(action(&api(409)), kube::runtime::controller::Action::requeue(Duration::from_millis(200)));
    assert_eq!(action(&api(500)), kube::runtime::controller::Action::requeue(Duration::from_secs(5)));
    assert_eq!(
        action(&crate::controller::Error::MissingField("metadata.uid")),
        kube::runtime::controller::Action::requeue(Duration::from_secs(300))
    );
}

#[test]
fn a_failed_json_patch_test_is_retried_like_a_conflict() {
    let status = |code| kube::Error::Api(kube::core::Status::failure("test failed", "Invalid").with_code(code).boxed());
    let failed_test = crate::controller::apply::guarded("add finalizer")(status(422));
    assert!(failed_test.is_conflict(), "{failed_test}");
    assert_eq!(
        crate::controller::retry_after(&failed_test),
        kube::runtime::controller::Action::requeue(Duration::from_millis(200))
    );
    let other = crate::controller::apply::guarded("add finalizer")(status(500));
    assert!(!other.is_conflict(), "{other}");
}

#[test]
fn requeues_are_capped_so_distant_deadlines_never_reach_the_scheduler() {
    let now: jiff::Timestamp = T0.parse().unwrap();
    assert_eq!(crate::controller::until(now, jiff::Timestamp::MAX), crate::controller::MAX_REQUEUE);
    assert_eq!(
        crate::controller::until(now, now.checked_add(SignedDuration::from_millis(1500)).unwrap()),
        Duration::from_secs(2)
    );
}
