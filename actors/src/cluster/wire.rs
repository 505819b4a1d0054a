//! What nodes say to each other: [`Envelope`]s, sent in [`Batch`]es.
//!
//! JSON on the wire, so an operator can read cross-node traffic with `redis-cli subscribe`.
//! Client frames travel as raw JSON inside the envelope (never re-escaped), since every frame is
//! already a JSON object encoded once by its producer.

use std::sync::Arc;

use rookery_protocol::ErrorCode;
use rookery_store::Sanction;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::requester::Outcome;

/// One unit of cross-node traffic. Externally tagged (`{"deliver": {...}}`): raw frames cannot
/// be read back from an internally tagged enum, which serde buffers.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Envelope {
    /// A request for a conversation's actor, sent to the node that owns the conversation.
    /// `hops` counts forwards (a node whose view differs forwards once more, then refuses).
    Conv { conv: Arc<str>, msg: WireConvMsg, hops: u8 },
    /// Frames for every session of these users on the receiving node (fan-out, presence,
    /// typing, receipts, call signalling). `except` names one session that must not get it.
    Deliver {
        users: Arc<[Arc<str>]>,
        frame: Box<RawValue>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        except: Option<Arc<str>>,
    },
    /// A frame for one session (an ack or error to the session that asked).
    Session { session: Arc<str>, frame: Box<RawValue> },
    /// The answer to an HTTP request forwarded with [`WireReply::Http`].
    Reply { req: u64, outcome: WireOutcome },
    /// A ban was set (`Some`) or lifted (`None`): update the cache, close the user's sessions.
    Ban { user: Arc<str>, ban: Option<Sanction> },
    /// Close every session of the user with `code` (kick).
    Close { user: Arc<str>, code: u16 },
    /// A call-signalling step for the call's home node, from a session elsewhere.
    Call { from: WireSession, op: crate::calls::CallOp },
    /// The sender could not send everything it had for other nodes (Redis was unreachable or its
    /// queue full): receivers may have missed frames and resync their sessions.
    Lost,
}

/// A conversation request that can cross nodes (the rest of `ConvMsg` is node-local).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum WireConvMsg {
    Send {
        from: WireRequester,
        client_id: String,
        body: String,
        attachments: Vec<serde_json::Value>,
        /// Absent in frames from nodes that predate it: they always echoed.
        #[serde(default = "rookery_protocol::echo_by_default")]
        echo: bool,
    },
    Edit {
        from: WireRequester,
        id: String,
        body: String,
    },
    Delete {
        from: WireRequester,
        id: String,
    },
    Read {
        from: WireRequester,
        seq: u64,
    },
    Typing {
        from: WireRequester,
        active: bool,
    },
    /// Membership, title, mutes or slow mode changed: reload them if the actor runs.
    Reload,
}

/// Who asked, and where the answer goes.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireRequester {
    pub user: Arc<str>,
    #[serde(default)]
    pub moderator: bool,
    pub reply: WireReply,
}

/// Where the answer to a forwarded request goes.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "to", rename_all = "snake_case")]
pub enum WireReply {
    /// A WebSocket session on `node`.
    Session {
        node: Arc<str>,
        session: Arc<str>,
    },
    /// An HTTP request waiting on `node` under `req`.
    Http {
        node: Arc<str>,
        req: u64,
    },
    Nobody,
}

/// A session anywhere in the cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireSession {
    pub node: Arc<str>,
    pub session: Arc<str>,
    pub user: Arc<str>,
}

/// [`Outcome`] on the wire.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WireOutcome {
    Acked {
        id: String,
        seq: u64,
        ts: i64,
    },
    Updated {
        message: Box<rookery_protocol::Message>,
    },
    Error {
        code: ErrorCode,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
}

impl From<Outcome> for WireOutcome {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Acked { id, seq, ts } => WireOutcome::Acked { id, seq, ts },
            Outcome::Updated(message) => WireOutcome::Updated { message },
            Outcome::Error(code, message, retry_after_ms) => WireOutcome::Error { code, message, retry_after_ms },
        }
    }
}

impl From<WireOutcome> for Outcome {
    fn from(o: WireOutcome) -> Self {
        match o {
            WireOutcome::Acked { id, seq, ts } => Outcome::Acked { id, seq, ts },
            WireOutcome::Updated { message } => Outcome::Updated(message),
            WireOutcome::Error { code, message, retry_after_ms } => Outcome::Error(code, message, retry_after_ms),
        }
    }
}

/// Envelopes published together to one channel. `epoch` identifies the sending process and
/// `n` counts its batches on that channel, so a receiver notices lost batches (a gap in `n`).
#[derive(Debug, Serialize, Deserialize)]
pub struct Batch {
    pub from: Arc<str>,
    pub epoch: u64,
    pub n: u64,
    /// Published on the broadcast channel (counted apart from the sender's direct batches).
    #[serde(default)]
    pub all: bool,
    pub envs: Vec<Envelope>,
}

/// A frame as raw JSON. Frames are produced by `encode_event`, which always writes valid JSON;
/// anything else is a bug, reported rather than sent.
pub fn raw_frame(frame: &[u8]) -> Option<Box<RawValue>> {
    let text = std::str::from_utf8(frame).ok()?;
    RawValue::from_string(text.to_owned()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_with_frames_unescaped() {
        let frame = br#"{"ev":"msg","msg":{"body":"hi \"there\""}}"#;
        let env =
            Envelope::Deliver { users: vec![Arc::from("u1")].into(), frame: raw_frame(frame).unwrap(), except: None };
        let batch = Batch { from: "a".into(), epoch: 7, n: 1, all: true, envs: vec![env] };
        let text = serde_json::to_string(&batch).unwrap();
        assert!(text.contains(r#""frame":{"ev":"msg""#), "the frame is embedded as JSON, not as a string: {text}");
        let back: Batch = serde_json::from_str(&text).unwrap();
        match &back.envs[0] {
            Envelope::Deliver { users, frame: f, .. } => {
                assert_eq!(&*users[0], "u1");
                assert_eq!(f.get().as_bytes(), frame);
            }
            other => panic!("{other:?}"),
        }
        assert!(raw_frame(b"not json").is_none());
    }

    #[test]
    fn a_send_from_a_node_without_echo_echoes() {
        let old = r#"{"op":"send","from":{"user":"u1","reply":{"to":"nobody"}},"client_id":"k","body":"hi","attachments":[]}"#;
        match serde_json::from_str::<WireConvMsg>(old).unwrap() {
            WireConvMsg::Send { echo, .. } => assert!(echo),
            other => panic!("{other:?}"),
        }
    }
}
