//! Deliveries not yet done, per webhook: the bounded list kept in `status.pending`, so the next
//! leader resumes them after a restart or a leader change.
//!
//! Each (notice, webhook) pair waiting for a (further) attempt is one
//! [`PendingDelivery`]: the message id, the kind, the body byte for byte, the
//! attempts made and when the next is due. A webhook holds at most its bound;
//! a new notice over it drops the oldest (its retries stop). The list is data
//! only: the [`Tracker`](super::Tracker) keeps it with the webhook's other
//! outcomes and writes it with them, at most once per status interval.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::task::AbortHandle;

use crate::api::{PENDING_BODY_MAX_BYTES, PendingDelivery};
use crate::notice::Notice;

/// Where a delivery task starts: the number of its next attempt, how long to wait for it, and
/// for a resumed entry the seal its first attempt checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Start {
    /// 1 for a new notice; one more than the attempts a previous leader made for a resumed one.
    pub attempt: u32,
    /// The backoff left before that attempt.
    pub wait: Duration,
    /// Where the notice comes from.
    pub origin: Origin,
}

/// Where a delivered notice comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Origin {
    /// Planned by this leader.
    Planned,
    /// Read from `status.pending`, with its seal (if it had one): sent only if the seal checks
    /// out under the webhook's signing secret.
    Stored(Option<String>),
}

impl Start {
    /// A new notice: the first attempt, at once.
    pub const NOW: Start = Start { attempt: 1, wait: Duration::ZERO, origin: Origin::Planned };
}

/// The pending entry of a new `notice`, due `now`; `None` when its body is over the bound
/// the schema allows (it is then delivered, but not resumed after a restart).
pub(super) fn entry(notice: &Notice, now: Timestamp) -> Option<PendingDelivery> {
    if notice.body.len() > PENDING_BODY_MAX_BYTES {
        return None;
    }
    Some(PendingDelivery {
        id: notice.id.clone(),
        type_: notice.kind,
        body: String::from_utf8(notice.body.clone()).ok()?,
        attempts: 0,
        next_attempt_at: Time(now),
        seal: None,
    })
}

/// Whether a stored entry is one this operator could have written: its body is a JSON object
/// whose `type` is the entry's kind. Anything else (edited, truncated) is not sent.
pub(super) fn well_formed(entry: &PendingDelivery) -> bool {
    serde_json::from_str::<serde_json::Value>(&entry.body).is_ok_and(|body| body["type"] == entry.type_.event_type())
}

/// The notice a stored entry sends to the webhook of `namespace` (labels matter no more: it is routed).
pub(super) fn notice(entry: &PendingDelivery, namespace: &str) -> Notice {
    Notice {
        kind: entry.type_,
        id: entry.id.clone(),
        namespace: namespace.to_owned(),
        labels: std::collections::BTreeMap::new(),
        body: entry.body.clone().into_bytes(),
    }
}

/// Where a resumed entry starts at `now`: the attempt after those made, after the backoff left
/// (none when it is past due, at most `cap` when the stored time is further than a retry waits).
pub(super) fn resume_at(entry: &PendingDelivery, now: Timestamp, cap: Duration) -> Start {
    let left = entry.next_attempt_at.0.duration_since(now);
    let wait = Duration::try_from(left.max(SignedDuration::ZERO)).unwrap_or(Duration::ZERO).min(cap);
    Start { attempt: entry.attempts.saturating_add(1), wait, origin: Origin::Stored(entry.seal.clone()) }
}

/// One webhook's pending deliveries, oldest first, with the task retrying each.
#[derive(Debug, Clone, Default)]
pub(super) struct Queue {
    entries: Vec<(PendingDelivery, Option<AbortHandle>)>,
}

impl Queue {
    /// A queue holding what a previous leader stored, no task yet.
    pub fn stored(entries: &[PendingDelivery]) -> Queue {
        Queue { entries: entries.iter().cloned().map(|e| (e, None)).collect() }
    }

    /// Add `entry` unless its notice is pending already (`false`), dropping the oldest over `max`:
    /// their tasks are aborted, and the number dropped is returned.
    pub fn push(&mut self, entry: PendingDelivery, max: usize) -> Option<usize> {
        if self.entries.iter().any(|(e, _)| e.id == entry.id) {
            return None;
        }
        self.entries.push((entry, None));
        let over = self.entries.len().saturating_sub(max.max(1));
        for (_, task) in self.entries.drain(..over) {
            if let Some(task) = task {
                task.abort();
            }
        }
        Some(over)
    }

    /// The task now retrying notice `id`; none when the notice is gone (delivered already).
    pub fn attach(&mut self, id: &str, task: AbortHandle) {
        if let Some((_, slot)) = self.entries.iter_mut().find(|(e, _)| e.id == id) {
            *slot = Some(task);
        }
    }

    /// Notice `id` failed its attempt number `attempts`; the next is due `next`. Whether it is pending.
    pub fn retrying(&mut self, id: &str, attempts: u32, next: Timestamp) -> bool {
        let Some((entry, _)) = self.entries.iter_mut().find(|(e, _)| e.id == id) else { return false };
        entry.attempts = attempts;
        entry.next_attempt_at = Time(next);
        true
    }

    /// Notice `id`'s seal under the webhook's current signing secret. Whether it is pending.
    pub fn sealed(&mut self, id: &str, seal: String) -> bool {
        let Some((entry, _)) = self.entries.iter_mut().find(|(e, _)| e.id == id) else { return false };
        let changed = entry.seal.as_ref() != Some(&seal);
        entry.seal = Some(seal);
        changed
    }

    /// Notice `id` is done (delivered or given up). Whether it was pending.
    pub fn remove(&mut self, id: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|(e, _)| e.id != id);
        self.entries.len() != before
    }

    /// Stop every task (the webhook is gone).
    pub fn abort_all(&mut self) {
        for (_, task) in self.entries.drain(..) {
            if let Some(task) = task {
                task.abort();
            }
        }
    }

    /// The entries, oldest first, as `status.pending` holds them.
    pub fn entries(&self) -> Vec<PendingDelivery> {
        self.entries.iter().map(|(e, _)| e.clone()).collect()
    }

    /// How many are pending.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::NoticeType;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).unwrap()
    }

    fn pending(id: &str) -> PendingDelivery {
        PendingDelivery {
            id: id.to_owned(),
            type_: NoticeType::Revoked,
            body: "{}".to_owned(),
            attempts: 0,
            next_attempt_at: Time(at(0)),
            seal: None,
        }
    }

    fn ids(queue: &Queue) -> Vec<String> {
        queue.entries().into_iter().map(|e| e.id).collect()
    }

    #[test]
    fn over_the_bound_the_oldest_notices_are_dropped_and_counted() {
        let mut queue = Queue::default();
        let pushed: Vec<Option<usize>> = ["a", "b", "c", "d"].iter().map(|id| queue.push(pending(id), 3)).collect();
        assert_eq!(pushed, [Some(0), Some(0), Some(0), Some(1)]);
        assert_eq!(ids(&queue), ["b", "c", "d"]);
    }

    #[test]
    fn a_notice_already_pending_is_not_added_twice() {
        let mut queue = Queue::stored(&[pending("a")]);
        assert_eq!(queue.push(pending("a"), 10), None);
        assert_eq!(queue.len(), 1);
    }

    #[test]
    fn a_retry_records_its_attempts_and_a_delivery_removes_the_entry() {
        let mut queue = Queue::stored(&[pending("a"), pending("b")]);
        assert!(queue.retrying("a", 3, at(40)));
        assert!(!queue.retrying("gone", 1, at(5)), "a notice not pending stays out");
        let a = &queue.entries()[0];
        assert_eq!((a.attempts, a.next_attempt_at.0), (3, at(40)));
        assert!(queue.remove("a"));
        assert!(!queue.remove("a"));
        assert_eq!(ids(&queue), ["b"]);
    }

    #[test]
    fn a_resumed_notice_waits_the_backoff_left_and_counts_on_from_its_attempts() {
        let mut entry = pending("a");
        entry.attempts = 3;
        entry.next_attempt_at = Time(at(30));
        let cap = Duration::from_secs(300);
        entry.seal = Some("c2VhbA==".to_owned());
        let stored = Origin::Stored(entry.seal.clone());
        let start = |wait| Start { attempt: 4, wait, origin: stored.clone() };
        assert_eq!(resume_at(&entry, at(10), cap), start(Duration::from_secs(20)));
        assert_eq!(resume_at(&entry, at(90), cap), start(Duration::ZERO), "past due: at once");
        assert_eq!(
            resume_at(&entry, at(-3_600), cap),
            start(cap),
            "a time further than any backoff (another clock) waits the cap at most"
        );
    }

    #[test]
    fn an_attempt_seals_the_entry_it_retries_and_only_that_one() {
        let mut queue = Queue::stored(&[pending("a"), pending("b")]);
        assert!(queue.sealed("a", "s1".to_owned()), "a new seal is news for status");
        assert!(!queue.sealed("a", "s1".to_owned()), "the same seal again is not");
        assert!(queue.sealed("a", "s2".to_owned()), "a rotated secret seals anew");
        assert!(!queue.sealed("gone", "s1".to_owned()));
        let seals: Vec<Option<String>> = queue.entries().into_iter().map(|e| e.seal).collect();
        assert_eq!(seals, [Some("s2".to_owned()), None]);
    }

    #[test]
    fn a_stored_entry_is_resumed_only_when_its_body_is_a_notice_of_its_type() {
        let with_body = |body: &str| PendingDelivery { body: body.to_owned(), ..pending("a") };
        assert!(well_formed(&with_body(r#"{"type":"apikey.revoked","data":{}}"#)));
        assert!(!well_formed(&with_body(r#"{"type":"apikey.enabled","data":{}}"#)), "another type");
        assert!(!well_formed(&with_body(r#"{"type":"apikey.revoked""#)), "truncated");
        assert!(!well_formed(&with_body("[]")), "not an object");
    }

    #[test]
    fn a_body_over_the_schemas_bound_is_not_kept() {
        let notice = |body: Vec<u8>| Notice {
            kind: NoticeType::Revoked,
            id: "msg_1".to_owned(),
            namespace: "team-a".to_owned(),
            labels: std::collections::BTreeMap::new(),
            body,
        };
        let kept = entry(&notice(b"{\"type\":\"apikey.revoked\"}".to_vec()), at(0)).unwrap();
        assert_eq!((kept.body.as_str(), kept.attempts), ("{\"type\":\"apikey.revoked\"}", 0));
        assert_eq!(super::notice(&kept, "team-a").body, b"{\"type\":\"apikey.revoked\"}");
        assert!(entry(&notice(vec![b'x'; PENDING_BODY_MAX_BYTES + 1]), at(0)).is_none());
    }
}
