//! Cluster mode: membership in Redis, conversation placement by rendezvous hashing, and
//! cross-node traffic over a [`Transport`] (Redis pub/sub).
//!
//! What crosses nodes, and how:
//! - A request for a conversation (`send`, `edit`, `delete`, `read`, `typing`, reloads) goes to
//!   the node that owns the conversation ([`Cluster::owner`]), in order per sender.
//! - A conversation's fan-out is one envelope per event to the other nodes (each pushes it to its
//!   own sessions of the listed users), not one per member.
//! - Replies to a request (ack, error, HTTP outcome) go back to the node of the requester.
//! - Bans and kicks are broadcast; presence, last-seen and calls use small Redis structures.
//!
//! Fencing: a conversation actor claims the conversation in the store when it starts and writes
//! with that fence token; a deposed owner's late writes are refused by the store, so two nodes
//! never assign `seq` for the same conversation at once, whatever their views say.

pub mod membership;
pub mod rendezvous;
pub mod transport;
pub mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use parking_lot::Mutex;
use redis::aio::ConnectionManager;
use rookery_protocol::{close, ErrorCode};
use tokio::sync::{mpsc, watch};

use crate::conversation::ConvMsg;
use crate::outbound::SessionAddr;
use crate::placement::RouteError;
use crate::requester::{Outcome, ReplyTo, Requester};
use crate::{now_ms, Hub};
use membership::{JoinError, Membership, NodeInfo, Timing, View};
use transport::{Channels, Inbound, RedisTransport, Route, Transport};
use wire::{Batch, Envelope, WireConvMsg, WireReply, WireRequester, WireSession};

/// A forwarded request is forwarded at most this many times before it is refused (views that
/// disagree settle within a heartbeat; the client retries).
const MAX_HOPS: u8 = 2;
/// HTTP requests forwarded to other nodes and still waiting for their answer.
const MAX_PENDING: usize = 100_000;
/// A forwarded HTTP request whose answer never came is forgotten after this long.
const PENDING_TTL: Duration = Duration::from_secs(60);

/// Settings of cluster mode.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `redis://host:port[/db]`.
    pub redis_url: String,
    /// Prefix of every Redis key and channel, so several clusters can share one Redis.
    /// Default `rookery`.
    pub prefix: String,
    pub timing: Timing,
    /// This node's chat and admin addresses, as other nodes and the console show them.
    pub chat_addr: String,
    pub admin_addr: String,
}

/// This node's part of the cluster.
pub struct Cluster {
    pub me: Arc<str>,
    prefix: Arc<str>,
    hub: Weak<Hub>,
    conn: ConnectionManager,
    transport: Arc<dyn Transport>,
    view: watch::Receiver<Arc<View>>,
    membership: Membership,
    info: Mutex<NodeInfo>,
    pending: DashMap<u64, (Requester, Instant)>,
    next_req: AtomicU64,
    stop: tokio_util::sync::CancellationToken,
}

impl Cluster {
    /// Joins the cluster: first heartbeat (refused when the node id is taken), first view, the
    /// transport, and the background loops.
    ///
    /// # Errors
    /// When Redis cannot be reached or the node id is taken.
    pub async fn join(hub: &Arc<Hub>, config: ClusterConfig) -> Result<Arc<Cluster>, JoinError> {
        let client = redis::Client::open(config.redis_url.as_str())?;
        let manager_config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(1))
            .set_response_timeout(Duration::from_secs(2))
            .set_number_of_retries(1);
        let conn = client.get_connection_manager_with_config(manager_config).await?;
        let membership = Membership::new(&config.prefix, conn.clone(), config.timing);
        let me: Arc<str> = hub.node_id.clone();
        let epoch = rand_u64();
        let info = NodeInfo {
            id: me.clone(),
            chat_addr: config.chat_addr,
            admin_addr: config.admin_addr,
            instance: format!("{epoch:016x}"),
            started_ms: now_ms(),
            heartbeat_ms: now_ms(),
            sessions: 0,
            conversations: 0,
        };
        membership.heartbeat(&info).await?;
        let mut nodes = membership.members().await?;
        if !nodes.iter().any(|n| n.id == me) {
            nodes.push(info.clone());
        }
        let (view_tx, view_rx) = watch::channel(Arc::new(View::new(nodes, true)));
        let (transport, inbound) = RedisTransport::start(
            client,
            conn.clone(),
            me.clone(),
            epoch,
            Channels::new(&config.prefix),
            hub.metrics.clone(),
        );
        let up = transport.up_flag();
        let cluster = Arc::new(Cluster {
            me,
            prefix: config.prefix.as_str().into(),
            hub: Arc::downgrade(hub),
            conn,
            transport,
            view: view_rx,
            membership,
            info: Mutex::new(info),
            pending: DashMap::new(),
            next_req: AtomicU64::new(1),
            stop: tokio_util::sync::CancellationToken::new(),
        });
        hub.metrics.cluster_nodes.set(cluster.view().ids.len() as i64);
        tokio::spawn(heartbeats(cluster.clone(), view_tx, up));
        tokio::spawn(dispatch(Arc::downgrade(&cluster), inbound));
        Ok(cluster)
    }

    /// Leaves cleanly: stops heartbeating and removes this node's record, so the others move its
    /// conversations at once instead of after the heartbeat TTL.
    pub async fn leave(&self) {
        self.stop.cancel();
        let info = self.info.lock().clone();
        self.membership.leave(&info).await;
        let mut conn = self.conn.clone();
        let _: Result<(), _> = redis::cmd("DEL").arg(self.key("online", &self.me)).query_async(&mut conn).await;
    }

    /// The current view.
    pub fn view(&self) -> Arc<View> {
        self.view.borrow().clone()
    }

    /// A receiver that sees every new view.
    pub fn watch(&self) -> watch::Receiver<Arc<View>> {
        self.view.clone()
    }

    /// The node that owns `conv` in the current view.
    pub fn owner(&self, conv: &str) -> Arc<str> {
        let view = self.view.borrow();
        rendezvous::owner(&view.ids, conv).cloned().unwrap_or_else(|| self.me.clone())
    }

    fn key(&self, kind: &str, id: &str) -> String {
        format!("{}:{kind}:{id}", self.prefix)
    }

    fn send(&self, to: Route, env: Envelope) -> bool {
        match self.transport.send(to, env) {
            Ok(()) => true,
            Err(e) => {
                if let Some(hub) = self.hub.upgrade() {
                    hub.metrics.cluster_dropped.inc();
                }
                tracing::debug!(error = %e, "cross-node envelope not sent");
                false
            }
        }
    }

    // ---- conversations ------------------------------------------------------------------------

    /// Sends a conversation request to `node`.
    ///
    /// # Errors
    /// `Unavailable` when the transport cannot take it.
    pub fn forward(&self, node: &Arc<str>, conv: &str, msg: ConvMsg, hops: u8) -> Result<(), RouteError> {
        let Some(wire) = self.to_wire(msg) else {
            return Err(RouteError::Unavailable("this request cannot cross nodes".into()));
        };
        let req = match &wire {
            WireConvMsg::Send { from, .. }
            | WireConvMsg::Edit { from, .. }
            | WireConvMsg::Delete { from, .. }
            | WireConvMsg::Read { from, .. }
            | WireConvMsg::Typing { from, .. } => match from.reply {
                WireReply::Http { req, .. } => Some(req),
                _ => None,
            },
            WireConvMsg::Reload => None,
        };
        let env = Envelope::Conv { conv: conv.into(), msg: wire, hops };
        if self.send(Route::Node(node.clone()), env) {
            return Ok(());
        }
        if let Some(req) = req {
            self.pending.remove(&req);
        }
        Err(RouteError::Unavailable(format!("node {node} cannot be reached; retry")))
    }

    fn to_wire(&self, msg: ConvMsg) -> Option<WireConvMsg> {
        Some(match msg {
            ConvMsg::Send { from, client_id, body, attachments, echo, .. } => {
                WireConvMsg::Send { from: self.requester_out(from)?, client_id, body, attachments, echo }
            }
            ConvMsg::Edit { from, id, body } => WireConvMsg::Edit { from: self.requester_out(from)?, id, body },
            ConvMsg::Delete { from, id } => WireConvMsg::Delete { from: self.requester_out(from)?, id },
            ConvMsg::Read { from, seq } => WireConvMsg::Read { from: self.requester_out(from)?, seq },
            ConvMsg::Typing { from, active } => WireConvMsg::Typing { from: self.requester_out(from)?, active },
            ConvMsg::Reload => WireConvMsg::Reload,
            _ => return None,
        })
    }

    fn requester_out(&self, r: Requester) -> Option<WireRequester> {
        let reply = match &r.reply {
            ReplyTo::Session(addr) => {
                WireReply::Session { node: addr.node_id.clone(), session: addr.session_id.clone() }
            }
            ReplyTo::Remote { node, req } => WireReply::Http { node: node.clone(), req: *req },
            ReplyTo::Nobody => WireReply::Nobody,
            ReplyTo::Http(_) => {
                if self.pending.len() >= MAX_PENDING {
                    r.done_local(Outcome::Error(ErrorCode::Unavailable, "too many requests in flight".into(), None));
                    return None;
                }
                let req = self.next_req.fetch_add(1, Ordering::Relaxed);
                let wire = WireReply::Http { node: self.me.clone(), req };
                self.pending.insert(req, (r.clone(), Instant::now()));
                wire
            }
        };
        Some(WireRequester { user: r.user_id, moderator: r.moderator, reply })
    }

    fn requester_in(w: WireRequester) -> Requester {
        let reply = match w.reply {
            WireReply::Session { node, session } => {
                ReplyTo::Session(SessionAddr { node_id: node, session_id: session, user_id: w.user.clone() })
            }
            WireReply::Http { node, req } => ReplyTo::Remote { node, req },
            WireReply::Nobody => ReplyTo::Nobody,
        };
        Requester { user_id: w.user, reply, moderator: w.moderator }
    }

    fn from_wire(msg: WireConvMsg) -> ConvMsg {
        match msg {
            WireConvMsg::Send { from, client_id, body, attachments, echo } => ConvMsg::Send {
                from: Self::requester_in(from),
                client_id,
                body,
                attachments,
                echo,
                received: Instant::now(),
                permit: None,
            },
            WireConvMsg::Edit { from, id, body } => ConvMsg::Edit { from: Self::requester_in(from), id, body },
            WireConvMsg::Delete { from, id } => ConvMsg::Delete { from: Self::requester_in(from), id },
            WireConvMsg::Read { from, seq } => ConvMsg::Read { from: Self::requester_in(from), seq },
            WireConvMsg::Typing { from, active } => ConvMsg::Typing { from: Self::requester_in(from), active },
            WireConvMsg::Reload => ConvMsg::Reload,
        }
    }

    // ---- frames to sessions -------------------------------------------------------------------

    /// Sends `frame` to every other node for their sessions of `users`.
    /// Sent even when the view holds this node alone: a peer briefly missing from the view (a
    /// late heartbeat) may still hold sessions that need the frame.
    pub fn deliver(&self, users: Arc<[Arc<str>]>, frame: &Bytes, except: Option<Arc<str>>) {
        if let Some(raw) = wire::raw_frame(frame) {
            self.send(Route::All, Envelope::Deliver { users, frame: raw, except });
        }
    }

    /// Sends `frame` to one session on another node.
    pub fn push_session(&self, node: &Arc<str>, session: &Arc<str>, frame: &Bytes) -> bool {
        match wire::raw_frame(frame) {
            Some(raw) => {
                self.send(Route::Node(node.clone()), Envelope::Session { session: session.clone(), frame: raw })
            }
            None => false,
        }
    }

    /// Answers an HTTP request that waits on another node.
    pub fn reply(&self, node: &Arc<str>, req: u64, outcome: Outcome) {
        self.send(Route::Node(node.clone()), Envelope::Reply { req, outcome: outcome.into() });
    }

    /// Tells every other node about a ban (set or lifted).
    pub fn broadcast_ban(&self, user: &str, ban: Option<rookery_store::Sanction>) {
        self.send(Route::All, Envelope::Ban { user: user.into(), ban });
    }

    /// Asks every other node to close the user's sessions with `code`.
    pub fn broadcast_close(&self, user: &str, code: u16) {
        self.send(Route::All, Envelope::Close { user: user.into(), code });
    }

    /// Sends a call-signalling step to the call's home node.
    pub fn forward_call(&self, node: &Arc<str>, from: &SessionAddr, op: crate::calls::CallOp) -> bool {
        let from =
            WireSession { node: from.node_id.clone(), session: from.session_id.clone(), user: from.user_id.clone() };
        self.send(Route::Node(node.clone()), Envelope::Call { from, op })
    }

    // ---- presence -----------------------------------------------------------------------------

    /// A user's first session on this node opened. Returns whether this is the first session in
    /// the whole cluster to be announced (so `online` is announced once, not once per node).
    pub async fn user_online(&self, user: &str) -> bool {
        let mut conn = self.conn.clone();
        let result: Result<(i64, i64), _> = redis::pipe()
            .cmd("SADD")
            .arg(self.key("online", &self.me))
            .arg(user)
            .ignore()
            .cmd("SADD")
            .arg(format!("{}:announced", self.prefix))
            .arg(user)
            .cmd("HDEL")
            .arg(format!("{}:last_seen", self.prefix))
            .arg(user)
            .query_async(&mut conn)
            .await;
        result.map(|(added, _)| added == 1).unwrap_or(true)
    }

    /// A user's last session on this node closed.
    pub async fn user_left(&self, user: &str, at_ms: i64) {
        let mut conn = self.conn.clone();
        let _: Result<(), _> = redis::pipe()
            .cmd("SREM")
            .arg(self.key("online", &self.me))
            .arg(user)
            .ignore()
            .cmd("HSET")
            .arg(format!("{}:last_seen", self.prefix))
            .arg(user)
            .arg(at_ms)
            .ignore()
            .query_async(&mut conn)
            .await;
    }

    /// After the grace period: whether the user is offline everywhere and this node is the one to
    /// announce it.
    pub async fn announce_offline(&self, user: &str) -> bool {
        if self.online_elsewhere(&[user]).await.first().copied().unwrap_or(false) {
            return false;
        }
        let mut conn = self.conn.clone();
        let removed: Result<i64, _> =
            redis::cmd("SREM").arg(format!("{}:announced", self.prefix)).arg(user).query_async(&mut conn).await;
        removed.map(|r| r == 1).unwrap_or(true)
    }

    /// For each user, whether another live node holds a session of theirs.
    pub async fn online_elsewhere(&self, users: &[&str]) -> Vec<bool> {
        let others: Vec<Arc<str>> = self.view().ids.iter().filter(|n| **n != self.me).cloned().collect();
        let mut result = vec![false; users.len()];
        if others.is_empty() || users.is_empty() {
            return result;
        }
        let mut pipe = redis::pipe();
        for node in &others {
            pipe.cmd("SMISMEMBER").arg(self.key("online", node)).arg(users);
        }
        let mut conn = self.conn.clone();
        let answers: Result<Vec<Vec<i64>>, _> = pipe.query_async(&mut conn).await;
        if let Ok(answers) = answers {
            for per_node in answers {
                for (i, v) in per_node.into_iter().enumerate().take(users.len()) {
                    result[i] |= v == 1;
                }
            }
        }
        result
    }

    /// When each user's last session in the cluster closed, where known.
    pub async fn last_seen(&self, users: &[&str]) -> Vec<Option<i64>> {
        if users.is_empty() {
            return Vec::new();
        }
        let mut conn = self.conn.clone();
        redis::cmd("HMGET")
            .arg(format!("{}:last_seen", self.prefix))
            .arg(users)
            .query_async(&mut conn)
            .await
            .unwrap_or_else(|_| vec![None; users.len()])
    }

    /// Rewrites this node's online set from its registry (after Redis lost its data).
    async fn republish_online(&self, hub: &Hub) {
        let users: Vec<Arc<str>> = hub.sessions.users();
        let key = self.key("online", &self.me);
        let mut pipe = redis::pipe();
        pipe.cmd("DEL").arg(&key).ignore();
        for chunk in users.chunks(1000) {
            let names: Vec<&str> = chunk.iter().map(|u| &**u).collect();
            pipe.cmd("SADD").arg(&key).arg(names).ignore();
        }
        let mut conn = self.conn.clone();
        let _: Result<(), _> = pipe.query_async(&mut conn).await;
    }

    // ---- inbound ------------------------------------------------------------------------------

    async fn handle(&self, hub: &Arc<Hub>, env: Envelope) {
        match env {
            Envelope::Conv { conv, msg, hops } => {
                let msg = Self::from_wire(msg);
                let owner = self.owner(&conv);
                if owner != self.me {
                    if hops >= MAX_HOPS {
                        refuse(hub, msg, "the cluster is rebalancing; retry");
                    } else if let Err(e) = self.forward(&owner, &conv, msg, hops + 1) {
                        tracing::debug!(error = %e, "re-forwarding a conversation request failed");
                    }
                    return;
                }
                if matches!(msg, ConvMsg::Reload) {
                    hub.router.notify_local(&conv, msg);
                } else if let Err((e, Some(msg))) = hub.router.route_local_or_return(&conv, msg).await {
                    match e {
                        RouteError::NotFound => {
                            refuse_code(hub, msg, ErrorCode::NotMember, "not a member of this conversation")
                        }
                        RouteError::Unavailable(why) => refuse(hub, msg, &why),
                    }
                }
            }
            Envelope::Deliver { users, frame, except } => {
                let frame = Bytes::copy_from_slice(frame.get().as_bytes());
                let mut n = 0;
                for user in users.iter() {
                    n += hub.sessions.push_to_user_except(user, &frame, except.as_deref());
                }
                hub.metrics.messages_delivered.inc_by(n as u64);
            }
            Envelope::Session { session, frame } => {
                if let Some(s) = hub.sessions.session(&session) {
                    s.push(Bytes::copy_from_slice(frame.get().as_bytes()));
                }
            }
            Envelope::Reply { req, outcome } => {
                if let Some((_, (requester, _))) = self.pending.remove(&req) {
                    requester.done_local(outcome.into());
                }
            }
            Envelope::Ban { user, ban } => hub.apply_ban(&user, ban),
            Envelope::Close { user, code } => {
                for s in hub.sessions.of_user(&user) {
                    s.close_with(code);
                }
            }
            Envelope::Lost => self.resync(hub, "another node could not send everything it had for this one"),
            Envelope::Call { from, op } => {
                let addr = SessionAddr { node_id: from.node, session_id: from.session, user_id: from.user };
                crate::calls::execute(hub, addr, op).await;
            }
        }
    }

    /// Frames may have been lost on the way to this node: close every session with 1012 so that
    /// clients reconnect and `sync` from the store.
    fn resync(&self, hub: &Hub, why: &str) {
        hub.metrics.cluster_resyncs.inc();
        hub.metrics.record_event("cluster_resync", serde_json::json!({ "reason": why }));
        tracing::warn!(
            reason = why,
            sessions = hub.sessions.len(),
            "cross-node traffic lost; asking clients to resync"
        );
        for s in hub.sessions.all() {
            s.close_with(close::SERVICE_RESTART);
        }
    }

    /// Answers requests whose envelopes could not be published.
    fn undelivered(&self, hub: &Hub, envs: Vec<Envelope>) {
        for env in envs {
            if let Envelope::Conv { msg, .. } = env {
                let msg = Self::from_wire(msg);
                refuse(hub, msg, "the cluster transport is down; retry");
            }
        }
    }
}

/// Answers a request that cannot be served with `unavailable`.
fn refuse(hub: &Hub, msg: ConvMsg, why: &str) {
    refuse_code(hub, msg, ErrorCode::Unavailable, why)
}

fn refuse_code(hub: &Hub, msg: ConvMsg, code: ErrorCode, why: &str) {
    match msg {
        ConvMsg::Send { from, client_id, .. } => from.error(hub, code, why, Some(&client_id)),
        ConvMsg::Edit { from, .. } | ConvMsg::Delete { from, .. } | ConvMsg::Read { from, .. } => {
            from.error(hub, code, why, None)
        }
        _ => {}
    }
}

/// Heartbeats, re-reads the view, and hands conversations over when the view changes.
async fn heartbeats(cluster: Arc<Cluster>, view_tx: watch::Sender<Arc<View>>, up: Arc<std::sync::atomic::AtomicBool>) {
    let timing = cluster.membership.timing;
    let mut redis_was_up = true;
    loop {
        tokio::select! {
            _ = cluster.stop.cancelled() => return,
            _ = tokio::time::sleep(timing.heartbeat) => {}
        }
        let Some(hub) = cluster.hub.upgrade() else { return };
        let info = {
            let mut info = cluster.info.lock();
            info.heartbeat_ms = now_ms();
            info.sessions = hub.sessions.len() as u64;
            info.conversations = hub.router.running() as u64;
            info.clone()
        };
        let members = match cluster.membership.heartbeat(&info).await {
            Ok(()) => cluster.membership.members().await.map_err(JoinError::from),
            Err(e) => {
                if let JoinError::IdTaken(id) = &e {
                    tracing::error!(node_id = %id, "another process took this node's id while it was unreachable");
                }
                Err(e)
            }
        };
        match members {
            Ok(mut nodes) => {
                up.store(true, Ordering::Relaxed);
                if !redis_was_up {
                    tracing::info!("Redis is reachable again; rejoined the cluster");
                    cluster.republish_online(&hub).await;
                }
                cluster.transport.announce_losses();
                redis_was_up = true;
                if !nodes.iter().any(|n| n.id == cluster.me) {
                    nodes.push(info);
                }
                let view = View::new(nodes, true);
                let changed = view.ids != view_tx.borrow().ids;
                if changed {
                    tracing::info!(nodes = ?view.ids, "cluster view changed");
                    hub.metrics.cluster_nodes.set(view.ids.len() as i64);
                }
                view_tx.send_replace(Arc::new(view));
                if changed {
                    hand_over(&cluster, &hub);
                }
            }
            Err(e) => {
                if redis_was_up {
                    tracing::warn!(error = %e, "cluster heartbeat failed; serving locally until Redis answers");
                }
                redis_was_up = false;
                up.store(false, Ordering::Relaxed);
                let mut frozen = (**view_tx.borrow()).clone();
                frozen.redis_up = false;
                view_tx.send_replace(Arc::new(frozen));
            }
        }
        cluster.pending.retain(|_, (_, at)| at.elapsed() < PENDING_TTL);
    }
}

/// Stops every local conversation actor this node no longer owns; the actor forwards what it
/// still holds to the new owner, which claims the conversation (raising its fence) on start.
fn hand_over(cluster: &Cluster, hub: &Hub) {
    let mut moved = 0;
    for (conv, actor) in hub.router.actors() {
        if cluster.owner(&conv) != cluster.me {
            let _ = actor.cast(ConvMsg::HandOver);
            moved += 1;
        }
    }
    if moved > 0 {
        tracing::info!(conversations = moved, "handing conversations over to their new owners");
    }
}

/// Applies inbound traffic in arrival order and watches for lost batches.
async fn dispatch(cluster: Weak<Cluster>, mut inbound: mpsc::Receiver<Inbound>) {
    // Per sender and channel kind (direct or broadcast): the sender's epoch and last batch number.
    let mut last: HashMap<(Arc<str>, bool), (u64, u64)> = HashMap::new();
    while let Some(item) = inbound.recv().await {
        let Some(cluster) = cluster.upgrade() else { return };
        let Some(hub) = cluster.hub.upgrade() else { return };
        match item {
            Inbound::Batch(batch) => {
                let Batch { from, epoch, n, all, envs } = batch;
                let key = (from.clone(), all);
                match last.insert(key, (epoch, n)) {
                    Some((e, prev)) if e == epoch && n != prev + 1 => {
                        cluster.resync(&hub, &format!("batches {}..{} from {from} were lost", prev + 1, n - 1));
                    }
                    _ => {}
                }
                hub.metrics.cluster_batches.with_label_values(&["in"]).inc();
                hub.metrics.cluster_envelopes.with_label_values(&["in"]).inc_by(envs.len() as u64);
                for env in envs {
                    cluster.handle(&hub, env).await;
                }
            }
            Inbound::Resubscribed => {
                cluster.resync(&hub, "the cluster subscription was re-established");
                // Everything before this point is covered by that resync: start counting afresh.
                last.clear();
            }
            Inbound::Undelivered(envs) => cluster.undelivered(&hub, envs),
        }
    }
}

fn rand_u64() -> u64 {
    let id = uuid::Uuid::new_v4();
    let (hi, lo) = id.as_u64_pair();
    hi ^ lo
}
