//! Actor supervision: a crashed conversation actor restarts from the store, a crashed session
//! affects nobody else, idle conversation actors stop and come back on demand, quiet sessions
//! hibernate and wake.

use std::time::Duration;

use rookery_actors::{ConvMsg, SessionMsg};

use crate::support::*;

#[tokio::test]
async fn a_conversation_actor_that_panics_restarts_and_history_is_intact() {
    let n = TestNode::start().await;
    let (a, b) = (n.signup("alice").await, n.signup("bob").await);
    let id = n.group(&a, &[&b]).await;
    let mut aws = n.ws(&a).await;
    let mut bws = n.ws(&b).await;
    for i in 1..=3 {
        assert_eq!(aws.send_msg(&id, &format!("k{i}"), &format!("m{i}")).await["seq"], i);
    }
    let hub = &n.node().app.hub;
    hub.router.route(&id, ConvMsg::InjectPanic).await.unwrap();
    eventually("the restart to be counted", || async {
        metric(&n.metrics().await, "rookery_actor_restarts_total{kind=\"conversation\"}") == 1.0
    })
    .await;
    // The next send works and continues the sequence; the duplicate of an old one is recognised.
    let ack = aws.send_msg(&id, "k4", "after the crash").await;
    assert_eq!(ack["op"], "ack");
    assert_eq!(ack["seq"], 4);
    assert_eq!(aws.send_msg(&id, "k2", "m2").await["seq"], 2, "dedupe survives the restart");
    loop {
        let m = bws.expect_op("msg").await;
        if m["seq"] == 4 {
            assert_eq!(m["body"], "after the crash");
            break;
        }
    }
    let (_, page) = n.get(&format!("/api/conversations/{id}/messages"), tok(&b)).await;
    let seqs: Vec<u64> = page["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4]);
}

#[tokio::test]
async fn a_crashed_session_never_affects_another() {
    let n = TestNode::start().await;
    let (a, b) = (n.signup("alice").await, n.signup("bob").await);
    let id = n.group(&a, &[&b]).await;
    let mut victim = n.ws_raw(tok(&a)).await.unwrap();
    let victim_id = victim.expect_op("hello").await["session_id"].as_str().unwrap().to_string();
    let mut survivor = n.ws(&a).await;
    let mut bws = n.ws(&b).await;
    let hub = n.node().app.hub.clone();
    // `hello` is queued before the session's first actor has started: wait until it is recorded.
    eventually("the session's actor to start", || async { hub.session_actors.contains_key(victim_id.as_str()) }).await;
    let actor = hub.session_actors.get(victim_id.as_str()).unwrap().clone();
    actor.cast(SessionMsg::InjectPanic).unwrap();
    assert_eq!(victim.expect_close().await, 1011);
    let ack = survivor.send_msg(&id, "k1", "still here").await;
    assert_eq!(ack["op"], "ack");
    assert_eq!(bws.expect_op("msg").await["body"], "still here");
    eventually("the crash to be counted", || async {
        metric(&n.metrics().await, "rookery_actor_restarts_total{kind=\"session\"}") == 1.0
    })
    .await;
    eventually("the crashed session to leave the registry", || async { hub.sessions.of_user(uid(&a)).len() == 1 })
        .await;
}

#[tokio::test]
async fn idle_conversation_actors_stop_and_start_again_on_demand() {
    let n = TestNode::start_with(|c| c.conv_idle = Duration::from_secs(1)).await;
    let (a, b) = (n.signup("alice").await, n.signup("bob").await);
    let id = n.group(&a, &[&b]).await;
    let mut aws = n.ws(&a).await;
    aws.send_msg(&id, "k1", "one").await;
    let hub = n.node().app.hub.clone();
    assert_eq!(hub.router.running(), 1);
    assert_eq!(metric(&n.metrics().await, "rookery_groups_active"), 1.0);
    eventually("the idle actor to stop", || async { hub.router.running() == 0 }).await;
    eventually("the gauge to drop", || async { metric(&n.metrics().await, "rookery_groups_active") == 0.0 }).await;
    let ack = aws.send_msg(&id, "k2", "two").await;
    assert_eq!(ack["seq"], 2, "a new actor continues from the store");
    assert_eq!(hub.router.running(), 1);
    assert_eq!(aws.send_msg(&id, "k1", "one").await["seq"], 1, "dedupe reaches the store");
}

/// An actor that retires knowing every `client_id` of its conversation leaves them to the next
/// one: new `client_id`s still need no read of the store's dedupe index, old ones still dedupe.
#[tokio::test]
async fn a_restarted_conversation_actor_takes_over_its_predecessors_client_ids() {
    let n = TestNode::start_with(|c| c.conv_idle = Duration::from_secs(1)).await;
    let (a, b) = (n.signup("alice").await, n.signup("bob").await);
    let id = n.group(&a, &[&b]).await;
    let mut aws = n.ws(&a).await;
    for k in ["k1", "k2", "k3"] {
        aws.send_msg(&id, k, k).await;
    }
    let hub = n.node().app.hub.clone();
    eventually("the idle actor to stop", || async { hub.router.running() == 0 }).await;
    assert_eq!(hub.handovers.len(), 1, "the retired actor left its client_ids");
    let lookups = || async { count_or_zero(&n.metrics().await, DEDUPE_READS) };
    assert_eq!(aws.send_msg(&id, "k4", "four").await["seq"], 4);
    assert_eq!(hub.handovers.len(), 0, "the new actor took them");
    assert_eq!(lookups().await, 0, "a new client_id after the restart read the dedupe index");
    assert_eq!(aws.send_msg(&id, "k2", "again").await["seq"], 2, "an old client_id still dedupes");
    assert_eq!(lookups().await, 1);
}

#[tokio::test]
async fn conversations_cold_started_at_once_each_get_one_actor_and_answer_every_send() {
    let n = TestNode::start().await;
    let (a, b, c) = (n.signup("alice").await, n.signup("bob").await, n.signup("carol").await);
    let mut convs = Vec::new();
    for _ in 0..6 {
        convs.push(n.group(&a, &[&b, &c]).await);
    }
    let hub = n.node().app.hub.clone();
    assert_eq!(hub.router.running(), 0, "conversations start on their first message");
    // Six sessions (two per user) each send to every conversation without waiting: the starts
    // race, both across conversations and within each.
    let mut sessions = Vec::new();
    for user in [&a, &b, &c, &a, &b, &c] {
        sessions.push(n.ws(user).await);
    }
    for (s, ws) in sessions.iter_mut().enumerate() {
        for (i, conv) in convs.iter().enumerate() {
            ws.send(serde_json::json!({"op":"send","conv":conv,"client_id":format!("s{s}c{i}"),"body":"first"})).await;
        }
    }
    let mut seqs: Vec<Vec<u64>> = vec![Vec::new(); convs.len()];
    for ws in &mut sessions {
        let mut acked = 0;
        while acked < convs.len() {
            let e = ws.event().await;
            assert_ne!(e["op"], "error", "{e}");
            if e["op"] == "ack" {
                let i = convs.iter().position(|c| e["conv"] == c.as_str()).expect("a known conversation");
                seqs[i].push(e["seq"].as_u64().unwrap());
                acked += 1;
            }
        }
    }
    for mut s in seqs {
        s.sort_unstable();
        assert_eq!(s, (1..=6).collect::<Vec<_>>(), "one actor per conversation numbers its sends 1..6");
    }
    assert_eq!(hub.router.running(), convs.len());
    let m = n.metrics().await;
    assert_eq!(metric(&m, "rookery_groups_active"), convs.len() as f64);
    assert_eq!(metric(&m, "rookery_conversation_start_seconds_count"), convs.len() as f64, "one start each");
}

/// Opens a WebSocket and returns it with its session id.
async fn ws_with_id(n: &TestNode, session: &serde_json::Value) -> (Ws, String) {
    let mut ws = n.ws_raw(tok(session)).await.unwrap();
    let id = ws.expect_op("hello").await["session_id"].as_str().unwrap().to_string();
    (ws, id)
}

async fn hibernating(n: &TestNode) -> f64 {
    metric(&n.metrics().await, "rookery_sessions_hibernating")
}

#[tokio::test]
async fn a_quiet_session_hibernates_keeps_sending_and_receiving_and_wakes_for_a_sync() {
    let n = TestNode::start_with(|c| c.session_hibernate = Some(Duration::from_millis(200))).await;
    let (a, b) = (n.signup("alice").await, n.signup("bob").await);
    let id = n.group(&a, &[&b]).await;
    let (mut aws, alice) = ws_with_id(&n, &a).await;
    let (mut bws, _) = ws_with_id(&n, &b).await;
    assert_eq!(aws.send_msg(&id, "k1", "one").await["seq"], 1);
    let hub = n.node().app.hub.clone();
    eventually("both sessions to hibernate", || async { hibernating(&n).await == 2.0 }).await;
    // The gauge counts a hibernation when the actor has answered; it leaves the books as it stops.
    eventually("the hibernated actors to stop", || async { hub.session_actors.is_empty() }).await;
    assert_eq!(metric(&n.metrics().await, "rookery_sessions_active"), 2.0, "both sessions stay open");

    // Deliveries reach a hibernating session: they never pass through its actor.
    assert_eq!(bws.send_msg(&id, "k2", "two").await["seq"], 2);
    loop {
        let e = aws.event().await;
        if e["op"] == "msg" && e["seq"] == 2 {
            assert_eq!(e["body"], "two");
            break;
        }
    }
    assert!(!hub.session_actors.contains_key(alice.as_str()), "receiving does not wake a session");

    // Frames for a conversation, and pings, are handled by the connection's reader, in the
    // order they were sent, without waking the actor.
    for i in 3..=5 {
        aws.send(serde_json::json!({"op":"send","conv":id,"client_id":format!("k{i}"),"body":"x"})).await;
    }
    aws.send(serde_json::json!({"op":"typing","conv":id,"active":true})).await;
    aws.send(serde_json::json!({"op":"ping","t":1})).await;
    let (mut acked, mut ponged) = (Vec::new(), false);
    while acked.len() < 3 || !ponged {
        let e = aws.event().await;
        match e["op"].as_str() {
            Some("ack") => acked.push(e["seq"].as_u64().unwrap()),
            // Decided as the frame is read, it may overtake the acks (docs/protocol.md 4.7).
            Some("pong") => ponged = true,
            _ => {}
        }
    }
    assert_eq!(acked, vec![3, 4, 5]);
    assert_eq!(bws.expect_op("typing").await["user_id"], a["user"]["id"]);
    assert!(!hub.session_actors.contains_key(alice.as_str()), "sending does not wake a session");
    assert_eq!(hibernating(&n).await, 2.0);

    // A frame for the actor wakes it.
    aws.send(serde_json::json!({"op":"sync","since":{}})).await;
    aws.expect_op("synced").await;
    assert_eq!(hibernating(&n).await, 1.0, "the sync woke alice's actor");

    // Closing a connection ends its session whether its actor runs or hibernates.
    eventually("alice to hibernate again", || async { !hub.session_actors.contains_key(alice.as_str()) }).await;
    drop(aws);
    drop(bws);
    eventually("the sessions to close", || async { hub.sessions.is_empty() }).await;
    let text = n.metrics().await;
    assert_eq!(metric(&text, "rookery_sessions_active"), 0.0);
    assert_eq!(metric(&text, "rookery_sessions_hibernating"), 0.0);
}

#[tokio::test]
async fn a_hibernating_session_keeps_its_rate_limits() {
    let n = TestNode::start_with(|c| {
        c.session_hibernate = Some(Duration::from_millis(200));
        // One send per 20 s: the bucket cannot refill while the test waits.
        c.send_rate_limit = 0.05;
    })
    .await;
    let (a, b) = (n.signup("alice").await, n.signup("bob").await);
    let id = n.group(&a, &[&b]).await;
    let mut aws = n.ws(&a).await;
    assert_eq!(aws.send_msg(&id, "k1", "one").await["op"], "ack");
    assert_eq!(aws.send_msg(&id, "k2", "two").await["code"], "rate_limited");
    eventually("the session to hibernate", || async { hibernating(&n).await == 1.0 }).await;
    let e = aws.send_msg(&id, "k3", "three").await;
    assert_eq!(e["code"], "rate_limited", "a hibernating session still has an empty bucket: {e}");
    assert_eq!(hibernating(&n).await, 1.0, "a send needs no session actor");
    // Nor does waking the actor reset the limits.
    aws.send(serde_json::json!({"op":"presence","users":[b["user"]["id"]]})).await;
    aws.expect_op("presence").await;
    assert_eq!(hibernating(&n).await, 0.0, "the presence query woke it");
    assert_eq!(aws.send_msg(&id, "k4", "four").await["code"], "rate_limited");
}

#[tokio::test]
async fn sessions_do_not_hibernate_when_it_is_turned_off() {
    let n = TestNode::start_with(|c| c.session_hibernate = None).await;
    let a = n.signup("alice").await;
    let (_aws, alice) = ws_with_id(&n, &a).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(n.node().app.hub.session_actors.contains_key(alice.as_str()));
    assert_eq!(hibernating(&n).await, 0.0);
}
