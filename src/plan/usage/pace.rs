//! Pacing the usage pass's status writes: how far apart they are, how many fit in a pass, and
//! in which order keys get their turn.
//!
//! The controller ([`crate::controller::usage::pace`]) spaces a pass's writes at least
//! [`period`] apart, so that no second ever holds more than `--usage-max-writes-per-second`
//! of them, and ends the pass's writes before the next pass starts ([`room`]). A key due but
//! left without a turn is folded again at a later pass: reports are cumulative, so nothing is
//! lost. So that no key waits for ever behind keys that become due again sooner, a pass starts
//! where the last one stopped ([`from`]): with the first key it left for later.

use std::time::Duration;

/// The least time between two status writes at `max_per_second` (rounded up to the nanosecond,
/// so a second never holds one more); None for 0, which paces nothing.
#[must_use]
pub fn period(max_per_second: u32) -> Option<Duration> {
    const NANOS: u64 = 1_000_000_000;
    (max_per_second > 0).then(|| Duration::from_nanos(NANOS.div_ceil(u64::from(max_per_second))))
}

/// How many writes, each `period` after the one before and the first `until_free` from now,
/// start within `left` (the time to the end of the pass).
#[must_use]
pub fn room(left: Duration, until_free: Duration, period: Duration) -> usize {
    let Some(span) = left.checked_sub(until_free).filter(|span| !span.is_zero()) else { return 0 };
    usize::try_from(span.as_nanos().div_ceil(period.as_nanos().max(1))).unwrap_or(usize::MAX)
}

/// `sorted` in the order a pass visits it when the last pass stopped at `resume`: `resume` and
/// what follows it first, then what comes before it (so every item gets its turn in a cycle).
#[must_use]
pub fn from<T: Ord>(sorted: impl IntoIterator<Item = T>, resume: Option<&T>) -> Vec<T> {
    let (mut after, before): (Vec<T>, Vec<T>) = sorted.into_iter().partition(|item| resume.is_none_or(|r| item >= r));
    after.extend(before);
    after
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_second_holds_more_writes_than_the_rate() {
        for rate in [1, 3, 7, 20, 40, 1000, 999_999_999, u32::MAX] {
            let period = period(rate).expect("paced");
            // rate + 1 writes, each one period after the last, span more than a second.
            let span = period * rate;
            assert!(span >= Duration::from_secs(1), "rate {rate}: {span:?}");
        }
        assert_eq!(period(0), None, "0 paces nothing");
        assert_eq!(period(40), Some(Duration::from_millis(25)));
    }

    #[test]
    fn a_pass_has_room_for_the_writes_that_start_before_it_ends() {
        let p = Duration::from_millis(25);
        assert_eq!(room(Duration::from_secs(60), Duration::ZERO, p), 2400);
        assert_eq!(room(Duration::from_secs(60), Duration::from_millis(10), p), 2400, "the last at 59.985 s");
        assert_eq!(room(Duration::from_secs(60), Duration::from_millis(25), p), 2399);
        assert_eq!(room(Duration::from_millis(1), Duration::ZERO, p), 1);
        assert_eq!(room(Duration::from_secs(1), Duration::from_secs(1), p), 0);
        assert_eq!(room(Duration::ZERO, Duration::ZERO, p), 0);
    }

    #[test]
    fn a_pass_starts_where_the_last_one_stopped() {
        let names = ["a", "b", "c", "d"];
        assert_eq!(from(names, None), names);
        assert_eq!(from(names, Some(&"c")), ["c", "d", "a", "b"]);
        assert_eq!(from(names, Some(&"bb")), ["c", "d", "a", "b"], "a key gone meanwhile: the next one");
        assert_eq!(from(names, Some(&"z")), names, "past the end: from the start");
    }
}
