//! Call signalling state: which calls are ringing or running, between whom, answered where.
//!
//! Signalling only: SDP offers/answers and ICE candidates are relayed between the two users'
//! sessions; media never touches the node. Every session of the callee rings; the first
//! `call.answer` wins and the callee's other sessions get `call.end` with reason
//! `answered_elsewhere`. When a call ends, a call-log message is stored in the pair's direct
//! conversation.
//!
//! Bounds: at most `MAX_CALLS_PER_USER` calls a user has placed at once (more get `conflict`),
//! and a call that is never answered nor ended is forgotten after `RING_TIMEOUT`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use rookery_protocol::{encode_event, is_valid_id, ErrorCode, ServerEvent};

use crate::conversation::ConvMsg;
use crate::outbound::SessionAddr;
use crate::requester::Requester;
use crate::Hub;

/// Calls one user may have placed at once.
pub const MAX_CALLS_PER_USER: usize = 8;
/// An unanswered call is forgotten after this long.
pub const RING_TIMEOUT: Duration = Duration::from_secs(120);
/// An answered call nobody ended is forgotten after this long.
pub const MAX_CALL: Duration = Duration::from_secs(12 * 3600);

/// One call.
#[derive(Debug, Clone)]
pub struct Call {
    pub caller: Arc<str>,
    pub callee: Arc<str>,
    pub offered_at: Instant,
    /// The callee's session that answered, and when.
    pub answered: Option<(Arc<str>, Instant)>,
}

/// Why a signalling step was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("a call with this call_id exists already")]
    Exists,
    #[error("too many calls placed at once")]
    TooMany,
    #[error("no such call")]
    Unknown,
    #[error("the call was answered already")]
    AlreadyAnswered,
}

/// Calls in progress on this node.
#[derive(Default)]
pub struct Calls {
    map: DashMap<String, Call>,
}

impl Calls {
    /// Registers a new ringing call.
    pub fn offer(&self, call_id: &str, caller: &Arc<str>, callee: &Arc<str>, now: Instant) -> Result<(), CallError> {
        // Forget calls nobody answered within the ring timeout, and answered calls nobody ended
        // within `MAX_CALL` (a client that crashed mid-call never sends `call.end`).
        self.map.retain(|_, c| match c.answered {
            None => now.saturating_duration_since(c.offered_at) < RING_TIMEOUT,
            Some((_, at)) => now.saturating_duration_since(at) < MAX_CALL,
        });
        if self.map.iter().filter(|c| c.caller == *caller).count() >= MAX_CALLS_PER_USER {
            return Err(CallError::TooMany);
        }
        match self.map.entry(call_id.to_string()) {
            dashmap::Entry::Occupied(_) => Err(CallError::Exists),
            dashmap::Entry::Vacant(v) => {
                v.insert(Call { caller: caller.clone(), callee: callee.clone(), offered_at: now, answered: None });
                Ok(())
            }
        }
    }

    /// The callee's session `session` answers the call `caller` placed; the first answer wins.
    pub fn answer(
        &self,
        call_id: &str,
        caller: &str,
        callee: &str,
        session: &Arc<str>,
        now: Instant,
    ) -> Result<Call, CallError> {
        let mut call = self.map.get_mut(call_id).ok_or(CallError::Unknown)?;
        if *call.callee != *callee || *call.caller != *caller {
            return Err(CallError::Unknown);
        }
        if call.answered.is_some() {
            return Err(CallError::AlreadyAnswered);
        }
        call.answered = Some((session.clone(), now));
        Ok(call.clone())
    }

    /// The call, if `user` is one of its parties.
    pub fn party(&self, call_id: &str, user: &str) -> Option<Call> {
        self.map.get(call_id).filter(|c| *c.caller == *user || *c.callee == *user).map(|c| c.clone())
    }

    /// Ends the call (either party); returns it.
    pub fn end(&self, call_id: &str, user: &str) -> Option<Call> {
        self.map.remove_if(call_id, |_, c| *c.caller == *user || *c.callee == *user).map(|(_, c)| c)
    }
}

/// One call-signalling step from a session, as it travels to the call's home node.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum CallOp {
    Offer { to: String, call_id: String, sdp: Option<String> },
    Answer { to: String, call_id: String, sdp: Option<String> },
    Ice { to: String, call_id: String, candidate: Option<serde_json::Value> },
    End { to: String, call_id: String },
}

impl CallOp {
    /// The call this step belongs to (its home node is chosen by it).
    pub fn call_id(&self) -> &str {
        match self {
            CallOp::Offer { call_id, .. }
            | CallOp::Answer { call_id, .. }
            | CallOp::Ice { call_id, .. }
            | CallOp::End { call_id, .. } => call_id,
        }
    }
}

/// Runs a signalling step of session `from` against this node's call table. In a cluster this
/// runs on the call's home node (by rendezvous on the call id), so both parties' steps meet in
/// one table wherever their sessions are; events reach the other party on any node.
pub async fn execute(hub: &Arc<Hub>, from: SessionAddr, op: CallOp) {
    let me = from.user_id.clone();
    let error = |code: ErrorCode, message: &str| {
        hub.metrics.ws_errors.with_label_values(&[code.as_str()]).inc();
        let frame = encode_event(&ServerEvent::Error { code, message, client_id: None, retry_after_ms: None });
        hub.push_to_session(&from, frame);
    };
    match op {
        CallOp::Offer { to, call_id, sdp } => {
            if !is_valid_id(&call_id) || !is_valid_id(&to) || to == *me {
                return error(
                    ErrorCode::BadRequest,
                    "call.offer needs another user in `to` and a call_id of 1-64 A-Za-z0-9_-",
                );
            }
            if !hub.is_online_anywhere(&to).await {
                return error(ErrorCode::Unavailable, &format!("{to} has no open session; call {call_id} not placed"));
            }
            let callee: Arc<str> = to.as_str().into();
            if let Err(e) = hub.calls.offer(&call_id, &me, &callee, Instant::now()) {
                return error(ErrorCode::Conflict, &e.to_string());
            }
            let event = ServerEvent::CallOffer { from: &me, call_id: &call_id, sdp: sdp.as_deref() };
            hub.deliver_user(&callee, &encode_event(&event), None);
        }
        CallOp::Answer { to, call_id, sdp } => {
            match hub.calls.answer(&call_id, &to, &me, &from.session_id, Instant::now()) {
                Ok(_) => {
                    let answer = ServerEvent::CallAnswer { from: &me, call_id: &call_id, sdp: sdp.as_deref() };
                    hub.deliver_user(&to.as_str().into(), &encode_event(&answer), None);
                    // The callee's other sessions stop ringing.
                    let elsewhere =
                        ServerEvent::CallEnd { from: &me, call_id: &call_id, reason: Some("answered_elsewhere") };
                    hub.deliver_user(&me, &encode_event(&elsewhere), Some(&from.session_id));
                }
                Err(CallError::Unknown) => error(ErrorCode::NotFound, "no such call"),
                Err(e) => error(ErrorCode::Conflict, &e.to_string()),
            }
        }
        CallOp::Ice { to, call_id, candidate } => match hub.calls.party(&call_id, &me) {
            Some(c) if other_party(&c, &me) == to.as_str() => {
                let event = ServerEvent::CallIce { from: &me, call_id: &call_id, candidate: candidate.as_ref() };
                hub.deliver_user(&to.as_str().into(), &encode_event(&event), None);
            }
            _ => error(ErrorCode::NotFound, "no such call"),
        },
        CallOp::End { to, call_id } => {
            if hub.calls.party(&call_id, &me).filter(|c| other_party(c, &me) == to).is_none() {
                return error(ErrorCode::NotFound, "no such call");
            }
            let Some(call) = hub.calls.end(&call_id, &me) else { return };
            let event = encode_event(&ServerEvent::CallEnd { from: &me, call_id: &call_id, reason: None });
            hub.deliver_user(&to.as_str().into(), &event, None);
            hub.deliver_user(&me, &event, Some(&from.session_id));
            log_call(hub, &call_id, &call).await;
        }
    }
}

/// The party of `call` who is not `me`.
fn other_party<'a>(call: &'a Call, me: &str) -> &'a str {
    if *call.caller == *me {
        &call.callee
    } else {
        &call.caller
    }
}

/// Stores the call-log message in the pair's direct conversation: who called, how long,
/// missed or not. Sent as the caller, deduplicated by `call:<call_id>`.
async fn log_call(hub: &Hub, call_id: &str, call: &Call) {
    let (caller, callee) = (call.caller.to_string(), call.callee.to_string());
    let proposed = crate::new_conversation(rookery_protocol::ConversationKind::Direct, None);
    let conv = match hub.store.direct_conversation(&caller, &callee, proposed).await {
        Ok((meta, _)) => meta.id,
        Err(e) => return tracing::warn!(error = %e, "could not find the direct conversation for a call log"),
    };
    let duration_s = call.answered.as_ref().map(|(_, at)| at.elapsed().as_secs());
    let body = match duration_s {
        Some(s) => format!("Call, {s} s"),
        None => "Missed call".to_string(),
    };
    let log = serde_json::json!({
        "kind": "call", "call_id": call_id, "caller": caller, "callee": callee,
        "duration_s": duration_s.unwrap_or(0), "missed": duration_s.is_none(),
    });
    let msg = ConvMsg::Send {
        from: Requester::node(&caller),
        client_id: format!("call:{call_id}"),
        body,
        attachments: vec![log],
        echo: true,
        received: Instant::now(),
        permit: None,
    };
    if let Err(e) = hub.router.route(&conv, msg).await {
        tracing::warn!(error = %e, "could not store a call log");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_answer_wins_and_only_parties_end() {
        let calls = Calls::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let t = Instant::now();
        calls.offer("c1", &a, &b, t).unwrap();
        assert_eq!(calls.offer("c1", &a, &b, t), Err(CallError::Exists));
        assert_eq!(
            calls.answer("c1", "b", "a", &"s".into(), t).unwrap_err(),
            CallError::Unknown,
            "only the callee answers"
        );
        assert_eq!(calls.answer("c1", "x", "b", &"s".into(), t).unwrap_err(), CallError::Unknown, "to the caller");
        calls.answer("c1", "a", "b", &"s1".into(), t).unwrap();
        assert_eq!(calls.answer("c1", "a", "b", &"s2".into(), t).unwrap_err(), CallError::AlreadyAnswered);

        assert!(calls.end("c1", "mallory").is_none());
        assert!(calls.end("c1", "b").is_some());
        assert!(calls.party("c1", "a").is_none());
        for i in 0..MAX_CALLS_PER_USER {
            calls.offer(&format!("x{i}"), &a, &b, t).unwrap();
        }
        assert_eq!(calls.offer("one-more", &a, &b, t), Err(CallError::TooMany));
        // Unanswered calls are forgotten after the ring timeout.
        calls.offer("late", &b, &a, t + RING_TIMEOUT).unwrap();
        assert!(calls.party("x0", "a").is_none());
    }
}
