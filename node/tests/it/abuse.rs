//! Abuse from clients: slow and oversized request heads, one user creating conversations or
//! uploading attachments as fast as it can. Each is refused cleanly while another client is
//! served, and the test measures that client's latency during the abuse.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{tok, uid, TestNode, PATIENCE};

/// Latencies of a well-behaved client: a health check and a WebSocket send with its ack.
/// It has connections of its own: sharing the abuser's pool, a health check could be sent on
/// a connection the server is closing after refusing an abusive request.
struct Bystander {
    http: reqwest::Client,
    worst: Duration,
    count: usize,
}

impl Bystander {
    fn new() -> Self {
        Bystander { http: reqwest::Client::new(), worst: Duration::ZERO, count: 0 }
    }

    async fn probe(&mut self, n: &TestNode, ws: &mut crate::support::Ws, conv: &str) {
        let started = Instant::now();
        let r = self.http.get(n.url("/healthz")).send().await.expect("healthz answers");
        assert_eq!(r.status(), 200);
        let ack = ws.send_msg(conv, &format!("probe-{}", self.count), "still here").await;
        assert_eq!(ack["op"], "ack");
        self.worst = self.worst.max(started.elapsed());
        self.count += 1;
        // Well under the per-session send limit.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads until the server closes the connection; returns what it sent.
async fn read_to_close(tcp: &mut TcpStream, within: Duration) -> Result<Vec<u8>, &'static str> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, tcp.read(&mut chunk)).await {
            Err(_) => return Err("still open"),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(out),
            Ok(Ok(k)) => out.extend_from_slice(&chunk[..k]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_clients_are_cut_off_at_the_header_timeout_and_others_are_served() {
    let n = TestNode::start_with(|c| c.http_header_timeout = Duration::from_millis(1500)).await;
    let (a, b) = (n.signup("alice").await, n.signup("bob").await);
    let conv = n.group(&a, &[&b]).await;
    let mut ws = n.ws(&a).await;
    let addr = n.node().chat_addr;

    // 300 connections trickling a request head, one header line every 200 ms, half of them
    // on the WebSocket upgrade path.
    let mut slow = Vec::new();
    for i in 0..300 {
        let path = if i % 2 == 0 { "/api/users/me" } else { "/ws" };
        slow.push(tokio::spawn(async move {
            // The clock starts before the connect: the server's header timer starts at its
            // accept, never earlier, so a client task that is scheduled late cannot make the
            // cut look earlier than it was.
            let started = Instant::now();
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n").as_bytes()).await.unwrap();
            for k in 0.. {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if tcp.write_all(format!("X-Slow-{k}: y\r\n").as_bytes()).await.is_err() {
                    break;
                }
                if started.elapsed() > PATIENCE {
                    panic!("a slowloris connection was still open after {:?}", started.elapsed());
                }
            }
            started.elapsed()
        }));
    }
    // An idle keep-alive connection: one request, then nothing.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();

    let mut by = Bystander::new();
    let abuse_started = Instant::now();
    while abuse_started.elapsed() < Duration::from_millis(1500) {
        by.probe(&n, &mut ws, &conv).await;
    }
    let mut cut_after = Vec::new();
    for t in slow {
        cut_after.push(t.await.unwrap());
    }
    let latest = cut_after.iter().max().unwrap();
    assert!(*latest < Duration::from_secs(4), "slowloris connections closed by {latest:?} (timeout 1.5 s)");
    assert!(*cut_after.iter().min().unwrap() >= Duration::from_millis(1000), "not cut before the timeout");
    let answered = read_to_close(&mut idle, Duration::from_secs(4)).await.expect("idle keep-alive closed");
    assert!(answered.starts_with(b"HTTP/1.1 200"), "the idle connection's request was answered first");
    assert!(by.worst < Duration::from_secs(1), "a bystander waited {:?} during the abuse", by.worst);
    println!(
        "slowloris: 300 connections cut after {latest:?}; bystander worst {:?} over {} probes",
        by.worst, by.count
    );
    by.probe(&n, &mut ws, &conv).await;
}

#[tokio::test]
async fn oversized_request_heads_get_431_and_change_nothing() {
    let n = TestNode::start().await;
    let (a, b) = (n.signup("alice").await, n.signup("bob").await);
    let conv = n.group(&a, &[&b]).await;
    let mut ws = n.ws(&a).await;
    let addr = n.node().chat_addr;
    let big_value = "v".repeat(100 * 1024);
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases = [
        ("one 100 KiB header", format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {big_value}\r\n\r\n")),
        ("200 headers", format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n")),
        ("a 100 KiB request line", format!("GET /{big_value} HTTP/1.1\r\nHost: x\r\n\r\n")),
        (
            "an upgrade with a 100 KiB header",
            format!("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Big: {big_value}\r\n\r\n"),
        ),
    ];
    for (what, req) in cases {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        // The server may answer and close before reading everything; a failed write is fine.
        let _ = tcp.write_all(req.as_bytes()).await;
        let answer = read_to_close(&mut tcp, PATIENCE).await.expect("closed");
        let head = String::from_utf8_lossy(&answer[..answer.len().min(40)]).to_string();
        assert!(head.starts_with("HTTP/1.1 431"), "{what}: answered {head:?}");
    }
    // A head just under the limit is served.
    let fits = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Fits: {}\r\n\r\n", "v".repeat(32 * 1024));
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(fits.as_bytes()).await.unwrap();
    let mut buf = [0u8; 12];
    tcp.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200");
    let ack = ws.send_msg(&conv, "after", "served").await;
    assert_eq!(ack["seq"], 1, "nothing else was written");
}

#[tokio::test]
async fn a_websocket_client_trickling_a_frame_is_closed_as_silent() {
    let n = TestNode::start_with(|c| c.heartbeat = Duration::from_millis(200)).await;
    let a = n.signup("alice").await;
    let mut tcp = TcpStream::connect(n.node().chat_addr).await.unwrap();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {}\r\n\r\n",
        tok(&a)
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    // A masked text frame of 1000 bytes, sent one byte every 50 ms: never complete in time.
    let mut frame = vec![0x81u8, 0x80 | 126, 0x03, 0xE8, 1, 2, 3, 4];
    frame.extend(std::iter::repeat_n(b'x' ^ 1, 1000));
    let started = Instant::now();
    let (mut rd, mut wr) = tcp.into_split();
    let writer = tokio::spawn(async move {
        for byte in frame {
            if wr.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout(PATIENCE, rd.read(&mut chunk)).await.expect("closed in time") {
            Ok(0) | Err(_) => break,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
        }
    }
    writer.abort();
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(3), "closed after {elapsed:?} (heartbeat 200 ms)");
    let close = buf.windows(4).any(|w| w[0] == 0x88 && w[2..4] == 4000u16.to_be_bytes());
    assert!(close, "no close frame with 4000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_creating_conversations_in_a_loop_is_limited_and_others_are_served() {
    let n = TestNode::start().await; // default limit: 10 writes/s per user, bursts of 100
    let (a, b, c) = (n.signup("alice").await, n.signup("bob").await, n.signup("carol").await);
    let conv = n.group(&b, &[&c]).await;
    let mut ws = n.ws(&b).await;
    let flooder = {
        let (http, url, token, member) =
            (n.http.clone(), n.url("/api/conversations"), tok(&a).to_string(), uid(&b).to_string());
        tokio::spawn(async move {
            let (mut created, mut refused, mut retry_after) = (0, 0, None);
            for i in 0..1000 {
                let r = http
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({"kind":"group","title":format!("spam {i}"),"members":[member]}))
                    .send()
                    .await
                    .unwrap();
                match r.status().as_u16() {
                    201 => created += 1,
                    429 => {
                        refused += 1;
                        retry_after = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
                        let body: serde_json::Value = r.json().await.unwrap();
                        assert_eq!(body["error"]["code"], "rate_limited");
                    }
                    other => panic!("conversation flood answered {other}"),
                }
            }
            (created, refused, retry_after)
        })
    };
    let mut by = Bystander::new();
    while !flooder.is_finished() {
        by.probe(&n, &mut ws, &conv).await;
    }
    let (created, refused, retry_after) = flooder.await.unwrap();
    assert!((100..=150).contains(&created), "created {created} in the burst");
    assert_eq!(created + refused, 1000);
    assert_eq!(retry_after.as_deref(), Some("1"));
    let (status, list) = n.get("/api/conversations", tok(&a)).await;
    assert_eq!(status, 200);
    let listed = list["conversations"].as_array().map(Vec::len);
    assert_eq!(listed, Some(created), "refused creations changed nothing");
    // Another user's writes are not affected.
    let (status, _) =
        n.post("/api/conversations", Some(tok(&c)), json!({"kind":"group","title":"ok","members":[uid(&b)]})).await;
    assert_eq!(status, 201);
    assert!(by.worst < Duration::from_secs(1), "bystander waited {:?}", by.worst);
    println!(
        "conversation flood: {created} created, {refused} refused; bystander worst {:?} over {} probes",
        by.worst, by.count
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_in_many_conversations_lists_them_while_others_are_served() {
    let n = TestNode::start_with(|c| c.api_write_rate_limit = 0.0).await;
    let (a, b, c) = (n.signup("alice").await, n.signup("bob").await, n.signup("carol").await);
    let conv = n.group(&b, &[&c]).await;
    let mut ws = n.ws(&b).await;
    let mut creators = Vec::new();
    for w in 0..8 {
        let (http, url, token, member) =
            (n.http.clone(), n.url("/api/conversations"), tok(&a).to_string(), uid(&c).to_string());
        creators.push(tokio::spawn(async move {
            for i in 0..64 {
                let body = json!({"kind":"group","title":format!("many {w}-{i}"),"members":[member]});
                let r = http.post(&url).bearer_auth(&token).json(&body).send().await.unwrap();
                assert_eq!(r.status(), 201);
            }
        }));
    }
    for t in creators {
        t.await.unwrap();
    }
    let mut by = Bystander::new();
    let started = Instant::now();
    let lister = {
        let (http, url, token) = (n.http.clone(), n.url("/api/conversations"), tok(&a).to_string());
        tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            for _ in 0..5 {
                let t = Instant::now();
                let r = http.get(&url).bearer_auth(&token).send().await.unwrap();
                let body: serde_json::Value = r.json().await.unwrap();
                assert_eq!(body["conversations"].as_array().unwrap().len(), 512);
                slowest = slowest.max(t.elapsed());
            }
            slowest
        })
    };
    while !lister.is_finished() {
        by.probe(&n, &mut ws, &conv).await;
    }
    let slowest = lister.await.unwrap();
    assert!(by.worst < Duration::from_secs(1), "bystander waited {:?}", by.worst);
    println!(
        "512 conversations: slowest list {slowest:?} (5 lists in {:?}); bystander worst {:?} over {} probes",
        started.elapsed(),
        by.worst,
        by.count
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attachment_flood_is_limited_before_the_bytes_are_read() {
    let n = TestNode::start_with(|c| c.max_attachment = 1024 * 1024).await;
    let (a, b, c) = (n.signup("alice").await, n.signup("bob").await, n.signup("carol").await);
    let conv = n.group(&b, &[&c]).await;
    let mut ws = n.ws(&b).await;
    let body = vec![7u8; 256 * 1024];
    let flooder = {
        let (http, url, token) = (n.http.clone(), n.url("/api/attachments?name=x.bin"), tok(&a).to_string());
        tokio::spawn(async move {
            let (mut stored, mut refused) = (0, 0);
            for _ in 0..300 {
                let sent = http
                    .post(&url)
                    .bearer_auth(&token)
                    .header("content-type", "application/octet-stream")
                    .body(body.clone())
                    .send()
                    .await;
                match sent.map(|r| r.status().as_u16()) {
                    Ok(201) => stored += 1,
                    Ok(429) => refused += 1,
                    // A refused upload is answered before its body is read, and the server then
                    // closes the connection rather than read the rest: the client may see the
                    // reset before the 429. Only after the burst.
                    Err(e) if stored >= 100 && (e.is_request() || e.is_body()) => refused += 1,
                    other => panic!("attachment flood answered {other:?}"),
                }
            }
            (stored, refused)
        })
    };
    let mut by = Bystander::new();
    while !flooder.is_finished() {
        by.probe(&n, &mut ws, &conv).await;
    }
    let (stored, refused) = flooder.await.unwrap();
    assert!((100..=150).contains(&stored), "stored {stored}");
    assert_eq!(stored + refused, 300);
    let blobs = std::fs::read_dir(n.dir.path().join("blobs")).map(count_files).unwrap_or(0);
    assert_eq!(blobs, stored, "a refused upload left no bytes behind");
    assert!(by.worst < Duration::from_secs(1), "bystander waited {:?}", by.worst);
    println!(
        "attachment flood: {stored} stored, {refused} refused; bystander worst {:?} over {} probes",
        by.worst, by.count
    );
}

fn count_files(dir: std::fs::ReadDir) -> usize {
    dir.flatten()
        .map(|e| if e.path().is_dir() { std::fs::read_dir(e.path()).map(count_files).unwrap_or(0) } else { 1 })
        .sum()
}
