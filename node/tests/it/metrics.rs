//! `/metrics` on the admin listener, updated by real traffic.

use crate::support::*;

#[tokio::test]
async fn metrics_follow_real_traffic() {
    let n = TestNode::start().await;
    let (a, b) = (n.signup("alice").await, n.signup("bob").await);
    let id = n.group(&a, &[&b]).await;
    let mut aws = n.ws(&a).await;
    let mut bws = n.ws(&b).await;
    for i in 0..5 {
        aws.send_msg(&id, &format!("k{i}"), "x").await;
    }
    for _ in 0..5 {
        bws.expect_op("msg").await;
    }
    let text = n.metrics().await;
    for name in [
        "rookery_ws_connections",
        "rookery_sessions_active",
        "rookery_groups_active",
        "rookery_messages_received_total",
        "rookery_messages_delivered_total",
        "rookery_message_ack_seconds_bucket",
        "rookery_store_write_seconds_bucket",
        "rookery_store_batch_jobs_bucket",
        "rookery_actor_restarts_total",
        "rookery_slow_consumer_disconnects_total",
        "rookery_cluster_nodes",
        "rookery_http_requests_total",
        "process_resident_memory_bytes",
    ] {
        assert!(text.contains(name), "{name} missing");
    }
    assert_eq!(metric(&text, "rookery_ws_connections"), 2.0);
    assert_eq!(metric(&text, "rookery_sessions_active"), 2.0);
    assert_eq!(metric(&text, "rookery_messages_received_total"), 5.0);
    // Each message went to alice's and bob's session.
    assert_eq!(metric(&text, "rookery_messages_delivered_total"), 10.0);
    assert_eq!(metric(&text, "rookery_message_ack_seconds_count"), 5.0);
    assert!(metric(&text, "rookery_store_write_seconds_count") >= 5.0);
    // The stages of an ack: every send waited for its actor, every append for its turn.
    assert_eq!(metric(&text, "rookery_conversation_send_wait_seconds_count"), 5.0);
    let commits = metric(&text, "rookery_conversation_commit_wait_seconds_count");
    assert!((1.0..=5.0).contains(&commits), "{commits} appends for 5 sends");
    // Every write went through a batch: the batch sizes add up to at least the 5 appends
    // (the signups and the conversation were written too).
    assert!(metric(&text, "rookery_store_batch_jobs_sum") >= 5.0);
    assert!(metric(&text, "rookery_store_batch_jobs_count") >= 1.0);
    assert_eq!(metric(&text, "rookery_cluster_nodes"), 1.0);
    assert_eq!(metric(&text, "rookery_http_requests_total{route=\"/api/auth/signup\",status=\"201\"}"), 2.0);
    assert!(!text.contains(uid(&a)), "no user ids in labels");
    drop(aws);
    eventually("connections to drop", || async { metric(&n.metrics().await, "rookery_ws_connections") == 1.0 }).await;
    // Unknown paths are counted under one label, not by raw path.
    n.get("/api/no/such/route/xyz", tok(&a)).await;
    let text = n.metrics().await;
    assert!(text.contains("route=\"unmatched\""));
    assert!(!text.contains("xyz"));
}

#[tokio::test]
async fn health_and_readiness() {
    let n = TestNode::start().await;
    let r: serde_json::Value = n.http.get(n.url("/healthz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["status"], "ok");
    assert!(r["node_id"].as_str().unwrap().starts_with("node-"));
    let r = n.http.get(n.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = n.http.get(format!("{}/admin/api/overview", n.admin_base)).send().await.unwrap();
    assert_eq!(r.status(), 401, "the admin API needs the admin token");
    let r = n
        .http
        .get(format!("{}/admin/api/overview", n.admin_base))
        .bearer_auth("test-admin-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
