//! The usage pass's status writes take turns (`--usage-max-writes-per-second`): counted at the
//! client on tokio's paused clock, never against the wall clock.

use std::sync::Arc;
use std::time::Duration;

use jiff::SignedDuration;
use tokio::time::Instant;

use crate::api::RequestCounts;
use crate::controller::metrics::Metrics;
use crate::controller::usage::pace::Pace;
use crate::controller::usage::{UsageOptions, run};
use crate::plan::usage::Budget;

use super::usage_reads::{Setup, counts, name, reports, setup};

/// The most writes that start within any one second.
fn most_in_a_second(writes: &[(Instant, String)]) -> usize {
    let mut at: Vec<Instant> = writes.iter().map(|(at, _)| *at).collect();
    at.sort_unstable();
    (0..at.len())
        .map(|i| at[i..].iter().take_while(|t| **t < at[i] + Duration::from_secs(1)).count())
        .max()
        .unwrap_or(0)
}

/// The names of the keys written, in order.
fn written(writes: &[(Instant, String)]) -> Vec<String> {
    writes.iter().filter_map(|(_, path)| path.rsplit('/').nth(1).map(str::to_owned)).collect()
}

/// A minute passes, on the operator's clock and on tokio's (the next pass).
async fn minute(s: &Setup) {
    s.h.advance(SignedDuration::from_mins(1));
    tokio::time::sleep(Duration::from_secs(60)).await;
}

impl Setup {
    /// One pass from the cache, paced by `self.pace`; the status writes it sent, and the pass's figures.
    async fn paced_pass(&mut self, budget: Budget) -> (Vec<(Instant, String)>, crate::controller::usage::due::Reads) {
        self.counter.take_status_writes();
        let reads = self.cache.pass_all(&self.client, &self.h.ctx.clock, budget, &mut self.pace).await.expect("pass");
        (self.counter.take_status_writes(), reads)
    }
}

#[tokio::test(start_paused = true)]
async fn a_pass_writes_at_the_pace_and_leaves_the_rest_for_the_next_pass_with_nothing_lost() {
    let mut s = setup(30).await;
    // 2 writes a second, passes 10 s apart: 20 turns a pass, for 30 keys due.
    s.pace = Pace::new(2, Duration::from_secs(10));
    let all: Vec<usize> = (0..30).collect();
    reports(&s.h, 1, &all, 4).await;
    let started = Instant::now();
    let (writes, reads) = s.paced_pass(Budget::default()).await;
    assert_eq!(writes.len(), 20, "{reads:?}");
    assert_eq!(
        (reads.status_writes, reads.deferred, reads.due),
        (20, 10, 20),
        "the 10 left are not even read: {reads:?}"
    );
    assert_eq!(most_in_a_second(&writes), 2, "never more than the pace");
    assert!(writes.iter().all(|(at, _)| *at < started + Duration::from_secs(10)), "all within the pass");
    let mut with_counts = 0;
    for i in 0..30 {
        with_counts += usize::from(counts(&s.h, i).await.allowed == 4);
    }
    assert_eq!(with_counts, 20);

    // The next pass, a minute later: the verifier counted more meanwhile. The 10 left are written
    // with everything they counted; the 20 written are within their status interval.
    minute(&s).await;
    reports(&s.h, 1, &all, 9).await;
    s.watch.sync(&s.h.client).await;
    let (writes, reads) = s.paced_pass(Budget::default()).await;
    assert_eq!((writes.len(), reads.deferred), (10, 0), "{reads:?}");
    assert!(most_in_a_second(&writes) <= 2);
    let mut counted = Vec::new();
    for i in 0..30 {
        counted.push(counts(&s.h, i).await.allowed);
    }
    assert_eq!(counted.iter().filter(|c| **c == 9).count(), 10, "the keys left, in full: {counted:?}");
    assert_eq!(counted.iter().filter(|c| **c == 4).count(), 20, "the others, not yet again: {counted:?}");

    // Five minutes on, everything is due again and the deferred writes catch up; every count once.
    for pass in 0..8 {
        minute(&s).await;
        s.watch.sync(&s.h.client).await;
        let (writes, _) = s.paced_pass(Budget::default()).await;
        assert!(writes.len() <= 20 && most_in_a_second(&writes) <= 2, "minute {pass}: {}", writes.len());
    }
    for i in 0..30 {
        assert_eq!(counts(&s.h, i).await, RequestCounts { allowed: 9, denied: 0 }, "key {i}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_next_pass_starts_with_the_first_key_left_so_none_waits_for_ever() {
    let mut s = setup(5).await;
    // 3 turns a pass, 5 keys due at every pass (a status interval of one pass): without starting
    // where the last pass stopped, the same 3 would be written each time.
    s.pace = Pace::new(1, Duration::from_secs(3));
    let budget = Budget { status_interval: SignedDuration::from_mins(1), ..Budget::default() };
    let all: Vec<usize> = (0..5).collect();
    let mut turns = Vec::new();
    for pass in 0..3_u64 {
        reports(&s.h, 1, &all, 1 + pass).await;
        s.watch.sync(&s.h.client).await;
        let (writes, reads) = s.paced_pass(budget).await;
        assert_eq!((writes.len(), reads.deferred), (3, 2), "pass {pass}: {reads:?}");
        turns.push(written(&writes));
        minute(&s).await;
    }
    let names = |ids: [usize; 3]| ids.map(name).to_vec();
    assert_eq!(turns, [names([0, 1, 2]), names([3, 4, 0]), names([1, 2, 3])]);
}

#[tokio::test(start_paused = true)]
async fn the_operator_counts_the_writes_it_left_for_a_later_pass() {
    let s = setup(30).await;
    let all: Vec<usize> = (0..30).collect();
    reports(&s.h, 1, &all, 4).await;
    let metrics = Arc::new(Metrics::new());
    let options =
        UsageOptions { interval: Duration::from_secs(10), max_writes_per_second: 2, ..UsageOptions::default() };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let usage = tokio::spawn(run(s.client.clone(), s.h.ctx.clock.clone(), options, None, metrics.clone(), async {
        let _ = stopped.await;
    }));
    // Two passes: 20 written and 10 left, then those 10.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let _ = stop.send(());
    usage.await.expect("usage task");
    let writes = s.counter.take_status_writes();
    assert_eq!(writes.len(), 30);
    assert!(most_in_a_second(&writes) <= 2);
    let text = metrics.encode();
    assert!(text.contains("keyward_usage_writes_deferred_total 10\n"), "{text}");
    for i in 0..30 {
        assert_eq!(counts(&s.h, i).await.allowed, 4, "key {i}");
    }
}

/// Status writes of `KEYWARD_PACE_KEYS` keys (default 1,000), all busy and due at once (an
/// operator's first pass), each reported by `KEYWARD_PACE_REPLICAS` verifiers (default 1), at
/// `KEYWARD_PACE_RATE` writes a second (default 40; 0: unpaced) with passes 60 s apart, until
/// every key is written: per pass, the writes, the busiest second, when the last write started,
/// and the ApiKeys read. On tokio's paused clock: the pace, not this machine's speed.
/// `KEYWARD_PACE_KEYS=10000 cargo test --locked --lib usage_pace::figures -- --ignored --nocapture`
#[tokio::test(start_paused = true)]
#[ignore = "a measurement: prints figures, run by hand"]
async fn figures() {
    let env = |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let (n, rate) = (env("KEYWARD_PACE_KEYS", 1_000), env("KEYWARD_PACE_RATE", 40));
    let replicas = env("KEYWARD_PACE_REPLICAS", 1);
    let mut s = setup(n).await;
    s.pace = Pace::new(u32::try_from(rate).unwrap(), Duration::from_secs(60));
    let all: Vec<usize> = (0..n).collect();
    reports(&s.h, replicas, &all, 1).await;
    let mut total = 0;
    for pass in 0..10 {
        let started = Instant::now();
        s.counter.take_writes_and_reads();
        let reads = s.cache.pass_all(&s.client, &s.h.ctx.clock, Budget::default(), &mut s.pace).await.expect("pass");
        let (writes, (requests, bytes)) = s.counter.take_writes_and_reads();
        total += writes.len();
        let last = writes.iter().map(|(at, _)| at.duration_since(started)).max().unwrap_or_default();
        println!(
            "pass {pass} (minute {pass}): {} status writes, busiest second {}, last write at {:.3} s, deferred {}; ApiKeys read: {} GETs, {} lists, {requests} requests, {bytes} bytes",
            writes.len(),
            most_in_a_second(&writes),
            last.as_secs_f64(),
            reads.deferred,
            reads.gets,
            reads.lists,
        );
        if total >= n {
            break;
        }
        minute(&s).await;
        s.watch.sync(&s.h.client).await;
    }
    assert_eq!(total, n, "every key written once");
    println!("N={n} rate={rate}: {total} keys written once each");
}
