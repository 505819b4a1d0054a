//! WebSocket connections from chosen source addresses (127.0.0.x), with fastwebsockets.
//!
//! The opening handshake is written and read by hand on the TCP stream: one request write, one
//! response head parsed with httparse, no HTTP client machinery and no task per connection. A
//! connect storm is bounded by what the client spends per handshake as much as by the server,
//! and both share the machine.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use anyhow::{anyhow, bail, Context};
use fastwebsockets::{FragmentCollectorRead, Role, WebSocketWrite};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};

pub type Reader = FragmentCollectorRead<Prefixed<OwnedReadHalf>>;
pub type Writer = WebSocketWrite<OwnedWriteHalf>;

/// The most response head the handshake reads before it gives up.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;
/// The most response headers the handshake parses.
const MAX_RESPONSE_HEADERS: usize = 32;

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
        defer_port_choice(&socket);
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let mut stream = socket.connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    stream.write_all(upgrade_request(addr, path_and_query, bearer).as_bytes()).await?;
    let leftover = read_upgrade_response(&mut stream).await.map_err(|e| anyhow!("upgrade: {e}"))?;
    let (read, write) = stream.into_split();
    let (read, write) =
        fastwebsockets::after_handshake_split(Prefixed { prefix: leftover, at: 0, inner: read }, write, Role::Client);
    Ok((FragmentCollectorRead::new(read), write))
}

/// Asks the kernel to choose the source port at connect, unique per destination, rather than at
/// bind, unique per source address (`IP_BIND_ADDRESS_NO_PORT`). Without it every bound socket
/// needs a port no other socket on that address holds, including the thousands a connect storm
/// leaves in TIME_WAIT, and port search slows down and then fails after a few storms in a row.
/// Best effort: where the option is missing, binding works as before.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn defer_port_choice(socket: &TcpSocket) {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: the descriptor is open (owned by `socket` for this call) and the option's value
    // is an int of the size given.
    let _ = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

#[cfg(not(target_os = "linux"))]
fn defer_port_choice(_: &TcpSocket) {}

/// The upgrade request (RFC 6455 section 4.1), with a bearer token when there is one.
fn upgrade_request(addr: SocketAddr, path_and_query: &str, bearer: Option<&str>) -> String {
    let key = fastwebsockets::handshake::generate_key();
    let mut req = format!(
        "GET {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    if let Some(t) = bearer {
        req.push_str("Authorization: Bearer ");
        req.push_str(t);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req
}

/// Reads the response head and checks it switches to WebSocket (status 101, `Upgrade: websocket`,
/// `Connection: Upgrade`). Returns the bytes that arrived after the head: the first frames.
async fn read_upgrade_response(stream: &mut TcpStream) -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(512);
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(head_len) = response.parse(&buf)? {
            let code = response.code.unwrap_or(0);
            if code != 101 {
                bail!("status {code}");
            }
            let header =
                |name: &str| response.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
            if !header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case(b"websocket")) {
                bail!("no `Upgrade: websocket` in the response");
            }
            if !header("connection").is_some_and(|v| v.eq_ignore_ascii_case(b"upgrade")) {
                bail!("no `Connection: Upgrade` in the response");
            }
            return Ok(buf.split_off(head_len));
        }
        if buf.len() >= MAX_RESPONSE_HEAD {
            bail!("response head over {MAX_RESPONSE_HEAD} bytes");
        }
        let start = buf.len();
        buf.resize(start + 512, 0);
        let n = stream.read(&mut buf[start..]).await?;
        buf.truncate(start + n);
        if n == 0 {
            bail!("connection closed during the handshake");
        }
    }
}

/// A stream that first yields bytes already read past the handshake's response head.
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.at < this.prefix.len() {
            let n = (this.prefix.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.prefix[this.at..this.at + n]);
            this.at += n;
            if this.at == this.prefix.len() {
                this.prefix = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server that answers the handshake with `answer` in one write, then holds the socket.
    async fn answering(answer: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                tcp.read_exact(&mut byte).await.unwrap();
                head.push(byte[0]);
            }
            let head = String::from_utf8(head).unwrap();
            assert!(head.starts_with("GET /ws HTTP/1.1\r\n"), "{head}");
            assert!(head.contains("Authorization: Bearer t0k\r\n"), "{head}");
            assert!(head.contains("Sec-WebSocket-Version: 13\r\n"), "{head}");
            tcp.write_all(answer).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        });
        addr
    }

    #[tokio::test]
    async fn frames_sent_with_the_response_head_are_read_first() {
        // The 101 and a text frame "hi" (unmasked, server to client) in the same segment.
        let addr = answering(
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n\x81\x02hi",
        )
        .await;
        let (mut reader, _writer) = connect(addr, None, "/ws", Some("t0k")).await.unwrap();
        let mut ignore = |_: fastwebsockets::Frame<'_>| async { Ok::<(), std::convert::Infallible>(()) };
        let frame = reader.read_frame(&mut ignore).await.unwrap();
        assert_eq!(&frame.payload[..], b"hi");
    }

    #[tokio::test]
    async fn a_refused_upgrade_is_an_error_with_its_status() {
        let addr = answering(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n").await;
        let err = connect(addr, None, "/ws", Some("t0k")).await.err().expect("refused");
        assert!(err.to_string().contains("status 401"), "{err}");
    }

    #[tokio::test]
    async fn a_response_without_the_upgrade_headers_is_an_error() {
        let addr = answering(b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\n\r\n").await;
        let err = connect(addr, None, "/ws", Some("t0k")).await.err().expect("refused");
        assert!(err.to_string().contains("Upgrade: websocket"), "{err}");
    }
}
