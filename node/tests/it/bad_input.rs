//! Bad input over the WebSocket: each gets its error or close code, the connection stays usable
//! where the contract keeps it open, nothing is stored; and a client that stops reading is
//! closed with 4009 while the others keep receiving.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

async fn still_works(ws: &mut Ws) {
    ws.send(json!({"op":"ping","t":"alive"})).await;
    assert_eq!(ws.expect_op("pong").await["t"], "alive");
}

#[tokio::test]
async fn malformed_frames_get_an_error_and_the_connection_stays_open() {
    let n = TestNode::start().await;
    let (a, b) = (n.signup("alice").await, n.signup("bob").await);
    let id = n.group(&a, &[&b]).await;
    let mut ws = n.ws(&a).await;
    let cases: Vec<(String, &str)> = vec![
        ("{not json".into(), "malformed JSON"),
        ("[1,2,3]".into(), "JSON object"),
        ("\"just a string\"".into(), "JSON object"),
        (r#"{"conv":"x"}"#.into(), "\"op\""),
        (r#"{"op":42}"#.into(), "\"op\""),
        (r#"{"op":"dance"}"#.into(), "unknown op"),
        (json!({"op":"send","conv":id,"client_id":"k","body":17}).to_string(), "invalid \"send\""),
        (json!({"op":"send","conv":id,"body":"no client id"}).to_string(), "invalid \"send\""),
        (json!({"op":"read","conv":id,"seq":"five"}).to_string(), "invalid \"read\""),
        (json!({"op":"send","conv":id,"client_id":"k","body":"x","extra":1}).to_string(), "invalid \"send\""),
    ];
    for (frame, expect) in &cases {
        ws.send_text(frame).await;
        let e = ws.event().await;
        assert_eq!(e["op"], "error", "{frame}");
        assert_eq!(e["code"], "bad_request", "{frame}");
        assert!(e["message"].as_str().unwrap().contains(expect), "{frame}: {e}");
    }
    // The client_id of a malformed send is echoed so the client can match it.
    ws.send_text(&json!({"op":"send","conv":id,"client_id":"mine","body":[]}).to_string()).await;
    assert_eq!(ws.event().await["client_id"], "mine");

    ws.send_binary(b"\x00\x01binary").await;
    let e = ws.event().await;
    assert_eq!((e["op"].as_str(), e["code"].as_str()), (Some("error"), Some("bad_request")));
    still_works(&mut ws).await;
    let (_, page) = n.get(&format!("/api/conversations/{id}/messages"), tok(&a)).await;
    assert!(page["messages"].as_array().unwrap().is_empty(), "nothing was stored");
    assert_eq!(ws.send_msg(&id, "ok", "fine").await["seq"], 1);
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007() {
    let n = TestNode::start().await;
    let a = n.signup("alice").await;
    let mut ws = n.ws(&a).await;
    ws.send_invalid_utf8().await;
    assert_eq!(ws.expect_close().await, 1007);
}

#[tokio::test]
async fn an_oversized_frame_closes_with_1009() {
    let n = TestNode::start().await;
    let (a, b) = (n.signup("alice").await, n.signup("bob").await);
    let id = n.group(&a, &[&b]).await;
    let mut other = n.ws(&b).await;
    let mut ws = n.ws(&a).await;
    let huge = json!({"op":"send","conv":id,"client_id":"big","body":"x".repeat(70 * 1024)}).to_string();
    ws.send_text(&huge).await;
    assert_eq!(ws.expect_close().await, 1009);
    // Others are unaffected and nothing was stored.
    still_works(&mut other).await;
    let (_, page) = n.get(&format!("/api/conversations/{id}/messages"), tok(&b)).await;
    assert!(page["messages"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn a_fragmented_message_is_reassembled_up_to_the_limit() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::Message;
    let n = TestNode::start().await;
    let a = n.signup("alice").await;
    let mut ws = n.ws(&a).await;
    let parts = [r#"{"op":"pi"#, r#"ng","t"#, r#"":7}"#];
    ws.stream
        .send(Message::Frame(Frame::message(parts[0].as_bytes().to_vec(), OpCode::Data(Data::Text), false)))
        .await
        .unwrap();
    ws.stream
        .send(Message::Frame(Frame::message(parts[1].as_bytes().to_vec(), OpCode::Data(Data::Continue), false)))
        .await
        .unwrap();
    ws.stream
        .send(Message::Frame(Frame::message(parts[2].as_bytes().to_vec(), OpCode::Data(Data::Continue), true)))
        .await
        .unwrap();
    assert_eq!(ws.event().await, json!({"op":"pong","t":7}));
    // Many small fragments adding up past the limit close with 1009.
    let chunk = vec![b'x'; 16 * 1024];
    ws.stream.send(Message::Frame(Frame::message(chunk.clone(), OpCode::Data(Data::Text), false))).await.unwrap();
    for _ in 0..5 {
        if ws
            .stream
            .send(Message::Frame(Frame::message(chunk.clone(), OpCode::Data(Data::Continue), false)))
            .await
            .is_err()
        {
            break;
        }
    }
    assert_eq!(ws.expect_close().await, 1009);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_with_4009_and_others_keep_receiving() {
    let n = TestNode::start_with(|c| {
        // Room for the bursts a healthy client gets (an ack and a copy per send of a window of 32),
        // far less than the 600 messages the slow client is sent.
        c.outbound_queue = 128;
        c.max_body = 60_000;
        c.send_rate_limit = 0.0;
    })
    .await;
    let (a, b, slow) = (n.signup("alice").await, n.signup("bob").await, n.signup("slow").await);
    let id = n.group(&a, &[&b, &slow]).await;
    let mut slow_ws = n.ws(&slow).await; // never read from until the end
    let mut sender = n.ws(&a).await;
    let reader = n.ws(&b).await;
    let body = "y".repeat(59_000);
    let total = 600;
    let reader_task = tokio::spawn(async move {
        let mut reader = reader;
        let mut last = 0;
        while last < total {
            let e = reader.event().await;
            if e["op"] == "msg" {
                assert_eq!(e["seq"].as_u64().unwrap(), last + 1, "in order, none missing");
                last += 1;
            }
        }
        reader
    });
    // The sender reads its own acks and copies as it goes, so only `slow` lags.
    let sender_task = tokio::spawn(async move {
        let mut acked = 0;
        let mut next = 0;
        while acked < total {
            while next < total && next - acked < 32 {
                sender.send(json!({"op":"send","conv":id,"client_id":format!("k{next}"),"body":body})).await;
                next += 1;
            }
            if sender.event().await["op"] == "ack" {
                acked += 1;
            }
        }
    });
    sender_task.await.unwrap();
    let mut reader =
        tokio::time::timeout(Duration::from_secs(30), reader_task).await.expect("reader got everything").unwrap();
    still_works(&mut reader).await;
    assert_eq!(slow_ws.expect_close().await, 4009);
    let text = n.metrics().await;
    assert_eq!(metric(&text, "rookery_slow_consumer_disconnects_total"), 1.0);
}

/// A raw TCP client of `session` that upgrades and then never answers pings: what the server
/// sent until it closed the connection, and how long that took. The clock starts before the
/// request is sent, so the server's heartbeat clock (started at the upgrade) can never be ahead
/// of it, however late this task runs.
async fn silent_client(n: &TestNode, session: &serde_json::Value) -> (Duration, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(n.node().chat_addr).await.unwrap();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {}\r\n\r\n",
        tok(session)
    );
    let started = std::time::Instant::now();
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // Data may keep coming until the close, so the deadline is on the whole read.
    let read_all = async {
        loop {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(k) => buf.extend_from_slice(&chunk[..k]),
            }
        }
    };
    tokio::time::timeout(PATIENCE, read_all).await.expect("closed in time");
    (started.elapsed(), buf)
}

/// Whether `sent` holds a close frame (opcode 0x8, unmasked) with `code`.
fn has_close(sent: &[u8], code: u16) -> bool {
    sent.windows(4).any(|w| w[0] == 0x88 && w[2..4] == code.to_be_bytes())
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_two_heartbeats() {
    let n = TestNode::start_with(|c| c.heartbeat = Duration::from_millis(200)).await;
    let a = n.signup("alice").await;
    let (elapsed, sent) = silent_client(&n, &a).await;
    assert!(elapsed >= Duration::from_millis(400), "closed after {elapsed:?}");
    assert!(has_close(&sent, 4000), "no close frame with 4000");
}

/// The writer polls its timer only when it is due: a connection that is sent messages all the
/// time, and so keeps its writer busy, must still get its pings and be closed when it never
/// answers them.
#[tokio::test]
async fn a_silent_connection_that_is_sent_messages_is_still_closed_after_two_heartbeats() {
    let n = TestNode::start_with(|c| {
        c.heartbeat = Duration::from_millis(300);
        c.api_write_rate_limit = 0.0;
    })
    .await;
    let (a, b) = (n.signup("alice").await, n.signup("bob").await);
    let conv = n.group(&b, &[&a]).await;
    // Bob sends every 20 ms until the test ends: alice's writer always has frames to write.
    let sender = {
        let (base, token) = (n.url(""), tok(&b).to_string());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            for i in 0.. {
                let url = format!("{base}/api/conversations/{conv}/messages");
                let body = json!({"client_id": format!("c{i}"), "body": "busy"});
                let _ = http.post(url).bearer_auth(&token).json(&body).send().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let (elapsed, sent) = silent_client(&n, &a).await;
    sender.abort();
    assert!(elapsed >= Duration::from_millis(600), "closed after {elapsed:?}");
    assert!(sent.windows(5).any(|w| w == b"\"msg\""), "messages were delivered meanwhile");
    assert!(sent.windows(2).any(|w| w == [0x89, 0x00]), "no ping (0x89, empty)");
    assert!(has_close(&sent, 4000), "no close frame with 4000");
}

#[tokio::test]
async fn a_connection_flood_from_one_address_is_refused_and_others_are_served() {
    let node = crate::support::TestNode::start_with(|c| c.max_connections_per_addr = 3).await;
    let a = node.signup("flood_a").await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(node.ws(&a).await);
    }
    match node.ws_raw(crate::support::tok(&a)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 429),
        other => panic!("a fourth connection from one address must get 429, got {:?}", other.map(|_| ())),
    }
    // A client from another address (source 127.0.0.2, loopback too) is served meanwhile.
    let server: std::net::SocketAddr = node.base.strip_prefix("http://").unwrap().parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let tcp = socket.connect(server).await.unwrap();
    let url = format!("ws://{server}/ws?token={}", crate::support::tok(&a));
    let (mut other, _) = tokio_tungstenite::client_async(url, tcp).await.expect("another address connects");
    use futures_util::StreamExt;
    assert!(other.next().await.is_some(), "hello");
    // Closing one frees its slot.
    let mut first = held.remove(0);
    first.stream.close(None).await.unwrap();
    crate::support::eventually("the slot to be released", || async {
        node.ws_raw(crate::support::tok(&a)).await.is_ok()
    })
    .await;
}
