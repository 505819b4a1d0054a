//! The WebSocket gateway: `GET /ws`, upgraded with fastwebsockets.
//!
//! Each connection gets a reader (this task) and a writer task. The reader reassembles
//! fragmented messages (bounded by `max-frame`), decodes them and casts them to the session
//! actor, holding one of the session's in-flight permits per frame. The writer drains the
//! session's bounded outbound queue, coalescing every frame already queued into one flush,
//! sends heartbeat pings, and writes the close frame when anything asks the session to close.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use fastwebsockets::{Frame, OpCode, Payload, WebSocketError};
use rookery_actors::{new_id, now_ms, OutboundReceiver, SessionAddr, SessionHandle, SessionMsg};
use rookery_protocol::{close, decode_client_frame, encode_event, ErrorCode, Limits, ServerEvent};
use tokio::io::{AsyncRead, AsyncWrite, BufWriter};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::api::error::ApiError;
use crate::server::App;

/// How long the reader waits for the client's close reply after the node sent its close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Most frames written before one flush.
const MAX_COALESCE: usize = 128;

/// `GET /ws`: authenticates (header or `?token=`), then upgrades.
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
        return ApiError::forbidden(format!("banned: {}", ban.reason)).into_response();
    }
    if !fastwebsockets::upgrade::is_upgrade_request(&req) {
        return ApiError::bad_request("expected a WebSocket upgrade").into_response();
    }
    let (response, upgrade) = match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok(pair) => pair,
        Err(e) => return ApiError::bad_request(format!("bad upgrade request: {e}")).into_response(),
    };
    let expires_at_ms = claims.exp.saturating_mul(1000);
    let tracker = app.sockets.clone();
    tracker.spawn(async move {
        match upgrade.await {
            Ok(ws) => serve(app, ws, claims.sub, expires_at_ms).await,
            Err(e) => tracing::debug!(error = %e, "upgrade failed"),
        }
    });
    response.map(Body::new)
}

async fn serve<S>(app: Arc<App>, ws: fastwebsockets::WebSocket<S>, user_id: String, expires_at_ms: i64)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let addr = SessionAddr { node_id: app.hub.node_id.clone(), session_id: new_id().into(), user_id: user_id.into() };
    let span = tracing::info_span!("session", id = %addr.session_id, user = %addr.user_id);
    // The span covers the connection's task (entered only while it is polled).
    tracing::Instrument::instrument(connection(app, ws, addr, expires_at_ms), span).await
}

async fn connection<S>(app: Arc<App>, ws: fastwebsockets::WebSocket<S>, addr: SessionAddr, expires_at_ms: i64)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let hub = app.hub.clone();
    let config = &app.config;
    let (handle, outbound) = SessionHandle::new(addr.clone(), config.outbound_queue, hub.metrics.clone());
    hub.metrics.ws_connections.inc();

    let hello = ServerEvent::Hello {
        user_id: &addr.user_id,
        session_id: &addr.session_id,
        node_id: &hub.node_id,
        heartbeat_ms: config.heartbeat.as_millis() as u64,
        limits: Limits { max_body: config.max_body, max_frame: config.max_frame, sync_batch: hub.config.sync_batch },
    };
    // Queued before the session is registered, so it is always the first frame.
    handle.push(encode_event(&hello));

    let (read, write) = ws.split(|s| {
        let (r, w) = tokio::io::split(s);
        (r, BufWriter::new(w))
    });
    let last_heard = Arc::new(AtomicI64::new(now_ms()));
    let (pongs_tx, pongs_rx) = mpsc::channel::<Bytes>(8);
    let writer = tokio::spawn(write_loop(
        write,
        outbound,
        handle.clone(),
        pongs_rx,
        config.heartbeat,
        last_heard.clone(),
        expires_at_ms,
    ));

    match hub.open_session(handle.clone()).await {
        Ok(actor) => {
            read_loop(read, &app, &handle, &actor, pongs_tx, &last_heard).await;
            actor.stop(None);
        }
        Err(e) => {
            tracing::error!(error = %e, "could not start a session actor");
            handle.close_with(close::INTERNAL_ERROR);
        }
    }
    handle.close_with(close::NORMAL);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    hub.metrics.ws_connections.dec();
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut read: fastwebsockets::WebSocketRead<R>,
    app: &App,
    handle: &SessionHandle,
    actor: &rookery_actors::ActorRef<SessionMsg>,
    pongs: mpsc::Sender<Bytes>,
    last_heard: &AtomicI64,
) {
    let max = app.config.max_frame;
    read.set_max_message_size(max + 1);
    read.set_auto_pong(true);
    read.set_auto_close(true);
    let inflight = Arc::new(Semaphore::new(app.hub.config.session_inflight));
    // A fragmented message being reassembled: its opcode and bytes so far.
    let mut partial: Option<(OpCode, BytesMut)> = None;
    let closing = handle_closing(handle);
    tokio::pin!(closing);
    loop {
        let mut obligated = |f: Frame<'_>| {
            if f.opcode == OpCode::Pong {
                // Overflow policy: a client that floods pings loses pongs, nothing else.
                let _ = pongs.try_send(Bytes::copy_from_slice(&f.payload));
            }
            async { Ok::<(), std::convert::Infallible>(()) }
        };
        let frame = tokio::select! {
            r = read.read_frame(&mut obligated) => r,
            _ = &mut closing => return,
        };
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                let code = match e {
                    WebSocketError::FrameTooLarge => Some(close::TOO_BIG),
                    WebSocketError::InvalidUTF8 => Some(close::INVALID_PAYLOAD),
                    WebSocketError::UnexpectedEOF | WebSocketError::IoError(_) | WebSocketError::ConnectionClosed => {
                        None
                    }
                    _ => Some(close::PROTOCOL_ERROR),
                };
                if let Some(code) = code {
                    tracing::debug!(error = %e, code, "closing after a bad frame");
                    handle.close_with(code);
                }
                return;
            }
        };
        last_heard.store(now_ms(), Ordering::Relaxed);
        let message = match (frame.opcode, frame.fin) {
            (OpCode::Close, _) => {
                let code = if frame.payload.len() >= 2 {
                    u16::from_be_bytes([frame.payload[0], frame.payload[1]])
                } else {
                    close::NORMAL
                };
                handle.close_with(if code == close::GOING_AWAY { close::NORMAL } else { code });
                return;
            }
            (OpCode::Ping | OpCode::Pong, _) => continue,
            (OpCode::Text | OpCode::Binary, true) => {
                if partial.is_some() {
                    handle.close_with(close::PROTOCOL_ERROR);
                    return;
                }
                (frame.opcode, Bytes::copy_from_slice(&frame.payload))
            }
            (OpCode::Text | OpCode::Binary, false) => {
                if partial.is_some() {
                    handle.close_with(close::PROTOCOL_ERROR);
                    return;
                }
                partial = Some((frame.opcode, BytesMut::from(&frame.payload[..])));
                continue;
            }
            (OpCode::Continuation, fin) => {
                let Some((_, buf)) = partial.as_mut() else {
                    handle.close_with(close::PROTOCOL_ERROR);
                    return;
                };
                if buf.len() + frame.payload.len() > max {
                    handle.close_with(close::TOO_BIG);
                    return;
                }
                buf.extend_from_slice(&frame.payload);
                if !fin {
                    continue;
                }
                let (op, buf) = partial.take().expect("checked above");
                (op, buf.freeze())
            }
        };
        match message {
            (OpCode::Text, bytes) => {
                if std::str::from_utf8(&bytes).is_err() {
                    handle.close_with(close::INVALID_PAYLOAD);
                    return;
                }
                match decode_client_frame(&bytes) {
                    Ok(frame) => {
                        let Ok(permit) = inflight.clone().acquire_owned().await else {
                            return;
                        };
                        let slot = rookery_actors::session::MailboxSlot::new(&app.metrics.session_mailbox_frames);
                        if actor.cast(SessionMsg::Frame(frame, permit, slot)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let event = ServerEvent::Error {
                            code: ErrorCode::BadRequest,
                            message: &e.message(),
                            client_id: e.client_id(),
                            retry_after_ms: None,
                        };
                        handle.push_wait(encode_event(&event), Duration::from_secs(10)).await;
                    }
                }
            }
            _ => {
                let event = ServerEvent::Error {
                    code: ErrorCode::BadRequest,
                    message: "binary frames are not supported; send JSON text frames",
                    client_id: None,
                    retry_after_ms: None,
                };
                handle.push_wait(encode_event(&event), Duration::from_secs(10)).await;
            }
        }
    }
}

/// Resolves a moment after the session was asked to close, to leave time for the client's
/// close reply.
async fn handle_closing(handle: &SessionHandle) {
    handle.closing().await;
    tokio::time::sleep(CLOSE_GRACE).await;
}

#[allow(clippy::too_many_arguments)]
async fn write_loop<W: AsyncWrite + Unpin>(
    mut write: fastwebsockets::WebSocketWrite<W>,
    mut outbound: OutboundReceiver,
    handle: Arc<SessionHandle>,
    mut pongs: mpsc::Receiver<Bytes>,
    heartbeat: Duration,
    last_heard: Arc<AtomicI64>,
    expires_at_ms: i64,
) {
    write.set_writev(false);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    let until_expiry = Duration::from_millis(expires_at_ms.saturating_sub(now_ms()).max(0) as u64);
    let expiry = tokio::time::sleep(until_expiry);
    tokio::pin!(expiry);
    let close_token: CancellationToken = outbound.close.clone();
    // Created once: a fresh `cancelled()` future per loop turn would re-register a waiter each time.
    let closed = close_token.cancelled();
    tokio::pin!(closed);
    loop {
        let result: Result<(), WebSocketError> = tokio::select! {
            biased;
            _ = &mut closed => {
                let code = handle.close_code();
                let reason = close_reason(code);
                let _ = write.write_frame(Frame::close(code, reason.as_bytes())).await;
                let _ = write.flush().await;
                return;
            }
            Some(payload) = pongs.recv() => {
                match write.write_frame(Frame::pong(Payload::Borrowed(&payload))).await {
                    Ok(()) => write.flush().await,
                    Err(e) => Err(e),
                }
            }
            next = outbound.frames.recv() => {
                let Some(first) = next else { return };
                write_coalesced(&mut write, &mut outbound, first).await
            }
            _ = ticker.tick() => {
                let silent_ms = now_ms() - last_heard.load(Ordering::Relaxed);
                if silent_ms > 2 * heartbeat.as_millis() as i64 {
                    handle.close_with(close::HEARTBEAT_TIMEOUT);
                    Ok(())
                } else {
                    match write.write_frame(Frame::new(true, OpCode::Ping, None, Payload::Borrowed(b""))).await {
                        Ok(()) => write.flush().await,
                        Err(e) => Err(e),
                    }
                }
            }
            _ = &mut expiry => {
                handle.close_with(close::AUTH_FAILED);
                Ok(())
            }
        };
        if result.is_err() {
            handle.close_with(close::NORMAL);
            return;
        }
    }
}

async fn write_coalesced<W: AsyncWrite + Unpin>(
    write: &mut fastwebsockets::WebSocketWrite<W>,
    outbound: &mut OutboundReceiver,
    first: Bytes,
) -> Result<(), WebSocketError> {
    write.write_frame(Frame::text(Payload::Borrowed(&first))).await?;
    for _ in 1..MAX_COALESCE {
        match outbound.frames.try_recv() {
            Ok(next) => write.write_frame(Frame::text(Payload::Borrowed(&next))).await?,
            Err(_) => break,
        }
    }
    write.flush().await
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
