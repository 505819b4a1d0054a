//! Contract section 2, conversations: direct, group, roles, members, list, privacy.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn a_direct_conversation_is_one_per_pair() {
    let n = TestNode::start().await;
    let (a, b) = (n.signup("alice").await, n.signup("bob").await);
    let (s1, c1) = n.post("/api/conversations", Some(tok(&a)), json!({"kind":"direct","members":[uid(&b)]})).await;
    assert_eq!(s1, 201);
    assert_eq!(c1["kind"], "direct");
    assert_eq!(c1["members"].as_array().unwrap().len(), 2);
    let (s2, c2) = n.post("/api/conversations", Some(tok(&a)), json!({"kind":"direct","members":[uid(&b)]})).await;
    let (s3, c3) = n.post("/api/conversations", Some(tok(&b)), json!({"kind":"direct","members":[uid(&a)]})).await;
    assert_eq!((s2, s3), (200, 200));
    assert_eq!(c1["id"], c2["id"]);
    assert_eq!(c1["id"], c3["id"]);
    // Invalid directs.
    assert_eq!(n.post("/api/conversations", Some(tok(&a)), json!({"kind":"direct","members":[uid(&a)]})).await.0, 400);
    assert_eq!(n.post("/api/conversations", Some(tok(&a)), json!({"kind":"direct","members":[]})).await.0, 400);
    assert_eq!(n.post("/api/conversations", Some(tok(&a)), json!({"kind":"direct","members":["nobody"]})).await.0, 404);
    assert_eq!(n.post("/api/conversations", Some(tok(&a)), json!({"kind":"channel","members":[]})).await.0, 400);
}

#[tokio::test]
async fn groups_have_roles_and_members_come_and_go() {
    let n = TestNode::start().await;
    let (a, b, c, d) =
        (n.signup("alice").await, n.signup("bob").await, n.signup("carol").await, n.signup("dave").await);
    let (status, g) =
        n.post("/api/conversations", Some(tok(&a)), json!({"kind":"group","title":"team","members":[uid(&b)]})).await;
    assert_eq!(status, 201);
    let id = g["id"].as_str().unwrap();
    assert_eq!(g["title"], "team");
    let role = |conv: &serde_json::Value, who: &serde_json::Value| {
        conv["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["user_id"] == who["user"]["id"])
            .map(|m| m["role"].as_str().unwrap().to_string())
    };
    assert_eq!(role(&g, &a).as_deref(), Some("owner"));
    assert_eq!(role(&g, &b).as_deref(), Some("member"));
    assert_eq!(
        n.post("/api/conversations", Some(tok(&a)), json!({"kind":"group","members":[]})).await.0,
        400,
        "title required"
    );
    assert_eq!(
        n.post("/api/conversations", Some(tok(&a)), json!({"kind":"group","title":"x".repeat(101)})).await.0,
        400
    );

    let members = format!("/api/conversations/{id}/members");
    // A member cannot add; the owner can, and can make admins.
    assert_eq!(n.post(&members, Some(tok(&b)), json!({"user_ids":[uid(&c)]})).await.0, 403);
    let (status, g) = n.post(&members, Some(tok(&a)), json!({"user_ids":[uid(&c)],"role":"admin"})).await;
    assert_eq!(status, 200);
    assert_eq!(role(&g, &c).as_deref(), Some("admin"));
    // An admin adds; rename by admin works, by member is forbidden.
    assert_eq!(n.post(&members, Some(tok(&c)), json!({"user_ids":[uid(&d)]})).await.0, 200);
    assert_eq!(n.patch(&format!("/api/conversations/{id}"), tok(&c), json!({"title":"renamed"})).await.0, 200);
    assert_eq!(n.patch(&format!("/api/conversations/{id}"), tok(&d), json!({"title":"nope"})).await.0, 403);
    // An admin cannot remove the owner; the owner removes a member; a member leaves.
    assert_eq!(n.delete(&format!("{members}/{}", uid(&a)), tok(&c)).await.0, 403);
    assert_eq!(n.delete(&format!("{members}/{}", uid(&d)), tok(&b)).await.0, 403, "members remove only themselves");
    assert_eq!(n.delete(&format!("{members}/{}", uid(&d)), tok(&a)).await.0, 204);
    assert_eq!(n.delete(&format!("{members}/{}", uid(&b)), tok(&b)).await.0, 204, "leave");
    let (status, g) = n.get(&format!("/api/conversations/{id}"), tok(&a)).await;
    assert_eq!(status, 200);
    assert_eq!(g["title"], "renamed");
    let mut ids: Vec<&str> = g["members"].as_array().unwrap().iter().map(|m| m["user_id"].as_str().unwrap()).collect();
    ids.sort();
    let mut want = vec![uid(&a), uid(&c)];
    want.sort();
    assert_eq!(ids, want);
    // Those who left see nothing any more.
    assert_eq!(n.get(&format!("/api/conversations/{id}"), tok(&b)).await.0, 404);
    assert_eq!(n.get(&format!("/api/conversations/{id}/messages"), tok(&d)).await.0, 404);
}

#[tokio::test]
async fn non_members_get_404_and_never_see_a_message() {
    let n = TestNode::start().await;
    let (a, b, eve) = (n.signup("alice").await, n.signup("bob").await, n.signup("eve").await);
    let id = n.group(&a, &[&b]).await;
    let (status, _) = n
        .post(&format!("/api/conversations/{id}/messages"), Some(tok(&a)), json!({"client_id":"c1","body":"secret"}))
        .await;
    assert_eq!(status, 201);
    for path in [format!("/api/conversations/{id}"), format!("/api/conversations/{id}/messages")] {
        let (status, body) = n.get(&path, tok(&eve)).await;
        assert_eq!(status, 404, "{path}");
        assert!(!body.to_string().contains("secret"));
    }
    let (status, _) = n
        .post(&format!("/api/conversations/{id}/messages"), Some(tok(&eve)), json!({"client_id":"x","body":"hi"}))
        .await;
    assert_eq!(status, 404);
    assert_eq!(
        n.post(&format!("/api/conversations/{id}/members"), Some(tok(&eve)), json!({"user_ids":[uid(&eve)]})).await.0,
        404
    );
    assert_eq!(n.patch(&format!("/api/conversations/{id}"), tok(&eve), json!({"title":"pwned"})).await.0, 404);
    assert_eq!(n.get("/api/conversations/does-not-exist", tok(&eve)).await.0, 404, "same answer as for a real id");
    // Over the WebSocket too: not_member, no message.
    let mut ws = n.ws(&eve).await;
    let e = ws.send_msg(&id, "k", "let me in").await;
    assert_eq!(e["op"], "error");
    assert_eq!(e["code"], "not_member");
    ws.send(json!({"op":"sync","since":{id.clone(): 0}})).await;
    let e = ws.event().await;
    assert_eq!(e["code"], "not_member");
    let synced = ws.expect_op("synced").await;
    assert!(synced["convs"].get(&id).is_none());
    let (_, page) = n.get(&format!("/api/conversations/{id}/messages"), tok(&a)).await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 1, "nothing was stored for the non-member");
}

#[tokio::test]
async fn the_list_has_last_message_and_unread_counts_newest_first() {
    let n = TestNode::start().await;
    let (a, b) = (n.signup("alice").await, n.signup("bob").await);
    let g1 = n.group(&a, &[&b]).await;
    let g2 = n.group(&a, &[&b]).await;
    for i in 0..3 {
        n.post(
            &format!("/api/conversations/{g1}/messages"),
            Some(tok(&a)),
            json!({"client_id": format!("a{i}"),"body": format!("m{i}")}),
        )
        .await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    n.post(&format!("/api/conversations/{g2}/messages"), Some(tok(&a)), json!({"client_id":"z","body":"latest"})).await;
    let (status, list) = n.get("/api/conversations", tok(&b)).await;
    assert_eq!(status, 200);
    let convs = list["conversations"].as_array().unwrap();
    assert_eq!(convs.len(), 2);
    assert_eq!(convs[0]["id"], g2.as_str(), "most recent activity first");
    assert_eq!(convs[0]["last_message"]["body"], "latest");
    assert_eq!(convs[1]["unread"], 3);
    assert_eq!(convs[1]["read_seq"], 0);
    assert_eq!(convs[1]["last_seq"], 3);
    // Reading moves the cursor and the unread count.
    let mut ws = n.ws(&b).await;
    ws.send(json!({"op":"read","conv": g1,"seq": 2})).await;
    ws.expect_op("receipt").await;
    eventually("unread to drop", || async {
        let (_, list) = n.get("/api/conversations", tok(&b)).await;
        let c = list["conversations"].as_array().unwrap().iter().find(|c| c["id"] == g1.as_str()).unwrap().clone();
        c["unread"] == 1 && c["read_seq"] == 2
    })
    .await;
    // The sender's own messages are never unread.
    let (_, list) = n.get("/api/conversations", tok(&a)).await;
    assert!(list["conversations"].as_array().unwrap().iter().all(|c| c["unread"] == 0));
    // Members' read cursors are visible to members.
    let (_, g) = n.get(&format!("/api/conversations/{g1}"), tok(&a)).await;
    let bob = g["members"].as_array().unwrap().iter().find(|m| m["user_id"] == b["user"]["id"]).unwrap().clone();
    assert_eq!(bob["read_seq"], 2);
}

#[tokio::test]
async fn history_pages_over_http_in_both_directions() {
    let n = TestNode::start().await;
    let (a, b) = (n.signup("alice").await, n.signup("bob").await);
    let id = n.group(&a, &[&b]).await;
    let mut ws = n.ws(&a).await;
    for i in 1..=12 {
        let ack = ws.send_msg(&id, &format!("k{i}"), &format!("m{i}")).await;
        assert_eq!(ack["seq"], i);
    }
    let seqs = |v: &serde_json::Value| {
        v["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect::<Vec<_>>()
    };
    let base = format!("/api/conversations/{id}/messages");
    let (_, p) = n.get(&format!("{base}?limit=5"), tok(&b)).await;
    assert_eq!(seqs(&p), vec![8, 9, 10, 11, 12]);
    assert_eq!(p["has_more"], true);
    let (_, p) = n.get(&format!("{base}?limit=5&before_seq=8"), tok(&b)).await;
    assert_eq!(seqs(&p), vec![3, 4, 5, 6, 7]);
    let (_, p) = n.get(&format!("{base}?limit=5&after_seq=10"), tok(&b)).await;
    assert_eq!(seqs(&p), vec![11, 12]);
    assert_eq!(p["has_more"], false);
    let (_, p) = n.get(&base, tok(&b)).await;
    assert_eq!(seqs(&p).len(), 12);
    assert_eq!(n.get(&format!("{base}?limit=0"), tok(&b)).await.0, 400);
    assert_eq!(n.get(&format!("{base}?limit=501"), tok(&b)).await.0, 400);
    assert_eq!(n.get(&format!("{base}?before_seq=abc"), tok(&b)).await.0, 400);
}

#[tokio::test]
async fn leaving_keeps_groups_owned_and_directs_rejoinable() {
    let n = TestNode::start().await;
    let (a, b, c) = (n.signup("alice").await, n.signup("bob").await, n.signup("carol").await);
    let id = n.group(&a, &[&b, &c]).await;
    n.post(&format!("/api/conversations/{id}/members"), Some(tok(&a)), json!({"user_ids":[uid(&c)],"role":"admin"}))
        .await;
    assert_eq!(n.delete(&format!("/api/conversations/{id}/members/{}", uid(&a)), tok(&a)).await.0, 204);
    let (_, g) = n.get(&format!("/api/conversations/{id}"), tok(&b)).await;
    let owner = g["members"].as_array().unwrap().iter().find(|m| m["role"] == "owner").unwrap().clone();
    assert_eq!(owner["user_id"], c["user"]["id"], "the admin inherits the group");

    let (_, d) = n.post("/api/conversations", Some(tok(&a)), json!({"kind":"direct","members":[uid(&b)]})).await;
    let did = d["id"].as_str().unwrap();
    assert_eq!(n.delete(&format!("/api/conversations/{did}/members/{}", uid(&a)), tok(&a)).await.0, 204);
    assert_eq!(n.get(&format!("/api/conversations/{did}"), tok(&a)).await.0, 404);
    let (status, again) =
        n.post("/api/conversations", Some(tok(&a)), json!({"kind":"direct","members":[uid(&b)]})).await;
    assert_eq!(status, 200);
    assert_eq!(again["id"], did, "the same direct conversation, rejoined");
    assert_eq!(again["members"].as_array().unwrap().len(), 2);
    assert_eq!(n.patch(&format!("/api/conversations/{did}"), tok(&a), json!({"title":"x"})).await.0, 400);
}

#[tokio::test]
async fn a_wrong_method_gets_the_error_body() {
    let n = TestNode::start().await;
    let a = n.signup("alice").await;
    let (status, body) = n.delete("/api/conversations", tok(&a)).await;
    assert_eq!(status, 405);
    assert_eq!(body["error"]["code"], "bad_request");
}

/// Conversation ids are random (UUIDv4), not time-ordered like other ids: they lead the store's
/// keys, and ids that share no leading bytes keep key comparisons short.
#[tokio::test]
async fn conversation_ids_are_random_not_time_ordered() {
    let n = TestNode::start().await;
    let (a, b, c) = (n.signup("alice").await, n.signup("bob").await, n.signup("carol").await);
    let mut ids = Vec::new();
    for other in [&b, &c] {
        let (s, conv) =
            n.post("/api/conversations", Some(tok(&a)), json!({"kind":"direct","members":[uid(other)]})).await;
        assert_eq!(s, 201);
        ids.push(conv["id"].as_str().unwrap().to_string());
    }
    for title in ["one", "two"] {
        let body = json!({"kind":"group","title":title,"members":[uid(&b), uid(&c)]});
        let (s, conv) = n.post("/api/conversations", Some(tok(&a)), body).await;
        assert_eq!(s, 201);
        ids.push(conv["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        assert_eq!(id.len(), 32, "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        // The version digit of a UUID in simple form is its 13th hex digit.
        assert_eq!(&id[12..13], "4", "{id} is not a random (v4) UUID");
    }
    // Created within milliseconds of each other, time-ordered ids would share their first 8
    // digits; random ones share them with a chance of 2^-32.
    assert_ne!(ids[0][..8], ids[1][..8]);
    assert_ne!(ids[2][..8], ids[3][..8]);
    // Other ids stay time-ordered (UUIDv7).
    assert_eq!(&uid(&a)[12..13], "7");
}
