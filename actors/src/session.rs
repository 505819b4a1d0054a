//! The session actor (one per connection) and the session supervisor.
//!
//! The gateway decodes frames and casts them here, each with a permit from the session's
//! in-flight semaphore. Mailbox bound: at most `HubConfig::session_inflight` frames are queued
//! or being handled per session; when they run out the gateway stops reading the socket
//! (backpressure through TCP), so a flooding client only slows itself.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use rookery_protocol::{close, encode_event, is_valid_id, ClientFrame, ErrorCode, ServerEvent};
use rookery_store::{CursorUpdate, HistoryQuery};
use tokio::sync::OwnedSemaphorePermit;

use crate::conversation::ConvMsg;
use crate::limits::{AbuseMeter, Bucket};
use crate::outbound::SessionHandle;
use crate::placement::RouteError;
use crate::requester::Requester;
use crate::{now_ms, Hub};

/// How long a reply to the client's own request may wait for room in its outbound queue.
const REPLY_PATIENCE: Duration = Duration::from_secs(10);
/// Longest accepted `client_id`, in bytes.
const MAX_CLIENT_ID: usize = 128;

/// Messages of a session actor.
pub enum SessionMsg {
    /// A decoded client frame.
    Frame(ClientFrame, OwnedSemaphorePermit, MailboxSlot),
    /// Test hook: panic inside the actor.
    #[cfg(feature = "test-hooks")]
    InjectPanic,
}

/// Counts a frame in `rookery_session_mailbox_frames` from when it is cast until it is handled
/// or dropped (dropped with a crashed actor's mailbox too).
pub struct MailboxSlot(prometheus::IntGauge);

impl MailboxSlot {
    pub fn new(gauge: &prometheus::IntGauge) -> Self {
        gauge.inc();
        MailboxSlot(gauge.clone())
    }
}

impl Drop for MailboxSlot {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The actor.
pub struct SessionActor;

/// Session state.
pub struct SessionState {
    handle: Arc<SessionHandle>,
    hub: Arc<Hub>,
    sends: Bucket,
    typing: Bucket,
    calls: Bucket,
    abuse: AbuseMeter,
}

impl Actor for SessionActor {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = (Arc<SessionHandle>, Arc<Hub>);

    async fn pre_start(
        &self,
        _: ActorRef<SessionMsg>,
        (handle, hub): Self::Arguments,
    ) -> Result<SessionState, ActorProcessingErr> {
        let now = Instant::now();
        let c = &hub.config;
        let (sends, typing, calls) =
            (Bucket::new(c.send_limit, now), Bucket::new(c.typing_limit, now), Bucket::new(c.call_limit, now));
        let abuse = AbuseMeter::new(c.abuse_threshold, now);
        Ok(SessionState { handle, hub, sends, typing, calls, abuse })
    }

    async fn handle(
        &self,
        _: ActorRef<SessionMsg>,
        msg: SessionMsg,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SessionMsg::Frame(frame, permit, _slot) => state.frame(frame, permit).await,
            #[cfg(feature = "test-hooks")]
            SessionMsg::InjectPanic => {
                panic!("injected panic in session {}", state.handle.addr.session_id)
            }
        }
        Ok(())
    }
}

impl SessionState {
    async fn reply_event(&self, event: &ServerEvent<'_>) {
        self.handle.push_wait(encode_event(event), REPLY_PATIENCE).await;
    }

    async fn error(&self, code: ErrorCode, message: &str, client_id: Option<&str>) {
        self.reply_event(&ServerEvent::Error { code, message, client_id, retry_after_ms: None }).await;
    }

    async fn route(&self, conv: &str, msg: ConvMsg, client_id: Option<&str>) {
        if !is_valid_id(conv) {
            return self.error(ErrorCode::NotMember, "not a member of this conversation", client_id).await;
        }
        match self.hub.router.route(conv, msg).await {
            Ok(()) => {}
            Err(RouteError::NotFound) => {
                self.error(ErrorCode::NotMember, "not a member of this conversation", client_id).await
            }
            Err(RouteError::Unavailable(e)) => self.error(ErrorCode::Unavailable, &e, client_id).await,
        }
    }

    /// Applies the session's rate limits; `false` when the frame must be dropped.
    async fn admit(&mut self, frame: &ClientFrame) -> bool {
        let now = Instant::now();
        let (bucket, client_id) = match frame {
            ClientFrame::Send { client_id, .. } => (&mut self.sends, Some(client_id.as_str())),
            ClientFrame::Typing { .. } => (&mut self.typing, None),
            ClientFrame::CallOffer { .. }
            | ClientFrame::CallAnswer { .. }
            | ClientFrame::CallIce { .. }
            | ClientFrame::CallEnd { .. } => (&mut self.calls, None),
            _ => return true,
        };
        let Err(wait) = bucket.take(now) else { return true };
        if self.abuse.refused(now) {
            tracing::warn!("closing a session that keeps exceeding its rate limits");
            self.handle.close_with(close::POLICY);
            return false;
        }
        let retry_after_ms = Some(wait.as_millis().max(1) as u64);
        let message = format!("too many {} frames; retry later", frame.op());
        let event = ServerEvent::Error { code: ErrorCode::RateLimited, message: &message, client_id, retry_after_ms };
        self.reply_event(&event).await;
        false
    }

    async fn frame(&mut self, frame: ClientFrame, permit: OwnedSemaphorePermit) {
        if !self.admit(&frame).await {
            return;
        }
        let from = Requester::session(self.handle.addr.clone());
        match frame {
            ClientFrame::Send { conv, client_id, body, attachments } => {
                let limits = &self.hub.config;
                if client_id.is_empty() || client_id.len() > MAX_CLIENT_ID {
                    let msg = format!("client_id must be 1-{MAX_CLIENT_ID} bytes");
                    return self.error(ErrorCode::BadRequest, &msg, None).await;
                }
                if body.len() > limits.max_body {
                    let msg = format!("body is {} bytes; the limit is {}", body.len(), limits.max_body);
                    return self.error(ErrorCode::TooLarge, &msg, Some(&client_id)).await;
                }
                if body.trim().is_empty() && attachments.is_empty() {
                    let msg = "a message needs a body or attachments";
                    return self.error(ErrorCode::BadRequest, msg, Some(&client_id)).await;
                }
                let attachments = match crate::attachments::resolve(
                    &*self.hub.store,
                    &self.handle.addr.user_id,
                    &attachments,
                )
                .await
                {
                    Ok(a) => a,
                    Err((code, msg)) => return self.error(code, &msg, Some(&client_id)).await,
                };
                let cid = client_id.clone();

                let msg = ConvMsg::Send {
                    from,
                    client_id,
                    body,
                    attachments,
                    received: Instant::now(),
                    permit: Some(permit),
                };
                self.route(&conv, msg, Some(&cid)).await;
            }
            ClientFrame::Edit { conv, id, body } => {
                if body.len() > self.hub.config.max_body {
                    return self.error(ErrorCode::TooLarge, "body is over the limit", None).await;
                }
                if body.trim().is_empty() {
                    return self.error(ErrorCode::BadRequest, "body must not be empty", None).await;
                }
                self.route(&conv, ConvMsg::Edit { from, id, body }, None).await;
            }
            ClientFrame::Delete { conv, id } => self.route(&conv, ConvMsg::Delete { from, id }, None).await,
            ClientFrame::Read { conv, seq } => self.route(&conv, ConvMsg::Read { from, seq }, None).await,
            ClientFrame::Typing { conv, active } => self.route(&conv, ConvMsg::Typing { from, active }, None).await,
            ClientFrame::Sync { since } => self.sync(since).await,
            ClientFrame::Presence { users } => {
                for user in users.iter().take(self.hub.config.max_presence_query) {
                    let online = self.hub.sessions.is_online(user);
                    let last_seen = if online { None } else { self.hub.sessions.last_seen(user) };
                    let status = if online { "online" } else { "offline" };
                    self.reply_event(&ServerEvent::Presence { user_id: user, status, last_seen }).await;
                }
            }
            ClientFrame::CallOffer { to, call_id, sdp } => self.call_offer(&to, &call_id, sdp.as_deref()).await,
            ClientFrame::CallAnswer { to, call_id, sdp } => self.call_answer(&to, &call_id, sdp.as_deref()).await,
            ClientFrame::CallIce { to, call_id, candidate } => {
                let me = self.handle.addr.user_id.clone();
                match self.hub.calls.party(&call_id, &me) {
                    Some(c) if other_party(&c, &me) == to.as_str() => {
                        let event =
                            ServerEvent::CallIce { from: &me, call_id: &call_id, candidate: candidate.as_ref() };
                        self.hub.sessions.push_to_user(&to, &encode_event(&event));
                    }
                    _ => self.error(ErrorCode::NotFound, "no such call", None).await,
                }
            }
            ClientFrame::CallEnd { to, call_id } => self.call_end(&to, &call_id).await,

            ClientFrame::Ping { t } => self.reply_event(&ServerEvent::Pong { t: t.as_ref() }).await,
        }
    }

    /// Sends every message after the client's position in each of its conversations, then
    /// `synced`. A conversation named in `since` that the user is not in gets `not_member`.
    async fn sync(&mut self, since: HashMap<String, u64>) {
        let user = self.handle.addr.user_id.clone();
        let store = &self.hub.store;
        let convs = match store.user_conversations(&user).await {
            Ok(c) => c,
            Err(e) => return self.error(ErrorCode::Unavailable, &e.to_string(), None).await,
        };
        for named in since.keys().filter(|c| !convs.contains(c)).take(16) {
            let msg = format!("not a member of conversation {}", named.chars().take(64).collect::<String>());
            self.error(ErrorCode::NotMember, &msg, None).await;
        }
        let batch = self.hub.config.sync_batch;
        let mut positions = BTreeMap::new();
        let mut has_more = BTreeMap::new();
        let mut delivered = Vec::new();
        for conv in convs {
            let from = match since.get(&conv) {
                Some(s) => *s,
                None => match store.cursor(&user, &conv).await {
                    Ok(c) => c.delivered_seq,
                    Err(e) => return self.error(ErrorCode::Unavailable, &e.to_string(), None).await,
                },
            };
            // Never past what has been fanned out: a later message may be stored while an
            // earlier one is still being written, and replaying it first would reorder them.
            let cap = self.hub.fanned_out.get(conv.as_str()).map(|w| *w);
            let query =
                HistoryQuery { after_seq: Some(from), before_seq: cap.map(|c| c.saturating_add(1)), limit: batch };
            let (page, more) = match store.messages(&conv, query).await {
                Ok(p) => p,
                Err(e) => return self.error(ErrorCode::Unavailable, &e.to_string(), None).await,
            };
            let mut last = from;
            for m in &page {
                if !self.handle.push_wait(encode_event(&ServerEvent::Msg(m)), REPLY_PATIENCE).await {
                    return;
                }
                last = m.seq;
            }
            if last > from {
                delivered.push(CursorUpdate {
                    user: user.to_string(),
                    conv: conv.clone(),
                    delivered_seq: Some(last),
                    read_seq: None,
                });
            }
            has_more.insert(conv.clone(), more);
            positions.insert(conv, last);
        }
        if !delivered.is_empty() {
            if let Err(e) = store.advance_cursors(delivered).await {
                tracing::warn!(error = %e, "delivery cursor write failed");
            }
        }
        self.reply_event(&ServerEvent::Synced { convs: &positions, has_more: &has_more }).await;
    }
}

/// Messages of the session supervisor.
pub enum SessionSupervisorMsg {
    /// Start the session actor of a new connection.
    Start { handle: Arc<SessionHandle>, reply: RpcReplyPort<Result<ActorRef<SessionMsg>, String>> },
}

/// Supervises session actors. A session is bound to its connection, so a crashed session is
/// not restarted: its connection is closed (1011) and it is removed from the registry; no other
/// session is touched.
pub struct SessionSupervisor;

/// Supervisor state.
pub struct SessionSupervisorState {
    hub: Weak<Hub>,
    children: HashMap<ActorId, Arc<SessionHandle>>,
}

impl SessionSupervisor {
    fn child_gone(state: &mut SessionSupervisorState, cell: &ActorCell, crashed: bool) {
        let Some(handle) = state.children.remove(&cell.get_id()) else {
            return;
        };
        if let Some(hub) = state.hub.upgrade() {
            if hub.sessions.remove(&handle, now_ms()) {
                hub.presence.closed(&hub, handle.addr.user_id.clone());
            }
            hub.session_actors.remove(&handle.addr.session_id);
            hub.metrics.sessions_active.dec();
            if crashed {
                hub.metrics.actor_restarts.with_label_values(&["session"]).inc();
                let detail = serde_json::json!({"actor": "session", "id": &*handle.addr.session_id, "user_id": &*handle.addr.user_id});
                hub.metrics.record_event("restart", detail);
            }
        }
        handle.close_with(if crashed { close::INTERNAL_ERROR } else { close::NORMAL });
    }
}

impl Actor for SessionSupervisor {
    type Msg = SessionSupervisorMsg;
    type State = SessionSupervisorState;
    type Arguments = Weak<Hub>;

    async fn pre_start(&self, _: ActorRef<Self::Msg>, hub: Weak<Hub>) -> Result<Self::State, ActorProcessingErr> {
        Ok(SessionSupervisorState { hub, children: HashMap::new() })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let SessionSupervisorMsg::Start { handle, reply } = msg;
        let Some(hub) = state.hub.upgrade() else {
            return Ok(());
        };
        let result =
            match Actor::spawn_linked(None, SessionActor, (handle.clone(), hub.clone()), myself.get_cell()).await {
                Ok((actor, _)) => {
                    state.children.insert(actor.get_id(), handle.clone());
                    hub.session_actors.insert(handle.addr.session_id.clone(), actor.clone());
                    if hub.sessions.insert(handle.clone()) {
                        hub.presence.opened(&hub, handle.addr.user_id.clone());
                    }

                    hub.metrics.sessions_active.inc();
                    Ok(actor)
                }
                Err(e) => Err(e.to_string()),
            };
        let _ = reply.send(result);
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => Self::child_gone(state, &cell, false),
            SupervisionEvent::ActorFailed(cell, err) => {
                tracing::error!(error = %err, "session actor crashed; closing its connection");
                Self::child_gone(state, &cell, true);
            }
            _ => {}
        }
        Ok(())
    }
}

/// The party of `call` who is not `me`.
fn other_party<'a>(call: &'a crate::calls::Call, me: &str) -> &'a str {
    if *call.caller == *me {
        &call.callee
    } else {
        &call.caller
    }
}

impl SessionState {
    async fn call_offer(&mut self, to: &str, call_id: &str, sdp: Option<&str>) {
        let me = self.handle.addr.user_id.clone();
        if !is_valid_id(call_id) || !is_valid_id(to) || to == &*me {
            return self
                .error(
                    ErrorCode::BadRequest,
                    "call.offer needs another user in `to` and a call_id of 1-64 A-Za-z0-9_-",
                    None,
                )
                .await;
        }
        if !self.hub.sessions.is_online(to) {
            return self
                .error(ErrorCode::Unavailable, &format!("{to} has no open session; call {call_id} not placed"), None)
                .await;
        }
        let callee: Arc<str> = to.into();
        if let Err(e) = self.hub.calls.offer(call_id, &me, &callee, Instant::now()) {
            return self.error(ErrorCode::Conflict, &e.to_string(), None).await;
        }
        let event = ServerEvent::CallOffer { from: &me, call_id, sdp };
        self.hub.sessions.push_to_user(to, &encode_event(&event));
    }

    async fn call_answer(&mut self, to: &str, call_id: &str, sdp: Option<&str>) {
        let me = self.handle.addr.user_id.clone();
        let session = self.handle.addr.session_id.clone();
        match self.hub.calls.answer(call_id, to, &me, &session, Instant::now()) {
            Ok(_) => {
                self.hub.sessions.push_to_user(to, &encode_event(&ServerEvent::CallAnswer { from: &me, call_id, sdp }));
                // The callee's other sessions stop ringing.
                let elsewhere =
                    encode_event(&ServerEvent::CallEnd { from: &me, call_id, reason: Some("answered_elsewhere") });
                for s in self.hub.sessions.of_user(&me) {
                    if s.addr.session_id != session {
                        s.push(elsewhere.clone());
                    }
                }
            }
            Err(crate::calls::CallError::Unknown) => self.error(ErrorCode::NotFound, "no such call", None).await,
            Err(e) => self.error(ErrorCode::Conflict, &e.to_string(), None).await,
        }
    }

    async fn call_end(&mut self, to: &str, call_id: &str) {
        let me = self.handle.addr.user_id.clone();
        if self.hub.calls.party(call_id, &me).filter(|c| other_party(c, &me) == to).is_none() {
            return self.error(ErrorCode::NotFound, "no such call", None).await;
        }

        let Some(call) = self.hub.calls.end(call_id, &me) else { return };
        let event = encode_event(&ServerEvent::CallEnd { from: &me, call_id, reason: None });
        self.hub.sessions.push_to_user(to, &event);
        for s in self.hub.sessions.of_user(&me) {
            if s.addr.session_id != self.handle.addr.session_id {
                s.push(event.clone());
            }
        }
        self.log_call(call_id, &call).await;
    }

    /// Stores the call-log message in the pair's direct conversation: who called, how long,
    /// missed or not. Sent as the caller, deduplicated by `call:<call_id>`.
    async fn log_call(&self, call_id: &str, call: &crate::calls::Call) {
        let (caller, callee) = (call.caller.to_string(), call.callee.to_string());
        let proposed = rookery_store::ConvMeta {
            id: crate::new_id(),
            kind: rookery_protocol::ConversationKind::Direct,
            title: None,
            created_at: now_ms(),
            slow_mode_s: 0,
        };
        let conv = match self.hub.store.direct_conversation(&caller, &callee, proposed).await {
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
            received: Instant::now(),
            permit: None,
        };
        if let Err(e) = self.hub.router.route(&conv, msg).await {
            tracing::warn!(error = %e, "could not store a call log");
        }
    }
}
