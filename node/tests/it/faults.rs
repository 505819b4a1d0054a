//! Faults: the data directory's disk filling up (the store's free-space reserve, and a write that
//! really fails for lack of space), the wall clock jumping under the real binary, and SIGKILLs
//! under `rookery-loadgen --verify`.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::support::*;

const MIB: u64 = 1024 * 1024;

/// A tmpfs mounted on a fresh directory for one test, unmounted when dropped. Mounting needs
/// root (or CAP_SYS_ADMIN), which the test command has; each test says what it does without.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size_mib: u64) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount -t tmpfs failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file until at most `left` bytes are available.
    fn fill_until_available(&self, left: u64) -> Filler {
        let path = self.path().join("filler");
        let mut f = File::create(&path).unwrap();
        let chunk = vec![0u8; MIB as usize];
        loop {
            let available = available_bytes(self.path());
            if available <= left {
                break;
            }
            let n = (available - left).min(MIB) as usize;
            f.write_all(&chunk[..n]).unwrap();
            f.sync_all().unwrap();
        }
        Filler { path }
    }

    /// Writes a file until the filesystem refuses more (`ENOSPC`).
    fn fill_completely(&self) -> Filler {
        let path = self.path().join("filler");
        let mut f = File::create(&path).unwrap();
        for size in [MIB as usize, 4096, 1] {
            let chunk = vec![0u8; size];
            while f.write_all(&chunk).is_ok() {}
        }
        let _ = f.sync_all();
        Filler { path }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// The file that fills a disk; deleting it gives the space back.
struct Filler {
    path: PathBuf,
}

impl Filler {
    fn remove(self) {
        std::fs::remove_file(&self.path).unwrap();
    }
}

/// Bytes available to unprivileged users on the filesystem of `dir`.
fn available_bytes(dir: &Path) -> u64 {
    let out = Command::new("stat").args(["-f", "-c", "%a %S"]).arg(dir).output().expect("stat -f");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut parts = text.split_whitespace().map(|p| p.parse::<u64>().unwrap());
    parts.next().unwrap() * parts.next().unwrap()
}

async fn readyz(node: &TestNode) -> (u16, Value) {
    let r = node.http.get(node.url("/readyz")).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Every message of the history once, with seqs 1, 2, 3, ... and every acked `client_id` at the
/// seq its ack gave.
fn assert_contiguous_with(history: &[Value], acked: &[(String, u64)]) {
    for (i, m) in history.iter().enumerate() {
        assert_eq!(m["seq"].as_u64().unwrap(), i as u64 + 1, "seq gap or reorder in {history:?}");
    }
    let ids: BTreeSet<&str> = history.iter().map(|m| m["client_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), history.len(), "a client_id stored twice");
    for (client_id, seq) in acked {
        let m = history.iter().find(|m| m["client_id"] == client_id.as_str());
        let m = m.unwrap_or_else(|| panic!("acked message {client_id} (seq {seq}) lost"));
        assert_eq!(m["seq"].as_u64().unwrap(), *seq, "{client_id}");
    }
}

fn ack_of(ack: &Value) -> (String, u64) {
    assert_eq!(ack["op"], "ack", "{ack}");
    (ack["client_id"].as_str().unwrap().to_string(), ack["seq"].as_u64().unwrap())
}

/// A node and a group of two in which alice has sent ten messages.
struct Chat {
    node: TestNode,
    alice: Value,
    bob: Value,
    conv: String,
    aws: Ws,
    /// `(client_id, seq)` of every acked message.
    acked: Vec<(String, u64)>,
}

impl Chat {
    /// On a small filesystem, with a free-space reserve of `reserve_mb` (0: none).
    async fn on(mount: &Tmpfs, reserve_mb: u64) -> Chat {
        let data = mount.path().join("data");
        Chat::with(
            TestNode::start_with(|c| {
                c.data_dir = data;
                c.store_min_free_mb = reserve_mb;
                c.send_rate_limit = 0.0;
            })
            .await,
        )
        .await
    }

    /// On `node`.
    async fn with(node: TestNode) -> Chat {
        let (alice, bob) = (node.signup("alice").await, node.signup("bob").await);
        let conv = node.group(&alice, &[&bob]).await;
        let mut aws = node.ws(&alice).await;
        let mut acked = Vec::new();
        for i in 0..10 {
            acked.push(ack_of(&aws.send_msg(&conv, &format!("before-{i}"), "before the disk filled").await));
        }
        Chat { node, alice, bob, conv, aws, acked }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_below_the_reserve_refuses_writes_serves_reads_and_recovers() {
    let mount = match Tmpfs::mount(64) {
        Ok(m) => m,
        Err(why) => {
            eprintln!(
                "faults: cannot mount a small filesystem for the data directory ({why}); checking the \
                 reserve against this machine's free space instead, across restarts"
            );
            return reserve_above_the_real_free_space().await;
        }
    };
    let Chat { node, alice, bob, conv, mut aws, mut acked } = Chat::on(&mount, 16).await;

    // 8 MiB left: under the 16 MiB reserve.
    let filler = mount.fill_until_available(8 * MIB);
    eventually("/readyz to answer 503", || async { readyz(&node).await.0 == 503 }).await;
    let (_, why) = readyz(&node).await;
    assert_eq!(why["error"]["code"], "unavailable", "{why}");
    assert!(why["error"]["message"].as_str().unwrap().contains("reserve"), "{why}");

    // Writes are refused with `unavailable`, over WebSocket and HTTP; nothing is acked.
    let refused = aws.send_msg(&conv, "during-ws", "while the disk is full").await;
    assert_eq!((refused["op"].as_str(), refused["code"].as_str()), (Some("error"), Some("unavailable")), "{refused}");
    let path = format!("/api/conversations/{conv}/messages");
    let (status, body) =
        node.post(&path, Some(tok(&alice)), json!({"client_id": "during-http", "body": "while full"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("unavailable")), "{body}");

    // A bystander still reads: history over HTTP, and `sync` over a new connection.
    assert_contiguous_with(&node.history(&conv, tok(&bob)).await, &acked);
    let mut bws = node.ws(&bob).await;
    bws.send(json!({"op": "sync", "since": {conv.as_str(): 0}})).await;
    let synced = bws.expect_op("synced").await;
    assert_eq!(synced["convs"][conv.as_str()], 10, "{synced}");

    // Space returns: writes resume, the refused sends go through when retried with the same
    // client_id, and seq continues with no gap.
    filler.remove();
    eventually("/readyz to answer 200", || async { readyz(&node).await.0 == 200 }).await;
    let ack = ack_of(&aws.send_msg(&conv, "during-ws", "while the disk is full").await);
    assert_eq!(ack.1, 11);
    acked.push(ack);
    let (status, m) =
        node.post(&path, Some(tok(&alice)), json!({"client_id": "during-http", "body": "while full"})).await;
    assert_eq!(status, 201, "{m}");
    acked.push(("during-http".into(), m["seq"].as_u64().unwrap()));
    for i in 0..5 {
        acked.push(ack_of(&aws.send_msg(&conv, &format!("after-{i}"), "space is back").await));
    }
    let history = node.history(&conv, tok(&bob)).await;
    assert_eq!(history.len(), 17);
    assert_contiguous_with(&history, &acked);
}

/// Without a filesystem of our own: a node whose reserve is above this machine's free space
/// refuses writes and serves reads; restarted without the reserve on the same data, it writes
/// again with nothing lost. (Recovery without a restart needs space that comes and goes, which
/// only a filesystem of the test's own gives.)
async fn reserve_above_the_real_free_space() {
    let Chat { node, alice, bob, conv, aws, mut acked } =
        Chat::with(TestNode::start_with(|c| c.send_rate_limit = 0.0).await).await;
    drop(aws);
    let dir = node.stop().await;

    let free_mib = available_bytes(dir.path()) / MIB;
    let mut config = test_config(dir.path());
    config.store_min_free_mb = free_mib + 1024;
    let node = TestNode::start_in(dir, config).await;
    eventually("/readyz to answer 503", || async { readyz(&node).await.0 == 503 }).await;
    let mut aws = node.ws(&alice).await;
    let refused = aws.send_msg(&conv, "refused", "x").await;
    assert_eq!(refused["code"], "unavailable", "{refused}");
    assert_contiguous_with(&node.history(&conv, tok(&bob)).await, &acked);
    drop(aws);
    let dir = node.stop().await;

    let mut config = test_config(dir.path());
    config.store_min_free_mb = 0;
    let node = TestNode::start_in(dir, config).await;
    let mut aws = node.ws(&alice).await;
    acked.push(ack_of(&aws.send_msg(&conv, "refused", "x").await));
    assert_contiguous_with(&node.history(&conv, tok(&bob)).await, &acked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_fails_for_lack_of_space_is_not_acked_and_the_store_recovers() {
    let mount = match Tmpfs::mount(64) {
        Ok(m) => m,
        Err(why) => {
            // A write that really fails needs a disk that really fills: there is no stand-in.
            eprintln!("faults: skipping the full-disk write test: cannot mount a small filesystem ({why})");
            return;
        }
    };
    let Chat { node, bob, conv, mut aws, mut acked, .. } = Chat::on(&mount, 0).await;

    // No reserve: the store's own write fails. A few sends may still fit in blocks its files
    // already hold; send until one is refused, and keep every ack.
    let filler = mount.fill_completely();
    let body = "y".repeat(2000);
    let mut refused = None;
    for i in 0..1000 {
        let answer = aws.send_msg(&conv, &format!("full-{i}"), &body).await;
        if answer["op"] == "ack" {
            acked.push(ack_of(&answer));
        } else {
            assert_eq!(answer["code"], "unavailable", "{answer}");
            refused = Some(format!("full-{i}"));
            break;
        }
    }
    let refused = refused.expect("a send on a full disk is refused");
    let (status, why) = readyz(&node).await;
    assert_eq!(status, 503, "{why}");

    // Reads are served meanwhile, and every acked message is there.
    assert_contiguous_with(&node.history(&conv, tok(&bob)).await, &acked);
    let again = aws.send_msg(&conv, "still-full", "y").await;
    assert_eq!(again["code"], "unavailable", "{again}");

    // Space returns: the store reopens itself, the refused send goes through on retry, and the
    // seq it gets follows the last acked one (the failed writes left no gap and took no seq).
    filler.remove();
    eventually("/readyz to answer 200", || async { readyz(&node).await.0 == 200 }).await;
    let last = acked.last().unwrap().1;
    let ack = ack_of(&aws.send_msg(&conv, &refused, &body).await);
    assert_eq!(ack.1, last + 1);
    acked.push(ack);
    acked.push(ack_of(&aws.send_msg(&conv, "still-full", "y").await));
    let history = node.history(&conv, tok(&bob)).await;
    assert_eq!(history.len(), acked.len());
    assert_contiguous_with(&history, &acked);
}

/// libfaketime's multi-threaded build, where Debian's `faketime` package puts it.
fn faketime_library() -> Option<PathBuf> {
    let mut candidates = vec![PathBuf::from("/usr/local/lib/faketime"), PathBuf::from("/usr/lib/faketime")];
    if let Ok(entries) = std::fs::read_dir("/usr/lib") {
        candidates.extend(entries.flatten().map(|e| e.path().join("faketime")));
    }
    candidates.into_iter().map(|d| d.join("libfaketimeMT.so.1")).find(|p| p.exists())
}

/// The node's wall clock, in seconds: the `created_at` of a conversation it creates now, asked by
/// `user` with a token the node issues now (one issued before a forward jump may have expired).
async fn node_clock_s(c: &ProcessClient, user: &str) -> i64 {
    let (s, session) = c.post("/api/auth/login", None, json!({"username": user, "password": "password123"})).await;
    assert_eq!(s, 200, "{session}");
    let (s, g) = c
        .post("/api/conversations", Some(tok(&session)), json!({"kind":"group","title":"clock probe","members":[]}))
        .await;
    assert_eq!(s, 201, "{g}");
    g["created_at"].as_i64().unwrap() / 1000
}

/// Reads whatever arrives on `ws` for `wait` (answering the server's pings); panics on a close.
async fn keep_alive(ws: &mut Ws, wait: Duration) -> Vec<Value> {
    let mut events = Vec::new();
    let deadline = Instant::now() + wait;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match ws.next_within(left).await {
            Some(Next::Event(e)) => events.push(e),
            Some(Next::Closed(code)) => panic!("a session was closed with {code} across a clock jump"),
            None => break,
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wall_clock_jumps_neither_reorder_seq_nor_drop_sessions() {
    let lib = faketime_library().unwrap_or_else(|| {
        panic!(
            "libfaketime is not installed: run scripts/test.sh, which installs Debian's faketime \
             package (or `apt-get install faketime`)"
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let clock = dir.path().join("faketime.rc");
    std::fs::write(&clock, "+0\n").unwrap();
    // Only the wall clock jumps, as it does under an NTP step or `date -s`; the monotonic clock
    // runs on (FAKETIME_DONT_FAKE_MONOTONIC). The offset file is read at every reading of the
    // clock (with libfaketime's cache, threads would see a jump at different moments).
    let env = [
        ("LD_PRELOAD", lib.display().to_string()),
        ("FAKETIME_TIMESTAMP_FILE", clock.display().to_string()),
        ("FAKETIME_NO_CACHE", "1".to_string()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_string()),
    ];
    // Heartbeat every second: silence for two seconds closes a session.
    let flags = ["--heartbeat-ms", "1000", "--send-rate-limit", "0"];
    let mut node = FaketimeNode {
        process: NodeProcess::spawn_with(&dir.path().join("data"), "127.0.0.1:0", "127.0.0.1:0", &flags, &env),
    };
    let c = node.process.client();
    let (alice, bob) = (c.signup("alice").await, c.signup("bob").await);
    c.signup("carol").await;
    let (s, g) = c
        .post("/api/conversations", Some(tok(&alice)), json!({"kind":"group","title":"clock","members":[uid(&bob)]}))
        .await;
    assert_eq!(s, 201, "{g}");
    let conv = g["id"].as_str().unwrap().to_string();
    let mut aws = c.ws(tok(&alice)).await;
    let mut bws = c.ws(tok(&bob)).await;

    let mut acks: Vec<u64> = Vec::new();
    let mut live: Vec<u64> = Vec::new();
    for (step, offset) in [(0, "+0"), (1, "-1d"), (2, "+3h"), (3, "-90m"), (4, "+0")] {
        std::fs::write(&clock, format!("{offset}\n")).unwrap();
        let offset_s: i64 = match offset {
            "-1d" => -86_400,
            "+3h" => 3 * 3600,
            "-90m" => -90 * 60,
            _ => 0,
        };
        // Wait until the node's clock shows the jump, keeping both sessions answering pings
        // meanwhile. (A third user asks: the sessions see nothing of it.)
        let deadline = Instant::now() + PATIENCE;
        loop {
            let node_now = node_clock_s(&c, "carol").await;
            let expected = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64 + offset_s;
            if (node_now - expected).abs() <= 2 {
                break;
            }
            assert!(Instant::now() < deadline, "the node's clock did not move to {offset}");
            live.extend(keep_alive(&mut bws, Duration::from_millis(100)).await.iter().filter_map(msg_seq));
            keep_alive(&mut aws, Duration::from_millis(100)).await;
        }
        // Traffic for three heartbeat intervals after the jump: a heartbeat reading the wall
        // clock would close both sessions here.
        for i in 0..6 {
            let ack = aws.send_msg(&conv, &format!("s{step}-{i}"), offset).await;
            acks.push(ack_of(&ack).1);
            live.extend(keep_alive(&mut bws, Duration::from_millis(500)).await.iter().filter_map(msg_seq));
        }
    }
    // Nothing was dropped, and seq counted on through every jump.
    let n = acks.len() as u64;
    assert_eq!(acks, (1..=n).collect::<Vec<_>>(), "acked seqs");
    while (live.len() as u64) < n {
        match bws.next().await {
            Next::Event(e) => live.extend(msg_seq(&e)),
            Next::Closed(code) => panic!("the bystander's session was closed with {code}"),
        }
    }
    assert_eq!(live, (1..=n).collect::<Vec<_>>(), "seqs delivered live to the bystander");
    let history = c.history(&conv, tok(&bob)).await;
    assert_eq!(history.iter().map(|m| m["seq"].as_u64().unwrap()).collect::<Vec<_>>(), acks);
    // Message times never go back either, even while the clock did.
    let ts: Vec<i64> = history.iter().map(|m| m["ts"].as_i64().unwrap()).collect();
    assert!(ts.windows(2).all(|w| w[0] <= w[1]), "ts went back: {ts:?}");
    node.process.signal("-TERM");
    node.process.wait_exit(Duration::from_secs(10));
}

/// A node under libfaketime. libfaketime keeps a shared-memory segment and a semaphore per
/// process, named by its pid, and leaves them behind; a later process given the same pid under
/// libfaketime would fail to start. Once the node is gone they are removed, however the test
/// ends.
struct FaketimeNode {
    process: NodeProcess,
}

impl Drop for FaketimeNode {
    fn drop(&mut self) {
        let _ = self.process.child.kill();
        let _ = self.process.child.wait();
        let pid = self.process.child.id();
        for name in [format!("faketime_shm_{pid}"), format!("sem.faketime_sem_{pid}")] {
            let _ = std::fs::remove_file(Path::new("/dev/shm").join(name));
        }
    }
}

fn msg_seq(e: &Value) -> Option<u64> {
    (e["op"] == "msg").then(|| e["seq"].as_u64().unwrap())
}

/// The `rookery-loadgen` binary of this build. `cargo test --workspace` builds it (the loadgen's
/// own tests need it); a narrower run needs `cargo build -p rookery-loadgen` first.
fn loadgen_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
    let bin = profile_dir.join("rookery-loadgen");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p rookery-loadgen` (scripts/test.sh does)",
        bin.display()
    );
    let built = bin.metadata().unwrap().modified().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    for src in ["loadgen/src", "protocol/src"] {
        for entry in std::fs::read_dir(repo.join(src)).unwrap().flatten() {
            let changed = entry.metadata().unwrap().modified().unwrap();
            assert!(
                changed <= built,
                "{} is older than {}: rebuild it with `cargo build -p rookery-loadgen`",
                bin.display(),
                entry.path().display()
            );
        }
    }
    bin
}

/// Two free loopback addresses (held together while chosen, so they differ).
fn free_addrs() -> (String, String) {
    let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    (a.local_addr().unwrap().to_string(), b.local_addr().unwrap().to_string())
}

const ADMIN_TOKEN: &str = "faults-admin-token-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkills_under_loadgen_lose_no_acked_message() {
    let loadgen = loadgen_binary();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The same ports for every incarnation: the load generator reconnects to the same address.
    let (listen, admin) = free_addrs();
    let flags = ["--admin-token", ADMIN_TOKEN, "--send-rate-limit", "0"];
    let mut node = NodeProcess::spawn_with(&data, &listen, &admin, &flags, &[]);
    let report = dir.path().join("report.json");
    let mut command = Command::new(&loadgen);
    command
        .args(["run", "--quiet", "--url", &node.base, "--admin-url", &node.admin_base, "--admin-token", ADMIN_TOKEN])
        .args(["--scenario", "group", "--users", "20", "--group-size", "5", "--rate", "10"])
        .args(["--duration", "20", "--ramp", "0.5", "--drain", "10", "--verify", "--json"])
        .arg(&report)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let run = std::thread::spawn(move || command.output().expect("run rookery-loadgen"));
    let loadgen = loadgen.display().to_string();

    let http = reqwest::Client::new();
    for kill in 1..=3 {
        // This incarnation has taken writes: the load is flowing (again).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = match http.get(format!("{}/metrics", node.admin_base)).send().await {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if text.contains("rookery_messages_received_total")
                && metric(&text, "rookery_messages_received_total") >= 100.0
            {
                break;
            }
            assert!(!run.is_finished(), "the load ended before kill {kill}");
            assert!(Instant::now() < deadline, "no load reached the node before kill {kill}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        node.kill();
        node = NodeProcess::spawn_with(&data, &listen, &admin, &flags, &[]);
    }

    let output = tokio::task::spawn_blocking(move || run.join().unwrap()).await.unwrap();
    let summary = String::from_utf8_lossy(&output.stdout);
    let errors = String::from_utf8_lossy(&output.stderr);
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert!(output.status.success(), "loadgen failed: {errors}\n{summary}");
    let v = &r["verify"];
    assert!(v.get("lost").is_some(), "{loadgen} predates the stored-history check: rebuild it");
    assert!(r["acked"].as_u64().unwrap() > 500, "{summary}");
    assert_eq!(v["lost"], 0, "{summary}");
    assert_eq!(v["stored_twice"], 0, "{summary}");
    assert_eq!(v["reordered"], 0, "{summary}");
    assert_eq!(v["missing"], 0, "{summary}");
    assert_eq!(v["duplicated"], 0, "{summary}");
    // Every connection came back after every kill.
    assert!(r["reconnects"].as_u64().unwrap() >= 60, "{summary}");
    node.signal("-TERM");
}
