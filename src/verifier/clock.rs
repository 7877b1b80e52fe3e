//! The time the verifier decides at: the system clocks ([`crate::runtime::clock`]) or a hand-set one.

use super::decision::Now;

pub use crate::runtime::clock::SystemClock;

/// A source of [`Now`]; tests pass a fixed or hand-advanced one.
pub trait Clock: Send + Sync + 'static {
    /// The time to decide at.
    fn now(&self) -> Now;
}

impl Clock for SystemClock {
    fn now(&self) -> Now {
        Now { wall: self.wall(), monotonic: self.monotonic() }
    }
}

/// A clock that says whatever it was last set to; for tests and demos.
#[derive(Debug)]
pub struct ManualClock(std::sync::Mutex<Now>);

impl ManualClock {
    /// A clock stopped at `now`.
    #[must_use]
    pub fn new(now: Now) -> ManualClock {
        ManualClock(std::sync::Mutex::new(now))
    }

    /// Move the clock to `now`.
    pub fn set(&self, now: Now) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = now;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Now {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
