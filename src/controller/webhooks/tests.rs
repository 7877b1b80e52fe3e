//! Delivery to loopback receivers through the in-memory API: signatures, retries, timeouts,
//! failures shown in status, Events and metrics, and a reconcile that never waits on a webhook.

use std::sync::Arc;
use std::time::Duration;

use jiff::SignedDuration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use keyward_testkit::fakeapi::FakeCluster;
use keyward_testkit::receiver::{Answer, Receiver};
use keyward_testkit::wait::eventually;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::Reporter;
use kube::{Api, Client};
use serde_json::{Value, json};

use super::{Notifier, WebhookOptions, start};
use crate::api::{ApiKey, ApiKeyWebhook, KeyState, PendingDelivery};
use crate::controller::events::Recorder;
use crate::controller::{Clock, Metrics, Options};
use crate::notice::{
    HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, Notice, RetryPolicy, SigningSecret, notice, verify,
};
use crate::plan::{EventKind, PlannedEvent, Reason};

const NS: &str = "team-a";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const WAIT: Duration = Duration::from_secs(60);

fn quick(attempts: u32) -> WebhookOptions {
    WebhookOptions {
        retry: RetryPolicy { attempts, base: Duration::from_millis(50), cap: Duration::from_millis(200) },
        default_timeout: Duration::from_secs(2),
        status_interval: Duration::from_millis(100),
        ..WebhookOptions::default()
    }
}

fn clock() -> Clock {
    Arc::new(crate::runtime::clock::now)
}

async fn cluster() -> Client {
    let client = FakeCluster::new().with_crd().with_webhook_crd().client().await.unwrap();
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hook-signing", "namespace": NS},
        "data": {"secret": base64_of(SECRET)}
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), NS).create(&PostParams::default(), &secret).await.unwrap();
    client
}

fn base64_of(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

async fn webhook(client: &Client, name: &str, spec: Value) {
    let mut spec = spec;
    if spec.get("secretRef").is_none() {
        spec["secretRef"] = json!({"name": "hook-signing"});
    }
    let hook: ApiKeyWebhook = serde_json::from_value(json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKeyWebhook",
        "metadata": {"name": name, "namespace": NS}, "spec": spec
    }))
    .unwrap();
    Api::<ApiKeyWebhook>::namespaced(client.clone(), NS).create(&PostParams::default(), &hook).await.unwrap();
}

struct Delivery {
    notifier: Notifier,
    metrics: Arc<Metrics>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Delivery {
    fn start(client: &Client, options: WebhookOptions) -> Delivery {
        Delivery::start_with_clock(client, options, clock())
    }

    /// Delivery as one operator leader runs it, on `clock`.
    fn start_with_clock(client: &Client, options: WebhookOptions, clock: Clock) -> Delivery {
        let metrics = Arc::new(Metrics::new());
        let recorder = Recorder::new(client.clone(), Reporter { controller: "keyward".into(), instance: None });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (notifier, task) = start(client.clone(), options, clock, metrics.clone(), recorder, async move {
            let _ = stopped.await;
        });
        Delivery { notifier, metrics, stop: Some(stop), task }
    }

    fn metric(&self, series: &str) -> Option<String> {
        let text = self.metrics.encode();
        text.lines().find_map(|line| line.strip_prefix(series).map(|v| v.trim().to_owned()))
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap();
    }
}

fn key(labels: Value) -> ApiKey {
    serde_json::from_value(json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKey",
        "metadata": {"name": "partner", "namespace": NS, "uid": "uid-partner", "generation": 2, "labels": labels},
        "spec": {"scopes": ["orders:read"]}, "status": {"state": "Revoked"}
    }))
    .unwrap()
}

fn a_notice(reason: Reason, labels: Value) -> Notice {
    let event = PlannedEvent { kind: EventKind::Normal, reason, note: format!("{reason} for the test") };
    notice(&key(labels), &event, "0123456789ab", crate::runtime::clock::now()).unwrap()
}

async fn webhook_status(client: &Client, name: &str) -> Option<crate::api::ApiKeyWebhookStatus> {
    Api::<ApiKeyWebhook>::namespaced(client.clone(), NS).get(name).await.unwrap().status
}

fn ready(status: &crate::api::ApiKeyWebhookStatus) -> Option<(String, String, String)> {
    let c = status.conditions.iter().find(|c| c.type_ == "Ready")?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn events(client: &Client) -> Vec<(String, String)> {
    let list = Api::<K8sEvent>::namespaced(client.clone(), NS).list(&ListParams::default()).await.unwrap();
    list.items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("ApiKeyWebhook"))
        .map(|e| (e.type_.unwrap_or_default(), e.reason.unwrap_or_default()))
        .collect()
}

/// Wait for an Event of `type_` and `reason` about a webhook.
async fn event_seen(client: &Client, type_: &str, reason: &str) {
    let wanted = (type_.to_owned(), reason.to_owned());
    eventually(&format!("a {type_} Event {reason}"), WAIT, || async {
        events(client).await.contains(&wanted).then_some(())
    })
    .await;
}

/// Whether the receiver's request carries a valid Standard Webhooks signature of its body.
fn signed(request: &keyward_testkit::receiver::Received) -> bool {
    let secret = SigningSecret::parse(SECRET.as_bytes()).unwrap();
    let timestamp: i64 = request.header(HEADER_TIMESTAMP).parse().unwrap();
    verify(&secret, request.header(HEADER_ID), timestamp, &request.body, request.header(HEADER_SIGNATURE))
}

#[tokio::test]
async fn a_revocation_reaches_the_webhook_signed_and_its_status_says_delivered() {
    let client = cluster().await;
    let receiver = Receiver::start(vec![Answer::Status(204)]).await.unwrap();
    webhook(&client, "hook", json!({"url": receiver.url})).await;
    let delivery = Delivery::start(&client, quick(3));
    let sent = a_notice(Reason::Revoked, json!({}));
    delivery.notifier.notify(sent.clone());

    let request = eventually("the notice at the receiver", WAIT, || async { receiver.received().pop() }).await;
    assert!(signed(&request), "the signature verifies: {:?}", request.headers);
    assert_eq!(request.header(HEADER_ID), sent.id);
    assert_eq!(request.header("content-type"), "application/json");
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!((body["type"].as_str(), body["data"]["name"].as_str()), (Some("apikey.revoked"), Some("partner")));

    let status = eventually("status Delivered", WAIT, || async {
        webhook_status(&client, "hook").await.filter(|s| s.last_delivery_result.as_deref() == Some("Delivered"))
    })
    .await;
    assert_eq!(ready(&status).map(|r| (r.0, r.1)), Some(("True".to_owned(), "Delivered".to_owned())));
    assert_eq!(status.consecutive_failures, 0);
    assert_eq!(
        delivery.metric(r#"keyward_webhook_deliveries_total{namespace="team-a",webhook="hook",result="delivered"}"#),
        Some("1".to_owned())
    );
    assert_eq!(delivery.metric(r#"keyward_webhook_failing{namespace="team-a",webhook="hook"}"#), Some("0".to_owned()));
    assert!(events(&client).await.is_empty(), "a first delivery that works needs no Event");
    delivery.stop().await;
}

#[tokio::test]
async fn a_receiver_answering_500_gets_the_same_notice_again_until_it_takes_it() {
    let client = cluster().await;
    let receiver = Receiver::start(vec![Answer::Status(500), Answer::Status(500), Answer::Status(200)]).await.unwrap();
    webhook(&client, "hook", json!({"url": receiver.url})).await;
    let delivery = Delivery::start(&client, quick(5));
    let sent = a_notice(Reason::Disabled, json!({}));
    delivery.notifier.notify(sent.clone());

    let attempts =
        eventually("three attempts", WAIT, || async { Some(receiver.received()).filter(|r| r.len() == 3) }).await;
    for attempt in &attempts {
        assert_eq!(attempt.header(HEADER_ID), sent.id, "every attempt carries the notice's id");
        assert_eq!(attempt.body, sent.body, "every attempt carries the same body");
        assert!(signed(attempt), "every attempt is signed for its own timestamp");
    }
    let status = eventually("status Delivered", WAIT, || async {
        webhook_status(&client, "hook").await.filter(|s| s.last_delivery_result.as_deref() == Some("Delivered"))
    })
    .await;
    assert_eq!(status.consecutive_failures, 0);
    assert_eq!(
        delivery.metric(r#"keyward_webhook_deliveries_total{namespace="team-a",webhook="hook",result="failed"}"#),
        None,
        "retried attempts are not failed notices"
    );
    delivery.stop().await;
}

#[tokio::test]
async fn a_receiver_that_never_answers_is_given_up_after_its_attempts_and_shows_it() {
    let client = cluster().await;
    let receiver = Receiver::start(vec![Answer::Hang]).await.unwrap();
    webhook(&client, "slow", json!({"url": receiver.url, "timeoutSeconds": 1})).await;
    let delivery = Delivery::start(&client, quick(2));
    delivery.notifier.notify(a_notice(Reason::Expired, json!({})));

    let status = eventually("status failing", WAIT, || async {
        webhook_status(&client, "slow").await.filter(|s| s.consecutive_failures == 1)
    })
    .await;
    let (ready_status, reason, message) = ready(&status).unwrap();
    assert_eq!((ready_status.as_str(), reason.as_str()), ("False", "DeliveryFailing"));
    assert!(message.contains("given up after 2 attempt(s): Timeout"), "{message}");
    assert_eq!(status.last_delivery_result.as_deref(), Some("Timeout"));
    assert_eq!(receiver.received().len(), 2);
    assert!(!message.contains(&receiver.url), "the URL may hold a credential: {message}");
    event_seen(&client, "Warning", "DeliveryFailing").await;
    assert_eq!(delivery.metric(r#"keyward_webhook_failing{namespace="team-a",webhook="slow"}"#), Some("1".to_owned()));
    delivery.stop().await;
}

#[tokio::test]
async fn a_receiver_that_keeps_failing_shows_in_status_event_and_metric_until_it_recovers() {
    let client = cluster().await;
    let script = vec![Answer::Status(500), Answer::Status(503), Answer::Status(500), Answer::Status(204)];
    let receiver = Receiver::start(script).await.unwrap();
    webhook(&client, "hook", json!({"url": receiver.url})).await;
    let delivery = Delivery::start(&client, quick(3));
    delivery.notifier.notify(a_notice(Reason::Revoked, json!({})));
    let status = eventually("status failing", WAIT, || async {
        webhook_status(&client, "hook").await.filter(|s| s.consecutive_failures == 1)
    })
    .await;
    assert_eq!(status.last_delivery_result.as_deref(), Some("HTTP 500"));
    event_seen(&client, "Warning", "DeliveryFailing").await;
    assert_eq!(
        delivery.metric(r#"keyward_webhook_deliveries_total{namespace="team-a",webhook="hook",result="failed"}"#),
        Some("1".to_owned())
    );

    delivery.notifier.notify(a_notice(Reason::Enabled, json!({})));
    eventually("status recovered", WAIT, || async {
        webhook_status(&client, "hook")
            .await
            .filter(|s| s.consecutive_failures == 0 && ready(s).is_some_and(|r| r.0 == "True"))
    })
    .await;
    event_seen(&client, "Normal", "DeliveryRecovered").await;
    assert_eq!(delivery.metric(r#"keyward_webhook_failing{namespace="team-a",webhook="hook"}"#), Some("0".to_owned()));
    delivery.stop().await;
}

#[tokio::test]
async fn webhooks_get_only_the_kinds_and_keys_they_ask_for() {
    let client = cluster().await;
    let revocations = Receiver::start(vec![]).await.unwrap();
    let payments = Receiver::start(vec![]).await.unwrap();
    webhook(&client, "revocations", json!({"url": revocations.url, "events": ["Revoked"]})).await;
    webhook(&client, "payments", json!({"url": payments.url, "selector": {"matchLabels": {"team": "payments"}}})).await;
    let delivery = Delivery::start(&client, quick(1));
    let disabled_other = a_notice(Reason::Disabled, json!({"team": "other"}));
    let revoked_other = a_notice(Reason::Revoked, json!({"team": "other"}));
    let disabled_payments = a_notice(Reason::Disabled, json!({"team": "payments"}));
    for notice in [&disabled_other, &revoked_other, &disabled_payments] {
        delivery.notifier.notify(notice.clone());
    }
    let revoked = eventually("the revocation", WAIT, || async { revocations.received().pop() }).await;
    let payment = eventually("the payments key's notice", WAIT, || async { payments.received().pop() }).await;
    assert_eq!(revoked.header(HEADER_ID), revoked_other.id);
    assert_eq!(payment.header(HEADER_ID), disabled_payments.id);
    // Routed in order, before the later notices each receiver did get: nothing else is on its way.
    assert_eq!((revocations.received().len(), payments.received().len()), (1, 1));
    delivery.stop().await;
}

#[tokio::test]
async fn a_missing_or_malformed_signing_secret_is_given_up_at_once_and_named_in_status() {
    let client = cluster().await;
    let receiver = Receiver::start(vec![]).await.unwrap();
    let malformed: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "short", "namespace": NS},
        "data": {"secret": base64_of("whsec_c2hvcnQ=")}
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), NS).create(&PostParams::default(), &malformed).await.unwrap();
    webhook(&client, "missing", json!({"url": receiver.url, "secretRef": {"name": "nowhere"}})).await;
    webhook(&client, "malformed", json!({"url": receiver.url, "secretRef": {"name": "short"}})).await;
    let delivery = Delivery::start(&client, quick(5));
    delivery.notifier.notify(a_notice(Reason::Revoked, json!({})));
    for (name, reason, words) in
        [("missing", "SecretNotFound", "does not exist"), ("malformed", "InvalidSecret", "decodes to 5 bytes")]
    {
        let status = eventually(&format!("{name} failing"), WAIT, || async {
            webhook_status(&client, name).await.filter(|s| s.consecutive_failures == 1)
        })
        .await;
        let (_, got, message) = ready(&status).unwrap();
        assert_eq!(got, reason, "{name}: {message}");
        assert!(message.contains(words) && message.contains("after 1 attempt(s)"), "{name}: {message}");
        assert!(!message.contains("c2hvcnQ"), "the secret's value is never quoted: {message}");
    }
    assert!(receiver.received().is_empty(), "nothing unsigned is ever sent");
    delivery.stop().await;
}

#[tokio::test]
async fn a_full_queue_drops_the_notice_without_waiting() {
    let metrics = Arc::new(Metrics::new());
    let (queue, _unread) = tokio::sync::mpsc::channel(1);
    let notifier = Notifier { queue: Some((queue, metrics.clone())) };
    notifier.notify(a_notice(Reason::Revoked, json!({})));
    notifier.notify(a_notice(Reason::Disabled, json!({})));
    assert!(metrics.encode().contains("keyward_webhook_notices_dropped_total 1\n"), "{}", metrics.encode());
}

/// Create ApiKey `partner` in [`NS`] with `spec` (inline YAML).
async fn create_partner(client: &Client, spec: &str) -> Api<ApiKey> {
    let keys: Api<ApiKey> = Api::namespaced(client.clone(), NS);
    let yaml = format!(
        "apiVersion: keyward.dev/v1alpha1\nkind: ApiKey\nmetadata: {{name: partner, namespace: {NS}}}\nspec: {spec}\n"
    );
    let key: ApiKey = serde_yaml::from_str(&yaml).unwrap();
    keys.create(&PostParams::default(), &key).await.unwrap();
    keys
}

/// `Some` once ApiKey `partner` is in state `wanted`.
async fn state_is(keys: &Api<ApiKey>, wanted: KeyState) -> Option<()> {
    keys.get("partner").await.ok()?.status?.state.filter(|s| *s == wanted).map(|_| ())
}

#[tokio::test]
async fn a_key_disabled_and_enabled_again_is_not_held_up_by_a_webhook_that_never_answers() {
    let client = cluster().await;
    let receiver = Receiver::start(vec![Answer::Hang]).await.unwrap();
    webhook(&client, "stuck", json!({"url": receiver.url, "timeoutSeconds": 60})).await;
    let settings = crate::plan::Settings {
        propagation_delay: SignedDuration::from_millis(200),
        publish_poll: SignedDuration::from_millis(100),
        ..crate::plan::Settings::default()
    };
    let options =
        Options { settings, webhooks: Some(quick(10)), coalesce: Duration::from_millis(50), ..Options::default() };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let operator = tokio::spawn(crate::controller::run(client.clone(), options, async move {
        let _ = stopped.await;
    }));
    let keys = create_partner(&client, "{scopes: [orders:read]}").await;
    let state = |wanted: KeyState| state_is(&keys, wanted);
    let active = |on: bool| Patch::Merge(json!({"spec": {"active": on}}));
    eventually("the key Active", WAIT, || state(KeyState::Active)).await;
    keys.patch("partner", &PatchParams::default(), &active(false)).await.unwrap();
    eventually("the key Inactive", WAIT, || state(KeyState::Inactive)).await;
    eventually("the Disabled notice held open by the receiver", WAIT, || async {
        receiver.received().pop().filter(|r| r.body.windows(15).any(|w| w == b"apikey.disabled"))
    })
    .await;
    // The same key reconciles again while its Disabled notice hangs (a reconcile of one object
    // never runs beside another of it): emitting the notice did not wait for the receiver.
    keys.patch("partner", &PatchParams::default(), &active(true)).await.unwrap();
    eventually("the key Active again", WAIT, || state(KeyState::Active)).await;
    let both =
        eventually("the Enabled notice too", WAIT, || async { Some(receiver.received()).filter(|r| r.len() == 2) })
            .await;
    assert!(both.iter().all(signed), "both notices are signed");
    stop.send(()).unwrap();
    operator.await.unwrap();
}

/// Requests of `type_` (`apikey.usage_anomaly`) the receiver got so far.
fn received_of(receiver: &Receiver, type_: &str) -> Vec<Value> {
    receiver
        .received()
        .iter()
        .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap())
        .filter(|body| body["type"] == type_)
        .collect()
}

/// The notes of the ApiKey's Events of `reason`.
async fn key_events(client: &Client, reason: &str) -> Vec<(String, String)> {
    let list = Api::<K8sEvent>::namespaced(client.clone(), NS).list(&ListParams::default()).await.unwrap();
    list.items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("ApiKey"))
        .filter(|e| e.reason.as_deref() == Some(reason))
        .map(|e| (e.type_.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

/// Run the operator on `client` with `clock` until the returned sender fires.
fn operator(
    client: &Client,
    clock: Clock,
    metrics: Arc<Metrics>,
) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let settings = crate::plan::Settings {
        propagation_delay: SignedDuration::from_millis(200),
        publish_poll: SignedDuration::from_millis(100),
        ..crate::plan::Settings::default()
    };
    // No usage aggregation: the test writes status.usage itself, as the usage writer would.
    let options = Options {
        settings,
        clock,
        metrics,
        usage: None,
        webhooks: Some(quick(3)),
        coalesce: Duration::from_millis(50),
        ..Options::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(crate::controller::run(client.clone(), options, async move {
        let _ = stopped.await;
    }));
    (stop, task)
}

#[tokio::test]
async fn a_usage_spike_is_one_event_and_one_signed_notice_and_a_restart_does_not_repeat_it() {
    let client = cluster().await;
    let receiver = Receiver::start(vec![Answer::Status(204)]).await.unwrap();
    webhook(&client, "hook", json!({"url": receiver.url, "events": ["UsageAnomaly", "Disabled"]})).await;
    // The operator's clock runs eight days after the key's creation (the fake API stamps
    // creationTimestamp with the wall clock): the key has six days of baseline.
    let clock: Clock =
        Arc::new(|| crate::runtime::clock::now().checked_add(SignedDuration::from_hours(8 * 24)).unwrap());
    let metrics = Arc::new(Metrics::new());
    let (stop, task) = operator(&client, clock.clone(), metrics.clone());
    let keys = create_partner(&client, "{scopes: [orders:read]}").await;
    let state = |wanted: KeyState| state_is(&keys, wanted);
    eventually("the key Active", WAIT, || state(KeyState::Active)).await;

    // The usage writer's status write: 20,000 allowed today against 500 a day before.
    let usage = |allowed: u64| {
        let week = allowed + 3_000;
        Patch::Merge(json!({"status": {"usage": {
            "last24h": {"allowed": allowed, "denied": 0}, "last7d": {"allowed": week, "denied": 0},
            "last30d": {"allowed": week, "denied": 0}, "updatedAt": clock().to_string(),
        }}}))
    };
    keys.patch_status("partner", &PatchParams::default(), &usage(20_000)).await.unwrap();
    let notice =
        eventually("the anomaly notice", WAIT, || async { received_of(&receiver, "apikey.usage_anomaly").pop() }).await;
    assert_eq!(notice["data"]["reason"], "UsageAnomaly");
    assert_eq!(notice["data"]["usage"]["last24h"]["allowed"], 20_000);
    let message = notice["data"]["message"].as_str().unwrap();
    assert!(message.contains("AllowedSpike: 20000 requests allowed in the last 24h, against 500 a day"), "{message}");
    assert!(receiver.received().iter().all(signed), "signed like every notice");
    let events = key_events(&client, "UsageAnomaly").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].0, "Warning");
    let record = keys.get("partner").await.unwrap().status.unwrap().usage_anomalies;
    assert_eq!(record.iter().map(|r| r.kind.as_str()).collect::<Vec<_>>(), ["AllowedSpike"]);
    assert!(
        metrics.encode().contains(r#"keyward_usage_anomalies_total{namespace="team-a",kind="AllowedSpike"} 1"#),
        "{}",
        metrics.encode()
    );
    stop.send(()).unwrap();
    task.await.unwrap();

    // A new operator process: it reconciles the key (still spiking) from the start, then
    // sees another usage write; then the key is disabled, which is a notice of its own.
    let metrics = Arc::new(Metrics::new());
    let (stop, task) = operator(&client, clock.clone(), metrics.clone());
    eventually("the new operator reconciled", WAIT, || async {
        metrics.encode().lines().any(|l| l.starts_with("keyward_reconciles_total ") && !l.ends_with(" 0")).then_some(())
    })
    .await;
    keys.patch_status("partner", &PatchParams::default(), &usage(25_000)).await.unwrap();
    keys.patch("partner", &PatchParams::default(), &Patch::Merge(json!({"spec": {"active": false}}))).await.unwrap();
    eventually("the Disabled notice", WAIT, || async { received_of(&receiver, "apikey.disabled").pop() }).await;
    // Events are written before their notices are queued: a second anomaly would show here.
    assert_eq!(key_events(&client, "UsageAnomaly").await.len(), 1, "no second UsageAnomaly Event after the restart");
    assert_eq!(received_of(&receiver, "apikey.usage_anomaly").len(), 1, "no second notice");
    assert!(!metrics.encode().contains("keyward_usage_anomalies_total{"), "{}", metrics.encode());
    stop.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn a_key_its_class_holds_back_is_a_disabled_notice_and_keeping_it_again_an_enabled_one() {
    let client = cluster().await;
    let receiver = Receiver::start(vec![Answer::Status(204)]).await.unwrap();
    webhook(&client, "hook", json!({"url": receiver.url})).await;
    let classes: Api<crate::api::ApiKeyClass> = Api::all(client.clone());
    let class: crate::api::ApiKeyClass = serde_yaml::from_str(
        "apiVersion: keyward.dev/v1alpha1\nkind: ApiKeyClass\nmetadata: {name: client}\nspec: {allowedScopes: [{resource: orders, actions: [read]}]}\n",
    )
    .unwrap();
    classes.create(&PostParams::default(), &class).await.unwrap();
    let (stop, task) = operator(&client, clock(), Arc::new(Metrics::new()));
    let keys = create_partner(&client, "{className: client, scopes: [orders:read]}").await;
    let ready_reason = |wanted: &'static str| {
        let keys = keys.clone();
        async move {
            let ready = keys.get("partner").await.ok()?.status?.conditions.into_iter().next()?;
            (ready.reason == wanted).then_some(())
        }
    };
    eventually("the key Active", WAIT, || ready_reason("Active")).await;

    // The key asks for more than its class allows: unpublished, and the team hears of it.
    let scopes = |scopes: Value| Patch::Merge(json!({"spec": {"scopes": scopes}}));
    keys.patch("partner", &PatchParams::default(), &scopes(json!(["orders:read", "orders:write"]))).await.unwrap();
    let disabled =
        eventually("the Disabled notice", WAIT, || async { received_of(&receiver, "apikey.disabled").pop() }).await;
    assert_eq!(disabled["data"]["reason"], "ClassViolation");
    assert_eq!(
        disabled["data"]["message"],
        "The key is not published: ApiKeyClass client (allowedScopes): not allowed: orders:write"
    );
    keys.patch("partner", &PatchParams::default(), &scopes(json!(["orders:read"]))).await.unwrap();
    let enabled =
        eventually("the Enabled notice", WAIT, || async { received_of(&receiver, "apikey.enabled").pop() }).await;
    assert_eq!(enabled["data"]["reason"], "ClassSatisfied");
    assert!(receiver.received().iter().all(signed), "signed like every notice");
    assert_eq!(received_of(&receiver, "apikey.disabled").len(), 1, "one notice for one finding");
    stop.send(()).unwrap();
    task.await.unwrap();
}

/// A ClusterApiKey's notices go to the webhooks of its `spec.secretNamespace` ([`NS`] here), named
/// as a cluster key; a webhook of a namespace that merely carries the key gets none.
#[tokio::test]
async fn a_cluster_keys_disable_is_a_notice_to_the_webhooks_of_its_secret_namespace_only() {
    use crate::api::ClusterApiKey;
    use k8s_openapi::api::core::v1::Namespace;
    let client =
        FakeCluster::new().with_crd().with_webhook_crd().with_object(crate::api::cluster_crd()).client().await.unwrap();
    for (name, labels) in [(NS, json!({})), ("loc-a", json!({"agency": "acme"}))] {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.unwrap();
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "hook-signing", "namespace": name}, "data": {"secret": base64_of(SECRET)}
        }))
        .unwrap();
        Api::<Secret>::namespaced(client.clone(), name).create(&PostParams::default(), &secret).await.unwrap();
    }
    let owners = Receiver::start(vec![]).await.unwrap();
    webhook(&client, "owners", json!({"url": owners.url, "events": ["Disabled", "Enabled"]})).await;
    let location = Receiver::start(vec![]).await.unwrap();
    let hook: ApiKeyWebhook = serde_json::from_value(json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKeyWebhook",
        "metadata": {"name": "location", "namespace": "loc-a"},
        "spec": {"url": location.url, "secretRef": {"name": "hook-signing"}}
    }))
    .unwrap();
    Api::<ApiKeyWebhook>::namespaced(client.clone(), "loc-a").create(&PostParams::default(), &hook).await.unwrap();

    let (stop, operator) = operator(&client, clock(), Arc::new(Metrics::new()));
    let keys: Api<ClusterApiKey> = Api::all(client.clone());
    let key: ClusterApiKey = serde_json::from_value(json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "ClusterApiKey", "metadata": {"name": "agency"},
        "spec": {"scopes": ["orders:read"], "secretNamespace": NS, "namespaceSelector": {"matchLabels": {"agency": "acme"}}}
    }))
    .unwrap();
    keys.create(&PostParams::default(), &key).await.unwrap();
    let state = |wanted: KeyState| {
        let keys = keys.clone();
        async move { keys.get("agency").await.ok()?.status?.key.state.filter(|s| *s == wanted).map(|_| ()) }
    };
    eventually("the cluster key Active", WAIT, || state(KeyState::Active)).await;
    keys.patch("agency", &PatchParams::default(), &Patch::Merge(json!({"spec": {"active": false}}))).await.unwrap();
    eventually("the cluster key Inactive", WAIT, || state(KeyState::Inactive)).await;

    let request = eventually("the Disabled notice", WAIT, || async { owners.received().pop() }).await;
    assert!(signed(&request), "signed with the secret of {NS}");
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body["type"], "apikey.disabled");
    assert_eq!((body["data"]["kind"].as_str(), body["data"]["name"].as_str()), (Some("ClusterApiKey"), Some("agency")));
    assert_eq!(body["data"].get("namespace"), None, "a cluster key is in no namespace: {body}");
    assert_eq!(body["data"]["state"], "Inactive");

    keys.patch("agency", &PatchParams::default(), &Patch::Merge(json!({"spec": {"active": true}}))).await.unwrap();
    eventually("the Enabled notice too", WAIT, || async { Some(owners.received()).filter(|r| r.len() == 2) }).await;
    assert!(location.received().is_empty(), "a namespace that only carries the key gets no notice");
    stop.send(()).unwrap();
    operator.await.unwrap();
}

/// Options whose retries wait a minute: a failed notice stays pending while the test looks.
fn slow_retries(max_pending: usize) -> WebhookOptions {
    WebhookOptions {
        retry: RetryPolicy { attempts: 5, base: Duration::from_secs(60), cap: Duration::from_secs(60) },
        max_pending,
        ..quick(5)
    }
}

/// The webhook's `status.pending` once it holds the ids `wanted` (in order) with `attempts` each.
async fn pending_is(client: &Client, name: &str, wanted: &[&str], attempts: u32) -> Vec<PendingDelivery> {
    eventually(&format!("{name}'s status.pending holding {wanted:?}"), WAIT, || async {
        let pending = webhook_status(client, name).await.map(|s| s.pending).unwrap_or_default();
        let ids: Vec<&str> = pending.iter().map(|p| p.id.as_str()).collect();
        (ids == wanted && pending.iter().all(|p| p.attempts == attempts)).then_some(pending)
    })
    .await
}

#[tokio::test]
async fn a_notice_pending_when_the_operator_stops_is_delivered_by_the_next_one_with_the_same_id() {
    let client = cluster().await;
    let receiver = Receiver::start(vec![Answer::Status(500), Answer::Status(204)]).await.unwrap();
    webhook(&client, "hook", json!({"url": receiver.url})).await;
    let first = Delivery::start(&client, slow_retries(10));
    // A note holding a token, as a careless step might write one: the notice redacts it.
    let token = crate::token::Token::generate(&crate::token::Prefix::default(), &mut rand::rng());
    let event = PlannedEvent {
        kind: EventKind::Normal,
        reason: Reason::Revoked,
        note: format!("Revoked, was {}", token.expose()),
    };
    let sent = notice(&key(json!({})), &event, "0123456789ab", crate::runtime::clock::now()).unwrap();
    first.notifier.notify(sent.clone());

    // The first attempt fails; the retry waits a minute, and the operator stops meanwhile.
    let pending = pending_is(&client, "hook", &[&sent.id], 1).await;
    first.stop().await;
    assert_eq!(receiver.received().len(), 1);
    let stored = webhook_status(&client, "hook").await.unwrap();
    assert_eq!(stored.pending, pending, "stopping wrote the pending notice as it stood");
    assert_eq!(stored.pending[0].body.as_bytes(), sent.body, "the body is kept byte for byte");
    assert_eq!(stored.pending[0].type_, crate::api::NoticeType::Revoked);
    let secret = SigningSecret::parse(SECRET.as_bytes()).unwrap();
    let seal = stored.pending[0].seal.as_deref().expect("the failed attempt sealed the entry");
    assert!(crate::notice::verify_seal(&secret, &sent.id, "apikey.revoked", &sent.body, seal));
    assert!(stored.last_delivery_result.is_none(), "a pending notice is no delivery: {stored:?}");
    assert!(!serde_json::to_string(&stored).unwrap().contains(token.expose()), "no token in status: {stored:?}");

    // The next operator runs two minutes later: the minute's backoff is over, it sends at once.
    let later: Clock = Arc::new(|| crate::runtime::clock::now().checked_add(SignedDuration::from_mins(2)).unwrap());
    let second = Delivery::start_with_clock(&client, slow_retries(10), later);
    let attempts =
        eventually("the resumed attempt", WAIT, || async { Some(receiver.received()).filter(|r| r.len() == 2) }).await;
    assert_eq!(attempts[1].header(HEADER_ID), sent.id, "the same message id, so the receiver can drop a repeat");
    assert_eq!(attempts[1].body, sent.body);
    assert!(signed(&attempts[1]), "signed like every attempt");
    let status = eventually("status Delivered with nothing pending", WAIT, || async {
        webhook_status(&client, "hook")
            .await
            .filter(|s| s.last_delivery_result.as_deref() == Some("Delivered") && s.pending.is_empty())
    })
    .await;
    assert_eq!(ready(&status).map(|r| r.0), Some("True".to_owned()));
    assert_eq!(second.metric(r#"keyward_webhook_pending{namespace="team-a",webhook="hook"}"#), Some("0".to_owned()));

    // A third operator finds nothing to resume; a step planned again is queued and delivered anew.
    second.stop().await;
    let third = Delivery::start(&client, quick(3));
    third.notifier.notify(sent.clone());
    eventually("the replanned step", WAIT, || async { Some(receiver.received()).filter(|r| r.len() == 3) }).await;
    third.stop().await;
}

/// Webhook `hook` whose receiver always answers `status`, and delivery with [`slow_retries`].
async fn failing_hook(status: u16, max_pending: usize) -> (Client, Receiver, Delivery) {
    let client = cluster().await;
    let receiver = Receiver::start(vec![Answer::Status(status)]).await.unwrap();
    webhook(&client, "hook", json!({"url": receiver.url})).await;
    let delivery = Delivery::start(&client, slow_retries(max_pending));
    (client, receiver, delivery)
}

#[tokio::test]
async fn a_step_planned_again_while_its_notice_is_pending_is_not_sent_twice() {
    let (client, receiver, delivery) = failing_hook(500, 10).await;
    let sent = a_notice(Reason::Disabled, json!({}));
    delivery.notifier.notify(sent.clone());
    pending_is(&client, "hook", &[&sent.id], 1).await;
    let other = a_notice(Reason::Revoked, json!({}));
    delivery.notifier.notify(sent.clone());
    delivery.notifier.notify(other.clone());
    // Routed in order: once the later notice is pending, the repeat was routed and not queued.
    pending_is(&client, "hook", &[&sent.id, &other.id], 1).await;
    assert_eq!(receiver.received().iter().filter(|r| r.header(HEADER_ID) == sent.id).count(), 1);
    delivery.stop().await;
}

#[tokio::test]
async fn over_the_bound_the_oldest_pending_notice_is_dropped_with_an_event_and_a_metric() {
    let (client, _receiver, delivery) = failing_hook(503, 2).await;
    let notices: Vec<Notice> =
        [Reason::Disabled, Reason::Enabled, Reason::Revoked].into_iter().map(|r| a_notice(r, json!({}))).collect();
    for notice in &notices {
        delivery.notifier.notify(notice.clone());
    }
    pending_is(&client, "hook", &[&notices[1].id, &notices[2].id], 1).await;
    event_seen(&client, "Warning", "PendingDropped").await;
    assert_eq!(
        delivery.metric(r#"keyward_webhook_pending_dropped_total{namespace="team-a",webhook="hook"}"#),
        Some("1".to_owned())
    );
    assert_eq!(delivery.metric(r#"keyward_webhook_pending{namespace="team-a",webhook="hook"}"#), Some("2".to_owned()));
    let status = webhook_status(&client, "hook").await.unwrap();
    assert!(ready(&status).is_none(), "nothing was delivered or given up: no Ready condition yet: {status:?}");
    delivery.stop().await;
}

#[tokio::test]
async fn a_deleted_webhook_drops_its_pending_notices_while_running_and_across_a_restart() {
    let client = cluster().await;
    let hooks: Api<ApiKeyWebhook> = Api::namespaced(client.clone(), NS);
    let failing = Receiver::start(vec![Answer::Status(500)]).await.unwrap();
    let kept = Receiver::start(vec![Answer::Status(500), Answer::Status(204)]).await.unwrap();
    webhook(&client, "running", json!({"url": failing.url})).await;
    webhook(&client, "restarted", json!({"url": failing.url})).await;
    webhook(&client, "kept", json!({"url": kept.url})).await;
    let first = Delivery::start(&client, slow_retries(10));
    let sent = a_notice(Reason::Revoked, json!({}));
    first.notifier.notify(sent.clone());
    for name in ["running", "restarted", "kept"] {
        pending_is(&client, name, &[&sent.id], 1).await;
    }

    // Deleted while its retry waits: the retry stops, its series go.
    hooks.delete("running", &kube::api::DeleteParams::default()).await.unwrap();
    eventually("the deleted webhook's series gone", WAIT, || async {
        first.metric(r#"keyward_webhook_pending{namespace="team-a",webhook="running"}"#).is_none().then_some(())
    })
    .await;
    first.stop().await;

    // Deleted while no operator runs, and created again under its name: the new one owes nothing.
    hooks.delete("restarted", &kube::api::DeleteParams::default()).await.unwrap();
    webhook(&client, "restarted", json!({"url": failing.url})).await;
    let later: Clock = Arc::new(|| crate::runtime::clock::now().checked_add(SignedDuration::from_mins(2)).unwrap());
    let second = Delivery::start_with_clock(&client, slow_retries(10), later);
    let resumed = eventually("the kept webhook's resumed notice", WAIT, || async {
        Some(kept.received()).filter(|r| r.len() == 2)
    })
    .await;
    assert_eq!(resumed[1].header(HEADER_ID), sent.id);
    eventually("the kept webhook delivered", WAIT, || async {
        webhook_status(&client, "kept").await.filter(|s| s.pending.is_empty() && s.last_delivery_result.is_some())
    })
    .await;
    // Resumed together at start: had the deleted webhooks' notices been resumed, they would be sent by now.
    assert_eq!(failing.received().len(), 2, "one attempt each before the deletions, none after");
    assert!(webhook_status(&client, "restarted").await.is_none_or(|s| s.pending.is_empty()));
    assert_eq!(second.metric(r#"keyward_webhook_pending{namespace="team-a",webhook="restarted"}"#), None);
    second.stop().await;
}

#[tokio::test]
async fn a_pending_notice_without_the_operators_seal_is_never_sent() {
    let client = cluster().await;
    let receiver = Receiver::start(vec![Answer::Status(204)]).await.unwrap();
    webhook(&client, "hook", json!({"url": receiver.url})).await;
    // What someone who may write the webhook's status, but not read its signing Secret, could
    // plant for the next leader to sign: no seal, and a seal made under another secret.
    let body = r#"{"type":"apikey.revoked","data":{"kind":"ApiKey","namespace":"team-a","name":"ceo-key"}}"#;
    let other = SigningSecret::parse(b"whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").unwrap();
    let planted = |id: &str, seal: Option<String>| PendingDelivery {
        id: id.to_owned(),
        type_: crate::api::NoticeType::Revoked,
        body: body.to_owned(),
        attempts: 1,
        next_attempt_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(crate::runtime::clock::now()),
        seal,
    };
    let entries = [
        planted("msg_planted_unsealed", None),
        planted(
            "msg_planted_other",
            Some(crate::notice::seal(&other, "msg_planted_other", "apikey.revoked", body.as_bytes())),
        ),
    ];
    Api::<ApiKeyWebhook>::namespaced(client.clone(), NS)
        .patch_status("hook", &PatchParams::default(), &Patch::Merge(json!({"status": {"pending": entries}})))
        .await
        .unwrap();

    let delivery = Delivery::start(&client, quick(3));
    let status = eventually("both planted notices given up", WAIT, || async {
        webhook_status(&client, "hook").await.filter(|s| s.pending.is_empty() && s.last_delivery_result.is_some())
    })
    .await;
    let (ready_status, reason, message) = ready(&status).unwrap();
    assert_eq!((ready_status.as_str(), reason.as_str()), ("False", "PendingUnsealed"), "{message}");
    assert!(message.contains("without a valid seal under the signing Secret"), "{message}");
    event_seen(&client, "Warning", "DeliveryFailing").await;
    assert!(receiver.received().is_empty(), "nothing planted is sent: {:?}", receiver.received().len());

    // The operator's own notices still go out, sealed while pending.
    let sent = a_notice(Reason::Disabled, json!({}));
    delivery.notifier.notify(sent.clone());
    let attempts =
        eventually("the operator's own notice", WAIT, || async { Some(receiver.received()).filter(|r| r.len() == 1) })
            .await;
    assert_eq!(attempts[0].header(HEADER_ID), sent.id);
    delivery.stop().await;
}
