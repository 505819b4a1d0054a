//! The WebSocket frame decoder: any bytes give a frame or a classified error, never a panic,
//! and an error always has a message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rookery_protocol::decode_client_frame;

fuzz_target!(|data: &[u8]| {
    match decode_client_frame(data) {
        Ok(frame) => {
            let _ = frame.op();
        }
        Err(e) => {
            assert!(!e.message().is_empty());
            let _ = e.client_id();
        }
    }
});
