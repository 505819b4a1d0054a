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
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
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

/// A bounded queue of frames between producers and one socket writer. A deque behind a lock
/// rather than a channel: it allocates only while frames wait (a channel keeps a block of slots
/// for the connection's whole life), and most connections are idle most of the time. The
/// overflow policy is the caller's: [`FrameQueue::try_push`] refuses past the bound.
///
/// The one consumer waits through [`FrameQueue::poll_take`], which leaves its task's waker in an
/// [`AtomicWaker`]: a push wakes it with an atomic swap, and a writer that waits on several
/// things (its frames, its pongs, its timer) polls them all in one future, without a waiter to
/// enlist in and remove from a list at every turn as a `Notify` would need.
pub struct FrameQueue {
    frames: Mutex<VecDeque<Bytes>>,
    capacity: usize,
    /// The consumer's task, woken when frames are queued.
    writer: AtomicWaker,
    /// Wakes `push_wait`: the writer took frames from a full queue.
    room: Notify,
    /// The writer is gone; nothing queued would ever be written. Read and set under the lock.
    closed: AtomicBool,
}

/// Why a frame was not queued.
pub enum Refused {
    Full(Bytes),
    Closed,
}

impl FrameQueue {
    /// An empty queue with room for `capacity` frames (at least 1).
    pub fn new(capacity: usize) -> Self {
        FrameQueue {
            frames: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            writer: AtomicWaker::new(),
            room: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }

    /// Queues `frame` unless the queue is full or closed.
    pub fn try_push(&self, frame: Bytes) -> Result<(), Refused> {
        let mut q = self.frames.lock();
        if self.closed.load(Ordering::Relaxed) {
            return Err(Refused::Closed);
        }
        if q.len() >= self.capacity {
            return Err(Refused::Full(frame));
        }
        q.push_back(frame);
        drop(q);
        self.writer.wake();
        Ok(())
    }

    /// Takes up to `max` queued frames, oldest first, if there are any; otherwise leaves the
    /// task's waker for the next push and returns `Pending`. For one consumer only: a second
    /// one would replace the first one's waker.
    pub fn poll_take(&self, cx: &mut Context<'_>, max: usize) -> Poll<VecDeque<Bytes>> {
        // Registered before the look at the queue: a push after the look wakes this task.
        self.writer.register(cx.waker());
        let mut q = self.frames.lock();
        if q.is_empty() {
            return Poll::Pending;
        }
        // Only a push that found the queue full waits for room (`push_wait`), so only a take
        // from a full queue has anyone to wake; the others skip the notifier's lock.
        let was_full = q.len() >= self.capacity;
        let batch = if q.len() <= max { std::mem::take(&mut *q) } else { q.drain(..max).collect() };
        drop(q);
        if was_full {
            self.room.notify_waiters();
        }
        Poll::Ready(batch)
    }

    /// Waits until frames are queued, then takes up to `max` of them, oldest first. Cancel
    /// safe: dropped while waiting, it takes nothing. One consumer only ([`Self::poll_take`]).
    #[cfg(test)]
    pub async fn take(&self, max: usize) -> VecDeque<Bytes> {
        std::future::poll_fn(|cx| self.poll_take(cx, max)).await
    }

    /// Frames queued and not yet taken.
    pub fn len(&self) -> usize {
        self.frames.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Refuses every later push and drops what waits (the writer is gone).
    pub fn close(&self) {
        let mut q = self.frames.lock();
        self.closed.store(true, Ordering::Relaxed);
        q.clear();
        drop(q);
        self.room.notify_waiters();
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }
}

/// The producer side of one session's outbound queue, shared by everything that sends to it.
pub struct SessionHandle {
    pub addr: SessionAddr,
    queue: Arc<FrameQueue>,
    close: CancellationToken,
    close_code: AtomicU16,
    metrics: Arc<Metrics>,
}

/// The consumer side, owned by the socket writer.
pub struct OutboundReceiver {
    queue: Arc<FrameQueue>,
}

impl OutboundReceiver {
    /// Waits until frames are queued, then takes up to `max` of them, oldest first (cancel safe).
    #[cfg(test)]
    pub async fn take(&mut self, max: usize) -> VecDeque<Bytes> {
        self.queue.take(max).await
    }

    /// [`FrameQueue::poll_take`] of this session's queue.
    pub fn poll_take(&mut self, cx: &mut Context<'_>, max: usize) -> Poll<VecDeque<Bytes>> {
        self.queue.poll_take(cx, max)
    }
}

impl Drop for OutboundReceiver {
    fn drop(&mut self) {
        self.queue.close();
    }
}

impl SessionHandle {
    /// Creates a handle and its receiver with room for `capacity` frames.
    pub fn new(addr: SessionAddr, capacity: usize, metrics: Arc<Metrics>) -> (Arc<Self>, OutboundReceiver) {
        let queue = Arc::new(FrameQueue::new(capacity));
        let close = CancellationToken::new();
        let handle =
            Arc::new(SessionHandle { addr, queue: queue.clone(), close, close_code: AtomicU16::new(0), metrics });
        (handle, OutboundReceiver { queue })
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
    /// returns whether this one did. The code is set before the writer is woken, so a writer
    /// reads [`SessionHandle::close_code`] after it leaves its waker with the queue.
    pub fn close_with(&self, code: u16) -> bool {
        let first = self.close_code.compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire).is_ok();
        if first {
            self.close.cancel();
            // The writer waits on its queue's waker, not on the token (`FrameQueue::poll_take`),
            // and reads the code once woken.
            self.queue.writer.wake();
        }
        first
    }

    /// The close code requested so far (0 when none).
    pub fn close_code(&self) -> u16 {
        self.close_code.load(Ordering::Acquire)
    }

    /// Frames queued and not yet taken by the writer.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Resolves once something asked the session to close.
    pub async fn closing(&self) {
        self.close.cancelled().await
    }

    /// Whether the session is closing or closed.
    pub fn is_closed(&self) -> bool {
        self.close.is_cancelled() || self.queue.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(capacity: usize) -> (Arc<SessionHandle>, OutboundReceiver) {
        let addr = SessionAddr { node_id: "n".into(), session_id: "s".into(), user_id: "u".into() };
        SessionHandle::new(addr, capacity, Arc::new(Metrics::new()))
    }

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[tokio::test]
    async fn take_returns_oldest_first_and_at_most_max() {
        let q = FrameQueue::new(8);
        for f in ["a", "b", "c"] {
            assert!(q.try_push(b(f)).is_ok());
        }
        assert_eq!(q.take(2).await, [b("a"), b("b")]);
        assert_eq!(q.take(2).await, [b("c")]);
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn a_waiting_take_wakes_on_a_push_and_a_cancelled_one_takes_nothing() {
        let q = Arc::new(FrameQueue::new(8));
        // Cancelled while waiting: nothing is lost.
        assert!(tokio::time::timeout(Duration::from_millis(20), q.take(8)).await.is_err());
        assert!(q.try_push(b("x")).is_ok());
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { q.take(8).await }
        });
        assert_eq!(waiter.await.unwrap(), [b("x")]);
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { q.take(8).await }
        });
        tokio::task::yield_now().await;
        assert!(q.try_push(b("y")).is_ok());
        assert_eq!(waiter.await.unwrap(), [b("y")]);
    }

    #[tokio::test]
    async fn a_full_queue_closes_the_session_as_a_slow_consumer() {
        let (h, _rx) = handle(2);
        assert!(h.push(b("1")) && h.push(b("2")));
        assert!(!h.push(b("3")));
        assert_eq!(h.close_code(), close::SLOW_CONSUMER);
        assert_eq!(h.queued(), 2);
    }

    #[tokio::test]
    async fn push_wait_waits_for_room_and_gives_up_at_its_deadline() {
        let (h, mut rx) = handle(1);
        assert!(h.push(b("1")));
        let waiting = tokio::spawn({
            let h = h.clone();
            async move { h.push_wait(b("2"), Duration::from_secs(10)).await }
        });
        tokio::task::yield_now().await;
        assert_eq!(rx.take(8).await, [b("1")]);
        assert!(waiting.await.unwrap(), "room made by the writer lets the waiting push in");
        assert_eq!(rx.take(8).await, [b("2")]);
        assert_eq!(h.close_code(), 0);

        assert!(h.push(b("3")));
        assert!(!h.push_wait(b("4"), Duration::from_millis(30)).await);
        assert_eq!(h.close_code(), close::SLOW_CONSUMER);
    }

    #[tokio::test]
    async fn without_a_writer_pushes_are_refused_without_a_slow_consumer_close() {
        let (h, rx) = handle(4);
        assert!(h.push(b("1")));
        drop(rx);
        assert!(h.is_closed());
        assert_eq!(h.queued(), 0, "what waited is dropped with the writer");
        assert!(!h.push(b("2")));
        assert!(!h.push_wait(b("3"), Duration::from_secs(10)).await);
        assert_eq!(h.close_code(), 0);
    }
}
