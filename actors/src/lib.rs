//! Rookery's actors: a session actor per connection, a conversation actor per active
//! conversation, their supervisors, the local session registry and the router that finds a
//! conversation's actor.
//!
//! [`Hub`] ties them together; the node's gateway and HTTP API talk to the hub only.
//!
//! Architecture Invariant: this crate knows no socket, HTTP or JSON-over-the-wire details
//! beyond the protocol crate's types; it reaches a client only through its outbound queue
//! ([`SessionHandle`]).

pub mod attachments;
pub mod calls;
pub mod cluster;
pub mod conversation;
pub mod forgotten;
pub mod limits;
pub mod metered;
pub mod metrics;
pub mod moderation;
pub mod outbound;
pub mod placement;
pub mod presence;
pub mod registry;
pub mod requester;
pub mod session;
pub mod spawner;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use ractor::Actor;
use rookery_store::Store;

pub use conversation::ConvMsg;
pub use metrics::Metrics;
pub use outbound::{FrameQueue, OutboundReceiver, Refused, SessionAddr, SessionHandle};
pub use placement::{ConversationRouter, RouteError};
pub use ractor::rpc::CallResult;
pub use ractor::ActorRef;
pub use registry::SessionRegistry;
pub use requester::{Outcome, ReplyTo, Requester};
pub use session::SessionMsg;

use placement::ConversationSupervisor;
use session::{SessionSupervisor, SessionSupervisorMsg};

/// Settings of the actor layer. Every field is set from the node's configuration.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// This node's id.
    pub node_id: String,
    /// Largest message body, in bytes of UTF-8. Node default: 8192.
    pub max_body: usize,
    /// Most messages per conversation in one `sync` answer. Node default: 500.
    pub sync_batch: usize,
    /// Frames an outbound queue holds before the session is closed as a slow consumer.
    /// Node default: 1024.
    pub outbound_queue: usize,
    /// Frames a session may have queued or in progress before the gateway stops reading its
    /// socket. Node default: 64.
    pub session_inflight: usize,
    /// A conversation actor with no client traffic for this long stops. Node default: 60 s.
    pub conv_idle_after: Duration,
    /// Housekeeping period of conversation actors (cursor flush, idle check). Node default: 1 s.
    pub conv_tick: Duration,
    /// Read receipts are coalesced over this window. Node default: 100 ms.
    pub receipt_coalesce: Duration,
    /// Most users one `presence` query answers. Node default: 256.
    pub max_presence_query: usize,
    /// Per-session limit on `send`. Node default: 50/s, burst 100.
    pub send_limit: limits::Limit,
    /// Per-session limit on `typing`. Node default: 2/s, burst 5.
    pub typing_limit: limits::Limit,
    /// Per-session limit on `call.*`. Node default: 20/s, burst 40 (ICE candidates come in bursts).
    pub call_limit: limits::Limit,
    /// Refusals within 10 s after which a session is closed with 4008. Node default: 100; 0 never.
    pub abuse_threshold: u32,
    /// How long a user must stay without sessions before `offline` is announced. Node default: 3 s.
    pub presence_grace: Duration,
}

/// A concurrent map hashed with foldhash (seeded per map) instead of SipHash, which cost about
/// 5 % of the instructions of a message on the maps the message path looks up.
pub type FastDashMap<K, V> = dashmap::DashMap<K, V, foldhash::fast::RandomState>;

/// Everything the actors share: store, registry, router, metrics, settings.
pub struct Hub {
    pub node_id: Arc<str>,
    pub config: HubConfig,
    pub store: Arc<dyn Store>,
    pub sessions: SessionRegistry,
    pub router: ConversationRouter,
    pub metrics: Arc<Metrics>,
    /// Per running conversation, the highest `seq` whose fan-out has happened (all lower ones
    /// were fanned out or failed before it). `sync` reads no further, so a message committed out
    /// of order is never replayed before an earlier one that is still being written.
    pub fanned_out: FastDashMap<Arc<str>, u64>,
    /// Messages per housekeeping tick of each running conversation (the console's "busiest").
    pub activity: FastDashMap<Arc<str>, u64>,
    /// What retired conversation actors knew of their `client_id`s, for their successors.
    pub handovers: forgotten::Handovers,
    /// Test hook: how long the next sessions to open wait before they start, one delay each,
    /// in order (a start slowed down by load).
    #[cfg(feature = "test-hooks")]
    pub session_start_delays: parking_lot::Mutex<std::collections::VecDeque<Duration>>,
    /// Bans in force (a cache of the store's).
    pub bans: moderation::Bans,
    /// Who has been announced online.
    pub presence: presence::Presence,
    /// Calls ringing or running.
    pub calls: calls::Calls,
    /// Running session actors by session id (for tests); a hibernating session has none.
    pub session_actors: FastDashMap<Arc<str>, ractor::ActorRef<SessionMsg>>,
    session_supervisor: OnceLock<ActorRef<SessionSupervisorMsg>>,
    /// Session actors running, by actor id: what the supervisor needs when one stops.
    session_children: FastDashMap<ractor::ActorId, Arc<SessionHandle>>,
    /// Where session actors are spawned (why: [`spawner`]).
    session_spawner: spawner::Spawner,
}

/// The actor layer failed to start.
#[derive(Debug, thiserror::Error)]
#[error("starting the {what} supervisor failed: {detail}")]
pub struct StartError {
    what: &'static str,
    detail: String,
}

impl Hub {
    /// Starts the supervisors and returns the hub.
    ///
    /// # Errors
    /// When a supervisor cannot be spawned.
    pub async fn start(
        config: HubConfig,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Hub>, StartError> {
        let hub = Arc::new(Hub {
            node_id: config.node_id.as_str().into(),
            config,
            store,
            sessions: SessionRegistry::default(),
            router: ConversationRouter::default(),
            metrics,
            fanned_out: FastDashMap::default(),
            activity: FastDashMap::default(),
            handovers: forgotten::Handovers::default(),
            #[cfg(feature = "test-hooks")]
            session_start_delays: Default::default(),
            bans: moderation::Bans::default(),
            presence: presence::Presence::default(),
            calls: calls::Calls::default(),
            session_actors: FastDashMap::default(),
            session_supervisor: OnceLock::new(),
            session_children: FastDashMap::default(),
            session_spawner: spawner::Spawner::start()
                .map_err(|e| StartError { what: "session", detail: e.to_string() })?,
        });
        let bans = hub.store.bans().await.map_err(|e| StartError { what: "moderation", detail: e.to_string() })?;
        hub.bans.load(bans);
        let (conv_sup, _) = Actor::spawn(None, ConversationSupervisor, Arc::downgrade(&hub))
            .await
            .map_err(|e| StartError { what: "conversation", detail: e.to_string() })?;
        hub.router.set_supervisor(conv_sup);
        let (session_sup, _) = Actor::spawn(None, SessionSupervisor, Arc::downgrade(&hub))
            .await
            .map_err(|e| StartError { what: "session", detail: e.to_string() })?;
        let _ = hub.session_supervisor.set(session_sup);
        Ok(hub)
    }

    /// Registers a new connection's session (deliveries reach it from here on) and starts its
    /// actor. Whatever the result, the session must be closed with
    /// [`close_session`](Self::close_session) when the connection ends.
    ///
    /// # Errors
    /// When the node is shutting down or the actor cannot be spawned.
    pub async fn open_session(self: &Arc<Self>, handle: Arc<SessionHandle>) -> Result<ActorRef<SessionMsg>, String> {
        #[cfg(feature = "test-hooks")]
        {
            let delay = self.session_start_delays.lock().pop_front();
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
        }
        if self.sessions.insert(handle.clone()) {
            self.presence.opened(self, handle.addr.user_id.clone());
        }
        self.start_session_actor(handle).await
    }

    /// Starts the actor of an open session: at connect, and to wake a hibernated session (see
    /// [`session`]).
    ///
    /// # Errors
    /// When the node is shutting down or the actor cannot be spawned.
    pub async fn start_session_actor(
        self: &Arc<Self>,
        handle: Arc<SessionHandle>,
    ) -> Result<ActorRef<SessionMsg>, String> {
        let sup = self.session_supervisor.get().ok_or("node is starting")?.get_cell();
        let session_id = handle.addr.session_id.clone();
        let start = Actor::spawn_linked(None, session::SessionActor, (handle, self.clone()), sup);
        let error = match self.session_spawner.run(start).await {
            Ok(Ok((actor, _))) => return Ok(actor),
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        // The actor may have recorded itself before its start failed.
        if let Some((_, actor)) = self.session_actors.remove(&session_id) {
            self.session_children.remove(&actor.get_id());
        }
        Err(error)
    }

    /// Removes a closed connection's session from the registry (presence follows).
    pub fn close_session(self: &Arc<Self>, handle: &SessionHandle) {
        if self.sessions.remove(handle, now_ms()) {
            self.presence.closed(self, handle.addr.user_id.clone());
        }
    }

    /// Queues a frame to one session, wherever it lives. Returns whether it was queued (or,
    /// for a session on another node, sent there).
    pub fn push_to_session(&self, addr: &SessionAddr, frame: Bytes) -> bool {
        if addr.node_id != self.node_id {
            return match self.cluster() {
                Some(c) => c.push_session(&addr.node_id, &addr.session_id, &frame),
                None => false,
            };
        }
        match self.sessions.session(&addr.session_id) {
            Some(h) => h.push(frame),
            None => false,
        }
    }

    /// Queues a frame to every session of `users` on this node and, in a cluster, on every other
    /// node (one envelope for all of them). Returns the number of local sessions reached.
    pub fn deliver(&self, users: Arc<[Arc<str>]>, frame: &Bytes) -> usize {
        let n = users.iter().map(|u| self.sessions.push_to_user(u, frame)).sum();
        if let Some(c) = self.cluster() {
            c.deliver(users, frame, None);
        }
        n
    }

    /// Queues a frame to every session of one user, wherever they are, except session `except`.
    pub fn deliver_user(&self, user: &Arc<str>, frame: &Bytes, except: Option<&Arc<str>>) {
        self.sessions.push_to_user_except(user, frame, except.map(|s| &**s));
        if let Some(c) = self.cluster() {
            c.deliver(Arc::from([user.clone()]), frame, except.cloned());
        }
    }

    /// The cluster this node belongs to (`None` when running alone).
    pub fn cluster(&self) -> Option<&Arc<cluster::Cluster>> {
        self.router.cluster()
    }

    /// Joins a cluster (cluster mode): from now on conversations are placed across the
    /// cluster's nodes and events cross nodes.
    ///
    /// # Errors
    /// When Redis cannot be reached or the node id is taken.
    pub async fn join_cluster(
        self: &Arc<Self>,
        config: cluster::ClusterConfig,
    ) -> Result<Arc<cluster::Cluster>, cluster::membership::JoinError> {
        let c = cluster::Cluster::join(self, config).await?;
        self.router.set_cluster(c.clone());
        // Conversations started before joining may now belong elsewhere.
        for (conv, actor) in self.router.actors() {
            if c.owner(&conv) != c.me {
                let _ = actor.cast(ConvMsg::HandOver);
            }
        }
        Ok(c)
    }

    /// Whether `user` has a session on any node.
    pub async fn is_online_anywhere(&self, user: &str) -> bool {
        if self.sessions.is_online(user) {
            return true;
        }
        match self.cluster() {
            Some(c) => c.online_elsewhere(&[user]).await.first().copied().unwrap_or(false),
            None => false,
        }
    }

    /// Shutdown, in phases under `grace`: close every session with 1001, wait for conversation
    /// actors to finish their in-flight writes, make the store durable, stop the supervisors.
    pub async fn shutdown(&self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        for s in self.sessions.all() {
            s.close_with(rookery_protocol::close::GOING_AWAY);
        }
        self.router.drain(grace / 2).await;
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(remaining, self.store.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "final store flush failed"),
            Err(_) => tracing::error!("final store flush did not finish within the grace period"),
        }
        if let Some(c) = self.cluster() {
            c.leave().await;
        }
        for (_, actor) in self.router.actors() {
            actor.stop(Some("shutdown".into()));
        }
        if let Some(sup) = self.session_supervisor.get() {
            sup.stop(Some("shutdown".into()));
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A new id: a UUIDv7 in simple form (32 hex digits, sorts by creation time).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// A new message's id: a [`new_id`] that also carries the message's `seq`
/// ([`rookery_store::message_id`]), so that the store finds it by id without an index.
pub fn new_message_id(seq: u64) -> String {
    let mut buf = uuid::Uuid::encode_buffer();
    rookery_store::message_id::with_seq(uuid::Uuid::now_v7().simple().encode_lower(&mut buf), seq)
}

/// A new conversation's fields, not yet stored: a fresh id, created now, slow mode off.
///
/// Its id is a random UUID (v4) in simple form (32 hex digits), not time-ordered like
/// [`new_id`]'s: a conversation id leads the keys of its messages and their indexes, and ids
/// that differ in their first bytes keep the store's key comparisons short (the embedded engine
/// compares the first 4 bytes of a key inline and only then follows the key to the heap;
/// time-ordered ids share those bytes for weeks). The creation time is in `created_at`.
pub fn new_conversation(kind: rookery_protocol::ConversationKind, title: Option<String>) -> rookery_store::ConvMeta {
    rookery_store::ConvMeta {
        id: uuid::Uuid::new_v4().simple().to_string(),
        kind,
        title,
        created_at: now_ms(),
        slow_mode_s: 0,
    }
}
