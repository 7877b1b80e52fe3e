//! ClusterApiKeys' usage on the in-memory API: the requests verifiers report in every namespace
//! a key is published to add up in its own status, and nothing from elsewhere; a stale write is
//! refused; a namespace that leaves stops counting; an unused cluster key expires, a used one not.

use std::sync::Arc;

use kube::Api;
use kube::api::ListParams;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::Event;

use crate::api::{ApiKey, ClusterApiKey, RequestCounts, UsageLedger};
use crate::controller::cluster::without_ledger;
use crate::controller::usage::due::{Cache, Reads};
use crate::controller::usage::pace::Pace;
use crate::controller::usage::{cluster::pass_with, pass_all};
use crate::plan::usage::Budget;
use crate::token::KeyId;
use jiff::SignedDuration;

use super::super::usage::{Counted, write_report};
use super::{AGENCY, Cluster, cluster, ready};

const E1: &str = "00000000000000f1";

impl Cluster {
    async fn key_id(&self, name: &str) -> KeyId {
        self.status(name).await.key.current_key.expect("a current token").key_id.parse().unwrap()
    }

    /// Pod `pod` of `namespace`, serving `key_set` there, reports `allowed`/`denied` requests with `key`.
    async fn report(&self, namespace: &str, pod: &str, key_set: &str, key: KeyId, allowed: u64, denied: u64) {
        let counted = Counted { key, allowed, denied, at: (self.ctx.clock)() };
        write_report(&self.client, namespace, pod, E1, &format!("{namespace}/{key_set}"), counted).await;
    }

    async fn add_up(&self) {
        pass_all(&self.client, &self.ctx.clock, Budget::default(), &mut Pace::unpaced()).await.expect("usage pass");
    }

    async fn last24h(&self, name: &str) -> RequestCounts {
        self.status(name).await.key.usage.map(|u| u.last24h).unwrap_or_default()
    }
}

#[tokio::test]
async fn a_cluster_key_used_in_two_namespaces_shows_their_sum_and_nothing_from_elsewhere() {
    let c = cluster().await;
    c.create(AGENCY).await;
    c.settle_ready("agency").await;
    let id = c.key_id("agency").await;
    // Two verifiers named alike in the two selected namespaces: two sources.
    c.report("loc-a", "api-0", "default", id, 3, 0).await;
    c.report("loc-b", "api-0", "default", id, 4, 1).await;
    // loc-c is not selected; a loc-a verifier of another key set; neither counts.
    c.report("loc-c", "api-0", "default", id, 1000, 0).await;
    c.report("loc-a", "tools-0", "internal", id, 1000, 0).await;
    let stale: Vec<ClusterApiKey> = vec![c.keys().get("agency").await.unwrap()];
    c.add_up().await;

    let status = c.status("agency").await;
    assert_eq!(c.last24h("agency").await, RequestCounts { allowed: 7, denied: 1 }, "{status:?}");
    let last_used = status.key.last_used_at.as_ref().expect("lastUsedAt set").0;
    assert_eq!(last_used.as_second() % 3600, 0, "lastUsedAt to the hour: {last_used}");
    let ledger = status.key.usage_ledger.as_ref().expect("its own ledger");
    let sources: Vec<&str> = ledger.folded.keys().map(String::as_str).collect();
    assert_eq!(sources, [format!("loc-a/api-0/{E1}"), format!("loc-b/api-0/{E1}")]);

    // A pass from a stale read (a second operator, a retried write) is refused and adds nothing.
    let late = pass_with(&c.client, &stale, (c.ctx.clock)(), Budget::default()).await.expect("pass");
    assert_eq!((late.status_writes, late.conflicts), (0, 1), "{late:?}");
    c.add_up().await;
    assert_eq!(c.last24h("agency").await, RequestCounts { allowed: 7, denied: 1 });

    // loc-b leaves the agency: what its verifier reports from then on does not count.
    c.label("loc-b", None).await;
    c.settle("agency").await;
    assert_eq!(c.status("agency").await.namespaces, ["loc-a"]);
    c.advance(SignedDuration::from_mins(5));
    c.report("loc-a", "api-0", "default", id, 5, 0).await;
    c.report("loc-b", "api-0", "default", id, 50, 1).await;
    c.add_up().await;
    assert_eq!(c.last24h("agency").await, RequestCounts { allowed: 9, denied: 1 });
    c.assert_no_token_leaks().await;
}

#[tokio::test]
async fn an_unused_cluster_key_expires_unused_and_one_used_in_a_selected_namespace_does_not() {
    let c = cluster().await;
    let with_expiry = AGENCY.replace("  rotation: {every: 30d, gracePeriod: 2h}\n", "  expireAfterUnused: 30d\n");
    assert_ne!(with_expiry, AGENCY);
    c.create(&with_expiry.replace("name: agency", "name: idle")).await;
    c.create(&with_expiry.replace("name: agency", "name: busy")).await;
    c.settle_ready("idle").await;
    c.settle_ready("busy").await;

    // Twenty days on, busy is used in loc-b.
    c.advance(SignedDuration::from_hours(20 * 24));
    let busy = c.key_id("busy").await;
    c.report("loc-b", "api-0", "default", busy, 1, 0).await;
    c.add_up().await;
    assert!(c.status("busy").await.key.last_used_at.is_some());

    c.advance(SignedDuration::from_hours(11 * 24));
    c.settle("idle").await;
    c.settle("busy").await;
    let idle = c.status("idle").await;
    assert_eq!(ready(&idle), ("False".to_owned(), "Unused".to_owned()), "{idle:?}");
    for ns in ["loc-a", "loc-b"] {
        assert_eq!(c.cluster_hashes(ns, "idle").await, Vec::<String>::new(), "{ns}: withdrawn");
        assert_eq!(c.cluster_hashes(ns, "busy").await.len(), 1, "{ns}: busy is still published");
    }
    assert_eq!(ready(&c.status("busy").await), ("True".to_owned(), "Active".to_owned()));
    let expired: Vec<_> = c.events().await.into_iter().filter(|(reason, _)| reason == "Unused").collect();
    assert_eq!(expired.len(), 1, "{expired:?}");

    // The expiry gauge carries busy's unused deadline, under namespace `cluster`.
    let metrics = c.ctx.publisher.metrics().encode();
    let series = "keyward_apikey_expiry_timestamp_seconds{namespace=\"cluster\",name=\"busy\",reason=\"Unused\"} ";
    let at: i64 = metrics.lines().find_map(|l| l.strip_prefix(series)).and_then(|v| v.parse().ok()).expect(series);
    let used = c.status("busy").await.key.last_used_at.unwrap().0;
    assert_eq!(at, used.as_second() + 30 * 86_400);
    c.assert_no_token_leaks().await;
}

/// The ClusterApiKey controller's store as its watch fills it (every key, without its ledger),
/// from what the API holds now, as the usage pass finds it.
async fn controller_store(c: &Cluster) -> Store<ClusterApiKey> {
    let (store, mut writer) = reflector::store();
    writer.apply_watcher_event(&Event::Init);
    for key in c.keys().list(&ListParams::default()).await.unwrap().items {
        writer.apply_watcher_event(&Event::InitApply(key).modify(without_ledger));
    }
    writer.apply_watcher_event(&Event::InitDone);
    assert!(store.state().iter().all(|k| {
        k.status.as_ref().is_none_or(|s| s.key.usage_ledger.as_deref().is_none_or(|l| *l == UsageLedger::default()))
    }));
    store
}

/// A usage pass from the caches (no ApiKey, cluster keys from `store`): what it did, and the
/// ClusterApiKey requests it made (GETs of one key, lists).
async fn pass_from(c: &Cluster, store: Store<ClusterApiKey>) -> (Reads, usize, usize) {
    let (apikeys, mut writer) = reflector::store::<ApiKey>();
    writer.apply_watcher_event(&Event::Init);
    writer.apply_watcher_event(&Event::InitDone);
    let mut cache = Cache::new(apikeys).with_cluster(Arc::new(move || Some(store.clone())));
    let from = c.request_count();
    let reads =
        cache.pass_all(&c.ctx.client, &c.ctx.clock, Budget::default(), &mut Pace::unpaced()).await.expect("pass");
    let of_cluster_keys: Vec<String> = c
        .requests_since(from)
        .into_iter()
        .filter(|(method, path)| method == "GET" && path.contains("/clusterapikeys"))
        .map(|(_, path)| path)
        .collect();
    let gets = of_cluster_keys.iter().filter(|path| path.split('?').next().unwrap().ends_with("/agency")).count();
    (reads, gets, of_cluster_keys.len() - gets)
}

#[tokio::test]
async fn from_the_controllers_store_a_pass_reads_only_the_cluster_keys_it_may_write() {
    let c = cluster().await;
    c.create(AGENCY).await;
    c.create(&AGENCY.replace("name: agency", "name: idle")).await;
    c.settle_ready("agency").await;
    c.settle_ready("idle").await;
    let id = c.key_id("agency").await;
    c.report("loc-a", "api-0", "default", id, 3, 0).await;
    let (reads, gets, others) = pass_from(&c, controller_store(&c).await).await;
    assert_eq!((reads.cluster_gets, gets, others), (1, 1, 0), "agency read alone, nothing listed: {reads:?}");
    assert_eq!(c.last24h("agency").await, RequestCounts { allowed: 3, denied: 0 });
    assert!(c.status("idle").await.key.usage.is_none(), "idle: not read, not written");

    // A store that lags (it still shows agency unwritten): agency looks due, is read, and the
    // fold of what is stored finds nothing new; nothing is counted twice.
    let fresh = controller_store(&c).await;
    let (store, mut writer) = reflector::store();
    writer.apply_watcher_event(&Event::Init);
    let mut old = c.keys().get("agency").await.unwrap();
    if let Some(status) = old.status.as_mut() {
        (status.key.usage, status.key.last_used_at, status.key.usage_ledger) = (None, None, None);
    }
    writer.apply_watcher_event(&Event::InitApply(old));
    writer.apply_watcher_event(&Event::InitDone);
    let (reads, gets, _) = pass_from(&c, store).await;
    assert_eq!((reads.cluster_gets, gets, reads.status_writes), (1, 1, 0), "{reads:?}");
    assert_eq!(c.last24h("agency").await, RequestCounts { allowed: 3, denied: 0 });

    // Up to date again, within the status interval and the hour: nothing is read.
    let (reads, gets, others) = pass_from(&c, fresh).await;
    assert_eq!((reads.cluster_gets, gets, others), (0, 0, 0), "{reads:?}");
    c.advance(SignedDuration::from_mins(5));
    c.report("loc-a", "api-0", "default", id, 5, 0).await;
    let (reads, gets, _) = pass_from(&c, controller_store(&c).await).await;
    assert_eq!((reads.cluster_gets, gets), (1, 1), "{reads:?}");
    assert_eq!(c.last24h("agency").await, RequestCounts { allowed: 5, denied: 0 });
}

/// ClusterApiKey requests and bytes read per usage pass, listing every cluster key (before)
/// against reading from the ClusterApiKey controller's store (after), for
/// `KEYWARD_CLUSTER_KEYS` cluster keys (default 100) published to one namespace and all busy, with
/// `KEYWARD_CLUSTER_REPLICAS` reporting verifiers there (default 100), over one status interval
/// (5 passes a minute apart, every key used at each; all first written in one pass). Prints them.
/// `cargo test --locked --lib cluster::usage::figures -- --ignored --nocapture`
#[tokio::test]
#[ignore = "a measurement: prints figures, run by hand"]
async fn figures() {
    use super::super::usage_reads::{Counter, counting, per_pass, reports_in};
    let env = |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let (n, replicas) = (env("KEYWARD_CLUSTER_KEYS", 100), env("KEYWARD_CLUSTER_REPLICAS", 100));
    let c = cluster().await;
    let ids: Vec<KeyId> = (0..n).map(|i| format!("{:012x}", 0xc000_0000_u64 + i as u64).parse().unwrap()).collect();
    for (i, id) in ids.iter().enumerate() {
        // As the controller leaves them (no reconcile: fast): a token, published to loc-a.
        let name = format!("k{i}");
        c.create(&AGENCY.replace("name: agency", &format!("name: {name}"))).await;
        let status = serde_json::json!({"status": {"namespaces": ["loc-a"],
            "currentKey": {"keyId": id.to_string(), "notBefore": "2026-01-01T00:00:00Z"}}});
        c.keys()
            .patch_status(&name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(status))
            .await
            .unwrap();
    }
    let now = || (c.ctx.clock)().as_second();
    reports_in(&c.client, "loc-a", now(), replicas, &ids, 1).await;
    pass_all(&c.client, &c.ctx.clock, Budget::default(), &mut Pace::unpaced()).await.expect("first pass");
    let counter = Arc::new(Counter::default());
    let client = counting(c.client.clone(), counter.clone());
    let (apikeys, mut writer) = reflector::store::<ApiKey>();
    writer.apply_watcher_event(&Event::Init);
    writer.apply_watcher_event(&Event::InitDone);
    let (mut before, mut after, mut peak) = ((0, 0), (0, 0), (0, 0));
    for minute in 1..=5_u64 {
        c.advance(SignedDuration::from_mins(1));
        reports_in(&c.client, "loc-a", now(), replicas, &ids, 1 + minute).await;
        let listed = Api::<ClusterApiKey>::all(client.clone()).list(&ListParams::default().match_any()).await.unwrap();
        assert_eq!(listed.items.len(), n);
        let (r, b) = counter.take_reads_of("/clusterapikeys");
        before = (before.0 + r, before.1 + b);
        let store = controller_store(&c).await;
        let mut cache = Cache::new(apikeys.clone()).with_cluster(Arc::new(move || Some(store.clone())));
        let reads = cache.pass_all(&client, &c.ctx.clock, Budget::default(), &mut Pace::unpaced()).await.expect("pass");
        let (r, b) = counter.take_reads_of("/clusterapikeys");
        after = (after.0 + r, after.1 + b);
        peak = peak.max((r, b));
        println!("minute {minute}: {} cluster keys read, {r} requests, {b} bytes", reads.cluster_gets);
    }
    for i in [0, n - 1] {
        let usage = c.status(&format!("k{i}")).await.key.usage.expect("written");
        assert_eq!(usage.last24h.allowed, 6 * replicas as u64, "k{i} written in the interval, each count once");
    }
    println!("N={n} R={replicas} (cluster keys): {}", per_pass(before, after, peak));
}
