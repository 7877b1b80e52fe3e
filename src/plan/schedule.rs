//! When a token is next due for rotation, computed afresh from the last rotation on every plan.
//!
//! Nothing about the schedule is stored: `nextRotationAt` is derived from the
//! time of the last rotation (or of the first token) and the spec, so a
//! changed `every` or `schedule` takes effect at once and an operator that was
//! down catches up with exactly one rotation.

use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::validate::{Cadence, Rotation};

/// The first rotation time after `base`; `None` when the schedule never fires again.
pub(super) fn next_rotation(rotation: &Rotation, base: Timestamp) -> Option<Timestamp> {
    match &rotation.cadence {
        Cadence::Every(every) => Some(base.checked_add(every.get()).unwrap_or(Timestamp::MAX)),
        Cadence::Schedule(cron) => {
            let from = base.to_zoned(TimeZone::UTC);
            cron.find_next_occurrence(&from, false).ok().map(|z| z.timestamp())
        }
    }
}

/// `at + d`, or the far future when that overflows.
pub(super) fn after(at: Timestamp, d: jiff::SignedDuration) -> Timestamp {
    at.checked_add(d).unwrap_or(Timestamp::MAX)
}
