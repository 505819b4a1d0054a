//! Contract section 3: send/ack/msg, dedupe, limits, sync, receipts, ping.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn hello_announces_the_session_and_limits() {
    let n = TestNode::start().await;
    let a = n.signup("alice").await;
    let mut ws = n.ws_raw(tok(&a)).await.unwrap();
    let hello = ws.event().await;
    assert_eq!(hello["op"], "hello");
    assert_eq!(hello["user_id"], a["user"]["id"]);
    assert!(hello["session_id"].as_str().unwrap().len() >= 16);
    assert_eq!(hello["heartbeat_ms"], 25_000);
    assert_eq!(hello["limits"]["max_body"], 8192);
    assert_eq!(hello["limits"]["max_frame"], 65536);
    ws.send(json!({"op":"ping","t":42})).await;
    assert_eq!(ws.event().await, json!({"op":"pong","t":42}));
}

#[tokio::test]
async fn a_message_is_acked_then_delivered_to_every_session_of_every_member() {
    let n = TestNode::start().await;
    let (a, b, c) = (n.signup("alice").await, n.signup("bob").await, n.signup("carol").await);
    let id = n.group(&a, &[&b]).await;
    let mut a1 = n.ws(&a).await;
    let mut a2 = n.ws(&a).await;
    let mut b1 = n.ws(&b).await;
    let mut b2 = n.ws(&b).await;
    let mut outsider = n.ws(&c).await;

    a1.send(json!({"op":"send","conv":id,"client_id":"c-1","body":"hello team"})).await;
    let ack = loop {
        let e = a1.event().await;
        assert_ne!(e["op"], "msg", "the ack comes before the message");
        if e["op"] == "ack" {
            break e;
        }
    };

    assert_eq!(ack["client_id"], "c-1");
    assert_eq!(ack["conv"], id.as_str());
    assert_eq!(ack["seq"], 1);
    assert!(ack["ts"].as_i64().unwrap() > 0);
    for ws in [&mut a1, &mut a2, &mut b1, &mut b2] {
        let m = ws.expect_op("msg").await;
        assert_eq!(m["id"], ack["id"]);
        assert_eq!(m["seq"], 1);
        assert_eq!(m["sender"], a["user"]["id"]);
        assert_eq!(m["body"], "hello team");
        assert_eq!(m["conv"], id.as_str());
        assert_eq!(m["client_id"], "c-1");
    }
    outsider.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn without_echo_the_sending_session_gets_the_ack_alone_and_its_user_counts_as_delivered() {
    let n = TestNode::start().await;
    let (a, b) = (n.signup("alice").await, n.signup("bob").await);
    let id = n.group(&a, &[&b]).await;
    let mut a1 = n.ws(&a).await;
    let mut a2 = n.ws(&a).await;
    let mut b1 = n.ws(&b).await;

    a1.send(json!({"op":"send","conv":id,"client_id":"quiet","body":"no echo","echo":false})).await;
    let ack = a1.expect_op("ack").await;
    for ws in [&mut a2, &mut b1] {
        let m = ws.expect_op("msg").await;
        assert_eq!((&m["id"], &m["body"]), (&ack["id"], &json!("no echo")));
    }
    a1.expect_silence(Duration::from_millis(300)).await;

    // The default echoes: the same session gets its ack, then the message.
    a1.send(json!({"op":"send","conv":id,"client_id":"loud","body":"echo"})).await;
    a1.expect_op("ack").await;
    assert_eq!(a1.expect_op("msg").await["body"], "echo");

    // Alone online, the sender's ack is the delivery: its cursor moves without a `msg`.
    drop((a2, b1));
    a1.send(json!({"op":"send","conv":id,"client_id":"alone","body":"acked","echo":false})).await;
    assert_eq!(a1.expect_op("ack").await["seq"], 3);
    eventually("alice's delivery cursor", || async {
        n.node().app.store.cursor(uid(&a), &id).await.unwrap().delivered_seq == 3
    })
    .await;
    a1.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn seq_strictly_increases_under_concurrent_senders() {
    let n = TestNode::start().await;
    let (a, b) = (n.signup("alice").await, n.signup("bob").await);
    let id = n.group(&a, &[&b]).await;
    let mut reader = n.ws(&b).await;
    let mut tasks = Vec::new();
    for (who, s) in [("a", a.clone()), ("b", b.clone())] {
        let mut ws = n.ws(&s).await;
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            // Pipelined: all sends first, then all acks.
            for i in 0..50 {
                ws.send(json!({"op":"send","conv":id,"client_id":format!("{who}{i}"),"body":format!("{who} {i}")}))
                    .await;
            }
            let mut acks = 0;
            while acks < 50 {
                if ws.event().await["op"] == "ack" {
                    acks += 1;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut last = 0;
    let mut seen = 0;
    while seen < 100 {
        let e = reader.event().await;
        if e["op"] == "msg" {
            let seq = e["seq"].as_u64().unwrap();
            assert!(seq > last, "seq {seq} after {last}");
            last = seq;
            seen += 1;
        }
    }
    assert_eq!(last, 100);
}

#[tokio::test]
async fn a_repeated_client_id_returns_the_original_ack_and_stores_nothing() {
    let n = TestNode::start().await;
    let (a, b) = (n.signup("alice").await, n.signup("bob").await);
    let id = n.group(&a, &[&b]).await;
    let mut ws = n.ws(&a).await;
    let first = ws.send_msg(&id, "same", "once").await;
    ws.expect_op("msg").await;
    let again = ws.send_msg(&id, "same", "once").await;
    assert_eq!(first, again);
    // Pipelined duplicates while the first is in flight get the same ack too.
    for _ in 0..3 {
        ws.send(json!({"op":"send","conv":id,"client_id":"burst","body":"x"})).await;
    }
    let mut acks = Vec::new();
    while acks.len() < 3 {
        let e = ws.event().await;
        if e["op"] == "ack" {
            acks.push(e);
        }
    }
    assert!(acks.iter().all(|a| a == &acks[0]));
    // The same client_id from another user is a different message.
    let mut bws = n.ws(&b).await;
    let other = bws.send_msg(&id, "same", "bob's").await;
    assert_ne!(other["id"], first["id"]);
    let (_, page) = n.get(&format!("/api/conversations/{id}/messages"), tok(&a)).await;
    let bodies: Vec<&str> = page["messages"].as_array().unwrap().iter().map(|m| m["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, vec!["once", "x", "bob's"]);
    // Over HTTP as well.
    let path = format!("/api/conversations/{id}/messages");
    let (s1, m1) = n.post(&path, Some(tok(&a)), json!({"client_id":"http-1","body":"via http"})).await;
    let (s2, m2) = n.post(&path, Some(tok(&a)), json!({"client_id":"http-1","body":"via http"})).await;
    assert_eq!((s1, s2), (201, 201));
    assert_eq!(m1["id"], m2["id"]);
    assert_eq!(m1["seq"], 4);
}

/// A conversation remembers its latest 512 `client_id`s and, in a filter, the older ones it
/// sent: a new `client_id` needs no read of the store's dedupe index, and an old one sent again
/// is found there and answered with its original ack.
#[tokio::test]
async fn client_ids_past_the_memory_window_are_deduplicated_and_new_ones_read_nothing() {
    let n = TestNode::start_with(|c| c.send_rate_limit = 0.0).await;
    let (a, b) = (n.signup("alice").await, n.signup("bob").await);
    let id = n.group(&a, &[&b]).await;
    let mut ws = n.ws(&a).await;
    const SENDS: usize = 700;
    for i in 0..SENDS {
        ws.send(json!({"op":"send","conv":id,"client_id":format!("c-{i}"),"body":format!("m{i}")})).await;
    }
    let mut acks = std::collections::HashMap::new();
    while acks.len() < SENDS {
        let e = ws.event().await;
        assert_ne!(e["op"], "error", "{e}");
        if e["op"] == "ack" {
            acks.insert(e["client_id"].as_str().unwrap().to_string(), e);
        }
    }
    let lookups = |text: String| count_or_zero(&text, DEDUPE_READS);
    assert_eq!(lookups(n.metrics().await), 0, "{SENDS} new client_ids read the dedupe index");
    // The first ones left the in-memory window long ago.
    for i in 0..5 {
        let again = ws.send_msg(&id, &format!("c-{i}"), "again").await;
        assert_eq!(again, acks[&format!("c-{i}")]);
    }
    assert_eq!(lookups(n.metrics().await), 5, "each old client_id was looked up once");
    let (_, page) = n.get(&format!("/api/conversations/{id}/messages?limit=10"), tok(&a)).await;
    let messages = page["messages"].as_array().unwrap();
    assert_eq!(messages.last().unwrap()["seq"], SENDS as u64, "nothing new was stored");
    assert!(messages.iter().all(|m| m["body"] != "again"));
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused_and_not_stored() {
    let n = TestNode::start_with(|c| c.max_body = 100).await;
    let (a, b) = (n.signup("alice").await, n.signup("bob").await);
    let id = n.group(&a, &[&b]).await;
    let mut ws = n.ws(&a).await;
    let e = ws.send_msg(&id, "big", &"x".repeat(101)).await;
    assert_eq!(e["op"], "error");
    assert_eq!(e["code"], "too_large");
    let e = ws.send_msg(&id, "empty", "   ").await;
    assert_eq!(e["code"], "bad_request");
    let ok = ws.send_msg(&id, "fits", &"x".repeat(100)).await;
    assert_eq!(ok["op"], "ack");
    assert_eq!(ok["seq"], 1, "refused sends took no seq");
    let (status, body) = n
        .post(
            &format!("/api/conversations/{id}/messages"),
            Some(tok(&a)),
            json!({"client_id":"h","body":"y".repeat(101)}),
        )
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (413, Some("too_large")));
}

#[tokio::test]
async fn an_offline_member_catches_up_through_sync_in_order() {
    let n = TestNode::start().await;
    let (a, b) = (n.signup("alice").await, n.signup("bob").await);
    let g1 = n.group(&a, &[&b]).await;
    let g2 = n.group(&a, &[&b]).await;
    let mut bws = n.ws(&b).await;
    let mut aws = n.ws(&a).await;
    aws.send_msg(&g1, "k0", "seen live").await;
    let live = bws.expect_op("msg").await;
    assert_eq!(live["body"], "seen live");
    // The delivery cursor is written in the background: wait until it is stored.
    eventually("bob's delivery cursor", || async {
        let store = &n.node().app.store;
        store.cursor(uid(&b), &g1).await.unwrap().delivered_seq == 1
    })
    .await;
    drop(bws);

    for i in 1..=5 {
        aws.send_msg(&g1, &format!("k{i}"), &format!("missed {i}")).await;
    }
    aws.send_msg(&g2, "other", "in g2").await;

    let mut bws = n.ws(&b).await;
    bws.send(json!({"op":"sync"})).await;
    let mut got = Vec::new();
    let synced = loop {
        let e = bws.event().await;
        match e["op"].as_str().unwrap() {
            "msg" => got.push((
                e["conv"].as_str().unwrap().to_string(),
                e["seq"].as_u64().unwrap(),
                e["body"].as_str().unwrap().to_string(),
            )),
            "synced" => break e,
            other => panic!("unexpected {other}"),
        }
    };
    let g1_msgs: Vec<_> = got.iter().filter(|m| m.0 == g1).map(|m| (m.1, m.2.clone())).collect();
    assert_eq!(
        g1_msgs,
        (2..=6).map(|s| (s, format!("missed {}", s - 1))).collect::<Vec<_>>(),
        "only what was missed, in order"
    );
    assert_eq!(got.iter().filter(|m| m.0 == g2).count(), 1);
    assert_eq!(synced["convs"][&g1], 6);
    assert_eq!(synced["convs"][&g2], 1);
    assert_eq!(synced["has_more"][&g1], false);

    // An explicit `since` replays from there.
    bws.send(json!({"op":"sync","since":{g1.clone(): 4}})).await;
    let mut seqs = Vec::new();
    loop {
        let e = bws.event().await;
        if e["op"] == "synced" {
            break;
        }
        if e["conv"] == g1.as_str() {
            seqs.push(e["seq"].as_u64().unwrap());
        }
    }
    assert_eq!(seqs, vec![5, 6]);

    // A replayed message is the event its live delivery was, field for field.
    bws.send(json!({"op":"sync","since":{g1.clone(): 0}})).await;
    let replayed = bws.expect_op("msg").await;
    assert_eq!(replayed, live);
}

#[tokio::test]
async fn sync_pages_with_has_more() {
    let n = TestNode::start_with(|c| c.send_rate_limit = 0.0).await;
    let (a, b) = (n.signup("alice").await, n.signup("bob").await);
    let id = n.group(&a, &[&b]).await;
    let mut aws = n.ws(&a).await;
    for i in 0..520 {
        aws.send(json!({"op":"send","conv":id,"client_id":format!("k{i}"),"body":"x"})).await;
    }
    let mut acks = 0;
    while acks < 520 {
        if aws.event().await["op"] == "ack" {
            acks += 1;
        }
    }
    let mut bws = n.ws(&b).await;
    bws.send(json!({"op":"sync","since":{id.clone(): 0}})).await;
    let synced = bws.expect_op("synced").await;
    assert_eq!(synced["convs"][&id], 500);
    assert_eq!(synced["has_more"][&id], true);
    bws.send(json!({"op":"sync","since":{id.clone(): 500}})).await;
    let mut n_msgs = 0;
    let synced = loop {
        let e = bws.event().await;
        if e["op"] == "synced" {
            break e;
        }
        n_msgs += 1;
    };
    assert_eq!(n_msgs, 20);
    assert_eq!(synced["has_more"][&id], false);
}

#[tokio::test]
async fn reads_raise_cursors_and_emit_coalesced_receipts() {
    let n = TestNode::start().await;
    let (a, b) = (n.signup("alice").await, n.signup("bob").await);
    let id = n.group(&a, &[&b]).await;
    let mut aws = n.ws(&a).await;
    for i in 0..5 {
        aws.send_msg(&id, &format!("k{i}"), "x").await;
    }
    let mut bws = n.ws(&b).await;
    // A burst of reads becomes one receipt with the highest seq.
    for seq in 1..=5 {
        bws.send(json!({"op":"read","conv":id,"seq":seq})).await;
    }
    let r = aws.expect_op("receipt").await;
    assert_eq!(r["conv"], id.as_str());
    assert_eq!(r["user_id"], b["user"]["id"]);
    assert_eq!(r["read_seq"], 5);
    assert_eq!(bws.expect_op("receipt").await["read_seq"], 5, "the reader's sessions get it too");
    // Reading past the end is clamped; cursors never go back.
    bws.send(json!({"op":"read","conv":id,"seq":99})).await;
    bws.send(json!({"op":"read","conv":id,"seq":2})).await;
    aws.expect_silence(Duration::from_millis(400)).await;
    let store = &n.node().app.store;
    eventually("read cursor", || async { store.cursor(uid(&b), &id).await.unwrap().read_seq == 5 }).await;
    let c = store.cursor(uid(&b), &id).await.unwrap();
    assert_eq!(c.delivered_seq, 5, "reading implies delivery");
}

#[tokio::test]
async fn messages_to_a_member_who_joins_later_and_leaves() {
    let n = TestNode::start().await;
    let (a, b) = (n.signup("alice").await, n.signup("bob").await);
    let id = n.group(&a, &[]).await;
    let mut aws = n.ws(&a).await;
    let mut bws = n.ws(&b).await;
    aws.send_msg(&id, "k1", "before bob").await;
    let (s, _) =
        n.post(&format!("/api/conversations/{id}/members"), Some(tok(&a)), json!({"user_ids":[uid(&b)]})).await;
    assert_eq!(s, 200);
    assert_eq!(bws.expect_op("conv").await["conversation"]["id"], id.as_str());
    aws.send_msg(&id, "k2", "with bob").await;
    assert_eq!(bws.expect_op("msg").await["body"], "with bob");
    assert_eq!(n.delete(&format!("/api/conversations/{id}/members/{}", uid(&b)), tok(&b)).await.0, 204);
    bws.expect_op("conv").await;
    aws.send_msg(&id, "k3", "after bob").await;
    let e = bws.send_msg(&id, "b1", "can I?").await;
    assert_eq!(e["code"], "not_member");
    let mut seen = HashSet::new();
    while let Some(Next::Event(e)) = bws.next_within(Duration::from_millis(300)).await {
        seen.insert(e["body"].to_string());
    }
    assert!(!seen.contains("\"after bob\""));
}

#[tokio::test]
async fn history_cursors_and_tokens_survive_a_graceful_restart() {
    let n = TestNode::start().await;
    let (a, b) = (n.signup("alice").await, n.signup("bob").await);
    let id = n.group(&a, &[&b]).await;
    let mut aws = n.ws(&a).await;
    for i in 1..=3 {
        aws.send_msg(&id, &format!("k{i}"), &format!("m{i}")).await;
    }
    let mut bws = n.ws(&b).await;
    bws.send(json!({"op":"read","conv":id,"seq":2})).await;
    bws.expect_op("receipt").await;
    drop((aws, bws));
    let config = crate::support::test_config(n.dir.path());
    let dir = n.stop().await;
    let n = TestNode::start_in(dir, config).await;
    let (status, page) = n.get(&format!("/api/conversations/{id}/messages"), tok(&b)).await;
    assert_eq!(status, 200, "the access token is still valid");
    assert_eq!(page["messages"].as_array().unwrap().len(), 3);
    let (_, list) = n.get("/api/conversations", tok(&b)).await;
    assert_eq!(list["conversations"][0]["read_seq"], 2);
    assert_eq!(list["conversations"][0]["unread"], 1);
    let mut aws = n.ws(&a).await;
    assert_eq!(aws.send_msg(&id, "k4", "m4").await["seq"], 4);
}
