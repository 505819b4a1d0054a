//! Moderation through the admin API, enforced in the data path over real sockets, and the
//! audit log that survives a restart.

use serde_json::{json, Value};

use crate::support::*;

const ADMIN: &str = "test-admin-token-0123456789";

async fn admin(n: &TestNode, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = n.http.request(method, format!("{}/admin/api{path}", n.admin_base)).bearer_auth(ADMIN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn audit_actions(n: &TestNode) -> Vec<String> {
    let (_, a) = admin(n, reqwest::Method::GET, "/audit", None).await;
    a["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn the_admin_api_needs_the_token() {
    let n = TestNode::start().await;
    for path in ["/overview", "/users", "/audit", "/nodes"] {
        let r = n.http.get(format!("{}/admin/api{path}", n.admin_base)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let r = n
            .http
            .get(format!("{}/admin/api{path}", n.admin_base))
            .bearer_auth("wrong-token-wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    let (status, o) = admin(&n, reqwest::Method::GET, "/overview", None).await;
    assert_eq!(status, 200);
    assert!(o["node_id"].as_str().unwrap().starts_with("node-"));
    let (_, nodes) = admin(&n, reqwest::Method::GET, "/nodes", None).await;
    assert_eq!(nodes["nodes"].as_array().unwrap().len(), 1);
    let page = n.http.get(format!("{}/", n.admin_base)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Rookery console"));
}

#[tokio::test]
async fn a_ban_closes_sessions_and_refuses_login_refresh_connect_and_api_until_it_ends() {
    let n = TestNode::start().await;
    let (a, b) = (n.signup("alice").await, n.signup("bob").await);
    let id = n.group(&a, &[&b]).await;
    let mut aws = n.ws(&a).await;
    let mut bws = n.ws(&b).await;
    let (status, _) = admin(
        &n,
        reqwest::Method::POST,
        &format!("/users/{}/ban", uid(&b)),
        Some(json!({"reason":"spam","duration_s":2})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(bws.expect_close().await, 4003);
    let (s, _) = n.post("/api/auth/login", None, json!({"username":"bob","password":"password123"})).await;
    assert_eq!(s, 403);
    assert_eq!(n.post("/api/auth/refresh", None, json!({"refresh_token": b["refresh_token"]})).await.0, 403);
    assert!(n.ws_raw(tok(&b)).await.is_err(), "connect refused");
    assert_eq!(
        n.post(&format!("/api/conversations/{id}/messages"), Some(tok(&b)), json!({"client_id":"x","body":"hi"}))
            .await
            .0,
        403
    );
    // Others are unaffected.
    assert_eq!(aws.send_msg(&id, "k1", "still fine").await["op"], "ack");
    assert!(audit_actions(&n).await.contains(&"ban".to_string()));
    // The timed ban ends on its own.
    eventually("the ban to end", || async {
        n.post("/api/auth/login", None, json!({"username":"bob","password":"password123"})).await.0 == 200
    })
    .await;
    assert!(n.ws_raw(tok(&b)).await.is_ok());
    // A lifted ban: ban forever, then unban.
    admin(&n, reqwest::Method::POST, &format!("/users/{}/ban", uid(&b)), Some(json!({"reason":"again"}))).await;
    assert_eq!(n.get("/api/users/me", tok(&b)).await.0, 403);
    let (status, _) = admin(&n, reqwest::Method::DELETE, &format!("/users/{}/ban", uid(&b)), None).await;
    assert_eq!(status, 204);
    assert_eq!(n.get("/api/users/me", tok(&b)).await.0, 200);
    assert_eq!(admin(&n, reqwest::Method::POST, "/users/nobody/ban", Some(json!({"reason":"x"}))).await.0, 404);
    assert_eq!(
        admin(&n, reqwest::Method::POST, &format!("/users/{}/ban", uid(&b)), Some(json!({"reason":""}))).await.0,
        400
    );
}

#[tokio::test]
async fn kick_mute_slow_mode_and_admin_delete_are_enforced() {
    let n = TestNode::start().await;
    let (a, b) = (n.signup("alice").await, n.signup("bob").await);
    let id = n.group(&a, &[&b]).await;
    let mut aws = n.ws(&a).await;
    let mut bws = n.ws(&b).await;
    // Kick: closed with 4003, may come back.
    let (status, k) =
        admin(&n, reqwest::Method::POST, &format!("/users/{}/kick", uid(&b)), Some(json!({"reason":"cool down"})))
            .await;
    assert_eq!((status, k["sessions_closed"].as_u64()), (200, Some(1)));
    assert_eq!(bws.expect_close().await, 4003);
    let mut bws = n.ws(&b).await;
    // Mute: `muted` on send, then lifted.
    let (status, _) = admin(
        &n,
        reqwest::Method::POST,
        &format!("/conversations/{id}/mute"),
        Some(json!({"user_id":uid(&b),"reason":"flood"})),
    )
    .await;
    assert_eq!(status, 200);
    let e = bws.send_msg(&id, "m1", "let me talk").await;
    assert_eq!((e["op"].as_str(), e["code"].as_str()), (Some("error"), Some("muted")));
    assert_eq!(admin(&n, reqwest::Method::DELETE, &format!("/conversations/{id}/mute/{}", uid(&b)), None).await.0, 204);
    assert_eq!(bws.send_msg(&id, "m2", "thanks").await["op"], "ack");
    // A timed mute ends on its own.
    admin(
        &n,
        reqwest::Method::POST,
        &format!("/conversations/{id}/mute"),
        Some(json!({"user_id":uid(&b),"reason":"short","duration_s":1})),
    )
    .await;
    assert_eq!(bws.send_msg(&id, "m3", "x").await["code"], "muted");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    for i in 0.. {
        if bws.send_msg(&id, &format!("retry{i}"), "back").await["op"] == "ack" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the mute did not end");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // Slow mode: one message per 60 s for members; owners are exempt.
    assert_eq!(
        admin(&n, reqwest::Method::PUT, &format!("/conversations/{id}/slow_mode"), Some(json!({"seconds":60}))).await.0,
        200
    );
    // Bob sent a moment ago, so under a 60 s slow mode his next message must wait.
    let e = bws.send_msg(&id, "s2", "two").await;

    assert_eq!(e["code"], "slow_mode");
    assert!(e["retry_after_ms"].as_u64().unwrap() > 50_000);
    assert_eq!(aws.send_msg(&id, "o1", "owner").await["op"], "ack");
    assert_eq!(aws.send_msg(&id, "o2", "owner again").await["op"], "ack");
    // Admin delete: members get `deleted`, history keeps no body.
    let (_, page) = n.get(&format!("/api/conversations/{id}/messages"), tok(&a)).await;
    let victim = page["messages"][0].clone();
    let path = format!("/messages/{id}/{}", victim["id"].as_str().unwrap());
    assert_eq!(admin(&n, reqwest::Method::DELETE, &path, Some(json!({"reason":"abuse"}))).await.0, 204);
    assert_eq!(aws.expect_op("deleted").await["id"], victim["id"]);
    let (_, page) = n.get(&format!("/api/conversations/{id}/messages"), tok(&b)).await;
    assert_eq!(
        (page["messages"][0]["deleted"].as_bool(), page["messages"][0]["body"].as_str()),
        (Some(true), Some(""))
    );
    // Every action is in the audit log, and it survives a restart.
    let actions = audit_actions(&n).await;
    for a in ["kick", "mute", "unmute", "slow_mode", "delete_message"] {
        assert!(actions.contains(&a.to_string()), "{a} missing from {actions:?}");
    }
    drop((aws, bws));
    let config = test_config(n.dir.path());
    let dir = n.stop().await;
    let n = TestNode::start_in(dir, config).await;
    assert_eq!(audit_actions(&n).await, actions);
    let (_, conv) = admin(&n, reqwest::Method::GET, "/conversations", None).await;
    assert_eq!(conv["conversations"][0]["conversation"]["slow_mode_s"], 60);
    let (_, detail) = admin(&n, reqwest::Method::GET, &format!("/users/{}", uid(&b)), None).await;
    assert_eq!(detail["user"]["username"], "bob");
    let (_, msgs) = admin(&n, reqwest::Method::GET, &format!("/conversations/{id}/messages"), None).await;
    assert!(msgs["messages"].as_array().unwrap().len() >= 3);
}

#[tokio::test]
async fn the_overview_lists_busiest_conversations_and_recent_events() {
    let n = TestNode::start_with(|c| c.send_rate_limit = 0.0).await;
    let (a, b) = (n.signup("alice").await, n.signup("bob").await);
    let id = n.group(&a, &[&b]).await;
    let mut aws = n.ws(&a).await;
    let hub = n.node().app.hub.clone();
    hub.router.route(&id, rookery_actors::ConvMsg::InjectPanic).await.unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        aws.send(json!({"op":"send","conv":id,"client_id":format!("k{}", rand_suffix()),"body":"x"})).await;
        let (_, o) = admin(&n, reqwest::Method::GET, "/overview", None).await;
        let busy = o["busiest_conversations"].as_array().is_some_and(|b| b.iter().any(|c| c["id"] == id.as_str()));
        let restarted = o["recent_events"].as_array().is_some_and(|e| e.iter().any(|e| e["kind"] == "restart"));
        if busy && restarted {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no busy conversation or restart event: {o}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let text = n.metrics().await;
    for name in [
        "rookery_store_op_seconds_bucket{op=\"append_messages\"",
        "rookery_session_mailbox_frames",
        "rookery_conversation_writes_in_flight",
        "rookery_outbound_queued_frames",
    ] {
        assert!(text.contains(name), "{name} missing");
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

async fn delete_me(n: &TestNode, session: &Value, body: Value) -> (u16, Value) {
    let r = n.http.delete(n.url("/api/users/me")).bearer_auth(tok(session)).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Every way the old account's credentials could be used again is refused with 401 (login with
/// its old name and password too, unless someone new took the name since).
async fn assert_account_refused(n: &TestNode, session: &Value, name: &str) {
    let (s, e) = n.get("/api/users/me", tok(session)).await;
    assert_eq!((s, e["error"]["message"].as_str()), (401, Some("account deleted")), "{e}");
    assert!(n.ws_raw(tok(session)).await.is_err(), "connect refused");
    let refresh = json!({"refresh_token": session["refresh_token"]});
    assert_eq!(n.post("/api/auth/refresh", None, refresh).await.0, 401);
    let (s, login) = n.post("/api/auth/login", None, json!({"username":name,"password":"password123"})).await;
    assert!(s == 401 || (s == 200 && login["user"]["id"] != session["user"]["id"]), "{s} {login}");
}

#[tokio::test]
async fn a_deleted_account_is_refused_everywhere_keeps_its_messages_and_frees_its_name() {
    let n = TestNode::start().await;
    let (a, b, c) = (n.signup("alice").await, n.signup("bob").await, n.signup("carol").await);
    let id = n.group(&a, &[&b, &c]).await;
    let mut aws = n.ws(&a).await;
    let mut bws = n.ws(&b).await;
    assert_eq!(bws.send_msg(&id, "b1", "before I go").await["op"], "ack");

    // The password is asked again; a wrong one or none changes nothing.
    assert_eq!(delete_me(&n, &b, json!({"password":"not-my-password"})).await.0, 403);
    assert_eq!(delete_me(&n, &b, json!({})).await.0, 400);
    assert_eq!(n.get("/api/users/me", tok(&b)).await.0, 200);
    assert_eq!(delete_me(&n, &b, json!({"password":"password123"})).await.0, 204);
    assert_eq!(bws.expect_close().await, 4001);
    assert_account_refused(&n, &b, "bob").await;
    let send = json!({"client_id":"b2","body":"ghost"});
    assert_eq!(n.post(&format!("/api/conversations/{id}/messages"), Some(tok(&b)), send).await.0, 401);

    // Others are unaffected; the message stays under the tombstone's name.
    assert_eq!(aws.send_msg(&id, "a1", "still here").await["op"], "ack");
    let (_, page) = n.get(&format!("/api/conversations/{id}/messages"), tok(&a)).await;
    let bodies: Vec<&str> = page["messages"].as_array().unwrap().iter().filter_map(|m| m["body"].as_str()).collect();
    assert!(bodies.contains(&"before I go"), "{bodies:?}");
    let (s, gone) = n.get(&format!("/api/users/{}", uid(&b)), tok(&a)).await;
    assert_eq!((s, gone["display_name"].as_str()), (200, Some("Deleted user")));
    let (_, found) = n.get("/api/users?q=bob", tok(&a)).await;
    assert_eq!(found["users"].as_array().map(Vec::len), Some(0), "{found}");

    // The name is free for someone new, who is someone else.
    let b2 = n.signup("bob").await;
    assert_ne!(uid(&b2), uid(&b));
    let (s, login) = n.post("/api/auth/login", None, json!({"username":"bob","password":"password123"})).await;
    assert_eq!((s, login["user"]["id"].as_str()), (200, Some(uid(&b2))));
    assert_eq!(n.get("/api/users/me", tok(&b2)).await.0, 200);

    // The deletion cannot be undone as if it were a ban, and it is in the audit log.
    let path = format!("/users/{}/ban", uid(&b));
    assert_eq!(admin(&n, reqwest::Method::DELETE, &path, Some(json!({"reason":"undo"}))).await.0, 400);
    assert_eq!(admin(&n, reqwest::Method::POST, &path, Some(json!({"reason":"x"}))).await.0, 400);
    assert!(audit_actions(&n).await.contains(&"delete_account".to_string()));

    // An operator deletes carol: a reason is required; her sessions close with 4001.
    let mut cws = n.ws(&c).await;
    let path = format!("/users/{}", uid(&c));
    assert_eq!(admin(&n, reqwest::Method::DELETE, &path, Some(json!({"reason":""}))).await.0, 400);
    assert_eq!(admin(&n, reqwest::Method::DELETE, "/users/nobody", Some(json!({"reason":"x"}))).await.0, 404);
    assert_eq!(admin(&n, reqwest::Method::DELETE, &path, Some(json!({"reason":"requested by mail"}))).await.0, 204);
    assert_eq!(cws.expect_close().await, 4001);
    assert_account_refused(&n, &c, "carol").await;

    // Still refused after a restart (the mark is in the store, not only in memory).
    drop((aws, cws));
    let config = test_config(n.dir.path());
    let dir = n.stop().await;
    let n = TestNode::start_in(dir, config).await;
    assert_account_refused(&n, &b, "bob").await;
    assert_account_refused(&n, &c, "carol").await;
    assert_eq!(n.get("/api/users/me", tok(&b2)).await.0, 200);
}

/// An HTTP send meets the same moderation as a WebSocket send, with the same codes
/// (`docs/protocol.md` §3.1): 403 `muted`, 429 `slow_mode`.
#[tokio::test]
async fn an_http_send_answers_muted_and_slow_mode() {
    let n = TestNode::start().await;
    let (a, b) = (n.signup("alice").await, n.signup("bob").await);
    let id = n.group(&a, &[&b]).await;
    let path = format!("/api/conversations/{id}/messages");
    let mute = json!({"user_id":uid(&b),"reason":"flood"});
    assert_eq!(admin(&n, reqwest::Method::POST, &format!("/conversations/{id}/mute"), Some(mute)).await.0, 200);
    let (status, e) = n.post(&path, Some(tok(&b)), json!({"client_id":"h1","body":"hi"})).await;
    assert_eq!((status, e["error"]["code"].as_str()), (403, Some("muted")));
    assert_eq!(admin(&n, reqwest::Method::DELETE, &format!("/conversations/{id}/mute/{}", uid(&b)), None).await.0, 204);

    let slow = Some(json!({"seconds":60}));
    assert_eq!(admin(&n, reqwest::Method::PUT, &format!("/conversations/{id}/slow_mode"), slow).await.0, 200);
    assert_eq!(n.post(&path, Some(tok(&b)), json!({"client_id":"h2","body":"one"})).await.0, 201);
    let r = n.http.post(n.url(&path)).bearer_auth(tok(&b)).json(&json!({"client_id":"h3","body":"two"}));
    let r = r.send().await.unwrap();
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((55..=60).contains(&retry), "Retry-After {retry} under a 60 s slow mode");
    let (status, e): (u16, Value) = (r.status().as_u16(), r.json().await.unwrap());
    assert_eq!((status, e["error"]["code"].as_str()), (429, Some("slow_mode")));
}
