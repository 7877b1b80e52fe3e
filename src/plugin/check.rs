//! `check`: which ApiKey a token on stdin belongs to, found by its SHA-256; the token itself is never printed.
//!
//! Two sources, both public: the hashes ApiKey status records (current,
//! previous and next key) say which key the token is; the key-set ConfigMaps
//! say whether verifiers accept it now. Reading key sets is optional: without
//! `list configmaps` the answer comes from status alone, with a note.
//!
//! A token no ApiKey names is looked up in the ClusterApiKeys' status too (they
//! are cluster-wide, so also without `-A`). Reading them is optional as well:
//! without `list clusterapikeys` (or without their CRD) the answer says so.

use std::fmt::Write as _;
use std::io::{IsTerminal, Read};
use std::process::{Command, ExitCode, Stdio};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::ListParams;

use super::status::{relative, state_word};
use super::{Access, PluginError, Session, print};
use crate::api::{ApiKey, ClusterApiKey, KeyVersion};
use crate::configmap::{LABEL_KEYSET, any_keyset_selector, stored_entries};
use crate::keyset::{Record, decode_shard};
use crate::token::{KeyHash, Token};

/// Which of a key's tokens a hash is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// The token in the Secret.
    Current,
    /// The token a rotation replaced, in its grace period.
    Previous,
    /// A token being published by a rotation, not yet in the Secret.
    Next,
}

/// The ApiKey whose status names `hash`, and as which of its tokens.
#[must_use]
pub fn in_status<'a>(keys: &'a [ApiKey], hash: &KeyHash) -> Option<(&'a ApiKey, Slot, &'a KeyVersion)> {
    let text = hash.to_string();
    let matches = |v: &KeyVersion| match &v.hash {
        Some(h) => *h == text,
        None => v.key_id == hash.key_id().as_str(),
    };
    keys.iter().find_map(|key| {
        let status = key.status.as_ref()?;
        [(Slot::Current, &status.current_key), (Slot::Previous, &status.previous_key), (Slot::Next, &status.next_key)]
            .into_iter()
            .find_map(|(slot, version)| version.as_ref().filter(|v| matches(v)).map(|v| (key, slot, v)))
    })
}

/// The records of `hash` in the key-set shards `maps` hold, with each one's key-set name.
#[must_use]
pub fn in_key_sets(maps: &[ConfigMap], hash: &KeyHash) -> Vec<(String, Record)> {
    let mut found = Vec::new();
    for map in maps {
        let key_set = map.labels().get(LABEL_KEYSET).cloned().unwrap_or_default();
        for (_, bytes) in stored_entries(map) {
            // A shard that does not decode says nothing about this token; verifiers refuse it too.
            let Ok(shard) = decode_shard(bytes) else { continue };
            found.extend(shard.records.into_iter().filter(|r| r.hash == *hash).map(|r| (key_set.clone(), r)));
        }
    }
    found
}

/// Who may own a token: the ApiKeys in scope, and the ClusterApiKeys when they could be read.
#[derive(Debug, Clone, Copy)]
pub struct Owners<'a> {
    /// The ApiKeys of the namespace (or of every namespace, with `-A`).
    pub keys: &'a [ApiKey],
    /// Every ClusterApiKey; `None` when they could not be read.
    pub cluster_keys: Option<&'a [ClusterApiKey]>,
}

/// What `check` says about a token with hash `hash`: (text, whether a key was found).
#[must_use]
pub fn describe(
    owners: Owners<'_>,
    published: Option<&[(String, Record)]>,
    hash: &KeyHash,
    scope: &str,
    now: Timestamp,
) -> (String, bool) {
    let key_id = hash.key_id();
    let mut out = String::new();
    let views: Vec<ApiKey> = owners.cluster_keys.unwrap_or_default().iter().map(crate::plan::cluster::view).collect();
    let found = match in_status(owners.keys, hash) {
        Some((key, slot, version)) => {
            let name = key.name_any();
            let namespace = key.namespace().unwrap_or_default();
            Some((format!("apikey.keyward.dev/{name} in namespace {namespace}"), key, slot, version))
        }
        None => in_status(&views, hash).map(|(view, slot, version)| {
            let name = view.name_any();
            let secret = owners
                .cluster_keys
                .unwrap_or_default()
                .iter()
                .find(|k| k.name_any() == name)
                .map_or_else(String::new, |k| format!(", Secret in namespace {}", k.spec.secret_namespace));
            (format!("clusterapikey.keyward.dev/{name} (cluster-wide{secret})"), view, slot, version)
        }),
    };
    let Some((owner, key, slot, version)) = found else {
        let cluster = if owners.cluster_keys.is_some() { " and no ClusterApiKey" } else { "" };
        let _ = writeln!(out, "No ApiKey {scope}{cluster} has this token (key id {key_id}).");
        if let Some([(key_set, record), ..]) = published {
            let _ = writeln!(
                out,
                "It is published in key set {key_set} for {}/{} ({}), but no key's status names it.",
                record.namespace,
                record.name,
                record.state.as_str()
            );
        }
        return (out, false);
    };
    let which = match slot {
        Slot::Current => "its current token (the one in the Secret)",
        Slot::Previous => "its previous token, replaced by a rotation and still accepted for the grace period",
        Slot::Next => "its next token, being published by a rotation and not yet in the Secret",
    };
    let _ = writeln!(out, "This token belongs to {owner}: {which}.");
    let _ = writeln!(out, "Key id:     {key_id}");
    let state = key.status.as_ref().and_then(|s| s.state).map_or("unknown", state_word);
    let _ = writeln!(out, "State:      {state}");
    let _ = writeln!(out, "Valid from: {} ({})", version.not_before.0, relative(version.not_before.0, now));
    match &version.not_after {
        Some(end) => {
            let _ = writeln!(out, "Valid to:   {} ({})", end.0, relative(end.0, now));
        }
        None => out.push_str("Valid to:   no end set\n"),
    }
    match published {
        None => {}
        Some([]) => out.push_str("Published:  no (verifiers refuse it)\n"),
        Some(records) => {
            for (key_set, record) in records {
                let _ = writeln!(out, "Published:  key set {key_set}, {}", record.state.as_str());
            }
        }
    }
    (out, true)
}

/// Read a token on stdin, find it, and say so; exit 1 when no ApiKey has it.
pub async fn run(
    session: &Session,
    hash: &KeyHash,
    all_namespaces: bool,
    now: Timestamp,
) -> Result<ExitCode, PluginError> {
    let (keys_api, maps_api, scope, namespace) = if all_namespaces {
        (
            kube::Api::all(session.client.clone()),
            kube::Api::all(session.client.clone()),
            "in any namespace".to_owned(),
            "(all namespaces)",
        )
    } else {
        (
            session.apikeys(),
            kube::Api::namespaced(session.client.clone(), &session.namespace),
            format!("in namespace {}", session.namespace),
            session.namespace.as_str(),
        )
    };
    let access = Access {
        verb: "list",
        resource: "apikeys.keyward.dev",
        kind: "ApiKey",
        namespace: Some(namespace),
        name: None,
    };
    let keys = keys_api.list(&ListParams::default()).await.map_err(|e| access.fail(e))?.items;
    let cluster_keys = if in_status(&keys, hash).is_some() { Some(Vec::new()) } else { cluster_keys(session).await };
    let maps_access =
        Access { verb: "list", resource: "configmaps", kind: "ConfigMap", namespace: Some(namespace), name: None };
    let maps: Result<Vec<ConfigMap>, PluginError> = maps_api
        .list(&ListParams::default().labels(&any_keyset_selector()))
        .await
        .map(|l| l.items)
        .map_err(|e| maps_access.fail(e));
    let published = match maps {
        Ok(maps) => Some(in_key_sets(&maps, hash)),
        Err(e) => {
            eprintln!("note: key sets not read, answering from ApiKey status only: {e}");
            None
        }
    };
    let owners = Owners { keys: &keys, cluster_keys: cluster_keys.as_deref() };
    let (text, found) = describe(owners, published.as_deref(), hash, &scope, now);
    print(&text)?;
    if !found && !all_namespaces {
        eprintln!("hint: -A looks in every namespace");
    }
    Ok(if found { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Every ClusterApiKey, or `None` (with a note) when they cannot be read: no `list` on them, or no CRD.
async fn cluster_keys(session: &Session) -> Option<Vec<ClusterApiKey>> {
    let access = Access {
        verb: "list",
        resource: "clusterapikeys.keyward.dev",
        kind: "ClusterApiKey",
        namespace: None,
        name: None,
    };
    match session.cluster_keys().list(&ListParams::default()).await {
        Ok(list) => Some(list.items),
        Err(kube::Error::Api(status)) if status.code == 404 => None,
        Err(e) => {
            eprintln!("note: ClusterApiKeys not read, looking in ApiKeys only: {}", access.fail(e));
            None
        }
    }
}

/// The hash of the token on stdin (one line, surrounding white space removed); the token is wiped.
/// On a terminal the typing is not echoed.
pub fn read_hash() -> Result<KeyHash, PluginError> {
    let mut text = zeroize::Zeroizing::new(String::new());
    if std::io::stdin().is_terminal() {
        eprint!("Paste the token and press Enter (it is not shown): ");
        let echo_off = stty("-echo");
        let read = std::io::stdin().read_line(&mut text);
        if echo_off {
            stty("echo");
            eprintln!();
        }
        read?;
    } else {
        std::io::stdin().take(4096).read_to_string(&mut text)?;
    }
    // The error says what is wrong with the text, never the text.
    let token = Token::parse(text.trim())
        .map_err(|e| PluginError::Refused(format!("standard input does not hold a well-formed keyward token: {e}")))?;
    Ok(token.hash())
}

/// Run `stty` on the terminal (standard input); whether it worked.
fn stty(setting: &str) -> bool {
    Command::new("stty").arg(setting).stdin(Stdio::inherit()).status().is_ok_and(|s| s.success())
}
