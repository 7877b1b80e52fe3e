//! The lifecycle state machine: small named steps over a draft of the new status.
//!
//! Order matters and is the policy: deletion first, then spec validity, then
//! ownership of the Secret, then the terminal states (revoked, expired), then
//! the current token, rotation, and retirement of the previous token.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{
    ApiKey, ApiKeyStatus, CONDITION_READY, ConditionUpdate, KeyState, KeyVersion, ROTATE_ANNOTATION, set_condition,
};
use crate::keyset::{Record, RecordState};
use crate::token::KeyHash;

use super::records::{records_for, version_hash};
use super::schedule::{after, next_rotation};
use super::validate::{SpecError, ValidSpec, validate};
use super::{
    DesiredSecret, EventKind, Finalizer, LABEL_APIKEY, LABEL_MANAGED_BY, MANAGED_BY, Mint, Observed, Plan,
    PlannedEvent, Publish, SecretView, Settings, Slot, Source, TokenFacts, secret_name,
};

/// How long to wait before looking again at a Secret owned by someone else.
const CONFLICT_RECHECK: SignedDuration = SignedDuration::from_mins(5);

pub(super) fn plan(key: &ApiKey, observed: &Observed, settings: &Settings, now: Timestamp) -> Plan {
    let mut draft = Draft::new(key, observed, settings, now);
    if key.metadata.deletion_timestamp.is_some() {
        return draft.finalize();
    }
    let spec = match validate(&key.spec) {
        Ok(spec) => spec,
        Err(errors) => return draft.invalid(errors),
    };
    if let SecretView::Present(facts) = &observed.secret
        && !facts.owned
    {
        return draft.secret_conflict();
    }
    draft.forget_renamed_secret();
    if key.spec.revoked {
        draft.revoke();
    } else if draft.status.expired_at.is_some() || spec.expires_at.is_some_and(|t| t <= now) {
        draft.expire(&spec);
    } else if draft.current_token(&spec) {
        draft.rotation(&spec);
        draft.retire_previous();
        if let Some(t) = spec.expires_at {
            draft.deadline(t);
        }
        draft.summarise_live();
    } else {
        // A token is being issued or the Secret repaired: say so.
        draft.summarise_live();
    }
    draft.finish()
}

struct Draft<'a> {
    key: &'a ApiKey,
    observed: &'a Observed,
    settings: &'a Settings,
    now: Timestamp,
    old: ApiKeyStatus,
    status: ApiKeyStatus,
    events: Vec<PlannedEvent>,
    token: Option<Source>,
    next_token: Option<Source>,
    mint: Option<Mint>,
    delete_secret: Option<String>,
    delete_apikey: bool,
    again: bool,
    deadlines: Vec<Timestamp>,
}

impl<'a> Draft<'a> {
    fn new(key: &'a ApiKey, observed: &'a Observed, settings: &'a Settings, now: Timestamp) -> Self {
        let old = key.status.clone().unwrap_or_default();
        let (token, next_token) = match &observed.secret {
            SecretView::Present(facts) => {
                (facts.token.facts().map(|_| Source::Token), facts.next_token.facts().map(|_| Source::NextToken))
            }
            SecretView::Absent => (None, None),
        };
        Draft {
            key,
            observed,
            settings,
            now,
            status: old.clone(),
            old,
            events: Vec::new(),
            token,
            next_token,
            mint: None,
            delete_secret: None,
            delete_apikey: false,
            again: false,
            deadlines: Vec::new(),
        }
    }

    fn secret_slot(&self, next: bool) -> &Slot {
        static EMPTY: Slot = Slot::Empty;
        match &self.observed.secret {
            SecretView::Present(facts) if next => &facts.next_token,
            SecretView::Present(facts) => &facts.token,
            SecretView::Absent => &EMPTY,
        }
    }

    fn event(&mut self, kind: EventKind, reason: &'static str, note: String) {
        self.events.push(PlannedEvent { kind, reason, note });
    }

    fn deadline(&mut self, at: Timestamp) {
        self.deadlines.push(at);
    }

    fn ready(&mut self, status: bool, reason: &'static str, message: String) {
        let update =
            ConditionUpdate { type_: CONDITION_READY, status: if status { "True" } else { "False" }, reason, message };
        set_condition(&mut self.status.conditions, update, self.key.metadata.generation, self.now);
    }

    fn was(&self, state: KeyState) -> bool {
        self.old.state == Some(state)
    }

    fn grace(&self, spec: &ValidSpec) -> SignedDuration {
        spec.rotation
            .as_ref()
            .and_then(|r| r.grace_period.as_ref())
            .and_then(|g| SignedDuration::try_from(g.get()).ok())
            .unwrap_or(self.settings.default_grace_period)
    }

    /// A hash already known to status must never be adopted for a second role:
    /// the key set would then carry it twice.
    fn is_known(&self, hash: KeyHash) -> bool {
        [&self.status.current_key, &self.status.next_key, &self.status.previous_key]
            .into_iter()
            .flatten()
            .any(|v| version_hash(v) == Some(hash))
    }

    fn annotation(&self) -> Option<String> {
        self.key.metadata.annotations.as_ref().and_then(|a| a.get(ROTATE_ANNOTATION)).cloned()
    }

    // ---- terminal and error states ----

    fn finalize(self) -> Plan {
        Plan {
            spec_errors: Vec::new(),
            finalizer: Finalizer::Remove,
            mint: None,
            secret: None,
            delete_secret: None,
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

    fn invalid(mut self, errors: Vec<SpecError>) -> Plan {
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

    fn secret_conflict(mut self) -> Plan {
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

    fn forget_renamed_secret(&mut self) {
        let desired = secret_name(self.key);
        if let Some(old) = &self.old.secret_name
            && *old != desired
        {
            self.delete_secret = Some(old.clone());
        }
        self.status.secret_name = Some(desired);
    }

    fn clean_up_tokens(&mut self) {
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

    fn revoke(&mut self) {
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

    fn expire(&mut self, spec: &ValidSpec) {
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

    // ---- the live key ----

    /// Make sure the Secret holds the token status calls current. Returns
    /// whether the rest of the lifecycle can go on in this pass.
    fn current_token(&mut self, spec: &ValidSpec) -> bool {
        let slot = self.secret_slot(false).clone();
        let Some(current) = self.status.current_key.clone() else {
            return self.issue_current(spec, &slot);
        };
        let current_hash = version_hash(&current);
        let next_hash = self.status.next_key.as_ref().and_then(version_hash);
        match slot.facts() {
            Some(facts) if Some(facts.hash) == current_hash => {
                self.status.prefix = Some(facts.display_prefix.clone());
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
    fn issue_current(&mut self, spec: &ValidSpec, slot: &Slot) -> bool {
        match slot.facts() {
            Some(facts) if facts.prefix == spec.prefix.as_str() && !self.is_known(facts.hash) => {
                self.status.current_key = Some(version(facts.hash, self.now));
                self.status.prefix = Some(facts.display_prefix.clone());
                self.status.last_rotation_request = self.annotation();
                let (reason, note) = if self.old.previous_key.is_some() || self.old.last_rotated_at.is_some() {
                    ("TokenReissued", format!("New token {} written to the Secret", facts.hash.key_id()))
                } else {
                    ("Created", format!("Token {} written to the Secret and published", facts.hash.key_id()))
                };
                self.event(EventKind::Normal, reason, note);
                true
            }
            _ => {
                self.mint = Some(Mint { prefix: spec.prefix.clone() });
                self.token = Some(Source::Minted);
                self.next_token = None;
                self.again = true;
                false
            }
        }
    }

    /// The Secret lost or changed the current token. The token consumers held
    /// stays valid for the grace period (it was legitimately issued); whatever
    /// the Secret holds instead is never published; a new token is issued.
    fn repair_secret(&mut self, spec: &ValidSpec, slot: &Slot, current_hash: Option<KeyHash>) {
        let why = match (&self.observed.secret, slot) {
            _ if self.delete_secret.is_some() => "spec.secretName changed",
            (SecretView::Absent, _) => "the Secret was deleted",
            (_, Slot::Empty) => "the token was removed from the Secret",
            (_, Slot::Malformed) => "the Secret holds a malformed token",
            (_, Slot::Token(_)) => "the Secret holds a token keyward did not issue",
        };
        let grace_end = after(self.now, self.grace(spec));
        self.status.previous_key = self.status.current_key.take().filter(|_| current_hash.is_some()).map(|mut v| {
            v.not_after = Some(Time(grace_end));
            v
        });
        self.status.next_key = None;
        self.token = None;
        self.next_token = None;
        self.again = true;
        self.event(
            EventKind::Warning,
            "SecretRepaired",
            format!("Repairing: {why}; issuing a new token, the previous one works until {grace_end}"),
        );
    }

    fn rotation(&mut self, spec: &ValidSpec) {
        let base = self.status.last_rotated_at.as_ref().or(self.status.current_key.as_ref().map(|v| &v.not_before));
        let due_at = spec.rotation.as_ref().zip(base).and_then(|(r, base)| next_rotation(r, base.0));
        self.status.next_rotation_at = due_at.map(Time);
        if let Some(next) = self.status.next_key.clone() {
            self.continue_rotation(spec, &next);
        } else if let Some(why) = self.rotation_trigger(spec, due_at) {
            self.start_rotation(spec, &why);
        } else {
            // A next token nobody asked for (stale or planted) is removed, never published.
            self.next_token = None;
            if let Some(at) = due_at {
                self.deadline(at);
            }
        }
    }

    fn rotation_trigger(&self, spec: &ValidSpec, due_at: Option<Timestamp>) -> Option<String> {
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
    fn start_rotation(&mut self, spec: &ValidSpec, why: &str) {
        let slot = self.secret_slot(true).clone();
        match slot.facts() {
            Some(facts) if facts.prefix == spec.prefix.as_str() && !self.is_known(facts.hash) => {
                self.status.next_key = Some(version(facts.hash, self.now));
                self.next_token = Some(Source::NextToken);
                let swap_at = after(self.now, self.settings.propagation_delay);
                self.deadline(swap_at);
                self.event(
                    EventKind::Normal,
                    "RotationStarted",
                    format!("Rotation {why}: next token {} published; swap at {swap_at}", facts.hash.key_id()),
                );
            }
            _ => {
                self.mint = Some(Mint { prefix: spec.prefix.clone() });
                self.next_token = Some(Source::Minted);
                self.again = true;
            }
        }
    }

    /// Step 3: once the next hash has had time to reach every verifier, swap.
    fn continue_rotation(&mut self, spec: &ValidSpec, next: &KeyVersion) {
        let slot = self.secret_slot(true).clone();
        match slot.facts() {
            Some(facts) if Some(facts.hash) == version_hash(next) => {
                let swap_at = after(next.not_before.0, self.settings.propagation_delay);
                if swap_at > self.now {
                    self.deadline(swap_at);
                } else if self.observed.published.iter().any(|r| Some(r.hash) == version_hash(next)) {
                    let facts = facts.clone();
                    self.complete_swap(spec, &facts, Source::NextToken);
                } else {
                    self.deadline(after(self.now, self.settings.publish_poll));
                }
            }
            _ => {
                self.status.next_key = None;
                self.next_token = None;
                self.again = true;
                self.event(
                    EventKind::Warning,
                    "RotationRestarted",
                    "The next token was lost from the Secret before the swap; minting another".to_owned(),
                );
            }
        }
    }

    /// Step 4: the Secret holds the new token; the old one keeps working for the grace period.
    fn complete_swap(&mut self, spec: &ValidSpec, next: &TokenFacts, token_from: Source) {
        let grace_end = after(self.now, self.grace(spec));
        let mut previous = self.status.current_key.take();
        if let Some(p) = &mut previous {
            p.not_after = Some(Time(grace_end));
        }
        let mut current = self.status.next_key.take().unwrap_or_else(|| version(next.hash, self.now));
        current.not_after = None;
        self.status.previous_key = previous;
        self.status.current_key = Some(current);
        self.status.last_rotated_at = Some(Time(self.now));
        self.status.last_rotation_request = self.annotation().or(self.status.last_rotation_request.take());
        self.status.prefix = Some(next.display_prefix.clone());
        self.token = Some(token_from);
        self.next_token = None;
        let due_at = spec.rotation.as_ref().and_then(|r| next_rotation(r, self.now));
        self.status.next_rotation_at = due_at.map(Time);
        if let Some(at) = due_at {
            self.deadline(at);
        }
        self.deadline(grace_end);
        self.event(
            EventKind::Normal,
            "Swapped",
            format!("Secret now holds token {}; the previous token works until {grace_end}", next.hash.key_id()),
        );
    }

    /// Step 5: the grace period is over.
    fn retire_previous(&mut self) {
        let Some(previous) = &self.status.previous_key else { return };
        match previous.not_after.as_ref().map(|t| t.0) {
            Some(end) if end > self.now => self.deadline(end),
            _ => {
                let id = previous.key_id.clone();
                self.status.previous_key = None;
                self.event(EventKind::Normal, "PreviousRetired", format!("Previous token {id} retired"));
            }
        }
    }

    fn summarise_live(&mut self) {
        if self.status.current_key.is_none() {
            self.status.state = Some(KeyState::Pending);
            self.ready(false, "Issuing", "A token is being issued".to_owned());
            return;
        }
        if self.key.spec.active {
            if self.was(KeyState::Inactive) {
                self.event(EventKind::Normal, "Enabled", "Key enabled: its token works again".to_owned());
            }
            let rotating = self.status.next_key.is_some() || self.status.previous_key.is_some();
            let (state, reason, message) = if rotating {
                (KeyState::Rotating, "Rotating", "The key works; a rotation is under way")
            } else {
                (KeyState::Active, "Active", "The key works")
            };
            self.status.state = Some(state);
            self.ready(true, reason, message.to_owned());
        } else {
            if self.was(KeyState::Active) || self.was(KeyState::Rotating) {
                self.event(
                    EventKind::Normal,
                    "Disabled",
                    "Key disabled: verifiers refuse it until active is true".to_owned(),
                );
            }
            self.status.state = Some(KeyState::Inactive);
            self.ready(false, "Disabled", "The key is switched off (spec.active is false)".to_owned());
        }
    }

    // ---- assembling the plan ----

    fn desired_secret(&self) -> DesiredSecret {
        let template = self.key.spec.secret_template.clone().unwrap_or_default();
        let mut labels = template.labels;
        labels.insert(LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned());
        labels.insert(LABEL_APIKEY.to_owned(), self.key.metadata.name.clone().unwrap_or_default());
        DesiredSecret {
            name: secret_name(self.key),
            labels,
            annotations: template.annotations,
            token: self.token,
            next_token: self.next_token,
        }
    }

    /// Whether the Secret as observed differs from `desired`.
    fn secret_differs(&self, desired: &DesiredSecret) -> bool {
        let SecretView::Present(facts) = &self.observed.secret else {
            return desired.token.is_some() || desired.next_token.is_some();
        };
        let slot_ok = |want: Option<Source>, slot: &Slot, own: Source| match (want, slot) {
            (None, Slot::Empty) => true,
            (Some(source), Slot::Token(_)) => source == own,
            _ => false,
        };
        let subset = |want: &std::collections::BTreeMap<String, String>,
                      have: &std::collections::BTreeMap<String, String>| {
            want.iter().all(|(k, v)| have.get(k) == Some(v))
        };
        !(slot_ok(desired.token, &facts.token, Source::Token)
            && slot_ok(desired.next_token, &facts.next_token, Source::NextToken)
            && facts.foreign_keys.is_empty()
            && subset(&desired.labels, &facts.labels)
            && subset(&desired.annotations, &facts.annotations))
    }

    fn finish_without_secret(self) -> Plan {
        self.assemble(None)
    }

    fn finish(self) -> Plan {
        let desired = self.desired_secret();
        let secret = self.secret_differs(&desired).then_some(desired);
        self.assemble(secret)
    }

    fn assemble(mut self, secret: Option<DesiredSecret>) -> Plan {
        self.status.observed_generation = self.key.metadata.generation;
        let mut next_key = self.key.clone();
        next_key.status = Some(self.status.clone());
        let records = records_for(&next_key, self.now);
        let publish = publish_urgency(&self.observed.published, &records);
        // While a token is being minted, status waits for the pass that adopts it.
        let status = (self.mint.is_none() && self.status != self.old).then(|| self.status.clone());
        let requeue_at = if self.again { Some(self.now) } else { self.deadlines.iter().copied().min() };
        let has_finalizer =
            self.key.metadata.finalizers.as_ref().is_some_and(|f| f.iter().any(|f| f == super::FINALIZER));
        Plan {
            spec_errors: Vec::new(),
            finalizer: if has_finalizer { Finalizer::Keep } else { Finalizer::Add },
            mint: self.mint,
            secret,
            delete_secret: self.delete_secret,
            records,
            publish,
            status,
            events: self.events,
            delete_apikey: self.delete_apikey,
            requeue_at,
        }
    }
}

fn version(hash: KeyHash, not_before: Timestamp) -> KeyVersion {
    KeyVersion {
        key_id: hash.key_id().to_string(),
        hash: Some(hash.to_string()),
        not_before: Time(not_before),
        not_after: None,
    }
}

/// Removing a hash or switching one off takes access away: that cannot wait
/// for coalescing. Anything else can.
fn publish_urgency(old: &[Record], new: &[Record]) -> Publish {
    if old == new {
        return Publish::Unchanged;
    }
    let taken_away = old.iter().any(|o| {
        new.iter().find(|n| n.hash == o.hash).is_none_or(|n| {
            (o.state == RecordState::Active && n.state != RecordState::Active)
                || n.not_after.is_some_and(|end| o.not_after.is_none_or(|old_end| end < old_end))
        })
    });
    if taken_away { Publish::Now } else { Publish::Soon }
}
