//! The verification example, `examples/webhooks/receiver.py` (Python standard library only),
//! receives a real delivery: the operator runs on the in-memory API, an ApiKey is revoked, and
//! the example checks the notice's Standard Webhooks signature and timestamp and prints it.
//! Forged, tampered and replayed requests are refused with the statuses the example documents.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine as _;

use common::KillOnDrop;
use k8s_openapi::api::core::v1::Secret;
use keyward::api::{ApiKey, ApiKeyWebhook};
use keyward::controller::Options;
use keyward::notice::{HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, SigningSecret, sign};
use keyward::plan::Settings;
use keyward_testkit::fakeapi::FakeCluster;
use keyward_testkit::wait::eventually;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const NS: &str = "team-a";
const SECRET: &str = "whsec_dGhpcyBpcyBhIHRlc3Qgc2VjcmV0IG9mIDMyIGJ5dGVzIQ==";
const WAIT: Duration = Duration::from_secs(60);

/// The example receiver on a free loopback port: its URL and its stdout, line by line.
fn start_example() -> (KillOnDrop, String, mpsc::Receiver<String>) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/webhooks/receiver.py");
    let mut child = Command::new("python3")
        .arg(script)
        .args(["--port", "0"])
        .env("WEBHOOK_SECRET", SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 runs the example");
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let first: Value = serde_json::from_str(&received.recv_timeout(WAIT).unwrap()).unwrap();
    let url = format!("{}hook", first["listening"].as_str().unwrap());
    (KillOnDrop(child), url, received)
}

/// POST `body` with the given Standard Webhooks headers; the status the example answers.
async fn post(url: &str, id: &str, timestamp: i64, signature: &str, body: &str) -> u16 {
    let uri: http::Uri = url.parse().unwrap();
    let stream = tokio::net::TcpStream::connect(uri.authority().unwrap().as_str()).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let request = http::Request::post(uri.path())
        .header("host", uri.authority().unwrap().as_str())
        .header(HEADER_ID, id)
        .header(HEADER_TIMESTAMP, timestamp)
        .header(HEADER_SIGNATURE, signature)
        .body(http_body_util::Full::new(bytes::Bytes::from(body.to_owned())))
        .unwrap();
    sender.send_request(request).await.unwrap().status().as_u16()
}

#[tokio::test]
async fn the_example_receiver_verifies_a_real_revocation_notice_and_refuses_forgeries() {
    let (_receiver, url, mut lines) = start_example();
    let client = FakeCluster::new().with_crd().with_webhook_crd().client().await.unwrap();
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "keyward-webhook", "namespace": NS},
        "data": {"secret": base64::engine::general_purpose::STANDARD.encode(SECRET)}
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), NS).create(&PostParams::default(), &secret).await.unwrap();
    let hook: ApiKeyWebhook = serde_json::from_value(json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKeyWebhook",
        "metadata": {"name": "example", "namespace": NS},
        "spec": {"url": url, "secretRef": {"name": "keyward-webhook"}, "events": ["Revoked"]}
    }))
    .unwrap();
    Api::<ApiKeyWebhook>::namespaced(client.clone(), NS).create(&PostParams::default(), &hook).await.unwrap();

    let settings = Settings {
        propagation_delay: jiff::SignedDuration::from_millis(200),
        publish_poll: jiff::SignedDuration::from_millis(100),
        ..Settings::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let operator =
        tokio::spawn(keyward::controller::run(client.clone(), Options { settings, ..Options::default() }, async {
            let _ = stopped.await;
        }));
    let keys: Api<ApiKey> = Api::namespaced(client.clone(), NS);
    let key: ApiKey = serde_yaml::from_str(
        "apiVersion: keyward.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: partner, namespace: team-a}\nspec: {scopes: [orders:read]}\n",
    )
    .unwrap();
    keys.create(&PostParams::default(), &key).await.unwrap();
    let token_of = || async {
        let secret = Api::<Secret>::namespaced(client.clone(), NS).get_opt("partner-apikey").await.ok()??;
        let bytes = secret.data?.get("token")?.0.clone();
        String::from_utf8(bytes).ok()
    };
    let token = eventually("the key's token", WAIT, token_of).await;
    keys.patch("partner", &PatchParams::default(), &Patch::Merge(json!({"spec": {"revoked": true}}))).await.unwrap();

    let (line, rest) = tokio::task::spawn_blocking(move || (lines.recv_timeout(WAIT), lines)).await.unwrap();
    lines = rest;
    let line = line.expect("the example printed a verified notice");
    let notice: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(notice["type"], "apikey.revoked", "{line}");
    assert_eq!((notice["data"]["namespace"].as_str(), notice["data"]["name"].as_str()), (Some(NS), Some("partner")));
    assert_eq!(notice["duplicate"], false);
    assert!(!line.contains(&token), "a notice never holds the token");
    stop.send(()).unwrap();
    operator.await.unwrap();

    // Requests the example must refuse, and one it must take.
    let key = SigningSecret::parse(SECRET.as_bytes()).unwrap();
    let now = keyward::runtime::clock::now().as_second();
    let body = r#"{"type":"apikey.disabled","timestamp":"2026-01-01T00:00:00Z","data":{}}"#;
    let good = sign(&key, "msg_test", now, body.as_bytes());
    let other = SigningSecret::parse(b"whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").unwrap();
    let cases = [
        ("genuine", "msg_test", now, good.clone(), body.to_owned(), 204),
        ("tampered body", "msg_test", now, good.clone(), body.replace("disabled", "enabled"), 401),
        ("other id", "msg_other", now, good.clone(), body.to_owned(), 401),
        ("wrong secret", "msg_test", now, sign(&other, "msg_test", now, body.as_bytes()), body.to_owned(), 401),
        (
            "replayed an hour later",
            "msg_old",
            now - 3600,
            sign(&key, "msg_old", now - 3600, body.as_bytes()),
            body.to_owned(),
            400,
        ),
        ("no signature", "msg_test", now, String::new(), body.to_owned(), 400),
    ];
    for (what, id, timestamp, signature, body, expected) in cases {
        assert_eq!(post(&url, id, timestamp, &signature, &body).await, expected, "{what}");
    }
    let genuine = tokio::task::spawn_blocking(move || lines.recv_timeout(WAIT)).await.unwrap().unwrap();
    assert!(genuine.contains(r#""webhookId": "msg_test""#), "{genuine}");
}
