//! The live key: issue the current token, repair the Secret, rotate, retire the previous token.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{KeyState, KeyVersion, ROTATE_ANNOTATION};
use crate::plan::records::version_hash;
use crate::plan::schedule::{after, next_rotation};
use crate::plan::validate::ValidSpec;
use crate::plan::{EventKind, Held, Mint, Reason, SecretView, Slot, Source, TokenFacts, secret_name};
use crate::token::KeyHash;

use super::{Draft, version};

/// How long a held token may wait for its first publication before status
/// records it (state `Pending`, reason `Publishing`), for people and alerts.
const REPORT_UNPUBLISHED_AFTER: SignedDuration = SignedDuration::from_mins(1);

impl Draft<'_> {
    /// The steps of a working key, in order.
    pub(super) fn live(&mut self, spec: &ValidSpec) {
        // Rotation and retirement wait while a token is issued or the Secret repaired.
        if self.current_token(spec) {
            // Retire first: a rotation is held while the previous token is in its grace period.
            self.retire_previous();
            self.rotation(spec);
            self.release_previous_secret();
        }
        // Also while a new token is held: expiry must not wait for its Ready.
        if let Some((t, _)) = super::super::unused::expiry(spec, Some(&self.status)) {
            self.deadline(t);
        }
        self.expiry_notices(spec);
        self.summarise_live();
    }

    /// Make sure the Secret holds the token status calls current. Returns
    /// whether the rest of the lifecycle can go on in this pass.
    pub(super) fn current_token(&mut self, spec: &ValidSpec) -> bool {
        let slot = self.secret_slot(false).clone();
        let Some(current) = self.status.current_key.clone() else {
            return self.issue_current(spec, &slot);
        };
        let current_hash = version_hash(&current);
        let next_hash = self.status.next_key.as_ref().and_then(version_hash);
        match slot.facts() {
            Some(facts) if Some(facts.hash) == current_hash => {
                self.status.prefix = Some(facts.display_prefix.clone());
                self.note_current_publication();
                true
            }
            // The Secret was swapped but status was not written: finish the swap.
            Some(facts) if next_hash == Some(facts.hash) => {
                let facts = facts.clone();
                self.complete_swap(spec, &facts, Source::Token);
                true
            }
            _ => {
                self.repair_secret(spec, &slot, current_hash);
                false
            }
        }
    }

    /// No current token in status: adopt the one the Secret holds (written by
    /// an earlier pass that crashed or just minted it), or mint one.
    ///
    /// A new key's token is held, not recorded ([`Held`]): the publisher lists
    /// it from memory and status is written once, when it is Ready.
    pub(super) fn issue_current(&mut self, spec: &ValidSpec, slot: &Slot) -> bool {
        let held = self.observed.held.clone();
        let intact = |h: &Held| {
            !self.held_moved(h)
                && slot.facts().is_some_and(|f| Some(f.hash) == h.hash() && f.prefix == spec.prefix.as_str())
        };
        if let Some(held) = held.clone().filter(|h| !intact(h)) {
            // The Secret lost the token, or the spec names another Secret, key
            // set or prefix, while the token was held: record the token where
            // it was adopted; the next pass handles it as any recorded token
            // (repair or rotation with a grace period, old Secret, old key set).
            self.record_moved(held);
            self.out.again = true;
            return false;
        }
        match slot.facts() {
            Some(facts) if facts.prefix == spec.prefix.as_str() && !self.is_known(facts.hash) => {
                let facts = facts.clone();
                match held {
                    None => self.adopt(&facts),
                    Some(held) => self.continue_hold(held, &facts),
                }
            }
            _ => {
                self.out.mint = Some(Mint { prefix: spec.prefix.clone() });
                self.out.token = Some(Source::Minted);
                self.out.next_token = None;
                self.out.again = true;
                false
            }
        }
    }

    /// First sight of the token in this process: hold it, or record it at once
    /// when the stored status has something else to say ([`Draft::may_hold`]).
    fn adopt(&mut self, facts: &TokenFacts) -> bool {
        let (reason, note) = if self.old.previous_key.is_some() || self.old.last_rotated_at.is_some() {
            (Reason::TokenReissued, format!("New token {} written to the Secret; publishing it", facts.hash.key_id()))
        } else {
            (Reason::Created, format!("Token {} written to the Secret; publishing it", facts.hash.key_id()))
        };
        self.event(EventKind::Normal, reason, note);
        let held = Held {
            version: version(facts.hash, self.now),
            key_set: self.key.spec.key_set.clone(),
            secret_name: secret_name(self.key),
            rotation_request: self.annotation(),
        };
        if self.may_hold() {
            self.deadline(after(self.now, self.settings.publish_poll));
            self.out.hold = Some(held);
            false
        } else {
            self.record(held, facts);
            true
        }
    }

    /// A held token: record it once it has had the propagation delay since
    /// the publisher wrote it (the one status write of a new key), or once it
    /// has waited [`REPORT_UNPUBLISHED_AFTER`] without being published (so
    /// that people and alerts see a key stuck in `Publishing`).
    fn continue_hold(&mut self, mut held: Held, facts: &TokenFacts) -> bool {
        let published_at = held
            .version
            .published_at
            .as_ref()
            .map(|t| t.0)
            .filter(|_| self.observed.published.iter().any(|r| r.hash == facts.hash))
            // The publisher's clock is not whole seconds; status is. Rounded
            // up, the Ready check and the recorded `publishedAt` agree and are
            // never earlier than the truth.
            .map(crate::plan::whole_seconds_up);
        held.version.published_at = published_at.map(Time);
        let waited_since = held.version.not_before.0;
        let ready_at = published_at.map(|p| after(p, self.settings.propagation_delay));
        let report_at = after(waited_since, REPORT_UNPUBLISHED_AFTER);
        match ready_at {
            _ if !self.may_hold() => {}
            Some(at) if at > self.now => {
                self.deadline(at);
                self.out.hold = Some(held);
                return false;
            }
            None if report_at > self.now => {
                self.deadline(after(self.now, self.settings.publish_poll));
                self.out.hold = Some(held);
                return false;
            }
            Some(_) | None => {}
        }
        // Held until status names it: a rebuild before the status write lands must still list it.
        self.out.hold = Some(held.clone());
        self.record(held, facts);
        true
    }

    fn record(&mut self, held: Held, facts: &TokenFacts) {
        self.status.current_key = Some(held.version);
        self.status.prefix = Some(facts.display_prefix.clone());
        self.status.last_rotation_request = held.rotation_request;
    }

    /// Whether a held token was adopted for another Secret or key set than the spec names now.
    fn held_moved(&self, held: &Held) -> bool {
        held.key_set != self.key.spec.key_set || held.secret_name != secret_name(self.key)
    }

    /// Record a held token under the Secret and key set it was adopted for,
    /// as not yet published there (the pass that follows decides again).
    fn record_moved(&mut self, mut held: Held) {
        let mut version = held.version.clone();
        version.published_at = None;
        self.status.current_key = Some(version);
        self.status.last_rotation_request = held.rotation_request.take();
        self.status.secret_name = Some(held.secret_name.clone());
        self.status.key_set = Some(held.key_set.clone());
        self.out.hold = Some(held);
    }

    /// Whether a new token may be held instead of recorded: only while status
    /// would say nothing but that a token is on its way. Anything else (a
    /// token in grace, a rotation, a move, an error to clear, a disabled key,
    /// which never turns Ready) is recorded at once, as before.
    fn may_hold(&self) -> bool {
        let old = &self.old;
        old.current_key.is_none()
            && old.next_key.is_none()
            && old.previous_key.is_none()
            && old.state.is_none_or(|s| s == KeyState::Pending)
            && !self.moved_secret
            && self.out.leave_key_set.is_none()
            && self.key.spec.active
    }

    /// The Secret lost or changed the current token. The token consumers held
    /// stays valid for the grace period (it was legitimately issued) unless its
    /// validity already ended; whatever the Secret holds instead is never
    /// published; a new token is issued.
    ///
    /// There is one previous slot: a repair during a grace period ends the
    /// older previous token's grace early (the Event says so), because the
    /// token just taken from the Secret is the one most consumers hold.
    pub(super) fn repair_secret(&mut self, spec: &ValidSpec, slot: &Slot, current_hash: Option<KeyHash>) {
        let why = match (&self.observed.secret, slot) {
            _ if self.moved_secret => "spec.secretName changed",
            (SecretView::Absent, _) => "the Secret was deleted",
            (_, Slot::Empty) => "the token was removed from the Secret",
            (_, Slot::Malformed) => "the Secret holds a malformed token",
            (_, Slot::Token(_)) => "the Secret holds a token keyward did not issue",
        };
        let grace_end = after(self.now, self.grace(spec));
        let now = self.now;
        let graced = self.status.current_key.take().filter(|_| current_hash.is_some()).and_then(|mut v| {
            // Never extend a token whose validity already ended.
            if v.not_after.as_ref().is_some_and(|end| end.0 <= now) {
                return None;
            }
            v.not_after = Some(Time(v.not_after.as_ref().map_or(grace_end, |end| end.0.min(grace_end))));
            Some(v)
        });
        let dropped = match (&self.status.previous_key, &graced) {
            (Some(older), Some(_)) if older.not_after.as_ref().is_some_and(|end| end.0 > now) => {
                Some(older.key_id.clone())
            }
            _ => None,
        };
        if graced.is_some() {
            self.status.previous_key = graced;
        }
        self.status.next_key = None;
        self.out.token = None;
        self.out.next_token = None;
        self.out.again = true;
        let note = match &self.status.previous_key {
            Some(previous) if previous.not_after.as_ref().is_some_and(|end| end.0 > now) => format!(
                "Repairing: {why}; issuing a new token, the previous one works until {}",
                previous.not_after.as_ref().map_or(grace_end, |end| end.0)
            ),
            _ => format!("Repairing: {why}; issuing a new token"),
        };
        let note = match dropped {
            Some(id) => format!("{note}; the older previous token {id} stops working now"),
            None => note,
        };
        self.event(EventKind::Warning, Reason::SecretRepaired, note);
    }

    pub(super) fn rotation(&mut self, spec: &ValidSpec) {
        let base = self.status.last_rotated_at.as_ref().or(self.status.current_key.as_ref().map(|v| &v.not_before));
        let due_at = spec.rotation.as_ref().zip(base).and_then(|(r, base)| next_rotation(r, base.0));
        self.status.next_rotation_at = due_at.map(Time);
        if let Some(next) = self.status.next_key.clone() {
            self.continue_rotation(spec, &next);
        } else if let Some(why) = self.rotation_trigger(spec, due_at) {
            if self.status.previous_key.is_some() {
                // Held: a swap now would replace the previous token before its
                // grace period ends. `retire_previous` requeued for that end;
                // the trigger is still pending then.
                self.out.next_token = None;
            } else {
                self.start_rotation(spec, &why);
            }
        } else {
            // A next token nobody asked for (stale or planted) is removed, never published.
            self.out.next_token = None;
            if let Some(at) = due_at {
                self.deadline(at);
            }
        }
    }

    pub(super) fn rotation_trigger(&self, spec: &ValidSpec, due_at: Option<Timestamp>) -> Option<String> {
        let annotation = self.annotation();
        let current_prefix = self.secret_slot(false).facts().map(|f| f.prefix.clone());
        if annotation.is_some() && annotation != self.status.last_rotation_request {
            Some(format!("requested by the {ROTATE_ANNOTATION} annotation"))
        } else if current_prefix.is_some_and(|p| p != spec.prefix.as_str()) {
            Some(format!("prefix changed to {}", spec.prefix.as_str()))
        } else {
            due_at.filter(|at| *at <= self.now).map(|at| format!("scheduled for {at}"))
        }
    }

    /// Step 1 and 2 of the protocol: persist the next token (mint), then
    /// record it in status so that it is published beside the current one.
    pub(super) fn start_rotation(&mut self, spec: &ValidSpec, why: &str) {
        let slot = self.secret_slot(true).clone();
        match slot.facts() {
            Some(facts) if facts.prefix == spec.prefix.as_str() && !self.is_known(facts.hash) => {
                self.status.next_key = Some(version(facts.hash, self.now));
                self.out.next_token = Some(Source::NextToken);
                // The swap is counted from when the hash is seen published: look again soon.
                self.deadline(after(self.now, self.settings.publish_poll));
                let delay = self.settings.propagation_delay;
                self.event(
                    EventKind::Normal,
                    Reason::RotationStarted,
                    format!(
                        "Rotation {why}: publishing next token {}; swap {delay:#} after it is published",
                        facts.hash.key_id()
                    ),
                );
            }
            _ => {
                self.out.mint = Some(Mint { prefix: spec.prefix.clone() });
                self.out.next_token = Some(Source::Minted);
                self.out.again = true;
            }
        }
    }

    /// Step 3: once the next hash has had time to reach every verifier, swap.
    pub(super) fn continue_rotation(&mut self, spec: &ValidSpec, next: &KeyVersion) {
        let slot = self.secret_slot(true).clone();
        match slot.facts() {
            Some(facts) if Some(facts.hash) == version_hash(next) => {
                // Counted from when the hash was first seen in the key set as
                // written, not from when status named it: the publisher may have
                // been failing, or the operator down, in between.
                let published_at = self.note_publication(next, None);
                if let Some(slot) = &mut self.status.next_key {
                    slot.published_at = published_at.map(Time);
                }
                match published_at.map(|t| after(t, self.settings.propagation_delay)) {
                    Some(swap_at) if swap_at <= self.now => {
                        let facts = facts.clone();
                        self.complete_swap(spec, &facts, Source::NextToken);
                    }
                    Some(swap_at) => self.deadline(swap_at),
                    None => self.deadline(after(self.now, self.settings.publish_poll)),
                }
            }
            _ => {
                self.status.next_key = None;
                self.out.next_token = None;
                self.out.again = true;
                self.event(
                    EventKind::Warning,
                    Reason::RotationRestarted,
                    "The next token was lost from the Secret before the swap; minting another".to_owned(),
                );
            }
        }
    }

    /// Step 4: the Secret holds the new token; the old one keeps working for the grace period.
    pub(super) fn complete_swap(&mut self, spec: &ValidSpec, next: &TokenFacts, token_from: Source) {
        let grace_end = after(self.now, self.grace(spec));
        let now = self.now;
        // Never extend a token whose validity already ended.
        let previous = self.status.current_key.take().filter(|p| p.not_after.as_ref().is_none_or(|end| end.0 > now));
        let previous = previous.map(|mut p| {
            p.not_after = Some(Time(p.not_after.as_ref().map_or(grace_end, |end| end.0.min(grace_end))));
            p
        });
        let mut current = self.status.next_key.take().unwrap_or_else(|| version(next.hash, self.now));
        current.not_after = None;
        self.status.previous_key = previous;
        self.status.current_key = Some(current);
        self.status.last_rotated_at = Some(Time(self.now));
        self.status.last_rotation_request = self.annotation().or(self.status.last_rotation_request.take());
        self.status.prefix = Some(next.display_prefix.clone());
        self.out.token = Some(token_from);
        self.out.next_token = None;
        let due_at = spec.rotation.as_ref().and_then(|r| next_rotation(r, self.now));
        self.status.next_rotation_at = due_at.map(Time);
        if let Some(at) = due_at {
            self.deadline(at);
        }
        self.deadline(grace_end);
        self.event(
            EventKind::Normal,
            Reason::Swapped,
            format!("Secret now holds token {}; the previous token works until {grace_end}", next.hash.key_id()),
        );
    }

    /// Step 5: the grace period is over.
    pub(super) fn retire_previous(&mut self) {
        let Some(previous) = &self.status.previous_key else { return };
        match previous.not_after.as_ref().map(|t| t.0) {
            Some(end) if end > self.now => self.deadline(end),
            _ => {
                let id = previous.key_id.clone();
                self.status.previous_key = None;
                self.event(EventKind::Normal, Reason::PreviousRetired, format!("Previous token {id} retired"));
            }
        }
    }

    /// When the current token's hash was first seen published, or `None` if it
    /// is not published (then `publishedAt` is cleared: verifiers may lose it).
    /// `legacy` is used for a version recorded before `publishedAt` existed.
    fn note_publication(&self, version: &KeyVersion, legacy: Option<Timestamp>) -> Option<Timestamp> {
        let hash = version_hash(version)?;
        if !self.observed.published.iter().any(|r| r.hash == hash) {
            return None;
        }
        Some(version.published_at.as_ref().map(|t| t.0).or(legacy).unwrap_or(self.seen_at))
    }

    fn note_current_publication(&mut self) {
        let Some(current) = self.status.current_key.clone() else { return };
        // An operator before `publishedAt` existed reported Ready only for a
        // published token: keep such a key Ready instead of waiting again.
        let was_ready = self.old.conditions.first().is_some_and(|c| c.status == super::TRUE);
        let stored_without = self.old.current_key.as_ref().is_some_and(|k| k.published_at.is_none());
        let legacy = (was_ready && stored_without).then_some(current.not_before.0);
        let published_at = self.note_publication(&current, legacy);
        if let Some(slot) = &mut self.status.current_key {
            slot.published_at = published_at.map(Time);
        }
    }

    /// When the current token will work at every verifier, if not yet.
    fn current_ready_at(&self) -> Option<Timestamp> {
        let current = self.status.current_key.as_ref()?;
        match current.published_at.as_ref() {
            None => Some(after(self.now, self.settings.publish_poll)),
            Some(t) => Some(after(t.0, self.settings.propagation_delay)).filter(|at| *at > self.now),
        }
    }

    pub(super) fn summarise_live(&mut self) {
        if self.status.current_key.is_none() {
            self.status.state = Some(KeyState::Pending);
            self.ready(false, Reason::Issuing, "A token is being issued".to_owned());
            return;
        }
        if self.key.spec.active {
            if self.was(KeyState::Inactive) {
                self.event(EventKind::Normal, Reason::Enabled, "Key enabled: its token works again".to_owned());
            }
            if let Some(ready_at) = self.current_ready_at() {
                // Ready means the token in the Secret works at verifiers.
                self.deadline(ready_at);
                self.status.state = Some(KeyState::Pending);
                self.ready(
                    false,
                    Reason::Publishing,
                    "The token is in the Secret; its hash is being published to verifiers".to_owned(),
                );
                return;
            }
            let rotating = self.status.next_key.is_some() || self.status.previous_key.is_some();
            let (state, reason, message) = if rotating {
                (KeyState::Rotating, Reason::Rotating, "The key works; a rotation is under way")
            } else {
                (KeyState::Active, Reason::Active, "The key works")
            };
            self.status.state = Some(state);
            self.ready(true, reason, message.to_owned());
        } else {
            if self.was(KeyState::Active) || self.was(KeyState::Rotating) {
                self.event(
                    EventKind::Normal,
                    Reason::Disabled,
                    "Key disabled: verifiers refuse it until active is true".to_owned(),
                );
            }
            self.status.state = Some(KeyState::Inactive);
            self.ready(false, Reason::Disabled, "The key is switched off (spec.active is false)".to_owned());
        }
    }
}
