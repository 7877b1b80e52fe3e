//! A fixed-size open-addressing table from token hash to a small payload and the key's hot usage counters, built once per reload.
//!
//! Why not `HashMap`: with millions of keys nearly every lookup misses the CPU
//! caches, and hashbrown keeps control bytes apart from the slots, so a hit
//! costs two trips to memory. Here a slot is one 64-byte cache line, aligned
//! to one, holding the hash, the payload and the key's allowed-request
//! counters side by side, and the first probe is usually the hit: one trip,
//! counting included. The table is sized to the key count (3/4 full at most,
//! not rounded to a power of two). SHA-256 digests are uniform and nobody can
//! aim tokens at one slot without preimages, so the slot is taken straight
//! from the digest's first eight bytes.
//!
//! Only the counters change after the build (relaxed atomics, through a
//! shared reference). Because the slots hold atomics they are a typed array
//! on the heap: the crate forbids `unsafe`, and there is no safe way to lay
//! atomics over an anonymous memory map, so the table is no longer mapped and
//! advised onto transparent huge pages as it was before the counters moved in
//! (docs/benchmarks/2026-12-01-usage-layout.md weighs the two).

use super::usage::HotCounters;
use crate::token::KeyHash;

/// Bytes per slot: one cache line.
pub const SLOT: usize = 64;

/// What a slot holds besides its hash and counters: plain numbers, read out by copy.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Payload {
    /// The caller's first number.
    pub not_before: i64,
    /// The caller's second number.
    pub not_after: i64,
    /// The caller's word; never zero in a used slot (zero marks an empty slot).
    pub word: u32,
    /// The caller's last number.
    pub bucket: u32,
}

/// One cache line: a key's hash, payload and hot counters.
#[derive(Debug, Default)]
#[repr(C, align(64))]
pub struct Slot {
    hash: [u8; 32],
    payload: Payload,
    counters: HotCounters,
}

const _: () = assert!(std::mem::size_of::<Slot>() == SLOT && std::mem::align_of::<Slot>() == SLOT);

impl Slot {
    /// The slot's payload.
    #[must_use]
    pub fn payload(&self) -> Payload {
        self.payload
    }

    /// The slot's counters.
    #[must_use]
    pub fn counters(&self) -> &HotCounters {
        &self.counters
    }

    /// The hash the slot holds.
    #[must_use]
    pub fn hash(&self) -> KeyHash {
        KeyHash::from_bytes(self.hash)
    }

    fn is_used(&self) -> bool {
        self.payload.word != 0
    }
}

/// A table of at most the capacity it was made with.
#[derive(Debug)]
pub struct Table {
    slots: Box<[Slot]>,
    len: usize,
}

impl Default for Table {
    fn default() -> Self {
        Table::with_capacity(0)
    }
}

/// Inserting a hash that is already in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duplicate;

impl Table {
    /// An empty table for up to `capacity` values.
    #[must_use]
    pub fn with_capacity(capacity: usize) -> Table {
        // At most 3/4 full, and always one empty slot so that every probe ends.
        let slots = capacity.saturating_add(capacity / 3).saturating_add(1);
        Table { slots: std::iter::repeat_with(Slot::default).take(slots).collect(), len: 0 }
    }

    /// Where probing for `hash` starts: the digest's first eight bytes scaled onto the slots.
    fn home(&self, hash: &KeyHash) -> usize {
        let bytes = hash.as_bytes();
        let prefix =
            u64::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7]]);
        // (prefix * slots) >> 64 is below slots, so it fits in usize.
        usize::try_from((u128::from(prefix) * self.slots.len() as u128) >> 64).unwrap_or(0)
    }

    fn next(&self, i: usize) -> usize {
        if i + 1 == self.slots.len() { 0 } else { i + 1 }
    }

    /// Add a payload; returns its slot number. Panics past the capacity the table was made with,
    /// or for a payload whose word is zero (both bugs in the caller).
    pub fn insert(&mut self, hash: &KeyHash, payload: Payload) -> Result<usize, Duplicate> {
        assert!(self.len + 1 < self.slots.len(), "table built for fewer values");
        assert!(payload.word != 0, "a zero word marks an empty slot");
        let mut i = self.home(hash);
        loop {
            let slot = &self.slots[i];
            if !slot.is_used() {
                break;
            }
            // Plain comparison: the hash is what everyone may see (the key set publishes it).
            if slot.hash == *hash.as_bytes() {
                return Err(Duplicate);
            }
            i = self.next(i);
        }
        self.slots[i] = Slot { hash: *hash.as_bytes(), payload, counters: HotCounters::default() };
        self.len += 1;
        Ok(i)
    }

    /// The slot number and slot holding `hash`.
    #[must_use]
    pub fn get(&self, hash: &KeyHash) -> Option<(usize, &Slot)> {
        let mut i = self.home(hash);
        loop {
            let slot = self.slots.get(i)?;
            if !slot.is_used() {
                return None;
            }
            if slot.hash == *hash.as_bytes() {
                return Some((i, slot));
            }
            i = self.next(i);
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

    /// How many slots the table has (used or not): slot numbers are below this.
    #[must_use]
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Every used slot with its number, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &Slot)> {
        self.slots.iter().enumerate().filter(|(_, slot)| slot.is_used())
    }

    /// Bytes of the slot array.
    #[must_use]
    pub fn slot_bytes(&self) -> usize {
        self.slots.len() * SLOT
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

    fn payload(n: u64) -> Payload {
        Payload { not_before: n.cast_signed(), not_after: 1, word: 1, bucket: 2 }
    }

    fn found(table: &Table, h: &KeyHash) -> Option<Payload> {
        table.get(h).map(|(_, slot)| slot.payload())
    }

    #[test]
    fn an_empty_table_finds_nothing_and_a_duplicate_is_refused() {
        let empty = Table::with_capacity(0);
        assert!(empty.get(&hash(1)).is_none());
        let mut table = Table::with_capacity(2);
        let at = table.insert(&hash(1), payload(1)).unwrap();
        assert_eq!(table.insert(&hash(1), payload(2)), Err(Duplicate));
        assert_eq!(found(&table, &hash(1)), Some(payload(1)));
        assert_eq!(table.get(&hash(1)).map(|(i, _)| i), Some(at));
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn an_all_zero_hash_with_a_payload_of_zeros_but_its_word_is_still_found() {
        let zero = KeyHash::from_bytes([0; 32]);
        let mut table = Table::with_capacity(1);
        assert!(table.get(&zero).is_none());
        let payload = Payload { word: 1, ..Payload::default() };
        table.insert(&zero, payload).unwrap();
        assert_eq!(found(&table, &zero), Some(payload));
        assert_eq!(table.get(&zero).map(|(_, slot)| slot.hash()), Some(zero));
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
        for (i, h) in (0..).zip(&crowded) {
            table.insert(h, payload(i)).unwrap();
        }
        for (i, h) in (0..).zip(&crowded) {
            assert_eq!(found(&table, h), Some(payload(i)));
        }
        let mut absent = [0xff; 32];
        absent[31] = 99;
        assert!(table.get(&KeyHash::from_bytes(absent)).is_none());
    }

    #[test]
    fn a_large_table_finds_every_value_at_the_slot_it_was_put_in() {
        let count = 40_000u64;
        let mut table = Table::with_capacity(usize::try_from(count).unwrap());
        let mut at = HashMap::new();
        for n in 0..count {
            at.insert(n, table.insert(&hash(n), payload(n)).unwrap());
        }
        for n in (0..count).step_by(97) {
            let (i, slot) = table.get(&hash(n)).unwrap();
            assert_eq!((i, slot.payload()), (at[&n], payload(n)));
        }
        assert!(table.get(&hash(count + 1)).is_none());
        assert_eq!(table.iter().count(), 40_000);
        assert!(table.iter().all(|(i, _)| i < table.slot_count()));
    }

    #[test]
    #[should_panic(expected = "a zero word marks an empty slot")]
    fn a_zero_word_is_refused() {
        let _ = Table::with_capacity(1).insert(&hash(1), Payload::default());
    }

    proptest! {
        #[test]
        fn the_table_agrees_with_a_hash_map(present in prop::collection::hash_set(any::<u64>(), 0..300), absent in prop::collection::vec(any::<u64>(), 0..50)) {
            let mut table = Table::with_capacity(present.len());
            let mut map = HashMap::new();
            for n in &present {
                table.insert(&hash(*n), payload(*n)).unwrap();
                map.insert(hash(*n), payload(*n));
            }
            prop_assert_eq!(table.len(), map.len());
            for n in present.iter().chain(&absent) {
                prop_assert_eq!(found(&table, &hash(*n)), map.get(&hash(*n)).copied());
            }
            prop_assert_eq!(table.iter().count(), present.len());
        }
    }
}
