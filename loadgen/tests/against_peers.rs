//! The load generator's peer adapters against the benchmark suite's real peers (`bench/raw`,
//! the transport ceiling, and `bench/socketio`, the Socket.IO reference server): the group and
//! direct scenarios deliver every message to every other member once and in order, as the
//! suite's runs need.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A peer server's process, killed when dropped.
struct Peer {
    child: Child,
    url: String,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port on 127.0.0.1.
fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// Starts `cmd` (a server told to listen on `addr`) and waits until it accepts connections.
fn start(mut cmd: Command, addr: SocketAddr) -> Peer {
    let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let peer = Peer { child, url: format!("http://{addr}") };
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{cmd:?} did not start listening on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
    peer
}

/// The raw peer, built first: it is a binary of another package of the workspace, which this
/// test's build does not make. It lands beside the load generator.
fn raw_peer() -> Peer {
    let built = Command::new(env!("CARGO")).args(["build", "--quiet", "-p", "rookery-raw-peer"]).status().unwrap();
    assert!(built.success(), "building rookery-raw-peer");
    let addr = free_addr();
    let mut cmd = Command::new(PathBuf::from(env!("CARGO_BIN_EXE_rookery-loadgen")).with_file_name("rookery-raw-peer"));
    cmd.args(["--listen", &addr.to_string()]);
    start(cmd, addr)
}

/// The Socket.IO reference server on Node.js. Its packages are installed by `scripts/test.sh`
/// (`npm ci` in `bench/socketio`).
fn socketio_peer() -> Peer {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/socketio");
    assert!(
        dir.join("node_modules/socket.io").is_dir(),
        "bench/socketio has no node_modules: run `npm ci` there (scripts/test.sh does)"
    );
    let addr = free_addr();
    let mut cmd = Command::new("node");
    cmd.arg(dir.join("server.js")).args(["--port", &addr.port().to_string()]);
    start(cmd, addr)
}

/// Runs the load generator against `peer` with `--target target`; its exit code and report.
fn loadgen(peer: &Peer, target: &str, args: &[&str]) -> (i32, serde_json::Value) {
    let out = tempfile::NamedTempFile::new().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_rookery-loadgen"))
        .args(["run", "--quiet", "--target", target, "--url", &peer.url, "--json", out.path().to_str().unwrap()])
        .args(args)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    let report = std::fs::read(out.path()).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    (status.code().unwrap_or(-1), report)
}

/// Group (5 members) and direct runs of one second: every message reached every other member
/// once, in order.
fn scenarios_verify(peer: &Peer, target: &str) {
    for (scenario, group, recipients) in [("group", "5", 4), ("direct", "2", 1)] {
        let args = ["--scenario", scenario, "--users", "20", "--group-size", group, "--rate", "5", "--duration", "1"];
        let (code, r) = loadgen(peer, target, &[&args[..], &["--verify"]].concat());
        assert_eq!(code, 0, "{target} {scenario}: {r}");
        let acked = r["acked"].as_u64().unwrap();
        assert!(acked > 0, "{target} {scenario}: {r}");
        let v = &r["verify"];
        assert_eq!(v["expected"].as_u64(), Some(acked * recipients), "{target} {scenario}: every other member: {r}");
        assert_eq!(r["delivered"], v["expected"], "{target} {scenario}: {r}");
        for k in ["missing", "duplicated", "reordered"] {
            assert_eq!(v[k], 0, "{target} {scenario} {k}: {r}");
        }
    }
}

#[test]
fn the_raw_adapter_verifies_against_the_raw_peer() {
    scenarios_verify(&raw_peer(), "raw");
}

#[test]
fn the_socketio_adapter_verifies_against_the_socketio_server() {
    scenarios_verify(&socketio_peer(), "socketio");
}
