//! A minimal HTTP/1.1 client for setup and the `history` scenario: one keep-alive connection
//! per `HttpConn`, requests one at a time.

use anyhow::{anyhow, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// One connection to `host:port`.
pub struct HttpConn {
    host: String,
    sender: SendRequest<Full<Bytes>>,
}

impl HttpConn {
    /// Connects to the `http://host:port` base URL.
    pub async fn connect(base: &str) -> anyhow::Result<Self> {
        let host = base.strip_prefix("http://").ok_or_else(|| anyhow!("URL must start with http:// ({base})"))?;
        let host = host.trim_end_matches('/').to_string();
        let stream = TcpStream::connect(&host).await.with_context(|| format!("connecting to {host}"))?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(HttpConn { host, sender })
    }

    /// Sends one request; returns the status and the body parsed as JSON (Null when empty).
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let mut req = hyper::Request::builder().method(method).uri(path).header("host", &self.host);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let payload = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Bytes::from(serde_json::to_vec(b)?)
            }
            None => Bytes::new(),
        };
        self.sender.ready().await?;
        let resp = self.sender.send_request(req.body(Full::new(payload))?).await?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let value = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)
        };
        Ok((status, value))
    }
}
