//! A stand-in for kubelet's ConfigMap volume sync: projects the key-set
//! ConfigMaps of the in-memory API into a directory laid out exactly the way
//! kubelet writes volumes, so the real verifier loader reads them.
//!
//! Like kubelet's atomic writer: each version goes into a new hidden
//! timestamped directory, a `..data_tmp` symlink to it is renamed over
//! `..data` in one step, the visible names are symlinks through `..data`, and
//! the previous version is removed afterwards.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ListParams;
use kube::{Api, Client};

use crate::plan::LABEL_KEYSET;

/// Syncs one key set (all its shard ConfigMaps) into one directory.
pub struct VolumeSync {
    configmaps: Api<ConfigMap>,
    selector: String,
    dir: PathBuf,
    current: Option<BTreeMap<String, Vec<u8>>>,
    version: u64,
}

impl VolumeSync {
    /// Sync key set `keyset` of `namespace` into `dir` (created if needed).
    pub fn new(client: Client, namespace: &str, keyset: &str, dir: PathBuf) -> VolumeSync {
        VolumeSync {
            configmaps: Api::namespaced(client, namespace),
            selector: format!("{LABEL_KEYSET}={keyset}"),
            dir,
            current: None,
            version: 0,
        }
    }

    /// Write the current ConfigMaps into the directory if they changed; true if it wrote.
    pub async fn sync_once(&mut self) -> anyhow::Result<bool> {
        let list = self.configmaps.list(&ListParams::default().labels(&self.selector)).await?;
        let mut files = BTreeMap::new();
        for cm in list.items {
            files.extend(cm.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())));
            files.extend(cm.binary_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
        }
        if self.current.as_ref() == Some(&files) {
            return Ok(false);
        }
        self.version += 1;
        write_atomically(&self.dir, self.version, &files)?;
        self.current = Some(files);
        Ok(true)
    }

    /// Sync every `period` until the task is dropped, as kubelet does.
    pub async fn run(mut self, period: Duration) {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            if let Err(e) = self.sync_once().await {
                tracing::warn!(error = %e, dir = %self.dir.display(), "volume sync failed");
            }
        }
    }
}

fn write_atomically(dir: &Path, version: u64, files: &BTreeMap<String, Vec<u8>>) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    // Only a unique, readable directory name, as kubelet's own: no decision reads it.
    #[allow(clippy::disallowed_methods)]
    let stamp = jiff::Timestamp::now().strftime("%Y_%m_%d_%H_%M_%S");
    let data_name = format!("..{stamp}.{version:09}");
    let data_dir = dir.join(&data_name);
    std::fs::create_dir(&data_dir).with_context(|| data_dir.display().to_string())?;
    for (name, bytes) in files {
        std::fs::write(data_dir.join(name), bytes).with_context(|| name.clone())?;
    }
    let old = std::fs::read_link(dir.join("..data")).ok();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&data_name, &tmp)?;
    std::fs::rename(&tmp, dir.join("..data"))?;
    for name in files.keys() {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &link)?;
        }
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if !name.starts_with("..") && !files.contains_key(&name) {
            std::fs::remove_file(&path)?;
        }
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old))?;
    }
    Ok(())
}
