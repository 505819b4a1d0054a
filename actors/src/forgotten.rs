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
//!
//! Hand-over ([`Handovers`]): an actor that retires knowing every `client_id` of its
//! conversation leaves them (its window added to its filter) for the next actor of that
//! conversation on this node, which takes them only if nobody else claimed the conversation in
//! between (its claim's fence token is the retired actor's plus one). Otherwise an actor that
//! starts on a conversation with messages reads the store for every new `client_id`.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

use foldhash::quality::RandomState;
use foldhash::{HashMap, HashMapExt};
use parking_lot::Mutex;

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

/// Retired actors' filters kept for their successors: at most this many conversations (8 MiB).
/// Overflow policy: the oldest is dropped (its successor reads the store, as without one).
pub const HANDOVERS: usize = 1024;

/// Filters left by retired conversation actors, by conversation (module documentation).
pub struct Handovers {
    inner: Mutex<HandoverMap>,
}

struct HandoverMap {
    /// The retired actor's fence token and its filter, and the number of the `put`.
    filters: HashMap<Arc<str>, (u64, Box<Forgotten>, u64)>,
    /// Each `put`'s conversation and number, oldest first, for dropping the oldest. An entry
    /// taken or put again since is not dropped by its earlier `put`'s turn.
    order: VecDeque<(Arc<str>, u64)>,
    puts: u64,
}

impl Handovers {
    pub fn new() -> Self {
        Handovers { inner: Mutex::new(HandoverMap { filters: HashMap::new(), order: VecDeque::new(), puts: 0 }) }
    }

    /// Leaves `filter`, complete for `conv` up to the writes made with fence token `fence`.
    pub fn put(&self, conv: Arc<str>, fence: u64, filter: Box<Forgotten>) {
        let mut m = self.inner.lock();
        m.puts += 1;
        let put = m.puts;
        m.filters.insert(conv.clone(), (fence, filter, put));
        m.order.push_back((conv, put));
        while m.order.len() > HANDOVERS {
            if let Some((old, its_put)) = m.order.pop_front() {
                if m.filters.get(&old).is_some_and(|e| e.2 == its_put) {
                    m.filters.remove(&old);
                }
            }
        }
    }

    /// Takes what was left for `conv`; the filter only if `claimed` (the new actor's fence
    /// token) directly follows the one it was left with, so that no other actor wrote between.
    pub fn take(&self, conv: &str, claimed: u64) -> Option<Box<Forgotten>> {
        let (fence, filter, _) = self.inner.lock().filters.remove(conv)?;
        (fence.checked_add(1) == Some(claimed)).then_some(filter)
    }

    /// Conversations with a filter left.
    pub fn len(&self) -> usize {
        self.inner.lock().filters.len()
    }

    /// Whether no filter is left.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for Handovers {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_is_handed_over_only_to_the_next_claimant() {
        let h = Handovers::new();
        let mut f = Forgotten::new();
        f.insert(&("alice", "c-1"));
        h.put("conv".into(), 7, Box::new(f));
        assert!(h.take("other", 8).is_none());
        let taken = h.take("conv", 8).expect("token 8 follows 7");
        assert!(taken.may_contain(&("alice", "c-1")));
        assert!(h.take("conv", 8).is_none(), "taken once");
        h.put("conv".into(), 7, Box::new(Forgotten::new()));
        assert!(h.take("conv", 9).is_none(), "someone claimed token 8 between");
        assert!(h.is_empty(), "a refused filter is dropped too");
    }

    #[test]
    fn the_oldest_filters_are_dropped_past_the_bound() {
        let h = Handovers::new();
        for i in 0..HANDOVERS + 10 {
            h.put(format!("c{i}").into(), 1, Box::new(Forgotten::new()));
        }
        assert_eq!(h.len(), HANDOVERS);
        assert!(h.take("c0", 2).is_none());
        assert!(h.take(&format!("c{}", HANDOVERS + 9), 2).is_some());
        // Put and taken again and again, one conversation keeps the order bounded.
        for _ in 0..3 * HANDOVERS {
            h.put("busy".into(), 1, Box::new(Forgotten::new()));
            assert!(h.take("busy", 2).is_some());
        }
        assert!(h.inner.lock().order.len() <= HANDOVERS);
    }

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
