//! What the gateway does with each WebSocket frame, as a pure state machine (no I/O), so that
//! it can be tested and fuzzed on its own: reassembly of fragmented messages bounded by the
//! frame limit, the rules of RFC 6455 the library leaves to us (masking, fragmented control
//! frames, continuations), UTF-8 validation of whole text messages, and close codes.

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

    /// Takes one frame (already unmasked by the library).
    pub fn push(&mut self, op: Op, fin: bool, masked: bool, payload: &[u8]) -> Step {
        let control = matches!(op, Op::Close | Op::Ping | Op::Pong);
        if !masked || (control && !fin) || (control && payload.len() > 125) {
            // RFC 6455 5.1 and 5.5: client frames are masked; control frames are short and
            // never fragmented.
            return Step::Close(close::PROTOCOL_ERROR);
        }
        let message = match (op, fin) {
            (Op::Close, _) => {
                let code =
                    if payload.len() >= 2 { u16::from_be_bytes([payload[0], payload[1]]) } else { close::NORMAL };
                return Step::Close(if code == close::GOING_AWAY { close::NORMAL } else { code });
            }
            (Op::Ping, _) => return Step::Pong(Bytes::copy_from_slice(payload)),
            (Op::Pong, _) => return Step::Wait,
            (Op::Text | Op::Binary, _) if self.partial.is_some() => return Step::Close(close::PROTOCOL_ERROR),
            (Op::Text | Op::Binary, _) if payload.len() > self.max => return Step::Close(close::TOO_BIG),
            (Op::Text | Op::Binary, true) => (op, Bytes::copy_from_slice(payload)),
            (Op::Text | Op::Binary, false) => {
                self.partial = Some((op, BytesMut::from(payload)));
                return Step::Wait;
            }
            (Op::Continuation, fin) => {
                let Some((_, buf)) = self.partial.as_mut() else {
                    return Step::Close(close::PROTOCOL_ERROR);
                };
                if buf.len() + payload.len() > self.max {
                    return Step::Close(close::TOO_BIG);
                }
                buf.extend_from_slice(payload);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reassembles_within_the_limit_and_enforces_the_rules() {
        let mut f = Frames::new(10);
        assert_eq!(f.push(Op::Text, false, true, b"ab"), Step::Wait);
        assert_eq!(f.push(Op::Ping, true, true, b"p"), Step::Pong(Bytes::from_static(b"p")));
        assert_eq!(f.push(Op::Continuation, true, true, b"cd"), Step::Text(Bytes::from_static(b"abcd")));
        assert_eq!(f.push(Op::Text, false, true, b"123456"), Step::Wait);
        assert_eq!(f.push(Op::Continuation, true, true, b"789ab"), Step::Close(close::TOO_BIG));
        let mut f = Frames::new(10);
        assert_eq!(f.push(Op::Continuation, true, true, b"x"), Step::Close(close::PROTOCOL_ERROR));
        assert_eq!(Frames::new(10).push(Op::Text, true, false, b"x"), Step::Close(close::PROTOCOL_ERROR));
        assert_eq!(Frames::new(10).push(Op::Ping, false, true, b"x"), Step::Close(close::PROTOCOL_ERROR));
        assert_eq!(Frames::new(10).push(Op::Text, true, true, b"\xff"), Step::Close(close::INVALID_PAYLOAD));
        assert_eq!(Frames::new(10).push(Op::Close, true, true, &1001u16.to_be_bytes()), Step::Close(close::NORMAL));
        let mut f = Frames::new(10);
        f.push(Op::Text, false, true, b"a");
        assert_eq!(f.push(Op::Text, true, true, b"b"), Step::Close(close::PROTOCOL_ERROR), "interleaved message");
        // A multi-byte character split over fragments is fine.
        let mut f = Frames::new(10);
        f.push(Op::Text, false, true, &"é".as_bytes()[..1]);
        assert_eq!(f.push(Op::Continuation, true, true, &"é".as_bytes()[1..]), Step::Text(Bytes::from("é")));
    }
}
