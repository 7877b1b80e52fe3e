//! Leader election against kube-fake-client: two contenders, expiry, conflicts, hand-over.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::PostParams;
use kube::{Api, Client};

use crate::api::{ApiKey, KeyState};

use crate::controller::{Clock, Elector, LeaseError, LeaseSettings, Options, Standing, run_elected};

const NS: &str = "keyward-system";

/// A clock that moves only when told to.
fn manual_clock() -> (Clock, Arc<Mutex<Timestamp>>) {
    let now = Arc::new(Mutex::new("2026-01-01T00:00:00Z".parse::<Timestamp>().unwrap()));
    let read = now.clone();
    (Arc::new(move || *read.lock().unwrap()), now)
}

fn advance(now: &Mutex<Timestamp>, secs: i64) {
    let mut now = now.lock().unwrap();
    *now = now.checked_add(SignedDuration::from_secs(secs)).unwrap();
}

/// A clock following tokio's (paused) time.
fn tokio_clock() -> Clock {
    let start = tokio::time::Instant::now();
    let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    Arc::new(move || t0.checked_add(SignedDuration::try_from(tokio::time::Instant::now() - start).unwrap()).unwrap())
}

async fn plain_client() -> Client {
    keyward_testkit::fakeapi::client().await.unwrap()
}

fn elector(client: &Client, identity: &str, clock: &Clock) -> Elector {
    Elector::new(client.clone(), LeaseSettings::new("keyward-operator", NS, identity), clock.clone())
}

async fn holder(client: &Client) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), NS);
    leases.get_opt("keyward-operator").await.unwrap()?.spec?.holder_identity
}

#[tokio::test]
async fn only_one_of_two_contenders_leads() {
    let client = plain_client().await;
    let (clock, _) = manual_clock();
    let (mut a, mut b) = (elector(&client, "a", &clock), elector(&client, "b", &clock));

    assert_eq!(a.try_acquire_or_renew().await.unwrap(), Standing::Leading);
    assert_eq!(b.try_acquire_or_renew().await.unwrap(), Standing::HeldBy("a".into()));
    assert_eq!(a.try_acquire_or_renew().await.unwrap(), Standing::Leading, "the holder renews");
    assert_eq!(b.try_acquire_or_renew().await.unwrap(), Standing::HeldBy("a".into()));
    assert_eq!(holder(&client).await.as_deref(), Some("a"));
}

#[tokio::test]
async fn a_lease_its_holder_stops_renewing_is_taken_over_once_it_expires() {
    let client = plain_client().await;
    let (clock, now) = manual_clock();
    let (mut a, mut b) = (elector(&client, "a", &clock), elector(&client, "b", &clock));
    assert_eq!(a.try_acquire_or_renew().await.unwrap(), Standing::Leading);
    assert_eq!(b.try_acquire_or_renew().await.unwrap(), Standing::HeldBy("a".into()));

    // a renews at +10 s: b's view of the Lease restarts from that change.
    advance(&now, 10);
    assert_eq!(a.try_acquire_or_renew().await.unwrap(), Standing::Leading);
    advance(&now, 10);
    assert_eq!(b.try_acquire_or_renew().await.unwrap(), Standing::HeldBy("a".into()), "renewed 10 s ago");

    // a stops renewing; 15 s (the lease duration) after b saw the last change, b takes over.
    advance(&now, 14);
    assert_eq!(b.try_acquire_or_renew().await.unwrap(), Standing::HeldBy("a".into()), "14 s < 15 s");
    advance(&now, 1);
    assert_eq!(b.try_acquire_or_renew().await.unwrap(), Standing::Leading);
    assert_eq!(
        a.try_acquire_or_renew().await.unwrap(),
        Standing::HeldBy("b".into()),
        "the old holder must not win it back"
    );

    let leases: Api<Lease> = Api::namespaced(client.clone(), NS);
    let spec = leases.get("keyward-operator").await.unwrap().spec.unwrap();
    assert_eq!(spec.lease_transitions, Some(1), "{spec:?}");
    assert_eq!(spec.lease_duration_seconds, Some(15));
}

#[tokio::test]
async fn a_conflict_on_renewal_is_contended_not_fatal_and_the_next_renewal_succeeds() {
    let replaces = Arc::new(AtomicUsize::new(0));
    let seen = replaces.clone();
    let funcs = keyward_testkit::interceptor::Funcs::new().replace(move |_| {
        if seen.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err(keyward_testkit::FakeError::Conflict("the object has been modified".into()));
        }
        Ok(None)
    });
    let client = keyward_testkit::fakeapi::FakeCluster::new().with_interceptor_funcs(funcs).client().await.unwrap();
    let (clock, _) = manual_clock();
    let mut a = elector(&client, "a", &clock);
    assert_eq!(a.try_acquire_or_renew().await.unwrap(), Standing::Leading, "created");
    assert_eq!(a.try_acquire_or_renew().await.unwrap(), Standing::Contended, "409 on renew");
    assert_eq!(a.try_acquire_or_renew().await.unwrap(), Standing::Leading);
    assert_eq!(replaces.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn every_lease_update_carries_the_resource_version_it_read() {
    let versions = Arc::new(Mutex::new(Vec::new()));
    let seen = versions.clone();
    let funcs = keyward_testkit::interceptor::Funcs::new().replace(move |ctx| {
        seen.lock().unwrap().push(ctx.object.pointer("/metadata/resourceVersion").cloned());
        Ok(None)
    });
    let client = keyward_testkit::fakeapi::FakeCluster::new().with_interceptor_funcs(funcs).client().await.unwrap();
    let (clock, now) = manual_clock();
    let (mut a, mut b) = (elector(&client, "a", &clock), elector(&client, "b", &clock));
    a.try_acquire_or_renew().await.unwrap();
    a.try_acquire_or_renew().await.unwrap();
    b.try_acquire_or_renew().await.unwrap();
    advance(&now, 20);
    assert_eq!(b.try_acquire_or_renew().await.unwrap(), Standing::Leading);
    let versions = versions.lock().unwrap();
    assert_eq!(versions.len(), 2, "a's renewal and b's takeover");
    assert!(
        versions.iter().all(|v| v.as_ref().and_then(|v| v.as_str()).is_some_and(|v| !v.is_empty())),
        "{versions:?}"
    );
}

#[tokio::test]
async fn a_stale_update_loses_the_race_with_a_409() {
    // The guard the elector relies on: of two contenders that read the same free Lease, one write fails.
    let client = plain_client().await;
    let (clock, now) = manual_clock();
    let mut a = elector(&client, "a", &clock);
    a.try_acquire_or_renew().await.unwrap();
    let leases: Api<Lease> = Api::namespaced(client.clone(), NS);
    let stale = leases.get("keyward-operator").await.unwrap();
    advance(&now, 1);
    a.try_acquire_or_renew().await.unwrap();
    let err = leases.replace("keyward-operator", &PostParams::default(), &stale).await.expect_err("stale write");
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 409), "{err}");
}

async fn key_state(client: &Client) -> Option<KeyState> {
    let keys: Api<ApiKey> = Api::namespaced(client.clone(), "team-a");
    keys.get_opt("crm").await.unwrap().and_then(|k| k.status).and_then(|s| s.state)
}

async fn create_key(client: &Client) {
    let key: ApiKey = serde_yaml::from_str(
        "
apiVersion: keyward.dev/v1alpha1
kind: ApiKey
metadata: {name: crm, namespace: team-a}
spec:
  scopes: [\"orders:read\"]
",
    )
    .unwrap();
    Api::<ApiKey>::namespaced(client.clone(), "team-a").create(&PostParams::default(), &key).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_follower_does_nothing_while_another_replica_leads_then_takes_over() {
    let client = keyward_testkit::fakeapi::client().await.unwrap();
    let clock = tokio_clock();
    // Replica b leads and renews every 2 s until told to stop.
    let mut b = elector(&client, "b", &clock);
    assert_eq!(b.try_acquire_or_renew().await.unwrap(), Standing::Leading);
    let (stop_b, b_stopped) = tokio::sync::oneshot::channel::<()>();
    let renewing = tokio::spawn(async move {
        let mut b_stopped = b_stopped;
        loop {
            tokio::select! {
                _ = &mut b_stopped => return,
                () = tokio::time::sleep(Duration::from_secs(2)) => { b.try_acquire_or_renew().await.unwrap(); }
            }
        }
    });

    let options = Options { clock: clock.clone(), settings: quick_settings(), ..Options::default() };
    let metrics = options.metrics.clone();
    let (stop_a, a_stopped) = tokio::sync::oneshot::channel::<()>();
    let a =
        tokio::spawn(run_elected(client.clone(), options, LeaseSettings::new("keyward-operator", NS, "a"), async {
            let _ = a_stopped.await;
        }));
    create_key(&client).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(key_state(&client).await, None, "a follower must not reconcile");
    assert!(metrics.encode().contains("\nkeyward_leader 0\n"), "{}", metrics.encode());

    stop_b.send(()).unwrap();
    renewing.await.unwrap();
    for _ in 0..30 {
        if key_state(&client).await == Some(KeyState::Active) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert_eq!(key_state(&client).await, Some(KeyState::Active), "a took over after the Lease expired");
    assert_eq!(holder(&client).await.as_deref(), Some("a"));
    assert!(metrics.encode().contains("\nkeyward_leader 1\n"));

    stop_a.send(()).unwrap();
    a.await.unwrap().expect("a graceful shutdown is not an error");
    assert_eq!(holder(&client).await, None, "the Lease is released on shutdown");
    assert!(metrics.encode().contains("\nkeyward_leader 0\n"));
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_finds_another_holder_stops_and_reports_the_lost_lease() {
    let client = keyward_testkit::fakeapi::client().await.unwrap();
    let options = Options { clock: tokio_clock(), settings: quick_settings(), ..Options::default() };
    let (metrics, health) = (options.metrics.clone(), options.health.clone());
    let a = tokio::spawn(run_elected(
        client.clone(),
        options,
        LeaseSettings::new("keyward-operator", NS, "a"),
        std::future::pending(),
    ));
    create_key(&client).await;
    for _ in 0..30 {
        if key_state(&client).await == Some(KeyState::Active) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(key_state(&client).await, Some(KeyState::Active));

    // Someone else (a replica whose clock ran ahead, an operator by hand) takes the Lease.
    let leases: Api<Lease> = Api::namespaced(client.clone(), NS);
    let mut lease = leases.get("keyward-operator").await.unwrap();
    lease.spec.as_mut().unwrap().holder_identity = Some("b".into());
    leases.replace("keyward-operator", &PostParams::default(), &lease).await.unwrap();

    let outcome = tokio::time::timeout(Duration::from_secs(30), a).await.expect("a stops").unwrap();
    assert!(matches!(outcome, Err(LeaseError::Lost(ref why)) if why.contains('b')), "{outcome:?}");
    assert!(metrics.encode().contains("\nkeyward_leader 0\n"));
    assert!(!health.ready(), "no CRD check ran here, and a stopped replica is not ready");
    assert_eq!(holder(&client).await.as_deref(), Some("b"), "a lost leader does not touch the Lease");
}

#[tokio::test]
async fn durations_must_nest() {
    let mut settings = LeaseSettings::new("l", NS, "a");
    settings.renew_deadline = settings.lease_duration;
    let outcome = run_elected(plain_client().await, Options::default(), settings, std::future::ready(())).await;
    assert!(matches!(outcome, Err(LeaseError::Settings)), "{outcome:?}");
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_cannot_renew_within_the_deadline_stops_and_reports_the_lost_lease() {
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fail = failing.clone();
    let funcs = keyward_testkit::interceptor::Funcs::new().get(move |ctx| {
        if fail.load(Ordering::SeqCst) && ctx.name == "keyward-operator" {
            return Err(keyward_testkit::FakeError::Internal("etcd unavailable".into()));
        }
        Ok(None)
    });
    let client = keyward_testkit::fakeapi::FakeCluster::new().with_interceptor_funcs(funcs).client().await.unwrap();
    let options = Options { clock: tokio_clock(), settings: quick_settings(), ..Options::default() };
    let metrics = options.metrics.clone();
    let a = tokio::spawn(run_elected(
        client.clone(),
        options,
        LeaseSettings::new("keyward-operator", NS, "a"),
        std::future::pending(),
    ));
    for _ in 0..10 {
        if metrics.encode().contains("\nkeyward_leader 1\n") {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(metrics.encode().contains("\nkeyward_leader 1\n"), "a leads");

    failing.store(true, Ordering::SeqCst);
    let outcome = tokio::time::timeout(Duration::from_secs(60), a).await.expect("a stops").unwrap();
    assert!(matches!(outcome, Err(LeaseError::Lost(ref why)) if why.contains("not renewed")), "{outcome:?}");
    assert!(metrics.encode().contains("\nkeyward_leader 0\n"));
}

/// Keys turn Ready a second after their hash is published, so these tests need not wait minutes.
fn quick_settings() -> crate::plan::Settings {
    crate::plan::Settings {
        propagation_delay: jiff::SignedDuration::from_secs(1),
        publish_poll: jiff::SignedDuration::from_secs(1),
        ..crate::plan::Settings::default()
    }
}
