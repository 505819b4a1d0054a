//! Rendezvous (highest random weight) hashing: which live node owns a conversation.
//!
//! Every node scores `(node, conversation)` with the same fixed hash and the highest score wins,
//! so nodes with the same view agree without talking, and a change of view moves only the
//! conversations of the node that left (or the share the new node takes), about `1/n` of them.
//! The hash is written out here (FNV-1a, then the SplitMix64 finaliser) rather than taken from
//! `std`, whose hasher may change between Rust releases and would split a mixed-version cluster.

/// The owner of `key` among `nodes`; `None` only when `nodes` is empty.
pub fn owner<'a, S: AsRef<str>>(nodes: &'a [S], key: &str) -> Option<&'a S> {
    nodes.iter().max_by_key(|n| (score(n.as_ref(), key), n.as_ref().to_owned()))
}

/// The weight of `node` for `key`.
pub fn score(node: &str, key: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.bytes().chain(std::iter::once(0xff)).chain(key.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // SplitMix64 finaliser: FNV alone spreads similar keys poorly in the high bits.
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Vec<String> {
        (0..3000).map(|i| format!("conv-{i:05}")).collect()
    }

    #[test]
    fn stable_and_spread_evenly() {
        let nodes = ["a", "b", "c"];
        let mut counts = [0usize; 3];
        for k in keys() {
            let o = owner(&nodes, &k).unwrap();
            assert_eq!(owner(&nodes, &k), Some(o), "the same view gives the same owner");
            counts[nodes.iter().position(|n| n == o).unwrap()] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "uneven spread: {counts:?}");
        }
        // Order of the view does not matter.
        let shuffled = ["c", "a", "b"];
        for k in keys() {
            assert_eq!(owner(&nodes, &k), owner(&shuffled, &k));
        }
        assert_eq!(owner::<&str>(&[], "x"), None);
    }

    #[test]
    fn a_leaving_node_moves_only_its_own_keys() {
        let before = ["a", "b", "c"];
        let after = ["a", "c"];
        for k in keys() {
            let was = *owner(&before, &k).unwrap();
            let now = *owner(&after, &k).unwrap();
            if was != "b" {
                assert_eq!(was, now, "{k} moved although its owner stayed");
            }
        }
        // And a joining node takes keys only for itself.
        let joined = ["a", "b", "c", "d"];
        for k in keys() {
            let now = *owner(&joined, &k).unwrap();
            if now != "d" {
                assert_eq!(now, *owner(&before, &k).unwrap());
            }
        }
    }

    #[test]
    fn the_hash_is_fixed() {
        // Nodes of different builds must agree: pin the function's output.
        assert_eq!(score("node-1", "conv"), 0xc895_1a2c_cf80_86fc);
        assert_ne!(score("node-1", "conv"), score("node-2", "conv"));
        assert_ne!(score("ab", "c"), score("a", "bc"), "the separator keeps node and key apart");
    }
}
