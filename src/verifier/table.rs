//! A fixed-size open-addressing table from token hash to a small payload, built once per reload and then only read.
//!
//! Why not `HashMap`: with millions of keys nearly every lookup misses the CPU
//! caches, and hashbrown keeps control bytes apart from the slots, so a hit
//! costs two trips to memory. Here a slot is one 64-byte cache line, aligned
//! to one, holding the hash and the payload side by side, and the first probe
//! is usually the hit: one trip. The table is sized to the key count (3/4
//! full at most, not rounded to a power of two). SHA-256 digests are uniform
//! and nobody can aim tokens at one slot without preimages, so the slot is
//! taken straight from the digest's first eight bytes.
//!
//! Large tables live in an anonymous memory map advised to use transparent
//! huge pages (`MADV_HUGEPAGE`; the kernel's default is often "madvise"), so
//! that a lookup in a table of a million keys does not also miss the TLB.
//! When the kernel refuses, the table works the same on normal pages, and if
//! no map can be made at all it falls back to the heap.

use crate::token::KeyHash;

/// Bytes per slot: one cache line.
pub const SLOT: usize = 64;
/// Payload bytes per slot: what is left after the hash and the slot's "used" byte.
pub const PAYLOAD: usize = SLOT - 32 - 1;
/// Tables at least this large are put on huge pages (the size of one).
const HUGE_PAGE: usize = 2 * 1024 * 1024;

/// Where the slots live.
#[derive(Debug)]
enum Memory {
    /// An anonymous map (page-aligned, so every slot is cache-line aligned).
    Mapped(memmap2::MmapMut),
    /// A heap block with room to align the first slot to a cache line.
    Heap(Box<[u8]>),
}

/// A table of at most the capacity it was made with.
#[derive(Debug)]
pub struct Table {
    memory: Memory,
    /// Where the first slot starts in `memory`.
    offset: usize,
    slots: usize,
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

fn allocate(bytes: usize) -> (Memory, usize) {
    if bytes >= HUGE_PAGE {
        // One huge page extra, so the slots can start on a huge-page boundary.
        if let Ok(map) = memmap2::MmapOptions::new().len(bytes + HUGE_PAGE).map_anon() {
            // Advice only: without huge pages the table is as correct, just slower to search.
            let _ = map.advise(memmap2::Advice::HugePage);
            let offset = map.as_ptr().align_offset(HUGE_PAGE);
            // align_offset may give up (usize::MAX); then the map's own page alignment is enough.
            return (Memory::Mapped(map), if offset < HUGE_PAGE { offset } else { 0 });
        }
    }
    let heap = vec![0u8; bytes + SLOT].into_boxed_slice();
    let offset = heap.as_ptr().align_offset(SLOT);
    // If align_offset gives up (usize::MAX), slots straddle cache lines: slower, still correct.
    (Memory::Heap(heap), if offset < SLOT { offset } else { 0 })
}

/// Whether a slot holds `hash`: compared as arrays, inline (a slice comparison calls memcmp).
fn same_hash(slot: &[u8], hash: &KeyHash) -> bool {
    // Plain comparison: the hash is what everyone may see (the key set publishes it).
    slot.first_chunk::<32>() == Some(hash.as_bytes())
}

impl Table {
    /// An empty table for up to `capacity` values.
    #[must_use]
    pub fn with_capacity(capacity: usize) -> Table {
        // At most 3/4 full, and always one empty slot so that every probe ends.
        let slots = capacity.saturating_add(capacity / 3).saturating_add(1);
        let (memory, offset) = allocate(slots.saturating_mul(SLOT));
        Table { memory, offset, slots, len: 0 }
    }

    fn bytes(&self) -> &[u8] {
        match &self.memory {
            Memory::Mapped(map) => &map[self.offset..],
            Memory::Heap(heap) => &heap[self.offset..],
        }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        match &mut self.memory {
            Memory::Mapped(map) => &mut map[self.offset..],
            Memory::Heap(heap) => &mut heap[self.offset..],
        }
    }

    /// Where probing for `hash` starts: the digest's first eight bytes scaled onto the slots.
    fn home(&self, hash: &KeyHash) -> usize {
        let bytes = hash.as_bytes();
        let prefix =
            u64::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7]]);
        // (prefix * slots) >> 64 is below slots, so it fits in usize.
        usize::try_from((u128::from(prefix) * self.slots as u128) >> 64).unwrap_or(0)
    }

    fn next(&self, i: usize) -> usize {
        if i + 1 == self.slots { 0 } else { i + 1 }
    }

    /// Add a payload. Panics past the capacity the table was made with (a bug in the caller).
    pub fn insert(&mut self, hash: &KeyHash, payload: &[u8; PAYLOAD]) -> Result<(), Duplicate> {
        assert!(self.len + 1 < self.slots, "table built for fewer values");
        let mut i = self.home(hash);
        loop {
            let slot = &self.bytes()[i * SLOT..(i + 1) * SLOT];
            if slot[SLOT - 1] == 0 {
                break;
            }
            if same_hash(slot, hash) {
                return Err(Duplicate);
            }
            i = self.next(i);
        }
        let slot = &mut self.bytes_mut()[i * SLOT..(i + 1) * SLOT];
        slot[..32].copy_from_slice(hash.as_bytes());
        slot[32..32 + PAYLOAD].copy_from_slice(payload);
        slot[SLOT - 1] = 1;
        self.len += 1;
        Ok(())
    }

    /// The payload for `hash`.
    #[must_use]
    pub fn get(&self, hash: &KeyHash) -> Option<&[u8; PAYLOAD]> {
        let bytes = self.bytes();
        let mut i = self.home(hash);
        loop {
            let slot: &[u8; SLOT] = bytes.get(i * SLOT..(i + 1) * SLOT)?.try_into().ok()?;
            if slot[SLOT - 1] == 0 {
                return None;
            }
            if same_hash(slot, hash) {
                return slot[32..32 + PAYLOAD].try_into().ok();
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

    /// Every hash and payload, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.bytes()
            .chunks_exact(SLOT)
            .take(self.slots)
            .filter(|slot| slot[SLOT - 1] != 0)
            .map(|slot| (&slot[..32], &slot[32..32 + PAYLOAD]))
    }

    /// Bytes of the slot array.
    #[must_use]
    pub fn slot_bytes(&self) -> usize {
        self.slots * SLOT
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

    fn payload(n: u64) -> [u8; PAYLOAD] {
        let mut p = [0u8; PAYLOAD];
        p[..8].copy_from_slice(&n.to_le_bytes());
        p
    }

    #[test]
    fn an_empty_table_finds_nothing_and_a_duplicate_is_refused() {
        let empty = Table::with_capacity(0);
        assert_eq!(empty.get(&hash(1)), None);
        let mut table = Table::with_capacity(2);
        assert_eq!(table.insert(&hash(1), &payload(1)), Ok(()));
        assert_eq!(table.insert(&hash(1), &payload(2)), Err(Duplicate));
        assert_eq!(table.get(&hash(1)), Some(&payload(1)));
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn an_all_zero_hash_with_an_all_zero_payload_is_still_found() {
        let zero = KeyHash::from_bytes([0; 32]);
        let mut table = Table::with_capacity(1);
        assert_eq!(table.get(&zero), None);
        table.insert(&zero, &[0; PAYLOAD]).unwrap();
        assert_eq!(table.get(&zero), Some(&[0; PAYLOAD]));
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
            table.insert(h, &payload(i)).unwrap();
        }
        for (i, h) in (0..).zip(&crowded) {
            assert_eq!(table.get(h), Some(&payload(i)));
        }
        let mut absent = [0xff; 32];
        absent[31] = 99;
        assert_eq!(table.get(&KeyHash::from_bytes(absent)), None);
    }

    #[test]
    fn a_table_big_enough_for_huge_pages_works_the_same() {
        let count = 40_000u64;
        let mut table = Table::with_capacity(usize::try_from(count).unwrap());
        assert!(table.slot_bytes() >= HUGE_PAGE, "the test must cover the mapped table");
        for n in 0..count {
            table.insert(&hash(n), &payload(n)).unwrap();
        }
        for n in (0..count).step_by(97) {
            assert_eq!(table.get(&hash(n)), Some(&payload(n)));
        }
        assert_eq!(table.get(&hash(count + 1)), None);
        assert_eq!(table.iter().count(), 40_000);
    }

    proptest! {
        #[test]
        fn the_table_agrees_with_a_hash_map(present in prop::collection::hash_set(any::<u64>(), 0..300), absent in prop::collection::vec(any::<u64>(), 0..50)) {
            let mut table = Table::with_capacity(present.len());
            let mut map = HashMap::new();
            for n in &present {
                table.insert(&hash(*n), &payload(*n)).unwrap();
                map.insert(hash(*n), payload(*n));
            }
            prop_assert_eq!(table.len(), map.len());
            for n in present.iter().chain(&absent) {
                prop_assert_eq!(table.get(&hash(*n)), map.get(&hash(*n)));
            }
            prop_assert_eq!(table.iter().count(), present.len());
        }
    }
}
