//! WebSocket connections from chosen source addresses (127.0.0.x), with fastwebsockets.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};

use anyhow::{anyhow, Context};
use bytes::Bytes;
use fastwebsockets::{FragmentCollectorRead, WebSocketRead, WebSocketWrite};
use http_body_util::Empty;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::TcpSocket;

pub type Io = TokioIo<Upgraded>;
pub type Reader = FragmentCollectorRead<ReadHalf<Io>>;
pub type Writer = WebSocketWrite<WriteHalf<Io>>;

struct SpawnExecutor;

impl<F> hyper::rt::Executor<F> for SpawnExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(fut);
    }
}

/// Parses `ws://host:port` or `http://host:port` into the socket address.
pub fn socket_addr(base: &str) -> anyhow::Result<SocketAddr> {
    let rest = base
        .strip_prefix("ws://")
        .or_else(|| base.strip_prefix("http://"))
        .ok_or_else(|| anyhow!("URL must start with ws:// or http:// ({base})"))?;
    let hostport = rest.split('/').next().unwrap_or(rest);
    let hostport = hostport.replace("localhost", "127.0.0.1");
    hostport.parse().with_context(|| format!("address {hostport} (use an IP address)"))
}

/// Opens a WebSocket to `addr` at `path_and_query`, from `source` (port chosen by the kernel).
pub async fn connect(
    addr: SocketAddr,
    source: Option<IpAddr>,
    path_and_query: &str,
    bearer: Option<&str>,
) -> anyhow::Result<(Reader, Writer)> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let mut req = hyper::Request::builder()
        .method("GET")
        .uri(path_and_query)
        .header("host", addr.to_string())
        .header("upgrade", "websocket")
        .header("connection", "upgrade")
        .header("sec-websocket-key", fastwebsockets::handshake::generate_key())
        .header("sec-websocket-version", "13");
    if let Some(t) = bearer {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req.body(Empty::<Bytes>::new())?;
    let (ws, _) =
        fastwebsockets::handshake::client(&SpawnExecutor, req, stream).await.map_err(|e| anyhow!("upgrade: {e}"))?;
    let (read, write): (WebSocketRead<ReadHalf<Io>>, Writer) = ws.split(tokio::io::split);
    Ok((FragmentCollectorRead::new(read), write))
}
