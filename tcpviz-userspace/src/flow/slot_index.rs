//! A partition's index: slot numbers by their key's hash.
//!
//! Open addressing with linear probing, at most half full, one `u64` per entry: a 32-bit
//! digest of the hash and the slot number. Written for the flow table rather than taken
//! from a general hash table for two reasons:
//! - a lookup's bucket can be computed, and prefetched, packets before the lookup
//!   ([`SlotIndex::prefetch`]): on a capture of many short connections nearly every lookup
//!   missed the cache, and that miss was the largest single cost per packet;
//! - the digest decides the bucket, so growing needs no keys, and a slot's key (in the
//!   slab, another cache line) is read only when all 32 bits of the digest match.

/// Entries at first; the index doubles when it would be more than half full.
const INITIAL_ENTRIES: usize = 64;

pub struct SlotIndex {
    /// 0: empty; else the digest in the high half and the slot number plus one in the low.
    entries: Box<[u64]>,
    /// `entries.len() - 1` (a power of two less one).
    mask: usize,
    /// Bits of the digest that pick the bucket (its top ones): log2 of `entries.len()`.
    bits: u32,
    len: usize,
}

/// The 32-bit digest of a key's hash: a different mix from the one that picks the
/// partition (`table::partition_of`), so the keys of one partition spread over its buckets.
#[inline]
fn digest(hash: u64) -> u32 {
    let h = (hash ^ (hash >> 29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h >> 32) as u32
}

#[inline]
fn entry(digest: u32, slot: u32) -> u64 {
    (digest as u64) << 32 | (slot as u64 + 1)
}

#[inline]
fn entry_slot(e: u64) -> u32 {
    (e as u32).wrapping_sub(1)
}

#[inline]
fn entry_digest(e: u64) -> u32 {
    (e >> 32) as u32
}

impl Default for SlotIndex {
    fn default() -> Self {
        SlotIndex::new()
    }
}

impl SlotIndex {
    pub fn new() -> SlotIndex {
        SlotIndex::with_entries(INITIAL_ENTRIES)
    }

    fn with_entries(n: usize) -> SlotIndex {
        debug_assert!(n.is_power_of_two() && n >= 2);
        SlotIndex { entries: vec![0u64; n].into_boxed_slice(), mask: n - 1, bits: n.trailing_zeros(), len: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    fn home(&self, digest: u32) -> usize {
        // The top bits: `bits` is at least 1, so the shift is below 32.
        (digest >> (32 - self.bits)) as usize
    }

    /// Asks for the bucket of `hash` to be brought into the cache, for a lookup soon.
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        let at = self.home(digest(hash));
        crate::flow::prefetch::prefetch_line(&self.entries[at]);
    }

    /// The slot of `hash` whose key `is_key` accepts.
    #[inline]
    pub fn find(&self, hash: u64, mut is_key: impl FnMut(u32) -> bool) -> Option<u32> {
        let d = digest(hash);
        let mut at = self.home(d);
        loop {
            let e = self.entries[at];
            if e == 0 {
                return None;
            }
            if entry_digest(e) == d && is_key(entry_slot(e)) {
                return Some(entry_slot(e));
            }
            at = (at + 1) & self.mask;
        }
    }

    /// Adds `slot` under `hash` (its key must not be in the index already).
    #[inline]
    pub fn insert(&mut self, hash: u64, slot: u32) {
        if (self.len + 1) * 2 > self.entries.len() {
            self.grow();
        }
        self.place(entry(digest(hash), slot));
        self.len += 1;
    }

    fn place(&mut self, e: u64) {
        let mut at = self.home(entry_digest(e));
        while self.entries[at] != 0 {
            at = (at + 1) & self.mask;
        }
        self.entries[at] = e;
    }

    #[cold]
    fn grow(&mut self) {
        let bigger = SlotIndex::with_entries(self.entries.len() * 2);
        let old = std::mem::replace(self, bigger);
        for &e in old.entries.iter().filter(|&&e| e != 0) {
            self.place(e);
        }
        self.len = old.len;
    }

    /// Removes `slot`, indexed under `hash`. Returns whether it was there.
    pub fn remove(&mut self, hash: u64, slot: u32) -> bool {
        let wanted = entry(digest(hash), slot);
        let mut at = self.home(digest(hash));
        loop {
            match self.entries[at] {
                0 => return false,
                e if e == wanted => break,
                _ => at = (at + 1) & self.mask,
            }
        }
        // Backward shift: each entry after the hole that may sit there (its home is not
        // between the hole and it) moves in, so that no probe meets an empty bucket before
        // its entry.
        let mut hole = at;
        let mut next = (hole + 1) & self.mask;
        while self.entries[next] != 0 {
            let home = self.home(entry_digest(self.entries[next]));
            // Distances going forward, wrapping: the entry may fill the hole when its home
            // is no further from the hole than from itself the other way.
            let from_home_to_next = next.wrapping_sub(home) & self.mask;
            let from_hole_to_next = next.wrapping_sub(hole) & self.mask;
            if from_home_to_next >= from_hole_to_next {
                self.entries[hole] = self.entries[next];
                hole = next;
            }
            next = (next + 1) & self.mask;
        }
        self.entries[hole] = 0;
        self.len -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// A small generator, so the test is the same on every run.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 11
        }
    }

    #[test]
    fn agrees_with_a_map_through_inserts_removals_and_growth() {
        // Keys are hashes; a few share their digest's top bits or all of it, to make long
        // probe runs, wrap-around and false digest matches.
        let mut rng = Lcg(7);
        let mut index = SlotIndex::new();
        let mut model: HashMap<u64, u32> = HashMap::new();
        // Each slot's key (its hash here): what the table compares on a digest match.
        let mut slot_keys: Vec<u64> = Vec::new();
        let colliding = |r: u64| if r.is_multiple_of(5) { r % 4 } else { r };
        for step in 0..60_000 {
            let hash = colliding(rng.next() % 20_000);
            let found = index.find(hash, |s| slot_keys[s as usize] == hash);
            assert_eq!(found, model.get(&hash).copied(), "step {step}");
            if rng.next().is_multiple_of(3) {
                if let Some(slot) = model.remove(&hash) {
                    assert!(index.remove(hash, slot));
                    assert!(!index.remove(hash, slot), "removed twice");
                }
            } else if found.is_none() {
                let slot = slot_keys.len() as u32;
                slot_keys.push(hash);
                index.insert(hash, slot);
                model.insert(hash, slot);
            }
            assert_eq!(index.len(), model.len());
        }
        assert!(index.entries.len() >= 2 * index.len());
        for (&hash, &slot) in &model {
            assert_eq!(index.find(hash, |s| s == slot), Some(slot));
        }
    }

    #[test]
    fn a_removal_keeps_the_entries_that_wrapped_past_the_end_reachable() {
        let mut index = SlotIndex::with_entries(8);
        // Hashes whose digests all have the last bucket as their home: found by search.
        let last: Vec<u64> = (0u64..).filter(|&h| index.home(digest(h)) == 7).take(3).collect();
        for (slot, &h) in last.iter().enumerate() {
            index.insert(h, slot as u32);
        }
        // They sit in buckets 7, 0 and 1.
        assert!(index.remove(last[0], 0));
        assert_eq!(index.find(last[1], |s| s == 1), Some(1));
        assert_eq!(index.find(last[2], |s| s == 2), Some(2));
        assert_eq!(index.entries.iter().filter(|&&e| e != 0).count(), 2);
    }
}
