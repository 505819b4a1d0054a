//! The HTTP/1.1 listener loop shared by the chat and admin listeners, with the limits a public
//! listener needs and `axum::serve` does not set.
//!
//! - **Header read timeout** (`--http-header-timeout-ms`, default 10 s): a connection must deliver
//!   a complete request head within this time of starting one, and an idle keep-alive connection
//!   is closed after it. A slowloris client trickling headers (or an upgrade request) is cut off.
//! - **Head size** ([`MAX_HEAD_BYTES`]): a request line plus headers larger than this gets
//!   `431 Request Header Fields Too Large` and the connection is closed; at most
//!   [`MAX_HEADERS`] header lines, else 431.
//! - Accept errors (for example out of file descriptors) are logged and retried after a short
//!   pause, never ending the loop.
//!
//! Each connection gets the peer address as `ConnectInfo<SocketAddr>` and `TCP_NODELAY` (small
//! frames leave at once). On shutdown the loop stops accepting and asks every connection to
//! finish its current request; upgraded WebSocket connections belong to the gateway by then.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// The largest request head (request line and headers) accepted, in bytes.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The most header lines accepted in one request (hyper's default, kept on its stack).
pub const MAX_HEADERS: usize = 100;
/// Pause after a failed `accept` (for example `EMFILE`) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Time allowed for a request head, and for an idle keep-alive connection.
    pub header_timeout: Duration,
}

/// Serves `router` on `listener` until `shutdown`, then waits up to `grace` for open requests.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let connections = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; retrying");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                router.clone().oneshot(req.map(axum::body::Body::new))
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).max_header_size(MAX_HEAD_BYTES);
            let conn = builder.serve_connection(TokioIo::new(tcp), service).with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => log_end(peer, result),
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    log_end(peer, conn.await);
                }
            }
        });
    }
    drop(listener);
    connections.close();
    let _ = tokio::time::timeout(grace, connections.wait()).await;
}

fn log_end(peer: SocketAddr, result: Result<(), hyper::Error>) {
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
    }
}
