//! A session: the frames one connection's client sends, and the actor that handles some of them.
//!
//! The gateway decodes each frame and hands it to the connection's [`SessionInput`], on the
//! connection's reader task, with a permit from the session's in-flight semaphore. The input
//! applies the session's rate limits, then handles the frames that only pass something on
//! (`send`, `edit`, `delete`, `read` and `typing` go to their conversation's actor, `ping` is
//! answered) and returns the rest (`sync`, `presence`, calls), which read the store or reach
//! other nodes, for the session actor. A `send` thus reaches its conversation actor in one hop,
//! not two through the session actor (docs/benchmarks.md, 2026-12-04, afternoon), and a
//! client's frames to conversations keep their order, the reader handling them one at a time.
//!
//! Mailbox bound: at most `HubConfig::session_inflight` frames are queued or being handled per
//! session, in the session actor's mailbox or (sends) in conversation actors' queues; when they
//! run out the gateway stops reading the socket (backpressure through TCP), so a flooding
//! client only slows itself.
//!
//! Hibernation: the actor handles only the frames the input returns; deliveries go straight to
//! the session's outbound queue ([`SessionHandle`]) and never pass through it. So when a client
//! has sent no such frame for a while (`--session-hibernate-ms`), the gateway asks the actor to
//! hibernate: it stops, and the connection, the registry entry, the outbound queue and the
//! input (with its rate-limit [`Meters`]) stay. The next frame for an actor starts a new one.
//! An idle connection then holds no actor (about 7 KB of task, mailboxes and cell), the way
//! Phoenix Channels hibernate a quiet channel process.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use rookery_protocol::{close, encode_event, is_valid_id, message_seq, msg_event, ClientFrame, ErrorCode, ServerEvent};
use rookery_store::{CursorUpdate, HistoryQuery};
use tokio::sync::OwnedSemaphorePermit;

use crate::calls::CallOp;
use crate::conversation::ConvMsg;
use crate::limits::Meters;
use crate::outbound::SessionHandle;
use crate::placement::RouteError;
use crate::requester::Requester;
use crate::Hub;

/// How long a reply to the client's own request may wait for room in its outbound queue.
const REPLY_PATIENCE: Duration = Duration::from_secs(10);
/// Longest accepted `client_id`, in bytes.
const MAX_CLIENT_ID: usize = 128;

/// Messages of a session actor.
pub enum SessionMsg {
    /// A frame that [`SessionInput`] passed on.
    Frame(ActorFrame, OwnedSemaphorePermit, MailboxSlot),
    /// Stop, leaving the session open. The gateway sends it only when no frame of the session
    /// is queued or in progress.
    Hibernate(RpcReplyPort<()>),
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

/// A client frame for the session's actor: one that reads the store or reaches other nodes,
/// and may take a while. [`SessionInput`] handles every other op itself.
pub enum ActorFrame {
    Sync(HashMap<String, u64>),
    Presence(Vec<String>),
    Call(CallOp),
}

/// Queues an answer to the session's own client, waiting up to [`REPLY_PATIENCE`] for room.
async fn reply_event(handle: &SessionHandle, event: &ServerEvent<'_>) {
    handle.push_wait(encode_event(event), REPLY_PATIENCE).await;
}

/// Answers the session's own client with an `error`, counted in `rookery_ws_errors_total`.
async fn reply_error(hub: &Hub, handle: &SessionHandle, code: ErrorCode, message: &str, client_id: Option<&str>) {
    hub.metrics.ws_errors.with_label_values(&[code.as_str()]).inc();
    reply_event(handle, &ServerEvent::Error { code, message, client_id, retry_after_ms: None }).await;
}

/// A session's frames as its connection's reader task receives them: the rate limits, and the
/// frames handled right there (see the module's documentation). It lives as long as the
/// connection, whether or not the session's actor is awake, so a quiet spell never resets a
/// limit.
pub struct SessionInput {
    handle: Arc<SessionHandle>,
    hub: Arc<Hub>,
    meters: Meters,
}

impl SessionInput {
    /// The input of a session that has just opened: full buckets.
    pub fn new(hub: Arc<Hub>, handle: Arc<SessionHandle>) -> Self {
        let meters = Meters::new(&hub.config, Instant::now());
        SessionInput { handle, hub, meters }
    }

    /// Applies the rate limits to `frame` and handles it, or returns it for the session actor
    /// when it must read the store or reach another node (`sync`, `presence`, calls).
    pub async fn frame(
        &mut self,
        frame: ClientFrame,
        permit: OwnedSemaphorePermit,
    ) -> Option<(ActorFrame, OwnedSemaphorePermit)> {
        if !self.admit(&frame).await {
            return None;
        }
        let from = || Requester::session(self.handle.addr.clone());
        match frame {
            ClientFrame::Send { conv, client_id, body, attachments, echo } => {
                self.send(conv, client_id, body, attachments, echo, permit).await
            }
            ClientFrame::Edit { conv, id, body } => {
                if body.len() > self.hub.config.max_body {
                    self.error(ErrorCode::TooLarge, "body is over the limit", None).await;
                } else if body.trim().is_empty() {
                    self.error(ErrorCode::BadRequest, "body must not be empty", None).await;
                } else {
                    self.route(&conv, ConvMsg::Edit { from: from(), id, body }, None).await
                }
            }
            ClientFrame::Delete { conv, id } => self.route(&conv, ConvMsg::Delete { from: from(), id }, None).await,
            ClientFrame::Read { conv, seq } => self.route(&conv, ConvMsg::Read { from: from(), seq }, None).await,
            ClientFrame::Typing { conv, active } => {
                self.route(&conv, ConvMsg::Typing { from: from(), active }, None).await
            }
            ClientFrame::Ping { t } => reply_event(&self.handle, &ServerEvent::Pong { t: t.as_ref() }).await,
            ClientFrame::Sync { since } => return Some((ActorFrame::Sync(since), permit)),
            ClientFrame::Presence { users } => return Some((ActorFrame::Presence(users), permit)),
            ClientFrame::CallOffer { to, call_id, sdp } => {
                return Some((ActorFrame::Call(CallOp::Offer { to, call_id, sdp }), permit))
            }
            ClientFrame::CallAnswer { to, call_id, sdp } => {
                return Some((ActorFrame::Call(CallOp::Answer { to, call_id, sdp }), permit))
            }
            ClientFrame::CallIce { to, call_id, candidate } => {
                return Some((ActorFrame::Call(CallOp::Ice { to, call_id, candidate }), permit))
            }
            ClientFrame::CallEnd { to, call_id } => {
                return Some((ActorFrame::Call(CallOp::End { to, call_id }), permit))
            }
        }
        None
    }

    async fn error(&self, code: ErrorCode, message: &str, client_id: Option<&str>) {
        reply_error(&self.hub, &self.handle, code, message, client_id).await;
    }

    /// Checks a `send` and routes it to its conversation with the session's permit, which the
    /// conversation actor holds until it answers.
    async fn send(
        &self,
        conv: String,
        client_id: String,
        body: String,
        attachments: Vec<serde_json::Value>,
        echo: bool,
        permit: OwnedSemaphorePermit,
    ) {
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
        let attachments =
            match crate::attachments::resolve(&*self.hub.store, &self.handle.addr.user_id, &attachments).await {
                Ok(a) => a,
                Err((code, msg)) => return self.error(code, &msg, Some(&client_id)).await,
            };
        let cid = client_id.clone();
        let msg = ConvMsg::Send {
            from: Requester::session(self.handle.addr.clone()),
            client_id,
            body,
            attachments,
            echo,
            received: Instant::now(),
            permit: Some(permit),
        };
        self.route(&conv, msg, Some(&cid)).await;
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
            ClientFrame::Send { client_id, .. } => (&mut self.meters.sends, Some(client_id.as_str())),
            ClientFrame::Typing { .. } => (&mut self.meters.typing, None),
            ClientFrame::CallOffer { .. }
            | ClientFrame::CallAnswer { .. }
            | ClientFrame::CallIce { .. }
            | ClientFrame::CallEnd { .. } => (&mut self.meters.calls, None),
            _ => return true,
        };
        let Err(wait) = bucket.take(now) else { return true };
        if self.meters.abuse.refused(now) {
            let (session, user) = (&self.handle.addr.session_id, &self.handle.addr.user_id);
            tracing::warn!(%session, %user, "closing a session that keeps exceeding its rate limits");
            self.handle.close_with(close::POLICY);
            return false;
        }
        let retry_after_ms = Some(wait.as_millis().max(1) as u64);
        let message = format!("too many {} frames; retry later", frame.op());
        self.hub.metrics.ws_errors.with_label_values(&["rate_limited"]).inc();
        let event = ServerEvent::Error { code: ErrorCode::RateLimited, message: &message, client_id, retry_after_ms };
        reply_event(&self.handle, &event).await;
        false
    }
}

/// The actor.
pub struct SessionActor;

/// Session state.
pub struct SessionState {
    handle: Arc<SessionHandle>,
    hub: Arc<Hub>,
}

/// Stop reason of an actor that hibernated (its session stays open).
pub const HIBERNATED: &str = "hibernated";

impl Actor for SessionActor {
    type Msg = SessionMsg;
    type State = SessionState;
    /// The session's handle and the hub.
    type Arguments = (Arc<SessionHandle>, Arc<Hub>);

    async fn pre_start(
        &self,
        myself: ActorRef<SessionMsg>,
        (handle, hub): Self::Arguments,
    ) -> Result<SessionState, ActorProcessingErr> {
        // Recorded before the actor is linked to its supervisor, so that no supervision event
        // can come first.
        hub.session_children.insert(myself.get_id(), handle.clone());
        hub.session_actors.insert(handle.addr.session_id.clone(), myself);
        Ok(SessionState { handle, hub })
    }

    async fn handle(
        &self,
        myself: ActorRef<SessionMsg>,
        msg: SessionMsg,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            // Boxed: the handling future is large (every op's awaits), and held inline it would
            // sit in the actor's task for the session's whole life, idle or not.
            SessionMsg::Frame(frame, _permit, _slot) => Box::pin(state.frame(frame)).await,
            SessionMsg::Hibernate(reply) => {
                let _ = reply.send(());
                myself.stop(Some(HIBERNATED.to_string()));
            }
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
        reply_event(&self.handle, event).await;
    }

    async fn error(&self, code: ErrorCode, message: &str, client_id: Option<&str>) {
        reply_error(&self.hub, &self.handle, code, message, client_id).await;
    }

    /// Handles a frame that [`SessionInput::frame`] passed on (its rate limit applied there).
    async fn frame(&mut self, frame: ActorFrame) {
        match frame {
            ActorFrame::Sync(since) => self.sync(since).await,
            ActorFrame::Presence(users) => self.presence(users).await,
            ActorFrame::Call(op) => self.call(op).await,
        }
    }

    /// Answers a `presence` query: online when a session is open on any node; otherwise when
    /// the last one closed, where known.
    async fn presence(&self, mut users: Vec<String>) {
        users.truncate(self.hub.config.max_presence_query);
        let mut online: Vec<bool> = users.iter().map(|u| self.hub.sessions.is_online(u)).collect();
        let mut last_seen: Vec<Option<i64>> = users.iter().map(|u| self.hub.sessions.last_seen(u)).collect();
        if let Some(c) = self.hub.cluster() {
            let names: Vec<&str> = users.iter().map(String::as_str).collect();
            for (o, remote) in online.iter_mut().zip(c.online_elsewhere(&names).await) {
                *o |= remote;
            }
            for (l, remote) in last_seen.iter_mut().zip(c.last_seen(&names).await) {
                *l = (*l).max(remote);
            }
        }
        for ((user, online), last_seen) in users.iter().zip(online).zip(last_seen) {
            let status = if online { "online" } else { "offline" };
            let last_seen = if online { None } else { last_seen };
            self.reply_event(&ServerEvent::Presence { user_id: user, status, last_seen }).await;
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
            // The messages as the store keeps them (JSON), made into `msg` events without being
            // decoded and encoded again; only the last one's `seq` is read.
            let (page, more) = match store.messages_json(&conv, query).await {
                Ok(p) => p,
                Err(e) => return self.error(ErrorCode::Unavailable, &e.to_string(), None).await,
            };
            let last = match page.last().map(|m| message_seq(m)) {
                None => from,
                Some(Some(seq)) => seq,
                Some(None) => {
                    let msg = format!("a stored message of conversation {conv} could not be read");
                    return self.error(ErrorCode::Unavailable, &msg, None).await;
                }
            };
            for m in &page {
                if !self.handle.push_wait(msg_event(m), REPLY_PATIENCE).await {
                    return;
                }
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
                tracing::warn!(error = %e, session = %self.handle.addr.session_id, "delivery cursor write failed");
            }
        }
        self.reply_event(&ServerEvent::Synced { convs: &positions, has_more: &has_more }).await;
    }
}

/// The session supervisor takes no messages: session actors are started by
/// [`Hub::start_session_actor`], linked to it.
pub enum SessionSupervisorMsg {}

/// Supervises session actors. A session is bound to its connection, so a crashed session is
/// not restarted: its connection is closed (1011), and the gateway then removes it from the
/// registry as for any closed connection; no other session is touched. An actor that stopped
/// (the connection ended, or it hibernated) only leaves the books (`Hub::session_children`).
pub struct SessionSupervisor;

impl SessionSupervisor {
    fn child_gone(hub: &Weak<Hub>, cell: &ActorCell, crashed: bool) {
        let Some(hub) = hub.upgrade() else { return };
        let Some((_, handle)) = hub.session_children.remove(&cell.get_id()) else {
            return;
        };
        // A woken session's new actor may already be listed under the same session id.
        hub.session_actors.remove_if(&handle.addr.session_id, |_, actor| actor.get_id() == cell.get_id());
        if crashed {
            hub.metrics.actor_restarts.with_label_values(&["session"]).inc();
            let detail = serde_json::json!({"actor": "session", "id": &*handle.addr.session_id, "user_id": &*handle.addr.user_id});
            hub.metrics.record_event("restart", detail);
            handle.close_with(close::INTERNAL_ERROR);
        }
    }
}

impl Actor for SessionSupervisor {
    type Msg = SessionSupervisorMsg;
    type State = Weak<Hub>;
    type Arguments = Weak<Hub>;

    async fn pre_start(&self, _: ActorRef<Self::Msg>, hub: Weak<Hub>) -> Result<Self::State, ActorProcessingErr> {
        Ok(hub)
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        msg: Self::Msg,
        _: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {}
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

impl SessionState {
    /// Runs a call-signalling step on the call's home node (this one when running alone).
    async fn call(&mut self, op: CallOp) {
        let addr = self.handle.addr.clone();
        if let Some(c) = self.hub.cluster() {
            let home = c.owner(op.call_id());
            if home != c.me {
                if !c.forward_call(&home, &addr, op) {
                    self.error(ErrorCode::Unavailable, "the call's node cannot be reached; retry", None).await;
                }
                return;
            }
        }
        crate::calls::execute(&self.hub, addr, op).await;
    }
}
