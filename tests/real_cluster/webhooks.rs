//! Webhooks on a real API server: the shared operator, running as its ServiceAccount with the
//! shipped RBAC, sends a signed revocation notice to a loopback receiver (after one 500, which
//! it retries) and writes the webhook's status; admission refuses plain http to the outside.

use std::time::Duration;

use keyward::api::ApiKeyWebhook;
use keyward::notice::{HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, SigningSecret, verify};
use keyward_testkit::receiver::{Answer, Receiver};
use kube::Api;
use serde_json::Value;

use super::lifecycle::{assert_operator_log_clean, create, ready, secret_token, setup};
use super::support::{apply, eventually, webhook_and_key_yaml};

const MINUTE: Duration = Duration::from_secs(60);
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[tokio::test]
async fn a_revocation_is_delivered_signed_to_the_teams_webhook_and_shown_in_its_status() {
    let ns = "webhooks";
    let (plane, client) = setup(ns).await;
    let receiver = Receiver::start(vec![Answer::Status(500), Answer::Status(204)]).await.unwrap();
    create(plane, ns, &webhook_and_key_yaml(&receiver.url, SECRET));
    ready(&client, ns, "partner").await;
    let token = secret_token(&client, ns, "partner-apikey").await.unwrap();
    // The webhook cache may be filling still: a notice routed before it has the webhook is not sent.
    tokio::time::sleep(Duration::from_secs(2)).await;
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
