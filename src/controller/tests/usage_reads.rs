//! The usage pass from the operator's cache reads only the keys it may write: requests and bytes
//! counted at the client, against the usage pass that lists every key.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use jiff::SignedDuration;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::watcher::Event;
use kube::{Api, Client};
use serde_json::json;

use crate::api::{ApiKey, RequestCounts};
use crate::controller::decode;
use crate::controller::run::slim;
use crate::controller::usage::due::{Cache, Reads};
use crate::controller::usage::pace::Pace;
use crate::controller::usage::pass_all;
use crate::plan::Settings;
use crate::plan::usage::Budget;
use crate::token::KeyId;
use crate::usage::{Counts, LABEL_USAGE_REPORT, REPORT_KEY, Report, report_name};

use super::harness::{Harness, NS, harness};

/// Every response the client received: method, path, body bytes, and when (tokio's clock).
#[derive(Default)]
pub(super) struct Counter {
    seen: Mutex<Vec<(String, String, usize, tokio::time::Instant)>>,
}

impl Counter {
    /// (requests, bytes) for ApiKeys since the last call.
    pub(super) fn take_apikeys(&self) -> (usize, usize) {
        self.take_reads_of("/apikeys")
    }

    /// (requests, bytes) of reads of paths with `resource` in them (`/clusterapikeys`) since the last call.
    pub(super) fn take_reads_of(&self, resource: &str) -> (usize, usize) {
        let seen = std::mem::take(&mut *self.seen.lock().unwrap());
        let of_keys = seen.iter().filter(|(method, path, _, _)| method == "GET" && path.contains(resource));
        of_keys.fold((0, 0), |(n, bytes), (_, _, b, _)| (n + 1, bytes + b))
    }

    /// When each status write (`PATCH .../apikeys/<name>/status` or `clusterapikeys`) was sent since
    /// the last call, with the path.
    pub(super) fn take_status_writes(&self) -> Vec<(tokio::time::Instant, String)> {
        self.take_writes_and_reads().0
    }

    /// [`Counter::take_status_writes`], and the (requests, bytes) of ApiKeys read meanwhile.
    pub(super) fn take_writes_and_reads(&self) -> (Vec<(tokio::time::Instant, String)>, (usize, usize)) {
        let seen = std::mem::take(&mut *self.seen.lock().unwrap());
        let of_keys = seen.iter().filter(|(method, path, _, _)| method == "GET" && path.contains("/apikeys"));
        let reads = of_keys.fold((0, 0), |(n, bytes), (_, _, b, _)| (n + 1, bytes + b));
        let writes = seen
            .into_iter()
            .filter(|(method, path, _, _)| method == "PATCH" && path.contains("apikeys/") && path.ends_with("/status"))
            .map(|(_, path, _, at)| (at, path))
            .collect();
        (writes, reads)
    }
}

/// `client`, counting what it reads.
pub(super) fn counting(client: Client, counter: Arc<Counter>) -> Client {
    let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
        let (client, counter) = (client.clone(), counter.clone());
        async move {
            let (method, path) = (request.method().to_string(), request.uri().path().to_owned());
            let at = tokio::time::Instant::now();
            let response = client.send(request).await?;
            let (parts, body) = response.into_parts();
            let bytes = http_body_util::BodyExt::collect(body).await?.to_bytes();
            counter.seen.lock().unwrap().push((method, path, bytes.len(), at));
            Ok::<_, tower::BoxError>(http::Response::from_parts(parts, http_body_util::Full::new(bytes)))
        }
    });
    Client::new(service, NS)
}

pub(super) fn key_id(i: usize) -> KeyId {
    format!("{:012x}", 0xa000_0000_u64 + i as u64).parse().unwrap()
}

pub(super) fn name(i: usize) -> String {
    format!("k{i}")
}

/// `n` ApiKeys with a current key id each, created as the operator leaves them (no reconcile: fast).
pub(super) async fn keys(h: &Harness, n: usize) {
    let api = h.keys();
    for i in 0..n {
        let key: ApiKey = serde_json::from_value(json!({
            "apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKey",
            "metadata": {"name": name(i), "namespace": NS},
            "spec": {"scopes": ["orders:read"]},
        }))
        .unwrap();
        api.create(&PostParams::default(), &key).await.expect("create");
        let status =
            json!({"status": {"currentKey": {"keyId": key_id(i).to_string(), "notBefore": "2026-01-01T00:00:00Z"}}});
        api.patch_status(&name(i), &PatchParams::default(), &Patch::Merge(status)).await.expect("status");
    }
}

/// Pod `api-<r>`'s report: keys `used` with `allowed` each, last used now.
pub(super) async fn reports(h: &Harness, replicas: usize, used: &[usize], allowed: u64) {
    let ids: Vec<KeyId> = used.iter().map(|&i| key_id(i)).collect();
    reports_in(&h.client, NS, (h.ctx.clock)().as_second(), replicas, &ids, allowed).await;
}

/// In `namespace`, pod `api-<r>`'s report for key set `<namespace>/default`: key ids `ids` with
/// `allowed` each, last used at `now` (Unix seconds).
pub(super) async fn reports_in(
    client: &Client,
    namespace: &str,
    now: i64,
    replicas: usize,
    ids: &[KeyId],
    allowed: u64,
) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    for r in 0..replicas {
        let pod = format!("api-{r}");
        let report = Report {
            pod: pod.clone(),
            pod_uid: format!("uid-{pod}"),
            epoch: "00000000000000e1".to_owned(),
            at: now,
            key_sets: vec![format!("{namespace}/default")],
            keys: ids
                .iter()
                .map(|id| (*id, Counts { allowed, last_allowed: Some(now), ..Counts::default() }))
                .collect(),
        };
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(report_name(&pod)),
                namespace: Some(namespace.to_owned()),
                labels: Some(BTreeMap::from([(LABEL_USAGE_REPORT.to_owned(), "true".to_owned())])),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([(REPORT_KEY.to_owned(), report.encode())])),
            ..ConfigMap::default()
        };
        let body = serde_json::to_value(&cm).unwrap();
        api.patch(&report_name(&pod), &PatchParams::apply("keyward-verifier").force(), &Patch::Apply(&body))
            .await
            .expect("report written");
    }
}

/// The operator's ApiKey cache as its watch fills it: every key, slimmed.
pub(super) struct Watch {
    pub(super) store: Store<ApiKey>,
    writer: Writer<ApiKey>,
}

impl Watch {
    pub(super) fn new() -> Watch {
        let (store, writer) = reflector::store();
        Watch { store, writer }
    }

    /// Catch up with the API (a re-list, as after a watch restart).
    pub(super) async fn sync(&mut self, client: &Client) {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &decode::api_resource());
        let listed = api.list(&ListParams::default()).await.expect("list");
        self.writer.apply_watcher_event(&Event::Init);
        for object in listed.items {
            self.writer.apply_watcher_event(&Event::InitApply(slim(object)));
        }
        self.writer.apply_watcher_event(&Event::InitDone);
    }
}

fn allowed_24h(key: &ApiKey) -> u64 {
    key.status.as_ref().and_then(|s| s.usage.as_ref()).map(|u| u.last24h.allowed).unwrap_or_default()
}

pub(super) async fn counts(h: &Harness, i: usize) -> RequestCounts {
    h.get(&name(i)).await.status.unwrap().usage.map(|u| u.last24h).unwrap_or_default()
}

pub(super) struct Setup {
    pub(super) h: Harness,
    pub(super) counter: Arc<Counter>,
    pub(super) client: Client,
    pub(super) watch: Watch,
    pub(super) cache: Cache,
    /// Unpaced unless a test sets one.
    pub(super) pace: Pace,
}

pub(super) async fn setup(n: usize) -> Setup {
    let h = harness(Settings::default()).await;
    keys(&h, n).await;
    let counter = Arc::new(Counter::default());
    let client = counting(h.client.clone(), counter.clone());
    let mut watch = Watch::new();
    watch.sync(&h.client).await;
    let cache = Cache::new(watch.store.clone());
    Setup { h, counter, client, watch, cache, pace: Pace::unpaced() }
}

impl Setup {
    pub(super) async fn pass(&mut self) -> (Reads, (usize, usize)) {
        self.counter.take_apikeys();
        let reads = self
            .cache
            .pass_all(&self.client, &self.h.ctx.clock, Budget::default(), &mut self.pace)
            .await
            .expect("pass");
        (reads, self.counter.take_apikeys())
    }
}

#[tokio::test]
async fn a_pass_reads_only_the_keys_it_may_write() {
    let mut s = setup(10).await;
    assert!(s.cache.ready());
    reports(&s.h, 2, &[0, 1, 2], 4).await;
    let (reads, (requests, _)) = s.pass().await;
    assert_eq!((reads.due, reads.gets, reads.lists, reads.status_writes), (3, 3, 0, 3), "{reads:?}");
    assert_eq!(requests, 3, "one GET per key counted, none of the 7 unused");
    assert_eq!(counts(&s.h, 0).await, RequestCounts { allowed: 8, denied: 0 });

    // A minute later: key 5 is used for the first time; 0-2 were written a minute ago.
    s.h.advance(SignedDuration::from_mins(1));
    s.watch.sync(&s.h.client).await;
    reports(&s.h, 2, &[0, 1, 2, 5], 6).await;
    let (reads, (requests, _)) = s.pass().await;
    assert_eq!((reads.due, reads.gets, reads.status_writes), (1, 1, 1), "{reads:?}");
    assert_eq!(requests, 1);
    assert_eq!(counts(&s.h, 5).await, RequestCounts { allowed: 12, denied: 0 });
    assert_eq!(counts(&s.h, 0).await, RequestCounts { allowed: 8, denied: 0 }, "not read, not written yet");
}

#[tokio::test]
async fn a_key_skipped_in_a_pass_is_counted_in_full_by_a_later_one() {
    let mut s = setup(3).await;
    reports(&s.h, 1, &[0], 4).await;
    assert_eq!(s.pass().await.0.status_writes, 1);
    for allowed in [10, 11, 12, 13] {
        s.h.advance(SignedDuration::from_mins(1));
        s.watch.sync(&s.h.client).await;
        reports(&s.h, 1, &[0], allowed).await;
        let (reads, (requests, _)) = s.pass().await;
        assert_eq!((reads.due, requests), (0, 0), "within the status interval nothing is read: {reads:?}");
    }
    s.h.advance(SignedDuration::from_mins(1));
    s.watch.sync(&s.h.client).await;
    reports(&s.h, 1, &[0], 20).await;
    let (reads, _) = s.pass().await;
    assert_eq!(reads.status_writes, 1, "{reads:?}");
    assert_eq!(counts(&s.h, 0).await, RequestCounts { allowed: 20, denied: 0 }, "every count skipped is in");
}

#[tokio::test]
async fn a_stale_cache_costs_a_read_never_a_count_twice() {
    let mut s = setup(2).await;
    reports(&s.h, 2, &[0, 1], 4).await;
    assert_eq!(s.pass().await.0.status_writes, 2);
    // The cache still shows both keys unwritten (the watch lags): they look due, are read, and the
    // fold of what is stored finds nothing new.
    for _ in 0..2 {
        let (reads, (requests, _)) = s.pass().await;
        assert_eq!((reads.due, reads.status_writes), (2, 0), "{reads:?}");
        assert!(requests > 0);
    }
    // A write from facts older still (another operator's, folded before ours) is refused.
    let stale: Vec<ApiKey> = vec![s.h.get(&name(0)).await];
    s.h.advance(SignedDuration::from_mins(5));
    reports(&s.h, 2, &[0, 1], 5).await;
    s.watch.sync(&s.h.client).await;
    assert_eq!(s.pass().await.0.status_writes, 2);
    let id = crate::keyset::KeySetId { namespace: NS.to_owned(), name: "default".to_owned() };
    let late = crate::controller::usage::pass_with(&s.h.client, &id, &stale, (s.h.ctx.clock)(), Budget::default())
        .await
        .expect("pass");
    assert_eq!((late.status_writes, late.conflicts), (0, 1), "{late:?}");
    for i in 0..2 {
        assert_eq!(counts(&s.h, i).await, RequestCounts { allowed: 10, denied: 0 }, "key {i}");
    }
}

#[tokio::test]
async fn a_key_with_nothing_new_is_read_once_per_hour() {
    let mut s = setup(1).await;
    reports(&s.h, 1, &[0], 4).await;
    assert_eq!(s.pass().await.0.status_writes, 1);
    // Due by time, but the reports hold nothing new: read once, then left alone within the hour.
    s.h.advance(SignedDuration::from_mins(5));
    s.watch.sync(&s.h.client).await;
    let (reads, (requests, _)) = s.pass().await;
    assert_eq!((reads.due, reads.status_writes, requests), (1, 0, 1), "{reads:?}");
    s.h.advance(SignedDuration::from_mins(1));
    let (reads, (requests, _)) = s.pass().await;
    assert_eq!((reads.due, reads.quiet, requests), (0, 1, 0), "{reads:?}");
    // New counts end the quiet at once.
    reports(&s.h, 1, &[0], 7).await;
    let (reads, _) = s.pass().await;
    assert_eq!((reads.due, reads.status_writes), (1, 1), "{reads:?}");
    assert_eq!(counts(&s.h, 0).await, RequestCounts { allowed: 7, denied: 0 });
}

/// Requests and bytes of ApiKeys read per pass, listing every key against reading from the
/// cache, for `KEYWARD_READS_KEYS` keys (default 1,000) all busy, with
/// `KEYWARD_READS_REPLICAS` reporting verifiers (default 100), over one status interval
/// (5 passes a minute apart, every key used at each). With `KEYWARD_READS_SPREAD=1` the keys
/// became busy a minute apart in five groups (writes spread over the interval), else all at once
/// (all written in the same pass). Prints the figures.
/// `cargo test --lib usage_reads::figures -- --ignored --nocapture`
#[tokio::test]
#[ignore = "a measurement: prints figures, run by hand"]
async fn figures() {
    let env = |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let (n, replicas) = (env("KEYWARD_READS_KEYS", 1_000), env("KEYWARD_READS_REPLICAS", 100));
    let spread = env("KEYWARD_READS_SPREAD", 0) == 1;
    let mut s = setup(n).await;
    let all: Vec<usize> = (0..n).collect();
    if spread {
        // Keys become busy in five groups a minute apart: their writes are spread over the interval.
        for group in 0..5 {
            let used: Vec<usize> = all.iter().copied().filter(|i| i % 5 <= group).collect();
            reports(&s.h, replicas, &used, 1).await;
            s.watch.sync(&s.h.client).await;
            s.pass().await;
            if group < 4 {
                s.h.advance(SignedDuration::from_mins(1));
            }
        }
    } else {
        // Every key written once (ledgers full), as after the first pass of an operator.
        reports(&s.h, replicas, &all, 1).await;
        pass_all(&s.client, &s.h.ctx.clock, Budget::default(), &mut Pace::unpaced()).await.expect("first pass");
    }
    s.counter.take_apikeys();
    let mut before = (0, 0);
    let mut after = (0, 0);
    let mut peak = (0, 0);
    for minute in 1..=5 {
        s.h.advance(SignedDuration::from_mins(1));
        reports(&s.h, replicas, &all, 1 + minute).await;
        // Listing every key, as the pass did: measured only (its writes would change the next pass).
        let api: Api<ApiKey> = Api::namespaced(s.client.clone(), NS);
        let listed = api.list(&ListParams::default().match_any()).await.expect("list");
        assert_eq!(listed.items.len(), n);
        let (r, b) = s.counter.take_apikeys();
        before = (before.0 + r, before.1 + b);
        s.watch.sync(&s.h.client).await;
        let (reads, (r, b)) = s.pass().await;
        after = (after.0 + r, after.1 + b);
        peak = peak.max((r, b));
        println!("minute {minute}: {reads:?}, {r} requests, {b} bytes");
    }
    let written = s.h.keys().list(&ListParams::default()).await.unwrap();
    let expected = if spread { 2..=6 * replicas as u64 } else { 6 * replicas as u64..=6 * replicas as u64 };
    assert!(written.items.iter().all(|k| expected.contains(&allowed_24h(k))), "every key written in the interval");
    println!("N={n} R={replicas} spread={spread}: {}", per_pass(before, after, peak));
}

/// The figures of five passes: (requests, bytes) listing every key, from the cache, and the largest pass.
#[allow(clippy::cast_precision_loss)]
pub(super) fn per_pass(before: (usize, usize), after: (usize, usize), peak: (usize, usize)) -> String {
    format!(
        "listing every key: {:.1} requests, {} bytes per pass; from the cache: {:.1} requests, {} bytes per pass on average over 5 passes (peak {} requests, {} bytes)",
        before.0 as f64 / 5.0,
        before.1 / 5,
        after.0 as f64 / 5.0,
        after.1 / 5,
        peak.0,
        peak.1
    )
}
