//! The in-memory side of the fake-vs-real scenarios: a fresh in-memory cluster per scenario,
//! with the operator's controller running in process when a scenario needs one.

// Shared by two test binaries, each using a part.
#![allow(dead_code)]

use std::time::Duration;

use jiff::SignedDuration;
use keyward::controller::Options;
use keyward::plan::Settings;
use keyward_testkit::fakeapi::FakeCluster;
use kube::Client;

/// An in-memory cluster with the ApiKey, ApiKeyWebhook and ClusterApiKey CRDs installed; the
/// operator runs on it until the returned sender is dropped.
pub async fn cluster(operator: bool) -> (Client, tokio::sync::oneshot::Sender<()>) {
    let client = FakeCluster::new()
        .with_crd()
        .with_webhook_crd()
        .with_object(keyward::api::cluster_crd())
        .client()
        .await
        .expect("the in-memory API starts");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    if operator {
        // The timings the real-cluster tests give `keyward operator`.
        let options = Options {
            settings: Settings {
                propagation_delay: SignedDuration::from_secs(1),
                publish_poll: SignedDuration::from_millis(300),
                ..Settings::default()
            },
            coalesce: Duration::from_millis(100),
            ..Options::default()
        };
        tokio::spawn(keyward::controller::run(client.clone(), options, async move {
            let _ = stopped.await;
        }));
    }
    (client, stop)
}
