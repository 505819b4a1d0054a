//! Client → server frames and their decoding.

use std::collections::HashMap;

use serde::Deserialize;

/// Every op the node understands. A frame whose `op` is not in this list gets an
/// `error {code: "bad_request"}` that says the op is unknown.
pub const KNOWN_OPS: &[&str] = &[
    "send",
    "edit",
    "delete",
    "read",
    "typing",
    "sync",
    "presence",
    "call.offer",
    "call.answer",
    "call.ice",
    "call.end",
    "ping",
];

/// One decoded client frame. Fields are those of contract section 3.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "op", deny_unknown_fields)]
pub enum ClientFrame {
    #[serde(rename = "send")]
    Send {
        conv: String,
        client_id: String,
        body: String,
        #[serde(default)]
        attachments: Vec<serde_json::Value>,
        /// Whether the sending session also gets the `msg` (default `true`). With `false` it
        /// learns of its message from the `ack` alone; the user's other sessions still get it.
        #[serde(default = "echo_by_default")]
        echo: bool,
    },
    #[serde(rename = "edit")]
    Edit { conv: String, id: String, body: String },
    #[serde(rename = "delete")]
    Delete { conv: String, id: String },
    #[serde(rename = "read")]
    Read { conv: String, seq: u64 },
    #[serde(rename = "typing")]
    Typing { conv: String, active: bool },
    #[serde(rename = "sync")]
    Sync {
        #[serde(default)]
        since: HashMap<String, u64>,
    },
    #[serde(rename = "presence")]
    Presence { users: Vec<String> },
    #[serde(rename = "call.offer")]
    CallOffer { to: String, call_id: String, sdp: Option<String> },
    #[serde(rename = "call.answer")]
    CallAnswer { to: String, call_id: String, sdp: Option<String> },
    #[serde(rename = "call.ice")]
    CallIce { to: String, call_id: String, candidate: Option<serde_json::Value> },
    #[serde(rename = "call.end")]
    CallEnd { to: String, call_id: String },
    #[serde(rename = "ping")]
    Ping {
        #[serde(default)]
        t: Option<serde_json::Value>,
    },
}

impl ClientFrame {
    /// The op name of this frame, as on the wire.
    pub fn op(&self) -> &'static str {
        match self {
            ClientFrame::Send { .. } => "send",
            ClientFrame::Edit { .. } => "edit",
            ClientFrame::Delete { .. } => "delete",
            ClientFrame::Read { .. } => "read",
            ClientFrame::Typing { .. } => "typing",
            ClientFrame::Sync { .. } => "sync",
            ClientFrame::Presence { .. } => "presence",
            ClientFrame::CallOffer { .. } => "call.offer",
            ClientFrame::CallAnswer { .. } => "call.answer",
            ClientFrame::CallIce { .. } => "call.ice",
            ClientFrame::CallEnd { .. } => "call.end",
            ClientFrame::Ping { .. } => "ping",
        }
    }
}

/// Why a text frame could not be decoded. Every variant maps to an `error` frame with code
/// `bad_request`; the connection stays open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Not JSON at all.
    Malformed(String),
    /// JSON, but not an object.
    NotAnObject,
    /// An object without a string `op`.
    MissingOp,
    /// An `op` the node does not know.
    UnknownOp(String),
    /// A known op with missing, extra or wrongly typed fields. `client_id` is echoed back when
    /// the frame carried one, so a client can match the error to its send.
    InvalidFields { op: String, reason: String, client_id: Option<String> },
}

impl DecodeError {
    /// A human-readable message for the `error` frame.
    pub fn message(&self) -> String {
        match self {
            DecodeError::Malformed(e) => format!("malformed JSON: {e}"),
            DecodeError::NotAnObject => "a frame must be a JSON object".to_string(),
            DecodeError::MissingOp => "a frame must have a string field \"op\"".to_string(),
            DecodeError::UnknownOp(op) => format!("unknown op {op:?}"),
            DecodeError::InvalidFields { op, reason, .. } => {
                format!("invalid {op:?} frame: {reason}")
            }
        }
    }

    /// The `client_id` of the offending frame, if it had one.
    pub fn client_id(&self) -> Option<&str> {
        match self {
            DecodeError::InvalidFields { client_id, .. } => client_id.as_deref(),
            _ => None,
        }
    }
}

/// A `send` frame, parsed straight into its fields. Most of what clients write is `send`, and
/// serde decodes an internally tagged enum ([`ClientFrame`]) by first copying the whole frame
/// into an intermediate tree, then decoding the variant from that: under callgrind, decoding
/// a `send` went from about 4,400 to 3,200 instructions (docs/benchmarks.md, 2026-12-02).
/// Same fields and rules as [`ClientFrame::Send`]. Other ops pay one failed attempt first (it
/// stops at `op` when `op` comes first).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendFrame {
    #[serde(rename = "op")]
    _op: SendOp,
    conv: String,
    client_id: String,
    body: String,
    #[serde(default)]
    attachments: Vec<serde_json::Value>,
    #[serde(default = "echo_by_default")]
    echo: bool,
}

/// A `send`'s `echo` when the frame leaves it out (also the cluster wire format's default).
pub fn echo_by_default() -> bool {
    true
}

#[derive(Deserialize)]
enum SendOp {
    #[serde(rename = "send")]
    Send,
}

/// Decodes one text frame. The fast path is a single typed parse (for `send`, straight into
/// its fields; any other frame, or a `send` it refuses, goes through the enum); only a frame
/// that fails it is parsed once more to say precisely what is wrong.
pub fn decode_client_frame(text: &[u8]) -> Result<ClientFrame, DecodeError> {
    if let Ok(SendFrame { _op: SendOp::Send, conv, client_id, body, attachments, echo }) = serde_json::from_slice(text)
    {
        return Ok(ClientFrame::Send { conv, client_id, body, attachments, echo });
    }
    match serde_json::from_slice::<ClientFrame>(text) {
        Ok(frame) => Ok(frame),
        Err(typed_err) => Err(classify(text, typed_err)),
    }
}

fn classify(text: &[u8], typed_err: serde_json::Error) -> DecodeError {
    let value: serde_json::Value = match serde_json::from_slice(text) {
        Ok(v) => v,
        Err(e) => return DecodeError::Malformed(e.to_string()),
    };
    let Some(obj) = value.as_object() else {
        return DecodeError::NotAnObject;
    };
    let Some(op) = obj.get("op").and_then(|v| v.as_str()) else {
        return DecodeError::MissingOp;
    };
    if !KNOWN_OPS.contains(&op) {
        return DecodeError::UnknownOp(truncate(op, 64));
    }
    DecodeError::InvalidFields {
        op: op.to_string(),
        reason: typed_err.to_string(),
        client_id: obj.get("client_id").and_then(|v| v.as_str()).map(|s| truncate(s, 128)),
    }
}

/// Echoed strings are cut so that an error frame never grows with client input.
fn truncate(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_send() {
        let f = decode_client_frame(br#"{"op":"send","conv":"c","client_id":"k","body":"hi"}"#).unwrap();
        assert_eq!(
            f,
            ClientFrame::Send {
                conv: "c".into(),
                client_id: "k".into(),
                body: "hi".into(),
                attachments: vec![],
                echo: true
            }
        );
        assert_eq!(f.op(), "send");
        let f = decode_client_frame(br#"{"op":"send","conv":"c","client_id":"k","body":"hi","echo":false}"#).unwrap();
        assert!(matches!(f, ClientFrame::Send { echo: false, .. }));
    }

    #[test]
    fn the_send_fast_path_agrees_with_the_enum() {
        let frames: &[&[u8]] = &[
            br#"{"op":"send","conv":"c","client_id":"k","body":"hi"}"#,
            br#"{"body":"hi","client_id":"k","conv":"c","op":"send"}"#,
            br#"{"op":"send","conv":"c","client_id":"k","body":"hi","attachments":[{"id":"a"}]}"#,
            br#"{"op":"send","conv":"c","client_id":"k","body":"hi","extra":1}"#,
            br#"{"op":"send","conv":"c","client_id":"k"}"#,
            br#"{"op":"send","op":"send","conv":"c","client_id":"k","body":"hi"}"#,
            br#"{"op":"send","conv":"c","conv":"d","client_id":"k","body":"hi"}"#,
            br#"{"op":"send","conv":"c","client_id":"k","body":"hi","attachments":null}"#,
            br#"{"op":"ping","conv":"c","client_id":"k","body":"hi"}"#,
            br#"{"op":"send","conv":"c","client_id":"k","body":"hi","echo":false}"#,
            br#"{"op":"send","conv":"c","client_id":"k","body":"hi","echo":"no"}"#,
        ];
        for f in frames {
            let enum_path = serde_json::from_slice::<ClientFrame>(f).map_err(|e| classify(f, e));
            assert_eq!(decode_client_frame(f), enum_path, "{}", String::from_utf8_lossy(f));
        }
    }

    #[test]
    fn decodes_sync_with_and_without_since() {
        assert_eq!(decode_client_frame(br#"{"op":"sync"}"#).unwrap(), ClientFrame::Sync { since: HashMap::new() });
        let f = decode_client_frame(br#"{"op":"sync","since":{"a":3}}"#).unwrap();
        assert_eq!(f, ClientFrame::Sync { since: HashMap::from([("a".to_string(), 3)]) });
    }

    #[test]
    fn classifies_errors() {
        assert!(matches!(decode_client_frame(b"{nope"), Err(DecodeError::Malformed(_))));
        assert_eq!(decode_client_frame(b"[1,2]"), Err(DecodeError::NotAnObject));
        assert_eq!(decode_client_frame(br#"{"conv":"x"}"#), Err(DecodeError::MissingOp));
        assert_eq!(decode_client_frame(br#"{"op":7}"#), Err(DecodeError::MissingOp));
        assert_eq!(decode_client_frame(br#"{"op":"dance"}"#), Err(DecodeError::UnknownOp("dance".into())));
        let e = decode_client_frame(br#"{"op":"send","conv":"c","client_id":"k","body":5}"#).unwrap_err();
        assert_eq!(e.client_id(), Some("k"));
        assert!(e.message().contains("invalid \"send\" frame"), "{}", e.message());
        let e = decode_client_frame(br#"{"op":"read","conv":"c","seq":-1}"#).unwrap_err();
        assert!(matches!(e, DecodeError::InvalidFields { .. }));
    }

    #[test]
    fn every_known_op_decodes_from_a_minimal_frame() {
        let frames: &[&[u8]] = &[
            br#"{"op":"send","conv":"c","client_id":"k","body":"b"}"#,
            br#"{"op":"edit","conv":"c","id":"i","body":"b"}"#,
            br#"{"op":"delete","conv":"c","id":"i"}"#,
            br#"{"op":"read","conv":"c","seq":1}"#,
            br#"{"op":"typing","conv":"c","active":true}"#,
            br#"{"op":"sync"}"#,
            br#"{"op":"presence","users":["u"]}"#,
            br#"{"op":"call.offer","to":"u","call_id":"x","sdp":"s"}"#,
            br#"{"op":"call.answer","to":"u","call_id":"x","sdp":"s"}"#,
            br#"{"op":"call.ice","to":"u","call_id":"x","candidate":{}}"#,
            br#"{"op":"call.end","to":"u","call_id":"x"}"#,
            br#"{"op":"ping"}"#,
        ];
        assert_eq!(frames.len(), KNOWN_OPS.len());
        for (f, op) in frames.iter().zip(KNOWN_OPS) {
            assert_eq!(decode_client_frame(f).unwrap().op(), *op);
        }
    }
}
