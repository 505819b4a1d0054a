//! Cluster mode over a real Redis: membership, placement with fencing, cross-node delivery of
//! every kind of event, a node killed mid-traffic, Redis restarted mid-traffic, and the
//! `dev-cluster` command.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::cluster_support::{free_port, shared_redis, unique_prefix, OwnRedis, TestCluster};
use crate::support::{eventually, tok, uid, Next, TestNode, Ws, PATIENCE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_converges_on_join_leave_and_death() {
    let mut c = TestCluster::start("membership", 3).await;
    assert_eq!(c.view_of(0).await, vec!["c-1", "c-2", "c-3"]);
    let body = c.admin_get(1, "/admin/api/nodes").await;
    assert_eq!(body["mode"], "cluster");
    assert_eq!(body["self"], "c-2");
    assert_eq!(body["redis_up"], true);
    for n in body["nodes"].as_array().unwrap() {
        assert!(n["heartbeat_age_ms"].as_i64().unwrap() < 2000, "{n}");
        assert!(n["address"].as_str().unwrap().starts_with("127.0.0.1:"));
    }
    let metrics = c.node(0).metrics().await;
    assert!(metrics.contains("rookery_cluster_nodes 3"), "rookery_cluster_nodes");

    // A second process with a taken id is refused.
    let err = c.launch("c-1").await.err().expect("a duplicate node id must be refused");
    assert!(format!("{err:#}").contains("in use"), "{err:#}");

    // Silent death: noticed within the TTL plus a heartbeat (1500 + 100 ms here).
    let killed_at = Instant::now();
    c.kill(2);
    c.wait_for_view(2).await;
    let noticed = killed_at.elapsed();
    assert!(noticed < Duration::from_secs(5), "death noticed after {noticed:?}");
    assert_eq!(c.view_of(0).await, vec!["c-1", "c-2"]);

    // The dead node comes back with the same id and rejoins.
    let back = c.launch("c-3").await.expect("a node declared dead rejoins with its id");
    c.members[2] = back;
    c.wait_for_view(3).await;

    // Clean leave: gone from the views at once (no TTL wait).
    let left_at = Instant::now();
    c.stop(1).await;
    c.wait_for_view(2).await;
    assert!(left_at.elapsed() < Duration::from_secs(2));
    assert_eq!(c.view_of(2).await, vec!["c-1", "c-3"]);
    assert!(c.node(0).metrics().await.contains("rookery_cluster_nodes 2"));
}

/// Signs up a user through node `i` and connects them to node `j`.
async fn user_on(c: &TestCluster, name: &str, via: usize) -> (Value, Ws) {
    let session = c.node(via).signup(name).await;
    let ws = c.node(via).ws(&session).await;
    (session, ws)
}

/// Reads events until a `msg` of `conv` arrives; returns it.
async fn next_msg(ws: &mut Ws, conv: &str) -> Value {
    loop {
        let e = ws.event().await;
        if e["op"] == "msg" && e["conv"] == conv {
            return e;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_crosses_nodes() {
    let c = TestCluster::start("routing", 3).await;
    let (alice, mut wa) = user_on(&c, "alice", 0).await;
    let (bob, mut wb) = user_on(&c, "bob", 1).await;
    let (carol, mut wc) = user_on(&c, "carol", 2).await;
    // Several groups, so that the owners cover more than one node.
    let mut convs = Vec::new();
    for _ in 0..6 {
        convs.push(c.node(0).group(&alice, &[&bob, &carol]).await);
    }
    let mut owners = HashSet::new();
    for conv in &convs {
        owners.insert(c.owner_of(conv).await);
    }
    assert!(owners.len() >= 2, "six conversations all placed on one node: {owners:?}");

    // Sends from sessions on every node, to conversations owned anywhere, reach everyone once,
    // in seq order. (Messages that arrive while a sender waits for its ack are kept.)
    let mut inbox: [Vec<Value>; 3] = Default::default();
    for conv in &convs {
        let mut expected = Vec::new();
        for (i, ws) in [&mut wa, &mut wb, &mut wc].into_iter().enumerate() {
            let cid = format!("{conv}-{i}");
            ws.send(json!({"op":"send","conv":conv,"client_id":cid,"body":"hello across nodes"})).await;
            loop {
                let e = ws.event().await;
                if e["op"] == "msg" {
                    inbox[i].push(e);
                } else if e["client_id"] == cid.as_str() {
                    assert_eq!(e["op"], "ack", "{e}");
                    expected.push(e["seq"].as_u64().unwrap());
                    break;
                }
            }
        }
        assert!(expected[0] < expected[1] && expected[1] < expected[2]);
        for (i, ws) in [&mut wa, &mut wb, &mut wc].into_iter().enumerate() {
            while inbox[i].iter().filter(|m| m["conv"] == conv.as_str()).count() < 3 {
                inbox[i].push(next_msg(ws, conv).await);
            }
            let got: Vec<u64> =
                inbox[i].iter().filter(|m| m["conv"] == conv.as_str()).map(|m| m["seq"].as_u64().unwrap()).collect();
            assert_eq!(got, expected, "member {i} sees every message once, in order");
        }
    }
    // Without echo, across nodes: the sending session gets its ack alone; the sender's session
    // on another node and the other members get the message, from an owner elsewhere.
    let mut far = None;
    for conv in &convs {
        if c.owner_of(conv).await != 0 {
            far = Some(conv.clone());
            break;
        }
    }
    let far = far.expect("a conversation owned off node 0");
    let mut wa2 = c.node(1).ws(&alice).await;
    wa.send(json!({"op":"send","conv":far,"client_id":"quiet","body":"no echo","echo":false})).await;
    let ack = wa.expect_op("ack").await;
    for ws in [&mut wa2, &mut wb, &mut wc] {
        assert_eq!(next_msg(ws, &far).await["id"], ack["id"]);
    }
    wa.expect_silence(Duration::from_millis(500)).await;
    drop(wa2);

    // An HTTP send through a node that does not own the conversation.
    let conv = &convs[0];
    let owner = c.owner_of(conv).await;
    let other = (owner + 1) % 3;
    let who = [&alice, &bob, &carol][other];
    let (s, body) = c
        .node(other)
        .post(
            &format!("/api/conversations/{conv}/messages"),
            Some(tok(who)),
            json!({"client_id":"http-1","body":"over http"}),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    for ws in [&mut wa, &mut wb, &mut wc] {
        assert_eq!(next_msg(ws, conv).await["id"], body["id"]);
    }
    // A retried HTTP send is deduplicated by the owner whichever node it comes through.
    let (s2, again) = c
        .node((other + 1) % 3)
        .post(
            &format!("/api/conversations/{conv}/messages"),
            Some(tok(who)),
            json!({"client_id":"http-1","body":"over http"}),
        )
        .await;
    assert!(s2 == 200 || s2 == 201, "{again}");
    assert_eq!(again["id"], body["id"]);

    // Edit from another node.
    let (s, edited) = c
        .node((owner + 2) % 3)
        .patch(
            &format!("/api/conversations/{conv}/messages/{}", body["id"].as_str().unwrap()),
            tok(who),
            json!({"body":"edited"}),
        )
        .await;
    assert_eq!(s, 200, "{edited}");
    assert_eq!(wa.expect_op("edited").await["body"], "edited");

    // Typing and read receipts.
    wa.send(json!({"op":"typing","conv":conv,"active":true})).await;
    let t = wb.expect_op("typing").await;
    assert_eq!(t["user_id"], uid(&alice));
    let t = wc.expect_op("typing").await;
    assert_eq!(t["user_id"], uid(&alice));
    wb.send(json!({"op":"read","conv":conv,"seq":2})).await;
    loop {
        let r = wa.expect_op("receipt").await;
        if r["user_id"] == uid(&bob) {
            assert_eq!(r["read_seq"], 2);
            break;
        }
    }

    // Presence: a session on another node counts.
    wa.send(json!({"op":"presence","users":[uid(&bob), uid(&carol)]})).await;
    let p1 = wa.expect_op("presence").await;
    let p2 = wa.expect_op("presence").await;
    assert_eq!((p1["status"].as_str(), p2["status"].as_str()), (Some("online"), Some("online")), "{p1} {p2}");

    // Calls between nodes: offer on c-1, answer on c-2, ICE, end; the log lands in the direct conversation.
    let call = "call-x1";
    wa.send(json!({"op":"call.offer","to":uid(&bob),"call_id":call,"sdp":"offer-sdp"})).await;
    let offer = wb.expect_op("call.offer").await;
    assert_eq!(offer["from"], uid(&alice));
    wb.send(json!({"op":"call.answer","to":uid(&alice),"call_id":call,"sdp":"answer-sdp"})).await;
    assert_eq!(wa.expect_op("call.answer").await["sdp"], "answer-sdp");
    wb.send(json!({"op":"call.ice","to":uid(&alice),"call_id":call,"candidate":{"c":"1"}})).await;
    assert_eq!(wa.expect_op("call.ice").await["candidate"]["c"], "1");
    wa.send(json!({"op":"call.end","to":uid(&bob),"call_id":call})).await;
    wb.expect_op("call.end").await;
    let log = wb.expect_op("msg").await;
    assert_eq!(log["attachments"][0]["kind"], "call", "{log}");

    // Moderation: a ban made on c-1's console closes carol's session on c-3, and c-3 refuses her.
    let admin = c.config.admin_token.clone().unwrap();
    let r = c
        .node(0)
        .http
        .post(format!("{}/admin/api/users/{}/ban", c.node(0).admin_base, uid(&carol)))
        .bearer_auth(&admin)
        .json(&json!({"reason":"spam"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    assert_eq!(wc.expect_close().await, 4003);
    let again = c.node(2).ws_raw(tok(&carol)).await;
    match again {
        Err(_) => {}
        Ok(mut ws) => assert_eq!(ws.expect_close().await, 4003, "a banned user is refused on every node"),
    }
    // An account deleted on c-1's console: dave's session on c-3 closes with 4001 and c-3
    // refuses his token.
    let (dave, mut wd) = user_on(&c, "dave", 2).await;
    let r = c
        .node(0)
        .http
        .delete(format!("{}/admin/api/users/{}", c.node(0).admin_base, uid(&dave)))
        .bearer_auth(&admin)
        .json(&json!({"reason":"asked to leave"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    assert_eq!(wd.expect_close().await, 4001);
    assert_eq!(c.node(2).get("/api/users/me", tok(&dave)).await.0, 401, "a deleted account is refused on every node");

    // Cross-node traffic shows in the metrics and the console.
    let m = c.node(0).metrics().await;
    assert!(crate::support::metric(&m, "rookery_cluster_envelopes_total{direction=\"out\"}") > 0.0);
    assert!(crate::support::metric(&m, "rookery_cluster_envelopes_total{direction=\"in\"}") > 0.0);
    let nodes = c.admin_get(0, "/admin/api/nodes").await;
    assert!(nodes["traffic"]["envelopes_out"].as_u64().unwrap() > 0);
}

/// A client of the kill test: its own view of one member's stream.
struct Tally {
    /// seq -> id as received (live or through sync), for the final check.
    seen: BTreeMap<u64, String>,
    last_live: u64,
    duplicates: u64,
    reordered: u64,
}

impl Tally {
    fn new() -> Tally {
        Tally { seen: BTreeMap::new(), last_live: 0, duplicates: 0, reordered: 0 }
    }

    /// A `msg` event; `replay` when it answers a `sync` (where repeats are expected).
    fn record(&mut self, m: &Value, replay: bool) {
        let seq = m["seq"].as_u64().unwrap();
        let id = m["id"].as_str().unwrap().to_string();
        match self.seen.insert(seq, id.clone()) {
            Some(prev) if prev != id => panic!("seq {seq} carried two ids: {prev} and {id}"),
            Some(_) if !replay && seq <= self.last_live => self.duplicates += 1,
            None if seq < self.last_live => self.reordered += 1,
            _ => {}
        }
        self.last_live = self.last_live.max(seq);
    }
}

/// Reads until `synced`, recording replayed messages of `conv`.
async fn sync_into(ws: &mut Ws, conv: &str, since: u64, tally: &mut Tally) {
    ws.send(json!({"op":"sync","since":{conv: since}})).await;
    loop {
        let e = ws.event().await;
        if e["op"] == "msg" && e["conv"] == conv {
            tally.record(&e, true);
        } else if e["op"] == "synced" {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_owner_mid_traffic_loses_no_acked_message() {
    let mut c = TestCluster::start("kill", 3).await;
    let s0 = c.node(0).signup("sender0").await;
    let s1 = c.node(0).signup("sender1").await;
    let s2 = c.node(0).signup("member2").await;
    let sessions = [s0, s1, s2];
    // A conversation owned by the node we will kill (c-3).
    let mut conv = String::new();
    for _ in 0..40 {
        let id = c.node(0).group(&sessions[0], &[&sessions[1], &sessions[2]]).await;
        if c.owner_of(&id).await == 2 {
            conv = id;
            break;
        }
    }
    assert!(!conv.is_empty(), "no conversation landed on c-3 in 40 tries");
    // Member i is connected to node i: one of them to the node that dies.
    let mut clients = Vec::new();
    for (i, s) in sessions.iter().enumerate() {
        clients.push(c.node(i).ws(s).await);
    }
    let mut tallies = [Tally::new(), Tally::new(), Tally::new()];
    let mut acked: HashMap<String, (u64, String)> = HashMap::new();
    let mut unacked: Vec<(usize, String)> = Vec::new();
    let per_sender = 60;
    // Senders 0 and 1 (on surviving nodes) pipeline their sends in rounds; c-3 dies in round 3.
    for round in 0..6 {
        if round == 3 {
            c.kill(2);
        }
        for (sender, client) in clients.iter_mut().enumerate().take(2) {
            for k in 0..per_sender / 6 {
                let cid = format!("s{sender}-r{round}-{k}");
                client.send(json!({"op":"send","conv":conv,"client_id":cid,"body":cid})).await;
                unacked.push((sender, cid));
            }
        }
        // Collect acks and deliveries until each sender has an answer for every send of this round.
        let deadline = Instant::now() + PATIENCE * 2;
        let mut last_resend = Instant::now();
        while unacked.iter().any(|(_, cid)| cid.contains(&format!("-r{round}-"))) {
            assert!(Instant::now() < deadline, "no answer for {unacked:?}");
            for (i, client) in clients.iter_mut().enumerate().take(2) {
                while let Some(n) = client.next_within(Duration::from_millis(20)).await {
                    match n {
                        Next::Event(e) if e["op"] == "msg" && e["conv"] == conv.as_str() => {
                            tallies[i].record(&e, false)
                        }
                        Next::Event(e) if e["op"] == "ack" => {
                            let cid = e["client_id"].as_str().unwrap().to_string();
                            unacked.retain(|(_, u)| *u != cid);
                            acked.insert(cid, (e["seq"].as_u64().unwrap(), e["id"].as_str().unwrap().to_string()));
                        }
                        Next::Event(e) if e["op"] == "error" => {
                            // The owner died or moved with the write in flight: the resend below
                            // repeats it with the same client_id.
                            assert!(e["code"] == "unavailable" || e["code"] == "rate_limited", "{e}");
                        }
                        Next::Event(_) => {}
                        Next::Closed(code) => panic!("a surviving node closed a session with {code}"),
                    }
                }
            }
            // Sends unanswered for a while were lost with the node (or refused while the
            // conversation moved): resend them, as a client does.
            if round >= 3 && last_resend.elapsed() > Duration::from_millis(500) {
                last_resend = Instant::now();
                for (sender, cid) in unacked.clone() {
                    clients[sender].send(json!({"op":"send","conv":conv,"client_id":cid,"body":cid})).await;
                }
            }
        }
    }
    assert_eq!(acked.len(), 2 * per_sender, "every send was acked (after retries)");

    // The member that was on the dead node reconnects to a survivor and syncs from where it was.
    let mut back = c.node(0).ws(&sessions[2]).await;
    let mut late = Tally::new();
    sync_into(&mut back, &conv, 0, &mut late).await;
    // Everybody ends with a full sync. (A message its dying owner stored but never fanned out
    // shows as a gap in the live seqs; clients sync on a gap, which this stands for.)
    for (i, client) in clients.iter_mut().enumerate().take(2) {
        sync_into(client, &conv, 0, &mut tallies[i]).await;
    }
    tallies[2] = late;
    let by_seq: HashMap<u64, &String> = acked.values().map(|(seq, id)| (*seq, id)).collect();
    assert_eq!(by_seq.len(), acked.len(), "no two acks share a seq");
    for (i, t) in tallies.iter().enumerate() {
        for (seq, id) in &by_seq {
            assert_eq!(t.seen.get(seq), Some(*id), "member {i} misses acked seq {seq}");
        }
        assert_eq!((t.duplicates, t.reordered), (0, 0), "member {i}: duplicated or reordered deliveries");
    }
    // The store holds each client_id once (no duplicate under a new id) with seqs strictly rising.
    let (s, page) = c.node(0).get(&format!("/api/conversations/{conv}/messages?limit=500"), tok(&sessions[0])).await;
    assert_eq!(s, 200);
    let msgs = page["messages"].as_array().unwrap();
    let mut cids = HashSet::new();
    for m in msgs {
        assert!(cids.insert(m["client_id"].as_str().unwrap().to_string()), "client_id stored twice: {m}");
    }
    assert_eq!(msgs.len(), acked.len());
    // The conversation now lives on a survivor.
    assert_ne!(c.owner_of(&conv).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_keeps_local_traffic_and_loses_nothing() {
    let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_env("TEST_LOG")).try_init();
    let mut redis = OwnRedis::start();
    let c = TestCluster::start_on(&redis.url(), "redis-restart", 2).await;
    let alice = c.node(0).signup("alice").await;
    let bob = c.node(0).signup("bob").await;
    // A conversation owned by c-1, with alice on c-1 and bob on c-2.
    let mut conv = String::new();
    for _ in 0..40 {
        let id = c.node(0).group(&alice, &[&bob]).await;
        if c.owner_of(&id).await == 0 {
            conv = id;
            break;
        }
    }
    assert!(!conv.is_empty());
    let mut wa = c.node(0).ws(&alice).await;
    let mut wb = c.node(1).ws(&bob).await;
    assert_eq!(wa.send_msg(&conv, "before", "before").await["op"], "ack");
    assert_eq!(next_msg(&mut wb, &conv).await["client_id"], "before");

    redis.kill();
    // Local traffic goes on: alice's sends to a conversation her node owns are acked.
    let mut acked = Vec::new();
    for i in 0..5 {
        let ack = wa.send_msg(&conv, &format!("during-{i}"), "while Redis is down").await;
        assert_eq!(ack["op"], "ack", "{ack}");
        acked.push(ack["id"].as_str().unwrap().to_string());
    }
    eventually("readyz to report Redis down", || async {
        c.node(0).http.get(c.node(0).url("/readyz")).send().await.unwrap().status() == 503
    })
    .await;

    redis.restart();
    // Both nodes rejoin (Redis lost every key) ...
    for i in 0..2 {
        let c = &c;
        eventually("readyz to recover", || async move {
            c.node(i).http.get(c.node(i).url("/readyz")).send().await.unwrap().status() == 200
        })
        .await;
    }
    c.wait_for_view(2).await;
    // ... and, since cross-node frames may have been lost meanwhile, each node closes its
    // sessions with 1012; clients reconnect and sync.
    let c = &c;
    for i in 0..2 {
        eventually("a resync after the subscription came back", || async move {
            crate::support::metric(&c.node(i).metrics().await, "rookery_cluster_resyncs_total") >= 1.0
        })
        .await;
    }
    assert_eq!(wa.expect_close().await, 1012);
    assert_eq!(wb.expect_close().await, 1012);
    let mut wa = c.node(0).ws(&alice).await;
    let mut wb = c.node(1).ws(&bob).await;
    let mut t = Tally::new();
    sync_into(&mut wb, &conv, 1, &mut t).await;
    let got: Vec<&String> = t.seen.values().collect();
    for id in &acked {
        assert!(got.contains(&id), "acked message {id} missing after the Redis restart");
    }
    // Cross-node traffic flows again: bob gets the next message live or, if his node is told
    // to resync once more (a node that dropped frames while Redis was away says so when it is
    // back), through a reconnect and sync.
    let ack = wa.send_msg(&conv, "after", "after").await;
    assert_eq!(ack["op"], "ack");
    loop {
        match wb.next().await {
            Next::Event(e) if e["op"] == "msg" && e["client_id"] == "after" => break,
            Next::Event(_) => {}
            Next::Closed(code) => {
                assert_eq!(code, 1012);
                wb = c.node(1).ws(&bob).await;
                let mut t = Tally::new();
                sync_into(&mut wb, &conv, 1, &mut t).await;
                if t.seen.values().any(|id| *id == ack["id"].as_str().unwrap()) {
                    break;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_cluster_command_runs_n_nodes() {
    let dir = tempfile::tempdir().unwrap();
    // The nodes listen on consecutive ports (chat, chat+1 and admin, admin+1): four distinct
    // ports, each free when picked.
    let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
    let (chat, admin) = loop {
        let (chat, admin) = (free_port(), free_port());
        if chat == u16::MAX || admin == u16::MAX {
            continue;
        }
        let distinct = [chat, chat + 1, admin, admin + 1].iter().collect::<HashSet<_>>().len() == 4;
        if distinct && free(chat + 1) && free(admin + 1) {
            break (chat, admin);
        }
    };
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rookery"))
        .args(["dev-cluster", "--nodes", "2", "--redis", &shared_redis()])
        .args(["--redis-prefix", &unique_prefix("devcluster")])
        .args(["--listen", &format!("127.0.0.1:{chat}"), "--admin-listen", &format!("127.0.0.1:{admin}")])
        .args(["--data-dir", dir.path().to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for port in [chat, chat + 1] {
        let url = format!("http://127.0.0.1:{port}/healthz");
        let deadline = Instant::now() + PATIENCE * 3;
        let body: Value = loop {
            if let Ok(r) = http.get(&url).send().await {
                break r.json().await.unwrap();
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("dev-cluster exited ({status}) before its node on {port} answered");
            }
            assert!(Instant::now() < deadline, "dev-cluster node on {port} did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        ids.push(body["node_id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids, ["dev-1", "dev-2"]);
    // One store: a user signed up on one node logs in on the other.
    let t = TestNode {
        base: format!("http://127.0.0.1:{chat}"),
        ws_base: String::new(),
        admin_base: String::new(),
        node: None,
        http: http.clone(),
        dir: tempfile::tempdir().unwrap(),
    };
    t.signup("dora").await;
    let (s, _) = crate::support::TestNode { base: format!("http://127.0.0.1:{}", chat + 1), ..t }
        .post("/api/auth/login", None, json!({"username":"dora","password":"password123"}))
        .await;
    assert_eq!(s, 200);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_scylla_store_is_wired_and_a_missing_server_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rookery"))
        .args(["serve", "--scylla", &format!("127.0.0.1:{port}"), "--listen", "127.0.0.1:0"])
        .args(["--admin-listen", "127.0.0.1:0", "--data-dir", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("connecting to ScyllaDB"), "{stderr}");
    // Bad settings are refused before connecting.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rookery"))
        .args(["serve", "--scylla", "127.0.0.1:9042", "--scylla-consistency", "most"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("scylla-consistency"));
}
