//! The stored form of a key set in the Kubernetes API: one ConfigMap per shard.
//!
//! The one home of this layout; the operator's publisher writes through it
//! and every reader (the publisher reading back, the verifier's API watch,
//! the demo's kubelet) reads through it:
//!
//! - shard `i` (from 1) of key set `<name>` is ConfigMap `keyset-<name>-<i>`
//!   in the key set's namespace ([`configmap_name`]);
//! - labelled `app.kubernetes.io/managed-by=keyward` and
//!   `keyward.dev/keyset=<name>` ([`labels`], selected by [`label_selector`]);
//! - holding the shard under the key `<name>.<i>.keyset`
//!   ([`shard_file_name`]): under `data` when plain text, under `binaryData`
//!   when gzip ([`ShardBytes`]).
//!
//! The reading rule: every key ending in `.keyset`, under `data` or
//! `binaryData`, is a shard; other keys are ignored. It is the same rule as
//! for a mounted volume (`keyset::read_shards`), where kubelet projects each
//! key as a file. The writer keeps exactly one key per ConfigMap and removes
//! any other ([`StoredShard::foreign_keys`]), so a hand-added key is tidied
//! away, but never changes what a reader sees.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::keyset::{DecodeError, KeySetId, SHARD_FILE_SUFFIX, Shard, ShardBytes, decode_shard, shard_file_name};

/// Label naming the manager of a ConfigMap (and of the Secrets keyward writes).
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY: &str = "keyward";
/// Label naming the key set a shard ConfigMap belongs to.
pub const LABEL_KEYSET: &str = "keyward.dev/keyset";

/// The name of the ConfigMap holding shard `index` (1-based) of key set `name`.
#[must_use]
pub fn configmap_name(name: &str, index: usize) -> String {
    format!("keyset-{name}-{index}")
}

/// The labels of key set `name`'s shard ConfigMaps.
#[must_use]
pub fn labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()), (LABEL_KEYSET.to_owned(), name.to_owned())])
}

/// The label selector of key set `name`'s shard ConfigMaps.
#[must_use]
pub fn label_selector(name: &str) -> String {
    format!("{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_KEYSET}={name}")
}

/// The label selector of every key set's shard ConfigMaps.
#[must_use]
pub fn any_keyset_selector() -> String {
    format!("{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_KEYSET}")
}

/// One shard as stored: which ConfigMap, under which key, holding what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredShard {
    /// The ConfigMap's name.
    pub name: String,
    /// The data key holding the shard.
    pub key: String,
    /// The shard itself.
    pub shard: ShardBytes,
}

/// Where each of key set `id`'s encoded `shards` is stored, in order.
#[must_use]
pub fn layout(id: &KeySetId, shards: Vec<ShardBytes>) -> Vec<StoredShard> {
    shards
        .into_iter()
        .enumerate()
        .map(|(i, shard)| StoredShard {
            name: configmap_name(&id.name, i + 1),
            key: shard_file_name(&id.name, i + 1),
            shard,
        })
        .collect()
}

impl StoredShard {
    /// The whole ConfigMap to apply for this shard of key set `id`.
    #[must_use]
    pub fn to_configmap(&self, id: &KeySetId) -> ConfigMap {
        let (data, binary_data) = match &self.shard {
            ShardBytes::Text(text) => (Some(BTreeMap::from([(self.key.clone(), text.clone())])), None),
            ShardBytes::Gzip(bytes) => (None, Some(BTreeMap::from([(self.key.clone(), ByteString(bytes.clone()))]))),
        };
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(id.namespace.clone()),
                labels: Some(labels(&id.name)),
                ..ObjectMeta::default()
            },
            data,
            binary_data,
            ..ConfigMap::default()
        }
    }

    /// Whether `configmap` holds exactly this shard and nothing else.
    #[must_use]
    pub fn is_stored_in(&self, configmap: &ConfigMap) -> bool {
        let data = configmap.data.as_ref().filter(|d| !d.is_empty());
        let binary = configmap.binary_data.as_ref().filter(|d| !d.is_empty());
        match &self.shard {
            ShardBytes::Text(text) => {
                binary.is_none() && data.is_some_and(|d| d.len() == 1 && d.get(&self.key) == Some(text))
            }
            ShardBytes::Gzip(bytes) => {
                data.is_none()
                    && binary.is_some_and(|b| b.len() == 1 && b.get(&self.key).is_some_and(|b| &b.0 == bytes))
            }
        }
    }

    /// The keys of `configmap` other than this shard's: (under `data`, under `binaryData`).
    /// A hand-added key, or the plain key left over when a shard became gzip.
    #[must_use]
    pub fn foreign_keys(&self, configmap: &ConfigMap) -> (Vec<String>, Vec<String>) {
        let (keep_text, keep_binary) = match self.shard {
            ShardBytes::Text(_) => (Some(self.key.as_str()), None),
            ShardBytes::Gzip(_) => (None, Some(self.key.as_str())),
        };
        let data = configmap.data.iter().flatten().map(|(k, _)| k).filter(|k| Some(k.as_str()) != keep_text);
        let binary = configmap.binary_data.iter().flatten().map(|(k, _)| k).filter(|k| Some(k.as_str()) != keep_binary);
        (data.cloned().collect(), binary.cloned().collect())
    }
}

/// The shards a ConfigMap stores, as (key, stored bytes): every `*.keyset` key of `data`, then of `binaryData`.
pub fn stored_entries(configmap: &ConfigMap) -> impl Iterator<Item = (&str, &[u8])> {
    let text = configmap.data.iter().flatten().map(|(k, v)| (k.as_str(), v.as_bytes()));
    let binary = configmap.binary_data.iter().flatten().map(|(k, v)| (k.as_str(), v.0.as_slice()));
    text.chain(binary).filter(|(key, _)| key.ends_with(SHARD_FILE_SUFFIX))
}

/// Why the shards of some ConfigMaps could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// No ConfigMap holds a shard.
    #[error("no key-set ConfigMaps found")]
    NoShards,
    /// A shard in a ConfigMap is malformed.
    #[error("ConfigMap {configmap}, key {key}: {error}")]
    Decode {
        /// The ConfigMap's name.
        configmap: String,
        /// The data key holding the shard.
        key: String,
        /// What is wrong and where.
        error: DecodeError,
    },
}

/// Decode every shard the `configmaps` store; any that does not decode, or none at all, is an error.
pub fn read_shards<'a>(configmaps: impl IntoIterator<Item = &'a ConfigMap>) -> Result<Vec<Shard>, ReadError> {
    let mut shards = Vec::new();
    for configmap in configmaps {
        for (key, bytes) in stored_entries(configmap) {
            let shard = decode_shard(bytes).map_err(|error| ReadError::Decode {
                configmap: configmap.metadata.name.clone().unwrap_or_default(),
                key: key.to_owned(),
                error,
            })?;
            shards.push(shard);
        }
    }
    if shards.is_empty() {
        return Err(ReadError::NoShards);
    }
    Ok(shards)
}

/// The highest generation among the shards of `configmaps` that decode, 0 when none does.
pub fn highest_generation<'a>(configmaps: impl IntoIterator<Item = &'a ConfigMap>) -> u64 {
    configmaps
        .into_iter()
        .flat_map(stored_entries)
        .filter_map(|(_, bytes)| decode_shard(bytes).ok())
        .map(|shard| shard.generation)
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
