//! The `client_id`s a conversation actor has forgotten, as a Bloom filter.
//!
//! A conversation actor remembers its recent `client_id`s exactly (a bounded window) and, while
//! it has seen every message of its conversation, knows that any other `client_id` is new
//! without reading the store's dedupe index. Without this filter, the first `client_id` that
//! left the window ended that knowledge, and from then on every `send` of a busy conversation
//! read the index: at 14 sends per connection in groups of 10, 5 % of the node's CPU
//! (docs/benchmarks.md, 2026-12-04). The filter records the forgotten ones instead: a
//! `client_id` it has never seen is new; one it may have seen is looked up in the store as
//! before. A false positive costs one store read, never a wrong answer.
//!
//! Size: [`BITS`] bits (8 KiB), allocated at the first eviction, so only a conversation that
//! sent more than its window during this actor's life has one. It takes [`CAPACITY`] keys
//! (false positives about 1 % when full); [`Forgotten::insert`] refuses more, and the actor then
//! goes back to reading the store for every new `client_id`.

use std::hash::{BuildHasher, Hash};

use foldhash::quality::RandomState;

/// Bits in the filter: 2^16, so each of the four probes is 16 bits of one 64-bit hash.
pub const BITS: usize = 1 << 16;
/// Keys the filter takes: about 10.7 bits per key, about 1 % false positives with 4 probes.
pub const CAPACITY: usize = 6_144;
const WORDS: usize = BITS / 64;

/// A Bloom filter of forgotten keys (module documentation).
pub struct Forgotten {
    bits: Box<[u64; WORDS]>,
    keys: usize,
    hasher: RandomState,
}

impl Forgotten {
    pub fn new() -> Self {
        Forgotten { bits: Box::new([0; WORDS]), keys: 0, hasher: RandomState::default() }
    }

    /// Records `key`. `false` when the filter is full: `key` is not recorded, and the filter
    /// can no longer say that a key is new.
    pub fn insert<K: Hash + ?Sized>(&mut self, key: &K) -> bool {
        if self.keys >= CAPACITY {
            return false;
        }
        for bit in self.probes(key) {
            self.bits[bit / 64] |= 1 << (bit % 64);
        }
        self.keys += 1;
        true
    }

    /// Whether `key` may have been inserted. `false` is certain; `true` may be a false positive.
    pub fn may_contain<K: Hash + ?Sized>(&self, key: &K) -> bool {
        self.probes(key).into_iter().all(|bit| self.bits[bit / 64] & (1 << (bit % 64)) != 0)
    }

    fn probes<K: Hash + ?Sized>(&self, key: &K) -> [usize; 4] {
        let h = self.hasher.hash_one(key);
        [h as u16, (h >> 16) as u16, (h >> 32) as u16, (h >> 48) as u16].map(usize::from)
    }
}

impl Default for Forgotten {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_inserted_key_is_found_up_to_capacity_then_inserts_are_refused() {
        let mut f = Forgotten::new();
        for i in 0..CAPACITY {
            assert!(f.insert(&("alice", format!("c-{i}"))), "key {i} fits");
        }
        for i in 0..CAPACITY {
            assert!(f.may_contain(&("alice", format!("c-{i}"))), "key {i} is never a false negative");
        }
        assert!(!f.insert(&("alice", "one too many")), "a full filter refuses");
    }

    #[test]
    fn a_full_filter_has_about_one_percent_false_positives() {
        let mut f = Forgotten::new();
        for i in 0..CAPACITY {
            f.insert(&("alice", format!("c-{i}")));
        }
        let tries = 100_000;
        let hits = (0..tries).filter(|i| f.may_contain(&("alice", format!("other-{i}")))).count();
        let rate = hits as f64 / tries as f64;
        assert!(rate < 0.02, "false positive rate {rate}");
    }

    #[test]
    fn an_empty_filter_contains_nothing() {
        let f = Forgotten::new();
        assert!((0..1000).all(|i| !f.may_contain(&("bob", i))));
    }
}
