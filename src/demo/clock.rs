//! The demo's clock: real time from a fixed starting instant, plus jumps the script makes.
//!
//! The operator and the verifier both read it, so a jump of ninety days is a
//! jump for both, and the walkthrough's dates do not depend on the day it runs.

use std::sync::Mutex;

use jiff::{SignedDuration, Timestamp};

use crate::runtime::clock::SystemClock;

/// Time that passes normally and can also leap forward.
#[derive(Debug)]
pub struct DemoClock {
    origin: Timestamp,
    real: SystemClock,
    skipped: Mutex<SignedDuration>,
}

impl DemoClock {
    /// A clock that reads `origin` now.
    #[must_use]
    pub fn starting_at(origin: Timestamp) -> DemoClock {
        DemoClock { origin, real: SystemClock::new(), skipped: Mutex::new(SignedDuration::ZERO) }
    }

    fn skipped(&self) -> SignedDuration {
        *self.skipped.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Real time elapsed since the start plus every leap, as a duration.
    #[must_use]
    pub fn elapsed(&self) -> SignedDuration {
        let real = SignedDuration::try_from(self.real.monotonic()).unwrap_or(SignedDuration::MAX);
        real.saturating_add(self.skipped())
    }

    /// The current demo time.
    #[must_use]
    pub fn now(&self) -> Timestamp {
        self.origin.saturating_add(self.elapsed()).unwrap_or(self.origin)
    }

    /// Leap forward by `by`.
    pub fn advance(&self, by: SignedDuration) {
        let mut skipped = self.skipped.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *skipped = skipped.saturating_add(by);
    }
}

impl crate::verifier::clock::Clock for DemoClock {
    fn now(&self) -> crate::verifier::decision::Now {
        // Monotonic time leaps too, so rate-limit buckets refill across a jump as they would in real time.
        crate::verifier::decision::Now {
            wall: DemoClock::now(self),
            monotonic: self.elapsed().try_into().unwrap_or_default(),
        }
    }
}
