//! Routing to conversation actors and the supervisor that owns them.
//!
//! [`ConversationRouter::route`] is the only way to reach a conversation actor: callers name a
//! conversation, never an actor, so the actor may be on this node, be restarting, or (in a
//! cluster) live on another node, and callers do not change.
//!
//! Race-freedom with idle stops: `route` casts while holding the registry entry (a shard read
//! lock) and a retiring actor unregisters itself under the write lock before it queues its own
//! `Retire`. A message is therefore either queued before `Retire` (and forwarded by the retiring
//! actor to its successor) or finds no entry and asks the supervisor for a new actor.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use crate::FastDashMap;
use futures_util::FutureExt;
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, MessagingErr, RpcReplyPort, SupervisionEvent};

use crate::cluster::Cluster;
use crate::conversation::{ConvArgs, ConvMsg, ConversationActor};
use crate::Hub;

/// Why a message could not be routed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    /// The conversation does not exist.
    #[error("no such conversation")]
    NotFound,
    /// The conversation's actor could not be started or reached; retry later.
    #[error("conversation unavailable: {0}")]
    Unavailable(String),
}

/// Finds (or starts) the actor of a conversation and delivers messages to it.
#[derive(Default)]
pub struct ConversationRouter {
    local: FastDashMap<Arc<str>, ActorRef<ConvMsg>>,
    supervisor: OnceLock<ActorRef<SupervisorMsg>>,
    cluster: OnceLock<Arc<Cluster>>,
}

impl ConversationRouter {
    /// Delivers `msg` to the conversation's actor, on this node (starting it if needed) or, in a
    /// cluster, on the node that owns the conversation.
    pub async fn route(&self, conv: &str, msg: ConvMsg) -> Result<(), RouteError> {
        if let Some(cluster) = self.cluster.get() {
            let owner = cluster.owner(conv);
            if owner != cluster.me {
                return cluster.forward(&owner, conv, msg, 0);
            }
        }
        self.route_local_or_return(conv, msg).await.map_err(|(e, _)| e)
    }

    /// Delivers `msg` to the actor on this node, starting it if needed; on failure the message
    /// comes back (when the mailbox did not swallow it) so that its requester can be answered.
    pub async fn route_local_or_return(
        &self,
        conv: &str,
        mut msg: ConvMsg,
    ) -> Result<(), (RouteError, Option<ConvMsg>)> {
        for _ in 0..4 {
            if let Some(actor) = self.local.get(conv) {
                match actor.cast(msg) {
                    Ok(()) => return Ok(()),
                    Err(MessagingErr::SendErr(back)) => msg = back,
                    Err(e) => return Err((RouteError::Unavailable(e.to_string()), None)),
                }
                let stale = actor.get_id();
                drop(actor);
                self.unregister(conv, stale);
            }
            if let Err(e) = self.start(conv).await {
                return Err((e, Some(msg)));
            }
        }
        Err((RouteError::Unavailable("the conversation actor kept stopping".into()), Some(msg)))
    }

    /// Delivers `msg` only if the actor is running (membership changes need nothing else:
    /// a starting actor reads the store anyway). In a cluster, on the owner's node.
    pub fn notify_if_running(&self, conv: &str, msg: ConvMsg) {
        if let Some(cluster) = self.cluster.get() {
            let owner = cluster.owner(conv);
            if owner != cluster.me {
                let _ = cluster.forward(&owner, conv, msg, 0);
                return;
            }
        }
        self.notify_local(conv, msg);
    }

    /// Delivers `msg` to the actor on this node if it runs.
    pub fn notify_local(&self, conv: &str, msg: ConvMsg) {
        if let Some(actor) = self.local.get(conv) {
            let _ = actor.cast(msg);
        }
    }

    /// The cluster this node belongs to, if any.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.get()
    }

    pub(crate) fn set_cluster(&self, cluster: Arc<Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// Removes the entry for `conv` if it still points at `actor`.
    pub fn unregister(&self, conv: &str, actor: ActorId) {
        self.local.remove_if(conv, |_, a| a.get_id() == actor);
    }

    /// Whether the actor of `conv` runs on this node.
    pub fn is_running(&self, conv: &str) -> bool {
        self.local.contains_key(conv)
    }

    /// Number of running conversation actors on this node.
    pub fn running(&self) -> usize {
        self.local.len()
    }

    /// Every running conversation actor.
    pub fn actors(&self) -> Vec<(Arc<str>, ActorRef<ConvMsg>)> {
        self.local.iter().map(|e| (e.key().clone(), e.value().clone())).collect()
    }

    /// Waits until no running conversation has a write in flight, or `deadline` passes.
    pub async fn drain(&self, deadline: Duration) {
        let calls = self.actors().into_iter().map(|(_, a)| async move {
            let _ = a.call(ConvMsg::Drain, Some(deadline)).await;
        });
        let _ = tokio::time::timeout(deadline, futures_util::future::join_all(calls)).await;
    }

    async fn start(&self, conv: &str) -> Result<(), RouteError> {
        let sup = self.supervisor.get().ok_or_else(|| RouteError::Unavailable("node is starting".into()))?;
        let conv: Arc<str> = conv.into();
        match sup.call(|reply| SupervisorMsg::Start { conv, reply }, Some(Duration::from_secs(10))).await {
            Ok(ractor::rpc::CallResult::Success(r)) => r,
            Ok(_) => Err(RouteError::Unavailable("the conversation supervisor did not answer".into())),
            Err(e) => Err(RouteError::Unavailable(e.to_string())),
        }
    }

    pub(crate) fn set_supervisor(&self, sup: ActorRef<SupervisorMsg>) {
        let _ = self.supervisor.set(sup);
    }
}

/// Messages of the conversation supervisor.
pub enum SupervisorMsg {
    /// Start the actor of `conv` unless it runs already.
    Start { conv: Arc<str>, reply: RpcReplyPort<Result<(), RouteError>> },
    /// A start (on demand or after a crash) finished (sent by the task that ran it).
    Started { conv: Arc<str>, result: Result<ActorRef<ConvMsg>, RouteError> },
}

/// Supervises every conversation actor of this node: starts them on demand and restarts one
/// that crashed (the new actor reloads its state from the store).
///
/// Starts run concurrently, each on its own task: an actor's start reads the store and claims
/// the conversation (a durable write), and one slow start must not hold up every other
/// conversation of the node (after a restart or a hand-over, thousands start at once). The
/// supervisor itself only keeps the books, so at most one start per conversation runs; the
/// `Start`s that arrive meanwhile wait for that one's outcome.
pub struct ConversationSupervisor;

/// Supervisor state: which conversation each child serves, and who waits for a start.
pub struct ConvSupervisorState {
    hub: Weak<Hub>,
    children: HashMap<ActorId, Arc<str>>,
    starting: HashMap<Arc<str>, Vec<RpcReplyPort<Result<(), RouteError>>>>,
}

impl ConversationSupervisor {
    /// Starts the actor of `conv` (after checking that the conversation exists, unless it is a
    /// restart after a crash), linked to the supervisor. Touches no supervisor state, so it can
    /// run on any task; [`register`](Self::register) then records the child.
    async fn spawn_child(
        supervisor: ActorCell,
        hub: Arc<Hub>,
        conv: Arc<str>,
        recovering: bool,
    ) -> Result<ActorRef<ConvMsg>, RouteError> {
        if !recovering
            && hub.store.conversation(&conv).await.map_err(|e| RouteError::Unavailable(e.to_string()))?.is_none()
        {
            return Err(RouteError::NotFound);
        }
        let started = std::time::Instant::now();
        let args = ConvArgs { id: conv, hub: hub.clone(), recovering };
        let (actor, _) = Actor::spawn_linked(None, ConversationActor, args, supervisor)
            .await
            .map_err(|e| RouteError::Unavailable(e.to_string()))?;
        hub.metrics.conversation_start_seconds.observe(started.elapsed().as_secs_f64());
        Ok(actor)
    }

    /// Opens the books for a start of `conv` (with its first waiter, if any) and runs the start
    /// on a task of its own, which reports back with `Started`. Used for starts on demand and
    /// for restarts after a crash (`recovering`) alike.
    fn begin_start(
        myself: ActorRef<SupervisorMsg>,
        state: &mut ConvSupervisorState,
        hub: Arc<Hub>,
        conv: Arc<str>,
        recovering: bool,
        waiter: Option<RpcReplyPort<Result<(), RouteError>>>,
    ) {
        state.starting.insert(conv.clone(), waiter.into_iter().collect());
        let supervisor = myself.get_cell();
        tokio::spawn(async move {
            // Whatever happens, the waiters get an answer and the books are closed.
            let start = Self::spawn_child(supervisor, hub, conv.clone(), recovering);
            let result = std::panic::AssertUnwindSafe(start)
                .catch_unwind()
                .await
                .unwrap_or_else(|_| Err(RouteError::Unavailable("starting the conversation actor panicked".into())));
            if let (true, Err(e)) = (recovering, &result) {
                tracing::error!(conv = %conv, error = %e, "restarting the conversation actor failed; it starts on the next message");
            }
            // Sent to ourselves; if the supervisor is gone, the child went with it.
            let _ = myself.cast(SupervisorMsg::Started { conv, result });
        });
    }

    /// Records a started child and makes it reachable. A child that already stopped (it can
    /// fail between its start and this) is not registered: the next message starts another.
    fn register(state: &mut ConvSupervisorState, hub: &Hub, conv: Arc<str>, actor: ActorRef<ConvMsg>) {
        if matches!(actor.get_status(), ractor::ActorStatus::Stopping | ractor::ActorStatus::Stopped) {
            return;
        }
        state.children.insert(actor.get_id(), conv.clone());
        hub.router.local.insert(conv, actor);
        hub.metrics.groups_active.inc();
    }

    fn child_gone(state: &mut ConvSupervisorState, hub: &Hub, cell: &ActorCell) -> Option<Arc<str>> {
        let conv = state.children.remove(&cell.get_id())?;
        hub.router.unregister(&conv, cell.get_id());
        if !hub.router.local.contains_key(&conv) {
            hub.fanned_out.remove(&conv);
        }
        hub.metrics.groups_active.dec();

        Some(conv)
    }
}

impl Actor for ConversationSupervisor {
    type Msg = SupervisorMsg;
    type State = ConvSupervisorState;
    type Arguments = Weak<Hub>;

    async fn pre_start(&self, _: ActorRef<SupervisorMsg>, hub: Weak<Hub>) -> Result<Self::State, ActorProcessingErr> {
        Ok(ConvSupervisorState { hub, children: HashMap::new(), starting: HashMap::new() })
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let Some(hub) = state.hub.upgrade() else {
            return Ok(());
        };
        match msg {
            SupervisorMsg::Start { conv, reply } => {
                if hub.router.local.contains_key(&conv) {
                    let _ = reply.send(Ok(()));
                } else if let Some(waiting) = state.starting.get_mut(&conv) {
                    waiting.push(reply);
                } else {
                    Self::begin_start(myself, state, hub, conv, false, Some(reply));
                }
            }
            SupervisorMsg::Started { conv, result } => {
                let waiting = state.starting.remove(&conv).unwrap_or_default();
                let answer = match result {
                    Ok(actor) => {
                        Self::register(state, &hub, conv, actor);
                        Ok(())
                    }
                    Err(e) => Err(e),
                };
                for reply in waiting {
                    let _ = reply.send(answer.clone());
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let Some(hub) = state.hub.upgrade() else {
            return Ok(());
        };
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                Self::child_gone(state, &hub, &cell);
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                if let Some(conv) = Self::child_gone(state, &hub, &cell) {
                    hub.metrics.actor_restarts.with_label_values(&["conversation"]).inc();
                    let detail = serde_json::json!({"actor": "conversation", "id": &*conv, "error": err.to_string()});
                    hub.metrics.record_event("restart", detail);
                    tracing::error!(conv = %conv, error = %err, "conversation actor crashed; restarting it");
                    if !hub.router.local.contains_key(&conv) && !state.starting.contains_key(&conv) {
                        Self::begin_start(myself, state, hub, conv, true, None);
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}
