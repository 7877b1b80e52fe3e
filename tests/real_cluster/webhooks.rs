//! Webhooks on a real API server: the shared operator, running as its ServiceAccount with the
//! shipped RBAC, sends a signed revocation notice to a loopback receiver (after one 500, which
//! it retries) and writes the webhook's status; admission refuses plain http to the outside.

use std::time::Duration;

use keyward::api::{ApiKey, ApiKeyWebhook};
use keyward::notice::{HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, SigningSecret, verify};
use keyward_testkit::receiver::{Answer, Receiver};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use super::lifecycle::{assert_operator_log_clean, create, ready, secret_token, setup, with_state};
use super::support::{apply, eventually};

const MINUTE: Duration = Duration::from_secs(60);
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[tokio::test]
async fn a_revocation_is_delivered_signed_to_the_teams_webhook_and_shown_in_its_status() {
    let ns = "webhooks";
    let (plane, client) = setup(ns).await;
    let receiver = Receiver::start(vec![Answer::Status(500), Answer::Status(204)]).await.unwrap();
    let probe = Receiver::start(vec![]).await.unwrap();
    // `probe` is created after `alerts` and hears only the Disabled notices of key `canary`.
    create(
        plane,
        ns,
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: hook-signing}}\nstringData: {{secret: {SECRET}}}\n---\n\
             apiVersion: keyward.dev/v1alpha1\nkind: ApiKeyWebhook\nmetadata: {{name: alerts}}\n\
             spec: {{url: '{}', secretRef: {{name: hook-signing}}, events: [Revoked]}}\n---\n\
             apiVersion: keyward.dev/v1alpha1\nkind: ApiKeyWebhook\nmetadata: {{name: probe}}\n\
             spec: {{url: '{}', secretRef: {{name: hook-signing}}, events: [Disabled], selector: {{matchLabels: {{probe: 'yes'}}}}}}\n---\n\
             apiVersion: keyward.dev/v1alpha1\nkind: ApiKey\nmetadata: {{name: canary, labels: {{probe: 'yes'}}}}\nspec: {{scopes: [orders:read]}}\n---\n\
             apiVersion: keyward.dev/v1alpha1\nkind: ApiKey\nmetadata: {{name: partner}}\nspec: {{scopes: [orders:read]}}\n",
            receiver.url, probe.url
        ),
    );
    ready(&client, ns, "partner").await;
    ready(&client, ns, "canary").await;
    let token = secret_token(&client, ns, "partner-apikey").await.unwrap();
    // The operator routes a notice to the webhooks in its watch-fed cache: one routed before the
    // cache holds `alerts` is not sent. The watch delivers webhooks in the order they were
    // created, so once `probe` hears of a disabled canary, `alerts` is in the cache too.
    let keys: Api<ApiKey> = Api::namespaced(client.clone(), ns);
    let deadline = tokio::time::Instant::now() + MINUTE;
    let toggle = |active: bool| Patch::Merge(json!({"spec": {"active": active}}));
    while probe.received().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the probe webhook heard of no disabled canary");
        keys.patch("canary", &PatchParams::default(), &toggle(false)).await.unwrap();
        with_state(&client, ns, "canary", "Inactive").await;
        // Delivery follows the reconcile; a notice routed before the cache held `probe` never
        // comes, and the canary is disabled again.
        let heard = tokio::time::Instant::now() + Duration::from_secs(5);
        while probe.received().is_empty() && tokio::time::Instant::now() < heard {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        keys.patch("canary", &PatchParams::default(), &toggle(true)).await.unwrap();
        with_state(&client, ns, "canary", "Active").await;
    }
    create(
        plane,
        ns,
        "apiVersion: keyward.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: partner}\nspec: {scopes: [orders:read], revoked: true}\n",
    );

    let attempts = eventually("two attempts at the receiver", MINUTE, || async {
        Some(receiver.received()).filter(|r| r.len() == 2)
    })
    .await;
    let secret = SigningSecret::parse(SECRET.as_bytes()).unwrap();
    for attempt in &attempts {
        let timestamp: i64 = attempt.header(HEADER_TIMESTAMP).parse().unwrap();
        let (id, signature) = (attempt.header(HEADER_ID), attempt.header(HEADER_SIGNATURE));
        assert!(verify(&secret, id, timestamp, &attempt.body, signature), "a valid signature: {:?}", attempt.headers);
        assert!(!String::from_utf8_lossy(&attempt.body).contains(token.expose()), "no token in a notice");
    }
    assert_eq!(attempts[0].header(HEADER_ID), attempts[1].header(HEADER_ID), "a retry keeps the message id");
    let notice: Value = serde_json::from_slice(&attempts[1].body).unwrap();
    assert_eq!(notice["type"], "apikey.revoked");
    assert_eq!((notice["data"]["namespace"].as_str(), notice["data"]["name"].as_str()), (Some(ns), Some("partner")));

    let hooks: Api<ApiKeyWebhook> = Api::namespaced(client.clone(), ns);
    let status = eventually("the webhook's status says Delivered", MINUTE, || async {
        hooks.get("alerts").await.unwrap().status.filter(|s| s.last_delivery_result.as_deref() == Some("Delivered"))
    })
    .await;
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").expect("a Ready condition");
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "Delivered"));
    assert!(!serde_json::to_string(&status).unwrap().contains(token.expose()), "no token in the status");
    assert_operator_log_clean(&[&token]);

    let refused = apply(
        plane,
        ns,
        "apiVersion: keyward.dev/v1alpha1\nkind: ApiKeyWebhook\nmetadata: {name: outside}\n\
         spec: {url: 'http://hooks.example.com/', secretRef: {name: hook-signing}}\n",
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("url must start with https://"), "{stderr}");
}
