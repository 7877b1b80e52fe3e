//! Advance notices of expiry: one Warning Event `ExpiringSoon` per notice point and expiry, and the `ExpiringSoon` condition.
//!
//! The notice points are the key's `spec.expiryNotices` when set (an empty list
//! sends none), otherwise the operator's `--expiry-notices`.
//! The last notice sent is kept in `status.expiryNotice`, so a restart never
//! sends one twice. When the expiry moves (the key was used, `expiresAt`
//! changed), notices for the new expiry start again.

use jiff::SignedDuration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{ConditionUpdate, ExpiryNotice, set_condition};
use crate::duration::KeyDuration;
use crate::plan::validate::ValidSpec;
use crate::plan::{EventKind, Reason};

use super::super::unused::{Cause, expiry};
use super::Draft;

/// The condition type.
pub const CONDITION_EXPIRING_SOON: &str = "ExpiringSoon";

/// A notice point as the duration grammar writes it (`7d`, `36h`, `1h30m`), exactly, so
/// that `status.expiryNotice.before` parses back to the point that was sent.
fn notice_text(d: SignedDuration) -> String {
    let secs = d.as_secs();
    if secs % 86_400 == 0 {
        return format!("{}d", secs / 86_400);
    }
    let mut text = String::new();
    for (n, unit) in [(secs / 3600, 'h'), (secs % 3600 / 60, 'm'), (secs % 60, 's')] {
        if n > 0 {
            text.push_str(&n.to_string());
            text.push(unit);
        }
    }
    text
}

impl Draft<'_> {
    pub(super) fn expiry_notices(&mut self, spec: &ValidSpec) {
        let Some((at, cause)) = expiry(spec, Some(&self.status)) else {
            self.expiring_soon(None);
            return;
        };
        let reason = if cause == Cause::Unused { "Unused" } else { "ExpiresAt" };
        // The key's own points (`spec.expiryNotices`, possibly none) or the operator's.
        let mut points: Vec<SignedDuration> = match &spec.expiry_notices {
            Some(own) => own.iter().filter_map(|d| SignedDuration::try_from(d.get()).ok()).collect(),
            None => self.settings.expiry_notices.clone(),
        };
        points.sort();
        points.dedup();
        // The most urgent point reached; the next one to come is a deadline.
        let reached = points.iter().copied().find(|d| at.checked_sub(*d).is_ok_and(|due| due <= self.now));
        for d in &points {
            if let Ok(due) = at.checked_sub(*d)
                && due > self.now
            {
                self.deadline(due);
            }
        }
        let Some(point) = reached else {
            self.expiring_soon(None);
            return;
        };
        let already = self.status.expiry_notice.as_ref().is_some_and(|sent| {
            sent.expires_at.0 == at
                && sent.reason == reason
                && sent
                    .before
                    .parse::<KeyDuration>()
                    .is_ok_and(|b| SignedDuration::try_from(b.get()).is_ok_and(|b| b <= point))
        });
        let message = format!("The key expires at {at} ({reason}); notice {} before", notice_text(point));
        if !already {
            self.event(EventKind::Warning, Reason::ExpiringSoon, message.clone());
            self.status.expiry_notice =
                Some(ExpiryNotice { reason: reason.to_owned(), expires_at: Time(at), before: notice_text(point) });
        }
        self.expiring_soon(Some(message));
    }

    fn expiring_soon(&mut self, message: Option<String>) {
        let had = self.status.conditions.iter().any(|c| c.type_ == CONDITION_EXPIRING_SOON);
        let (status, reason, message) = match message {
            Some(m) => ("True", Reason::ExpiringSoon, m),
            // A key never warned carries no condition at all.
            None if !had => return,
            None => ("False", Reason::NotExpiringSoon, "No notice point before expiry is reached".to_owned()),
        };
        let update = ConditionUpdate { type_: CONDITION_EXPIRING_SOON, status, reason: reason.as_str(), message };
        set_condition(&mut self.status.conditions, update, self.key.metadata.generation, self.now);
    }
}
