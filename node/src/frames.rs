//! What the gateway does with each WebSocket frame, as a pure state machine (no I/O), so that
//! it can be tested and fuzzed on its own: reassembly of fragmented messages bounded by the
//! frame limit, the rules of RFC 6455 about what frames mean (masking, fragmented control
//! frames, continuations, close frames' codes and reasons), UTF-8 validation of whole text
//! messages, and close codes. [`crate::ws_read`] cuts the byte stream into the frames.

use bytes::{Bytes, BytesMut};
use rookery_protocol::close;

/// A frame's opcode, as far as the gateway cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

/// What to do after a frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing yet (a fragment, a pong).
    Wait,
    /// Answer a ping with this payload.
    Pong(Bytes),
    /// A whole text message, valid UTF-8, at most the limit.
    Text(Bytes),
    /// A whole binary message (refused by the protocol, but well-formed).
    Binary,
    /// Close the connection with this code; nothing more is read.
    Close(u16),
}

/// The per-connection state: a fragmented message being reassembled.
#[derive(Debug)]
pub struct Frames {
    max: usize,
    partial: Option<(Op, BytesMut)>,
}

impl Frames {
    /// `max`: the largest message, whole or reassembled, in bytes.
    pub fn new(max: usize) -> Self {
        Frames { max, partial: None }
    }

    /// Takes one frame (already unmasked). A whole message in one frame is passed on without
    /// a copy (it is decoded and dropped at once).
    pub fn push(&mut self, op: Op, fin: bool, masked: bool, payload: BytesMut) -> Step {
        let control = matches!(op, Op::Close | Op::Ping | Op::Pong);
        if !masked || (control && !fin) || (control && payload.len() > 125) {
            // RFC 6455 5.1 and 5.5: client frames are masked; control frames are short and
            // never fragmented.
            return Step::Close(close::PROTOCOL_ERROR);
        }
        let message = match (op, fin) {
            (Op::Close, _) => return Step::Close(close_answer(&payload)),
            // Copied (at most 125 bytes): a pong may wait in the queue, and a slice would keep
            // the whole read buffer it came in alive meanwhile.
            (Op::Ping, _) => return Step::Pong(Bytes::copy_from_slice(&payload)),
            (Op::Pong, _) => return Step::Wait,
            (Op::Text | Op::Binary, _) if self.partial.is_some() => return Step::Close(close::PROTOCOL_ERROR),
            (Op::Text | Op::Binary, _) if payload.len() > self.max => return Step::Close(close::TOO_BIG),
            (Op::Text | Op::Binary, true) => (op, payload.freeze()),
            (Op::Text | Op::Binary, false) => {
                self.partial = Some((op, payload));
                return Step::Wait;
            }
            (Op::Continuation, fin) => {
                let Some((_, buf)) = self.partial.as_mut() else {
                    return Step::Close(close::PROTOCOL_ERROR);
                };
                if buf.len() + payload.len() > self.max {
                    return Step::Close(close::TOO_BIG);
                }
                buf.extend_from_slice(&payload);
                if !fin {
                    return Step::Wait;
                }
                let (op, buf) = self.partial.take().expect("checked above");
                (op, buf.freeze())
            }
        };
        match message {
            (Op::Text, bytes) if std::str::from_utf8(&bytes).is_err() => Step::Close(close::INVALID_PAYLOAD),
            (Op::Text, bytes) => Step::Text(bytes),
            _ => Step::Binary,
        }
    }
}

/// The code to close with after the client's close frame (RFC 6455 section 5.5.1 and 7.4): its
/// own code echoed (1001 answered with 1000), or an error when the frame is malformed: one byte,
/// a code no endpoint may send, or a reason that is not UTF-8.
fn close_answer(payload: &[u8]) -> u16 {
    let (code, reason) = match payload {
        [] => return close::NORMAL,
        [_] => return close::PROTOCOL_ERROR,
        [hi, lo, reason @ ..] => (u16::from_be_bytes([*hi, *lo]), reason),
    };
    if std::str::from_utf8(reason).is_err() {
        return close::INVALID_PAYLOAD;
    }
    match code {
        close::GOING_AWAY => close::NORMAL,
        1000..=1003 | 1007..=1014 | 3000..=4999 => code,
        _ => close::PROTOCOL_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(payload: &[u8]) -> BytesMut {
        BytesMut::from(payload)
    }

    #[test]
    fn reassembles_within_the_limit_and_enforces_the_rules() {
        let mut f = Frames::new(10);
        assert_eq!(f.push(Op::Text, false, true, m(b"ab")), Step::Wait);
        assert_eq!(f.push(Op::Ping, true, true, m(b"p")), Step::Pong(Bytes::from_static(b"p")));
        assert_eq!(f.push(Op::Continuation, true, true, m(b"cd")), Step::Text(Bytes::from_static(b"abcd")));
        assert_eq!(f.push(Op::Text, false, true, m(b"123456")), Step::Wait);
        assert_eq!(f.push(Op::Continuation, true, true, m(b"789ab")), Step::Close(close::TOO_BIG));
        let mut f = Frames::new(10);
        assert_eq!(f.push(Op::Continuation, true, true, m(b"x")), Step::Close(close::PROTOCOL_ERROR));
        assert_eq!(Frames::new(10).push(Op::Text, true, false, m(b"x")), Step::Close(close::PROTOCOL_ERROR));
        assert_eq!(Frames::new(10).push(Op::Ping, false, true, m(b"x")), Step::Close(close::PROTOCOL_ERROR));
        assert_eq!(Frames::new(10).push(Op::Text, true, true, m(b"\xff")), Step::Close(close::INVALID_PAYLOAD));
        assert_eq!(Frames::new(10).push(Op::Close, true, true, m(&1001u16.to_be_bytes())), Step::Close(close::NORMAL));
        let mut f = Frames::new(10);
        f.push(Op::Text, false, true, m(b"a"));
        assert_eq!(f.push(Op::Text, true, true, m(b"b")), Step::Close(close::PROTOCOL_ERROR), "interleaved message");
        // A multi-byte character split over fragments is fine.
        let mut f = Frames::new(10);
        f.push(Op::Text, false, true, m(&"é".as_bytes()[..1]));
        assert_eq!(f.push(Op::Continuation, true, true, m(&"é".as_bytes()[1..])), Step::Text(Bytes::from("é")));
    }

    #[test]
    fn close_frames_are_answered_with_their_code_or_the_error_they_make() {
        let close = |payload: &[u8]| Frames::new(10).push(Op::Close, true, true, m(payload));
        assert_eq!(close(b""), Step::Close(close::NORMAL));
        assert_eq!(close(&1000u16.to_be_bytes()), Step::Close(close::NORMAL));
        assert_eq!(close(&4001u16.to_be_bytes()), Step::Close(4001));
        assert_eq!(close(&[0x03, 0xE8, b'o', b'k']), Step::Close(close::NORMAL), "a UTF-8 reason");
        assert_eq!(close(&[0x03]), Step::Close(close::PROTOCOL_ERROR), "one byte");
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            assert_eq!(close(&code.to_be_bytes()), Step::Close(close::PROTOCOL_ERROR), "code {code}");
        }
        assert_eq!(close(&[0x03, 0xE8, 0xFF]), Step::Close(close::INVALID_PAYLOAD), "a reason that is not UTF-8");
    }
}
