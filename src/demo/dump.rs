//! `keyward demo --dump DIR`: every object of the demo's namespace, one YAML file each, as the API holds it.

use std::path::Path;

use anyhow::Context;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::ListParams;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::ApiKey;

/// Write the demo namespace's ApiKeys, Secrets, ConfigMaps and Events into `dir` (on a real
/// cluster, nothing of other namespaces); returns how many files were written.
pub async fn dump(client: &Client, dir: &Path) -> anyhow::Result<usize> {
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    let mut written = 0;
    written += dump_kind::<ApiKey>(client, dir, "apikey").await?;
    written += dump_kind::<Secret>(client, dir, "secret").await?;
    written += dump_kind::<ConfigMap>(client, dir, "configmap").await?;
    written += dump_kind::<crate::api::KeySet>(client, dir, "keyset").await?;
    written += dump_kind::<Event>(client, dir, "event").await?;
    Ok(written)
}

async fn dump_kind<K>(client: &Client, dir: &Path, kind: &str) -> anyhow::Result<usize>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let list = Api::<K>::namespaced(client.clone(), super::NAMESPACE)
        .list(&ListParams::default())
        .await
        .with_context(|| format!("listing {kind}s"))?;
    for object in &list.items {
        let namespace = object.namespace().unwrap_or_else(|| "cluster".to_owned());
        let path = dir.join(format!("{kind}.{namespace}.{}.yaml", object.name_any()));
        let mut value = serde_json::to_value(object)?;
        // Lists omit the type of each item; put it back so every file is a complete object.
        if let Some(map) = value.as_object_mut() {
            map.insert("apiVersion".into(), K::api_version(&()).into_owned().into());
            map.insert("kind".into(), K::kind(&()).into_owned().into());
        }
        std::fs::write(&path, serde_yaml::to_string(&value)?).with_context(|| path.display().to_string())?;
    }
    Ok(list.items.len())
}
