//! A usage ledger edited by hand (or left without `usage`) is rewritten at the next pass that may
//! write the key, whether or not any report moved: pruned, its counts recomputed, nothing added
//! twice; and so are counts of a namespace whose reports are all gone.

use jiff::SignedDuration;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;

use crate::api::RequestCounts;
use crate::usage::report_name;

use super::harness::NS;
use super::usage_reads::{counts, key_id, name, reports, setup};

const DAY: i64 = 86_400;

#[tokio::test]
async fn a_ledger_edited_by_hand_without_usage_is_pruned_at_the_next_pass_though_no_report_moved() {
    let mut s = setup(2).await;
    reports(&s.h, 1, &[0], 4).await;
    assert_eq!(s.pass().await.0.status_writes, 1);
    let before = s.h.get(&name(0)).await.status.unwrap();
    // The verifier now reports only the other key (key 0 is not used any more), and someone
    // edits key 0's status by hand: `usage` gone; a day 40 days old, one in the future and one
    // that is not a number; a watermark of a verifier whose report is long gone.
    reports(&s.h, 1, &[1], 3).await;
    let now = (s.h.ctx.clock)().as_second();
    let today = now - now.rem_euclid(DAY);
    let edit = json!({"status": {"usage": null, "usageLedger": {
        "days": {(today - 40 * DAY).to_string(): [500, 5], (today + 2 * DAY).to_string(): [9, 9], "x": [1, 1]},
        "hours": {"soon": [1, 1]},
        "folded": {"api-9/00000000000000e1": {key_id(0).to_string(): [77, 0]}},
    }}});
    s.h.keys().patch_status(&name(0), &PatchParams::default(), &Patch::Merge(edit)).await.expect("edited");

    // A minute later, within the status interval (no `usage`, so no `updatedAt` holds it back).
    s.h.advance(SignedDuration::from_mins(1));
    s.watch.sync(&s.h.client).await;
    let (reads, _) = s.pass().await;
    assert_eq!(reads.status_writes, 2, "key 0 rewritten, key 1 counted: {reads:?}");
    let status = s.h.get(&name(0)).await.status.unwrap();
    let ledger = status.usage_ledger.expect("a ledger");
    assert_eq!(ledger.days, [(today.to_string(), [4, 0])].into(), "only today's bucket is left");
    assert!(ledger.hours.keys().all(|k| k.parse::<i64>().is_ok()), "{ledger:?}");
    assert_eq!(ledger.folded.keys().collect::<Vec<_>>(), ["api-0/00000000000000e1"], "the gone verifier's dropped");
    let four = RequestCounts { allowed: 4, denied: 0 };
    let usage = status.usage.expect("usage written again");
    assert_eq!((usage.last24h, usage.last7d, usage.last30d), (four, four, four), "counted once, nothing edited in");
    assert_eq!(status.last_used_at, before.last_used_at, "the ledger never moves lastUsedAt");

    // Nothing more to do: later passes add nothing and write nothing.
    for _ in 0..2 {
        s.h.advance(SignedDuration::from_mins(5));
        s.watch.sync(&s.h.client).await;
        s.pass().await;
        assert_eq!(counts(&s.h, 0).await, four);
    }
}

#[tokio::test]
async fn usage_removed_by_hand_is_written_again_without_counting_twice_while_the_report_stays() {
    let mut s = setup(1).await;
    reports(&s.h, 2, &[0], 4).await;
    assert_eq!(s.pass().await.0.status_writes, 1);
    let edit = json!({"status": {"usage": null}});
    s.h.keys().patch_status(&name(0), &PatchParams::default(), &Patch::Merge(edit)).await.expect("edited");
    s.h.advance(SignedDuration::from_mins(1));
    s.watch.sync(&s.h.client).await;
    let (reads, _) = s.pass().await;
    assert_eq!(reads.status_writes, 1, "{reads:?}");
    assert_eq!(counts(&s.h, 0).await, RequestCounts { allowed: 8, denied: 0 }, "the watermarks hold: 2 × 4, once");
}

#[tokio::test]
async fn counts_of_a_namespace_whose_verifiers_are_gone_still_leave_their_windows() {
    let mut s = setup(2).await;
    reports(&s.h, 1, &[0], 4).await;
    assert_eq!(s.pass().await.0.status_writes, 1);
    // The verifiers are gone, and their report with them: the namespace has no report left.
    let configmaps: kube::Api<ConfigMap> = kube::Api::namespaced(s.h.client.clone(), NS);
    configmaps.delete(&report_name("api-0"), &DeleteParams::default()).await.expect("report deleted");
    s.h.advance(SignedDuration::from_hours(25));
    s.watch.sync(&s.h.client).await;
    let (reads, (requests, _)) = s.pass().await;
    assert_eq!((reads.due, reads.status_writes, requests), (1, 1, 1), "key 0 only (key 1 never counted): {reads:?}");
    let status = s.h.get(&name(0)).await.status.unwrap();
    let usage = status.usage.unwrap();
    assert_eq!((usage.last24h.allowed, usage.last7d.allowed), (0, 4), "the hour left the 24 h window");
    assert!(status.usage_ledger.unwrap().folded.is_empty(), "the gone verifier's watermark is dropped");
    // Then it is read again only when its counts can change (once an hour at most).
    s.h.advance(SignedDuration::from_mins(5));
    s.watch.sync(&s.h.client).await;
    let (reads, (requests, _)) = s.pass().await;
    assert_eq!((reads.status_writes, requests), (0, 1), "{reads:?}");
    s.h.advance(SignedDuration::from_mins(5));
    let (reads, (requests, _)) = s.pass().await;
    assert_eq!((reads.quiet, requests), (1, 0), "{reads:?}");
}
