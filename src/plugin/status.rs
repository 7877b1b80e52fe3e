//! `status NAME`: everything about one key on one screen, and why it is not Ready. Rendering is a pure function.

use std::fmt::Write as _;
use std::process::ExitCode;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Event;
use kube::ResourceExt;
use kube::api::ListParams;

use super::{Access, PluginError, Session, Target, print};
use crate::api::{ApiKey, CONDITION_READY, ClusterApiKey, KeyState, KeyVersion};

/// How many of the most recent Events `status` shows.
const EVENTS_SHOWN: usize = 10;

/// One Event as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLine {
    /// When it last happened, if the Event says.
    pub time: Option<Timestamp>,
    /// `Normal` or `Warning`.
    pub type_: String,
    /// The reason, such as `Created`.
    pub reason: String,
    /// The note.
    pub message: String,
}

/// The key's Events, or why they could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Events {
    /// The Events found, oldest first.
    Listed(Vec<EventLine>),
    /// Reading them failed (typically RBAC); the rest of the status is still shown.
    Unavailable(String),
}

/// The namespace the operator writes a ClusterApiKey's Events in (it has none of its own).
pub const CLUSTER_EVENTS_NAMESPACE: &str = "default";

/// Print the status of the key `target` names.
pub async fn run(session: &Session, target: &Target, now: Timestamp) -> Result<ExitCode, PluginError> {
    let subject = session.get(target).await?;
    let text = match &subject.cluster {
        None => render(&subject.key, &events(session, &subject.key, &session.namespace).await, now),
        Some(cluster) => render_cluster(cluster, &events(session, &subject.key, CLUSTER_EVENTS_NAMESPACE).await, now),
    };
    print(&text)?;
    Ok(ExitCode::SUCCESS)
}

async fn events(session: &Session, key: &ApiKey, namespace: &str) -> Events {
    let api: kube::Api<Event> = kube::Api::namespaced(session.client.clone(), namespace);
    let uid = key.metadata.uid.clone().unwrap_or_default();
    let params = ListParams::default().fields(&format!("involvedObject.uid={uid}"));
    let access = Access { verb: "list", resource: "events", kind: "Event", namespace: Some(namespace), name: None };
    match api.list(&params).await {
        Ok(list) => {
            let mut lines: Vec<EventLine> = list.items.iter().map(event_line).collect();
            lines.sort_by_key(|l| l.time);
            Events::Listed(lines)
        }
        Err(e) => Events::Unavailable(access.fail(e).to_string()),
    }
}

fn event_line(event: &Event) -> EventLine {
    let time = event
        .last_timestamp
        .as_ref()
        .map(|t| t.0)
        .or_else(|| event.event_time.as_ref().map(|t| t.0))
        .or_else(|| event.first_timestamp.as_ref().map(|t| t.0))
        .or_else(|| event.metadata.creation_timestamp.as_ref().map(|t| t.0));
    EventLine {
        time,
        type_: event.type_.clone().unwrap_or_default(),
        reason: event.reason.clone().unwrap_or_default(),
        message: event.message.clone().unwrap_or_default(),
    }
}

/// The whole `status` text for `key` at `now`.
#[must_use]
pub fn render(key: &ApiKey, events: &Events, now: Timestamp) -> String {
    render_with(key, None, events, now)
}

/// The whole `status` text for a ClusterApiKey at `now`: the ApiKey's, named as a cluster key,
/// with its Secret's namespace and the namespaces whose key sets carry it.
#[must_use]
pub fn render_cluster(key: &ClusterApiKey, events: &Events, now: Timestamp) -> String {
    render_with(&crate::plan::cluster::view(key), Some(key), events, now)
}

fn render_with(key: &ApiKey, cluster: Option<&ClusterApiKey>, events: &Events, now: Timestamp) -> String {
    let mut out = String::new();
    let status = key.status.clone().unwrap_or_default();
    let spec = &key.spec;
    let mut line = |label: &str, value: &str| {
        let _ = writeln!(out, "{:<15}{value}", format!("{label}:"));
    };
    let secret = status.secret_name.clone().unwrap_or_else(|| crate::plan::secret_name(key));
    match cluster {
        None => line("Name", &format!("{}/{}", key.namespace().unwrap_or_default(), key.name_any())),
        Some(_) => line("Name", &format!("{} (ClusterApiKey)", key.name_any())),
    }
    if let Some(display) = &spec.display_name {
        line("Display name", display);
    }
    line("State", status.state.map_or("(none yet)", state_word));
    line("Scopes", &spec.scopes.join(", "));
    line("Key set", status.key_set.as_deref().unwrap_or(&spec.key_set));
    match cluster {
        None => line("Secret", &secret),
        Some(c) => {
            line("Secret", &format!("{}/{secret}", c.spec.secret_namespace));
            let namespaces = c.status.as_ref().map(|s| s.namespaces.join(", ")).unwrap_or_default();
            let shown =
                if namespaces.is_empty() { "none (spec.namespaceSelector selects no namespace)" } else { &namespaces };
            line("Namespaces", shown);
        }
    }
    if let Some(prefix) = &status.prefix {
        line("Prefix", &format!("{prefix}…"));
    }
    line("Active", if spec.active { "yes" } else { "no (disabled: spec.active=false)" });
    line("Expires", &spec.expires_at.as_ref().map_or_else(|| "never".to_owned(), |t| when(t.0, now)));
    if let Some(t) = &status.expired_at {
        line("Expired", &when(t.0, now));
    }
    if let Some(t) = &status.revoked_at {
        line("Revoked", &when(t.0, now));
    }
    line("Current key", &status.current_key.as_ref().map_or_else(|| "none".to_owned(), |v| window(v, now)));
    if let Some(v) = &status.previous_key {
        line("Previous key", &window(v, now));
    }
    if let Some(v) = &status.next_key {
        line("Next key", &format!("{} (being published; not yet in the Secret)", window(v, now)));
    }
    if let Some(t) = &status.last_rotated_at {
        line("Last rotated", &when(t.0, now));
    }
    let rotation = match (&status.next_rotation_at, &spec.rotation) {
        (Some(t), _) => when(t.0, now),
        (None, Some(_)) => "not scheduled yet".to_owned(),
        (None, None) => "on request only (no spec.rotation)".to_owned(),
    };
    line("Next rotation", &rotation);
    line("Last used", &status.last_used_at.as_ref().map_or_else(|| "not reported".to_owned(), |t| when(t.0, now)));
    if let Some(usage) = &status.usage {
        let (day, week, month) = (usage.last24h, usage.last7d, usage.last30d);
        line(
            "Requests",
            &format!(
                "{} in 24h, {} in 7d, {} in 30d (denied: {}, {}, {})",
                day.allowed, week.allowed, month.allowed, day.denied, week.denied, month.denied
            ),
        );
    }

    out.push_str("\nConditions:\n");
    if status.conditions.is_empty() {
        out.push_str("  (none)\n");
    } else {
        let _ = writeln!(out, "  {:<8}{:<8}{:<18}{:<10}MESSAGE", "TYPE", "STATUS", "REASON", "CHANGED");
    }
    for c in &status.conditions {
        let _ = writeln!(
            out,
            "  {:<8}{:<8}{:<18}{:<10}{}",
            c.type_,
            c.status,
            c.reason,
            relative(c.last_transition_time.0, now),
            c.message
        );
    }
    if let Some(why) = not_ready(key) {
        let _ = writeln!(out, "\nNot Ready: {why}");
    }

    out.push_str("\nEvents:\n");
    match events {
        Events::Unavailable(why) => {
            let _ = writeln!(out, "  (not shown: {why})");
        }
        Events::Listed(lines) if lines.is_empty() => out.push_str("  (none)\n"),
        Events::Listed(lines) => {
            let _ = writeln!(out, "  {:<10}{:<9}{:<18}MESSAGE", "AGE", "TYPE", "REASON");
            for e in lines.iter().skip(lines.len().saturating_sub(EVENTS_SHOWN)) {
                let age = e.time.map_or_else(|| "?".to_owned(), |t| relative(t, now));
                let _ = writeln!(out, "  {:<10}{:<9}{:<18}{}", age, e.type_, e.reason, e.message);
            }
        }
    }
    out
}

/// Why `key` is not Ready, in a sentence; `None` when it is Ready and up to date.
#[must_use]
pub fn not_ready(key: &ApiKey) -> Option<String> {
    let Some(status) = &key.status else {
        return Some(
            "the operator has not reported on this key yet. Is the keyward operator running, and does it watch \
             this namespace?"
                .to_owned(),
        );
    };
    let ready = status.conditions.iter().find(|c| c.type_ == CONDITION_READY);
    match ready {
        Some(c) if c.status == "True" => {}
        Some(c) => return Some(format!("{}: {}", c.reason, c.message)),
        None if status.current_key.is_none() => {
            return Some("no Ready condition yet: the first token is being minted and published".to_owned());
        }
        None => return Some("no Ready condition reported".to_owned()),
    }
    match (status.observed_generation, key.metadata.generation) {
        (Some(seen), Some(spec)) if seen < spec => Some(format!(
            "Ready describes generation {seen} but the spec is at generation {spec}: the operator has not acted on \
             the last change yet"
        )),
        _ => None,
    }
}

/// The word a state shows as (`Active`, `Revoked`, ...), as `kubectl get` shows it.
#[must_use]
pub fn state_word(state: KeyState) -> &'static str {
    match state {
        KeyState::Pending => "Pending",
        KeyState::Active => "Active",
        KeyState::Inactive => "Inactive",
        KeyState::Rotating => "Rotating",
        KeyState::Expired => "Expired",
        KeyState::Revoked => "Revoked",
        KeyState::Error => "Error",
    }
}

fn window(version: &KeyVersion, now: Timestamp) -> String {
    let end = version.not_after.as_ref().map_or_else(|| "no end".to_owned(), |t| format!("until {}", when(t.0, now)));
    format!("{}  from {}, {end}", version.key_id, when(version.not_before.0, now))
}

/// `t` with how far it is from `now`: `2026-12-01T10:00:00Z (in 3h)`.
fn when(t: Timestamp, now: Timestamp) -> String {
    format!("{t} ({})", relative(t, now))
}

/// How far `t` is from `now`, the way kubectl shows ages: `45s ago`, `in 3h`, `89d ago`.
#[must_use]
pub fn relative(t: Timestamp, now: Timestamp) -> String {
    let seconds = t.as_second() - now.as_second();
    let amount = seconds.unsigned_abs();
    let text = match amount {
        0..120 => format!("{amount}s"),
        120..7_200 => format!("{}m", amount / 60),
        7_200..172_800 => format!("{}h", amount / 3_600),
        _ => format!("{}d", amount / 86_400),
    };
    match seconds.cmp(&0) {
        std::cmp::Ordering::Less => format!("{text} ago"),
        std::cmp::Ordering::Equal => "now".to_owned(),
        std::cmp::Ordering::Greater => format!("in {text}"),
    }
}
