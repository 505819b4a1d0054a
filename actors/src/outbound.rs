//! A session's outbound queue: pre-encoded text frames waiting for the socket writer.
//!
//! Queue: bounded at [`HubConfig::outbound_queue`](crate::HubConfig) frames. Overflow policy:
//! fan-out never waits. When a push finds the queue full, the session is closed with 4009 (slow
//! consumer), so one client that stops reading cannot slow anybody else down or grow memory.
//! Replies to the client's own requests (`sync` pages, errors) wait for room instead, up to a
//! deadline, because they are paced by the client itself.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use rookery_protocol::close;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::Metrics;

/// Where a session lives: enough to address it from any node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionAddr {
    pub node_id: Arc<str>,
    pub session_id: Arc<str>,
    pub user_id: Arc<str>,
}

/// The queue itself, shared by the handle and the writer. A deque behind a lock rather than a
/// channel: it allocates only while frames wait (a channel keeps a block of slots for the
/// connection's whole life), and most connections are idle most of the time.
struct Queue {
    frames: Mutex<VecDeque<Bytes>>,
    capacity: usize,
    /// Wakes the writer: frames were queued.
    queued: Notify,
    /// Wakes `push_wait`: the writer took frames.
    room: Notify,
    /// The writer is gone; nothing queued would ever be written.
    receiver_gone: AtomicBool,
}

/// Why a frame was not queued.
enum Refused {
    Full(Bytes),
    Closed,
}

impl Queue {
    fn try_push(&self, frame: Bytes) -> Result<(), Refused> {
        if self.receiver_gone.load(Ordering::Acquire) {
            return Err(Refused::Closed);
        }
        let mut q = self.frames.lock();
        if q.len() >= self.capacity {
            return Err(Refused::Full(frame));
        }
        q.push_back(frame);
        drop(q);
        self.queued.notify_one();
        Ok(())
    }
}

/// The producer side of one session's outbound queue, shared by everything that sends to it.
pub struct SessionHandle {
    pub addr: SessionAddr,
    queue: Arc<Queue>,
    close: CancellationToken,
    close_code: AtomicU16,
    metrics: Arc<Metrics>,
}

/// The consumer side, owned by the socket writer.
pub struct OutboundReceiver {
    queue: Arc<Queue>,
    pub close: CancellationToken,
}

impl OutboundReceiver {
    /// Waits until frames are queued, then takes up to `max` of them, oldest first. Cancel safe:
    /// dropped while waiting, it takes nothing.
    pub async fn take(&mut self, max: usize) -> VecDeque<Bytes> {
        loop {
            {
                let mut q = self.queue.frames.lock();
                if !q.is_empty() {
                    let batch = if q.len() <= max { std::mem::take(&mut *q) } else { q.drain(..max).collect() };
                    drop(q);
                    self.queue.room.notify_waiters();
                    return batch;
                }
            }
            // A frame queued after the check above leaves a permit: this returns at once.
            self.queue.queued.notified().await;
        }
    }
}

impl Drop for OutboundReceiver {
    fn drop(&mut self) {
        self.queue.receiver_gone.store(true, Ordering::Release);
        self.queue.frames.lock().clear();
        self.queue.room.notify_waiters();
    }
}

impl SessionHandle {
    /// Creates a handle and its receiver with room for `capacity` frames.
    pub fn new(addr: SessionAddr, capacity: usize, metrics: Arc<Metrics>) -> (Arc<Self>, OutboundReceiver) {
        let queue = Arc::new(Queue {
            frames: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            queued: Notify::new(),
            room: Notify::new(),
            receiver_gone: AtomicBool::new(false),
        });
        let close = CancellationToken::new();
        let handle = Arc::new(SessionHandle {
            addr,
            queue: queue.clone(),
            close: close.clone(),
            close_code: AtomicU16::new(0),
            metrics,
        });
        (handle, OutboundReceiver { queue, close })
    }

    /// Queues a frame without waiting. A full queue closes the session with 4009 and returns
    /// `false`; so does a closed one (without counting a slow consumer).
    pub fn push(&self, frame: Bytes) -> bool {
        match self.queue.try_push(frame) {
            Ok(()) => true,
            Err(Refused::Full(_)) => {
                self.slow_consumer();
                false
            }
            Err(Refused::Closed) => false,
        }
    }

    /// Queues a frame, waiting up to `patience` for room; past it the session is closed with 4009.
    pub async fn push_wait(&self, frame: Bytes, patience: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + patience;
        let mut frame = frame;
        loop {
            // Registered before the attempt, so room made right after it is not missed.
            let room = self.queue.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.queue.try_push(frame) {
                Ok(()) => return true,
                Err(Refused::Closed) => return false,
                Err(Refused::Full(f)) => frame = f,
            }
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                self.slow_consumer();
                return false;
            }
        }
    }

    fn slow_consumer(&self) {
        if self.close_with(close::SLOW_CONSUMER) {
            self.metrics.slow_consumer_disconnects.inc();
            let detail = serde_json::json!({"user_id": &*self.addr.user_id, "session_id": &*self.addr.session_id});
            self.metrics.record_event("slow_consumer", detail);
        }
    }

    /// Asks the writer to close the connection with `code`. Only the first request counts;
    /// returns whether this one did.
    pub fn close_with(&self, code: u16) -> bool {
        let first = self.close_code.compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire).is_ok();
        if first {
            self.close.cancel();
        }
        first
    }

    /// The close code requested so far (0 when none).
    pub fn close_code(&self) -> u16 {
        self.close_code.load(Ordering::Acquire)
    }

    /// Frames queued and not yet taken by the writer.
    pub fn queued(&self) -> usize {
        self.queue.frames.lock().len()
    }

    /// Resolves once something asked the session to close.
    pub async fn closing(&self) {
        self.close.cancelled().await
    }

    /// Whether the session is closing or closed.
    pub fn is_closed(&self) -> bool {
        self.close.is_cancelled() || self.queue.receiver_gone.load(Ordering::Acquire)
    }
}
