//! Putting shards together into whole key sets: every shard present, one generation, no hash twice.

use std::collections::{BTreeMap, HashSet};

use super::decode::Shard;
use super::record::{Access, KeySet, KeySetId};
use crate::token::KeyId;

/// Why a set of shards does not form whole key sets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssembleError {
    /// Shards of one key set carry different generations: an update is still arriving.
    #[error("key set {id}: shards from generations {a} and {b} are mixed")]
    MixedGenerations {
        /// The key set.
        id: KeySetId,
        /// One generation seen.
        a: u64,
        /// Another generation seen.
        b: u64,
    },
    /// Shards of one generation disagree on the key set's gate: no shard's gate can be trusted.
    #[error("key set {0}: shards disagree on the access gate")]
    AccessDisagrees(KeySetId),
    /// Shards disagree on how many shards there are.
    #[error("key set {0}: shards disagree on the shard count")]
    ShardCountDisagrees(KeySetId),
    /// The same shard index appears twice.
    #[error("key set {id}: shard {index} appears twice")]
    DuplicateShard {
        /// The key set.
        id: KeySetId,
        /// The repeated index.
        index: usize,
    },
    /// A shard is missing.
    #[error("key set {id}: shard {index} of {total} is missing")]
    MissingShard {
        /// The key set.
        id: KeySetId,
        /// The missing index.
        index: usize,
        /// The shard count.
        total: usize,
    },
    /// The same hash appears in two shards or two key sets.
    #[error("key id {0} appears in more than one record")]
    DuplicateHash(KeyId),
}

/// Put decoded shards together into whole key sets, checking that each set is complete and consistent.
///
/// Any doubt is an error: a verifier that gets one keeps its last good key
/// set rather than serve a partial or mixed one.
pub fn assemble(shards: Vec<Shard>) -> Result<Vec<KeySet>, AssembleError> {
    let mut seen_hashes = HashSet::with_capacity(shards.iter().map(|s| s.records.len()).sum());
    let mut sets = Vec::new();
    for (id, generation, access, shards) in group(shards, |s| (&s.id, s.generation, s.index, s.total, s.access))? {
        let mut records = Vec::with_capacity(shards.iter().map(|s| s.records.len()).sum());
        for record in shards.into_iter().flat_map(|s| s.records) {
            if !seen_hashes.insert(record.hash) {
                return Err(AssembleError::DuplicateHash(record.key_id));
            }
            records.push(record);
        }
        sets.push(KeySet { id, generation, access, records });
    }
    Ok(sets)
}

/// One whole key set's shards, in shard order, with its id, generation and gate.
pub type ShardGroup<T> = (KeySetId, u64, Access, Vec<T>);

/// A shard's facts that must agree across its key set: key set, generation, index, shard count, gate.
pub(super) type GroupHeader<'a> = (&'a KeySetId, u64, usize, usize, Access);

/// Group shards by key set, each group in shard order, checking that every set is whole, of one generation
/// and of one gate.
///
/// `header` gives a shard's key set, generation, index, shard count and gate. Hashes are not looked at.
pub(super) fn group<T>(
    shards: Vec<T>,
    header: impl Fn(&T) -> GroupHeader<'_>,
) -> Result<Vec<ShardGroup<T>>, AssembleError> {
    let mut by_set: BTreeMap<KeySetId, Vec<T>> = BTreeMap::new();
    for shard in shards {
        by_set.entry(header(&shard).0.clone()).or_default().push(shard);
    }
    let mut sets = Vec::with_capacity(by_set.len());
    for (id, mut shards) in by_set {
        shards.sort_by_key(|s| header(s).2);
        let (_, generation, _, total, access) = header(&shards[0]);
        for shard in &shards {
            let (_, shard_generation, _, shard_total, shard_access) = header(shard);
            if shard_generation != generation {
                return Err(AssembleError::MixedGenerations { id, a: generation, b: shard_generation });
            }
            if shard_total != total {
                return Err(AssembleError::ShardCountDisagrees(id));
            }
            if shard_access != access {
                return Err(AssembleError::AccessDisagrees(id));
            }
        }
        for (expected, shard) in (1..).zip(&shards) {
            let index = header(shard).2;
            if index != expected {
                return Err(if index < expected {
                    AssembleError::DuplicateShard { id, index }
                } else {
                    AssembleError::MissingShard { id, index: expected, total }
                });
            }
        }
        if shards.len() != total {
            return Err(AssembleError::MissingShard { id, index: shards.len() + 1, total });
        }
        sets.push((id, generation, access, shards));
    }
    Ok(sets)
}
