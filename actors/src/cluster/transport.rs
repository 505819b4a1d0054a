//! Cross-node traffic: the [`Transport`] trait and its Redis pub/sub implementation.
//!
//! Every node subscribes to two channels: its own (`<prefix>:to:<node>`) and the cluster's
//! (`<prefix>:all`). Senders never wait: envelopes go into a bounded queue and one flusher task
//! drains whatever has accumulated, groups it by channel, and publishes each group as one
//! [`Batch`] in a single pipelined round trip, so cross-node cost is paid per batch, not per
//! message.
//!
//! Queues and their overflow policy:
//! - outbound: [`OUTBOUND_QUEUE`] envelopes; when full, `send` fails with
//!   [`TransportError::Full`] and the caller answers `unavailable` (requests) or counts a drop
//!   (fan-out; the receivers then see a gap and resync).
//! - inbound: [`INBOUND_QUEUE`] batches between the subscriber and the dispatcher; when full the
//!   subscriber waits, Redis buffers, and past Redis' own pub/sub output limit it drops the
//!   subscription, which the node treats as lost traffic (resync).
//!
//! Lost traffic: batches carry the sender's process epoch and a per-channel counter. A gap, or a
//! subscription that had to be re-established, means frames may be missing on this node; the
//! node then closes its sessions with 1012 so that clients reconnect and `sync` from the store,
//! where every acked message is. Redis pub/sub is at-most-once; this is what makes delivery
//! across nodes exactly-once from the client's point of view.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use serde::Serialize;
use tokio::sync::mpsc;

use super::wire::{Batch, Envelope};
use crate::Metrics;

/// Envelopes waiting to be published.
pub const OUTBOUND_QUEUE: usize = 65_536;
/// Received batches waiting for the dispatcher.
pub const INBOUND_QUEUE: usize = 1024;
/// Most envelopes in one flush.
const MAX_FLUSH: usize = 4096;

/// Where an envelope goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Route {
    /// One node.
    Node(Arc<str>),
    /// Every other node.
    All,
}

/// Why an envelope could not be queued.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TransportError {
    #[error("the cross-node queue is full")]
    Full,
    #[error("the cluster transport is down (Redis unreachable)")]
    Down,
}

/// What the transport hands to the node.
#[derive(Debug)]
pub enum Inbound {
    /// A batch from another node.
    Batch(Batch),
    /// The subscription was re-established: traffic may have been lost meanwhile.
    Resubscribed,
    /// Envelopes that could not be published (Redis failed); their requests need an answer.
    Undelivered(Vec<Envelope>),
}

/// Carries envelopes between nodes. A direct node-to-node link can replace Redis behind it.
pub trait Transport: Send + Sync {
    /// Queues an envelope without waiting.
    ///
    /// # Errors
    /// `Full` when the outbound queue is full, `Down` while the transport knows it cannot deliver.
    fn send(&self, to: Route, env: Envelope) -> Result<(), TransportError>;
    /// Whether the last attempt to reach the engine succeeded.
    fn is_up(&self) -> bool;
    /// If envelopes were dropped since the last announcement, tells every node (they resync).
    fn announce_losses(&self);
}

struct Flags {
    up: Arc<AtomicBool>,
    lost: Arc<AtomicBool>,
}

/// Redis pub/sub transport.
pub struct RedisTransport {
    tx: mpsc::Sender<(Route, Envelope)>,
    up: Arc<AtomicBool>,
    /// Set when an envelope could not be sent; the next flush tells every node (`Lost`).
    lost: Arc<AtomicBool>,
}

/// The channel names of one cluster.
#[derive(Clone)]
pub struct Channels {
    prefix: Arc<str>,
}

impl Channels {
    pub fn new(prefix: &str) -> Self {
        Channels { prefix: prefix.into() }
    }
    pub fn node(&self, id: &str) -> String {
        format!("{}:to:{id}", self.prefix)
    }
    pub fn all(&self) -> String {
        format!("{}:all", self.prefix)
    }
}

#[derive(Serialize)]
struct BatchRef<'a> {
    from: &'a str,
    epoch: u64,
    n: u64,
    all: bool,
    envs: &'a [Envelope],
}

impl RedisTransport {
    /// Starts the flusher and the subscriber. Inbound traffic arrives on the returned receiver.
    pub fn start(
        client: redis::Client,
        conn: ConnectionManager,
        me: Arc<str>,
        epoch: u64,
        channels: Channels,
        metrics: Arc<Metrics>,
    ) -> (Arc<Self>, mpsc::Receiver<Inbound>) {
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        let (in_tx, in_rx) = mpsc::channel(INBOUND_QUEUE);
        let up = Arc::new(AtomicBool::new(true));
        let lost = Arc::new(AtomicBool::new(false));
        let flags = Flags { up: up.clone(), lost: lost.clone() };
        tokio::spawn(flush(rx, conn, me.clone(), epoch, channels.clone(), flags, metrics.clone(), in_tx.clone()));
        tokio::spawn(subscribe(client, channels, me, in_tx, metrics));
        (Arc::new(RedisTransport { tx, up, lost }), in_rx)
    }

    /// The flag the membership loop also sets from its heartbeats.
    pub fn up_flag(&self) -> Arc<AtomicBool> {
        self.up.clone()
    }
}

impl Transport for RedisTransport {
    fn send(&self, to: Route, env: Envelope) -> Result<(), TransportError> {
        if !self.up.load(Ordering::Relaxed) {
            self.lost.store(true, Ordering::Relaxed);
            return Err(TransportError::Down);
        }
        self.tx.try_send((to, env)).map_err(|_| {
            self.lost.store(true, Ordering::Relaxed);
            TransportError::Full
        })
    }

    fn announce_losses(&self) {
        if self.up.load(Ordering::Relaxed)
            && self.lost.swap(false, Ordering::Relaxed)
            && self.tx.try_send((Route::All, Envelope::Lost)).is_err()
        {
            self.lost.store(true, Ordering::Relaxed);
        }
    }

    fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }
}

#[allow(clippy::too_many_arguments)]
async fn flush(
    mut rx: mpsc::Receiver<(Route, Envelope)>,
    mut conn: ConnectionManager,
    me: Arc<str>,
    epoch: u64,
    channels: Channels,
    flags: Flags,
    metrics: Arc<Metrics>,
    inbound: mpsc::Sender<Inbound>,
) {
    let Flags { up, lost } = flags;
    let mut counters: HashMap<Route, u64> = HashMap::new();
    let mut groups: HashMap<Route, Vec<Envelope>> = HashMap::new();
    while let Some((route, env)) = rx.recv().await {
        if lost.swap(false, Ordering::Relaxed) {
            // Something meant for other nodes was dropped: they must resync (see the module doc).
            groups.entry(Route::All).or_default().push(Envelope::Lost);
        }
        groups.entry(route).or_default().push(env);
        let mut taken = 1;
        while taken < MAX_FLUSH {
            match rx.try_recv() {
                Ok((route, env)) => groups.entry(route).or_default().push(env),
                Err(_) => break,
            }
            taken += 1;
        }
        let mut pipe = redis::pipe();
        let mut batches = 0u64;
        for (route, envs) in &groups {
            let n = counters.entry(route.clone()).or_insert(0);
            *n += 1;
            let batch = BatchRef { from: &me, epoch, n: *n, all: *route == Route::All, envs };
            let payload = match serde_json::to_vec(&batch) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "could not encode a cross-node batch");
                    continue;
                }
            };
            let channel = match route {
                Route::Node(id) => channels.node(id),
                Route::All => channels.all(),
            };
            metrics.cluster_bytes.with_label_values(&["out"]).inc_by(payload.len() as u64);
            pipe.publish(channel, payload).ignore();
            batches += 1;
        }
        let sent: usize = groups.values().map(Vec::len).sum();
        match pipe.query_async::<()>(&mut conn).await {
            Ok(()) => {
                up.store(true, Ordering::Relaxed);
                metrics.cluster_batches.with_label_values(&["out"]).inc_by(batches);
                metrics.cluster_envelopes.with_label_values(&["out"]).inc_by(sent as u64);
                groups.clear();
            }
            Err(e) => {
                up.store(false, Ordering::Relaxed);
                lost.store(true, Ordering::Relaxed);
                metrics.cluster_dropped.inc_by(sent as u64);
                tracing::warn!(error = %e, envelopes = sent, "publishing cross-node traffic failed");
                let lost: Vec<Envelope> = groups.drain().flat_map(|(_, v)| v).collect();
                let _ = inbound.send(Inbound::Undelivered(lost)).await;
            }
        }
    }
}

async fn subscribe(
    client: redis::Client,
    channels: Channels,
    me: Arc<str>,
    inbound: mpsc::Sender<Inbound>,
    metrics: Arc<Metrics>,
) {
    let mut first = true;
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut pubsub = match client.get_async_pubsub().await {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "cluster subscription: Redis unreachable");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        if let Err(e) = pubsub.subscribe(&[channels.node(&me), channels.all()]).await {
            tracing::warn!(error = %e, "subscribing to cluster channels failed");
            tokio::time::sleep(backoff).await;
            continue;
        }
        backoff = Duration::from_millis(100);
        if !first && inbound.send(Inbound::Resubscribed).await.is_err() {
            return;
        }
        first = false;
        let mut stream = pubsub.into_on_message();
        while let Some(msg) = stream.next().await {
            let payload = msg.get_payload_bytes();
            metrics.cluster_bytes.with_label_values(&["in"]).inc_by(payload.len() as u64);
            match serde_json::from_slice::<Batch>(payload) {
                Ok(batch) if *batch.from == *me => {}
                Ok(batch) => {
                    if inbound.send(Inbound::Batch(batch)).await.is_err() {
                        return;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "undecodable cross-node batch dropped"),
            }
        }
        tracing::warn!("cluster subscription lost; reconnecting");
    }
}
