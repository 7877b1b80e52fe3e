//! A fixed-size open-addressing table from token hash to value, built once per reload and then only read.
//!
//! Why not `HashMap`: with millions of keys nearly every lookup misses the CPU
//! caches, and hashbrown keeps control bytes apart from the slots, so a hit
//! costs two trips to memory. Here a slot holds the hash and the value side
//! by side and the first probe is usually the hit: one trip. The table is
//! sized to the key count (3/4 full at most, not rounded to a power of two),
//! which also keeps memory per key down. SHA-256 digests are uniform and
//! nobody can aim tokens at one slot without preimages, so the slot is taken
//! straight from the digest's first eight bytes.

use crate::token::KeyHash;

/// A table of at most the capacity it was made with.
#[derive(Debug)]
pub struct Table<V> {
    slots: Box<[Option<(KeyHash, V)>]>,
    len: usize,
}

impl<V> Default for Table<V> {
    fn default() -> Self {
        Table::with_capacity(0)
    }
}

/// Inserting a hash that is already in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duplicate;

impl<V> Table<V> {
    /// An empty table for up to `capacity` values.
    #[must_use]
    pub fn with_capacity(capacity: usize) -> Table<V> {
        // At most 3/4 full, and always one empty slot so that every probe ends.
        let slots = capacity.saturating_add(capacity / 3).saturating_add(1);
        Table { slots: std::iter::repeat_with(|| None).take(slots).collect(), len: 0 }
    }

    /// Where probing for `hash` starts: the digest's first eight bytes scaled onto the slots.
    fn home(&self, hash: &KeyHash) -> usize {
        let bytes = hash.as_bytes();
        let prefix =
            u64::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7]]);
        // (prefix * slots) >> 64 is below slots, so it fits in usize.
        usize::try_from((u128::from(prefix) * self.slots.len() as u128) >> 64).unwrap_or(0)
    }

    /// Add a value. Panics past the capacity the table was made with (a bug in the caller).
    pub fn insert(&mut self, hash: KeyHash, value: V) -> Result<(), Duplicate> {
        assert!(self.len + 1 < self.slots.len(), "table built for fewer values");
        let mut i = self.home(&hash);
        loop {
            match &self.slots[i] {
                None => break,
                Some((existing, _)) if existing.as_bytes() == hash.as_bytes() => return Err(Duplicate),
                Some(_) => i = if i + 1 == self.slots.len() { 0 } else { i + 1 },
            }
        }
        self.slots[i] = Some((hash, value));
        self.len += 1;
        Ok(())
    }

    /// The value for `hash`.
    #[must_use]
    pub fn get(&self, hash: &KeyHash) -> Option<&V> {
        let mut i = self.home(hash);
        loop {
            match &self.slots[i] {
                None => return None,
                // Plain comparison: the hash is what everyone may see (the key set publishes it).
                Some((existing, value)) if existing.as_bytes() == hash.as_bytes() => return Some(value),
                Some(_) => i = if i + 1 == self.slots.len() { 0 } else { i + 1 },
            }
        }
    }

    /// How many values the table holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table holds no value.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every value, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.slots.iter().flatten().map(|(_, v)| v)
    }

    /// Bytes of the slot array.
    #[must_use]
    pub fn slot_bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<Option<(KeyHash, V)>>()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    fn hash(n: u64) -> KeyHash {
        use sha2::Digest;
        KeyHash::from_bytes(sha2::Sha256::digest(n.to_le_bytes()).into())
    }

    #[test]
    fn an_empty_table_finds_nothing_and_a_duplicate_is_refused() {
        let empty: Table<u32> = Table::with_capacity(0);
        assert_eq!(empty.get(&hash(1)), None);
        let mut table = Table::with_capacity(2);
        assert_eq!(table.insert(hash(1), 1), Ok(()));
        assert_eq!(table.insert(hash(1), 2), Err(Duplicate));
        assert_eq!(table.get(&hash(1)), Some(&1));
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn hashes_that_share_a_home_slot_are_all_found_even_across_the_end() {
        // Equal first bytes give equal home slots: the last slot, so probing wraps around.
        let crowded: Vec<KeyHash> = (0..5u8)
            .map(|i| {
                let mut bytes = [0xff; 32];
                bytes[31] = i;
                KeyHash::from_bytes(bytes)
            })
            .collect();
        let mut table = Table::with_capacity(crowded.len());
        for (i, h) in crowded.iter().enumerate() {
            table.insert(*h, i).unwrap();
        }
        for (i, h) in crowded.iter().enumerate() {
            assert_eq!(table.get(h), Some(&i));
        }
        let mut absent = [0xff; 32];
        absent[31] = 99;
        assert_eq!(table.get(&KeyHash::from_bytes(absent)), None);
    }

    proptest! {
        #[test]
        fn the_table_agrees_with_a_hash_map(present in prop::collection::hash_set(any::<u64>(), 0..300), absent in prop::collection::vec(any::<u64>(), 0..50)) {
            let mut table = Table::with_capacity(present.len());
            let mut map = HashMap::new();
            for n in &present {
                table.insert(hash(*n), *n).unwrap();
                map.insert(hash(*n), *n);
            }
            prop_assert_eq!(table.len(), map.len());
            for n in present.iter().chain(&absent) {
                prop_assert_eq!(table.get(&hash(*n)), map.get(&hash(*n)));
            }
            prop_assert_eq!(table.values().count(), present.len());
        }
    }
}
