//! A webhook notice outlives the operator that was retrying it, on a real API server: the
//! receiver answers 500, the operator (as its ServiceAccount, with the shipped RBAC) is killed
//! while the retry waits, and the next one, once it holds the Lease, resumes the notice from
//! the webhook's `status.pending` with the same message id; the receiver then answers 204. A control plane of its own:
//! the test stops and starts operators, so it shares its cluster with no other test.

#[path = "real_cluster/control_plane.rs"]
mod control_plane;
#[path = "real_cluster/support.rs"]
mod support;

use std::time::Duration;

use keyward::api::{ApiKey, ApiKeyWebhook, NoticeType};
use keyward::notice::{HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, SigningSecret, verify};
use keyward::token::Token;
use keyward_testkit::receiver::{Answer, Receiver};
use kube::Api;

use support::{
    apply, cluster_with_manifests, describe, eventually, is_ready, start_operator_flags, webhook_and_key_yaml,
};

const NS: &str = "webhook-resume";
const MINUTE: Duration = Duration::from_secs(60);
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn create(plane: &control_plane::ControlPlane, yaml: &str) {
    let output = apply(plane, NS, yaml);
    assert!(output.status.success(), "apply failed: {}", describe(&output));
}

#[tokio::test]
async fn a_notice_failing_when_the_operator_stops_is_delivered_by_the_next_one_with_the_same_id() {
    let plane = cluster_with_manifests();
    support::run_ok(plane.kubectl().args(["create", "namespace", NS]));
    let client = control_plane::client_from(plane.kubeconfig()).await;
    let kubeconfig = plane.service_account_kubeconfig("keyward-system", "keyward-operator");
    let receiver = Receiver::start(vec![Answer::Status(500), Answer::Status(204)]).await.unwrap();
    create(plane, &webhook_and_key_yaml(&receiver.url, SECRET));

    // The first operator retries a minute after a failure: the retry is pending when it stops.
    let slow = [("--webhook-retry-base", "60s"), ("--webhook-retry-cap", "60s")];
    let first = start_operator_flags(&kubeconfig, "first", &plane.ready.dir, &slow);
    let keys: Api<ApiKey> = Api::namespaced(client.clone(), NS);
    eventually("partner Ready", MINUTE, || async { keys.get_opt("partner").await.unwrap().filter(is_ready) }).await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), NS);
    let raw = secrets.get("partner-apikey").await.unwrap().data.unwrap().remove("token").unwrap();
    let token = Token::parse(std::str::from_utf8(&raw.0).unwrap()).unwrap();
    create(
        plane,
        "apiVersion: keyward.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: partner}\nspec: {scopes: [orders:read], revoked: true}\n",
    );
    let hooks: Api<ApiKeyWebhook> = Api::namespaced(client.clone(), NS);
    let pending = eventually("the failed notice in status.pending", MINUTE, || async {
        let status = hooks.get("alerts").await.unwrap().status?;
        Some(status.pending).filter(|p| p.len() == 1 && p[0].attempts == 1)
    })
    .await;
    assert_eq!(receiver.received().len(), 1, "one attempt, answered 500");
    assert_eq!(pending[0].id, receiver.received()[0].header(HEADER_ID));
    assert_eq!(pending[0].type_, NoticeType::Revoked);
    assert_eq!(pending[0].body.as_bytes(), receiver.received()[0].body, "the body as sent, kept byte for byte");
    // Killed, as a lost node would be: no graceful stop, the Lease is not released.
    first.kill_hard();
    let stored = hooks.get("alerts").await.unwrap().status.unwrap();
    assert_eq!(stored.pending.len(), 1, "the killed operator left the notice pending: {stored:?}");
    let seal = stored.pending[0].seal.as_deref().expect("sealed by the attempt that read the signing Secret");
    let signing = SigningSecret::parse(SECRET.as_bytes()).unwrap();
    assert!(keyward::notice::verify_seal(&signing, &pending[0].id, "apikey.revoked", pending[0].body.as_bytes(), seal));
    assert!(!serde_json::to_string(&stored).unwrap().contains(token.expose()), "no token in the status");

    // The next operator takes the Lease once it expires, waits at most its own retry cap for the
    // backoff left, then sends the notice again.
    let second = start_operator_flags(&kubeconfig, "second", &plane.ready.dir, &[("--webhook-retry-cap", "1s")]);
    let attempts =
        eventually("the resumed attempt", MINUTE * 2, || async { Some(receiver.received()).filter(|r| r.len() == 2) })
            .await;
    assert_eq!(attempts[1].header(HEADER_ID), attempts[0].header(HEADER_ID), "the same message id");
    assert_eq!(attempts[1].body, attempts[0].body, "the same body");
    let secret = SigningSecret::parse(SECRET.as_bytes()).unwrap();
    let timestamp: i64 = attempts[1].header(HEADER_TIMESTAMP).parse().unwrap();
    assert!(verify(
        &secret,
        attempts[1].header(HEADER_ID),
        timestamp,
        &attempts[1].body,
        attempts[1].header(HEADER_SIGNATURE)
    ));
    let status = eventually("Delivered, nothing pending", MINUTE, || async {
        hooks
            .get("alerts")
            .await
            .unwrap()
            .status
            .filter(|s| s.last_delivery_result.as_deref() == Some("Delivered") && s.pending.is_empty())
    })
    .await;
    assert_eq!(status.consecutive_failures, 0);
    let log = second.log_text();
    assert!(log.contains("resumed the webhook deliveries a previous leader left pending"), "{log}");
    assert!(!log.to_lowercase().contains("forbidden"), "refused by RBAC:\n{log}");
    assert!(!log.contains(token.expose()), "no token in the log");
}
