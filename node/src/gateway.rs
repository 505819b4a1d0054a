//! The WebSocket gateway: `GET /ws`, upgraded with fastwebsockets.
//!
//! Each connection gets a reader (this task) and a writer task. The reader cuts the stream into
//! frames ([`crate::ws_read`], no buffer held between frames), reassembles
//! fragmented messages (bounded by `max-frame`), decodes them and casts them to the session
//! actor, holding one of the session's in-flight permits per frame; it also hibernates and
//! wakes the actor ([`crate::hibernation`]). The writer drains the
//! session's bounded outbound queue, coalescing every frame already queued into one flush,
//! sends heartbeat pings, and writes the close frame when anything asks the session to close.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::Poll;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::frames::{Frames, Step};
use crate::hibernation::ActorSlot;
use crate::ws_read::{FrameReader, ReadError};
use rookery_actors::session::SessionInput;
use rookery_actors::{new_id, now_ms, FrameQueue, OutboundReceiver, SessionAddr, SessionHandle, SessionMsg};
use rookery_protocol::{close, decode_client_frame, encode_event, ErrorCode, Limits, ServerEvent};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::Semaphore;

use crate::api::error::ApiError;
use crate::server::App;

/// How long the reader waits for the client's close reply after the node sent its close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Most frames written before one flush.
const MAX_COALESCE: usize = 128;

/// `GET /ws`: authenticates (header or `?token=`), then upgrades.
#[utoipa::path(
    get,
    path = "/ws",
    tag = "websocket",
    operation_id = "websocket",
    summary = "Opens a WebSocket (token in the header or `?token=`)",
    description = "The WebSocket gateway: a GET with the RFC 6455 upgrade headers. The protocol spoken once \
upgraded (frames, events, close codes) is in `docs/protocol.md`, section 4.",
    security(("bearer" = []), ("query_token" = [])),
    params(
        ("Connection" = String, Header, description = "`Upgrade`", pattern = "^[Uu][Pp][Gg][Rr][Aa][Dd][Ee]$"),
        ("Upgrade" = String, Header, description = "`websocket`", pattern = "^[Ww][Ee][Bb][Ss][Oo][Cc][Kk][Ee][Tt]$"),
        ("Sec-WebSocket-Version" = String, Header, description = "`13`", pattern = "^13$"),
        ("Sec-WebSocket-Key" = String, Header, description = "The client's nonce (RFC 6455 section 4.1)"),
    ),
    responses(
        (status = 101, description = "Switching Protocols: the connection is a WebSocket from here on"),
        (status = 400, description = "`bad_request`: not a WebSocket upgrade request", body = crate::api::error::ErrorBody),
        (status = 401, description = "`unauthorized`: missing, invalid or expired access token", body = crate::api::error::ErrorBody),
        (status = 403, description = "`forbidden`: the user is banned", body = crate::api::error::ErrorBody),
        (status = 429, description = "`rate_limited`: too many open connections from this address", body = crate::api::error::ErrorBody),
    ),
)]
pub async fn upgrade(State(app): State<Arc<App>>, mut req: Request) -> Response {
    let token = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string)
        .or_else(|| {
            req.uri().query().and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=").map(str::to_string)))
        });
    let Some(claims) = token.and_then(|t| app.tokens.verify(&t)) else {
        return ApiError::unauthorized("missing, invalid or expired access token").into_response();
    };
    if let Some(ban) = app.hub.bans.of(&claims.sub) {
        return ApiError::sanctioned(&ban).into_response();
    }
    if !fastwebsockets::upgrade::is_upgrade_request(&req) {
        return ApiError::bad_request("expected a WebSocket upgrade").into_response();
    }
    let peer = req.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
    let slot = match peer.map(|ip| app.conn_limit.acquire(ip)) {
        Some(None) => {
            let mut r =
                ApiError::new(ErrorCode::RateLimited, "too many open connections from this address").into_response();
            *r.status_mut() = axum::http::StatusCode::TOO_MANY_REQUESTS;
            return r;
        }
        Some(Some(slot)) => Some(slot),
        None => None,
    };
    let (response, upgrade) = match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok(pair) => pair,
        Err(e) => return ApiError::bad_request(format!("bad upgrade request: {e}")).into_response(),
    };
    let expires_at_ms = claims.exp.saturating_mul(1000);
    let tracker = app.sockets.clone();
    tracker.spawn(async move {
        // Held for the life of the connection.
        let _slot = slot;
        // Matched before the connection is awaited: a `match` around the await would keep the
        // upgrade's result (144 bytes) in every connection's state.
        let ws = match upgrade.await {
            Ok(ws) => ws,
            Err(e) => return tracing::debug!(error = %e, "upgrade failed"),
        };
        serve(app, ws.into_inner(), claims.sub, expires_at_ms).await
    });
    response.map(Body::new)
}

/// The connection's future, inside its tracing span (entered only while it is polled).
///
/// A plain function, not an `async fn`: awaiting the instrumented future inside another future's
/// state made the compiler lay the connection's state out twice, 3.2 KB instead of 1.5 KB for
/// every connection's whole life.
fn serve<S>(app: Arc<App>, stream: S, user_id: String, expires_at_ms: i64) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let addr = SessionAddr { node_id: app.hub.node_id.clone(), session_id: new_id().into(), user_id: user_id.into() };
    // Debug level: a span that is enabled lives as long as its connection, about 1 KB each
    // (docs/benchmarks.md, 2026-12-02); the few events of a session at higher levels name it.
    let span = tracing::debug_span!("session", id = %addr.session_id, user = %addr.user_id);
    let connection = span.in_scope(|| connection(app, stream, addr, expires_at_ms));
    tracing::Instrument::instrument(connection, span)
}

/// Pongs a connection may owe at once (Autobahn's case 2.10 sends 10 pings in a row).
const PONG_QUEUE: usize = 32;

/// Pongs owed to the client, from the reader to the writer, at most [`PONG_QUEUE`]. Overflow
/// policy: further pings of a burst get no pong (a flood costs the flooder, nobody else).
struct Pongs(FrameQueue);

impl Pongs {
    fn push(&self, payload: Bytes) {
        let _ = self.0.try_push(payload);
    }
}

/// Sets a connection up (outbound queue, `hello`, writer task) and returns the reader's future.
///
/// The set-up runs here, before the future exists, and the future is an `async` block rather
/// than an `async fn`: an `async fn` keeps a copy of its arguments in its state beside the
/// values moved out of them, and the set-up's temporaries would be laid out there too, all for
/// the connection's whole life.
fn connection<S>(app: Arc<App>, stream: S, addr: SessionAddr, expires_at_ms: i64) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let hub = &app.hub;
    let config = &app.config;
    let hello = ServerEvent::Hello {
        user_id: &addr.user_id,
        session_id: &addr.session_id,
        node_id: &hub.node_id,
        heartbeat_ms: config.heartbeat.as_millis() as u64,
        limits: Limits { max_body: config.max_body, max_frame: config.max_frame, sync_batch: hub.config.sync_batch },
    };
    let hello = encode_event(&hello);
    let (handle, outbound) = SessionHandle::new(addr, config.outbound_queue, hub.metrics.clone());
    hub.metrics.ws_connections.inc();
    // Queued before the session is registered, so it is always the first frame.
    handle.push(hello);

    // Reader and writer each hold a buffer only while they move bytes: the reader while a frame
    // arrives, the writer while a batch is written. An idle connection holds neither.
    let (read, write) = tokio::io::split(stream);
    let last_heard = Arc::new(AtomicI64::new(monotonic_ms()));
    let pongs = Arc::new(Pongs(FrameQueue::new(PONG_QUEUE)));
    let writer = tokio::spawn(write_loop(
        write,
        outbound,
        handle.clone(),
        pongs.clone(),
        config.heartbeat,
        last_heard.clone(),
        expires_at_ms,
    ));

    async move {
        let hub = &app.hub;
        // Boxed, as the wake and hibernation steps are: awaited inline, a start's state (900
        // bytes) would be laid out in every connection's future for the connection's whole life.
        match Box::pin(hub.open_session(handle.clone())).await {
            Ok(actor) => {
                let mut slot = ActorSlot::awake(hub.clone(), handle.clone(), actor, app.config.session_hibernate);
                read_loop(read, &app, &handle, &mut slot, &pongs, &last_heard).await;
            }
            Err(e) => {
                tracing::error!(error = %e, session = %handle.addr.session_id, "could not start a session actor");
                handle.close_with(close::INTERNAL_ERROR);
            }
        }
        hub.close_session(&handle);
        handle.close_with(close::NORMAL);
        let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
        hub.metrics.ws_connections.dec();
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut read: R,
    app: &App,
    handle: &Arc<SessionHandle>,
    slot: &mut ActorSlot,
    pongs: &Pongs,
    last_heard: &AtomicI64,
) {
    let max = app.config.max_frame;
    let mut reader = FrameReader::new(max);
    let inflight_limit = app.hub.config.session_inflight;
    let inflight = Arc::new(Semaphore::new(inflight_limit));
    let mut frames = Frames::new(max);
    let mut input = SessionInput::new(app.hub.clone(), handle.clone());
    let closing = handle_closing(handle);
    tokio::pin!(closing);
    loop {
        let frame = tokio::select! {
            r = reader.next(&mut read) => r,
            _ = &mut closing => return,
            _ = slot.hibernation_due() => {
                slot.hibernate(&inflight, inflight_limit).await;
                continue;
            }
        };
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                let code = match e {
                    ReadError::TooBig => Some(close::TOO_BIG),
                    ReadError::Protocol => Some(close::PROTOCOL_ERROR),
                    ReadError::Closed => None,
                };
                if let Some(code) = code {
                    tracing::debug!(error = ?e, code, "closing after a bad frame");
                    handle.close_with(code);
                }
                return;
            }
        };
        last_heard.store(monotonic_ms(), Ordering::Relaxed);
        let bytes = match frames.push(frame.op, frame.fin, frame.masked, frame.payload) {
            Step::Wait => continue,
            Step::Pong(payload) => {
                pongs.push(payload);
                continue;
            }
            Step::Close(code) => {
                handle.close_with(code);
                return;
            }
            Step::Text(bytes) => bytes,
            Step::Binary => {
                app.metrics.ws_errors.with_label_values(&["bad_request"]).inc();
                let event = ServerEvent::Error {
                    code: ErrorCode::BadRequest,
                    message: "binary frames are not supported; send JSON text frames",
                    client_id: None,
                    retry_after_ms: None,
                };
                refuse(handle, &event).await;
                continue;
            }
        };
        match decode_client_frame(&bytes) {
            Ok(frame) => {
                let Ok(permit) = inflight.clone().acquire_owned().await else {
                    return;
                };
                // Boxed: inline, the handling's state (its awaits on the router and the
                // outbound queue) would sit in every connection's future for its whole life.
                let Some((frame, permit)) = Box::pin(input.frame(frame, permit)).await else {
                    continue;
                };
                let actor = match slot.actor().await {
                    Ok(actor) => actor,
                    Err(e) => {
                        tracing::error!(error = %e, session = %handle.addr.session_id, "could not wake a session actor");
                        handle.close_with(close::INTERNAL_ERROR);
                        return;
                    }
                };
                let mailbox = rookery_actors::session::MailboxSlot::new(&app.metrics.session_mailbox_frames);
                if actor.cast(SessionMsg::Frame(frame, permit, mailbox)).is_err() {
                    return;
                }
            }
            Err(e) => {
                app.metrics.ws_errors.with_label_values(&["bad_request"]).inc();
                let event = ServerEvent::Error {
                    code: ErrorCode::BadRequest,
                    message: &e.message(),
                    client_id: e.client_id(),
                    retry_after_ms: None,
                };
                refuse(handle, &event).await;
            }
        }
    }
}

/// Queues an error answer, waiting up to 10 s for room. Boxed: it is rare (bad frames only),
/// and inline its state would sit in every connection's task for the connection's whole life.
async fn refuse(handle: &SessionHandle, event: &ServerEvent<'_>) {
    Box::pin(handle.push_wait(encode_event(event), Duration::from_secs(10))).await;
}

/// Resolves a moment after the session was asked to close, to leave time for the client's
/// close reply.
async fn handle_closing(handle: &SessionHandle) {
    handle.closing().await;
    tokio::time::sleep(CLOSE_GRACE).await;
}

/// Appends one unmasked server frame (RFC 6455 section 5.2) to `out`.
fn frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= 0xFFFF => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

const OP_TEXT: u8 = 0x1;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

#[allow(clippy::too_many_arguments)]
async fn write_loop<W: AsyncWrite + Unpin>(
    mut write: W,
    mut outbound: OutboundReceiver,
    handle: Arc<SessionHandle>,
    pongs: Arc<Pongs>,
    heartbeat: Duration,
    last_heard: Arc<AtomicI64>,
    expires_at_ms: i64,
) {
    // The token's remaining lifetime is read off the wall clock once, at connect, and then
    // counted down on the monotonic clock: a later jump of the wall clock neither cuts the
    // session short nor stretches it.
    let until_expiry = Duration::from_millis(expires_at_ms.saturating_sub(now_ms()).max(0) as u64);
    let mut clock = Clock::new(tokio::time::Instant::now(), heartbeat, until_expiry);
    // One timer for the heartbeat and the token's expiry, whichever is due first: every
    // connection holds it for its whole life.
    let timer = tokio::time::sleep_until(clock.next());
    tokio::pin!(timer);
    // The waker the timer holds since it was last set, if any: while it is this task's, the
    // timer wakes the task when it fires and need not be polled before it has (`is_elapsed`).
    let mut timer_waker: Option<std::task::Waker> = None;
    let code = loop {
        // One future polls everything the writer waits on, in this order; nothing is created
        // or dropped per turn (the queues keep the task's waker, the timer keeps it too).
        // Owed pongs and queued frames that are both ready go out in the same write. A close
        // request sets the code, then wakes the writer through its queue's waker
        // (`SessionHandle::close_with`): the code is read after that waker is left, so the
        // request is seen at this turn or wakes the next.
        let turn = std::future::poll_fn(|cx| {
            let owed = pongs.0.poll_take(cx, PONG_QUEUE);
            let batch = outbound.poll_take(cx, MAX_COALESCE);
            // Frames taken just now are dropped at a close, as those still queued are: after a
            // close request nothing but the close frame is written.
            let code = handle.close_code();
            if code != 0 {
                return Poll::Ready(Turn::Closed(code));
            }
            if owed.is_ready() || batch.is_ready() {
                return Poll::Ready(Turn::Frames(ready_or_empty(owed), ready_or_empty(batch)));
            }
            let armed = timer_waker.as_ref().is_some_and(|w| w.will_wake(cx.waker()));
            if !armed || timer.is_elapsed() {
                // Polled outside the task's budget: a poll refused for want of budget would
                // leave no waker with the timer, which would then not be polled until it fired.
                let unconstrained = std::pin::pin!(tokio::task::coop::unconstrained(timer.as_mut()));
                if unconstrained.poll(cx).is_ready() {
                    return Poll::Ready(Turn::Timer);
                }
                timer_waker = Some(cx.waker().clone());
            }
            Poll::Pending
        })
        .await;
        let mut out = Vec::new();
        match turn {
            Turn::Frames(owed, batch) => {
                // Everything already queued goes out in one write.
                out.reserve(owed.iter().chain(&batch).map(|f| f.len() + 10).sum());
                for payload in &owed {
                    frame(&mut out, OP_PONG, payload);
                }
                for f in &batch {
                    frame(&mut out, OP_TEXT, f);
                }
            }
            Turn::Timer => {
                match clock.due(tokio::time::Instant::now()) {
                    Due::Expiry => {
                        handle.close_with(close::AUTH_FAILED);
                    }
                    Due::Ping => {
                        let silent_ms = monotonic_ms() - last_heard.load(Ordering::Relaxed);
                        if silent_ms > 2 * heartbeat.as_millis() as i64 {
                            handle.close_with(close::HEARTBEAT_TIMEOUT);
                        } else {
                            frame(&mut out, OP_PING, b"");
                        }
                    }
                }
                timer.as_mut().reset(clock.next());
                timer_waker = None;
            }
            Turn::Closed(code) => break code,
        }
        if !out.is_empty() && write.write_all(&out).await.is_err() {
            handle.close_with(close::NORMAL);
            return;
        }
    };
    let mut out = Vec::new();
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(close_reason(code).as_bytes());
    frame(&mut out, OP_CLOSE, &payload);
    let _ = write.write_all(&out).await;
    let _ = write.flush().await;
}

/// What woke the writer.
enum Turn {
    /// Pongs owed and frames queued (either may be empty).
    Frames(VecDeque<Bytes>, VecDeque<Bytes>),
    /// The heartbeat or the token's expiry is due.
    Timer,
    /// The session was asked to close, with this code.
    Closed(u16),
}

fn ready_or_empty(p: Poll<VecDeque<Bytes>>) -> VecDeque<Bytes> {
    match p {
        Poll::Ready(frames) => frames,
        Poll::Pending => VecDeque::new(),
    }
}

/// When a connection's writer must next act: ping (every heartbeat) or close for token expiry.
struct Clock {
    heartbeat: Duration,
    next_ping: tokio::time::Instant,
    /// `None` once expiry has been acted on.
    expires: Option<tokio::time::Instant>,
}

/// What a [`Clock`] says is due.
#[derive(Debug, PartialEq, Eq)]
enum Due {
    Ping,
    Expiry,
}

impl Clock {
    fn new(now: tokio::time::Instant, heartbeat: Duration, until_expiry: Duration) -> Self {
        Clock { heartbeat, next_ping: now + heartbeat, expires: Some(now + until_expiry) }
    }

    /// The next moment something is due.
    fn next(&self) -> tokio::time::Instant {
        self.expires.map_or(self.next_ping, |e| e.min(self.next_ping))
    }

    /// What is due at `now` (called when the timer set to [`next`](Self::next) fires); expiry
    /// first, once.
    fn due(&mut self, now: tokio::time::Instant) -> Due {
        if self.expires.is_some_and(|e| e <= now) {
            self.expires = None;
            return Due::Expiry;
        }
        self.next_ping = now + self.heartbeat;
        Due::Ping
    }
}

/// Milliseconds on the monotonic clock since its first reading in this process. Heartbeat
/// silence is measured on it, never on the wall clock: a wall-clock jump (an NTP step, a VM
/// resumed, `date -s`) forward would otherwise close every live connection, and one backward
/// would keep dead ones open until the clock caught up.
fn monotonic_ms() -> i64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as i64
}

fn close_reason(code: u16) -> &'static str {
    match code {
        close::GOING_AWAY => "node shutting down",
        close::TOO_BIG => "message too big",
        close::INVALID_PAYLOAD => "invalid UTF-8",
        close::PROTOCOL_ERROR => "protocol error",
        close::AUTH_FAILED => "token expired",
        close::BANNED => "banned",
        close::POLICY => "policy violation",
        close::SLOW_CONSUMER => "slow consumer",
        close::HEARTBEAT_TIMEOUT => "heartbeat timeout",
        close::INTERNAL_ERROR => "internal error",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_pings_every_heartbeat_and_expires_once() {
        let start = tokio::time::Instant::now();
        let mut clock = Clock::new(start, Duration::from_secs(10), Duration::from_secs(25));
        assert_eq!(clock.next(), start + Duration::from_secs(10));
        assert_eq!(clock.due(start + Duration::from_secs(10)), Due::Ping);
        assert_eq!(clock.next(), start + Duration::from_secs(20));
        assert_eq!(clock.due(start + Duration::from_secs(20)), Due::Ping);
        assert_eq!(clock.next(), start + Duration::from_secs(25), "expiry comes before the third ping");
        assert_eq!(clock.due(start + Duration::from_secs(25)), Due::Expiry);
        assert_eq!(clock.next(), start + Duration::from_secs(30), "then pings again");
        assert_eq!(clock.due(start + Duration::from_secs(30)), Due::Ping, "expiry is due once");
        assert_eq!(clock.next(), start + Duration::from_secs(40));
    }

    /// The writer's first poll of its timer may come when the task's coop budget has just run
    /// out; the timer must still get the task's waker, or the heartbeat never comes.
    #[tokio::test]
    async fn the_heartbeat_comes_though_the_budget_ran_out_at_the_first_poll() {
        use tokio::io::AsyncReadExt;
        let addr = SessionAddr { node_id: "n".into(), session_id: "s".into(), user_id: "u".into() };
        let (handle, outbound) = SessionHandle::new(addr, 8, Arc::new(rookery_actors::Metrics::new()));
        let (server_side, mut client_side) = tokio::io::duplex(1024);
        let pongs = Arc::new(Pongs(FrameQueue::new(PONG_QUEUE)));
        let last_heard = Arc::new(AtomicI64::new(monotonic_ms()));
        let writer = write_loop(
            server_side,
            outbound,
            handle.clone(),
            pongs,
            Duration::from_millis(50),
            last_heard,
            now_ms() + 60_000,
        );
        let mut writer = Box::pin(writer);
        // Use up the budget with operations that are ready at once, then poll the writer in
        // the same turn of this task: its first poll of the timer finds no budget left.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        std::future::poll_fn(|cx| {
            while tokio::task::coop::has_budget_remaining() {
                tx.send(()).unwrap();
                assert!(rx.poll_recv(cx).is_ready());
            }
            assert!(writer.as_mut().poll(cx).is_pending());
            Poll::Ready(())
        })
        .await;
        // Still polled by this task, with the same waker.
        let mut ping = [0u8; 2];
        let read = tokio::time::timeout(Duration::from_secs(2), client_side.read_exact(&mut ping));
        tokio::select! {
            _ = writer.as_mut() => panic!("the writer ended"),
            read = read => read.expect("a ping within 2 s").map(drop).unwrap(),
        }
        assert_eq!(ping, [0x89, 0x00], "an empty ping");
        handle.close_with(close::NORMAL);
        drop(client_side);
        writer.await;
    }
}
