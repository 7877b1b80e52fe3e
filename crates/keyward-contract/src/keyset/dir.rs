//! Reading shards from a directory laid out the way kubelet writes ConfigMap volumes.
//!
//! Kubelet writes each version of a volume into a hidden timestamped directory
//! and swaps the `..data` symlink to it atomically; the visible file names are
//! symlinks through `..data`. Resolving `..data` once and reading every file
//! from the directory it points to gives one consistent snapshot even if a
//! swap happens mid-read. A plain directory without `..data` (as written by
//! `keyward keyset build`) is read as it is.
//!
//! Reads stay inside the mounted directory: kubelet's `..data` is always a
//! relative link to a `..<timestamp>` directory beside it, holding regular
//! files. A `..data` that is anything else (an absolute link, a path through
//! `..` or another directory, a link to a link) or a shard under it that is
//! not a regular file is refused, never followed.

use std::path::{Path, PathBuf};

use super::assemble::{AssembleError, assemble};
use super::decode::{Shard, decode_shard};
use super::error::DecodeError;
use super::format::{MAX_DECODE_BYTES, SHARD_FILE_SUFFIX};
use super::record::KeySet;

/// Why a key-set directory could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The directory or a file in it could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The directory holds no shard files: the key set is missing, not empty.
    #[error("{0}: no *{SHARD_FILE_SUFFIX} files")]
    NoShards(PathBuf),
    /// `..data` is not a relative link to a directory inside the volume, or a shard under it is not a regular file.
    #[error("{0}: not followed: ..data must be a relative link to a directory in the volume, holding regular files")]
    Escapes(PathBuf),
    /// `..data` was swapped during every attempt to read the directory.
    #[error("{0}: the volume changed during every read attempt")]
    KeptChanging(PathBuf),
    /// A shard file is larger than any ConfigMap can be.
    #[error("{0}: larger than {MAX_DECODE_BYTES} bytes")]
    TooLarge(PathBuf),
    /// A shard file is malformed.
    #[error("{path}: {error}")]
    Decode {
        /// The malformed file.
        path: PathBuf,
        /// What is wrong and where.
        error: DecodeError,
    },
    /// The shards do not form whole, consistent key sets.
    #[error(transparent)]
    Assemble(#[from] AssembleError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LoadError + '_ {
    move |source| LoadError::Io { path: path.to_owned(), source }
}

/// The directory holding the current files, and whether it came from `..data`.
///
/// `..data` must be a symlink to one plain name (no `/`, not `..`) that is a
/// real directory in `dir`, as kubelet writes it; anything else is refused.
fn snapshot_root(dir: &Path) -> Result<(PathBuf, bool), LoadError> {
    let data = dir.join("..data");
    let target = match std::fs::symlink_metadata(&data) {
        Ok(meta) if meta.file_type().is_symlink() => std::fs::read_link(&data).map_err(io(&data))?,
        Ok(_) => return Err(LoadError::Escapes(data)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((dir.to_owned(), false)),
        Err(e) => return Err(io(&data)(e)),
    };
    let mut components = target.components();
    let one_name = matches!(
        (components.next(), components.next()),
        (Some(std::path::Component::Normal(name)), None) if name != "..data"
    );
    if !one_name {
        return Err(LoadError::Escapes(data));
    }
    let root = dir.join(&target);
    match std::fs::symlink_metadata(&root) {
        Ok(meta) if meta.is_dir() => Ok((root, true)),
        Ok(_) => Err(LoadError::Escapes(data)),
        Err(e) => Err(io(&root)(e)),
    }
}

/// Read and decode every shard file in `dir`, without assembling them.
pub fn read_shards(dir: &Path) -> Result<Vec<Shard>, LoadError> {
    read_stored(dir)?
        .into_iter()
        .map(|(path, bytes)| decode_shard(&bytes).map_err(|error| LoadError::Decode { path, error }))
        .collect()
}

/// Read the bytes of every shard file in `dir`, in file-name order, without decoding them.
///
/// If kubelet swaps `..data` while the files are read, the read is repeated:
/// the old directory may be deleted under the reader, which could otherwise
/// yield a subset of its files without any error.
pub fn read_stored(dir: &Path) -> Result<Vec<(PathBuf, StoredBytes)>, LoadError> {
    const ATTEMPTS: usize = 3;
    let mut attempt = 1;
    loop {
        let (root, kubelet) = snapshot_root(dir)?;
        let result = read_snapshot(dir, &root, kubelet);
        if snapshot_root(dir)?.0 == root {
            return result;
        }
        if attempt == ATTEMPTS {
            return Err(LoadError::KeptChanging(dir.to_owned()));
        }
        attempt += 1;
    }
}

fn read_snapshot(dir: &Path, root: &Path, kubelet: bool) -> Result<Vec<(PathBuf, StoredBytes)>, LoadError> {
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(root).map_err(io(root))? {
        let entry = entry.map_err(io(root))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("..") || !name.ends_with(SHARD_FILE_SUFFIX) {
            continue;
        }
        // kubelet writes regular files under `..data`; a link there could lead anywhere.
        if kubelet && !entry.file_type().map_err(io(&entry.path()))?.is_file() {
            return Err(LoadError::Escapes(entry.path()));
        }
        paths.push(entry.path());
    }
    if paths.is_empty() {
        return Err(LoadError::NoShards(dir.to_owned()));
    }
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let len = std::fs::metadata(&path).map_err(io(&path))?.len();
            if usize::try_from(len).map_or(true, |len| len > MAX_DECODE_BYTES) {
                return Err(LoadError::TooLarge(path));
            }
            let bytes = read_file(&path, len).map_err(io(&path))?;
            Ok((path, bytes))
        })
        .collect()
}

/// A shard file's bytes. Large ones live in their own anonymous memory map,
/// so that dropping them gives the memory back to the system: glibc keeps
/// freed heap blocks of this size, which after a reload of a large key set
/// would stay resident for good.
#[derive(Debug)]
pub enum StoredBytes {
    /// A small file, on the heap.
    Heap(Vec<u8>),
    /// A large file, in an anonymous map.
    Mapped(memmap2::MmapMut),
}

impl std::ops::Deref for StoredBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            StoredBytes::Heap(bytes) => bytes,
            StoredBytes::Mapped(map) => map,
        }
    }
}

impl AsRef<[u8]> for StoredBytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

/// Files at least this large are read into a map of their own.
const MAP_FROM: u64 = 64 * 1024;

fn read_file(path: &Path, len: u64) -> std::io::Result<StoredBytes> {
    use std::io::Read as _;
    if len < MAP_FROM {
        return std::fs::read(path).map(StoredBytes::Heap);
    }
    let mut file = std::fs::File::open(path)?;
    let len = usize::try_from(len).map_err(std::io::Error::other)?;
    let mut map = memmap2::MmapOptions::new().len(len).map_anon()?;
    file.read_exact(&mut map)?;
    // Grown since its size was taken: not the file that was measured, so read it again later.
    if file.read(&mut [0u8; 1])? != 0 {
        return Err(std::io::Error::other("file changed while being read"));
    }
    Ok(StoredBytes::Mapped(map))
}

/// Read the key sets in one or more directories, failing on any doubt.
pub fn load_dirs(dirs: &[PathBuf]) -> Result<Vec<KeySet>, LoadError> {
    let mut shards = Vec::new();
    for dir in dirs {
        shards.extend(read_shards(dir)?);
    }
    Ok(assemble(shards)?)
}
