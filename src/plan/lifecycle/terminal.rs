//! States that end or suspend the live lifecycle: deletion, invalid spec, a foreign Secret, revocation, expiry.

use jiff::SignedDuration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::KeyState;
use crate::plan::class::ClassProblem;
use crate::plan::validate::{SpecError, ValidSpec};
use crate::plan::{EventKind, Finalizer, Plan, PlannedEvent, Publish, Reason, secret_name};

use super::super::schedule::after;
use super::super::unused::Cause;
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
            hold: None,
            status: None,
            events: vec![PlannedEvent {
                kind: EventKind::Normal,
                reason: Reason::Unpublished,
                note: "ApiKey is being deleted: its hashes leave the key set before it goes".to_owned(),
            }],
            anomalies: Vec::new(),
            delete_apikey: false,
            requeue_at: None,
        }
    }

    pub(super) fn invalid(mut self, errors: Vec<SpecError>) -> Plan {
        let message = errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
        self.status.state = Some(KeyState::Error);
        let changed =
            self.old.conditions.first().is_none_or(|c| c.reason != Reason::InvalidSpec || c.message != message);
        if changed {
            self.event(
                EventKind::Warning,
                Reason::InvalidSpec,
                format!("The key does not work until the spec is fixed: {message}"),
            );
        }
        self.ready(false, Reason::InvalidSpec, message);
        // An invalid spec waits for the next change of the object: no requeue.
        let mut plan = self.finish_without_secret();
        plan.spec_errors = errors;
        plan
    }

    /// The key breaks its ApiKeyClass (or the class is missing or ambiguous): unpublished,
    /// Ready=False naming the class and rule, a Warning Event when that news is new. The
    /// Secret is left as it is, so the key works again with the same token once it keeps
    /// its class. No requeue: a change of the key or of a class reconciles it again.
    pub(super) fn class_blocked(&mut self, problem: &ClassProblem) {
        let reason = match problem {
            ClassProblem::Violations(_) => Reason::ClassViolation,
            ClassProblem::Missing(_) => Reason::ClassNotFound,
            ClassProblem::AmbiguousDefault(_) => Reason::ClassAmbiguous,
        };
        let message = problem.message();
        self.status.state = Some(KeyState::Error);
        let changed = self.old.conditions.first().is_none_or(|c| c.reason != reason || c.message != message);
        if changed {
            self.event(EventKind::Warning, reason, format!("The key is not published: {message}"));
        }
        self.ready(false, reason, message);
    }

    /// A key that was held back by its class keeps it again (the class widened, the key
    /// was fixed, the class appeared): say so, since the key is published again.
    pub(super) fn class_kept(&mut self) {
        let held_back = [Reason::ClassViolation, Reason::ClassNotFound, Reason::ClassAmbiguous];
        // Only a key that had a token: a new key says so with `Created`, and its status (and
        // so the old condition) is not written until it is Ready.
        if self.old.current_key.is_some()
            && self.old.conditions.first().is_some_and(|c| held_back.iter().any(|r| c.reason == *r))
        {
            let class = crate::plan::class::class_name(&self.observed.class).unwrap_or("(none)");
            let note = format!("The key keeps its ApiKeyClass {class} again and is published");
            self.event(EventKind::Normal, Reason::ClassSatisfied, note);
        }
    }

    pub(super) fn secret_conflict(mut self) -> Plan {
        let name = secret_name(self.key);
        let message = format!("Secret {name} exists and is not owned by this ApiKey; keyward will not overwrite it");
        self.status.state = Some(KeyState::Error);
        if self.old.conditions.first().is_none_or(|c| c.reason != Reason::SecretConflict) {
            self.event(EventKind::Warning, Reason::SecretConflict, message.clone());
        }
        self.ready(false, Reason::SecretConflict, message);
        self.deadline(after(self.now, CONFLICT_RECHECK));
        self.finish_without_secret()
    }

    /// `secretName` or `keySet` changed. The old Secret still holds the token
    /// that becomes the previous one, so it is kept until that token's grace
    /// period ends ([`Draft::release_previous_secret`]); the old key set is left at once.
    pub(super) fn follow_moves(&mut self) {
        let desired = secret_name(self.key);
        if let Some(old) = self.old.secret_name.clone()
            && old != desired
        {
            self.moved_secret = true;
            let retained = self.status.previous_secret_name.take();
            if let Some(earlier) = retained.filter(|earlier| *earlier != desired) {
                // A second move within the grace period: the repair that follows
                // gives the grace to the token of `old`, so `earlier` has no use left.
                self.out.delete_secret = Some(earlier);
            }
            self.status.previous_secret_name = Some(old);
        }
        self.status.secret_name = Some(desired);
        let key_set = &self.key.spec.key_set;
        if let Some(old) = &self.old.key_set
            && old != key_set
        {
            self.out.leave_key_set = Some(old.clone());
            self.event(EventKind::Normal, Reason::KeySetChanged, format!("Key moved from key set {old} to {key_set}"));
            // Verifiers of the new set have not seen these hashes yet.
            for version in [&mut self.status.current_key, &mut self.status.next_key].into_iter().flatten() {
                version.published_at = None;
            }
        }
        self.status.key_set = Some(key_set.clone());
    }

    /// Delete the Secret used before `spec.secretName` changed once no token
    /// in it is still in its grace period.
    pub(super) fn release_previous_secret(&mut self) {
        if self.status.previous_key.is_none()
            && self.out.delete_secret.is_none()
            && let Some(name) = self.status.previous_secret_name.take()
        {
            self.out.delete_secret = Some(name);
        }
    }

    pub(super) fn clean_up_tokens(&mut self) {
        let holds_tokens = self.out.token.is_some() || self.out.next_token.is_some();
        self.out.token = None;
        self.out.next_token = None;
        if holds_tokens {
            self.event(EventKind::Normal, Reason::CleanedUp, "Token removed from the Secret".to_owned());
        }
        self.status.next_key = None;
        self.status.previous_key = None;
        self.status.next_rotation_at = None;
        self.release_previous_secret();
    }

    pub(super) fn revoke(&mut self) {
        if !self.was(KeyState::Revoked) {
            self.event(EventKind::Normal, Reason::Revoked, "Key revoked for good: hashes unpublished".to_owned());
        }
        self.clean_up_tokens();
        let now = self.now;
        let revoked_at = self.status.revoked_at.get_or_insert(Time(now)).0;
        if let Some(current) = &mut self.status.current_key {
            current.not_after.get_or_insert(Time(revoked_at));
        }
        self.status.state = Some(KeyState::Revoked);
        let message = if self.key.spec.revoked {
            "The key is revoked; create a new ApiKey to grant access again".to_owned()
        } else {
            format!(
                "The key was revoked at {revoked_at}; clearing spec.revoked does not undo that: create a new ApiKey"
            )
        };
        self.ready(false, Reason::Revoked, message);
    }

    pub(super) fn expire(&mut self, spec: &ValidSpec) {
        let due = super::super::unused::expiry(spec, Some(&self.old)).filter(|(t, _)| *t <= self.now);
        let expired_at = self.status.expired_at.as_ref().map_or_else(|| due.map_or(self.now, |(t, _)| t), |t| t.0);
        // The cause is decided once, when the key expires, and kept in the Ready condition's reason.
        let unused = match &self.old.expired_at {
            Some(_) => self.old.conditions.iter().any(|c| c.type_ == "Ready" && c.reason == Reason::Unused.as_str()),
            None => due.is_some_and(|(_, cause)| cause == Cause::Unused),
        };
        self.status.expired_at = Some(Time(expired_at));
        let reason = if unused { Reason::Unused } else { Reason::Expired };
        let why = if unused { "unused for expireAfterUnused" } else { "expired" };
        if !self.was(KeyState::Expired) {
            self.event(EventKind::Normal, reason, format!("Key {why} at {expired_at}"));
        }
        self.clean_up_tokens();
        if let Some(current) = &mut self.status.current_key {
            current.not_after.get_or_insert(Time(expired_at));
        }
        self.status.state = Some(KeyState::Expired);
        self.ready(false, reason, format!("The key {why} at {expired_at}"));
        if let Some(retain) = spec.retain_expired_for.as_ref().and_then(|d| SignedDuration::try_from(d.get()).ok()) {
            let delete_at = after(expired_at, retain);
            if delete_at <= self.now {
                self.out.delete_apikey = true;
                self.event(
                    EventKind::Normal,
                    Reason::Deleted,
                    format!("Expired key deleted after retainExpiredFor {retain:#}"),
                );
            } else {
                self.deadline(delete_at);
            }
        }
    }
}
