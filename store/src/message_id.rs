//! Message ids that carry their message's `seq`.
//!
//! A message id is `<unique part>-<seq>`: a unique string (the node uses a UUIDv7 in simple
//! form, 32 hex digits) and the message's `seq` in decimal, e.g.
//! `0190f3a1c2b37d4e8a9b0c1d2e3f4a5b-1042`. Clients treat ids as opaque strings (at most 53
//! bytes this way, within the 64 of an id).
//!
//! A store can then find a message by id from its key, `(conv, seq)`, and check the id it
//! holds there, instead of keeping an index from id to `seq`: the embedded backend writes no
//! `message_ids` entry for a message whose id carries its own `seq`, one memtable insert of
//! three per message fewer. Ids of any other shape (older messages, the conformance suite's)
//! are still indexed and found through the index.

/// The id of message `seq`, from a part that is unique on its own.
pub fn with_seq(unique: &str, seq: u64) -> String {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(seq);
    let mut id = String::with_capacity(unique.len() + 1 + digits.len());
    id.push_str(unique);
    id.push('-');
    id.push_str(digits);
    id
}

/// The `seq` an id carries, when it is of [`with_seq`]'s shape: a non-empty part, `-`, then a
/// `seq` written as [`with_seq`] writes it (decimal digits, no sign, no leading zero). Only a
/// hint: the message stored at that `seq` must still be checked to have this id.
pub fn seq_of(id: &str) -> Option<u64> {
    let (unique, digits) = id.rsplit_once('-')?;
    // `parse` alone would take a `+` sign; an empty or too long run of digits it refuses itself.
    if unique.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_gives_back_the_seq_it_was_made_with() {
        for seq in [1, 9, 10, 1042, u64::from(u32::MAX), u64::MAX] {
            let id = with_seq("0190f3a1c2b37d4e8a9b0c1d2e3f4a5b", seq);
            assert_eq!(id, format!("0190f3a1c2b37d4e8a9b0c1d2e3f4a5b-{seq}"));
            assert_eq!(seq_of(&id), Some(seq), "{id}");
        }
        // The unique part may hold dashes of its own: the seq is after the last one.
        assert_eq!(seq_of("a-b-7"), Some(7));
    }

    #[test]
    fn ids_of_other_shapes_carry_no_seq() {
        for id in [
            "0190f3a1c2b37d4e8a9b0c1d2e3f4a5b", // no dash
            "-5",                               // no unique part
            "abc-",                             // no digits
            "abc-07",                           // a leading zero: not how a seq is written
            "abc-0",                            // seq 0 is never a message's
            "abc-+7",                           // a sign
            "abc-7x",
            "abc-1 ",
            "abc-99999999999999999999", // past u64
            "abc-123456789012345678901",
            "c1-m7", // the conformance suite's ids
        ] {
            assert_eq!(seq_of(id), None, "{id}");
        }
    }
}
