//! `rookery-raw-peer`: the raw-transport ceiling of Rookery's benchmark suite.
//!
//! A WebSocket room fan-out with nothing else: no auth, no JSON, no storage, no actors.
//! `GET /ws?user=<u>&rooms=<r1,r2,...>` upgrades (fastwebsockets over hyper 1, http1) and joins
//! the listed rooms. Every text frame `<room>\n<anything>` from a member of `<room>` is
//! forwarded unchanged, as a text frame, to every other connection in that room. Frames for a
//! room the sender did not join, frames without a `\n`, and binary frames are dropped.
//!
//! Per connection: a reader (the connection's task) and a writer task. The writer owns a
//! bounded outbound queue of `Bytes`; it awaits one frame, drains whatever else is queued,
//! writes all of it into a `BufWriter` and flushes once (batched writes).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{
    upgrade, FragmentCollectorRead, Frame, OpCode, Payload, WebSocket, WebSocketError, WebSocketRead, WebSocketWrite,
};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use parking_lot::RwLock;
use tokio::io::{AsyncRead, AsyncWrite, BufWriter};
use tokio::sync::mpsc;

/// Capacity of each connection's outbound queue, in frames.
const QUEUE: usize = 4096;
/// Largest accepted frame payload.
const MAX_MESSAGE: usize = 64 * 1024;
/// Capacity of the write buffer that batches frames between flushes.
const WRITE_BUFFER: usize = 64 * 1024;

type Tx = mpsc::Sender<Bytes>;

/// room -> its members, as (connection id, outbound queue).
type Rooms = RwLock<HashMap<Box<[u8]>, Vec<(u64, Tx)>>>;

static ROOMS: LazyLock<Rooms> = LazyLock::new(Default::default);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Control frames the reader owes the peer (auto-pong, close reply), written by the writer.
enum Ctrl {
    Pong(Bytes),
    Close(Bytes),
}

fn main() {
    let addr = match parse_args() {
        Ok(addr) => addr,
        Err(msg) => {
            eprintln!("{msg}\nusage: rookery-raw-peer [--listen 127.0.0.1:9001]");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    if let Err(e) = rt.block_on(run(addr)) {
        eprintln!("rookery-raw-peer: {e}");
        std::process::exit(1);
    }
}

fn parse_args() -> Result<SocketAddr, String> {
    let mut listen = "127.0.0.1:9001".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().ok_or("--listen needs an address")?,
            s if s.starts_with("--listen=") => listen = s["--listen=".len()..].to_string(),
            "-h" | "--help" => return Err("rookery-raw-peer: raw WebSocket room fan-out".into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    listen.parse().map_err(|e| format!("bad --listen {listen:?}: {e}"))
}

async fn run(addr: SocketAddr) -> std::io::Result<()> {
    // The same accept backlog as Rookery's default (`--listen-backlog 4096`), so a connect storm
    // measures the servers, not tokio's default backlog of 128.
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(4096)?;
    println!("listening on {}", listener.local_addr()?);

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning.
                    eprintln!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Small frames must leave at once, not wait for Nagle's algorithm (as Rookery does).
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service_fn(route)).with_upgrades();
            let _ = conn.await;
        });
    }
}

fn status(code: StatusCode) -> Response<Empty<Bytes>> {
    let mut response = Response::new(Empty::new());
    *response.status_mut() = code;
    response
}

async fn route(mut req: Request<Incoming>) -> Result<Response<Empty<Bytes>>, Infallible> {
    if req.uri().path() != "/ws" {
        return Ok(status(StatusCode::NOT_FOUND));
    }
    if req.method() != Method::GET || !upgrade::is_upgrade_request(&req) {
        return Ok(status(StatusCode::BAD_REQUEST));
    }
    let rooms = parse_rooms(req.uri().query().unwrap_or(""));
    let Ok((response, fut)) = upgrade::upgrade(&mut req) else {
        return Ok(status(StatusCode::BAD_REQUEST));
    };
    tokio::spawn(async move {
        if let Ok(ws) = fut.await {
            serve(ws, rooms).await;
        }
    });
    Ok(response)
}

/// The `rooms` parameter: comma-separated, each name percent-decoded, duplicates removed.
/// `user` (and anything else) is accepted and ignored.
fn parse_rooms(query: &str) -> Vec<Box<[u8]>> {
    let mut rooms: Vec<Box<[u8]>> = Vec::new();
    for (key, value) in query.split('&').filter_map(|kv| kv.split_once('=')) {
        if key != "rooms" {
            continue;
        }
        for name in value.split(',').filter(|n| !n.is_empty()) {
            let name = percent_decode(name);
            if !rooms.contains(&name) {
                rooms.push(name);
            }
        }
    }
    rooms
}

fn percent_decode(s: &str) -> Box<[u8]> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(hi), Some(lo)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out.into_boxed_slice()
}

async fn serve<S>(ws: WebSocket<S>, rooms: Vec<Box<[u8]>>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let (read, mut write) = ws.split(|s| {
        let (r, w) = tokio::io::split(s);
        (r, BufWriter::with_capacity(WRITE_BUFFER, w))
    });
    // Frames are copied into the BufWriter; vectored writes would bypass the batching.
    write.set_writev(false);
    let (tx, data_rx) = mpsc::channel::<Bytes>(QUEUE);
    let (ctrl_tx, ctrl_rx) = mpsc::channel::<Ctrl>(8);
    let mut writer = tokio::spawn(write_loop(write, data_rx, ctrl_rx));

    {
        let mut map = ROOMS.write();
        for room in &rooms {
            map.entry(room.clone()).or_default().push((id, tx.clone()));
        }
    }
    read_loop(read, id, &rooms, ctrl_tx).await;
    {
        let mut map = ROOMS.write();
        for room in &rooms {
            if let Some(members) = map.get_mut(room) {
                members.retain(|(member, _)| *member != id);
                if members.is_empty() {
                    map.remove(room);
                }
            }
        }
    }
    drop(tx);
    // The writer ends once the reader's control queue is closed (after any close reply);
    // don't let a peer that stopped reading pin this task forever.
    if tokio::time::timeout(Duration::from_secs(5), &mut writer).await.is_err() {
        writer.abort();
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut read: WebSocketRead<R>,
    id: u64,
    rooms: &[Box<[u8]>],
    ctrl: mpsc::Sender<Ctrl>,
) {
    read.set_auto_pong(true);
    read.set_auto_close(true);
    // fastwebsockets rejects a frame whose payload is >= the limit: allow exactly 64 KiB.
    read.set_max_message_size(MAX_MESSAGE + 1);
    let mut read = FragmentCollectorRead::new(read);
    loop {
        let mut obligated = |f: Frame<'_>| {
            let payload = Bytes::copy_from_slice(&f.payload);
            let owed = if f.opcode == OpCode::Close { Ctrl::Close(payload) } else { Ctrl::Pong(payload) };
            // A client that floods pings loses pongs, nothing else.
            let _ = ctrl.try_send(owed);
            std::future::ready(Ok::<(), Infallible>(()))
        };
        let frame = match read.read_frame(&mut obligated).await {
            Ok(frame) => frame,
            Err(e) => {
                let code: u16 = match e {
                    WebSocketError::FrameTooLarge => 1009,
                    WebSocketError::InvalidUTF8 => 1007,
                    WebSocketError::UnexpectedEOF | WebSocketError::IoError(_) | WebSocketError::ConnectionClosed => {
                        return
                    }
                    _ => 1002,
                };
                let _ = ctrl.try_send(Ctrl::Close(Bytes::copy_from_slice(&code.to_be_bytes())));
                return;
            }
        };
        match frame.opcode {
            OpCode::Text => forward(id, rooms, &frame.payload),
            OpCode::Close => return,
            _ => {}
        }
    }
}

/// Forwards `<room>\n<anything>` unchanged to every other member of `<room>`.
fn forward(me: u64, joined: &[Box<[u8]>], payload: &[u8]) {
    let Some(nl) = payload.iter().position(|&b| b == b'\n') else {
        return;
    };
    let room = &payload[..nl];
    if !joined.iter().any(|r| **r == *room) {
        return;
    }
    // Copied once; every recipient gets a reference-counted clone.
    let frame = Bytes::copy_from_slice(payload);
    let map = ROOMS.read();
    if let Some(members) = map.get(room) {
        for (member, tx) in members {
            if *member != me {
                // Overflow policy: a recipient whose queue is full (it is not reading fast
                // enough) loses this frame; the sender and the other recipients are not slowed.
                let _ = tx.try_send(frame.clone());
            }
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut write: WebSocketWrite<W>,
    mut data: mpsc::Receiver<Bytes>,
    mut ctrl: mpsc::Receiver<Ctrl>,
) {
    loop {
        let result: Result<(), WebSocketError> = tokio::select! {
            biased;
            owed = ctrl.recv() => match owed {
                Some(Ctrl::Pong(payload)) => {
                    match write.write_frame(Frame::pong(Payload::Borrowed(&payload))).await {
                        Ok(()) => write.flush().await,
                        Err(e) => Err(e),
                    }
                }
                Some(Ctrl::Close(payload)) => {
                    let _ = write.write_frame(Frame::close_raw(Payload::Borrowed(&payload))).await;
                    let _ = write.flush().await;
                    return;
                }
                // The reader is gone.
                None => return,
            },
            next = data.recv() => {
                let Some(first) = next else { return };
                write_batch(&mut write, &mut data, first).await
            }
        };
        if result.is_err() {
            return;
        }
    }
}

/// Writes `first` and everything already queued behind it, then flushes once.
async fn write_batch<W: AsyncWrite + Unpin>(
    write: &mut WebSocketWrite<W>,
    data: &mut mpsc::Receiver<Bytes>,
    first: Bytes,
) -> Result<(), WebSocketError> {
    write.write_frame(Frame::text(Payload::Borrowed(&first))).await?;
    while let Ok(next) = data.try_recv() {
        write.write_frame(Frame::text(Payload::Borrowed(&next))).await?;
    }
    write.flush().await
}
