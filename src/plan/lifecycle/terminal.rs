//! States that end or suspend the live lifecycle: deletion, invalid spec, a foreign Secret, revocation, expiry.

use jiff::SignedDuration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::KeyState;
use crate::plan::validate::{SpecError, ValidSpec};
use crate::plan::{EventKind, Finalizer, Plan, PlannedEvent, Publish, secret_name};

use super::super::schedule::after;
use super::{CONFLICT_RECHECK, Draft};

impl Draft<'_> {
    pub(super) fn finalize(self) -> Plan {
        Plan {
            spec_errors: Vec::new(),
            finalizer: Finalizer::Remove,
            mint: None,
            secret: None,
            delete_secret: None,
            leave_key_set: self.old.key_set.clone().filter(|old| *old != self.key.spec.key_set),
            records: Vec::new(),
            publish: if self.observed.published.is_empty() { Publish::Unchanged } else { Publish::Now },
            status: None,
            events: vec![PlannedEvent {
                kind: EventKind::Normal,
                reason: "Unpublished",
                note: "ApiKey is being deleted: its hashes leave the key set before it goes".to_owned(),
            }],
            delete_apikey: false,
            requeue_at: None,
        }
    }

    pub(super) fn invalid(mut self, errors: Vec<SpecError>) -> Plan {
        let message = errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
        self.status.state = Some(KeyState::Error);
        let changed = self.old.conditions.first().is_none_or(|c| c.reason != "InvalidSpec" || c.message != message);
        if changed {
            self.event(
                EventKind::Warning,
                "InvalidSpec",
                format!("The key does not work until the spec is fixed: {message}"),
            );
        }
        self.ready(false, "InvalidSpec", message);
        // An invalid spec waits for the next change of the object: no requeue.
        let mut plan = self.finish_without_secret();
        plan.spec_errors = errors;
        plan
    }

    pub(super) fn secret_conflict(mut self) -> Plan {
        let name = secret_name(self.key);
        let message = format!("Secret {name} exists and is not owned by this ApiKey; keyward will not overwrite it");
        self.status.state = Some(KeyState::Error);
        if self.old.conditions.first().is_none_or(|c| c.reason != "SecretConflict") {
            self.event(EventKind::Warning, "SecretConflict", message.clone());
        }
        self.ready(false, "SecretConflict", message);
        self.deadline(after(self.now, CONFLICT_RECHECK));
        self.finish_without_secret()
    }

    /// `secretName` or `keySet` changed: the old Secret goes, the old key set is left.
    pub(super) fn follow_moves(&mut self) {
        let desired = secret_name(self.key);
        if let Some(old) = &self.old.secret_name
            && *old != desired
        {
            self.delete_secret = Some(old.clone());
        }
        self.status.secret_name = Some(desired);
        let key_set = &self.key.spec.key_set;
        if let Some(old) = &self.old.key_set
            && old != key_set
        {
            self.leave_key_set = Some(old.clone());
            self.event(EventKind::Normal, "KeySetChanged", format!("Key moved from key set {old} to {key_set}"));
        }
        self.status.key_set = Some(key_set.clone());
    }

    pub(super) fn clean_up_tokens(&mut self) {
        let holds_tokens = self.token.is_some() || self.next_token.is_some();
        self.token = None;
        self.next_token = None;
        if holds_tokens {
            self.event(EventKind::Normal, "CleanedUp", "Token removed from the Secret".to_owned());
        }
        self.status.next_key = None;
        self.status.previous_key = None;
        self.status.next_rotation_at = None;
    }

    pub(super) fn revoke(&mut self) {
        if !self.was(KeyState::Revoked) {
            self.event(EventKind::Normal, "Revoked", "Key revoked for good: hashes unpublished".to_owned());
        }
        self.clean_up_tokens();
        let now = self.now;
        if let Some(current) = &mut self.status.current_key {
            current.not_after.get_or_insert(Time(now));
        }
        self.status.state = Some(KeyState::Revoked);
        self.ready(false, "Revoked", "The key is revoked; create a new ApiKey to grant access again".to_owned());
    }

    pub(super) fn expire(&mut self, spec: &ValidSpec) {
        let expired_at = self.status.expired_at.as_ref().map_or_else(|| spec.expires_at.unwrap_or(self.now), |t| t.0);
        self.status.expired_at = Some(Time(expired_at));
        if !self.was(KeyState::Expired) {
            self.event(EventKind::Normal, "Expired", format!("Key expired at {expired_at}"));
        }
        self.clean_up_tokens();
        if let Some(current) = &mut self.status.current_key {
            current.not_after.get_or_insert(Time(expired_at));
        }
        self.status.state = Some(KeyState::Expired);
        self.ready(false, "Expired", format!("The key expired at {expired_at}"));
        if let Some(retain) = spec.retain_expired_for.as_ref().and_then(|d| SignedDuration::try_from(d.get()).ok()) {
            let delete_at = after(expired_at, retain);
            if delete_at <= self.now {
                self.delete_apikey = true;
                self.event(
                    EventKind::Normal,
                    "Deleted",
                    format!("Expired key deleted after retainExpiredFor {retain:#}"),
                );
            } else {
                self.deadline(delete_at);
            }
        }
    }
}
