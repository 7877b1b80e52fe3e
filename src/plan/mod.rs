//! The pure lifecycle decision: given an ApiKey, what the controller observed and the time, what should be true.
//!
//! [`plan`] is a plain synchronous function: no client, no clock, no
//! randomness. The controller reads the API into an [`Observed`], calls
//! [`plan`], carries out the returned [`Plan`] and, when the plan asks for it
//! ([`Plan::requeue_at`] not after `now`), plans again at once with what it
//! just wrote. Every `if` that decides something about a key lives here.
//!
//! Tokens never enter this module. The Secret is described by the hashes of
//! the tokens it holds ([`SecretView`]); a new token is an instruction
//! ([`Mint`]) that the controller carries out with its own randomness, writing
//! the token into the Secret *before* anything else records it. The next plan
//! then finds the token in the Secret and adopts it: a new key's token is
//! handed to the publisher in memory ([`Held`]) and recorded in status once it
//! is Ready; any other token is recorded in status first. Because the normal
//! path and the crash-recovery path are the same adoption rules, a crash
//! between any two writes resumes without minting twice.
//!
//! The Secret layout ([`DATA_TOKEN`], [`DATA_NEXT_TOKEN`], labels) and the
//! state machine are documented in `docs/lifecycle.md`.

pub mod anomaly;
pub mod class;
pub mod cluster;
mod lifecycle;
mod reason;
mod records;
pub mod restarts;
mod schedule;
pub mod unused;
pub mod usage;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};

use crate::api::{ApiKey, ApiKeyStatus, KeyVersion};
use crate::keyset::Record;
use crate::token::{KeyHash, Prefix};

pub use reason::Reason;
pub use records::{records_for, records_with};
pub use validate::{SpecError, ValidSpec, validate};

/// Secret data key holding the token clients use.
pub const DATA_TOKEN: &str = "token";
/// Secret data key holding the next token during a rotation, before it is
/// swapped into [`DATA_TOKEN`]. Clients must not use it: its hash may not have
/// reached every verifier yet.
pub const DATA_NEXT_TOKEN: &str = "next-token";
// Label on everything the operator writes, and the key set a shard belongs to: the contract's.
pub use crate::configmap::{LABEL_KEYSET, LABEL_MANAGED_BY, MANAGED_BY};
/// Label on a Secret naming its ApiKey.
pub const LABEL_APIKEY: &str = "keyward.dev/apikey";
/// Finalizer that keeps an ApiKey until its hashes have left the key set.
pub const FINALIZER: &str = "keyward.dev/unpublish";

/// Operator-wide settings the plan depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// How long a newly published hash is given to reach every verifier
    /// before the Secret is swapped to its token. The default covers kubelet's
    /// ConfigMap volume sync (sync period plus cache TTL, about a minute each).
    pub propagation_delay: SignedDuration,
    /// Grace period when `rotation.gracePeriod` is absent, and for the
    /// previous token after the Secret had to be repaired. A spec relying on
    /// it is valid only if it is shorter than the rotation interval.
    pub default_grace_period: SignedDuration,
    /// How soon to look again while a hash (next or current) is not seen published yet.
    pub publish_poll: SignedDuration,
    /// Advance notices before a key expires (`--expiry-notices`), longest first.
    pub expiry_notices: Vec<SignedDuration>,
    /// When usage counts as an anomaly (`--usage-anomaly-*`); `None` turns the check off.
    pub anomalies: Option<anomaly::Thresholds>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            propagation_delay: SignedDuration::from_secs(120),
            default_grace_period: SignedDuration::from_hours(1),
            publish_poll: SignedDuration::from_secs(5),
            expiry_notices: unused::DEFAULT_NOTICES.iter().map(|d| SignedDuration::from_hours(d * 24)).collect(),
            anomalies: Some(anomaly::Thresholds::default()),
        }
    }
}

/// What the controller read before planning.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observed {
    /// The Secret named by the spec.
    pub secret: SecretView,
    /// This key's records in its key set as last written by the publisher.
    pub published: Vec<Record>,
    /// The new current token the publisher lists for this key from memory
    /// before status names it ([`Plan::hold`]), with the time the publisher
    /// wrote it into the key set (`version.publishedAt`) if it has.
    pub held: Option<Held>,
    /// The key's ApiKeyClass ([`class::resolve`]).
    pub class: class::ClassView,
}

/// A new current token that is published before status names it.
///
/// The Secret is the crash-safe record of a freshly minted token: a restart
/// adopts the token it finds there. So on creation the plan does not write
/// status to make the token publishable; it hands the token's public facts to
/// the publisher, which keeps them in memory (keyed by the ApiKey's uid) and
/// lists the hash as the key's current token while status names none. Status
/// is written once, when the hash has been published for the propagation
/// delay (or sooner, when something the held path does not handle happens).
/// A restart loses the held facts and adopts the Secret's token again; the
/// publication time is then taken when the publisher sees the hash in the key
/// set, never earlier than the truth.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    /// The token's status entry as it will be recorded: hash, key id,
    /// `notBefore` (when it was adopted) and, filled in by the publisher,
    /// `publishedAt`.
    pub version: KeyVersion,
    /// The key set it was adopted for.
    pub key_set: String,
    /// The Secret it was adopted from.
    pub secret_name: String,
    /// The rotate annotation's value when it was adopted (recorded as
    /// `status.lastRotationRequest`).
    pub rotation_request: Option<String>,
}

impl Held {
    /// The held token's hash.
    #[must_use]
    pub fn hash(&self) -> Option<KeyHash> {
        records::version_hash(&self.version)
    }
}

/// The Secret as far as planning needs it: which tokens it holds, by hash.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SecretView {
    /// No Secret of that name.
    #[default]
    Absent,
    /// The Secret exists.
    Present(Box<SecretFacts>),
}

/// Facts about an existing Secret.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SecretFacts {
    /// It carries an owner reference to this ApiKey (by uid).
    pub owned: bool,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its annotations.
    pub annotations: BTreeMap<String, String>,
    /// Label keys the operator's own server-side apply owns (from `managedFields`): a key
    /// here that the plan no longer wants means the Secret must be applied again, which
    /// removes it on a real API server.
    pub applied_labels: BTreeSet<String>,
    /// Annotation keys the operator's own server-side apply owns.
    pub applied_annotations: BTreeSet<String>,
    /// Data keys other than the two the operator writes.
    pub foreign_keys: Vec<String>,
    /// What [`DATA_TOKEN`] holds.
    pub token: Slot,
    /// What [`DATA_NEXT_TOKEN`] holds.
    pub next_token: Slot,
}

/// One data key of the Secret that should hold a token.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Slot {
    /// The key is absent.
    #[default]
    Empty,
    /// The key holds something that is not a well-formed token.
    Malformed,
    /// The key holds a well-formed token.
    Token(TokenFacts),
}

/// The public facts of a token: never the token itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFacts {
    /// Its SHA-256.
    pub hash: KeyHash,
    /// Its prefix (such as `kw`).
    pub prefix: String,
    /// What status may show of it ([`crate::token::Token::display_prefix`]).
    pub display_prefix: String,
}

impl Slot {
    fn facts(&self) -> Option<&TokenFacts> {
        match self {
            Slot::Token(facts) => Some(facts),
            Slot::Empty | Slot::Malformed => None,
        }
    }
}

/// Where a Secret data key's value comes from when the Secret is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The token now in [`DATA_TOKEN`].
    Token,
    /// The token now in [`DATA_NEXT_TOKEN`].
    NextToken,
    /// The token minted for this plan ([`Plan::mint`]).
    Minted,
}

/// The Secret the plan wants; the controller adds the owner reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredSecret {
    /// Secret name.
    pub name: String,
    /// Labels (managed-by, apikey, plus the spec's template labels).
    pub labels: BTreeMap<String, String>,
    /// Annotations from the spec's template.
    pub annotations: BTreeMap<String, String>,
    /// Value of [`DATA_TOKEN`]; `None` means the key must be absent.
    pub token: Option<Source>,
    /// Value of [`DATA_NEXT_TOKEN`]; `None` means the key must be absent.
    pub next_token: Option<Source>,
}

/// A token to be minted by the controller, with its own randomness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mint {
    /// The prefix of the new token.
    pub prefix: Prefix,
}

/// Whether the key set must be rebuilt, and how urgently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Publish {
    /// This key's records did not change.
    Unchanged,
    /// Records were added or changed; coalescing with other keys is fine.
    Soon,
    /// Access was taken away (a hash removed or switched off): publish before
    /// the reconcile ends.
    Now,
}

/// Normal or Warning, as Kubernetes Events have it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A lifecycle step.
    Normal,
    /// Something a person should look at.
    Warning,
}

/// A Kubernetes Event to emit. Notes never contain a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedEvent {
    /// Normal or Warning.
    pub kind: EventKind,
    /// Why, such as [`Reason::RotationStarted`].
    pub reason: Reason,
    /// Human-readable text.
    pub note: String,
}

/// What to do about the finalizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finalizer {
    /// Add it before anything is published.
    Add,
    /// Nothing to do.
    Keep,
    /// The object is being deleted: unpublish, then remove the finalizer.
    Remove,
}

/// Everything the controller should do for one ApiKey, as data.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The spec problems found; empty when the spec is valid.
    pub spec_errors: Vec<SpecError>,
    /// Finalizer handling.
    pub finalizer: Finalizer,
    /// A token to mint into the slot(s) of [`Plan::secret`] marked [`Source::Minted`].
    pub mint: Option<Mint>,
    /// The Secret to write; `None` means leave it as it is.
    pub secret: Option<DesiredSecret>,
    /// An earlier Secret of this key (after `secretName` changed) to delete if owned.
    pub delete_secret: Option<String>,
    /// An earlier key set of this key (after `keySet` changed) to rebuild at
    /// once, before status forgets it, so that the key leaves it.
    pub leave_key_set: Option<String>,
    /// This key's records in its key set, after this plan.
    pub records: Vec<Record>,
    /// Whether the key set needs publishing.
    pub publish: Publish,
    /// A new current token for the publisher to list from memory while status
    /// names none ([`Held`]); `None` means the publisher holds nothing for
    /// this key. Carried out after the finalizer and before any other write.
    pub hold: Option<Held>,
    /// The status to write; `None` means it is already right.
    pub status: Option<ApiKeyStatus>,
    /// Events to emit.
    pub events: Vec<PlannedEvent>,
    /// The usage anomalies this plan notifies (one `UsageAnomaly` Event names them all).
    pub anomalies: Vec<anomaly::AnomalyKind>,
    /// Delete the ApiKey itself (expired past `retainExpiredFor`).
    pub delete_apikey: bool,
    /// When to reconcile again; not after `now` means plan again right away,
    /// which a plan asks only when its pass changed something. Any other
    /// deadline is a whole second after `now` (the plan's time grain), so a
    /// caller comparing it with an unrounded clock never finds it due at once.
    pub requeue_at: Option<Timestamp>,
}

/// Decide what should happen to `key`, given what was observed and the time.
#[must_use]
pub fn plan(key: &ApiKey, observed: &Observed, settings: &Settings, now: Timestamp) -> Plan {
    lifecycle::plan(key, observed, settings, whole_seconds(now), whole_seconds_up(now))
}

/// Key-set times are whole seconds; so are all times the plan derives.
fn whole_seconds(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// `t` rounded up to a whole second: for a time the plan must never reach
/// early (a deadline, or when a hash was published).
fn whole_seconds_up(t: Timestamp) -> Timestamp {
    let down = whole_seconds(t);
    if down < t { down.checked_add(jiff::SignedDuration::from_secs(1)).unwrap_or(Timestamp::MAX) } else { down }
}

/// The Secret name for `key`: `spec.secretName` or `<name>-apikey`.
#[must_use]
pub fn secret_name(key: &ApiKey) -> String {
    key.spec.secret_name.clone().unwrap_or_else(|| format!("{}-apikey", key.metadata.name.as_deref().unwrap_or("")))
}
