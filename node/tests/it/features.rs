//! Contract section 3 beyond send: presence, typing, edit and delete, call signalling and the
//! per-session rate limits.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn presence_is_pushed_to_people_who_share_a_conversation_and_flapping_is_coalesced() {
    let n = TestNode::start_with(|c| c.presence_grace = Duration::from_millis(300)).await;
    let (a, b, stranger) = (n.signup("alice").await, n.signup("bob").await, n.signup("stranger").await);
    n.group(&a, &[&b]).await;
    let mut bws = n.ws(&b).await;
    let mut sws = n.ws(&stranger).await;
    let aws = n.ws(&a).await;
    let p = bws.expect_op("presence").await;
    assert_eq!((p["user_id"].as_str(), p["status"].as_str()), (Some(uid(&a)), Some("online")));
    // A quick reconnect (within the grace period) announces nothing.
    drop(aws);
    let aws = n.ws(&a).await;
    bws.expect_silence(Duration::from_millis(600)).await;
    drop(aws);
    let p = bws.expect_op("presence").await;
    assert_eq!(p["status"], "offline");
    assert!(p["last_seen"].as_i64().unwrap() > 0);
    sws.expect_silence(Duration::from_millis(200)).await;
    // Queries answer with last_seen for offline users.
    bws.send(json!({"op":"presence","users":[uid(&a), uid(&b)]})).await;
    let first = bws.expect_op("presence").await;
    assert_eq!((first["status"].as_str(), first["last_seen"].is_i64()), (Some("offline"), true));
    let second = bws.expect_op("presence").await;
    assert_eq!(second["status"], "online");
}

#[tokio::test]
async fn typing_reaches_other_online_members_only_and_is_rate_limited() {
    let n = TestNode::start().await;
    let (a, b) = (n.signup("alice").await, n.signup("bob").await);
    let id = n.group(&a, &[&b]).await;
    let mut aws = n.ws(&a).await;
    let mut bws = n.ws(&b).await;
    aws.send(json!({"op":"typing","conv":id,"active":true})).await;
    let t = bws.expect_op("typing").await;
    assert_eq!(t, json!({"op":"typing","conv":id,"user_id":uid(&a),"active":true}));
    // Never stored.
    let (_, page) = n.get(&format!("/api/conversations/{id}/messages"), tok(&a)).await;
    assert!(page["messages"].as_array().unwrap().is_empty());
    // The typer does not get its own typing; a burst past the limit is refused with retry_after_ms.
    let mut limited = None;
    for _ in 0..10 {
        aws.send(json!({"op":"typing","conv":id,"active":true})).await;
    }
    while limited.is_none() {
        let e = aws.event().await;
        assert_ne!(e["op"], "typing");
        if e["op"] == "error" {
            limited = Some(e);
        }
    }
    let e = limited.unwrap();
    assert_eq!(e["code"], "rate_limited");
    assert!(e["retry_after_ms"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn sends_over_the_limit_get_rate_limited_and_sustained_abuse_closes_4008() {
    let n = TestNode::start_with(|c| {
        c.send_rate_limit = 5.0;
        c.abuse_threshold = 20;
    })
    .await;
    let (a, b) = (n.signup("alice").await, n.signup("bob").await);
    let id = n.group(&a, &[&b]).await;
    let mut aws = n.ws(&a).await;
    for i in 0..15 {
        aws.send(json!({"op":"send","conv":id,"client_id":format!("k{i}"),"body":"x"})).await;
    }
    let (mut acks, mut limited) = (0, 0);
    while acks + limited < 15 {
        let e = aws.event().await;
        match e["op"].as_str().unwrap() {
            "ack" => acks += 1,
            "error" => {
                assert_eq!(e["code"], "rate_limited");
                assert!(e["client_id"].as_str().unwrap().starts_with('k'));
                assert!(e["retry_after_ms"].as_u64().unwrap() > 0);
                limited += 1;
            }
            _ => {}
        }
    }
    assert_eq!(acks, 10, "the burst is twice the rate");
    // Keep hammering: the session is closed for abuse.
    for i in 0..40 {
        aws.send(json!({"op":"send","conv":id,"client_id":format!("z{i}"),"body":"x"})).await;
    }
    assert_eq!(aws.expect_close().await, 4008);
}

#[tokio::test]
async fn edits_and_deletes_follow_the_rules_over_websocket_and_http() {
    let n = TestNode::start().await;
    let (a, b, c) = (n.signup("alice").await, n.signup("bob").await, n.signup("carol").await);
    let id = n.group(&a, &[&b, &c]).await;
    let mut aws = n.ws(&a).await;
    let mut bws = n.ws(&b).await;
    let mine = bws.send_msg(&id, "b1", "bob's typo").await;
    let mid = mine["id"].as_str().unwrap().to_string();
    // Only the sender edits.
    aws.send(json!({"op":"edit","conv":id,"id":mid,"body":"hijack"})).await;
    assert_eq!(aws.expect_op("error").await["code"], "forbidden");
    bws.send(json!({"op":"edit","conv":id,"id":mid,"body":"bob's fix"})).await;
    let e = aws.expect_op("edited").await;
    assert_eq!(
        (e["id"].as_str(), e["body"].as_str(), e["seq"].as_u64()),
        (Some(mid.as_str()), Some("bob's fix"), Some(1))
    );
    assert!(e["edited_at"].as_i64().unwrap() > 0);
    // Over HTTP too.
    let path = format!("/api/conversations/{id}/messages/{mid}");
    let (status, m) = n.patch(&path, tok(&b), json!({"body":"bob's final"})).await;
    assert_eq!((status, m["body"].as_str()), (200, Some("bob's final")));
    assert_eq!(n.patch(&path, tok(&c), json!({"body":"nope"})).await.0, 403);
    // A member cannot delete another's message; the owner can.
    assert_eq!(n.delete(&path, tok(&c)).await.0, 403);
    assert_eq!(n.delete(&path, tok(&a)).await.0, 204);
    let d = bws.expect_op("deleted").await;
    assert_eq!((d["id"].as_str(), d["seq"].as_u64()), (Some(mid.as_str()), Some(1)));
    // History shows the edit gone and no body; editing a deleted message is refused.
    let (_, page) = n.get(&format!("/api/conversations/{id}/messages"), tok(&c)).await;
    let m = &page["messages"][0];
    assert_eq!((m["deleted"].as_bool(), m["body"].as_str()), (Some(true), Some("")));
    assert_eq!(n.patch(&path, tok(&b), json!({"body":"resurrect"})).await.0, 404);
    // Own deletes over WebSocket.
    let own = aws.send_msg(&id, "a1", "mine").await;
    aws.send(json!({"op":"delete","conv":id,"id":own["id"]})).await;
    assert_eq!(bws.expect_op("deleted").await["id"], own["id"]);
    let eve = n.signup("eve").await;
    assert_eq!(
        n.delete(&format!("/api/conversations/{id}/messages/{}", own["id"].as_str().unwrap()), tok(&eve)).await.0,
        404
    );
}

#[tokio::test]
async fn calls_ring_every_session_the_first_answer_wins_and_the_end_is_logged() {
    let n = TestNode::start().await;
    let (a, b) = (n.signup("alice").await, n.signup("bob").await);
    let mut caller = n.ws(&a).await;
    let mut phone = n.ws(&b).await;
    let mut laptop = n.ws(&b).await;
    caller.send(json!({"op":"call.offer","to":uid(&b),"call_id":"call1","sdp":"offer-sdp"})).await;
    for s in [&mut phone, &mut laptop] {
        let o = s.expect_op("call.offer").await;
        assert_eq!(o, json!({"op":"call.offer","from":uid(&a),"call_id":"call1","sdp":"offer-sdp"}));
    }
    phone.send(json!({"op":"call.answer","to":uid(&a),"call_id":"call1","sdp":"answer-sdp"})).await;
    let ans = caller.expect_op("call.answer").await;
    assert_eq!((ans["from"].as_str(), ans["sdp"].as_str()), (Some(uid(&b)), Some("answer-sdp")));
    let end = laptop.expect_op("call.end").await;
    assert_eq!(end["reason"], "answered_elsewhere");
    laptop.send(json!({"op":"call.answer","to":uid(&a),"call_id":"call1","sdp":"late"})).await;
    assert_eq!(laptop.expect_op("error").await["code"], "conflict");
    caller.send(json!({"op":"call.ice","to":uid(&b),"call_id":"call1","candidate":{"c":1}})).await;
    assert_eq!(phone.expect_op("call.ice").await["candidate"], json!({"c":1}));
    caller.send(json!({"op":"call.end","to":uid(&b),"call_id":"call1"})).await;
    assert_eq!(phone.expect_op("call.end").await["from"], uid(&a));
    // The call log lands in the pair's direct conversation.
    let log = phone.expect_op("msg").await;
    assert_eq!(log["sender"], uid(&a));
    assert_eq!(log["attachments"][0]["kind"], "call");
    assert_eq!(log["attachments"][0]["missed"], false);
    // A callee with no session: unavailable.
    let c = n.signup("carol").await;
    caller.send(json!({"op":"call.offer","to":uid(&c),"call_id":"call2","sdp":"x"})).await;
    assert_eq!(caller.expect_op("error").await["code"], "unavailable");
    // A missed call is logged as missed.
    caller.send(json!({"op":"call.offer","to":uid(&b),"call_id":"call3"})).await;
    phone.expect_op("call.offer").await;
    caller.send(json!({"op":"call.end","to":uid(&b),"call_id":"call3"})).await;
    let log = phone.expect_op("msg").await;
    assert_eq!((log["body"].as_str(), log["attachments"][0]["missed"].as_bool()), (Some("Missed call"), Some(true)));
    // Strangers cannot touch a call.
    let mut eve = n.ws(&n.signup("eve").await).await;
    eve.send(json!({"op":"call.end","to":uid(&b),"call_id":"call1"})).await;
    assert_eq!(eve.expect_op("error").await["code"], "not_found");
}

async fn upload(n: &TestNode, token: &str, name: &str, content_type: &str, bytes: Vec<u8>) -> (u16, serde_json::Value) {
    let r = n
        .http
        .post(n.url(&format!("/api/attachments?name={name}")))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(bytes)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

#[tokio::test]
async fn attachments_upload_share_and_download_only_for_those_who_may() {
    let n = TestNode::start_with(|c| c.max_attachment = 1024 * 1024).await;
    let (a, b, eve) = (n.signup("alice").await, n.signup("bob").await, n.signup("eve").await);
    let id = n.group(&a, &[&b]).await;
    let png = [&[0x89u8, b'P', b'N', b'G'][..], &vec![7u8; 300_000]].concat();
    let (status, att) = upload(&n, tok(&a), "cat%20pic.png", "image/png", png.clone()).await;
    assert_eq!(status, 201, "{att}");
    assert_eq!(
        (att["name"].as_str(), att["content_type"].as_str(), att["size"].as_u64()),
        (Some("cat pic.png"), Some("image/png"), Some(png.len() as u64))
    );
    let att_id = att["id"].as_str().unwrap().to_string();
    let url = n.url(&format!("/api/attachments/{att_id}"));
    // Before it is shared, only the uploader reads it.
    assert_eq!(n.http.get(&url).bearer_auth(tok(&b)).send().await.unwrap().status(), 404);
    let r = n.http.get(&url).bearer_auth(tok(&a)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Shared in a message: members read it, with the right headers; the message carries metadata.
    let mut bws = n.ws(&b).await;
    let mut aws = n.ws(&a).await;
    aws.send(json!({"op":"send","conv":id,"client_id":"p1","body":"","attachments":[att_id]})).await;
    assert_eq!(aws.expect_op("ack").await["client_id"], "p1");
    let m = bws.expect_op("msg").await;
    assert_eq!(m["attachments"][0]["id"], att_id.as_str());
    assert_eq!(m["attachments"][0]["url"], format!("/api/attachments/{att_id}"));
    let r = n.http.get(&url).bearer_auth(tok(&b)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["content-type"], "image/png");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert!(h["content-disposition"].to_str().unwrap().starts_with("inline; filename=\"cat pic.png\""));
    assert_eq!(r.bytes().await.unwrap().to_vec(), png);
    assert_eq!(
        n.http.get(&url).bearer_auth(tok(&eve)).send().await.unwrap().status(),
        404,
        "non-members never read it"
    );
    // Others cannot attach a file they may not read; too large is 413.
    let mut ews = n.ws(&eve).await;
    let (_, e_group) = n.post("/api/conversations", Some(tok(&eve)), json!({"kind":"group","title":"e"})).await;
    let e = ews.send_msg(e_group["id"].as_str().unwrap(), "steal", "x").await;
    assert_eq!(e["op"], "ack");
    ews.send(json!({"op":"send","conv":e_group["id"],"client_id":"steal2","body":"x","attachments":[att_id]})).await;
    assert_eq!(ews.expect_op("error").await["code"], "not_found");
    let (status, body) = upload(&n, tok(&a), "big.bin", "application/octet-stream", vec![0; 1024 * 1024 + 1]).await;
    assert_eq!((status, body["error"]["code"].as_str()), (413, Some("too_large")));
    // A script is served as a download, never rendered.
    let (_, html) = upload(&n, tok(&a), "x.html", "text/html", b"<script>alert(1)</script>".to_vec()).await;
    let r = n
        .http
        .get(n.url(&format!("/api/attachments/{}", html["id"].as_str().unwrap())))
        .bearer_auth(tok(&a))
        .send()
        .await
        .unwrap();
    assert!(r.headers()["content-disposition"].to_str().unwrap().starts_with("attachment;"));
    // Avatars: an image of one's own, then readable by everyone signed in.
    let (status, me) = n.patch("/api/users/me", tok(&a), json!({"avatar": att_id})).await;
    assert_eq!((status, me["avatar"].as_str()), (200, Some(att_id.as_str())));
    assert_eq!(n.http.get(&url).bearer_auth(tok(&eve)).send().await.unwrap().status(), 200);
    assert_eq!(n.patch("/api/users/me", tok(&b), json!({"avatar": att_id})).await.0, 404, "not bob's file");
    assert_eq!(n.patch("/api/users/me", tok(&a), json!({"avatar": html["id"]})).await.0, 400, "not an image");
}
