//! A session's actor as its connection sees it: awake while the client uses it, hibernating
//! once the client has sent no frame for it for `--session-hibernate-ms` (why and how:
//! [`rookery_actors::session`]).
//!
//! The connection's reader owns an [`ActorSlot`]: it asks the slot for the actor before each
//! frame it casts to it (waking a hibernating session; the frames the session's input handles
//! itself need no actor), and awaits [`ActorSlot::hibernation_due`] beside its socket read. An
//! actor hibernates only when every in-flight permit of the session is back, that is when none
//! of its frames is queued or being handled, so no frame is ever left in the mailbox of an actor
//! that stops, and frames keep their order across the switch.

use std::future::pending;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rookery_actors::{ActorRef, Hub, SessionHandle, SessionMsg};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};

/// How long an actor may take to answer the request to hibernate.
const HIBERNATE_TIMEOUT: Duration = Duration::from_secs(10);

/// The session's actor, from the connection's side.
pub struct ActorSlot {
    hub: Arc<Hub>,
    handle: Arc<SessionHandle>,
    /// `None`: never hibernate.
    after: Option<Duration>,
    state: State,
}

enum State {
    Awake {
        actor: ActorRef<SessionMsg>,
        /// Fires at the earliest moment hibernation may be due; boxed so that a hibernating
        /// session holds no timer.
        timer: Option<Pin<Box<Sleep>>>,
        last_frame: Instant,
    },
    Hibernating,
    /// The actor failed to hibernate or wake; the connection is closing.
    Gone,
}

impl ActorSlot {
    /// The slot of a session whose actor has just started.
    pub fn awake(
        hub: Arc<Hub>,
        handle: Arc<SessionHandle>,
        actor: ActorRef<SessionMsg>,
        after: Option<Duration>,
    ) -> Self {
        let state = awake_state(actor, after);
        ActorSlot { hub, handle, after, state }
    }

    /// The actor to cast the client's next frame to, woken first if it hibernates.
    ///
    /// # Errors
    /// When a new actor cannot be started (the node is shutting down), or an earlier failure
    /// left the session without one.
    pub async fn actor(&mut self) -> Result<&ActorRef<SessionMsg>, String> {
        if let State::Hibernating = self.state {
            // Boxed: see `gateway::connection`.
            Box::pin(self.wake()).await?;
        }
        match &mut self.state {
            State::Awake { actor, last_frame, .. } => {
                *last_frame = Instant::now();
                Ok(actor)
            }
            _ => Err("the session's actor is gone".into()),
        }
    }

    /// Starts a new actor for a hibernating session. `Gone` stands in while the start is under
    /// way, and stays if it fails. Checked by the caller, so that a frame of an awake session
    /// moves nothing.
    async fn wake(&mut self) -> Result<(), String> {
        let State::Hibernating = std::mem::replace(&mut self.state, State::Gone) else {
            return Ok(());
        };
        self.hub.metrics.sessions_hibernating.dec();
        let actor = self.hub.start_session_actor(self.handle.clone()).await?;
        self.state = awake_state(actor, self.after);
        Ok(())
    }

    /// Resolves when the client has been quiet long enough for the actor to hibernate; never
    /// while it hibernates already or hibernation is off. Cancel-safe.
    pub async fn hibernation_due(&mut self) {
        let (State::Awake { timer: Some(timer), last_frame, .. }, Some(after)) = (&mut self.state, self.after) else {
            return pending().await;
        };
        loop {
            timer.as_mut().await;
            let due = *last_frame + after;
            if Instant::now() >= due {
                return;
            }
            timer.as_mut().reset(due);
        }
    }

    /// Hibernates the actor, unless a frame of the session is still queued or being handled
    /// (`inflight` has fewer than `limit` permits); then it looks again a period later.
    pub async fn hibernate(&mut self, inflight: &Semaphore, limit: usize) {
        let (State::Awake { actor, timer: Some(timer), .. }, Some(after)) = (&mut self.state, self.after) else {
            return;
        };
        if inflight.available_permits() < limit {
            timer.as_mut().reset(Instant::now() + after);
            return;
        }
        match Box::pin(actor.call(SessionMsg::Hibernate, Some(HIBERNATE_TIMEOUT))).await {
            Ok(rookery_actors::CallResult::Success(())) => {
                self.state = State::Hibernating;
                self.hub.metrics.sessions_hibernating.inc();
            }
            outcome => {
                // A crashed actor has closed the connection already (1011); a stuck one is
                // killed (a stop would wait for its current message), and its connection closed
                // the same way.
                let session = &self.handle.addr.session_id;
                tracing::error!(outcome = ?outcome.map(|_| ()), %session, "a session actor did not hibernate");
                actor.kill();
                self.state = State::Gone;
                self.handle.close_with(rookery_protocol::close::INTERNAL_ERROR);
            }
        }
    }
}

impl Drop for ActorSlot {
    /// The connection ended: its actor stops, or its hibernation ends.
    fn drop(&mut self) {
        match &self.state {
            State::Awake { actor, .. } => actor.stop(None),
            State::Hibernating => self.hub.metrics.sessions_hibernating.dec(),
            State::Gone => {}
        }
    }
}

fn awake_state(actor: ActorRef<SessionMsg>, after: Option<Duration>) -> State {
    let timer = after.map(|after| Box::pin(tokio::time::sleep(after)));
    State::Awake { actor, timer, last_frame: Instant::now() }
}
