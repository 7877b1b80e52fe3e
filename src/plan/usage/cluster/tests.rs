//! A cluster key's ledger: namespace-qualified watermarks, only the namespaces and key set it is
//! published to, replicas in several namespaces, retries, and a namespace leaving the selector.

use std::collections::BTreeSet;

use jiff::{SignedDuration, Timestamp};

use super::*;
use crate::plan::usage::tests::report_of_set;
use crate::plan::usage::usage;

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

const NOW: &str = "2026-11-23T10:00:10Z";
const E1: &str = "00000000000000c1";
const E2: &str = "00000000000000c2";

/// The cluster key "agency": two tokens (current and previous).
fn agency() -> Vec<KeyId> {
    vec![id(1), id(2)]
}

fn id(n: u8) -> KeyId {
    format!("{n:012x}").parse().unwrap()
}

/// Pod `pod` of `namespace` serving key set `default` there, with cumulative `(allowed, expired)` per key id.
fn report(namespace: &str, pod: &str, epoch: &str, keys: &[(KeyId, u64, u64)]) -> Report {
    report_of_set(&format!("{namespace}/default"), pod, epoch, keys)
}

/// What the pass read: each namespace with its reports.
fn seen(reports: Vec<(&str, Report)>) -> ByNamespace {
    let mut seen = ByNamespace::new();
    for (namespace, report) in reports {
        seen.entry(namespace.to_owned()).or_default().reports.push(report);
    }
    seen
}

fn names(namespaces: &[&str]) -> Vec<String> {
    namespaces.iter().map(|n| (*n).to_owned()).collect()
}

/// Fold what `seen` holds for "agency", published to `namespaces` (key set `default`), into `stored`.
fn fold_agency(stored: Option<&UsageLedger>, seen: &ByNamespace, namespaces: &[&str], now: Timestamp) -> Fold {
    let counted = counted(seen, &names(namespaces), "default");
    fold(stored, &counted, &agency(), &live(seen), now)
}

fn last24h(ledger: &UsageLedger, now: Timestamp) -> (u64, u64) {
    let counts = usage(ledger, now).last24h;
    (counts.allowed, counts.denied)
}

fn watermarks(ledger: &UsageLedger) -> Vec<&str> {
    ledger.folded.keys().map(String::as_str).collect()
}

#[test]
fn counts_add_up_across_replicas_in_two_namespaces_and_pods_of_one_name_are_two_sources() {
    let now = t(NOW);
    let seen = seen(vec![
        ("loc-a", report("loc-a", "api-0", E1, &[(id(1), 5, 1)])),
        ("loc-a", report("loc-a", "api-1", E1, &[(id(1), 3, 0), (id(2), 1, 0)])),
        ("loc-b", report("loc-b", "api-0", E1, &[(id(1), 7, 0), (id(9), 100, 0)])),
    ]);
    let folded = fold_agency(None, &seen, &["loc-a", "loc-b"], now);
    assert_eq!(last24h(&folded.ledger, now), (16, 1), "{folded:?}");
    assert_eq!(folded.added, [16, 1]);
    assert_eq!(folded.last_used, Some(t("2026-11-23T09:59:30Z")));
    let expected = [format!("loc-a/api-0/{E1}"), format!("loc-a/api-1/{E1}"), format!("loc-b/api-0/{E1}")];
    assert_eq!(watermarks(&folded.ledger), expected.iter().map(String::as_str).collect::<Vec<_>>());
}

#[test]
fn reports_of_an_unselected_namespace_or_another_key_set_count_nothing() {
    let now = t(NOW);
    let seen = seen(vec![
        ("loc-a", report("loc-a", "api-0", E1, &[(id(1), 5, 0)])),
        // loc-c is not selected; its verifier knows the key id (it guessed, or was selected once).
        ("loc-c", report("loc-c", "api-0", E1, &[(id(1), 1000, 0)])),
        // A verifier of loc-a serving another key set, and one claiming loc-c's set from loc-a.
        ("loc-a", report_of_set("loc-a/internal", "tools-0", E1, &[(id(1), 1000, 0)])),
        ("loc-a", report_of_set("loc-c/default", "tools-1", E1, &[(id(1), 1000, 0)])),
        // A report of loc-b claiming loc-a's key set: counted only as loc-b's, which is not selected.
        ("loc-b", report("loc-a", "api-9", E1, &[(id(1), 1000, 0)])),
    ]);
    let folded = fold_agency(None, &seen, &["loc-a"], now);
    assert_eq!(last24h(&folded.ledger, now), (5, 0), "{folded:?}");
    assert_eq!(watermarks(&folded.ledger), [format!("loc-a/api-0/{E1}").as_str()]);
    let counted: Vec<(&str, &str)> =
        counted(&seen, &names(&["loc-a"]), "default").into_iter().map(|(ns, r)| (ns, r.pod.as_str())).collect();
    assert_eq!(counted, [("loc-a", "api-0")]);
}

#[test]
fn a_fold_repeated_from_the_same_or_the_written_ledger_adds_nothing_twice() {
    // A write refused with 409 (another write came first) is folded again from what is stored
    // then: either the ledger it started from (the same result) or the one written (nothing new).
    let now = t(NOW);
    let seen = seen(vec![
        ("loc-a", report("loc-a", "api-0", E1, &[(id(1), 5, 0)])),
        ("loc-b", report("loc-b", "api-0", E1, &[(id(1), 2, 0)])),
    ]);
    let first = fold_agency(None, &seen, &["loc-a", "loc-b"], now);
    let retried = fold_agency(None, &seen, &["loc-a", "loc-b"], now);
    assert_eq!(retried, first, "a fold is a function of the stored ledger and the reports");
    let after_write = fold_agency(Some(&first.ledger), &seen, &["loc-a", "loc-b"], now + SignedDuration::from_mins(5));
    assert_eq!(after_write.added, [0, 0]);
    assert_eq!(last24h(&after_write.ledger, now), (7, 0));
}

#[test]
fn a_namespace_leaving_the_selector_stops_counting_and_its_watermark_stays_while_its_report_lives() {
    let now = t(NOW);
    let both = ["loc-a", "loc-b"];
    let start = seen(vec![
        ("loc-a", report("loc-a", "api-0", E1, &[(id(1), 5, 0)])),
        ("loc-b", report("loc-b", "api-0", E1, &[(id(1), 2, 0)])),
    ]);
    let ledger = fold_agency(None, &start, &both, now).ledger;

    // loc-b is relabelled out; its verifier still reports (requests in flight before it learnt).
    let later = now + SignedDuration::from_mins(5);
    let out = seen(vec![
        ("loc-a", report("loc-a", "api-0", E1, &[(id(1), 6, 0)])),
        ("loc-b", report("loc-b", "api-0", E1, &[(id(1), 4, 0)])),
    ]);
    let folded = fold_agency(Some(&ledger), &out, &["loc-a"], later);
    assert_eq!(folded.added, [1, 0], "only loc-a's new request: {folded:?}");
    assert_eq!(folded.ledger.folded[&format!("loc-b/api-0/{E1}")][&id(1).to_string()], [2, 0], "kept, not raised");

    // Selected again: only what loc-b counted since its watermark is added, not its 4 again.
    let back = fold_agency(Some(&folded.ledger), &out, &both, later);
    assert_eq!(back.added, [2, 0], "{back:?}");
    assert_eq!(last24h(&back.ledger, later), (6 + 4, 0));

    // Its Pod goes, and the report with it: the watermark goes, the counts stay, nothing negative.
    let gone = seen(vec![("loc-a", report("loc-a", "api-0", E1, &[(id(1), 6, 0)]))]);
    let folded = fold_agency(Some(&back.ledger), &gone, &["loc-a"], later);
    assert_eq!(folded.added, [0, 0]);
    assert_eq!(watermarks(&folded.ledger), [format!("loc-a/api-0/{E1}").as_str()]);
    assert_eq!(last24h(&folded.ledger, later), (10, 0));
}

#[test]
fn an_unreadable_report_keeps_the_watermark_of_its_own_namespace_only() {
    let now = t(NOW);
    let start = seen(vec![
        ("loc-a", report("loc-a", "api-0", E1, &[(id(1), 5, 0)])),
        ("loc-b", report("loc-b", "api-0", E1, &[(id(1), 2, 0)])),
    ]);
    let ledger = fold_agency(None, &start, &["loc-a", "loc-b"], now).ledger;
    // loc-a's api-0 report cannot be read right now; loc-b's api-0 is gone.
    let mut now_seen = ByNamespace::new();
    now_seen.insert("loc-a".into(), NamespaceReports { reports: Vec::new(), unreadable_pods: vec!["api-0".into()] });
    let kept = fold_agency(Some(&ledger), &now_seen, &["loc-a", "loc-b"], now).ledger;
    assert_eq!(watermarks(&kept), [format!("loc-a/api-0/{E1}").as_str()]);
    // Readable again, unchanged: nothing counted twice.
    let again = fold_agency(Some(&kept), &start, &["loc-a"], now);
    assert_eq!(again.added, [0, 0]);
}

#[test]
fn a_restarted_verifier_in_one_namespace_adds_its_new_epoch() {
    let now = t(NOW);
    let start = seen(vec![("loc-a", report("loc-a", "api-0", E1, &[(id(1), 5, 0)]))]);
    let ledger = fold_agency(None, &start, &["loc-a"], now).ledger;
    let restarted = seen(vec![("loc-a", report("loc-a", "api-0", E2, &[(id(1), 2, 0)]))]);
    let folded = fold_agency(Some(&ledger), &restarted, &["loc-a"], now);
    assert_eq!(last24h(&folded.ledger, now), (7, 0));
    assert_eq!(watermarks(&folded.ledger), [format!("loc-a/api-0/{E2}").as_str()]);
}

#[test]
fn only_keys_keeps_every_report_with_the_cluster_keys_counts_only() {
    let reports = vec![
        report("loc-a", "api-0", E1, &[(id(1), 5, 0), (id(9), 100, 0)]),
        report("loc-a", "api-1", E1, &[(id(9), 3, 0)]),
    ];
    let of_namespace = NamespaceReports { reports, unreadable_pods: vec!["api-2".into()] };
    let kept = only_keys(of_namespace, &BTreeSet::from([id(1), id(2)]));
    assert_eq!(kept.unreadable_pods, ["api-2"]);
    let kept = kept.reports;
    assert_eq!(kept.len(), 2, "every report stays: its source is live");
    assert_eq!(kept[0].keys.keys().copied().collect::<Vec<_>>(), [id(1)]);
    assert!(kept[1].keys.is_empty());
}

#[test]
fn a_cluster_keys_ledger_at_its_watermark_bound_stays_small() {
    // 16 namespaces × 16 verifier processes (MAX_SOURCES), 30 days of use: one cluster key's ledger.
    let mut ledger = None;
    let start = t("2026-11-01T00:00:00Z");
    for day in 0..30_u64 {
        let now = start + SignedDuration::from_hours(24 * i64::try_from(day).unwrap() + 23);
        let mut reports = Vec::new();
        for ns in 0..16 {
            let namespace = format!("location-{ns:02}");
            for pod in 0..16 {
                let r =
                    report(&namespace, &format!("api-{pod:03}"), "be0c00000000000a", &[(id(1), 1_000_000 + day, 10)]);
                reports.push((namespace.clone(), r));
            }
        }
        let seen = seen(reports.iter().map(|(ns, r)| (ns.as_str(), r.clone())).collect());
        let namespaces: Vec<&str> = seen.keys().map(String::as_str).collect();
        let folded = fold_agency(ledger.as_ref(), &seen, &namespaces, now);
        assert_eq!(folded.waiting, 0);
        ledger = Some(folded.ledger);
    }
    let ledger = ledger.unwrap();
    assert_eq!(ledger.folded.len(), crate::plan::usage::MAX_SOURCES);
    let text = serde_json::to_string(&ledger).unwrap();
    assert!(text.len() < 32_000, "{} bytes", text.len());
}
