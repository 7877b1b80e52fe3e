//! Where the verifier reads the time: the one place the wall and monotonic clocks are read for decisions.

use std::time::Instant;

use super::decision::Now;

/// A source of [`Now`]; tests pass a fixed or hand-advanced one.
pub trait Clock: Send + Sync + 'static {
    /// The time to decide at.
    fn now(&self) -> Now;
}

/// The system clocks: wall time from the OS, monotonic time since this clock was made.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    start: Instant,
}

impl SystemClock {
    /// A clock whose monotonic time starts now.
    #[must_use]
    pub fn new() -> SystemClock {
        SystemClock { start: Instant::now() }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Now {
        Now { wall: jiff::Timestamp::now(), monotonic: self.start.elapsed() }
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
