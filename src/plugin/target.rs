//! Which key a command acts on: an ApiKey of the session's namespace (`NAME`, `apikey/NAME`)
//! or an organisation-wide ClusterApiKey (`clusterapikey/NAME`, `cak/NAME`), kubectl's own
//! `TYPE/NAME` notation. A ClusterApiKey is shown and changed through the ApiKey it stands
//! for ([`crate::plan::cluster::view`]), so every command reads one key type; only where a
//! request goes, and how the key is named in messages, differ.

use crate::api::{ApiKey, ClusterApiKey};
use crate::plan::cluster;

use super::PluginError;

/// A command's `NAME` argument, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An ApiKey of the session's namespace.
    ApiKey(String),
    /// A ClusterApiKey (cluster-scoped: `-n` does not apply).
    Cluster(String),
}

/// The `TYPE/` prefixes that name an ApiKey, as kubectl accepts them.
const APIKEY_TYPES: &[&str] = &["apikey", "apikeys", "ak", "apikey.keyward.dev", "apikeys.keyward.dev"];
/// The `TYPE/` prefixes that name a ClusterApiKey.
const CLUSTER_TYPES: &[&str] =
    &["clusterapikey", "clusterapikeys", "cak", "clusterapikey.keyward.dev", "clusterapikeys.keyward.dev"];

impl Target {
    /// `NAME` (an ApiKey), or `TYPE/NAME` with a type above; anything else is refused, naming the forms.
    pub fn parse(arg: &str) -> Result<Target, PluginError> {
        let Some((kind, name)) = arg.split_once('/') else { return Ok(Target::ApiKey(arg.to_owned())) };
        let kind = kind.to_ascii_lowercase();
        if name.is_empty() || name.contains('/') {
            return Err(PluginError::Refused(format!("{arg} is not a key name: use NAME, apikey/NAME or cak/NAME")));
        }
        if APIKEY_TYPES.contains(&kind.as_str()) {
            Ok(Target::ApiKey(name.to_owned()))
        } else if CLUSTER_TYPES.contains(&kind.as_str()) {
            Ok(Target::Cluster(name.to_owned()))
        } else {
            Err(PluginError::Refused(format!(
                "{kind} is not a kind kubectl keyward acts on: use NAME or apikey/NAME for an ApiKey, \
                 clusterapikey/NAME (cak/NAME) for a ClusterApiKey"
            )))
        }
    }

    /// The key's name.
    #[must_use]
    pub fn name(&self) -> &str {
        match self {
            Target::ApiKey(name) | Target::Cluster(name) => name,
        }
    }

    /// Whether it is a ClusterApiKey.
    #[must_use]
    pub fn is_cluster(&self) -> bool {
        matches!(self, Target::Cluster(_))
    }

    /// The kind, as in "ApiKey crm not found".
    #[must_use]
    pub fn kind(&self) -> &'static str {
        if self.is_cluster() { "ClusterApiKey" } else { "ApiKey" }
    }

    /// The RBAC resource with its group: `apikeys.keyward.dev` or `clusterapikeys.keyward.dev`.
    #[must_use]
    pub fn resource(&self) -> &'static str {
        if self.is_cluster() { "clusterapikeys.keyward.dev" } else { "apikeys.keyward.dev" }
    }

    /// How kubectl names the object in its messages: `apikey.keyward.dev/crm`.
    #[must_use]
    pub fn noun(&self) -> String {
        let kind = if self.is_cluster() { "clusterapikey" } else { "apikey" };
        format!("{kind}.keyward.dev/{}", self.name())
    }

    /// The key as a person names it: `team-a/crm` for an ApiKey of `namespace`, `agency` for a ClusterApiKey.
    #[must_use]
    pub fn who(&self, namespace: &str) -> String {
        match self {
            Target::ApiKey(name) => format!("{namespace}/{name}"),
            Target::Cluster(name) => name.clone(),
        }
    }

    /// The arguments that name this key again in a suggested command: `crm -n team-a`, `cak/agency`.
    #[must_use]
    pub fn again(&self, namespace: &str) -> String {
        match self {
            Target::ApiKey(name) => format!("{name} -n {namespace}"),
            Target::Cluster(name) => format!("cak/{name}"),
        }
    }
}

/// A key as read: an ApiKey, or the ApiKey a ClusterApiKey stands for with the ClusterApiKey itself.
#[derive(Debug, Clone)]
pub struct Subject {
    /// The ApiKey, or the view of the ClusterApiKey (spec, status, identity and `managedFields`).
    pub key: ApiKey,
    /// The ClusterApiKey, when the target is one.
    pub cluster: Option<ClusterApiKey>,
}

impl Subject {
    /// A namespaced ApiKey.
    #[must_use]
    pub fn apikey(key: ApiKey) -> Subject {
        Subject { key, cluster: None }
    }

    /// A ClusterApiKey, seen as the ApiKey it stands for; its `managedFields` are kept, so the
    /// warnings about appliers (`change.rs`) read them (the spec's fields have the same paths).
    #[must_use]
    pub fn cluster(cluster_key: ClusterApiKey) -> Subject {
        let mut key = cluster::view(&cluster_key);
        key.metadata.managed_fields.clone_from(&cluster_key.metadata.managed_fields);
        Subject { key, cluster: Some(cluster_key) }
    }

    /// The namespace of the key's Secret: the ApiKey's own, or a ClusterApiKey's `spec.secretNamespace`.
    #[must_use]
    pub fn secret_namespace<'a>(&'a self, session_namespace: &'a str) -> &'a str {
        self.cluster.as_ref().map_or(session_namespace, |c| c.spec.secret_namespace.as_str())
    }
}
