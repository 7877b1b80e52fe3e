//! When a failed delivery is tried again, and when it is given up.

use std::time::Duration;

/// Exponential backoff with a cap and a number of attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// Wait after the first failed attempt; doubled after each further one.
    pub base: Duration,
    /// Longest wait between two attempts.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    /// 8 attempts over about ten minutes: 5 s, 10 s, 20 s, 40 s, 80 s, 160 s, 300 s.
    fn default() -> Self {
        RetryPolicy { attempts: 8, base: Duration::from_secs(5), cap: Duration::from_secs(300) }
    }
}

/// What one attempt's result means for the notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered: stop.
    Delivered,
    /// Failed: try again after this long.
    RetryAfter(Duration),
    /// Failed for the last time: give up.
    GiveUp,
}

impl RetryPolicy {
    /// The outcome of attempt number `attempt` (1 for the first) that `succeeded` or not.
    #[must_use]
    pub fn after(&self, attempt: u32, succeeded: bool) -> Outcome {
        if succeeded {
            return Outcome::Delivered;
        }
        if attempt >= self.attempts {
            return Outcome::GiveUp;
        }
        let doubled = self.base.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
        Outcome::RetryAfter(doubled.min(self.cap))
    }
}
