//! The pace of the usage pass's status writes (`--usage-max-writes-per-second`).
//!
//! Without it a pass writes every key it may write back to back: thousands of `PATCH
//! apikeys/status` in one burst at 10,000 busy keys. [`Pace`] gives each write a turn at least
//! [`period`] after the one before (tokio's clock, so paused-time tests see exactly what the
//! API server would), across passes too, and gives no turn past the end of the pass (the next
//! one starts at `--usage-aggregate-interval`). A key due but left without a turn is
//! [`defer`](Pace::defer)red: it is not written, not remembered as quiet, and is folded again
//! at a later pass from the reports, which are cumulative, so nothing it counted is lost or
//! counted twice. The next pass starts with the first key left ([`from`]).

use std::time::Duration;

use tokio::time::Instant;

use crate::plan::usage::pace::{from, period, room};

/// Where a pass stopped: the first key it left for later, as `(namespace, name)` (a
/// ClusterApiKey's namespace is empty).
pub type Stop = (String, String);

/// The turns of status writes, carried from pass to pass.
#[derive(Debug, Clone)]
pub struct Pace {
    /// Least time between two writes; None: not paced.
    period: Option<Duration>,
    /// The pass interval: a pass's writes start before it is over.
    interval: Duration,
    /// The earliest the next write may start.
    next: Instant,
    /// When the current pass's writes must have started.
    deadline: Option<Instant>,
    /// Keys left for a later pass in the current one.
    deferred: usize,
    /// The first key the last pass left.
    resume: Option<Stop>,
    /// The first key the current pass left.
    stopped: Option<Stop>,
    /// Turns of the current pass kept for the ClusterApiKeys, written last.
    reserved: usize,
    /// Turns every pass has, however late its writes start: one second's worth.
    floor: usize,
    /// Turns taken in the current pass.
    taken: usize,
}

impl Pace {
    /// At most `max_per_second` writes a second (0: no limit), each pass's within `interval`.
    #[must_use]
    pub fn new(max_per_second: u32, interval: Duration) -> Pace {
        Pace {
            period: period(max_per_second),
            interval,
            next: Instant::now(),
            deadline: None,
            deferred: 0,
            resume: None,
            stopped: None,
            reserved: 0,
            floor: usize::try_from(max_per_second).unwrap_or(usize::MAX),
            taken: 0,
        }
    }

    /// No pace: every write at once (a single pass run by hand, tests).
    #[must_use]
    pub fn unpaced() -> Pace {
        Pace::new(0, Duration::ZERO)
    }

    /// Begin a pass now: its writes start before `interval` from now, except one second's worth,
    /// which every pass has (a pass whose reads took the whole interval, on a loaded operator,
    /// still writes at the pace instead of nothing at all). When the last pass left a
    /// ClusterApiKey (they are written last, after every namespace), `cluster_keys` turns are kept
    /// for them until [`release`](Pace::release), so that they are not left behind pass after pass.
    pub fn start(&mut self, cluster_keys: usize) {
        self.deadline = Some(Instant::now() + self.interval);
        self.deferred = 0;
        self.taken = 0;
        self.resume = self.stopped.take();
        let cluster = self.resume.as_ref().is_some_and(|(namespace, _)| namespace.is_empty());
        self.reserved = if cluster { cluster_keys } else { 0 };
    }

    /// Give the turns kept for the ClusterApiKeys back: their writes come now.
    pub fn release(&mut self) {
        self.reserved = 0;
    }

    /// How many more writes the current pass has turns for.
    #[must_use]
    pub fn room(&self) -> usize {
        let (Some(period), Some(deadline)) = (self.period, self.deadline) else { return usize::MAX };
        let now = Instant::now();
        let room = room(deadline.saturating_duration_since(now), self.next.saturating_duration_since(now), period);
        room.max(self.floor.saturating_sub(self.taken)).saturating_sub(self.reserved)
    }

    /// Wait for the next write's turn: false (at once) when the pass has none left.
    pub async fn turn(&mut self) -> bool {
        let Some(period) = self.period else { return true };
        if self.room() == 0 {
            return false;
        }
        let at = self.next.max(Instant::now());
        tokio::time::sleep_until(at).await;
        self.next = at + period;
        self.taken += 1;
        true
    }

    /// Leave key `name` of `namespace` for a later pass.
    pub fn defer(&mut self, namespace: &str, name: &str) {
        self.deferred += 1;
        if self.stopped.is_none() {
            self.stopped = Some((namespace.to_owned(), name.to_owned()));
        }
    }

    /// Keys left for a later pass in the current pass so far.
    #[must_use]
    pub fn deferred(&self) -> usize {
        self.deferred
    }

    /// `namespaces` (sorted) in the order this pass visits them: from the one the last pass stopped in.
    #[must_use]
    pub fn namespaces<I: IntoIterator<Item = String>>(&self, namespaces: I) -> Vec<String> {
        from(namespaces, self.resume.as_ref().map(|(namespace, _)| namespace))
    }

    /// `names` (sorted) of `namespace`'s keys in the order this pass visits them: from the key the
    /// last pass stopped at, if it stopped in this namespace.
    #[must_use]
    pub fn names<I: IntoIterator<Item = String>>(&self, namespace: &str, names: I) -> Vec<String> {
        let at = self.resume.as_ref().filter(|(stopped_in, _)| stopped_in == namespace).map(|(_, name)| name);
        from(names, at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn turns_are_spaced_and_end_with_the_pass() {
        let mut pace = Pace::new(2, Duration::from_secs(2));
        pace.start(0);
        assert_eq!(pace.room(), 4);
        let start = Instant::now();
        let mut at = Vec::new();
        while pace.turn().await {
            at.push(Instant::now() - start);
        }
        let ms = |n| Duration::from_millis(n);
        assert_eq!(at, [ms(0), ms(500), ms(1000), ms(1500)]);
        // The next pass begins where the spacing left off, not with a burst.
        pace.start(0);
        assert!(pace.turn().await);
        assert_eq!(Instant::now() - start, ms(2000));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pass_whose_reads_took_its_whole_interval_still_has_a_second_of_turns() {
        let mut pace = Pace::new(2, Duration::from_secs(2));
        pace.start(0);
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(pace.room(), 2);
        assert!(pace.turn().await && pace.turn().await);
        assert!(!pace.turn().await);
        assert_eq!(pace.room(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pass_after_one_that_left_a_cluster_key_keeps_turns_for_the_cluster_keys() {
        let mut pace = Pace::new(1, Duration::from_secs(5));
        pace.start(3);
        assert_eq!(pace.room(), 5, "nothing was left: no turns kept");
        pace.defer("", "agency");
        assert_eq!(pace.deferred(), 1);
        pace.start(3);
        assert_eq!(pace.room(), 2, "three of five kept for the three cluster keys");
        assert!(pace.turn().await && pace.turn().await);
        assert!(!pace.turn().await, "the namespaces' turns are used up");
        pace.release();
        assert_eq!(pace.room(), 3, "the cluster keys' turns");
        assert_eq!(pace.deferred(), 0, "counted per pass");
    }

    #[tokio::test(start_paused = true)]
    async fn unpaced_every_write_has_a_turn_at_once() {
        let mut pace = Pace::unpaced();
        pace.start(0);
        let start = Instant::now();
        for _ in 0..1000 {
            assert!(pace.turn().await);
        }
        assert_eq!(Instant::now(), start);
        assert_eq!(pace.namespaces(["b".to_owned(), "a".to_owned()]), ["b", "a"], "given order when nothing was left");
    }
}
