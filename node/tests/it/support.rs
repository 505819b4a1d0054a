//! Test nodes and clients, in one place. Every test starts its own node on ephemeral ports
//! with its own data directory, and talks to it over real sockets.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rookery_node::{Config, Node};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The JWT secret of every test node, so tests can mint tokens (expired ones, forged ones).
pub const JWT_SECRET: &str = "test-secret-test-secret-test-secret-0123";
/// How long a test waits for an expected event.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A node started for one test.
pub struct TestNode {
    pub node: Option<Node>,
    pub http: reqwest::Client,
    pub base: String,
    pub ws_base: String,
    pub admin_base: String,
    pub dir: tempfile::TempDir,
}

/// Test defaults: the documented defaults with a known JWT secret and admin token.
pub fn test_config(dir: &std::path::Path) -> Config {
    let mut c = Config::with_defaults(dir);
    c.jwt_secret = Some(JWT_SECRET.into());
    c.admin_token = Some("test-admin-token-0123456789".into());
    c
}

impl TestNode {
    pub async fn start() -> TestNode {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        tweak(&mut config);
        Self::start_in(dir, config).await
    }

    pub async fn start_in(dir: tempfile::TempDir, config: Config) -> TestNode {
        let (chat, admin) = listeners(&config);
        let node = rookery_node::start(config, chat, admin).await.unwrap();
        let base = format!("http://{}", node.chat_addr);
        TestNode {
            ws_base: format!("ws://{}", node.chat_addr),
            admin_base: format!("http://{}", node.admin_addr),
            base,
            node: Some(node),
            http: reqwest::Client::new(),
            dir,
        }
    }

    pub fn node(&self) -> &Node {
        self.node.as_ref().unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Signs up `name` with a fixed password; returns the `Session` JSON.
    pub async fn signup(&self, name: &str) -> Value {
        let r = self.post("/api/auth/signup", None, json!({"username": name, "password": "password123"})).await;
        assert_eq!(r.0, 201, "signup {name}: {}", r.1);
        r.1
    }

    /// A POST with a JSON body; returns (status, JSON body or Null).
    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        let mut req = self.http.post(self.url(path)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        into_pair(req.send().await.unwrap()).await
    }

    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        into_pair(self.http.get(self.url(path)).bearer_auth(token).send().await.unwrap()).await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        into_pair(self.http.patch(self.url(path)).bearer_auth(token).json(&body).send().await.unwrap()).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> (u16, Value) {
        into_pair(self.http.delete(self.url(path)).bearer_auth(token).send().await.unwrap()).await
    }

    /// Creates a group owned by `owner` with `members`; returns its id.
    pub async fn group(&self, owner: &Value, members: &[&Value]) -> String {
        let ids: Vec<&str> = members.iter().map(|m| uid(m)).collect();
        let (s, c) = self
            .post("/api/conversations", Some(tok(owner)), json!({"kind":"group","title":"team","members": ids}))
            .await;
        assert_eq!(s, 201, "{c}");
        c["id"].as_str().unwrap().to_string()
    }

    /// Opens a WebSocket for `session` and reads its `hello`.
    pub async fn ws(&self, session: &Value) -> Ws {
        let mut ws = self.ws_raw(tok(session)).await.expect("upgrade");
        let hello = ws.expect_op("hello").await;
        assert_eq!(hello["user_id"], session["user"]["id"]);
        ws
    }

    /// Opens a WebSocket with `token` in the Authorization header.
    pub async fn ws_raw(&self, token: &str) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        let mut req = format!("{}/ws", self.ws_base).into_client_request().unwrap();
        req.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        let (stream, _) = tokio_tungstenite::connect_async(req).await?;
        Ok(Ws { stream })
    }

    /// The Prometheus text of the admin listener.
    pub async fn metrics(&self) -> String {
        self.http.get(format!("{}/metrics", self.admin_base)).send().await.unwrap().text().await.unwrap()
    }

    /// Stops the node (graceful shutdown) and returns its data directory.
    pub async fn stop(mut self) -> tempfile::TempDir {
        self.node.take().unwrap().stop().await.unwrap();
        self.dir
    }
}

async fn into_pair(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The access token of a `Session`.
pub fn tok(session: &Value) -> &str {
    session["access_token"].as_str().unwrap()
}

/// The user id of a `Session`.
pub fn uid(session: &Value) -> &str {
    session["user"]["id"].as_str().unwrap()
}

/// A value of a metric line `name{labels} value` (labels as written, or none).
/// The node's count of reads of the store's dedupe index.
pub const DEDUPE_READS: &str = "rookery_store_op_seconds_count{op=\"message_by_client_id\"}";

/// A labelled count from the metrics' text, 0 when absent (a label's series appears only once
/// it has counted something).
pub fn count_or_zero(text: &str, name_and_labels: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0, |v| v.trim().parse().unwrap())
}

pub fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("metric {name_and_labels} missing"))
        .trim()
        .parse()
        .unwrap()
}

/// Waits until `check` holds, polling, or panics after `PATIENCE`.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A WebSocket client.
pub struct Ws {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What the server did next.
#[derive(Debug)]
pub enum Next {
    Event(Value),
    Closed(u16),
}

impl Ws {
    pub async fn send(&mut self, v: Value) {
        self.stream.send(WsMessage::text(v.to_string())).await.unwrap();
    }

    pub async fn send_text(&mut self, s: &str) {
        self.stream.send(WsMessage::text(s.to_string())).await.unwrap();
    }

    pub async fn send_binary(&mut self, b: &[u8]) {
        self.stream.send(WsMessage::binary(b.to_vec())).await.unwrap();
    }

    /// Sends a text frame whose payload is not valid UTF-8.
    pub async fn send_invalid_utf8(&mut self) {
        let frame = Frame::message(vec![0x7b, 0xff, 0xfe, 0x7d], OpCode::Data(Data::Text), true);
        self.stream.send(WsMessage::Frame(frame)).await.unwrap();
    }

    /// The next event or the close, within `PATIENCE`.
    pub async fn next(&mut self) -> Next {
        self.next_within(PATIENCE).await.expect("nothing arrived in time")
    }

    /// The next event or the close, or `None` if nothing arrives within `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Next> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let item = match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Ok(item) => item,
                Err(_) => return None,
            };
            match item {
                Some(Ok(WsMessage::Text(t))) => {
                    return Some(Next::Event(serde_json::from_str(&t).expect("events are JSON")))
                }
                Some(Ok(WsMessage::Close(frame))) => {
                    return Some(Next::Closed(frame.map_or(1005, |f| u16::from(f.code))))
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Some(Next::Closed(1006)),
            }
        }
    }

    /// The next event; panics on a close.
    pub async fn event(&mut self) -> Value {
        match self.next().await {
            Next::Event(v) => v,
            Next::Closed(code) => {
                panic!("connection closed with {code} while waiting for an event")
            }
        }
    }

    /// Skips events until one with `op`.
    pub async fn expect_op(&mut self, op: &str) -> Value {
        loop {
            let e = self.event().await;
            if e["op"] == op {
                return e;
            }
        }
    }

    /// Skips events until the close; returns its code.
    pub async fn expect_close(&mut self) -> u16 {
        loop {
            if let Next::Closed(code) = self.next().await {
                return code;
            }
        }
    }

    /// Sends a message and waits for its ack (skipping other events); returns the ack.
    pub async fn send_msg(&mut self, conv: &str, client_id: &str, body: &str) -> Value {
        self.send(json!({"op":"send","conv":conv,"client_id":client_id,"body":body})).await;
        loop {
            let e = self.event().await;
            if e["client_id"] == client_id && (e["op"] == "ack" || e["op"] == "error") {
                return e;
            }
        }
    }

    /// Asserts that nothing at all arrives for `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Some(n) = self.next_within(wait).await {
            panic!("expected silence, got {n:?}");
        }
    }
}

/// A `rookery serve` process: the real binary, for what only a process shows (signals, kills,
/// restarts on the same data directory, a faked clock).
pub struct NodeProcess {
    pub child: Child,
    pub base: String,
    pub ws_base: String,
    pub admin_base: String,
}

impl NodeProcess {
    /// Starts `rookery serve` on ephemeral ports in `dir`.
    pub fn spawn(dir: &Path, extra: &[&str]) -> NodeProcess {
        Self::spawn_with(dir, "127.0.0.1:0", "127.0.0.1:0", extra, &[])
    }

    /// Starts `rookery serve` on the given listeners in `dir`, with `extra` flags and `env`
    /// variables, and reads the addresses it prints once it is ready.
    pub fn spawn_with(
        dir: &Path,
        listen: &str,
        admin_listen: &str,
        extra: &[&str],
        env: &[(&str, String)],
    ) -> NodeProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_rookery"));
        command
            .args(["serve", "--listen", listen, "--admin-listen", admin_listen, "--data-dir"])
            .arg(dir)
            .args(extra)
            .env("ROOKERY_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("start rookery");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let (addr, admin) = loop {
            let line = lines.next().expect("rookery exited before it was ready").unwrap();
            if let Some(rest) = line.strip_prefix("rookery is running: chat and API on http://") {
                let (chat, admin) = rest.split_once(", ops console on http://").expect("both addresses");
                break (chat.to_string(), admin.to_string());
            }
        };
        // The first command of the README ends with the address of the web client.
        let open = lines.next().expect("the line after the start line").unwrap();
        assert_eq!(open, format!("open http://{addr}/ in a browser to chat"));
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        NodeProcess {
            child,
            base: format!("http://{addr}"),
            ws_base: format!("ws://{addr}"),
            admin_base: format!("http://{admin}"),
        }
    }

    /// A client for this process.
    pub fn client(&self) -> ProcessClient {
        ProcessClient { http: reqwest::Client::new(), base: self.base.clone(), ws_base: self.ws_base.clone() }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap().success();
        assert!(ok, "kill {sig}");
    }

    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "rookery did not exit within {within:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// HTTP and WebSocket client of a [`NodeProcess`].
pub struct ProcessClient {
    pub http: reqwest::Client,
    pub base: String,
    pub ws_base: String,
}

impl ProcessClient {
    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        let mut req = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let r = self.http.get(format!("{}{path}", self.base)).bearer_auth(token).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn signup(&self, name: &str) -> Value {
        let (s, v) = self.post("/api/auth/signup", None, json!({"username":name,"password":"password123"})).await;
        assert_eq!(s, 201);
        v
    }

    pub async fn ws(&self, token: &str) -> Ws {
        let mut req = format!("{}/ws", self.ws_base).into_client_request().unwrap();
        req.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        let (stream, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        let mut ws = Ws { stream };
        ws.expect_op("hello").await;
        ws
    }

    /// The whole history of a conversation, ascending.
    pub async fn history(&self, conv: &str, token: &str) -> Vec<Value> {
        history_pages(conv, |path| async move { self.get(&path, token).await }).await
    }
}

impl TestNode {
    /// The whole history of a conversation, ascending.
    pub async fn history(&self, conv: &str, token: &str) -> Vec<Value> {
        history_pages(conv, |path| async move { self.get(&path, token).await }).await
    }
}

/// Pages through a conversation's history with `get`.
async fn history_pages<F, Fut>(conv: &str, mut get: F) -> Vec<Value>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = (u16, Value)>,
{
    let mut out: Vec<Value> = Vec::new();
    let mut after = 0;
    loop {
        let (s, page) = get(format!("/api/conversations/{conv}/messages?after_seq={after}&limit=500")).await;
        assert_eq!(s, 200, "{page}");
        let msgs = page["messages"].as_array().unwrap().clone();
        if let Some(last) = msgs.last() {
            after = last["seq"].as_u64().unwrap();
        }
        out.extend(msgs);
        if page["has_more"] != true {
            return out;
        }
    }
}

/// A test node's chat and admin listeners on free local ports, bound as `rookery serve` binds
/// them: with the configured accept backlog. (tokio's `TcpListener::bind` asks for 128, and a
/// test opening a few hundred connections at once then sees SYNs dropped and retried a second
/// later: `rookery_node::listener`.)
pub fn listeners(config: &Config) -> (TcpListener, TcpListener) {
    let bind = || rookery_node::listener::bind("127.0.0.1:0".parse().unwrap(), config.listen_backlog).unwrap();
    (bind(), bind())
}
