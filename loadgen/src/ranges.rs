//! Sets of message numbers kept as runs of consecutive numbers, so `--verify` over an hour costs
//! a few bytes per gap rather than a hash-set entry per delivery (a sender numbers its messages
//! 0, 1, 2, … and they are acked and delivered almost in order: a set holds a handful of runs).

use std::collections::{BTreeMap, HashMap};

/// A set of `u64` as disjoint, non-adjacent runs `start..end`.
#[derive(Debug, Default, Clone)]
pub struct RangeSet {
    /// Run start → run end (exclusive).
    runs: BTreeMap<u64, u64>,
    len: u64,
}

impl RangeSet {
    /// Adds `k`; false when it was already there.
    pub fn insert(&mut self, k: u64) -> bool {
        let mut start = k;
        if let Some((&s, &e)) = self.runs.range(..=k).next_back() {
            if e > k {
                return false;
            }
            if e == k {
                start = s; // extends the run on the left
            }
        }
        let end = self.runs.remove(&(k + 1)).unwrap_or(k + 1); // joins the run on the right
        self.runs.insert(start, end);
        self.len += 1;
        true
    }

    pub fn contains(&self, k: u64) -> bool {
        self.runs.range(..=k).next_back().is_some_and(|(_, &e)| e > k)
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    /// Every member, in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.runs.iter().flat_map(|(&s, &e)| s..e)
    }
}

impl FromIterator<u64> for RangeSet {
    fn from_iter<I: IntoIterator<Item = u64>>(iter: I) -> Self {
        let mut set = RangeSet::default();
        for k in iter {
            set.insert(k);
        }
        set
    }
}

/// A set of messages named by (sender connection, message number): a [`RangeSet`] per sender.
#[derive(Debug, Default, Clone)]
pub struct MessageSet {
    by_sender: HashMap<u32, RangeSet>,
    len: u64,
}

impl MessageSet {
    /// Adds a message; false when it was already there.
    pub fn insert(&mut self, (sender, k): (u32, u64)) -> bool {
        let added = self.by_sender.entry(sender).or_default().insert(k);
        self.len += u64::from(added);
        added
    }

    pub fn contains(&self, &(sender, k): &(u32, u64)) -> bool {
        self.by_sender.get(&sender).is_some_and(|s| s.contains(k))
    }

    pub fn len(&self) -> u64 {
        self.len
    }
}

impl FromIterator<(u32, u64)> for MessageSet {
    fn from_iter<I: IntoIterator<Item = (u32, u64)>>(iter: I) -> Self {
        let mut set = MessageSet::default();
        for m in iter {
            set.insert(m);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_merge_and_membership_matches_a_plain_set() {
        // A fixed pseudo-random order over 0..2000 with gaps, checked against BTreeSet.
        let mut plain = std::collections::BTreeSet::new();
        let mut set = RangeSet::default();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..5000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let k = x % 2000;
            if k % 7 == 3 {
                continue; // never inserted: gaps stay gaps
            }
            assert_eq!(set.insert(k), plain.insert(k), "insert {k}");
        }
        assert_eq!(set.len(), plain.len() as u64);
        for k in 0..2100 {
            assert_eq!(set.contains(k), plain.contains(&k), "contains {k}");
        }
        assert!(set.iter().eq(plain.iter().copied()));
        // Runs are disjoint and never adjacent.
        let runs: Vec<(u64, u64)> = set.runs.iter().map(|(&s, &e)| (s, e)).collect();
        assert!(runs.windows(2).all(|w| w[0].1 < w[1].0), "{runs:?}");
    }

    #[test]
    fn in_order_numbers_are_one_run() {
        let set: RangeSet = (0..100_000).collect();
        assert_eq!((set.len(), set.runs.len()), (100_000, 1));
        let mut set = set;
        assert!(!set.insert(99_999));
        assert!(set.insert(100_001));
        assert!(set.insert(100_000));
        assert_eq!(set.runs.len(), 1);
    }

    #[test]
    fn message_sets_keep_senders_apart() {
        let mut m = MessageSet::default();
        assert!(m.insert((1, 5)));
        assert!(!m.insert((1, 5)));
        assert!(m.insert((2, 5)));
        assert!(m.contains(&(2, 5)) && !m.contains(&(3, 5)) && !m.contains(&(1, 4)));
        assert_eq!(m.len(), 2);
    }
}
