//! Loading the key set from kubelet-style directories, reloading it on change, and swapping it in atomically.
//!
//! A reload reads every `--keyset-dir`, assembles the shards (all or nothing:
//! missing, corrupt, partial or mixed-generation shards fail the whole reload)
//! and only then swaps the new index in. A failed reload leaves the last good
//! index in force, so no failure can widen access; it is logged and counted.
//! Until the first reload succeeds there is no index and the verifier is not
//! ready.
//!
//! Changes are noticed through inotify (the `notify` crate) on each directory,
//! which sees kubelet's `..data` symlink swap, and by polling a cheap
//! fingerprint (the `..data` target and each file's size and mtime) in case
//! events are lost or unavailable.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use super::index::{IndexError, KeyIndex};
use super::metrics::{KeySetLabel, Metrics};
use crate::keyset::{LoadError, load_dirs};

/// The key index in force, shared by every request.
#[derive(Debug, Default)]
pub struct KeyStore {
    index: ArcSwapOption<KeyIndex>,
    loaded_at: Mutex<Option<Instant>>,
}

impl KeyStore {
    /// The index in force; `None` until the first valid key set loaded.
    #[must_use]
    pub fn current(&self) -> Option<Arc<KeyIndex>> {
        self.index.load_full()
    }

    /// Whether a valid key set has loaded.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.index.load().is_some()
    }

    /// Put `index` in force; requests already holding the old one finish with it.
    pub fn install(&self, index: KeyIndex) {
        self.index.store(Some(Arc::new(index)));
        *self.loaded_at.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    }

    /// Time since the last successful load.
    #[must_use]
    pub fn since_last_load(&self) -> Option<Duration> {
        self.loaded_at.lock().unwrap_or_else(PoisonError::into_inner).map(|t| t.elapsed())
    }
}

/// Why a reload failed; the previous key set stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// A directory could not be read, or its shards are malformed, incomplete or inconsistent.
    #[error("key set not loaded: {0}")]
    Load(#[from] LoadError),
    /// The key sets cannot be indexed together.
    #[error("key set not loaded: {0}")]
    Index(#[from] IndexError),
}

/// Reads the key-set directories and installs new indexes into a [`KeyStore`].
#[derive(Debug)]
pub struct Loader {
    dirs: Vec<PathBuf>,
    store: Arc<KeyStore>,
    metrics: Arc<Metrics>,
    fingerprint: Option<String>,
}

impl Loader {
    /// A loader for `dirs`, installing into `store`.
    #[must_use]
    pub fn new(dirs: Vec<PathBuf>, store: Arc<KeyStore>, metrics: Arc<Metrics>) -> Loader {
        Loader { dirs, store, metrics, fingerprint: None }
    }

    /// The directories read.
    #[must_use]
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Read the directories and install the result, or keep the last good set on any doubt.
    pub fn reload(&mut self) -> Result<(), ReloadError> {
        self.fingerprint = Some(fingerprint(&self.dirs));
        let result = self.try_reload();
        if let Err(err) = &result {
            self.metrics.reload_failures.inc();
            tracing::warn!(error = %err, ready = self.store.is_ready(), "key-set reload failed; last good set stays in force");
        }
        result
    }

    /// Reload only if the directories look different from the last attempt.
    pub fn reload_if_changed(&mut self) -> Option<Result<(), ReloadError>> {
        if self.fingerprint.as_deref() == Some(fingerprint(&self.dirs).as_str()) {
            return None;
        }
        Some(self.reload())
    }

    fn try_reload(&mut self) -> Result<(), ReloadError> {
        let sets = load_dirs(&self.dirs)?;
        let index = KeyIndex::build(sets, self.store.current().as_deref())?;
        install(&self.store, &self.metrics, index);
        Ok(())
    }
}

/// Put a new index in force and bring the key-set metrics up to date; shared by every key-set source.
pub(super) fn install(store: &KeyStore, metrics: &Metrics, index: KeyIndex) {
    if let Some(previous) = store.current() {
        for set in index.sets() {
            let old = previous.sets().iter().find(|s| s.id == set.id);
            if let Some(old) = old.filter(|old| old.generation > set.generation) {
                tracing::warn!(keyset = %set.id, from = old.generation, to = set.generation, "key-set generation went backwards");
            }
        }
    }
    metrics.keys_loaded.set(i64::try_from(index.len()).unwrap_or(i64::MAX));
    metrics.keyset_generation.clear();
    for set in index.sets() {
        let generation = i64::try_from(set.generation).unwrap_or(i64::MAX);
        metrics.keyset_generation.get_or_create(&KeySetLabel { keyset: set.id.clone() }).set(generation);
        tracing::info!(keyset = %set.id, generation = set.generation, keys = set.keys, "key set loaded");
    }
    store.install(index);
    metrics.ready.set(1);
    metrics.reloads.inc();
}

/// A cheap summary of what the directories hold: changes whenever kubelet swaps `..data` or a file changes.
fn fingerprint(dirs: &[PathBuf]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for dir in dirs {
        let root = std::fs::canonicalize(dir.join("..data")).unwrap_or_else(|_| dir.clone());
        let _ = write!(out, "{}|", root.display());
        match std::fs::read_dir(&root) {
            Err(e) => {
                let _ = write!(out, "error:{:?};", e.kind());
            }
            Ok(entries) => {
                let mut files: Vec<String> = entries
                    .filter_map(Result::ok)
                    .map(|entry| {
                        let meta = std::fs::metadata(entry.path()).ok();
                        let len = meta.as_ref().map(std::fs::Metadata::len);
                        let modified = meta.and_then(|m| m.modified().ok());
                        format!("{}:{len:?}:{modified:?}", entry.file_name().to_string_lossy())
                    })
                    .collect();
                files.sort();
                out.push_str(&files.join(","));
                out.push(';');
            }
        }
    }
    out
}

/// Load once now, then reload on every inotify event and every `poll` interval (when changed), until dropped.
///
/// Runs the file work on the blocking pool so request handling never waits on the disk.
pub async fn watch(loader: Loader, poll: Duration) {
    let changed = Arc::new(tokio::sync::Notify::new());
    let _watcher = start_watcher(loader.dirs(), &changed);
    let loader = Arc::new(Mutex::new(loader));
    let run = |force: bool| {
        let loader = Arc::clone(&loader);
        tokio::task::spawn_blocking(move || {
            let mut loader = loader.lock().unwrap_or_else(PoisonError::into_inner);
            if force {
                let _ = loader.reload();
            } else {
                let _ = loader.reload_if_changed();
            }
        })
    };
    let _ = run(true).await;
    let mut ticker = tokio::time::interval(poll);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        let force = tokio::select! {
            () = changed.notified() => true,
            _ = ticker.tick() => false,
        };
        let _ = run(force).await;
    }
}

fn start_watcher(dirs: &[PathBuf], changed: &Arc<tokio::sync::Notify>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher as _;
    let signal = Arc::clone(changed);
    let mut watcher = match notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Opening and reading are not changes, and the reload itself opens the
        // files of a plain directory: reacting to that would reload forever.
        if event.as_ref().is_ok_and(|e| e.kind.is_access()) {
            return;
        }
        // Any other event, even an error, is worth a look: the reload decides what changed.
        signal.notify_one();
    }) {
        Ok(w) => w,
        Err(err) => {
            tracing::warn!(error = %err, "inotify unavailable; relying on polling");
            return None;
        }
    };
    for dir in dirs {
        if let Err(err) = watcher.watch(dir, notify::RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %dir.display(), error = %err, "cannot watch key-set directory; relying on polling");
        }
    }
    Some(watcher)
}
