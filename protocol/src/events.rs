//! Server → client events and their encoding.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Serialize;

use crate::{Conversation, ErrorCode, Message};

/// Limits announced in `hello`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Limits {
    /// Largest message body accepted by `send`, in bytes of UTF-8.
    pub max_body: usize,
    /// Largest WebSocket message accepted, in bytes; larger ones close the connection with 1009.
    pub max_frame: usize,
    /// Most messages one `sync` returns per conversation before `has_more` is set.
    pub sync_batch: usize,
}

/// One server event. Borrowed fields let a fan-out encode straight from the stored message.
#[derive(Debug, Serialize)]
#[serde(tag = "op")]
pub enum ServerEvent<'a> {
    #[serde(rename = "hello")]
    Hello { user_id: &'a str, session_id: &'a str, node_id: &'a str, heartbeat_ms: u64, limits: Limits },
    #[serde(rename = "ack")]
    Ack { client_id: &'a str, conv: &'a str, id: &'a str, seq: u64, ts: i64 },
    #[serde(rename = "msg")]
    Msg(&'a Message),
    #[serde(rename = "edited")]
    Edited { conv: &'a str, id: &'a str, seq: u64, body: &'a str, edited_at: i64 },
    #[serde(rename = "deleted")]
    Deleted { conv: &'a str, id: &'a str, seq: u64 },
    #[serde(rename = "receipt")]
    Receipt {
        conv: &'a str,
        user_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        delivered_seq: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        read_seq: Option<u64>,
    },
    #[serde(rename = "typing")]
    Typing { conv: &'a str, user_id: &'a str, active: bool },
    #[serde(rename = "presence")]
    Presence {
        user_id: &'a str,
        status: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        last_seen: Option<i64>,
    },
    #[serde(rename = "conv")]
    Conv { conversation: &'a Conversation },
    #[serde(rename = "call.offer")]
    CallOffer {
        from: &'a str,
        call_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        sdp: Option<&'a str>,
    },
    #[serde(rename = "call.answer")]
    CallAnswer {
        from: &'a str,
        call_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        sdp: Option<&'a str>,
    },
    #[serde(rename = "call.ice")]
    CallIce {
        from: &'a str,
        call_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        candidate: Option<&'a serde_json::Value>,
    },
    #[serde(rename = "call.end")]
    CallEnd {
        from: &'a str,
        call_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'a str>,
    },

    #[serde(rename = "synced")]
    Synced { convs: &'a BTreeMap<String, u64>, has_more: &'a BTreeMap<String, bool> },
    #[serde(rename = "pong")]
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        t: Option<&'a serde_json::Value>,
    },
    #[serde(rename = "error")]
    Error {
        code: ErrorCode,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        client_id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
}

/// Encodes an event once into shared bytes; a fan-out clones the `Bytes` (a reference count),
/// never the JSON.
pub fn encode_event(event: &ServerEvent<'_>) -> Bytes {
    // Room for a typical event up front: growing from empty reallocates five or six times.
    let body = match event {
        ServerEvent::Msg(m) => m.body.len(),
        _ => 0,
    };
    let mut out = Vec::with_capacity(ENCODE_START + body);
    match event {
        // The two events of every message are written by hand (see `message_path`); the bytes
        // are serde's, which the tests check.
        ServerEvent::Ack { client_id, conv, id, seq, ts } => {
            message_path::ack(&mut out, client_id, conv, id, *seq, *ts);
        }
        ServerEvent::Msg(m) => {
            out.extend_from_slice(MSG_OPEN);
            message_path::message_fields(&mut out, m);
        }
        // Serialising these types cannot fail: every map key is a string and no value is a float.
        _ => serde_json::to_writer(&mut out, event).expect("server events always serialise"),
    }
    Bytes::from(out)
}

/// A message as JSON (its fields, as in the `msg` event and in history pages), encoded once:
/// the embedded store keeps these bytes as its record, and [`msg_event`] makes the event from
/// them without serializing the message a second time.
pub fn encode_message(m: &Message) -> Bytes {
    let mut out = Vec::with_capacity(ENCODE_START + m.body.len());
    out.push(b'{');
    message_path::message_fields(&mut out, m);
    Bytes::from(out)
}

/// How a `msg` event starts; the message's own fields follow.
const MSG_OPEN: &[u8] = br#"{"op":"msg","#;

/// JSON written by hand for the events every message makes (its `msg`, stored and fanned out,
/// and the sender's `ack`): through serde's derived serializers they were 8 % of a message's
/// instructions, most of it the serializer's per-field machinery rather than the bytes. The
/// output is byte for byte what serde writes for the same values (field order, omitted fields,
/// escapes), which the tests below compare over awkward strings.
mod message_path {
    use crate::Message;

    /// `"id":…,…}`: a message's fields in declaration order and the closing brace; the caller
    /// writes the opening (`{` for the record, `{"op":"msg",` for the event).
    pub(super) fn message_fields(out: &mut Vec<u8>, m: &Message) {
        out.extend_from_slice(br#""id":"#);
        string(out, &m.id);
        out.extend_from_slice(br#","conv":"#);
        string(out, &m.conv);
        out.extend_from_slice(br#","seq":"#);
        integer(out, m.seq);
        out.extend_from_slice(br#","sender":"#);
        string(out, &m.sender);
        out.extend_from_slice(br#","ts":"#);
        integer(out, m.ts);
        out.extend_from_slice(br#","body":"#);
        string(out, &m.body);
        out.extend_from_slice(br#","attachments":"#);
        if m.attachments.is_empty() {
            out.extend_from_slice(b"[]");
        } else {
            serde_json::to_writer(&mut *out, &m.attachments).expect("JSON values always serialise");
        }
        if let Some(client_id) = &m.client_id {
            out.extend_from_slice(br#","client_id":"#);
            string(out, client_id);
        }
        if let Some(edited_at) = m.edited_at {
            out.extend_from_slice(br#","edited_at":"#);
            integer(out, edited_at);
        }
        if m.deleted {
            out.extend_from_slice(br#","deleted":true"#);
        }
        out.push(b'}');
    }

    /// `{"op":"ack",…}`, the fields of `ServerEvent::Ack` in declaration order.
    pub(super) fn ack(out: &mut Vec<u8>, client_id: &str, conv: &str, id: &str, seq: u64, ts: i64) {
        out.extend_from_slice(br#"{"op":"ack","client_id":"#);
        string(out, client_id);
        out.extend_from_slice(br#","conv":"#);
        string(out, conv);
        out.extend_from_slice(br#","id":"#);
        string(out, id);
        out.extend_from_slice(br#","seq":"#);
        integer(out, seq);
        out.extend_from_slice(br#","ts":"#);
        integer(out, ts);
        out.push(b'}');
    }

    /// `n` as a JSON number (serde_json writes integers with `itoa` too).
    fn integer(out: &mut Vec<u8>, n: impl itoa::Integer) {
        out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }

    /// `s` as a JSON string. serde_json escapes `"`, `\` and the control characters below
    /// 0x20 and nothing else; a string without them is copied as it is, any other is left to
    /// serde_json itself.
    fn string(out: &mut Vec<u8>, s: &str) {
        if plain(s.as_bytes()) {
            out.reserve(s.len() + 2);
            out.push(b'"');
            out.extend_from_slice(s.as_bytes());
            out.push(b'"');
        } else {
            serde_json::to_writer(&mut *out, s).expect("strings always serialise");
        }
    }

    /// Whether serde_json writes `bytes` between quotes unchanged: no `"`, `\` or byte below
    /// 0x20. Eight bytes at a time: a byte-by-byte check was 4 % of a message's instructions.
    pub(super) fn plain(bytes: &[u8]) -> bool {
        const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
        const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
        // Whether any byte of `v` is below `n` (n <= 0x80): a byte borrows through the
        // subtraction and keeps its top bit only where it was below `n`. Exact as a whole;
        // only which byte is flagged can be wrong, past the first one that is.
        let below = |v: u64, n: u8| v.wrapping_sub(ONES * u64::from(n)) & !v & HIGHS != 0;
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let v = u64::from_ne_bytes(chunk.try_into().expect("8 bytes"));
            // A byte equal to `c` is the one that becomes 0 (below 1) once XORed with `c`.
            if below(v, 0x20) || below(v ^ (ONES * u64::from(b'"')), 1) || below(v ^ (ONES * u64::from(b'\\')), 1) {
                return false;
            }
        }
        chunks.remainder().iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\')
    }
}

/// The `msg` event of a message encoded by [`encode_message`]: the same bytes as
/// `encode_event(&ServerEvent::Msg(m))` (the event is the message's fields after its `op`).
pub fn msg_event(message_json: &[u8]) -> Bytes {
    debug_assert!(message_json.len() > 2 && message_json[0] == b'{', "a message encodes as a non-empty object");
    let mut out = Vec::with_capacity(MSG_OPEN.len() + message_json.len() - 1);
    out.extend_from_slice(MSG_OPEN);
    out.extend_from_slice(&message_json[1..]);
    Bytes::from(out)
}

/// The `seq` of a message encoded by [`encode_message`], read without decoding the rest of it
/// into owned fields (its strings are skipped, not copied). `None` when the bytes are not a
/// message's JSON object with an unsigned `seq`.
pub fn message_seq(message_json: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Seq {
        seq: u64,
    }
    serde_json::from_slice::<Seq>(message_json).ok().map(|m| m.seq)
}

/// Bytes reserved for an encoded event before its body (a `msg` with three ids, an ack).
const ENCODE_START: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_flat_objects() {
        let m = Message {
            id: "m1".into(),
            conv: "c".into(),
            seq: 3,
            sender: "u".into(),
            ts: 1,
            body: "hi".into(),
            attachments: vec![],
            client_id: Some("k".into()),
            edited_at: None,
            deleted: false,
        };
        let v: serde_json::Value = serde_json::from_slice(&encode_event(&ServerEvent::Msg(&m))).unwrap();
        assert_eq!(v["op"], "msg");
        assert_eq!(v["seq"], 3);
        assert_eq!(v["body"], "hi");
        assert!(v.get("deleted").is_none());

        let e = encode_event(&ServerEvent::Error {
            code: ErrorCode::SlowMode,
            message: "wait",
            client_id: None,
            retry_after_ms: Some(500),
        });
        let v: serde_json::Value = serde_json::from_slice(&e).unwrap();
        assert_eq!(v, serde_json::json!({"op":"error","code":"slow_mode","message":"wait","retry_after_ms":500}));
    }

    #[test]
    fn a_msg_event_made_from_the_encoded_message_is_the_encoded_event() {
        let plain = Message {
            id: "m1".into(),
            conv: "c".into(),
            seq: 3,
            sender: "u".into(),
            ts: 1,
            body: "hi \"there\" \u{1F600}\n".into(),
            attachments: vec![],
            client_id: None,
            edited_at: None,
            deleted: false,
        };
        let full = Message {
            attachments: vec![serde_json::json!({"id": "a1", "name": "x.png"})],
            client_id: Some("k".into()),
            edited_at: Some(5),
            deleted: true,
            ..plain.clone()
        };
        for m in [plain, full] {
            assert_eq!(msg_event(&encode_message(&m)), encode_event(&ServerEvent::Msg(&m)));
            assert_eq!(message_seq(&encode_message(&m)), Some(m.seq));
            let back: Message = serde_json::from_slice(&encode_message(&m)).unwrap();
            assert_eq!(back, m);
        }
    }

    #[test]
    fn message_seq_reads_the_seq_and_refuses_what_is_not_a_message() {
        assert_eq!(message_seq(br#"{"id":"m","seq":18446744073709551615,"body":"x\"seq\":1"}"#), Some(u64::MAX));
        for bad in [&b""[..], b"{", b"[]", b"{}", br#"{"seq":-1}"#, br#"{"seq":"3"}"#, br#"{"seq":1.5}"#, b"\xff"] {
            assert_eq!(message_seq(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    /// Strings that serde_json escapes, or that look as if it might: quotes, backslashes,
    /// every control character, DEL, slashes, non-ASCII (2-, 3- and 4-byte UTF-8), empty.
    fn awkward_strings() -> Vec<String> {
        let mut v: Vec<String> =
            ["", "plain", "a\"b", "back\\slash", "/slash/", "\u{7f}del", "é", "日本", "\u{1F600}", "</script>"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        v.extend((0u8..0x20).map(|c| format!("x{}y", c as char)));
        v.push((0u8..0x80).map(|c| c as char).collect());
        v
    }

    #[test]
    fn the_eight_byte_check_finds_every_byte_serde_escapes_wherever_it_is() {
        let naive = |b: &[u8]| b.iter().all(|&c| c >= 0x20 && c != b'"' && c != b'\\');
        let fillers = [b'a', b' ', 0x7F, 0x80, 0xC3, 0xFF, b'!', b'#', b'[', b']', 0x21, 0x5D];
        for len in 0..=24 {
            for &fill in &fillers {
                let mut buf = vec![fill; len];
                assert_eq!(message_path::plain(&buf), naive(&buf), "{buf:?}");
                for at in 0..len {
                    for special in (0u8..=0xFF).filter(|&c| c < 0x24 || c == b'\\' || c >= 0x7E) {
                        buf[at] = special;
                        assert_eq!(message_path::plain(&buf), naive(&buf), "{buf:?}");
                    }
                    buf[at] = fill;
                }
            }
        }
    }

    #[test]
    fn the_message_path_writes_exactly_what_serde_writes() {
        let strings = awkward_strings();
        for (i, s) in strings.iter().enumerate() {
            let other = &strings[(i + 7) % strings.len()];
            let base = Message {
                id: s.clone(),
                conv: other.clone(),
                seq: i as u64 * 1_000_003,
                sender: s.clone(),
                ts: [0, -1, i64::MIN, i64::MAX, 1_700_000_000_000][i % 5],
                body: format!("{s}{other}"),
                attachments: vec![],
                client_id: None,
                edited_at: None,
                deleted: false,
            };
            let variants = [
                base.clone(),
                Message { client_id: Some(other.clone()), ..base.clone() },
                Message { edited_at: Some(-5), deleted: true, ..base.clone() },
                Message {
                    attachments: vec![serde_json::json!({"id": s, "name": other, "size": 3})],
                    client_id: Some(s.clone()),
                    edited_at: Some(i64::MAX),
                    seq: u64::MAX,
                    ..base.clone()
                },
            ];
            for m in &variants {
                assert_eq!(&encode_message(m)[..], &serde_json::to_vec(m).unwrap()[..], "message {m:?}");
                let event = ServerEvent::Msg(m);
                assert_eq!(&encode_event(&event)[..], &serde_json::to_vec(&event).unwrap()[..], "msg event {m:?}");
            }
            let ack = ServerEvent::Ack { client_id: s, conv: other, id: s, seq: u64::MAX - i as u64, ts: base.ts };
            assert_eq!(&encode_event(&ack)[..], &serde_json::to_vec(&ack).unwrap()[..], "ack {ack:?}");
        }
    }
}
