//! The load generator against a real Rookery node: scenarios run, the delivery check passes,
//! thresholds set the exit code, and the JSON report has the figures.

use std::process::Command;
use std::time::Duration;

use rookery_node::Config;
use tokio::net::TcpListener;

const ADMIN_TOKEN: &str = "loadgen-test-admin-token";

struct Node {
    node: rookery_node::Node,
    _dir: tempfile::TempDir,
}

async fn node() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::with_defaults(dir.path());
    config.admin_token = Some(ADMIN_TOKEN.into());
    // The history scenario fills its conversation over HTTP as one user.
    config.api_write_rate_limit = 0.0;
    let chat = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    Node { node: rookery_node::start(config, chat, admin).await.unwrap(), _dir: dir }
}

/// Runs the loadgen binary (blocking, on a helper thread) and returns its exit code and report.
async fn loadgen(n: &Node, args: &[&str]) -> (i32, serde_json::Value) {
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rookery-loadgen"));
    cmd.args(["run", "--quiet", "--url", &format!("http://{}", n.node.chat_addr)])
        .args(["--admin-url", &format!("http://{}", n.node.admin_addr), "--admin-token", ADMIN_TOKEN])
        .args(["--json", out.path().to_str().unwrap()])
        .args(args);
    let status = tokio::task::spawn_blocking(move || cmd.status().unwrap()).await.unwrap();
    let report = std::fs::read(out.path()).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    (status.code().unwrap_or(-1), report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_scenario_delivers_everything_and_verifies() {
    let n = node().await;
    let (code, r) = loadgen(
        &n,
        &[
            "--scenario",
            "group",
            "--users",
            "20",
            "--group-size",
            "5",
            "--rate",
            "10",
            "--duration",
            "2",
            "--ramp",
            "0.2",
            "--verify",
        ],
    )
    .await;
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["target"], "rookery");
    assert!(r["acked"].as_u64().unwrap() >= 300, "{r}");
    assert_eq!(r["sent"], r["acked"]);
    assert_eq!(r["delivery_ratio"], 1.0);
    assert_eq!(r["verify"]["missing"], 0);
    assert_eq!(r["verify"]["duplicated"], 0);
    assert_eq!(r["verify"]["reordered"], 0);
    assert_eq!(r["verify"]["lost"], 0, "every acked message is in the stored history");
    assert_eq!(r["verify"]["stored_twice"], 0);
    assert_eq!(r["verify"]["expected"].as_u64().unwrap(), r["acked"].as_u64().unwrap() * 4);
    assert!(r["ack"]["p99_ms"].as_f64().unwrap() > 0.0);
    assert!(r["e2e"]["count"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_and_fanout_scenarios_run() {
    let n = node().await;
    let (code, r) = loadgen(
        &n,
        &["--scenario", "direct", "--users", "10", "--rate", "5", "--duration", "1", "--ramp", "0.2", "--verify"],
    )
    .await;
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["verify"]["expected"], r["acked"], "one recipient per direct message");
    let (code, r) = loadgen(
        &n,
        &["--scenario", "fanout", "--users", "30", "--rate", "20", "--duration", "1", "--ramp", "0.2", "--verify"],
    )
    .await;
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["verify"]["expected"].as_u64().unwrap(), r["acked"].as_u64().unwrap() * 29);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thresholds_set_the_exit_code() {
    let n = node().await;
    let small =
        ["--scenario", "group", "--users", "4", "--group-size", "2", "--rate", "2", "--duration", "1", "--ramp", "0"];
    for threshold in [["--min-delivery", "1.01"], ["--max-p99-ms", "0.000001"]] {
        let args: Vec<&str> = small.iter().chain(threshold.iter()).copied().collect();
        let (code, _) = loadgen(&n, &args).await;
        assert_eq!(code, 3, "{threshold:?} must fail the run");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_storm_idle_and_history_report_their_figures() {
    let n = node().await;
    let (code, r) = loadgen(&n, &["--scenario", "connect-storm", "--users", "100", "--concurrency", "32"]).await;
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["connect"]["established"], 100);
    assert!(r["connect"]["per_s"].as_f64().unwrap() > 0.0);
    let pid = std::process::id().to_string();
    let (code, r) = loadgen(
        &n,
        &[
            "--scenario",
            "idle",
            "--users",
            "50",
            "--duration",
            "0.5",
            "--ramp",
            "0.2",
            "--drain",
            "0",
            "--server-pid",
            &pid,
        ],
    )
    .await;
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["idle"]["established"], 50);
    assert!(r["idle"]["server_rss_after"].as_u64().unwrap() > 0);
    let (code, r) =
        loadgen(&n, &["--scenario", "history", "--users", "4", "--duration", "1", "--history-messages", "200"]).await;
    assert_eq!(code, 0, "{r}");
    assert!(r["history"]["pages"].as_u64().unwrap() > 0);
    assert_eq!(r["history"]["via"], "http");
    assert_eq!(r["history"]["messages"].as_u64().unwrap(), 50 * r["history"]["pages"].as_u64().unwrap());
    // The same history replayed with WebSocket `sync`s, each from a position below the 200
    // stored messages: every replay holds at least one message and at most all of them.
    let (code, r) = loadgen(
        &n,
        &[
            "--scenario",
            "history",
            "--users",
            "2",
            "--duration",
            "1",
            "--history-messages",
            "200",
            "--history-via",
            "ws",
        ],
    )
    .await;
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["history"]["via"], "ws");
    let (replays, messages) = (r["history"]["pages"].as_u64().unwrap(), r["history"]["messages"].as_u64().unwrap());
    assert!(replays > 0 && (replays..=200 * replays).contains(&messages), "{replays} replays, {messages} messages");
    // Paced: page n is due at n / rate, so one reader at 10 pages/s reads at most 11 in 1 s.
    let (code, r) = loadgen(
        &n,
        &[
            "--scenario",
            "history",
            "--users",
            "1",
            "--duration",
            "1",
            "--history-messages",
            "200",
            "--history-rate",
            "10",
        ],
    )
    .await;
    assert_eq!(code, 0, "{r}");
    let pages = r["history"]["pages"].as_u64().unwrap();
    assert!((1..=11).contains(&pages), "{pages} pages at 10 pages/s for 1 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_reconnects_and_syncs_without_losses() {
    let n = node().await;
    // Kick every session mid-run by closing them from the node's side; the load generator
    // reconnects, sends `sync`, and the delivery check still passes.
    let hub = n.node.app.hub.clone();
    let kicker = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        for s in hub.sessions.all() {
            s.close_with(4003);
        }
    });
    let (code, r) = loadgen(
        &n,
        &[
            "--scenario",
            "group",
            "--users",
            "10",
            "--group-size",
            "5",
            "--rate",
            "20",
            "--duration",
            "3",
            "--ramp",
            "0.2",
            "--verify",
            "--drain",
            "5",
        ],
    )
    .await;
    kicker.await.unwrap();
    assert_eq!(code, 0, "{r}");
    assert!(r["reconnects"].as_u64().unwrap() >= 10, "{r}");
    assert_eq!(r["verify"]["missing"], 0, "{r}");
    // Sends cut off by the kick were sent again with their client_id: stored once each.
    assert_eq!(r["verify"]["lost"], 0, "{r}");
    assert_eq!(r["verify"]["stored_twice"], 0, "{r}");
    assert_eq!(r["sent"], r["acked"], "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_waits_for_the_answers_of_a_stalled_conversation() {
    let n = node().await;
    // Once messages flow, the one conversation stops handling anything for 3 s, past the end
    // of sending (2 s), even if messages start flowing late: the last sends are answered only
    // during the drain.
    let hub = n.node.app.hub.clone();
    let staller = tokio::spawn(async move {
        let conv = loop {
            let flowing = hub.fanned_out.iter().find(|e| *e.value() > 0).map(|e| e.key().clone());
            if let Some(conv) = flowing {
                break conv;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        let stall = rookery_actors::ConvMsg::InjectStall(std::time::Duration::from_secs(3));
        hub.router.route(&conv, stall).await.unwrap();
    });
    let (code, r) = loadgen(
        &n,
        &[
            "--scenario",
            "group",
            "--users",
            "4",
            "--group-size",
            "4",
            "--rate",
            "10",
            "--duration",
            "2",
            "--ramp",
            "0",
            "--verify",
            "--drain",
            "8",
        ],
    )
    .await;
    staller.await.unwrap();
    assert_eq!(code, 0, "{r}");
    assert!(r["ack"]["max_ms"].as_f64().unwrap() >= 1000.0, "the stall held acks back: {r}");
    assert_eq!(r["sent"], r["acked"], "every send answered within the drain: {r}");
    assert_eq!(r["verify"]["missing"], 0, "{r}");
    assert_eq!(r["verify"]["expected"].as_u64().unwrap(), r["acked"].as_u64().unwrap() * 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_starts_late_gets_what_was_sent_to_it_meanwhile() {
    let n = node().await;
    // The second session to open starts 1.5 s late, well past the start of sending (0.2 s
    // after the connects): its peer's first messages are stored while it is not yet
    // registered, so they reach it only through the `sync` every connection sends once up.
    n.node.app.hub.session_start_delays.lock().extend([Duration::ZERO, Duration::from_millis(1500)]);
    let (code, r) = loadgen(
        &n,
        &[
            "--scenario",
            "direct",
            "--users",
            "2",
            "--rate",
            "10",
            "--duration",
            "3",
            "--ramp",
            "0",
            "--verify",
            "--drain",
            "5",
        ],
    )
    .await;
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["verify"]["missing"], 0, "{r}");
    assert_eq!(r["verify"]["duplicated"], 0, "{r}");
    assert_eq!(r["verify"]["expected"], r["acked"], "{r}");
    assert!(r["acked"].as_u64().unwrap() >= 50, "{r}");
}
