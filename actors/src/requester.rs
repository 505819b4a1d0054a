//! Who asked a conversation actor for something, and how the answer reaches them: a WebSocket
//! session gets encoded events in its outbound queue; an HTTP request gets a typed [`Outcome`].

use std::sync::Arc;

use parking_lot::Mutex;
use rookery_protocol::{encode_event, ErrorCode, Message, ServerEvent};
use tokio::sync::oneshot;

use crate::outbound::SessionAddr;
use crate::Hub;

/// The answer to an HTTP request.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A send was stored (or was a duplicate of a stored one).
    Acked { id: String, seq: u64, ts: i64 },
    /// An edit or delete was stored; the message as it is now.
    Updated(Box<Message>),
    /// Refused or failed, with when to retry (ms) for `slow_mode` and `rate_limited`.
    Error(ErrorCode, String, Option<u64>),
}

/// Where the answer goes.
#[derive(Clone)]
pub enum ReplyTo {
    Session(SessionAddr),
    /// The first answer completes the request; later ones are dropped.
    Http(Arc<Mutex<Option<oneshot::Sender<Outcome>>>>),
    /// The node itself (a call-log message): answers go nowhere.
    Nobody,
    /// An HTTP request waiting on another node of the cluster under `req`.
    Remote {
        node: Arc<str>,
        req: u64,
    },
}

/// The user behind a request and where to answer.
#[derive(Clone)]
pub struct Requester {
    pub user_id: Arc<str>,
    pub reply: ReplyTo,
    /// An operator acting through the admin API: may delete any message of any conversation.
    pub moderator: bool,
}

impl Requester {
    /// A requester for a WebSocket session.
    pub fn session(addr: SessionAddr) -> Self {
        Requester { user_id: addr.user_id.clone(), reply: ReplyTo::Session(addr), moderator: false }
    }

    /// The node acting on behalf of `user_id`, expecting no answer.
    pub fn node(user_id: &str) -> Self {
        Requester { user_id: user_id.into(), reply: ReplyTo::Nobody, moderator: false }
    }

    /// The WebSocket session that made the request, if a session did (on any node).
    pub fn session_id(&self) -> Option<&Arc<str>> {
        match &self.reply {
            ReplyTo::Session(addr) => Some(&addr.session_id),
            _ => None,
        }
    }

    /// A requester for an HTTP request, and the receiver of its outcome.
    pub fn http(user_id: &str) -> (Self, oneshot::Receiver<Outcome>) {
        let (tx, rx) = oneshot::channel();
        let r = Requester {
            user_id: user_id.into(),
            reply: ReplyTo::Http(Arc::new(Mutex::new(Some(tx)))),
            moderator: false,
        };
        (r, rx)
    }

    /// Answers with an error.
    pub fn error(&self, hub: &Hub, code: ErrorCode, message: &str, client_id: Option<&str>) {
        self.error_retry(hub, code, message, client_id, None)
    }

    /// Answers with an error that says when to retry (`slow_mode`, `rate_limited`).
    pub fn error_retry(
        &self,
        hub: &Hub,
        code: ErrorCode,
        message: &str,
        client_id: Option<&str>,
        retry_after_ms: Option<u64>,
    ) {
        match &self.reply {
            ReplyTo::Session(addr) => {
                hub.metrics.ws_errors.with_label_values(&[code.as_str()]).inc();
                let frame = encode_event(&ServerEvent::Error { code, message, client_id, retry_after_ms });
                hub.push_to_session(addr, frame);
            }
            ReplyTo::Http(_) | ReplyTo::Remote { .. } => {
                self.done(hub, Outcome::Error(code, message.to_string(), retry_after_ms))
            }
            ReplyTo::Nobody => tracing::warn!(code = code.as_str(), message, "a message sent by the node was refused"),
        }
    }

    /// Answers a send with its ack.
    pub fn ack(&self, hub: &Hub, conv: &str, client_id: &str, id: &str, seq: u64, ts: i64) {
        match &self.reply {
            ReplyTo::Session(addr) => {
                hub.push_to_session(addr, encode_event(&ServerEvent::Ack { client_id, conv, id, seq, ts }));
            }
            ReplyTo::Http(_) | ReplyTo::Remote { .. } => self.done(hub, Outcome::Acked { id: id.to_string(), seq, ts }),
            ReplyTo::Nobody => {}
        }
    }

    /// Completes an HTTP request, on this node or another; a session needs no completion (it
    /// sees the events).
    pub fn done(&self, hub: &Hub, outcome: Outcome) {
        match &self.reply {
            ReplyTo::Remote { node, req } => {
                if let Some(c) = hub.cluster() {
                    c.reply(node, *req, outcome);
                }
            }
            _ => self.done_local(outcome),
        }
    }

    /// Completes an HTTP request waiting on this node.
    pub fn done_local(&self, outcome: Outcome) {
        if let ReplyTo::Http(slot) = &self.reply {
            if let Some(tx) = slot.lock().take() {
                let _ = tx.send(outcome);
            }
        }
    }
}
