//! The thread that starts session actors.
//!
//! An actor's cell, mailboxes, state and task (about 7 KB for a session) are allocated by the
//! thread that spawns it. Spawned on the async workers, session actors shared the allocator's
//! pages with the connections' long-lived objects, so when sessions hibernated their memory could
//! be reused but never handed back to the OS: a node stayed at the size of its peak of awake
//! sessions. Spawned here, they share pages only with each other; once every actor of a page has
//! stopped the page is empty, and the [release hook](set_release_hook) gives it back. The actors
//! themselves run on the async workers like any task.
//!
//! The thread is also the one hop every session start takes: the gateway hands it the start and
//! awaits the result; starts queued meanwhile are run back to back, without the thread sleeping
//! in between.
//!
//! Queue bound: [`QUEUE`] starts. Overflow policy: a caller waits for room, polling every
//! millisecond, for up to [`PATIENCE`]; then its start fails (the connection closes with 1011).

use std::future::Future;
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

type Job = Box<dyn FnOnce() + Send>;

/// How often the thread runs the release hook, idle or busy.
const RELEASE_EVERY: Duration = Duration::from_secs(1);
/// Starts waiting for the thread, at most.
pub const QUEUE: usize = 1024;
/// How long a start waits for room in a full queue.
pub const PATIENCE: Duration = Duration::from_secs(10);

static RELEASE_HOOK: OnceLock<fn()> = OnceLock::new();

/// Sets what the thread runs once a second to hand freed memory back to the OS. The binary sets
/// it, because that is the allocator's business (`mi_collect` for mimalloc); without it, freed
/// actor memory is only reused. Only the first call counts.
pub fn set_release_hook(hook: fn()) {
    let _ = RELEASE_HOOK.set(hook);
}

/// Why a start could not be handed to the thread.
#[derive(Debug, thiserror::Error)]
pub enum SpawnerError {
    #[error("the session start thread is overloaded; retry")]
    Busy,
    #[error("the session start thread has stopped")]
    Stopped,
}

/// The handle of the session start thread; the thread ends when this is dropped.
pub struct Spawner {
    jobs: SyncSender<Job>,
}

impl Spawner {
    /// Starts the thread. Actors it starts run on the current tokio runtime.
    ///
    /// # Errors
    /// When the OS refuses a new thread.
    pub fn start() -> std::io::Result<Spawner> {
        let (jobs, queue) = sync_channel::<Job>(QUEUE);
        std::thread::Builder::new().name("rookery-session-start".into()).spawn(move || {
            let mut released = Instant::now();
            loop {
                match queue.recv_timeout(RELEASE_EVERY) {
                    // A start that panics fails alone (its caller sees `Stopped`); the thread
                    // goes on serving the others.
                    Ok(job) => {
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
                if released.elapsed() >= RELEASE_EVERY {
                    released = Instant::now();
                    if let Some(hook) = RELEASE_HOOK.get() {
                        hook();
                    }
                }
            }
        })?;
        Ok(Spawner { jobs })
    }

    /// Runs `start` to completion on the thread (inside the current runtime) and returns its
    /// output.
    ///
    /// # Errors
    /// When the queue stayed full for [`PATIENCE`], or the thread has stopped.
    pub async fn run<T, F>(&self, start: F) -> Result<T, SpawnerError>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let runtime = tokio::runtime::Handle::current();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut job: Job = Box::new(move || {
            let _ = tx.send(runtime.block_on(start));
        });
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            match self.jobs.try_send(job) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return Err(SpawnerError::Stopped),
                Err(TrySendError::Full(back)) if tokio::time::Instant::now() < deadline => {
                    job = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(TrySendError::Full(_)) => return Err(SpawnerError::Busy),
            }
        }
        rx.await.map_err(|_| SpawnerError::Stopped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn starts_run_on_the_thread_and_spawn_onto_the_runtime() {
        let spawner = Spawner::start().unwrap();
        let (name, task) = spawner
            .run(async {
                let name = std::thread::current().name().map(str::to_string);
                (name, tokio::spawn(async { std::thread::current().name().map(str::to_string) }))
            })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("rookery-session-start"));
        assert_ne!(task.await.unwrap().as_deref(), Some("rookery-session-start"), "tasks run on the runtime");
    }
}
