//! Adding up reports: replicas, restarts, retries, foreign keys, windows and the write budget.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};

use super::*;
use crate::api::RequestCounts;

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn id(n: u8) -> KeyId {
    format!("{n:012x}").parse().unwrap()
}

fn report(pod: &str, epoch: &str, keys: &[(KeyId, u64, u64)]) -> Report {
    Report {
        pod: pod.into(),
        pod_uid: format!("uid-{pod}"),
        epoch: epoch.into(),
        at: t("2026-11-23T10:00:00Z").as_second(),
        key_sets: vec!["team/default".into()],
        keys: keys
            .iter()
            .map(|(id, allowed, expired)| {
                let last = (*allowed > 0).then(|| t("2026-11-23T09:59:30Z").as_second());
                (*id, Counts { allowed: *allowed, expired: *expired, last_allowed: last, ..Counts::default() })
            })
            .collect(),
    }
}

fn members() -> BTreeMap<KeyId, String> {
    // Two tokens of one ApiKey (current and previous), and another key.
    BTreeMap::from([(id(1), "crm".to_owned()), (id(2), "crm".to_owned()), (id(3), "billing".to_owned())])
}

fn counts(aggregate: &Aggregate, name: &str, now: Timestamp) -> (u64, u64) {
    let (_, usage) = aggregate.usage(name, now).unwrap_or_default();
    (usage.last24h.allowed, usage.last24h.denied)
}

const E1: &str = "00000000000000a1";
const E2: &str = "00000000000000a2";

#[test]
fn counts_add_up_across_replicas_and_tokens_of_one_key() {
    let now = t("2026-11-23T10:00:10Z");
    let mut agg = Aggregate::default();
    agg.fold(&report("api-0", E1, &[(id(1), 5, 1), (id(3), 2, 0)]), &members(), now);
    agg.fold(&report("api-1", E1, &[(id(1), 7, 0), (id(2), 1, 0)]), &members(), now);
    assert_eq!(counts(&agg, "crm", now), (13, 1));
    assert_eq!(counts(&agg, "billing", now), (2, 0));
}

#[test]
fn a_report_read_again_or_rewritten_unchanged_adds_nothing() {
    let now = t("2026-11-23T10:00:10Z");
    let mut agg = Aggregate::default();
    let r = report("api-0", E1, &[(id(1), 5, 0)]);
    agg.fold(&r, &members(), now);
    let once = agg.clone();
    agg.fold(&r, &members(), now);
    agg.fold(&r, &members(), now + SignedDuration::from_secs(60));
    assert_eq!(counts(&agg, "crm", now + SignedDuration::from_secs(60)), (5, 0));
    // And the aggregate as stored and read back by a restarted operator still knows what it took.
    let text = serde_json::to_string(&once).unwrap();
    let mut restarted: Aggregate = serde_json::from_str(&text).unwrap();
    restarted.fold(&report("api-0", E1, &[(id(1), 8, 0)]), &members(), now);
    assert_eq!(counts(&restarted, "crm", now), (8, 0));
}

#[test]
fn a_verifier_restart_starts_a_new_epoch_whose_counts_add_to_the_old() {
    let now = t("2026-11-23T10:00:10Z");
    let mut agg = Aggregate::default();
    agg.fold(&report("api-0", E1, &[(id(1), 5, 0)]), &members(), now);
    agg.fold(&report("api-0", E2, &[(id(1), 2, 0)]), &members(), now);
    assert_eq!(counts(&agg, "crm", now), (7, 0));
    // The old epoch's report is gone (overwritten): its watermark is forgotten, its counts stay.
    let live = BTreeSet::from([format!("api-0/{E2}")]);
    agg.prune(&live, &BTreeSet::from(["crm".to_owned()]), now);
    assert_eq!(agg.consumed.len(), 1);
    agg.fold(&report("api-0", E2, &[(id(1), 3, 0)]), &members(), now);
    assert_eq!(counts(&agg, "crm", now), (8, 0));
}

#[test]
fn key_ids_outside_the_key_set_change_nothing() {
    let now = t("2026-11-23T10:00:10Z");
    let mut agg = Aggregate::default();
    agg.fold(&report("intruder", E1, &[(id(9), 1000, 0)]), &members(), now);
    assert!(agg.keys.is_empty(), "{agg:?}");
    assert!(agg.consumed.values().all(BTreeMap::is_empty));
}

#[test]
fn windows_slide_by_whole_hours_and_days_and_include_a_bucket_the_window_overlaps() {
    // Counted in the bucket of 10:00 (hour) and of 23 November (day).
    let start = t("2026-11-23T10:00:10Z");
    let mut agg = Aggregate::default();
    agg.fold(&report("api-0", E1, &[(id(1), 5, 0)]), &members(), start);
    let usage = |now: &str| agg.usage("crm", t(now)).unwrap().1;
    let five = RequestCounts { allowed: 5, denied: 0 };
    assert_eq!(usage("2026-11-24T10:59:59Z").last24h, five, "the 10:00 bucket still overlaps the last 24 h");
    assert_eq!(usage("2026-11-24T11:00:00Z").last24h, RequestCounts::default());
    assert_eq!(usage("2026-11-30T23:59:59Z").last7d, five);
    assert_eq!(usage("2026-12-01T00:00:00Z").last7d, RequestCounts::default());
    assert_eq!(usage("2026-12-23T23:59:59Z").last30d, five);
    assert_eq!(usage("2026-12-24T00:00:00Z").last30d, RequestCounts::default());
    let (last_used, _) = agg.usage("crm", start).unwrap();
    assert_eq!(last_used, Some(t("2026-11-23T09:59:30Z")));
}

#[test]
fn a_report_time_in_the_future_cannot_move_last_use_past_now() {
    let now = t("2026-11-23T09:00:00Z");
    let mut agg = Aggregate::default();
    agg.fold(&report("api-0", E1, &[(id(1), 1, 0)]), &members(), now);
    assert_eq!(agg.usage("crm", now).unwrap().0, Some(now));
}

#[test]
fn status_is_written_within_the_budget() {
    let budget = Budget::default();
    let now = t("2026-11-23T10:20:00Z");
    let used = Some(t("2026-11-23T10:17:12Z"));
    let usage = Usage { last24h: RequestCounts { allowed: 3, denied: 0 }, ..Usage::default() };
    // First time: lastUsedAt to the hour, and the counts.
    let (last, written) = status_write(None, None, used, &usage, budget, now).expect("first write");
    assert_eq!(last, Some(t("2026-11-23T10:00:00Z")));
    // Same hour, counts changed, but written a minute ago: nothing.
    let more = Usage { last24h: RequestCounts { allowed: 9, denied: 0 }, ..Usage::default() };
    let minute = now + SignedDuration::from_mins(1);
    assert_eq!(status_write(last, Some(&written), used, &more, budget, minute), None);
    // Five minutes later the counts go out; lastUsedAt stays on its hour.
    let later = now + SignedDuration::from_mins(5);
    let (last2, _) = status_write(last, Some(&written), used, &more, budget, later).expect("counts due");
    assert_eq!(last2, last);
    // Unchanged counts are never rewritten.
    assert_eq!(status_write(last, Some(&written), used, &usage, budget, later), None);
    // A use in the next hour moves lastUsedAt at once.
    let next_hour = Some(t("2026-11-23T11:00:01Z"));
    let (moved, _) = status_write(last, Some(&written), next_hour, &usage, budget, minute).expect("moved");
    assert_eq!(moved, Some(t("2026-11-23T11:00:00Z")));
}

#[test]
fn last_used_moves_only_forward_by_whole_steps() {
    let step = Budget::default().last_used_step;
    let stored = Some(t("2026-11-23T10:00:00Z"));
    assert_eq!(last_used_write(None, Some(t("2026-11-23T10:17:12Z")), step), Some(t("2026-11-23T10:00:00Z")));
    assert_eq!(last_used_write(stored, Some(t("2026-11-23T10:59:59Z")), step), None, "same hour");
    assert_eq!(last_used_write(stored, Some(t("2026-11-23T09:30:00Z")), step), None, "never back");
    assert_eq!(last_used_write(stored, Some(t("2026-11-23T11:00:01Z")), step), Some(t("2026-11-23T11:00:00Z")));
    assert_eq!(last_used_write(stored, None, step), None, "never used: nothing");
}
