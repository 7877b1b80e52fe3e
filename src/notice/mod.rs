//! Lifecycle notices for webhooks, as pure data: which lifecycle steps are notices, their
//! JSON payload, their stable message id, the Standard Webhooks signature and the retry schedule.
//!
//! Nothing here does I/O; `controller::webhooks` delivers what this module
//! builds. A notice is made from the same [`PlannedEvent`] as the Kubernetes
//! Event of its step, so every notice has an Event and the two never disagree.
//! No token ever enters a notice: plan notes carry none, and the message is
//! passed through [`crate::token::redact`] all the same.

mod retry;
mod sign;
mod url;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use jiff::Timestamp;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::api::{ApiKey, ClusterApiKey, NoticeType};
use crate::plan::{PlannedEvent, Reason};

pub use retry::{Outcome, RetryPolicy};
pub use sign::{SecretError, SigningSecret, seal, sign, verify, verify_seal};
pub use url::{UrlError, checked_url};

/// Header carrying the message id (the same on every attempt of one notice).
pub const HEADER_ID: &str = "webhook-id";
/// Header carrying the attempt's time, in Unix seconds.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// Header carrying `v1,<base64 HMAC-SHA256>`.
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// The notice a lifecycle step gives, if it gives one.
#[must_use]
pub fn notice_type(reason: Reason) -> Option<NoticeType> {
    match reason {
        Reason::Swapped => Some(NoticeType::Rotated),
        Reason::ExpiringSoon => Some(NoticeType::ExpiringSoon),
        Reason::Expired | Reason::Unused => Some(NoticeType::Expired),
        Reason::Revoked => Some(NoticeType::Revoked),
        // Held back by its class, the key is unpublished like a disabled one: its
        // workloads lose access, so the teams hear of it (`data.reason` tells which).
        Reason::Disabled | Reason::ClassViolation | Reason::ClassNotFound | Reason::ClassAmbiguous => {
            Some(NoticeType::Disabled)
        }
        Reason::Enabled | Reason::ClassSatisfied => Some(NoticeType::Enabled),
        Reason::UsageAnomaly => Some(NoticeType::UsageAnomaly),
        Reason::Issuing
        | Reason::Publishing
        | Reason::Active
        | Reason::Rotating
        | Reason::NotExpiringSoon
        | Reason::InvalidSpec
        | Reason::SecretConflict
        | Reason::Created
        | Reason::TokenReissued
        | Reason::RotationStarted
        | Reason::RotationRestarted
        | Reason::PreviousRetired
        | Reason::WorkloadRestarted
        | Reason::WorkloadRestartFailed
        | Reason::SecretRepaired
        | Reason::KeySetChanged
        | Reason::CleanedUp
        | Reason::Unpublished
        | Reason::ClassDefaultChanged
        | Reason::Published
        | Reason::NoNamespaces
        | Reason::Deleted => None,
    }
}

/// One lifecycle notice of one ApiKey, ready to be sent to every webhook that wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The kind, matched against a webhook's `spec.events`.
    pub kind: NoticeType,
    /// `msg_` and 32 hex digits, stable for the same step of the same key (see [`message_id`]).
    pub id: String,
    /// The namespace whose webhooks receive it: the ApiKey's, or a ClusterApiKey's `spec.secretNamespace`.
    pub namespace: String,
    /// The key's labels, matched against a webhook's `spec.selector`.
    pub labels: BTreeMap<String, String>,
    /// The JSON body, the same bytes on every attempt.
    pub body: Vec<u8>,
}

/// The JSON body (Standard Webhooks' `type`, `timestamp`, `data`).
#[derive(Debug, Serialize)]
struct Payload<'a> {
    r#type: &'static str,
    timestamp: Timestamp,
    data: Data<'a>,
}

/// What a notice says about its key: names, ids and times, never a token or a hash.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Data<'a> {
    /// `ApiKey` or `ClusterApiKey`.
    kind: &'static str,
    /// The ApiKey's namespace; a ClusterApiKey has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'a str>,
    name: &'a str,
    uid: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    key_id: &'a str,
    reason: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<crate::api::KeyState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<Timestamp>,
    /// For a usage anomaly: the counts it was judged on (`status.usage`).
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<&'a crate::api::Usage>,
}

/// The notice for `event` about `key` (as written by this reconcile), at `now`; `None`
/// when the step is not a notice or the key has no namespace or uid (never stored).
#[must_use]
pub fn notice(key: &ApiKey, event: &PlannedEvent, key_id: &str, now: Timestamp) -> Option<Notice> {
    let namespace = key.metadata.namespace.as_deref()?;
    build(key, Subject { kind: "ApiKey", namespace: Some(namespace), route: namespace }, event, key_id, now)
}

/// The notice for `event` about the ClusterApiKey `key` (as written by this reconcile), at
/// `now`: delivered to the webhooks of its `spec.secretNamespace` (the namespace of the team
/// that holds its token), its payload naming it `kind: ClusterApiKey` with no namespace.
#[must_use]
pub fn cluster_notice(key: &ClusterApiKey, event: &PlannedEvent, key_id: &str, now: Timestamp) -> Option<Notice> {
    let mut view = crate::plan::cluster::view(key);
    view.metadata.labels.clone_from(&key.metadata.labels);
    let subject = Subject { kind: "ClusterApiKey", namespace: None, route: &key.spec.secret_namespace };
    build(&view, subject, event, key_id, now)
}

/// Whose notice it is: the kind and namespace the payload names, the namespace it is routed to.
#[derive(Clone, Copy)]
struct Subject<'a> {
    kind: &'static str,
    namespace: Option<&'a str>,
    route: &'a str,
}

fn build(key: &ApiKey, subject: Subject<'_>, event: &PlannedEvent, key_id: &str, now: Timestamp) -> Option<Notice> {
    let kind = notice_type(event.reason)?;
    let uid = key.metadata.uid.as_deref()?;
    let name = key.metadata.name.as_deref().unwrap_or_default();
    let status = key.status.as_ref();
    let expires_at = match kind {
        NoticeType::ExpiringSoon => status.and_then(|s| s.expiry_notice.as_ref()).map(|n| n.expires_at.0),
        _ => key.spec.expires_at.as_ref().map(|t| t.0),
    };
    let message = crate::token::redact(&event.note);
    let payload = Payload {
        r#type: kind.event_type(),
        timestamp: now,
        data: Data {
            kind: subject.kind,
            namespace: subject.namespace,
            name,
            uid,
            key_id,
            reason: event.reason.as_str(),
            message,
            state: status.and_then(|s| s.state),
            expires_at,
            usage: status.and_then(|s| s.usage.as_ref()).filter(|_| kind == NoticeType::UsageAnomaly),
        },
    };
    let body = serde_json::to_vec(&payload).expect("a notice payload always serialises");
    Some(Notice {
        kind,
        id: message_id(uid, key.metadata.generation.unwrap_or_default(), event, key_id),
        namespace: subject.route.to_owned(),
        labels: key.metadata.labels.clone().unwrap_or_default(),
        body,
    })
}

/// The message id: a digest of the key's uid, its generation, the step, the key id and the
/// step's note. A step the operator plans again after a restart (an Event written, the
/// status not) gets the same id, so a receiver can drop the repeat; a new step of the same
/// kind (disabled again after an enable, which changed the spec) gets a new one.
#[must_use]
pub fn message_id(uid: &str, generation: i64, event: &PlannedEvent, key_id: &str) -> String {
    let mut digest = Sha256::new();
    for part in [uid, &generation.to_string(), event.reason.as_str(), key_id, &event.note] {
        digest.update(part.as_bytes());
        digest.update([0]);
    }
    let hash = digest.finalize();
    hash[..16].iter().fold(String::from("msg_"), |mut id, b| {
        // Writing into a String cannot fail.
        let _ = write!(id, "{b:02x}");
        id
    })
}
