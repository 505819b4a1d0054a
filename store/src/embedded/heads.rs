//! What the writer thread knows of each conversation's committed head: its fence token and its
//! highest stored `seq`. With them an append checks its fence and that its `seq` is new without
//! reading the engine: before, each message cost two point reads on the writer thread (about
//! 7 % of the instructions of a direct message, docs/benchmarks.md).
//!
//! Only the writer thread writes messages and fences, so what it learns stays true until its
//! own next commit. A job notes what it wrote ([`Note`]); the notes of a batch are applied once
//! the batch is durable, dropped with a job that fails, and the whole table is forgotten when a
//! commit fails (the engine is then reopened from its journal).
//!
//! Bound: at most [`MAX_HEADS`] conversations. Past it the table is cleared and refills from
//! the engine as conversations write again; a miss costs the reads it replaces.

use foldhash::{HashMap, HashMapExt};

/// Most conversations whose head the writer remembers (about 100 bytes each).
pub(crate) const MAX_HEADS: usize = 16_384;

/// A write a job made that moves a conversation's head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Note {
    /// The conversation was claimed with this fence token.
    Fence(u64),
    /// A message with this `seq` was stored.
    Appended(u64),
}

/// Committed fence tokens and highest `seq`s, by conversation; each `None` until learned.
pub(crate) struct Heads {
    map: HashMap<Box<str>, Head>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Head {
    fence: Option<u64>,
    last_seq: Option<u64>,
}

impl Heads {
    pub(crate) fn new() -> Self {
        Heads { map: HashMap::new() }
    }

    /// The committed fence token of `conv` (0 when never claimed), if known.
    pub(crate) fn fence(&self, conv: &str) -> Option<u64> {
        self.map.get(conv).and_then(|h| h.fence)
    }

    /// The highest committed `seq` of `conv` (0 when it has no message), if known.
    pub(crate) fn last_seq(&self, conv: &str) -> Option<u64> {
        self.map.get(conv).and_then(|h| h.last_seq)
    }

    /// Remembers a fence token read from the engine.
    pub(crate) fn learn_fence(&mut self, conv: &str, token: u64) {
        self.entry(conv).fence = Some(token);
    }

    /// Remembers the highest `seq` read from the engine.
    pub(crate) fn learn_last_seq(&mut self, conv: &str, seq: u64) {
        self.entry(conv).last_seq = Some(seq);
    }

    /// Applies what a durable batch wrote. A conversation not in the table stays unknown: it is
    /// read from the engine when it is next needed.
    pub(crate) fn apply(&mut self, notes: impl IntoIterator<Item = (Box<str>, Note)>) {
        for (conv, note) in notes {
            let Some(head) = self.map.get_mut(&conv) else { continue };
            match note {
                Note::Fence(token) => head.fence = Some(token),
                Note::Appended(seq) => {
                    if let Some(last) = head.last_seq.as_mut() {
                        *last = (*last).max(seq);
                    }
                }
            }
        }
    }

    /// Forgets everything (after a failed commit).
    pub(crate) fn clear(&mut self) {
        self.map.clear();
    }

    fn entry(&mut self, conv: &str) -> &mut Head {
        if !self.map.contains_key(conv) && self.map.len() >= MAX_HEADS {
            self.map.clear();
        }
        self.map.entry(conv.into()).or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learned_heads_move_only_with_durable_notes() {
        let mut heads = Heads::new();
        assert_eq!(heads.last_seq("c"), None);
        heads.learn_last_seq("c", 4);
        heads.learn_fence("c", 2);
        heads.apply([("c".into(), Note::Appended(6)), ("c".into(), Note::Appended(5)), ("c".into(), Note::Fence(3))]);
        assert_eq!(heads.last_seq("c"), Some(6), "the highest appended seq wins, whatever the order");
        assert_eq!(heads.fence("c"), Some(3));
        heads.apply([("other".into(), Note::Appended(9))]);
        assert_eq!(heads.last_seq("other"), None, "a note does not make an unknown head known");
        heads.clear();
        assert_eq!(heads.fence("c"), None);
    }

    #[test]
    fn the_table_is_bounded() {
        let mut heads = Heads::new();
        for i in 0..MAX_HEADS + 10 {
            heads.learn_last_seq(&format!("c{i}"), 1);
        }
        assert!(heads.map.len() <= MAX_HEADS);
        assert_eq!(heads.last_seq(&format!("c{}", MAX_HEADS + 9)), Some(1), "the newest is kept");
    }
}
