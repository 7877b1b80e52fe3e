//! The reasons the lifecycle gives, on the `Ready` condition and on Events, as one closed set.
//!
//! Tools and people match on these strings (`kubectl get events
//! --field-selector reason=Revoked`, alerts on `Ready` reasons), so they are
//! part of the API: a variant's string is its name and never changes, and
//! `docs/lifecycle.md` names every one (a test checks it).

use std::fmt;

/// Declares [`Reason`] with its strings and the list of all variants from one
/// table, so a new variant cannot be missed by [`Reason::ALL`] (and so by the
/// docs test).
macro_rules! reasons {
    ($($(#[doc = $doc:literal])+ $name:ident,)+) => {
        /// Why the `Ready` condition is what it is, or why an Event was emitted.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[doc = $doc])+ $name,)+
        }

        impl Reason {
            /// Every reason, in declaration order.
            pub const ALL: &'static [Reason] = &[$(Reason::$name,)+];

            /// The CamelCase string written to Kubernetes.
            #[must_use]
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$name => stringify!($name),)+
                }
            }
        }
    };
}

reasons! {
    // Ready=False while the key is not usable yet.
    /// Condition: a token is being issued.
    Issuing,
    /// Condition: the token is in the Secret; its hash is being published.
    Publishing,
    // Ready=True.
    /// Condition: the token works.
    Active,
    /// Condition: the token works and a rotation is under way.
    Rotating,
    // States that end or suspend the live lifecycle; condition and Event alike.
    /// Condition and Event: `spec.active` is false.
    Disabled,
    /// Condition and Event: the key is revoked for good.
    Revoked,
    /// Condition and Event: the key is past `expiresAt`.
    Expired,
    /// Condition and Event: nobody used the key for `expireAfterUnused`.
    Unused,
    /// Condition `ExpiringSoon` and Warning Event: a notice point before expiry was reached.
    ExpiringSoon,
    /// Condition `ExpiringSoon` False: no notice point reached (or the expiry moved away).
    NotExpiringSoon,
    /// Condition and Event: the spec breaks a rule.
    InvalidSpec,
    /// Condition and Event: the Secret exists and belongs to someone else.
    SecretConflict,
    /// Condition and Event: the key breaks a rule of its ApiKeyClass; it is not published.
    ClassViolation,
    /// Condition and Event: the key's ApiKeyClass does not exist; it is not published.
    ClassNotFound,
    /// Condition and Event: the key names no class and several are marked default; it is not published.
    ClassAmbiguous,
    /// Event: a key held back by its ApiKeyClass keeps it again and is published.
    ClassSatisfied,
    /// Event: the rate limit the key has from its ApiKeyClass's default changed.
    ClassDefaultChanged,
    // Events of lifecycle steps.
    /// Event: the first token was written to the Secret.
    Created,
    /// Event: a new token was written after an earlier one (a repair).
    TokenReissued,
    /// Event: the key works again after being disabled.
    Enabled,
    /// Event: a rotation published its next token.
    RotationStarted,
    /// Event: the next token was lost before the swap; another is minted.
    RotationRestarted,
    /// Event: the Secret now holds the next token.
    Swapped,
    /// Event: the previous token's grace period ended.
    PreviousRetired,
    /// Event: a workload that opted in was restarted after the rotation.
    WorkloadRestarted,
    /// Warning Event: an opted-in workload could not be restarted.
    WorkloadRestartFailed,
    /// Event: the Secret lost or changed its token and is being repaired.
    SecretRepaired,
    /// Event: the key moved to another key set.
    KeySetChanged,
    /// Event: tokens were removed from the Secret of a revoked or expired key.
    CleanedUp,
    /// Warning Event: the key's usage looks unusual (a spike of requests or of refusals).
    UsageAnomaly,
    /// Event: the ApiKey is being deleted and its hashes leave the key set.
    Unpublished,
    /// Event: an expired key was deleted after `retainExpiredFor`.
    Deleted,
    // Organisation-wide keys (ClusterApiKey), condition `Published`.
    /// Condition `Published`: the key is in the key set of every namespace its selector selects.
    Published,
    /// Condition `Published` False and Warning Event: the selector selects no namespace; the key is published nowhere.
    NoNamespaces,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<Reason> for String {
    fn eq(&self, other: &Reason) -> bool {
        self == other.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::Reason;

    #[test]
    fn every_reason_is_written_as_its_name() {
        assert_eq!(Reason::SecretConflict.as_str(), "SecretConflict");
        assert_eq!(Reason::PreviousRetired.to_string(), "PreviousRetired");
    }

    #[test]
    fn docs_lifecycle_names_every_reason() {
        let doc = include_str!("../../docs/lifecycle.md");
        let missing: Vec<_> =
            Reason::ALL.iter().filter(|r| !doc.contains(&format!("`{}`", r.as_str()))).map(|r| r.as_str()).collect();
        assert!(missing.is_empty(), "docs/lifecycle.md does not name these reasons: {missing:?}");
    }
}
