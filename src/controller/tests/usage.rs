//! Usage: verifiers' reports added up into each ApiKey's ledger and status, on the in-memory API.

use std::collections::BTreeMap;

use jiff::SignedDuration;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::api::RequestCounts;
use crate::controller::usage::pace::Pace;
use crate::controller::usage::{LABEL_OLD_USAGE_AGGREGATE, Pass, delete_old_aggregates, pass, pass_with};
use crate::keyset::KeySetId;
use crate::plan::Settings;
use crate::plan::usage::Budget;
use crate::token::KeyId;
use crate::usage::{Counts, LABEL_USAGE_REPORT, REPORT_KEY, Report, report_name};

use super::examples::CRM;
use super::harness::{Harness, NS, harness};

const E1: &str = "00000000000000e1";
const E2: &str = "00000000000000e2";

fn set() -> KeySetId {
    KeySetId { namespace: NS.to_owned(), name: "default".to_owned() }
}

async fn ready_key(h: &Harness) -> KeyId {
    h.create(CRM).await;
    h.settle_ready("crm").await;
    h.get("crm").await.status.unwrap().current_key.unwrap().key_id.parse().unwrap()
}

/// Write (create or overwrite) pod `pod`'s report in `namespace`, as the verifier does.
async fn report(h: &Harness, namespace: &str, pod: &str, epoch: &str, key: KeyId, allowed: u64, denied: u64) {
    let counts = Counted { key, allowed, denied, at: (h.ctx.clock)() };
    write_report(&h.client, namespace, pod, epoch, &format!("{NS}/default"), counts).await;
}

/// What a verifier counted for one key id by `at`.
pub(super) struct Counted {
    pub key: KeyId,
    pub allowed: u64,
    /// Refused as rate limited.
    pub denied: u64,
    pub at: jiff::Timestamp,
}

/// Write (create or overwrite) pod `pod`'s report in `namespace` for a verifier serving `key_set`
/// (`<namespace>/<name>`), as the verifier does.
pub(super) async fn write_report(
    client: &kube::Client,
    namespace: &str,
    pod: &str,
    epoch: &str,
    key_set: &str,
    counted: Counted,
) {
    let now = counted.at.as_second();
    let report = Report {
        pod: pod.to_owned(),
        pod_uid: format!("uid-{pod}"),
        epoch: epoch.to_owned(),
        at: now,
        key_sets: vec![key_set.to_owned()],
        keys: BTreeMap::from([(
            counted.key,
            Counts {
                allowed: counted.allowed,
                rate_limited: counted.denied,
                last_allowed: (counted.allowed > 0).then_some(now),
                ..Counts::default()
            },
        )]),
    };
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(report_name(pod)),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(LABEL_USAGE_REPORT.to_owned(), "true".to_owned())])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(REPORT_KEY.to_owned(), report.encode())])),
        ..ConfigMap::default()
    };
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let body = serde_json::to_value(&cm).unwrap();
    api.patch(&report_name(pod), &PatchParams::apply("keyward-verifier").force(), &Patch::Apply(&body))
        .await
        .expect("report written");
}

async fn add_up_result(h: &Harness) -> Result<Pass, crate::controller::Error> {
    pass(&h.client, &set(), (h.ctx.clock)(), Budget::default()).await
}

async fn add_up(h: &Harness) -> Pass {
    add_up_result(h).await.expect("usage pass")
}

async fn last24h(h: &Harness) -> RequestCounts {
    h.get("crm").await.status.unwrap().usage.map(|u| u.last24h).unwrap_or_default()
}

#[tokio::test]
async fn counts_add_up_across_two_replicas_and_survive_a_verifier_restart() {
    let h = harness(Settings::default()).await;
    let id = ready_key(&h).await;
    report(&h, NS, "api-0", E1, id, 10, 1).await;
    report(&h, NS, "api-1", E1, id, 7, 0).await;
    add_up(&h).await;
    assert_eq!(last24h(&h).await, RequestCounts { allowed: 17, denied: 1 });

    // api-0 restarts: a new epoch counting from zero replaces its report.
    h.advance(SignedDuration::from_mins(5));
    report(&h, NS, "api-0", E2, id, 3, 0).await;
    report(&h, NS, "api-1", E1, id, 9, 0).await;
    add_up(&h).await;
    assert_eq!(last24h(&h).await, RequestCounts { allowed: 10 + 3 + 9, denied: 1 });
    let status = h.get("crm").await.status.unwrap();
    let last_used = status.last_used_at.expect("lastUsedAt set").0;
    assert_eq!(last_used.as_second() % 3600, 0, "lastUsedAt moves by whole hours: {last_used}");
}

#[tokio::test]
async fn a_retried_report_and_an_operator_restart_count_nothing_twice() {
    let h = harness(Settings::default()).await;
    let id = ready_key(&h).await;
    report(&h, NS, "api-0", E1, id, 4, 0).await;
    let first = add_up(&h).await;
    assert_eq!(first.status_writes, 1, "{first:?}");
    // The same cumulative report written again (a retry), and a fresh pass as a restarted operator makes.
    report(&h, NS, "api-0", E1, id, 4, 0).await;
    let again = add_up(&h).await;
    assert_eq!(again, Pass::default(), "nothing new, nothing written");
    h.advance(SignedDuration::from_mins(10));
    report(&h, NS, "api-0", E1, id, 6, 0).await;
    add_up(&h).await;
    assert_eq!(last24h(&h).await, RequestCounts { allowed: 6, denied: 0 });
}

#[tokio::test]
async fn a_write_from_a_stale_read_is_refused_and_counts_nothing_twice() {
    // Two operators (a leader change) or a retried write: both folded the same reports into the
    // ledger they read. The second write carries an old resourceVersion and is refused.
    let h = harness(Settings::default()).await;
    let id = ready_key(&h).await;
    report(&h, NS, "api-0", E1, id, 4, 0).await;
    let stale = vec![h.get("crm").await];
    assert_eq!(add_up(&h).await.status_writes, 1);
    let late = pass_with(&h.client, &set(), &stale, (h.ctx.clock)(), Budget::default()).await.expect("pass");
    assert_eq!((late.status_writes, late.conflicts), (0, 1), "{late:?}");
    assert_eq!(last24h(&h).await, RequestCounts { allowed: 4, denied: 0 });
    // A failed write loses nothing either: the report still holds the counts for the next pass.
    h.advance(SignedDuration::from_mins(5));
    report(&h, NS, "api-0", E1, id, 6, 0).await;
    h.inject("status crm", false);
    assert!(add_up_result(&h).await.is_err());
    assert_eq!(last24h(&h).await, RequestCounts { allowed: 4, denied: 0 });
    add_up(&h).await;
    add_up(&h).await;
    assert_eq!(last24h(&h).await, RequestCounts { allowed: 6, denied: 0 });
}

#[tokio::test]
async fn the_ledger_keeps_watermarks_of_live_reports_only() {
    let h = harness(Settings::default()).await;
    let id = ready_key(&h).await;
    report(&h, NS, "api-0", E1, id, 4, 0).await;
    report(&h, NS, "api-1", E1, id, 1, 0).await;
    add_up(&h).await;
    let ledger = h.get("crm").await.status.unwrap().usage_ledger.expect("a ledger");
    assert_eq!(ledger.folded.len(), 2, "{ledger:?}");
    // api-1's Pod is gone and its report with it (the garbage collector).
    let configmaps: Api<ConfigMap> = Api::namespaced(h.client.clone(), NS);
    configmaps.delete(&report_name("api-1"), &kube::api::DeleteParams::default()).await.unwrap();
    h.advance(SignedDuration::from_mins(5));
    report(&h, NS, "api-0", E1, id, 5, 0).await;
    add_up(&h).await;
    let status = h.get("crm").await.status.unwrap();
    let ledger = status.usage_ledger.unwrap();
    assert_eq!(ledger.folded.keys().collect::<Vec<_>>(), [&format!("api-0/{E1}")], "{ledger:?}");
    assert_eq!(status.usage.unwrap().last24h, RequestCounts { allowed: 6, denied: 0 });
}

#[tokio::test]
async fn an_old_operators_aggregate_is_deleted() {
    let h = harness(Settings::default()).await;
    let configmaps: Api<ConfigMap> = Api::namespaced(h.client.clone(), NS);
    let old = ConfigMap {
        metadata: ObjectMeta {
            name: Some("keyward-usage.default".to_owned()),
            labels: Some(BTreeMap::from([(LABEL_OLD_USAGE_AGGREGATE.to_owned(), "default".to_owned())])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([("aggregate.json".to_owned(), "{}".to_owned())])),
        ..ConfigMap::default()
    };
    configmaps.create(&kube::api::PostParams::default(), &old).await.unwrap();
    report(&h, NS, "api-0", E1, "abcdefabcdef".parse().unwrap(), 1, 0).await;
    assert_eq!(delete_old_aggregates(&h.client).await.expect("deleted"), 1);
    assert!(configmaps.get_opt("keyward-usage.default").await.unwrap().is_none());
    assert!(configmaps.get_opt(&report_name("api-0")).await.unwrap().is_some(), "reports stay");
}

#[tokio::test]
async fn status_counts_are_written_at_most_once_per_status_interval() {
    let h = harness(Settings::default()).await;
    let id = ready_key(&h).await;
    report(&h, NS, "api-0", E1, id, 1, 0).await;
    add_up(&h).await;
    h.advance(SignedDuration::from_mins(1));
    report(&h, NS, "api-0", E1, id, 2, 0).await;
    let early = add_up(&h).await;
    assert_eq!(early.status_writes, 0, "{early:?}");
    assert_eq!(last24h(&h).await.allowed, 1);
    h.advance(SignedDuration::from_mins(5));
    add_up(&h).await;
    assert_eq!(last24h(&h).await.allowed, 2);
}

#[tokio::test]
async fn reports_of_another_namespace_or_key_ids_of_other_keys_change_nothing() {
    let h = harness(Settings::default()).await;
    let id = ready_key(&h).await;
    report(&h, "intruder", "api-0", E1, id, 1000, 0).await;
    report(&h, NS, "api-1", E1, "abcdefabcdef".parse().unwrap(), 1000, 0).await;
    add_up(&h).await;
    assert_eq!(last24h(&h).await, RequestCounts::default());
    assert_eq!(h.get("crm").await.status.unwrap().last_used_at, None);
}

#[tokio::test]
async fn no_token_reaches_a_report_or_status() {
    let h = harness(Settings::default()).await;
    let id = ready_key(&h).await;
    report(&h, NS, "api-0", E1, id, 3, 0).await;
    add_up(&h).await;
    let token = h.secret_token("crm-apikey", crate::plan::DATA_TOKEN).await.unwrap();
    let configmaps: Api<ConfigMap> = Api::namespaced(h.client.clone(), NS);
    let report = configmaps.get(&report_name("api-0")).await.unwrap();
    let status = h.get("crm").await.status;
    assert!(status.as_ref().and_then(|s| s.usage_ledger.as_ref()).is_some(), "{status:?}");
    for text in [json!(report).to_string(), json!(status).to_string()] {
        assert!(!text.contains(&token), "a token leaked: {text}");
    }
}

#[tokio::test]
async fn the_periodic_pass_finds_the_namespaces_and_key_sets_that_have_reports() {
    let h = harness(Settings::default()).await;
    let id = ready_key(&h).await;
    report(&h, NS, "api-0", E1, id, 2, 0).await;
    crate::controller::usage::pass_all(&h.client, &h.ctx.clock, Budget::default(), &mut Pace::unpaced())
        .await
        .expect("pass over all");
    assert_eq!(last24h(&h).await, RequestCounts { allowed: 2, denied: 0 });
}

#[tokio::test]
async fn the_expiry_gauge_follows_the_unused_deadline_as_usage_moves_it() {
    let h = harness(Settings::default()).await;
    h.create("apiVersion: keyward.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: crm, namespace: team-a}\nspec: {scopes: [leads:read], expireAfterUnused: 30d}\n").await;
    h.settle_ready("crm").await;
    h.reconcile("crm").await;
    let gauge = |text: &str| -> Option<i64> {
        let series = "keyward_apikey_expiry_timestamp_seconds{namespace=\"team-a\",name=\"crm\",reason=\"Unused\"} ";
        text.lines().find_map(|l| l.strip_prefix(series)).and_then(|v| v.parse().ok())
    };
    let metrics = h.ctx.publisher.metrics();
    let ready_deadline = gauge(&metrics.encode()).expect("an unused deadline");

    let id = h.get("crm").await.status.unwrap().current_key.unwrap().key_id.parse().unwrap();
    h.advance(SignedDuration::from_hours(48));
    report(&h, NS, "api-0", E1, id, 1, 0).await;
    add_up(&h).await;
    h.reconcile("crm").await;
    let moved = gauge(&metrics.encode()).expect("still expiring");
    let used = (h.ctx.clock)().as_second();
    assert!(moved > ready_deadline, "a use two days later moves the deadline: {ready_deadline} -> {moved}");
    assert_eq!(moved, used - used % 3600 + 30 * 86_400, "30 days after lastUsedAt (to the hour)");
    let token = h.secret_token("crm-apikey", crate::plan::DATA_TOKEN).await.unwrap();
    assert!(!metrics.encode().contains(&token));
}
