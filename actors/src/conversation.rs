//! The conversation actor: the single writer of one conversation.
//!
//! It checks membership and dedupe, assigns `seq`, hands the message to the store (which group
//! commits it), and once the write is durable acks the sender and fans the message out, encoded
//! once, to every member's sessions. Writes complete out of order across tasks, so commits are
//! applied in `seq` order through the `inflight` queue: nobody sees seq 5 before seq 4.
//!
//! Mailbox bound: every `Send` carries its session's in-flight permit, released when the send is
//! answered, so the mailbox holds at most `sessions × session_inflight` sends. Other messages
//! are bounded by the same session permits or by timers.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use foldhash::{HashMap, HashMapExt};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rookery_protocol::{encode_event, encode_message, msg_event, ErrorCode, Message, Role, ServerEvent};
use rookery_store::{ConvMeta, CursorUpdate, Sanction, StoreError};
use tokio::sync::OwnedSemaphorePermit;

use crate::forgotten::Forgotten;
use crate::requester::{Outcome, Requester};
use crate::{now_ms, Hub};

/// How many recent `client_id`s each conversation remembers in memory; older ones are found in
/// the store's dedupe index. Each costs about 190 bytes (docs/benchmarks.md, 2026-12-01): 512
/// keep a busy conversation's window under 100 KB, and cover the resends of a client that
/// reconnects after a drop (it resends what was not acked, seconds later).
const DEDUPE_MEMORY: usize = 512;

/// Messages of the conversation actor.
pub enum ConvMsg {
    /// A client's `send`.
    Send {
        from: Requester,
        client_id: String,
        body: String,
        attachments: Vec<serde_json::Value>,
        /// Whether the sending session also gets the `msg` (the `send` op's `echo`).
        echo: bool,
        received: Instant,
        permit: Option<OwnedSemaphorePermit>,
    },
    /// A client's `edit` of its own message.
    Edit { from: Requester, id: String, body: String },
    /// A client's `delete` of a message (own, or any as owner/admin).
    Delete { from: Requester, id: String },
    /// A client's `read`.
    Read { from: Requester, seq: u64 },
    /// A client's `typing`.
    Typing { from: Requester, active: bool },
    /// Membership or title changed in the store: reload them.
    Reload,
    /// The store finished writing `first..=last`.
    Committed {
        first: u64,
        last: u64,
        result: Result<(), StoreError>,
        took: Duration,
        /// When the store answered.
        done: Instant,
    },
    /// Cluster mode: another node owns the conversation now; hand over and stop.
    HandOver,
    /// Periodic housekeeping: flush delivery cursors, stop when idle.
    Tick,
    /// Send the coalesced read receipts.
    FlushReceipts,
    /// Last message of a retiring actor: flush and stop.
    Retire,
    /// Replies once no write is in flight (for shutdown).
    Drain(RpcReplyPort<()>),
    /// Test hook: panic inside the actor.
    #[cfg(feature = "test-hooks")]
    InjectPanic,
    /// Test hook: the actor handles nothing else for this long (a stalled conversation).
    #[cfg(feature = "test-hooks")]
    InjectStall(Duration),
}

/// Start arguments.
pub struct ConvArgs {
    pub id: Arc<str>,
    pub hub: Arc<Hub>,
    /// Restarted after a crash: wait for the crashed actor's writes before loading state.
    pub recovering: bool,
}

/// The actor.
pub struct ConversationActor;

/// A sender and one of its `client_id`s.
type DedupeKey = (Arc<str>, Arc<str>);

enum Dedupe {
    InFlight(u64),
    Done { id: Arc<str>, seq: u64, ts: i64 },
}

struct Pending {
    seq: u64,
    id: Arc<str>,
    ts: i64,
    client_id: Arc<str>,
    from: Requester,
    /// Duplicate sends that arrived while this one was in flight.
    waiters: Vec<Requester>,
    frame: Bytes,
    /// Whether `from`'s session gets the `msg` besides its ack.
    echo: bool,
    received: Instant,
    result: Option<Result<(), StoreError>>,
    _permit: Option<OwnedSemaphorePermit>,
}

/// A member as its conversation actor knows it.
struct Member {
    role: Role,
    /// The highest `seq` delivered live to one of the member's sessions since the last cursor
    /// write (kept here rather than in a map of its own: no hashing per member per message).
    delivered: Option<u64>,
}

/// State of one conversation actor.
pub struct ConvState {
    id: Arc<str>,
    hub: Arc<Hub>,
    meta: ConvMeta,
    members: HashMap<Arc<str>, Member>,
    /// Mutes of this conversation (expired ones are ignored when checked).
    mutes: HashMap<Arc<str>, Sanction>,
    /// When each member last sent (for slow mode).
    last_sent: HashMap<Arc<str>, Instant>,
    /// Messages accepted since the last tick.
    sent_this_tick: u64,

    /// The highest `seq` handed out (assigned from this counter, never from the clock).
    last_seq: u64,
    /// An append failed: `last_seq` is reloaded from the store before the next `seq` is given.
    seq_from_store: bool,
    /// The newest `ts` given; `ts` never goes back, even when the wall clock does.
    last_ts: i64,
    /// The fence token this actor claimed; every append carries it (see `Store::append_fenced`).
    fence: u64,
    /// Messages waiting for the current append to finish. Appends are issued one batch at a time
    /// so that the store receives a conversation's messages in `seq` order: a reader of the store
    /// (a `sync` on any node) never sees seq 5 while seq 4 is still on its way.
    to_append: Vec<Message>,
    /// The JSON of each message in `to_append`, in the same order (kept apart: the store takes
    /// the two lists as they are, with no list to split per append).
    to_append_json: Vec<Bytes>,
    appending: bool,
    /// The members as a shared list, for fan-out envelopes to other nodes.
    member_list: Arc<[Arc<str>]>,
    inflight: VecDeque<Pending>,
    /// Keyed by sender and `client_id`, both shared (`Arc`) with `dedupe_order` and the
    /// pending write, so remembering a send copies neither.
    dedupe: HashMap<DedupeKey, Dedupe>,
    dedupe_order: VecDeque<DedupeKey>,
    /// Whether `dedupe` and `forgotten` together know every `client_id` stored in this
    /// conversation: true when it had no message when this actor claimed it (every later write
    /// is this actor's) or when its predecessor handed over a complete filter, until `forgotten`
    /// is full or a write fails (a failed write may still have reached the disk). While true a `client_id` in neither needs no store read to be
    /// known new.
    dedupe_complete: bool,
    /// The `client_id`s evicted from `dedupe` while `dedupe_complete` (allocated at the first),
    /// or those a retired predecessor knew (`forgotten::Handovers`).
    forgotten: Option<Box<Forgotten>>,
    /// Some member's `Member::delivered` is set: the next tick stores cursors (without it, a
    /// tick of a quiet conversation would walk every member to find none).
    delivered_pending: bool,
    reads: HashMap<Arc<str>, u64>,
    /// Read cursors of members who sent `read` while this actor ran (loaded on first use).
    read_cursors: HashMap<Arc<str>, u64>,
    receipts_armed: bool,
    last_activity: Instant,
    retiring: bool,
    /// `Retire` arrived while writes were in flight: stop once they are answered.
    stop_when_drained: bool,
    drain_waiters: Vec<RpcReplyPort<()>>,
    /// The last background cursor write; the next one waits for it.
    cursor_write: Option<tokio::task::JoinHandle<()>>,
}

impl Actor for ConversationActor {
    type Msg = ConvMsg;
    type State = ConvState;
    type Arguments = ConvArgs;

    async fn pre_start(&self, myself: ActorRef<ConvMsg>, args: ConvArgs) -> Result<ConvState, ActorProcessingErr> {
        let store = &args.hub.store;
        // Claiming is ordered after every write already submitted (a crashed predecessor's, a
        // deposed owner's), and fences off any that arrive later, so the last seq read next is
        // final. A restart after a crash (`recovering`) needs nothing more.
        let _ = args.recovering;
        let fence = store.claim_conversation(&args.id, &args.hub.node_id).await?;
        let meta =
            store.conversation(&args.id).await?.ok_or_else(|| format!("conversation {} does not exist", args.id))?;
        let members = load_members(&args.hub, &args.id).await?;
        let mutes = load_mutes(&args.hub, &args.id).await?;
        let last = store.last_message(&args.id).await?;
        let handed_over = args.hub.handovers.take(&args.id, fence);
        args.hub.fanned_out.insert(args.id.clone(), last.as_ref().map_or(0, |m| m.seq));
        myself.send_interval(args.hub.config.conv_tick, || ConvMsg::Tick);
        let member_list = members.keys().cloned().collect();
        Ok(ConvState {
            member_list,
            id: args.id,
            hub: args.hub,
            meta,
            members,
            mutes,
            last_sent: HashMap::new(),
            sent_this_tick: 0,

            last_seq: last.as_ref().map_or(0, |m| m.seq),
            seq_from_store: false,
            last_ts: last.as_ref().map_or(0, |m| m.ts),
            fence,
            to_append: Vec::new(),
            to_append_json: Vec::new(),
            appending: false,
            inflight: VecDeque::new(),
            dedupe: HashMap::new(),
            dedupe_order: VecDeque::new(),
            dedupe_complete: last.is_none() || handed_over.is_some(),
            forgotten: handed_over,
            delivered_pending: false,
            reads: HashMap::new(),
            read_cursors: HashMap::new(),
            receipts_armed: false,
            last_activity: Instant::now(),
            retiring: false,
            stop_when_drained: false,
            drain_waiters: Vec::new(),
            cursor_write: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ConvMsg>,
        msg: ConvMsg,
        state: &mut ConvState,
    ) -> Result<(), ActorProcessingErr> {
        if state.retiring {
            return retiring(msg, state, &myself).await;
        }
        match msg {
            ConvMsg::Send { from, client_id, body, attachments, echo, received, permit } => {
                state.last_activity = Instant::now();
                state.hub.metrics.send_wait_seconds.observe(received.elapsed().as_secs_f64());
                state.send(&myself, from, client_id, body, attachments, echo, received, permit).await;
            }
            ConvMsg::Committed { first, last, result, took, done } => {
                state.hub.metrics.commit_wait_seconds.observe(done.elapsed().as_secs_f64());
                if state.committed(&myself, first, last, result, took) {
                    tracing::info!(conv = %state.id, "conversation claimed by another owner; handing over");
                    state.retire(&myself);
                }
            }
            ConvMsg::HandOver => state.retire(&myself),
            ConvMsg::Edit { from, id, body } => {
                state.last_activity = Instant::now();
                state.edit(from, id, Some(body)).await;
            }
            ConvMsg::Delete { from, id } => {
                state.last_activity = Instant::now();
                state.edit(from, id, None).await;
            }
            ConvMsg::Read { from, seq } => {
                state.last_activity = Instant::now();
                if !state.members.contains_key(&from.user_id) {
                    state.reply_error(&from, ErrorCode::NotMember, "not a member of this conversation", None);
                    return Ok(());
                }
                let seq = seq.min(state.last_seq);
                let known = match state.read_cursors.get(&from.user_id) {
                    Some(r) => *r,
                    None => {
                        let stored = state.hub.store.cursor(&from.user_id, &state.id).await?.read_seq;
                        state.read_cursors.insert(from.user_id.clone(), stored);
                        stored
                    }
                };
                if seq <= known {
                    // Cursors never move back, and an unchanged cursor makes no receipt.
                    return Ok(());
                }
                state.read_cursors.insert(from.user_id.clone(), seq);
                state.reads.insert(from.user_id.clone(), seq);
                if !state.receipts_armed {
                    state.receipts_armed = true;
                    myself.send_after(state.hub.config.receipt_coalesce, || ConvMsg::FlushReceipts);
                }
            }
            ConvMsg::Typing { from, active } => {
                if !state.members.contains_key(&from.user_id) {
                    state.reply_error(&from, ErrorCode::NotMember, "not a member of this conversation", None);
                    return Ok(());
                }
                let frame = encode_event(&ServerEvent::Typing { conv: &state.id, user_id: &from.user_id, active });
                let others: Arc<[Arc<str>]> =
                    state.member_list.iter().filter(|u| **u != from.user_id).cloned().collect();
                state.hub.deliver(others, &frame);
            }
            ConvMsg::Reload => {
                if let Some(meta) = state.hub.store.conversation(&state.id).await? {
                    state.meta = meta;
                }
                // The delivery cursors gathered so far go out first: they live in the old map.
                state.flush_delivered();
                state.members = load_members(&state.hub, &state.id).await?;
                state.member_list = state.members.keys().cloned().collect();
                state.mutes = load_mutes(&state.hub, &state.id).await?;
            }
            ConvMsg::FlushReceipts => {
                state.receipts_armed = false;
                state.flush_receipts();
            }
            ConvMsg::Tick => {
                state.flush_delivered();
                let sent = std::mem::take(&mut state.sent_this_tick);
                if sent > 0 {
                    state.hub.activity.insert(state.id.clone(), sent);
                } else {
                    state.hub.activity.remove(&state.id);
                }
                let idle = state.last_activity.elapsed() >= state.hub.config.conv_idle_after;
                if idle && state.inflight.is_empty() && state.reads.is_empty() {
                    state.retire(&myself);
                }
            }
            ConvMsg::Retire => {}
            ConvMsg::Drain(reply) => {
                if state.inflight.is_empty() {
                    state.answer_drain(reply);
                } else {
                    state.drain_waiters.push(reply);
                }
            }
            #[cfg(feature = "test-hooks")]
            ConvMsg::InjectPanic => panic!("injected panic in conversation {}", state.id),
            #[cfg(feature = "test-hooks")]
            ConvMsg::InjectStall(d) => tokio::time::sleep(d).await,
        }
        Ok(())
    }
}

/// While retiring, forwards what races in to a fresh actor and stops on `Retire`.
async fn retiring(msg: ConvMsg, state: &mut ConvState, myself: &ActorRef<ConvMsg>) -> Result<(), ActorProcessingErr> {
    match msg {
        ConvMsg::Retire => {
            // A hand-over can begin with writes in flight: the actor stops once they are answered.
            state.stop_when_drained = true;
            if state.inflight.is_empty() {
                stop(state, myself).await;
            }
        }
        ConvMsg::Drain(reply) => state.answer_drain(reply),
        ConvMsg::Tick | ConvMsg::FlushReceipts | ConvMsg::HandOver => {}
        ConvMsg::Committed { first, last, result, took, .. } => {
            // Writes that were in flight when a hand-over began still get their answers.
            state.committed(myself, first, last, result, took);
            if state.stop_when_drained && state.inflight.is_empty() {
                stop(state, myself).await;
            }
        }
        other => {
            let (hub, id) = (state.hub.clone(), state.id.clone());
            tokio::spawn(async move {
                if let Err(e) = hub.router.route(&id, other).await {
                    tracing::warn!(conv = %id, error = %e, "could not forward a message from a retiring conversation");
                }
            });
        }
    }
    Ok(())
}

/// The last steps of a retiring actor: store the delivery cursors, then stop.
async fn stop(state: &mut ConvState, myself: &ActorRef<ConvMsg>) {
    state.flush_delivered();
    if let Some(pending) = state.cursor_write.take() {
        let _ = pending.await;
    }
    state.hub.fanned_out.remove(&state.id);
    state.hub.activity.remove(&state.id);
    state.hand_over_dedupe();
    myself.stop(Some("retired".into()));
}

async fn load_members(hub: &Hub, id: &str) -> Result<HashMap<Arc<str>, Member>, StoreError> {
    let members = hub.store.members(id).await?.into_iter();
    Ok(members.map(|(u, role)| (Arc::from(u), Member { role, delivered: None })).collect())
}

impl ConvState {
    /// Stops taking messages: after this none reaches us through the router, and those already
    /// queued are forwarded to the successor (here or on the new owner's node) by `retiring`.
    fn retire(&mut self, myself: &ActorRef<ConvMsg>) {
        if self.retiring {
            return;
        }
        self.retiring = true;
        self.hub.router.unregister(&self.id, myself.get_id());
        let _ = myself.cast(ConvMsg::Retire);
    }

    /// Applies a finished append (in order, through `apply_commits`) and starts the next one.
    /// Returns whether the store refused it because another actor claimed the conversation; then
    /// nothing still queued is written either.
    fn committed(
        &mut self,
        myself: &ActorRef<ConvMsg>,
        first: u64,
        last: u64,
        result: Result<(), StoreError>,
        took: Duration,
    ) -> bool {
        self.hub.metrics.store_write_seconds.observe(took.as_secs_f64());
        let deposed = matches!(result, Err(StoreError::Fenced(_)));
        for p in self.inflight.iter_mut().filter(|p| (first..=last).contains(&p.seq)) {
            p.result = Some(result.clone());
        }
        self.appending = false;
        if result.is_err() {
            // What waits behind a failed append fails with it: writing it would leave a gap
            // where the failed messages were. Every send is then answered, and the next one
            // takes its `seq` from the store, which is the truth after a failure (a write that
            // failed late may still have been stored).
            self.seq_from_store = true;
            self.to_append_json.clear();
            for m in std::mem::take(&mut self.to_append) {
                if let Some(p) = self.inflight.iter_mut().find(|p| p.seq == m.seq) {
                    p.result = Some(result.clone());
                }
            }
        }
        self.apply_commits();
        if !deposed {
            self.start_append(myself);
        }
        deposed
    }

    /// Hands every queued message to the store in one append, unless one is running.
    fn start_append(&mut self, myself: &ActorRef<ConvMsg>) {
        if self.appending || self.to_append.is_empty() {
            return;
        }
        self.appending = true;
        let (batch, json) = (std::mem::take(&mut self.to_append), std::mem::take(&mut self.to_append_json));
        let (first, last) = (batch[0].seq, batch[batch.len() - 1].seq);
        let (me, started) = (myself.clone(), Instant::now());
        let committed = move |result| {
            let done = Instant::now();
            let _ = me.cast(ConvMsg::Committed { first, last, result, took: done - started, done });
        };
        self.hub.store.clone().append_fenced_then(self.fence, batch, json, Box::new(committed));
    }

    fn reply_error(&self, to: &Requester, code: ErrorCode, message: &str, client_id: Option<&str>) {
        to.error(&self.hub, code, message, client_id);
    }

    fn ack(&self, to: &Requester, client_id: &str, id: &str, seq: u64, ts: i64) {
        to.ack(&self.hub, &self.id, client_id, id, seq, ts);
    }

    #[allow(clippy::too_many_arguments)]
    async fn send(
        &mut self,
        myself: &ActorRef<ConvMsg>,
        from: Requester,
        client_id: String,
        body: String,
        attachments: Vec<serde_json::Value>,
        echo: bool,
        received: Instant,
        permit: Option<OwnedSemaphorePermit>,
    ) {
        self.hub.metrics.messages_received.inc();
        if !self.members.contains_key(&from.user_id) {
            self.reply_error(&from, ErrorCode::NotMember, "not a member of this conversation", Some(&client_id));
            return;
        }
        let key: DedupeKey = (from.user_id.clone(), Arc::from(client_id));
        match self.dedupe.get(&key) {
            Some(Dedupe::Done { id, seq, ts }) => {
                self.ack(&from, &key.1, id, *seq, *ts);
                return;
            }
            Some(Dedupe::InFlight(seq)) => {
                let seq = *seq;
                if let Some(p) = self.inflight.iter_mut().find(|p| p.seq == seq) {
                    p.waiters.push(from);
                }
                return;
            }
            None => {}
        }
        let known_new = self.dedupe_complete && !self.forgotten.as_ref().is_some_and(|f| f.may_contain(&key));
        let stored = if known_new {
            Ok(None)
        } else {
            self.hub.store.message_by_client_id(&self.id, &from.user_id, &key.1).await
        };
        match stored {
            Ok(Some(m)) => {
                self.ack(&from, &key.1, &m.id, m.seq, m.ts);
                self.remember(key, Dedupe::Done { id: m.id.into(), seq: m.seq, ts: m.ts });
                return;
            }
            Ok(None) => {}
            Err(e) => {
                self.reply_error(&from, ErrorCode::Unavailable, &unavailable(&e), Some(&key.1));
                return;
            }
        }
        if let Some(refusal) = self.moderation_refusal(&from.user_id) {
            let (code, message, retry) = refusal;
            from.error_retry(&self.hub, code, &message, Some(&key.1), retry);
            return;
        }
        if self.seq_from_store {
            // Nothing is in flight after a failed append (everything queued failed with it).
            match self.hub.store.last_message(&self.id).await {
                Ok(last) => {
                    self.last_seq = last.as_ref().map_or(0, |m| m.seq);
                    self.hub.fanned_out.insert(self.id.clone(), self.last_seq);
                    self.seq_from_store = false;
                }
                Err(e) => {
                    let msg = unavailable(&e);
                    self.reply_error(&from, ErrorCode::Unavailable, &msg, Some(&key.1));
                    return;
                }
            }
        }
        self.last_sent.insert(from.user_id.clone(), Instant::now());
        let seq = self.last_seq + 1;
        self.last_seq = seq;
        let ts = now_ms().max(self.last_ts);
        self.last_ts = ts;
        let message = Message {
            id: crate::new_message_id(seq),
            // `String::from(&*arc)`, not `arc.to_string()`: `ToString` on an `Arc<str>` goes
            // through the formatting machinery.
            conv: String::from(&*self.id),
            seq,
            sender: String::from(&*from.user_id),
            ts,
            body,
            attachments,
            client_id: Some(String::from(&*key.1)),
            edited_at: None,
            deleted: false,
        };
        // Encoded once: the store keeps this JSON and the event is made from it.
        let json = encode_message(&message);
        let frame = msg_event(&json);
        self.inflight.push_back(Pending {
            seq,
            id: message.id.as_str().into(),
            ts,
            client_id: key.1.clone(),
            from,
            waiters: Vec::new(),
            frame,
            echo,
            received,
            result: None,
            _permit: permit,
        });
        self.hub.metrics.conversation_writes_in_flight.inc();
        self.sent_this_tick += 1;
        self.remember(key, Dedupe::InFlight(seq));
        self.to_append.push(message);
        self.to_append_json.push(json);
        self.start_append(myself);
    }

    fn remember(&mut self, key: DedupeKey, entry: Dedupe) {
        if self.dedupe.insert(key.clone(), entry).is_none() {
            self.dedupe_order.push_back(key);
            while self.dedupe_order.len() > DEDUPE_MEMORY {
                if let Some(old) = self.dedupe_order.pop_front() {
                    // An in-flight entry is never evicted: its duplicates must wait for it.
                    if matches!(self.dedupe.get(&old), Some(Dedupe::InFlight(_))) {
                        self.dedupe_order.push_back(old);
                        break;
                    }
                    self.dedupe.remove(&old);
                    self.forget(&old);
                }
            }
        }
    }

    /// Records a `client_id` evicted from `dedupe`, so that it is still known not to be new.
    fn forget(&mut self, key: &DedupeKey) {
        if !self.dedupe_complete {
            return;
        }
        if !self.forgotten.get_or_insert_with(Default::default).insert(key) {
            self.lose_dedupe_completeness();
        }
    }

    /// Leaves every `client_id` this actor knows, in one filter, for the next actor of this
    /// conversation on this node (`forgotten::Handovers`), when it knows them all.
    fn hand_over_dedupe(&mut self) {
        if !self.dedupe_complete {
            return;
        }
        let mut filter = self.forgotten.take().unwrap_or_default();
        if self.dedupe.keys().all(|key| filter.insert(key)) {
            self.hub.handovers.put(self.id.clone(), self.fence, filter);
        }
    }

    /// From now on every `client_id` not in `dedupe` is looked up in the store.
    fn lose_dedupe_completeness(&mut self) {
        self.dedupe_complete = false;
        self.forgotten = None;
    }

    /// Acks and fans out every committed write at the head of the queue, in `seq` order.
    fn apply_commits(&mut self) {
        while self.inflight.front().is_some_and(|p| p.result.is_some()) {
            let p = self.inflight.pop_front().expect("front exists");
            self.hub.metrics.conversation_writes_in_flight.dec();

            let key = (p.from.user_id.clone(), p.client_id.clone());
            match p.result.expect("checked above") {
                Ok(()) => {
                    self.hub.fanned_out.insert(self.id.clone(), p.seq);
                    self.ack(&p.from, &p.client_id, &p.id, p.seq, p.ts);
                    for w in &p.waiters {
                        self.ack(w, &p.client_id, &p.id, p.seq, p.ts);
                    }
                    self.hub.metrics.message_ack_seconds.observe(p.received.elapsed().as_secs_f64());
                    // Without echo, the sending session has the message from its ack: it counts
                    // as delivered to its user, and only the user's other sessions get the `msg`.
                    let unechoed = if p.echo { None } else { p.from.session_id() };
                    for (user, member) in self.members.iter_mut() {
                        let except = unechoed.filter(|_| *user == p.from.user_id);
                        let n = self.hub.sessions.push_to_user_except(user, &p.frame, except.map(|s| &**s));
                        if n > 0 {
                            self.hub.metrics.messages_delivered.inc_by(n as u64);
                        }
                        if n > 0 || except.is_some() {
                            member.delivered = Some(p.seq);
                            self.delivered_pending = true;
                        }
                    }
                    if let Some(c) = self.hub.cluster() {
                        c.deliver(self.member_list.clone(), &p.frame, unechoed.cloned());
                    }
                    self.hub.metrics.message_delivery_seconds.observe(p.received.elapsed().as_secs_f64());
                    self.dedupe.insert(key, Dedupe::Done { id: p.id, seq: p.seq, ts: p.ts });
                }
                Err(e) => {
                    tracing::warn!(conv = %self.id, seq = p.seq, error = %e, "message write failed; not acked");
                    self.lose_dedupe_completeness();
                    let msg = unavailable(&e);
                    self.reply_error(&p.from, ErrorCode::Unavailable, &msg, Some(&p.client_id));
                    for w in &p.waiters {
                        self.reply_error(w, ErrorCode::Unavailable, &msg, Some(&p.client_id));
                    }
                    self.dedupe.remove(&key);
                }
            }
        }
        if self.inflight.is_empty() {
            for w in std::mem::take(&mut self.drain_waiters) {
                self.answer_drain(w);
            }
        }
    }

    /// Why a member may not send now: banned, muted, or slow mode (with the wait).
    fn moderation_refusal(&self, user: &Arc<str>) -> Option<(ErrorCode, String, Option<u64>)> {
        if let Some(ban) = self.hub.bans.of(user) {
            if ban.account_deleted {
                return Some((ErrorCode::Unauthorized, "account deleted".into(), None));
            }
            return Some((ErrorCode::Banned, format!("banned: {}", ban.reason), None));
        }
        let now = now_ms();
        if let Some(m) = self.mutes.get(user).filter(|m| m.active(now)) {
            let until = m.until_ms.map(|u| format!(" until {u}")).unwrap_or_default();
            return Some((ErrorCode::Muted, format!("muted in this conversation{until}: {}", m.reason), None));
        }
        let slow = self.meta.slow_mode_s;
        let exempt = self.members.get(user).is_some_and(|m| m.role.can_manage());
        if slow > 0 && !exempt {
            if let Some(last) = self.last_sent.get(user) {
                let wait = Duration::from_secs(slow as u64).saturating_sub(last.elapsed());
                if !wait.is_zero() {
                    let msg = format!("slow mode: one message every {slow} s");
                    return Some((ErrorCode::SlowMode, msg, Some(wait.as_millis().max(1) as u64)));
                }
            }
        }
        None
    }

    async fn edit(&mut self, from: Requester, id: String, body: Option<String>) {
        let role = match self.members.get(&from.user_id).map(|m| m.role) {
            Some(r) => r,
            // An operator removing a message acts with an owner's rights.
            None if from.moderator && body.is_none() => Role::Owner,
            None => {
                self.reply_error(&from, ErrorCode::NotMember, "not a member of this conversation", None);
                return;
            }
        };
        let mut m = match self.hub.store.message(&self.id, &id).await {
            Ok(Some(m)) => m,
            Ok(None) => return self.reply_error(&from, ErrorCode::NotFound, "no such message", None),
            Err(e) => return self.reply_error(&from, ErrorCode::Unavailable, &e.to_string(), None),
        };
        let own = *m.sender == *from.user_id;
        if m.deleted {
            return self.reply_error(&from, ErrorCode::NotFound, "the message was deleted", None);
        }
        let now = now_ms();
        match &body {
            Some(_) if !own => {
                return self.reply_error(&from, ErrorCode::Forbidden, "only the sender can edit a message", None)
            }
            None if !own && !role.can_manage() => {
                return self.reply_error(
                    &from,
                    ErrorCode::Forbidden,
                    "only the sender or an owner/admin can delete",
                    None,
                )
            }
            _ => {}
        }
        match body {
            Some(b) => {
                m.body = b;
                m.edited_at = Some(now);
            }
            None => {
                m.body.clear();
                m.attachments.clear();
                m.deleted = true;
            }
        }
        if let Err(e) = self.hub.store.update_message(m.clone()).await {
            return self.reply_error(&from, ErrorCode::Unavailable, &e.to_string(), None);
        }
        let frame = if m.deleted {
            encode_event(&ServerEvent::Deleted { conv: &self.id, id: &m.id, seq: m.seq })
        } else {
            encode_event(&ServerEvent::Edited { conv: &self.id, id: &m.id, seq: m.seq, body: &m.body, edited_at: now })
        };
        self.hub.deliver(self.member_list.clone(), &frame);
        from.done(&self.hub, Outcome::Updated(Box::new(m)));
    }

    /// Stores the coalesced read cursors, then tells every member's sessions. Runs in the
    /// background so that a disk sync never stalls the conversation's messages.
    fn flush_receipts(&mut self) {
        if self.reads.is_empty() {
            return;
        }
        let reads: Vec<(Arc<str>, u64)> = self.reads.drain().collect();
        let frames: Vec<Bytes> = reads
            .iter()
            .map(|(user, seq)| {
                encode_event(&ServerEvent::Receipt {
                    conv: &self.id,
                    user_id: user,
                    delivered_seq: None,
                    read_seq: Some(*seq),
                })
            })
            .collect();
        let updates = reads
            .into_iter()
            .map(|(user, seq)| CursorUpdate {
                user: String::from(&*user),
                conv: String::from(&*self.id),
                delivered_seq: None,
                read_seq: Some(seq),
            })
            .collect();
        let members = self.member_list.clone();
        self.write_cursors(updates, frames, members);
    }

    /// Stores the delivery cursors of members who got messages live (in the background).
    fn flush_delivered(&mut self) {
        if !std::mem::take(&mut self.delivered_pending) {
            return;
        }
        let conv = &self.id;
        let updates = self
            .members
            .iter_mut()
            .filter_map(|(user, m)| Some((user, m.delivered.take()?)))
            .map(|(user, seq)| CursorUpdate {
                user: String::from(&**user),
                conv: String::from(&**conv),
                delivered_seq: Some(seq),
                read_seq: None,
            })
            .collect();
        self.write_cursors(updates, Vec::new(), Arc::from([]));
    }

    /// Writes cursors on a task chained after the previous cursor write (so they land in order),
    /// then queues `frames` to `members`. `cursor_write` is awaited before the actor stops and
    /// before it answers a drain.
    fn write_cursors(&mut self, updates: Vec<CursorUpdate>, frames: Vec<Bytes>, members: Arc<[Arc<str>]>) {
        let previous = self.cursor_write.take();
        let (hub, id) = (self.hub.clone(), self.id.clone());
        self.cursor_write = Some(tokio::spawn(async move {
            if let Some(p) = previous {
                let _ = p.await;
            }
            if let Err(e) = hub.store.advance_cursors(updates).await {
                tracing::warn!(conv = %id, error = %e, "cursor write failed");
            }
            for frame in &frames {
                hub.deliver(members.clone(), frame);
            }
        }));
    }

    /// Answers a drain once the last cursor write is done.
    fn answer_drain(&mut self, reply: RpcReplyPort<()>) {
        let pending = self.cursor_write.take();
        tokio::spawn(async move {
            if let Some(p) = pending {
                let _ = p.await;
            }
            let _ = reply.send(());
        });
    }
}

/// What a client reads when a store call failed (its error already says "storage unavailable"
/// when that is what it is).
fn unavailable(e: &StoreError) -> String {
    match e {
        StoreError::Unavailable(_) => e.to_string(),
        other => format!("storage unavailable: {other}"),
    }
}

async fn load_mutes(hub: &Hub, id: &str) -> Result<HashMap<Arc<str>, Sanction>, StoreError> {
    Ok(hub.store.mutes(id).await?.into_iter().map(|(u, m)| (Arc::from(u), m)).collect())
}
