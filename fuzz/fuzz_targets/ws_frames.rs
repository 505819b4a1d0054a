//! The gateway's read path over any input: the wire parser cuts bytes into frames (no panic, no
//! frame over the limit), and the frame rules over any sequence of frames (no panic, no message
//! over the limit, every text message valid UTF-8, nothing after a close). The input is read
//! twice: as raw wire bytes, and as a compact list of frames that reaches deeper into the rules.
#![no_main]

use libfuzzer_sys::fuzz_target;
use bytes::BytesMut;
use rookery_node::frames::{Frames, Op, Step};
use rookery_node::ws_read::frames_of;

const MAX: usize = 256;

/// Checks one step's outcome; `false` once the connection closes.
fn check(step: Step) -> bool {
    match step {
        Step::Text(bytes) => {
            assert!(bytes.len() <= MAX, "a message over the limit got through");
            assert!(std::str::from_utf8(&bytes).is_ok(), "invalid UTF-8 got through");
            let _ = rookery_protocol::decode_client_frame(&bytes);
        }
        Step::Pong(p) => assert!(p.len() <= 125),
        Step::Close(_) => return false,
        Step::Wait | Step::Binary => {}
    }
    true
}

fuzz_target!(|data: &[u8]| {
    let (wire, _) = frames_of(data, MAX);
    let mut frames = Frames::new(MAX);
    for f in wire {
        assert!(f.payload.len() <= MAX, "a frame over the limit was cut");
        if !check(frames.push(f.op, f.fin, f.masked, f.payload)) {
            break;
        }
    }

    let mut frames = Frames::new(MAX);
    let mut rest = data;
    // Each frame: a header byte (opcode in the low 3 bits, fin, masked), a length byte, payload.
    while rest.len() >= 2 {
        let (head, len) = (rest[0], rest[1] as usize);
        rest = &rest[2..];
        let len = len.min(rest.len());
        let (payload, tail) = rest.split_at(len);
        rest = tail;
        let op = match head & 0x07 {
            0 => Op::Continuation,
            1 => Op::Text,
            2 => Op::Binary,
            3 => Op::Close,
            4 => Op::Ping,
            _ => Op::Pong,
        };
        if !check(frames.push(op, head & 0x80 != 0, head & 0x40 == 0, BytesMut::from(payload))) {
            return;
        }
    }
});
