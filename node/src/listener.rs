//! Listening sockets with the configured accept backlog (`--listen-backlog`).
//!
//! The backlog is how many connections the kernel holds, handshake done, until the node accepts
//! them. tokio's `TcpListener::bind` asks for 128; a connect storm of a few hundred clients at
//! once overflows that while the node is busy, the kernel drops their SYNs, and each dropped
//! client retries a full second later (the initial SYN retransmission timeout). The kernel caps
//! the value at `net.core.somaxconn`.

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// Binds `addr` (`SO_REUSEADDR` on, as `TcpListener::bind` does) and listens with `backlog`.
///
/// # Errors
/// When the address cannot be bound (in use, not local, no permission).
pub fn bind(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}
