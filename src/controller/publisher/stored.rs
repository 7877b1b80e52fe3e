//! The publisher's API calls on key-set ConfigMaps, in the contract's stored form ([`crate::configmap`]).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use tracing::{debug, warn};

use crate::configmap::{StoredShard, label_selector, read_shards};
use crate::controller::{Error, FIELD_MANAGER};
use crate::keyset::{KeySetId, Record, assemble};

/// Key set `id`'s shard ConfigMaps, by name.
pub(super) async fn read(client: &Client, id: &KeySetId) -> Result<BTreeMap<String, ConfigMap>, Error> {
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &id.namespace);
    let list = config_maps
        .list(&ListParams::default().labels(&label_selector(&id.name)))
        .await
        .map_err(Error::kube("list key-set shards"))?;
    Ok(list.items.into_iter().map(|cm| (cm.name_any(), cm)).collect())
}

/// The records of `id` as a verifier would take them from `shards`: nothing
/// unless every shard decodes and they form one complete set of one generation.
pub(super) fn readable_records(id: &KeySetId, shards: &BTreeMap<String, ConfigMap>) -> Vec<Record> {
    let Ok(decoded) = read_shards(shards.values()) else { return Vec::new() };
    match assemble(decoded) {
        Ok(sets) => sets.into_iter().filter(|set| set.id == *id).flat_map(|set| set.records).collect(),
        Err(e) => {
            warn!(namespace = %id.namespace, keyset = %id.name, error = %e, "stored key set is not readable; counting nothing as published");
            Vec::new()
        }
    }
}

/// Whether the stored shards are exactly the desired ones.
pub(super) fn matches(existing: &BTreeMap<String, ConfigMap>, desired: &[StoredShard]) -> bool {
    existing.len() == desired.len()
        && desired.iter().all(|shard| existing.get(&shard.name).is_some_and(|cm| shard.is_stored_in(cm)))
}

/// Apply `shard` of `id`, then remove any other key from its ConfigMap; how many writes it took.
pub(super) async fn write(api: &Api<ConfigMap>, id: &KeySetId, shard: &StoredShard) -> Result<u64, Error> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let written = api
        .patch(&shard.name, &params, &Patch::Apply(&shard.to_configmap(id)))
        .await
        .map_err(Error::kube("apply key-set shard"))?;
    // Readers ignore keys other than `*.keyset`, but a hand-added key, or the plain
    // key left over when a shard became gzip, would be read as a second shard or mislead.
    let (extra, extra_binary) = shard.foreign_keys(&written);
    if extra.is_empty() && extra_binary.is_empty() {
        return Ok(1);
    }
    let nulls = |keys: Vec<String>| keys.into_iter().map(|k| (k, Value::Null)).collect::<BTreeMap<_, _>>();
    debug!(namespace = %id.namespace, shard = %shard.name, "removing foreign keys from key-set shard");
    api.patch(
        &shard.name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "data": nulls(extra), "binaryData": nulls(extra_binary) })),
    )
    .await
    .map_err(Error::kube("prune key-set shard"))?;
    Ok(2)
}

/// Delete shard ConfigMap `name`; one write, or none when it is gone already.
pub(super) async fn delete(api: &Api<ConfigMap>, name: &str) -> Result<u64, Error> {
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(1),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(0),
        Err(e) => Err(Error::kube("delete key-set shard")(e)),
    }
}
