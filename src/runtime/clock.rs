//! The one clock: the only place keyward reads the wall clock.
//!
//! Decisions take the time as an input (`plan(.., now)`, the verifier's
//! `decide(.., now)`), so tests fix it and the demo leaps it. Everything that
//! needs the real time gets it from here; `clippy.toml` refuses wall-clock
//! reads anywhere else. Monotonic reads that only measure a duration (a
//! metric, a timeout) are not decisions and may use `Instant` directly.

use std::time::{Duration, Instant};

use jiff::Timestamp;

/// The wall clock now.
#[must_use]
#[allow(clippy::disallowed_methods)] // The one wall-clock read that clippy.toml points everyone else to.
pub fn now() -> Timestamp {
    Timestamp::now()
}

/// The system clocks as one value: wall time from the OS, monotonic time since this clock was made.
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

    /// The wall clock now.
    #[must_use]
    pub fn wall(&self) -> Timestamp {
        now()
    }

    /// Monotonic time since this clock was made: it never jumps when the wall clock is set.
    #[must_use]
    pub fn monotonic(&self) -> Duration {
        self.start.elapsed()
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock::new()
    }
}
