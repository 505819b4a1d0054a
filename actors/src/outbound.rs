//! A session's outbound queue: pre-encoded text frames waiting for the socket writer.
//!
//! Queue: bounded at [`HubConfig::outbound_queue`](crate::HubConfig) frames. Overflow policy:
//! fan-out never waits. When a push finds the queue full, the session is closed with 4009 (slow
//! consumer), so one client that stops reading cannot slow anybody else down or grow memory.
//! Replies to the client's own requests (`sync` pages, errors) wait for room instead, up to a
//! deadline, because they are paced by the client itself.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rookery_protocol::close;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::Metrics;

/// Where a session lives: enough to address it from any node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionAddr {
    pub node_id: Arc<str>,
    pub session_id: Arc<str>,
    pub user_id: Arc<str>,
}

/// The producer side of one session's outbound queue, shared by everything that sends to it.
pub struct SessionHandle {
    pub addr: SessionAddr,
    tx: mpsc::Sender<Bytes>,
    close: CancellationToken,
    close_code: AtomicU16,
    metrics: Arc<Metrics>,
}

/// The consumer side, owned by the socket writer.
pub struct OutboundReceiver {
    pub frames: mpsc::Receiver<Bytes>,
    pub close: CancellationToken,
}

impl SessionHandle {
    /// Creates a handle and its receiver with room for `capacity` frames.
    pub fn new(addr: SessionAddr, capacity: usize, metrics: Arc<Metrics>) -> (Arc<Self>, OutboundReceiver) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let close = CancellationToken::new();
        let handle = Arc::new(SessionHandle { addr, tx, close: close.clone(), close_code: AtomicU16::new(0), metrics });
        (handle, OutboundReceiver { frames: rx, close })
    }

    /// Queues a frame without waiting. A full queue closes the session with 4009 and returns
    /// `false`; so does a closed one (without counting a slow consumer).
    pub fn push(&self, frame: Bytes) -> bool {
        match self.tx.try_send(frame) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.slow_consumer();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Queues a frame, waiting up to `patience` for room; past it the session is closed with 4009.
    pub async fn push_wait(&self, frame: Bytes, patience: Duration) -> bool {
        match tokio::time::timeout(patience, self.tx.send(frame)).await {
            Ok(Ok(())) => true,
            Ok(Err(_)) => false,
            Err(_) => {
                self.slow_consumer();
                false
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
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Resolves once something asked the session to close.
    pub async fn closing(&self) {
        self.close.cancelled().await
    }

    /// Whether the session is closing or closed.
    pub fn is_closed(&self) -> bool {
        self.close.is_cancelled() || self.tx.is_closed()
    }
}
