//! Tests of the verifier: decisions, loading and the HTTP surface, in process.

mod api_report;
mod audit;
mod decision;
mod gating;

/// The fixture builders, from the test kit, and the verifier's fixed "now".
pub(super) mod fixtures {
    pub use keyward_testkit::fixtures::*;

    use crate::verifier::decision::Now;

    /// The fixed "now" of the tests: [`NOW`], 1000 s into the process.
    pub fn now() -> Now {
        Now { wall: time(NOW), monotonic: std::time::Duration::from_secs(1000) }
    }
}
mod props;
mod reload;
mod usage;
