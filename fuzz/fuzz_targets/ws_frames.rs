//! The gateway's frame rules over any sequence of frames: no panic, no message over the limit,
//! every text message valid UTF-8, nothing after a close.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rookery_node::frames::{Frames, Op, Step};

const MAX: usize = 256;

fuzz_target!(|data: &[u8]| {
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
        match frames.push(op, head & 0x80 != 0, head & 0x40 == 0, payload) {
            Step::Text(bytes) => {
                assert!(bytes.len() <= MAX, "a message over the limit got through");
                assert!(std::str::from_utf8(&bytes).is_ok(), "invalid UTF-8 got through");
                let _ = rookery_protocol::decode_client_frame(&bytes);
            }
            Step::Pong(p) => assert!(p.len() <= 125),
            Step::Close(_) => return,
            Step::Wait | Step::Binary => {}
        }
    }
});
