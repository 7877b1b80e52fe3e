//! Adding up reports into one key's ledger: replicas, restarts, retries, foreign keys, windows, bounds and the write budget.

use std::collections::BTreeSet;

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
    report_of_set("team/default", pod, epoch, keys)
}

/// Pod `pod`'s report for key set `key_set` (`<namespace>/<name>`), with cumulative
/// `(allowed, expired)` per key id, the allowed ones last at 09:59:30.
pub(super) fn report_of_set(key_set: &str, pod: &str, epoch: &str, keys: &[(KeyId, u64, u64)]) -> Report {
    Report {
        pod: pod.into(),
        pod_uid: format!("uid-{pod}"),
        epoch: epoch.into(),
        at: t("2026-11-23T10:00:00Z").as_second(),
        key_sets: vec![key_set.to_owned()],
        keys: keys
            .iter()
            .map(|(id, allowed, expired)| {
                let last = (*allowed > 0).then(|| t("2026-11-23T09:59:30Z").as_second());
                (*id, Counts { allowed: *allowed, expired: *expired, last_allowed: last, ..Counts::default() })
            })
            .collect(),
    }
}

/// The ApiKey "crm" has two tokens (current and previous).
const CRM: [u8; 2] = [1, 2];

fn crm() -> Vec<KeyId> {
    CRM.iter().map(|n| id(*n)).collect()
}

fn live(reports: &[&Report]) -> Live {
    Live { sources: reports.iter().map(|r| source(r)).collect(), unreadable_pods: BTreeSet::new() }
}

/// Fold `reports` into `ledger` with every report live.
fn fold_all(ledger: Option<&UsageLedger>, reports: &[&Report], now: Timestamp) -> Fold {
    fold(ledger, reports, &crm(), &live(reports), now)
}

fn last24h(ledger: &UsageLedger, now: Timestamp) -> (u64, u64) {
    let counts = usage(ledger, now).last24h;
    (counts.allowed, counts.denied)
}

const E1: &str = "00000000000000a1";
const E2: &str = "00000000000000a2";

#[test]
fn counts_add_up_across_replicas_and_tokens_of_one_key() {
    let now = t("2026-11-23T10:00:10Z");
    let a = report("api-0", E1, &[(id(1), 5, 1), (id(3), 2, 0)]);
    let b = report("api-1", E1, &[(id(1), 7, 0), (id(2), 1, 0)]);
    let folded = fold_all(None, &[&a, &b], now);
    assert_eq!(last24h(&folded.ledger, now), (13, 1), "{folded:?}");
    assert_eq!(folded.added, [13, 1]);
}

#[test]
fn a_report_folded_again_or_rewritten_unchanged_adds_nothing() {
    let now = t("2026-11-23T10:00:10Z");
    let r = report("api-0", E1, &[(id(1), 5, 0)]);
    let once = fold_all(None, &[&r], now).ledger;
    let again = fold_all(Some(&once), &[&r], now + SignedDuration::from_secs(60));
    assert_eq!(again.added, [0, 0]);
    assert_eq!(again.ledger, once, "nothing new, the same ledger");
    // The ledger as stored in status and read back by a restarted operator still knows what it took.
    let text = serde_json::to_string(&once).unwrap();
    let restarted: UsageLedger = serde_json::from_str(&text).unwrap();
    let more = fold_all(Some(&restarted), &[&report("api-0", E1, &[(id(1), 8, 0)])], now);
    assert_eq!(last24h(&more.ledger, now), (8, 0));
}

#[test]
fn a_verifier_restart_starts_a_new_epoch_whose_counts_add_to_the_old() {
    let now = t("2026-11-23T10:00:10Z");
    let old = report("api-0", E1, &[(id(1), 5, 0)]);
    let ledger = fold_all(None, &[&old], now).ledger;
    // The restarted process overwrote the report: the old epoch's watermark goes, its counts stay.
    let new = report("api-0", E2, &[(id(1), 2, 0)]);
    let ledger = fold_all(Some(&ledger), &[&new], now).ledger;
    assert_eq!(last24h(&ledger, now), (7, 0));
    assert_eq!(ledger.folded.keys().collect::<Vec<_>>(), [&format!("api-0/{E2}")]);
    let ledger = fold_all(Some(&ledger), &[&report("api-0", E2, &[(id(1), 3, 0)])], now).ledger;
    assert_eq!(last24h(&ledger, now), (8, 0));
}

#[test]
fn an_unreadable_report_keeps_its_watermark_so_it_is_not_counted_again_from_zero() {
    let now = t("2026-11-23T10:00:10Z");
    let r = report("api-0", E1, &[(id(1), 5, 0)]);
    let ledger = fold_all(None, &[&r], now).ledger;
    let unreadable = Live { sources: BTreeSet::new(), unreadable_pods: BTreeSet::from(["api-0".to_owned()]) };
    let kept = fold(Some(&ledger), &[], &crm(), &unreadable, now).ledger;
    assert_eq!(kept, ledger);
    let back = fold_all(Some(&kept), &[&r], now);
    assert_eq!(back.added, [0, 0]);
}

#[test]
fn key_ids_of_other_keys_change_nothing() {
    let now = t("2026-11-23T10:00:10Z");
    let intruder = report("intruder", E1, &[(id(9), 1000, 0)]);
    let folded = fold_all(None, &[&intruder], now);
    assert_eq!(folded.ledger, UsageLedger::default(), "{folded:?}");
    assert_eq!(folded.last_used, None);
}

#[test]
fn windows_slide_by_whole_hours_and_days_and_include_a_bucket_the_window_overlaps() {
    // Counted in the bucket of 10:00 (hour) and of 23 November (day).
    let start = t("2026-11-23T10:00:10Z");
    let folded = fold_all(None, &[&report("api-0", E1, &[(id(1), 5, 0)])], start);
    let at = |now: &str| usage(&folded.ledger, t(now));
    let five = RequestCounts { allowed: 5, denied: 0 };
    assert_eq!(at("2026-11-24T10:59:59Z").last24h, five, "the 10:00 bucket still overlaps the last 24 h");
    assert_eq!(at("2026-11-24T11:00:00Z").last24h, RequestCounts::default());
    assert_eq!(at("2026-11-30T23:59:59Z").last7d, five);
    assert_eq!(at("2026-12-01T00:00:00Z").last7d, RequestCounts::default());
    assert_eq!(at("2026-12-23T23:59:59Z").last30d, five);
    assert_eq!(at("2026-12-24T00:00:00Z").last30d, RequestCounts::default());
    assert_eq!(folded.last_used, Some(t("2026-11-23T09:59:30Z")));
}

#[test]
fn buckets_older_than_the_windows_are_pruned_at_the_next_fold() {
    let start = t("2026-11-23T10:00:10Z");
    let ledger = fold_all(None, &[&report("api-0", E1, &[(id(1), 5, 0)])], start).ledger;
    let day = fold_all(Some(&ledger), &[], start + SignedDuration::from_hours(25)).ledger;
    assert!(day.hours.is_empty() && day.days.len() == 1, "{day:?}");
    let month = fold_all(Some(&day), &[], start + SignedDuration::from_hours(24 * 31)).ledger;
    assert_eq!(month, UsageLedger::default());
}

#[test]
fn a_report_time_in_the_future_cannot_move_last_use_past_now() {
    let now = t("2026-11-23T09:00:00Z");
    let folded = fold_all(None, &[&report("api-0", E1, &[(id(1), 1, 0)])], now);
    assert_eq!(folded.last_used, Some(now));
}

#[test]
fn past_the_watermark_bound_a_new_process_waits_and_is_then_added_in_full() {
    let now = t("2026-11-23T10:00:10Z");
    let reports: Vec<Report> = (0..=MAX_SOURCES).map(|i| report(&format!("api-{i}"), E1, &[(id(1), 1, 0)])).collect();
    let all: Vec<&Report> = reports.iter().collect();
    let full = fold_all(None, &all, now);
    assert_eq!(full.ledger.folded.len(), MAX_SOURCES);
    assert_eq!((full.waiting, full.added), (1, [MAX_SOURCES as u64, 0]));
    // One process goes away (its report is gone): the one that waited is added with all it counted.
    let later = report(&format!("api-{MAX_SOURCES}"), E1, &[(id(1), 4, 0)]);
    let rest: Vec<&Report> = all[1..MAX_SOURCES].iter().copied().chain([&later]).collect();
    let next = fold_all(Some(&full.ledger), &rest, now);
    assert_eq!((next.waiting, next.added), (0, [4, 0]));
    assert_eq!(next.ledger.folded.len(), MAX_SOURCES);
}

#[test]
fn a_ledger_with_many_processes_stays_small() {
    // 100 verifier processes, 30 days of use: the size of one key's status, whatever the number of keys.
    let mut ledger = None;
    let start = t("2026-11-01T00:00:00Z");
    for day in 0..30_u64 {
        let now = start + SignedDuration::from_hours(24 * i64::try_from(day).unwrap() + 23);
        let reports: Vec<Report> = (0..100)
            .map(|i| report(&format!("api-{i:03}"), "be0c00000000000a", &[(id(1), 1_000_000 + day, 10 + day)]))
            .collect();
        let all: Vec<&Report> = reports.iter().collect();
        ledger = Some(fold_all(ledger.as_ref(), &all, now).ledger);
    }
    let text = serde_json::to_string(&ledger.unwrap()).unwrap();
    assert!(text.len() < 12_000, "{} bytes", text.len());
}

#[test]
fn status_is_written_within_the_budget() {
    let budget = Budget::default();
    let now = t("2026-11-23T10:20:00Z");
    let r = |allowed| report("api-0", E1, &[(id(1), allowed, 0)]);
    let first = fold_all(None, &[&r(3)], now);
    // First time: lastUsedAt to the hour, and the counts.
    let written = status_write(Stored::default(), first, budget, now).expect("first write");
    assert_eq!(written.last_used, Some(t("2026-11-23T09:00:00Z")));
    let stored = Stored { last_used: written.last_used, usage: Some(&written.usage), ledger: Some(&written.ledger) };
    // Counts changed, but written a minute ago: nothing; the reports keep what waits.
    let minute = now + SignedDuration::from_mins(1);
    assert_eq!(status_write(stored, fold_all(stored.ledger, &[&r(9)], minute), budget, minute), None);
    // Five minutes later the counts go out; lastUsedAt stays on its hour.
    let later = now + SignedDuration::from_mins(5);
    let due = status_write(stored, fold_all(stored.ledger, &[&r(9)], later), budget, later).expect("counts due");
    assert_eq!((due.last_used, due.usage.last24h.allowed), (written.last_used, 9));
    // Nothing new is never rewritten.
    assert_eq!(status_write(stored, fold_all(stored.ledger, &[&r(3)], later), budget, later), None);
    // A use in the next hour moves lastUsedAt at once, and its write carries the fold.
    let mut next_hour = r(4);
    next_hour.keys.get_mut(&id(1)).unwrap().last_allowed = Some(t("2026-11-23T10:20:30Z").as_second());
    let moved = status_write(stored, fold_all(stored.ledger, &[&next_hour], minute), budget, minute).expect("moved");
    assert_eq!((moved.last_used, moved.usage.last24h.allowed), (Some(t("2026-11-23T10:00:00Z")), 4));
}

#[test]
fn a_key_nobody_reported_is_never_written() {
    let now = t("2026-11-23T10:20:00Z");
    let nothing = fold_all(None, &[], now);
    assert_eq!(status_write(Stored::default(), nothing, Budget::default(), now), None);
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

/// A ledger as someone might leave it by hand: buckets long gone, in the future, not numbers,
/// huge; a watermark of a process whose report is gone; and one of a live process.
fn hand_edited(now: Timestamp) -> UsageLedger {
    let s = now.as_second();
    let day = |d: i64| (s - s.rem_euclid(DAY) + d * DAY).to_string();
    let hour = |h: i64| (s - s.rem_euclid(HOUR) + h * HOUR).to_string();
    UsageLedger {
        hours: [(hour(0), [4, 0]), (hour(-30), [50, 0]), (hour(3), [7, 7]), ("soon".to_owned(), [1, 1])].into(),
        days: [(day(0), [4, 0]), (day(-40), [500, 5]), (day(2), [u64::MAX, 0]), ("x".to_owned(), [9, 9])].into(),
        folded: [
            (format!("api-0/{E1}"), [(id(1).to_string(), [4, 0])].into()),
            (format!("api-9/{E1}"), [(id(1).to_string(), [77, 0])].into()),
        ]
        .into(),
    }
}

#[test]
fn a_ledger_edited_by_hand_without_usage_is_pruned_and_counted_again_with_no_report_moved() {
    let now = t("2026-11-23T10:20:00Z");
    let ledger = hand_edited(now);
    // api-0's report is what it was when its 4 requests were folded; api-9's is gone.
    let r = report("api-0", E1, &[(id(1), 4, 0)]);
    let folded = fold_all(Some(&ledger), &[&r], now);
    assert_eq!(folded.added, [0, 0], "nothing new: the live watermark holds");
    let stored = Stored { last_used: Some(t("2026-11-23T09:00:00Z")), usage: None, ledger: Some(&ledger) };
    let written = status_write(stored, folded, Budget::default(), now).expect("rewritten at once");
    let s = now.as_second();
    let (this_hour, today) = ((s - s.rem_euclid(HOUR)).to_string(), (s - s.rem_euclid(DAY)).to_string());
    assert_eq!(written.ledger.hours, [(this_hour, [4, 0])].into(), "old, future and garbage hours pruned");
    assert_eq!(written.ledger.days, [(today, [4, 0])].into(), "old, future and garbage days pruned");
    assert_eq!(written.ledger.folded.keys().collect::<Vec<_>>(), [&format!("api-0/{E1}")]);
    let four = RequestCounts { allowed: 4, denied: 0 };
    assert_eq!((written.usage.last24h, written.usage.last7d, written.usage.last30d), (four, four, four));
    assert_eq!(written.last_used, stored.last_used, "the ledger never moves lastUsedAt");
}

#[test]
fn a_ledger_without_usage_and_nothing_to_prune_still_gets_its_counts_written() {
    let now = t("2026-11-23T10:20:00Z");
    let r = report("api-0", E1, &[(id(1), 4, 0)]);
    let ledger = fold_all(None, &[&r], now).ledger;
    let stored = Stored { last_used: Some(t("2026-11-23T09:00:00Z")), usage: None, ledger: Some(&ledger) };
    let later = now + SignedDuration::from_mins(1);
    let written =
        status_write(stored, fold_all(Some(&ledger), &[&r], later), Budget::default(), later).expect("written");
    assert_eq!((written.ledger, written.usage.last24h.allowed), (ledger, 4), "the same ledger, counted once");
}

#[test]
fn huge_counts_edited_into_a_ledger_saturate_and_never_wrap() {
    let now = t("2026-11-23T10:20:00Z");
    let s = now.as_second();
    let hour = |h: i64| (s - s.rem_euclid(HOUR) + h * HOUR).to_string();
    let ledger =
        UsageLedger { hours: [(hour(0), [u64::MAX, 0]), (hour(-1), [u64::MAX, 1])].into(), ..UsageLedger::default() };
    assert_eq!(last24h(&ledger, now), (u64::MAX, 1));
    let r = report("api-0", E1, &[(id(1), 4, 0)]);
    let folded = fold_all(Some(&ledger), &[&r], now);
    assert_eq!(folded.ledger.hours[&hour(0)], [u64::MAX, 0]);
}
