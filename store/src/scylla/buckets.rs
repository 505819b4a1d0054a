//! History buckets: which partition holds a message.
//!
//! A conversation's history is split into partitions of [`BUCKET_SIZE`] consecutive `seq`s:
//! `bucket = seq / BUCKET_SIZE`. Discord buckets by wall-clock time; Rookery buckets by `seq`,
//! which is the conversation's own clock (dense, monotonic, assigned by one writer). That keeps
//! every partition at most `BUCKET_SIZE` messages (about 4 MB at 1 KB each) whatever the traffic,
//! so neither a busy conversation's partition grows without bound nor does a quiet one's history
//! scatter over thousands of near-empty time buckets that a reader must probe; and every query
//! the node makes (after a `seq`, before a `seq`, the latest) maps to buckets by arithmetic.

/// Messages per partition.
pub const BUCKET_SIZE: u64 = 4096;

/// The bucket of `seq`.
pub fn of(seq: u64) -> i64 {
    (seq / BUCKET_SIZE) as i64
}

/// The buckets a forward read from `first_seq` visits, up to and including the bucket of
/// `last_seq`, in order.
pub fn forward(first_seq: u64, last_seq: u64) -> impl Iterator<Item = i64> {
    of(first_seq)..=of(last_seq.max(first_seq))
}

/// The buckets a backward read from `last_seq` visits, down to bucket 0.
pub fn backward(last_seq: u64) -> impl Iterator<Item = i64> {
    (0..=of(last_seq)).rev()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic() {
        assert_eq!(of(0), 0);
        assert_eq!(of(1), 0);
        assert_eq!(of(BUCKET_SIZE - 1), 0);
        assert_eq!(of(BUCKET_SIZE), 1);
        assert_eq!(of(3 * BUCKET_SIZE + 5), 3);
        assert_eq!(forward(1, 1).collect::<Vec<_>>(), vec![0]);
        assert_eq!(forward(BUCKET_SIZE - 1, 2 * BUCKET_SIZE).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(forward(10, 5).collect::<Vec<_>>(), vec![0], "an empty range still has its start bucket");
        assert_eq!(backward(2 * BUCKET_SIZE).collect::<Vec<_>>(), vec![2, 1, 0]);
        assert_eq!(of(u64::MAX), (u64::MAX / BUCKET_SIZE) as i64, "no overflow into negative buckets");
    }
}
