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
    // Serialising these types cannot fail: every map key is a string and no value is a float.
    serde_json::to_writer(&mut out, event).expect("server events always serialise");
    Bytes::from(out)
}

/// A message as JSON (its fields, as in the `msg` event and in history pages), encoded once:
/// the embedded store keeps these bytes as its record, and [`msg_event`] makes the event from
/// them without serializing the message a second time.
pub fn encode_message(m: &Message) -> Bytes {
    let mut out = Vec::with_capacity(ENCODE_START + m.body.len());
    serde_json::to_writer(&mut out, m).expect("messages always serialise");
    Bytes::from(out)
}

/// The `msg` event of a message encoded by [`encode_message`]: the same bytes as
/// `encode_event(&ServerEvent::Msg(m))` (the event is the message's fields after its `op`).
pub fn msg_event(message_json: &[u8]) -> Bytes {
    const OPEN: &[u8] = br#"{"op":"msg","#;
    debug_assert!(message_json.len() > 2 && message_json[0] == b'{', "a message encodes as a non-empty object");
    let mut out = Vec::with_capacity(OPEN.len() + message_json.len() - 1);
    out.extend_from_slice(OPEN);
    out.extend_from_slice(&message_json[1..]);
    Bytes::from(out)
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
            let back: Message = serde_json::from_slice(&encode_message(&m)).unwrap();
            assert_eq!(back, m);
        }
    }
}
