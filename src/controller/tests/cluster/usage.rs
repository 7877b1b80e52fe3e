//! ClusterApiKeys' usage on the in-memory API: the requests verifiers report in every namespace
//! a key is published to add up in its own status, and nothing from elsewhere; a stale write is
//! refused; a namespace that leaves stops counting; an unused cluster key expires, a used one not.

use crate::api::{ClusterApiKey, RequestCounts};
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
