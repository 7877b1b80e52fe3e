//! Loading the key set from kubelet-style directories, reloading it on change, and swapping it in atomically.
//!
//! A reload reads every `--keyset-dir`, assembles the shards (all or nothing:
//! missing, corrupt, partial or mixed-generation shards fail the whole reload)
//! and only then swaps the new index in. A failed reload leaves the last good
//! index in force, so no failure can widen access; it is logged and counted.
//! Until the first reload succeeds there is no index and the verifier is not
//! ready.
//!
//! Reading is fast and allocation-light ([`crate::keyset::scan_shard`], one
//! thread per core over the shards, each shard inserted into the compact
//! index and dropped as soon as it is read); only a
//! refused set is decoded again by the strict decoder, to say exactly why. A
//! reload whose files hold the same bytes as the set in force (kubelet's swap
//! raises several inotify events) skips the parse. The index a reload
//! replaces is dropped by the loader once requests are done with it, not by
//! the last request holding it.
//!
//! Changes are noticed through inotify (the `notify` crate) on each directory,
//! which sees kubelet's `..data` symlink swap, and by polling a cheap
//! fingerprint (the `..data` target and each file's size and mtime) in case
//! events are lost or unavailable.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use super::index::{IndexBuilder, IndexError, KeyIndex};
use super::metrics::{KeySetLabel, Metrics};
use crate::keyset::{
    LoadError, ScannedShard, ShardHeader, assemble, assemble_headers, decode_shard, peek_header, read_stored,
    scan_shard, scan_shard_keeping_owners,
};

/// The key index in force, shared by every request.
#[derive(Debug, Default)]
pub struct KeyStore {
    index: ArcSwapOption<KeyIndex>,
    loaded_at: Mutex<Option<Instant>>,
    /// Accept a key set older than the one in force (`--allow-keyset-rollback`, for disaster recovery).
    allow_rollback: bool,
    /// Build indexes that keep each key's owner (for the audit log).
    keep_owners: bool,
    /// Nobody reads the usage counts (reports off): the ledger lets them go instead of keeping a row per key.
    discard_usage: bool,
}

impl KeyStore {
    /// An empty store; with `allow_rollback`, a key set with a lower generation
    /// than the one in force is loaded (with a warning) instead of refused.
    #[must_use]
    pub fn new(allow_rollback: bool) -> KeyStore {
        KeyStore { allow_rollback, ..KeyStore::default() }
    }

    /// The same store, its indexes keeping each key's `namespace/name` owner when `keep` (the audit log names it).
    #[must_use]
    pub fn keeping_owners(self, keep: bool) -> KeyStore {
        KeyStore { keep_owners: keep, ..self }
    }

    /// The same store, letting the usage counts go when `discard` (usage reports off), so that
    /// nothing outlives the keys loaded.
    #[must_use]
    pub fn discarding_usage(self, discard: bool) -> KeyStore {
        KeyStore { discard_usage: discard, ..self }
    }

    /// Whether indexes for this store keep each key's owner.
    #[must_use]
    pub fn keeps_owners(&self) -> bool {
        self.keep_owners
    }

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

    /// Put `index` in force and hand back the one it replaces; requests already holding that one finish with it.
    pub fn install(&self, index: KeyIndex) -> Option<Arc<KeyIndex>> {
        index.ledger().set_discard(self.discard_usage);
        let old = self.index.swap(Some(Arc::new(index)));
        self.confirm();
        old
    }

    /// Note that the set in force was just found current.
    fn confirm(&self) {
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
    /// A key set's generation is lower than the one in force: it could bring revoked keys back.
    #[error(
        "key set {keyset} not loaded: generation {to} is older than generation {from} in force (--allow-keyset-rollback accepts it)"
    )]
    Rollback {
        /// `namespace/name` of the key set.
        keyset: String,
        /// The generation in force.
        from: u64,
        /// The older generation that was offered.
        to: u64,
    },
}

/// Reads the key-set directories and installs new indexes into a [`KeyStore`].
#[derive(Debug)]
pub struct Loader {
    dirs: Vec<PathBuf>,
    store: Arc<KeyStore>,
    metrics: Arc<Metrics>,
    fingerprint: Option<String>,
    /// Digest of the files of the set in force, to skip reloads that would change nothing.
    in_force: Option<[u8; 32]>,
}

impl Loader {
    /// A loader for `dirs`, installing into `store`.
    #[must_use]
    pub fn new(dirs: Vec<PathBuf>, store: Arc<KeyStore>, metrics: Arc<Metrics>) -> Loader {
        Loader { dirs, store, metrics, fingerprint: None, in_force: None }
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
        let mut stored = Vec::new();
        for dir in &self.dirs {
            stored.extend(read_stored(dir)?);
        }
        let digest = digest(&stored);
        if self.in_force == Some(digest) && self.store.is_ready() {
            self.store.confirm();
            self.metrics.reloads.inc();
            tracing::debug!("key-set files unchanged; the set in force stays");
            return Ok(());
        }
        let previous = self.store.current();
        let index = index_from_stored_with(&stored, previous.as_deref(), self.store.keeps_owners())?;
        drop((previous, stored));
        let replaced = install(&self.store, &self.metrics, index)?;
        self.in_force = Some(digest);
        retire(replaced);
        Ok(())
    }
}

/// SHA-256 over every file's path and bytes.
fn digest<B: AsRef<[u8]>>(stored: &[(PathBuf, B)]) -> [u8; 32] {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    for (path, bytes) in stored {
        let path = path.as_os_str().as_encoded_bytes();
        hasher.update((path.len() as u64).to_le_bytes());
        hasher.update(path);
        let bytes = bytes.as_ref();
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    }
    hasher.finalize().into()
}

/// Turn the stored shards of every directory into one index, or say why not.
///
/// The scanner reads the shards (in parallel) straight into the index. If it
/// refuses anything, the strict decoder reads the same bytes again and its
/// error, naming file, line and field, is the answer: the strict decoder is
/// the specification, and the scanner's refusals carry no reason.
pub fn index_from_stored<B: AsRef<[u8]> + Sync>(
    stored: &[(PathBuf, B)],
    previous: Option<&KeyIndex>,
) -> Result<KeyIndex, ReloadError> {
    index_from_stored_with(stored, previous, false)
}

/// [`index_from_stored`], keeping each key's `namespace/name` owner when `keep_owners`.
pub fn index_from_stored_with<B: AsRef<[u8]> + Sync>(
    stored: &[(PathBuf, B)],
    previous: Option<&KeyIndex>,
    keep_owners: bool,
) -> Result<KeyIndex, ReloadError> {
    if let Some(index) = scan_into_index(stored, previous, keep_owners) {
        return Ok(index);
    }
    let shards = stored
        .iter()
        .map(|(path, bytes)| {
            decode_shard(bytes.as_ref()).map_err(|error| LoadError::Decode { path: path.clone(), error })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let index = KeyIndex::build_keeping_owners(assemble(shards).map_err(LoadError::from)?, previous, keep_owners)?;
    // Property tests say this does not happen; if it does, the strict decoder's word stands.
    tracing::warn!("the fast key-set reader refused a set the strict decoder accepts; loaded it strictly");
    Ok(index)
}

/// The fast path: headers first (to check the sets are whole and size the
/// index), then one scanning thread per core taking shards from a shared
/// counter, handing each scanned shard to this thread, which inserts it and
/// drops it. The hand-over holds at most one shard per scanner, so a reload
/// holds the new index and a few shards, never every shard's records at
/// once: less to hand back to the allocator afterwards, which glibc would
/// keep as resident memory. Shards are inserted in whatever order they
/// finish; nothing in the index depends on that order.
fn scan_into_index<B: AsRef<[u8]> + Sync>(
    stored: &[(PathBuf, B)],
    previous: Option<&KeyIndex>,
    keep_owners: bool,
) -> Option<KeyIndex> {
    let headers = stored
        .iter()
        .enumerate()
        .map(|(i, (_, bytes))| Some((i, peek_header(bytes.as_ref())?)))
        .collect::<Option<Vec<_>>>()?;
    let sets = assemble_headers(headers).ok()?;
    let capacity = sets.iter().flat_map(|(_, _, _, shards)| shards).map(|(_, h)| h.records).sum();
    let mut builder = IndexBuilder::new(capacity, previous).keeping_owners(keep_owners);
    let scan = if keep_owners { scan_shard_keeping_owners } else { scan_shard };
    let mut expected: Vec<Option<ShardHeader>> = vec![None; stored.len()];
    for (id, generation, access, shards) in sets {
        builder.add_set(id.to_string(), generation, shards.iter().map(|(_, h)| h.records).sum(), access);
        for (i, header) in shards {
            expected[i] = Some(header);
        }
    }
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get).min(stored.len()).max(1);
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let (send, receive) = std::sync::mpsc::sync_channel::<(usize, Option<ScannedShard>)>(threads);
    let (next, failed, expected) = (&next, &failed, &expected);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let send = send.clone();
                scope.spawn(move || {
                    while !failed.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((_, bytes)) = stored.get(i) else { break };
                        if send.send((i, scan(bytes.as_ref()))).is_err() {
                            break;
                        }
                    }
                })
            })
            .collect();
        drop(send);
        // Takes the receiver, so returning early lets blocked scanners stop; ends once every scanner has.
        let insert_all = move || {
            let mut inserted = 0;
            for (i, scanned) in receive {
                // The scan must confirm the header the index was sized by.
                let shard = scanned.filter(|s| expected.get(i).and_then(Option::as_ref) == Some(&s.header()));
                if let Some(shard) = shard
                    && builder.add_shard(&shard).is_ok()
                {
                    inserted += 1;
                } else {
                    failed.store(true, Ordering::Relaxed);
                    return None;
                }
            }
            // A scanner that panicked never delivered its shard: the count refuses, the strict decoder decides.
            (inserted == stored.len()).then(|| builder.finish())
        };
        let index = insert_all();
        for worker in workers {
            // Joined here so that a panic counts as a refusal instead of propagating.
            let _ = worker.join();
        }
        index
    })
}

/// Drop a replaced index here rather than on a request: wait (briefly) until no request holds it.
fn retire(index: Option<Arc<KeyIndex>>) {
    let Some(index) = index else { return };
    let deadline = Instant::now() + Duration::from_millis(100);
    // Requests hold the index only while deciding (microseconds); proxied requests let go before forwarding.
    while Arc::strong_count(&index) > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(index);
}

/// Put a new index in force and bring the key-set metrics up to date; shared by every key-set source.
///
/// Returns the index it replaced, for the caller to drop off the request path.
/// Refuses (keeping the set in force) a key set whose generation is lower than
/// the one in force, unless the store allows rollback: an older set can hold
/// keys revoked since.
pub(super) fn install(
    store: &KeyStore,
    metrics: &Metrics,
    index: KeyIndex,
) -> Result<Option<Arc<KeyIndex>>, ReloadError> {
    if let Some(previous) = store.current() {
        for set in index.sets() {
            let old = previous.sets().iter().find(|s| s.id == set.id);
            let Some(old) = old.filter(|old| old.generation > set.generation) else { continue };
            if !store.allow_rollback {
                return Err(ReloadError::Rollback { keyset: set.id.clone(), from: old.generation, to: set.generation });
            }
            tracing::warn!(keyset = %set.id, from = old.generation, to = set.generation, "key-set generation went backwards; loaded because --allow-keyset-rollback is set");
        }
    }
    metrics.keys_loaded.set(i64::try_from(index.len()).unwrap_or(i64::MAX));
    metrics.keyset_generation.clear();
    for set in index.sets() {
        let generation = i64::try_from(set.generation).unwrap_or(i64::MAX);
        metrics.keyset_generation.get_or_create(&KeySetLabel { keyset: set.id.clone() }).set(generation);
        tracing::info!(keyset = %set.id, generation = set.generation, keys = set.keys, access = %set.access, "key set loaded");
    }
    let replaced = store.install(index);
    metrics.ready.set(1);
    metrics.reloads.inc();
    Ok(replaced)
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
