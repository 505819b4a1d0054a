//! Every metric of the node, defined in one place.
//!
//! Names follow `rookery_<noun>_<unit>[_total]`; labels have bounded cardinality (never a user
//! or conversation id). `docs/operations.md` lists the same names.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// Latency buckets from 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Batch-size buckets: 1 to 2048 jobs (the most one batch takes) by powers of two.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0];

/// Most recent operational events kept for the console.
const RECENT_EVENTS: usize = 50;

/// The node's metrics and the registry that exports them.
pub struct Metrics {
    registry: Registry,
    /// Recent restarts and slow-consumer disconnects, newest last (for the console).
    recent: parking_lot::Mutex<std::collections::VecDeque<serde_json::Value>>,
    /// Open WebSocket connections.
    pub ws_connections: IntGauge,
    /// Open sessions (registered connections, their actor awake or hibernating); set from the
    /// registry at each scrape.
    pub sessions_active: IntGauge,
    /// Open sessions whose actor is hibernating (their client has been quiet).
    pub sessions_hibernating: IntGauge,
    /// Live conversation actors.
    pub groups_active: IntGauge,
    /// Messages accepted from clients (`send`), before dedupe.
    pub messages_received: IntCounter,
    /// Message frames queued to sessions (one per recipient session).
    pub messages_delivered: IntCounter,
    /// Time from a `send` leaving its session (decoded and checked) to its `ack` being queued:
    /// `send_wait_seconds`, the store write and `commit_wait_seconds` are its stages.
    pub message_ack_seconds: Histogram,
    /// Time from a `send` leaving its session to its `msg` being queued to the members'
    /// sessions on the owning node (the fan-out).
    pub message_delivery_seconds: Histogram,
    /// `error` events sent to WebSocket clients, by code (bounded: the protocol's codes).
    pub ws_errors: IntCounterVec,
    /// Time a store write (a group-committed append) took, seen by its caller.
    pub store_write_seconds: Histogram,
    /// Time a `send` waited between its session and its conversation actor taking it (routing
    /// and the actor's mailbox).
    pub send_wait_seconds: Histogram,
    /// Time a finished store write waited for its conversation actor to apply it (ack and
    /// fan-out): the actor's mailbox and its wait for a worker.
    pub commit_wait_seconds: Histogram,
    /// Time a group-commit batch took to commit and sync, per batch.
    pub store_batch_seconds: Histogram,
    /// Jobs (message appends and other writes) per group-commit batch, that is per fsync.
    pub store_batch_jobs: Histogram,
    /// Time a conversation actor took to start (store reads and the durable claim), per start.
    pub conversation_start_seconds: Histogram,
    /// Every store call's latency, by operation (`append_messages`, `messages`, `cursor`, ...).
    pub store_op_seconds: HistogramVec,
    /// Frames waiting in (or being handled from) session actors' mailboxes.
    pub session_mailbox_frames: IntGauge,
    /// Messages conversation actors hold between `send` and the store's answer.
    pub conversation_writes_in_flight: IntGauge,
    /// Frames queued in sessions' outbound queues (sampled when `/metrics` is read).
    pub outbound_queued_frames: IntGauge,
    /// Actor restarts (or cleanups of crashed actors) by kind: `conversation`, `session`.
    pub actor_restarts: IntCounterVec,
    /// Sessions closed with 4009 because their outbound queue overflowed.
    pub slow_consumer_disconnects: IntCounter,
    /// Live nodes in the cluster view (1 when running alone).
    pub cluster_nodes: IntGauge,
    /// Cross-node envelopes by direction (`in`, `out`).
    pub cluster_envelopes: IntCounterVec,
    /// Cross-node batches (one Redis publish each) by direction.
    pub cluster_batches: IntCounterVec,
    /// Cross-node payload bytes by direction.
    pub cluster_bytes: IntCounterVec,
    /// Envelopes that could not be sent (queue full or Redis unreachable).
    pub cluster_dropped: IntCounter,
    /// Times this node found cross-node traffic lost and closed its sessions (1012) to resync.
    pub cluster_resyncs: IntCounter,
    /// HTTP requests by matched route and status.
    pub http_requests: IntCounterVec,
    /// HTTP request latency by matched route.
    pub http_request_seconds: HistogramVec,
}

impl Metrics {
    /// Creates and registers every metric, including process metrics (RSS, CPU, fds).
    pub fn new() -> Self {
        let registry = Registry::new();
        let latency = |name: &str, help: &str| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()))
                .expect("valid histogram")
        };
        let m = Metrics {
            recent: parking_lot::Mutex::new(std::collections::VecDeque::new()),
            ws_connections: IntGauge::new("rookery_ws_connections", "Open WebSocket connections").unwrap(),
            sessions_active: IntGauge::new("rookery_sessions_active", "Open sessions").unwrap(),
            sessions_hibernating: IntGauge::new(
                "rookery_sessions_hibernating",
                "Open sessions whose actor is hibernating (a quiet client)",
            )
            .unwrap(),
            groups_active: IntGauge::new("rookery_groups_active", "Live conversation actors").unwrap(),
            messages_received: IntCounter::new("rookery_messages_received_total", "Messages received from clients")
                .unwrap(),
            messages_delivered: IntCounter::new(
                "rookery_messages_delivered_total",
                "Message events queued to recipient sessions",
            )
            .unwrap(),
            message_ack_seconds: latency("rookery_message_ack_seconds", "Send to ack latency"),
            message_delivery_seconds: latency(
                "rookery_message_delivery_seconds",
                "Send to fan-out latency on the owning node",
            ),
            ws_errors: IntCounterVec::new(
                Opts::new("rookery_ws_errors_total", "error events sent to WebSocket clients by code"),
                &["code"],
            )
            .unwrap(),
            store_write_seconds: latency("rookery_store_write_seconds", "Store write latency seen by the caller"),
            send_wait_seconds: latency(
                "rookery_conversation_send_wait_seconds",
                "Time a send waits between its session and its conversation actor",
            ),
            commit_wait_seconds: latency(
                "rookery_conversation_commit_wait_seconds",
                "Time a finished store write waits for its conversation actor to apply it",
            ),
            store_batch_seconds: latency("rookery_store_batch_seconds", "Group-commit batch commit and sync time"),
            store_batch_jobs: Histogram::with_opts(
                HistogramOpts::new("rookery_store_batch_jobs", "Writes per group-commit batch (per fsync)")
                    .buckets(BATCH_BUCKETS.to_vec()),
            )
            .expect("valid histogram"),
            conversation_start_seconds: latency(
                "rookery_conversation_start_seconds",
                "Conversation actor start time (store reads and the durable claim)",
            ),
            store_op_seconds: HistogramVec::new(
                HistogramOpts::new("rookery_store_op_seconds", "Store call latency by operation")
                    .buckets(LATENCY_BUCKETS.to_vec()),
                &["op"],
            )
            .unwrap(),
            session_mailbox_frames: IntGauge::new(
                "rookery_session_mailbox_frames",
                "Frames waiting in or handled from session actor mailboxes",
            )
            .unwrap(),
            conversation_writes_in_flight: IntGauge::new(
                "rookery_conversation_writes_in_flight",
                "Messages between send and the store's answer in conversation actors",
            )
            .unwrap(),
            outbound_queued_frames: IntGauge::new(
                "rookery_outbound_queued_frames",
                "Frames queued in session outbound queues (sampled at scrape)",
            )
            .unwrap(),
            actor_restarts: IntCounterVec::new(
                Opts::new("rookery_actor_restarts_total", "Actors restarted or cleaned up after a crash"),
                &["kind"],
            )
            .unwrap(),
            slow_consumer_disconnects: IntCounter::new(
                "rookery_slow_consumer_disconnects_total",
                "Sessions closed because their outbound queue overflowed",
            )
            .unwrap(),
            cluster_nodes: IntGauge::new("rookery_cluster_nodes", "Live nodes in the cluster view").unwrap(),
            cluster_envelopes: IntCounterVec::new(
                Opts::new("rookery_cluster_envelopes_total", "Cross-node envelopes by direction"),
                &["direction"],
            )
            .unwrap(),
            cluster_batches: IntCounterVec::new(
                Opts::new("rookery_cluster_batches_total", "Cross-node batches (Redis publishes) by direction"),
                &["direction"],
            )
            .unwrap(),
            cluster_bytes: IntCounterVec::new(
                Opts::new("rookery_cluster_bytes_total", "Cross-node payload bytes by direction"),
                &["direction"],
            )
            .unwrap(),
            cluster_dropped: IntCounter::new(
                "rookery_cluster_dropped_total",
                "Cross-node envelopes that could not be sent",
            )
            .unwrap(),
            cluster_resyncs: IntCounter::new(
                "rookery_cluster_resyncs_total",
                "Times lost cross-node traffic made this node close its sessions to resync",
            )
            .unwrap(),
            http_requests: IntCounterVec::new(
                Opts::new("rookery_http_requests_total", "HTTP requests by matched route and status"),
                &["route", "status"],
            )
            .unwrap(),
            http_request_seconds: HistogramVec::new(
                HistogramOpts::new("rookery_http_request_seconds", "HTTP request latency by matched route")
                    .buckets(LATENCY_BUCKETS.to_vec()),
                &["route"],
            )
            .unwrap(),
            registry,
        };
        let r = &m.registry;
        r.register(Box::new(m.ws_connections.clone())).unwrap();
        r.register(Box::new(m.sessions_active.clone())).unwrap();
        r.register(Box::new(m.sessions_hibernating.clone())).unwrap();
        r.register(Box::new(m.groups_active.clone())).unwrap();
        r.register(Box::new(m.messages_received.clone())).unwrap();
        r.register(Box::new(m.messages_delivered.clone())).unwrap();
        r.register(Box::new(m.message_ack_seconds.clone())).unwrap();
        r.register(Box::new(m.store_write_seconds.clone())).unwrap();
        r.register(Box::new(m.send_wait_seconds.clone())).unwrap();
        r.register(Box::new(m.commit_wait_seconds.clone())).unwrap();
        r.register(Box::new(m.conversation_start_seconds.clone())).unwrap();
        r.register(Box::new(m.message_delivery_seconds.clone())).unwrap();
        r.register(Box::new(m.ws_errors.clone())).unwrap();
        r.register(Box::new(m.store_batch_seconds.clone())).unwrap();
        r.register(Box::new(m.store_batch_jobs.clone())).unwrap();
        r.register(Box::new(m.actor_restarts.clone())).unwrap();
        r.register(Box::new(m.store_op_seconds.clone())).unwrap();
        r.register(Box::new(m.session_mailbox_frames.clone())).unwrap();
        r.register(Box::new(m.conversation_writes_in_flight.clone())).unwrap();
        r.register(Box::new(m.outbound_queued_frames.clone())).unwrap();
        r.register(Box::new(m.slow_consumer_disconnects.clone())).unwrap();
        r.register(Box::new(m.cluster_nodes.clone())).unwrap();
        r.register(Box::new(m.cluster_envelopes.clone())).unwrap();
        r.register(Box::new(m.cluster_batches.clone())).unwrap();
        r.register(Box::new(m.cluster_bytes.clone())).unwrap();
        r.register(Box::new(m.cluster_dropped.clone())).unwrap();
        r.register(Box::new(m.cluster_resyncs.clone())).unwrap();
        r.register(Box::new(m.http_requests.clone())).unwrap();
        r.register(Box::new(m.http_request_seconds.clone())).unwrap();
        #[cfg(target_os = "linux")]
        r.register(Box::new(prometheus::process_collector::ProcessCollector::for_self())).unwrap();
        // Label values known in advance are created up front so they export as 0.
        for kind in ["conversation", "session"] {
            m.actor_restarts.with_label_values(&[kind]);
        }
        for direction in ["in", "out"] {
            m.cluster_envelopes.with_label_values(&[direction]);
            m.cluster_batches.with_label_values(&[direction]);
            m.cluster_bytes.with_label_values(&[direction]);
        }
        for code in ["bad_request", "not_member", "rate_limited", "unavailable", "too_large"] {
            m.ws_errors.with_label_values(&[code]);
        }
        m.cluster_nodes.set(1);
        m
    }

    /// Records an operational event (`kind`: `restart`, `slow_consumer`) for the console.
    pub fn record_event(&self, kind: &str, detail: serde_json::Value) {
        let mut recent = self.recent.lock();
        recent.push_back(serde_json::json!({"kind": kind, "ts": crate::now_ms(), "detail": detail}));
        while recent.len() > RECENT_EVENTS {
            recent.pop_front();
        }
    }

    /// Recent operational events, newest first.
    pub fn recent_events(&self) -> Vec<serde_json::Value> {
        self.recent.lock().iter().rev().cloned().collect()
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding cannot fail");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
