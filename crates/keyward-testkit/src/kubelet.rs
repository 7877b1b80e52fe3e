//! kubelet's ConfigMap volume, written the way kubelet writes it: the one
//! atomic writer of tests, benches and the demo.
//!
//! Like kubelet's atomic writer: each version goes into a new hidden
//! timestamped directory, a `..data_tmp` symlink to it is renamed over
//! `..data` in one step, the visible names are symlinks through `..data`
//! (names no longer present are removed), and the previous version is removed
//! afterwards. [`KubeletDir`] writes versions; [`VolumeSync`] projects a key
//! set's ConfigMaps from an API into one, as kubelet's sync loop does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use keyward_contract::keyset::{DEFAULT_MAX_SHARD_BYTES, Record};
use kube::api::ListParams;
use kube::{Api, Client};

/// A directory changed the way kubelet's atomic writer changes a ConfigMap volume.
pub struct KubeletDir {
    /// The volume's mount path: what the verifier is given.
    pub path: PathBuf,
    version: usize,
    _temp: Option<tempfile::TempDir>,
}

impl Default for KubeletDir {
    fn default() -> KubeletDir {
        KubeletDir::new()
    }
}

impl KubeletDir {
    /// A volume in a fresh temporary directory, removed on drop.
    ///
    /// # Panics
    /// When no temporary directory can be made (tests only).
    #[must_use]
    pub fn new() -> KubeletDir {
        let temp = tempfile::tempdir().expect("a temporary directory");
        KubeletDir { path: temp.path().to_owned(), version: 0, _temp: Some(temp) }
    }

    /// A volume at `path`, created when the first version is written; kept on drop.
    #[must_use]
    pub fn at(path: PathBuf) -> KubeletDir {
        KubeletDir { path, version: 0, _temp: None }
    }

    /// Write a new version beside the current one; [`KubeletDir::swap`] then puts it in force.
    pub fn try_stage(&mut self, files: &[(String, Vec<u8>)]) -> std::io::Result<String> {
        std::fs::create_dir_all(&self.path)?;
        self.version += 1;
        // Only uniqueness matters to readers; a fixed stamp keeps the writer off the wall clock.
        let name = format!("..2026_11_22_12_00_00.{:09}", self.version);
        let version_dir = self.path.join(&name);
        std::fs::create_dir(&version_dir)?;
        for (file, bytes) in files {
            std::fs::write(version_dir.join(file), bytes)?;
        }
        Ok(name)
    }

    /// Rename a fresh symlink over `..data` (the atomic step), link visible names, remove stale
    /// names and the old version.
    pub fn try_swap(&self, version: &str) -> std::io::Result<()> {
        let old = std::fs::read_link(self.path.join("..data")).ok();
        let tmp = self.path.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(version, &tmp)?;
        std::fs::rename(&tmp, self.path.join("..data"))?;
        let mut names = Vec::new();
        for entry in std::fs::read_dir(self.path.join(version))? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        for name in &names {
            let visible = self.path.join(name);
            if std::fs::symlink_metadata(&visible).is_err() {
                std::os::unix::fs::symlink(Path::new("..data").join(name), &visible)?;
            }
        }
        // Visible links whose file is gone now dangle; kubelet removes them, and so does this.
        for entry in std::fs::read_dir(&self.path)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with("..") && !names.contains(&name) {
                std::fs::remove_file(entry.path())?;
            }
        }
        if let Some(old) = old.filter(|old| old != Path::new(version)) {
            std::fs::remove_dir_all(self.path.join(old))?;
        }
        Ok(())
    }

    /// Publish a new version holding exactly `files`, as bytes (gzip shards are binary).
    pub fn try_publish_bytes(&mut self, files: &[(String, Vec<u8>)]) -> std::io::Result<()> {
        let version = self.try_stage(files)?;
        self.try_swap(&version)
    }

    /// [`KubeletDir::try_stage`], for tests.
    ///
    /// # Panics
    /// When the version cannot be written.
    pub fn stage(&mut self, files: &[(String, Vec<u8>)]) -> String {
        self.try_stage(files).expect("staging a volume version")
    }

    /// [`KubeletDir::try_swap`], for tests.
    ///
    /// # Panics
    /// When the swap fails.
    pub fn swap(&self, version: &str) {
        self.try_swap(version).expect("swapping a volume version");
    }

    /// Publish a new version holding exactly `files` (name, text).
    ///
    /// # Panics
    /// When the version cannot be written.
    pub fn publish(&mut self, files: &[(String, String)]) {
        let files: Vec<(String, Vec<u8>)> = files.iter().map(|(n, t)| (n.clone(), t.clone().into_bytes())).collect();
        self.publish_bytes(&files);
    }

    /// Publish a new version holding exactly `files`, as bytes.
    ///
    /// # Panics
    /// When the version cannot be written.
    pub fn publish_bytes(&mut self, files: &[(String, Vec<u8>)]) {
        self.try_publish_bytes(files).expect("publishing a volume version");
    }

    /// Publish key set `team-a/<name>` at `generation` as one plain shard (see [`crate::fixtures`]).
    ///
    /// # Panics
    /// When the records do not encode or the version cannot be written.
    pub fn publish_set(&mut self, name: &str, generation: u64, records: &[Record]) {
        self.publish(&crate::fixtures::shard_files(name, generation, records, DEFAULT_MAX_SHARD_BYTES));
    }
}

/// Syncs one key set (all its shard ConfigMaps) from an API into one volume, as kubelet does.
pub struct VolumeSync {
    configmaps: Api<ConfigMap>,
    selector: String,
    dir: KubeletDir,
    current: Option<BTreeMap<String, Vec<u8>>>,
}

impl VolumeSync {
    /// Sync key set `keyset` of `namespace` into `dir` (created if needed).
    #[must_use]
    pub fn new(client: Client, namespace: &str, keyset: &str, dir: PathBuf) -> VolumeSync {
        VolumeSync {
            configmaps: Api::namespaced(client, namespace),
            selector: keyward_contract::configmap::label_selector(keyset),
            dir: KubeletDir::at(dir),
            current: None,
        }
    }

    /// Write the current ConfigMaps into the directory if they changed; true if it wrote.
    pub async fn sync_once(&mut self) -> anyhow::Result<bool> {
        let list = self.configmaps.list(&ListParams::default().labels(&self.selector)).await?;
        // kubelet projects every key of the ConfigMap, whatever its name.
        let mut files = BTreeMap::new();
        for cm in list.items {
            files.extend(cm.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())));
            files.extend(cm.binary_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
        }
        if self.current.as_ref() == Some(&files) {
            return Ok(false);
        }
        let listed: Vec<(String, Vec<u8>)> = files.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        self.dir.try_publish_bytes(&listed)?;
        self.current = Some(files);
        Ok(true)
    }

    /// Sync every `period` until the task is dropped, as kubelet does.
    pub async fn run(mut self, period: Duration) {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            if let Err(e) = self.sync_once().await {
                tracing::warn!(error = %e, dir = %self.dir.path.display(), "volume sync failed");
            }
        }
    }
}
