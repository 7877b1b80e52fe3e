//! The real kube-runtime Controller over kube-fake-client and the watch layer, with a paused clock.

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use crate::api::{ApiKey, KeyState};
use crate::keyset::Record;
use crate::plan::{DATA_TOKEN, Settings};

use crate::controller::{Options, run};

const NS: &str = "team-a";

async fn published(client: &Client) -> Vec<Record> {
    super::harness::published_records(client, "default").await
}

async fn state(client: &Client, name: &str) -> Option<KeyState> {
    let keys: Api<ApiKey> = Api::namespaced(client.clone(), NS);
    keys.get_opt(name).await.unwrap().and_then(|k| k.status).and_then(|s| s.state)
}

async fn token(client: &Client, secret: &str) -> Option<String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let data = secrets.get_opt(secret).await.unwrap()?.data?;
    Some(String::from_utf8(data.get(DATA_TOKEN)?.0.clone()).unwrap())
}

/// Let (paused) time pass in steps until `check` holds; panics after `limit` steps.
async fn eventually<F, Fut>(what: &str, limit: usize, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..limit {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    panic!("{what} did not happen");
}

#[tokio::test(start_paused = true)]
async fn the_real_controller_creates_rotates_with_grace_revokes_and_expires_keys() {
    let client = keyward_testkit::fakeapi::client().await.unwrap();
    let start = tokio::time::Instant::now();
    let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    let clock: crate::controller::Clock = Arc::new(move || {
        let elapsed = SignedDuration::try_from(tokio::time::Instant::now() - start).unwrap();
        t0.checked_add(elapsed).unwrap()
    });
    let options = Options { clock, settings: Settings::default(), ..Options::default() };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let operator = tokio::spawn(run(client.clone(), options, async move {
        let _ = stopped.await;
    }));

    let keys: Api<ApiKey> = Api::namespaced(client.clone(), NS);
    let rotating: ApiKey = serde_yaml::from_str(
        "
apiVersion: keyward.dev/v1alpha1
kind: ApiKey
metadata: {name: crm, namespace: team-a}
spec:
  scopes: [\"orders:read\"]
  rotation: {every: 1h, gracePeriod: 10m}
",
    )
    .unwrap();
    keys.create(&PostParams::default(), &rotating).await.unwrap();
    eventually("creation", 10, || async { state(&client, "crm").await == Some(KeyState::Active) }).await;
    let first = token(&client, "crm-apikey").await.unwrap();
    eventually("publication", 10, || async { published(&client).await.len() == 1 }).await;

    // Rotation at +1h, swap after the 2m propagation delay, previous retired 10m later.
    eventually("swap", 200, || async { token(&client, "crm-apikey").await.is_some_and(|t| t != first) }).await;
    let second = token(&client, "crm-apikey").await.unwrap();
    eventually("retirement", 100, || async {
        let records = published(&client).await;
        records.len() == 1
            && records[0].key_id.to_string() != crate::token::Token::parse(&first).unwrap().hash().key_id().to_string()
    })
    .await;
    assert_eq!(state(&client, "crm").await, Some(KeyState::Active));
    assert!(published(&client).await[0].hash == crate::token::Token::parse(&second).unwrap().hash());

    keys.patch("crm", &PatchParams::default(), &Patch::Merge(json!({"spec": {"revoked": true}}))).await.unwrap();
    eventually("revocation", 10, || async {
        state(&client, "crm").await == Some(KeyState::Revoked) && published(&client).await.is_empty()
    })
    .await;
    assert_eq!(token(&client, "crm-apikey").await, None);

    let now = t0.checked_add(SignedDuration::try_from(tokio::time::Instant::now() - start).unwrap()).unwrap();
    let expiring: ApiKey = serde_yaml::from_str(&format!(
        "
apiVersion: keyward.dev/v1alpha1
kind: ApiKey
metadata: {{name: short, namespace: team-a}}
spec:
  scopes: [\"orders:read\"]
  expiresAt: \"{}\"
",
        now.checked_add(SignedDuration::from_mins(30)).unwrap().strftime("%Y-%m-%dT%H:%M:%SZ")
    ))
    .unwrap();
    keys.create(&PostParams::default(), &expiring).await.unwrap();
    eventually("activation", 10, || async { state(&client, "short").await == Some(KeyState::Active) }).await;
    eventually("expiry", 100, || async { state(&client, "short").await == Some(KeyState::Expired) }).await;
    assert_eq!(token(&client, "short-apikey").await, None);

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(60), operator).await.expect("graceful shutdown").unwrap();
}

#[tokio::test]
async fn start_up_refuses_to_run_without_the_crd() {
    let client = keyward_testkit::fakeapi::client().await.unwrap();
    let err = crate::controller::check_crd(&client).await.expect_err("no CRD installed");
    assert!(matches!(err, crate::controller::StartError::CrdMissing), "{err}");
    assert!(err.to_string().contains("apikeys.keyward.dev"));
}

#[tokio::test]
async fn start_up_passes_once_the_crd_is_installed() {
    let client = keyward_testkit::fakeapi::FakeCluster::new().with_crd().client().await.unwrap();
    crate::controller::check_crd(&client).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_converged_operator_issues_no_writes_while_idle() {
    let writes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = writes.clone();
    let funcs = keyward_testkit::interceptor::Funcs::new().patch(move |_| {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(None)
    });
    let (c2, c3) = (writes.clone(), writes.clone());
    let funcs = funcs
        .create(move |_| {
            c2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(None)
        })
        .patch_status(move |_| {
            c3.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(None)
        });
    let client = keyward_testkit::fakeapi::FakeCluster::new().with_interceptor_funcs(funcs).client().await.unwrap();
    // Paused time drives the clock: a new key becomes Ready after the propagation delay.
    let start = tokio::time::Instant::now();
    let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    let clock: crate::controller::Clock = Arc::new(move || {
        let elapsed = SignedDuration::try_from(tokio::time::Instant::now() - start).unwrap();
        t0.checked_add(elapsed).unwrap()
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let operator = tokio::spawn(run(client.clone(), Options { clock, ..Options::default() }, async move {
        let _ = stopped.await;
    }));
    let key: ApiKey = serde_yaml::from_str(
        "
apiVersion: keyward.dev/v1alpha1
kind: ApiKey
metadata: {name: crm, namespace: team-a}
spec:
  scopes: [\"orders:read\"]
  rotation: {every: 30d}
",
    )
    .unwrap();
    Api::<ApiKey>::namespaced(client.clone(), NS).create(&PostParams::default(), &key).await.unwrap();
    eventually("creation", 10, || async {
        state(&client, "crm").await == Some(KeyState::Active) && published(&client).await.len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let settled = writes.load(std::sync::atomic::Ordering::SeqCst);

    // Two hours: several key-set resyncs, no deadline due.
    tokio::time::sleep(Duration::from_secs(2 * 3600)).await;

    assert_eq!(writes.load(std::sync::atomic::Ordering::SeqCst), settled, "an idle, converged operator writes nothing");
    stop.send(()).unwrap();
    operator.await.unwrap();
}
