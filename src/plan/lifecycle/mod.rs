//! The lifecycle state machine: small named steps over a draft of the new status.
//!
//! [`terminal`] holds the states that end the live lifecycle (deleted,
//! invalid, conflicting, revoked, expired); [`live`] the token of a working
//! key: issue, repair, rotate, retire.
//!
//! Each pass first derives the key's [`Phase`] (deleting, invalid, conflicting,
//! revoked, expired, live) and then takes that phase's steps. Order matters
//! and is the policy: the order of the checks in [`Phase::of`], and within a
//! live key ([`Draft::live`]) the current token, then retirement of the
//! previous token, then rotation.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{
    ApiKey, ApiKeyStatus, CONDITION_READY, ConditionUpdate, KeyState, KeyVersion, ROTATE_ANNOTATION, set_condition,
};
use crate::keyset::{Record, RecordState};
use crate::token::KeyHash;

use super::class::ClassProblem;
use super::records::{records_from, version_hash};
use super::validate::{SpecError, ValidSpec, validate, validate_name};
use super::{
    DesiredSecret, EventKind, Finalizer, Held, LABEL_APIKEY, LABEL_MANAGED_BY, MANAGED_BY, Mint, Observed, Plan,
    PlannedEvent, Publish, Reason, SecretView, Settings, Slot, Source, secret_name,
};

mod anomalies;
mod live;
mod notices;
mod terminal;

/// Condition statuses as Kubernetes spells them.
const TRUE: &str = "True";
const FALSE: &str = "False";

/// How long to wait before looking again at a Secret owned by someone else.
const CONFLICT_RECHECK: SignedDuration = SignedDuration::from_mins(5);

/// Where a key stands, derived before anything is decided about it. The order
/// of the checks in [`Phase::of`] is the policy.
#[derive(Debug)]
enum Phase {
    /// The ApiKey is being deleted: unpublish, release the finalizer.
    Deleting,
    /// The spec breaks a rule: nothing is published until it is fixed.
    Invalid(Vec<SpecError>),
    /// The Secret belongs to someone else: keyward does not touch it.
    SecretConflict,
    /// Revoked, for good.
    Revoked,
    /// Past `expiresAt`, for good.
    Expired(ValidSpec),
    /// The key breaks its ApiKeyClass, or its class is missing or ambiguous: nothing is
    /// published until that changes.
    ClassBlocked(ClassProblem),
    /// A working key: issue, repair, rotate, retire.
    Live(ValidSpec),
}

impl Phase {
    /// Deletion first, then spec validity, then ownership of the Secret, then
    /// the terminal states; anything else is live.
    fn of(key: &ApiKey, observed: &Observed, settings: &Settings, now: Timestamp) -> Phase {
        if key.metadata.deletion_timestamp.is_some() {
            return Phase::Deleting;
        }
        let spec = match (
            key.metadata.name.as_deref().and_then(validate_name),
            validate(&key.spec, settings.default_grace_period),
        ) {
            (None, Ok(spec)) => spec,
            (name, Err(errors)) => return Phase::Invalid(name.into_iter().chain(errors).collect()),
            (Some(name), Ok(_)) => return Phase::Invalid(vec![name]),
        };
        if let SecretView::Present(facts) = &observed.secret
            && !facts.owned
        {
            return Phase::SecretConflict;
        }
        let old = key.status.as_ref();
        // Revocation recorded in status is final even if the spec says otherwise
        // (admission refuses un-revoking, but an object can bypass admission);
        // state Revoked covers statuses written before `revokedAt` existed.
        if key.spec.revoked || old.is_some_and(|s| s.revoked_at.is_some() || s.state == Some(KeyState::Revoked)) {
            Phase::Revoked
        } else if super::unused::has_expired(&spec, old, now) {
            Phase::Expired(spec)
        } else if let Some(problem) = super::class::problem(key, &observed.class, settings.default_grace_period) {
            Phase::ClassBlocked(problem)
        } else {
            Phase::Live(spec)
        }
    }
}

/// `now` is the clock rounded down to a whole second (nothing is due early);
/// `seen_at` rounded up (nothing seen now is stamped earlier than the truth).
pub(super) fn plan(key: &ApiKey, observed: &Observed, settings: &Settings, now: Timestamp, seen_at: Timestamp) -> Plan {
    let mut draft = Draft::new(key, observed, settings, now, seen_at);
    match Phase::of(key, observed, settings, now) {
        Phase::Deleting => draft.finalize(),
        Phase::Invalid(errors) => draft.invalid(errors),
        Phase::SecretConflict => draft.secret_conflict(),
        Phase::Revoked => {
            draft.follow_moves();
            draft.revoke();
            draft.finish()
        }
        Phase::Expired(spec) => {
            draft.follow_moves();
            draft.expire(&spec);
            draft.finish()
        }
        Phase::ClassBlocked(problem) => {
            draft.follow_moves();
            draft.class_blocked(&problem);
            draft.finish_without_secret()
        }
        Phase::Live(spec) => {
            draft.follow_moves();
            draft.class_kept();
            draft.live(&spec);
            draft.usage_anomalies();
            draft.finish()
        }
    }
}

/// One pass over a key: what was read, the status as it is being rewritten,
/// and what has been decided so far.
struct Draft<'a> {
    key: &'a ApiKey,
    observed: &'a Observed,
    settings: &'a Settings,
    now: Timestamp,
    /// When something first seen in this pass (a published hash) is taken to
    /// have happened: `now` rounded up, never earlier than the truth.
    seen_at: Timestamp,
    old: ApiKeyStatus,
    status: ApiKeyStatus,
    /// `spec.secretName` changed in this pass.
    moved_secret: bool,
    out: Decided,
}

/// The instructions a pass has decided on, besides the status: they become the [`Plan`].
#[derive(Default)]
struct Decided {
    events: Vec<PlannedEvent>,
    token: Option<Source>,
    next_token: Option<Source>,
    mint: Option<Mint>,
    delete_secret: Option<String>,
    leave_key_set: Option<String>,
    /// The new current token the publisher is to hold ([`Held`]). While
    /// status names no current token, it is waiting to be Ready and status is
    /// not written.
    hold: Option<Held>,
    delete_apikey: bool,
    /// The usage anomalies notified in this pass.
    anomalies: Vec<crate::plan::anomaly::AnomalyKind>,
    /// This pass changed something the next pass must see: plan again at once.
    again: bool,
    deadlines: Vec<Timestamp>,
}

impl<'a> Draft<'a> {
    fn new(
        key: &'a ApiKey,
        observed: &'a Observed,
        settings: &'a Settings,
        now: Timestamp,
        seen_at: Timestamp,
    ) -> Self {
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
            seen_at,
            status: old.clone(),
            old,
            moved_secret: false,
            out: Decided { token, next_token, ..Decided::default() },
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

    fn event(&mut self, kind: EventKind, reason: Reason, note: String) {
        self.out.events.push(PlannedEvent { kind, reason, note });
    }

    /// Plan again at `at`, rounded up to the plan's grain: `now` is a whole
    /// second, so a deadline between seconds (a sub-second poll, a
    /// publication time taken from the clock) is due only at the next one.
    /// Unrounded, it could already have passed by the caller's clock, which
    /// would plan again at once and find the same deadline again.
    fn deadline(&mut self, at: Timestamp) {
        self.out.deadlines.push(super::whole_seconds_up(at));
    }

    fn ready(&mut self, status: bool, reason: Reason, message: String) {
        let status = if status { TRUE } else { FALSE };
        let update = ConditionUpdate { type_: CONDITION_READY, status, reason: reason.as_str(), message };
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
            token: self.out.token,
            next_token: self.out.next_token,
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
            && subset(&desired.annotations, &facts.annotations)
            && facts.applied_labels.iter().all(|k| desired.labels.contains_key(k))
            && facts.applied_annotations.iter().all(|k| desired.annotations.contains_key(k)))
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
        let held = self.out.hold.as_ref().map(|h| &h.version);
        self.status.class_name = super::class::class_name(&self.observed.class).map(str::to_owned);
        let records = records_from(
            self.key,
            Some(&self.status),
            held,
            &self.observed.class,
            self.settings.default_grace_period,
            self.now,
        );
        self.note_class_default(&records);
        let publish = publish_urgency(&self.observed.published, &records);
        // While a token is being minted, status waits for the pass that adopts
        // it; while a new token is held, for the pass that finds it Ready.
        let holding = self.out.hold.is_some() && self.status.current_key.is_none();
        let status = (self.out.mint.is_none() && !holding && self.status != self.old).then(|| self.status.clone());
        let requeue_at = if self.out.again { Some(self.now) } else { self.out.deadlines.iter().copied().min() };
        let has_finalizer =
            self.key.metadata.finalizers.as_ref().is_some_and(|f| f.iter().any(|f| f == super::FINALIZER));
        Plan {
            spec_errors: Vec::new(),
            finalizer: if has_finalizer { Finalizer::Keep } else { Finalizer::Add },
            mint: self.out.mint,
            secret,
            delete_secret: self.out.delete_secret,
            leave_key_set: self.out.leave_key_set,
            records,
            publish,
            hold: self.out.hold,
            status,
            events: self.out.events,
            anomalies: self.out.anomalies,
            delete_apikey: self.out.delete_apikey,
            requeue_at,
        }
    }
}

impl Draft<'_> {
    /// A key without its own rate limit is published with its class's default; when
    /// that default changes (up or down) under a published key, each such key says so
    /// in an Event: a class change never changes a published key silently.
    fn note_class_default(&mut self, records: &[Record]) {
        if self.key.spec.rate_limit.is_some() {
            return;
        }
        let (Some(old), Some(new)) = (self.observed.published.first(), records.first()) else { return };
        if old.rate_limit != new.rate_limit {
            let class = super::class::class_name(&self.observed.class).unwrap_or("(none)");
            let limit = new.rate_limit.as_ref().map_or_else(
                || "no rate limit".to_owned(),
                |r| format!("{} per {} (burst {})", r.requests, r.period, r.burst),
            );
            let note = format!("The rate limit from ApiKeyClass {class}'s defaultRateLimit is now {limit}");
            self.event(EventKind::Normal, Reason::ClassDefaultChanged, note);
        }
    }
}

fn version(hash: KeyHash, not_before: Timestamp) -> KeyVersion {
    KeyVersion {
        key_id: hash.key_id().to_string(),
        hash: Some(hash.to_string()),
        not_before: Time(not_before),
        not_after: None,
        published_at: None,
    }
}

/// Removing a hash, switching one off, shortening its validity, narrowing its
/// scopes or changing its rate limit (other than dropping it) takes access
/// away: that cannot wait for coalescing. Anything else can.
fn publish_urgency(old: &[Record], new: &[Record]) -> Publish {
    if old == new {
        return Publish::Unchanged;
    }
    let taken_away = old.iter().any(|o| {
        new.iter().find(|n| n.hash == o.hash).is_none_or(|n| {
            (o.state == RecordState::Active && n.state != RecordState::Active)
                || n.not_after.is_some_and(|end| o.not_after.is_none_or(|old_end| end < old_end))
                || !o.scopes.iter().all(|s| n.scopes.contains(s))
                || (n.rate_limit.is_some() && n.rate_limit != o.rate_limit)
        })
    });
    if taken_away { Publish::Now } else { Publish::Soon }
}
