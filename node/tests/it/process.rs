//! The real `rookery` binary: SIGKILL mid-stream loses no acked message; SIGTERM closes
//! sessions with 1001 and exits 0 within the grace period; tokens survive restarts; the
//! listeners use the configured accept backlog.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::json;

use crate::support::*;

/// client_id -> (sender, seq, message id) of every ack a client received.
type Acked = Arc<Mutex<HashMap<String, (String, u64, String)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_no_acked_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = NodeProcess::spawn(dir.path(), &["--send-rate-limit", "0"]);
    let c = p.client();
    let users = [c.signup("user0").await, c.signup("user1").await, c.signup("user2").await];
    let (s, g) = c
        .post(
            "/api/conversations",
            Some(tok(&users[0])),
            json!({"kind":"group","title":"crash","members":[uid(&users[1]), uid(&users[2])]}),
        )
        .await;
    assert_eq!(s, 201);
    let conv = g["id"].as_str().unwrap().to_string();

    // client_id -> (sender, seq, id) for every ack received.
    let acked: Acked = Arc::default();
    let mut tasks = Vec::new();
    for (i, u) in users.iter().enumerate() {
        let mut ws = c.ws(tok(u)).await;
        let (conv, acked, sender) = (conv.clone(), acked.clone(), uid(u).to_string());
        tasks.push(tokio::spawn(async move {
            let mut next = 0u64;
            let mut outstanding = 0;
            loop {
                while outstanding < 16 {
                    let frame = json!({"op":"send","conv":conv,"client_id":format!("c{i}-{next}"),"body":format!("from {i} #{next}")});
                    if futures_util::SinkExt::send(&mut ws.stream, tokio_tungstenite::tungstenite::Message::text(frame.to_string())).await.is_err() {
                        return;
                    }
                    next += 1;
                    outstanding += 1;
                }
                match ws.next_within(Duration::from_secs(5)).await {
                    Some(Next::Event(e)) if e["op"] == "ack" => {
                        outstanding -= 1;
                        let seq = e["seq"].as_u64().unwrap();
                        acked.lock().insert(e["client_id"].as_str().unwrap().to_string(), (sender.clone(), seq, e["id"].as_str().unwrap().to_string()));
                    }
                    Some(Next::Event(_)) => {}
                    Some(Next::Closed(_)) | None => return,
                }
            }
        }));
    }
    // Let the stream run, then kill the node without warning.
    let deadline = Instant::now() + PATIENCE;
    while acked.lock().len() < 300 {
        assert!(Instant::now() < deadline, "too few acks before the kill");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    p.child.kill().unwrap();
    p.wait_exit(Duration::from_secs(10));
    for t in tasks {
        tokio::time::timeout(PATIENCE, t).await.expect("clients notice the drop").unwrap();
    }
    let acked = acked.lock().clone();
    drop(p);

    let p = NodeProcess::spawn(dir.path(), &[]);
    let c = p.client();
    // Tokens issued before the crash still work: the JWT secret was kept in the data dir.
    let history = c.history(&conv, tok(&users[0])).await;
    let mut by_client: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
    let mut last = 0;
    for m in &history {
        let seq = m["seq"].as_u64().unwrap();
        assert!(seq > last, "history out of order: {seq} after {last}");
        last = seq;
        by_client
            .entry((m["sender"].as_str().unwrap().into(), m["client_id"].as_str().unwrap().into()))
            .or_default()
            .push(seq);
    }
    assert!(by_client.values().all(|seqs| seqs.len() == 1), "a message was stored twice");
    for (client_id, (sender, seq, id)) in &acked {
        let found = history.iter().find(|m| m["client_id"] == client_id.as_str() && m["sender"] == sender.as_str());
        let m = found.unwrap_or_else(|| panic!("acked message {client_id} (seq {seq}) lost"));
        assert_eq!(m["seq"].as_u64().unwrap(), *seq);
        assert_eq!(m["id"].as_str().unwrap(), id);
    }
    assert!(history.len() >= acked.len());
    // Writes continue after the restart from the highest stored seq.
    let mut ws = c.ws(tok(&users[1])).await;
    let ack = ws.send_msg(&conv, "after-restart", "hello again").await;
    assert_eq!(ack["seq"].as_u64().unwrap(), last + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_sessions_with_1001_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = NodeProcess::spawn(dir.path(), &["--shutdown-grace", "5"]);
    let c = p.client();
    let (a, b) = (c.signup("alice").await, c.signup("bob").await);
    let (_, g) =
        c.post("/api/conversations", Some(tok(&a)), json!({"kind":"group","title":"t","members":[uid(&b)]})).await;
    let conv = g["id"].as_str().unwrap().to_string();
    let mut aws = c.ws(tok(&a)).await;
    let mut bws = c.ws(tok(&b)).await;
    let mut acks = Vec::new();
    for i in 0..20 {
        acks.push(aws.send_msg(&conv, &format!("k{i}"), "before shutdown").await);
    }
    let started = Instant::now();
    p.signal("-TERM");
    assert_eq!(bws.expect_close().await, 1001);
    assert_eq!(aws.expect_close().await, 1001);
    let status = p.wait_exit(Duration::from_secs(8));
    assert!(status.success(), "exit status {status:?}");
    assert!(started.elapsed() < Duration::from_secs(6), "took {:?}", started.elapsed());
    drop(p);

    let p = NodeProcess::spawn(dir.path(), &[]);
    let history = p.client().history(&conv, tok(&b)).await;
    assert_eq!(history.len(), 20);
    for (m, ack) in history.iter().zip(&acks) {
        assert_eq!(m["id"], ack["id"]);
    }
}

/// The accept backlog of the socket listening on `port`, as `ss` reports it (its Send-Q).
fn listen_backlog(port: &str) -> u32 {
    let out = std::process::Command::new("ss").args(["-ltnH", &format!("sport = :{port}")]).output().expect("ss runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let line = text.lines().next().unwrap_or_else(|| panic!("no listener on port {port}: {text:?}"));
    line.split_whitespace().nth(2).and_then(|q| q.parse().ok()).unwrap_or_else(|| panic!("ss printed {line:?}"))
}

#[tokio::test]
async fn listeners_use_the_configured_backlog() {
    let port = |base: &str| base.rsplit(':').next().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let p = NodeProcess::spawn(dir.path(), &["--listen-backlog", "777"]);
    assert_eq!(listen_backlog(&port(&p.base)), 777, "chat listener");
    assert_eq!(listen_backlog(&port(&p.admin_base)), 777, "admin listener");
    drop(p);
    // The default: 4096, or the kernel's cap when that is lower.
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap().trim().parse().unwrap();
    let p = NodeProcess::spawn(dir.path(), &[]);
    assert_eq!(listen_backlog(&port(&p.base)), somaxconn.min(4096));
}
