//! Clusters for tests: several real nodes in one process (each on its own runtime, so one can be
//! killed abruptly), sharing one embedded store, over a real Redis server.
//!
//! Redis: the one on 127.0.0.1:6379 when it answers, else a `redis-server` started on a free port
//! for this test process (it stops when the process ends). Every cluster uses its own key prefix.

use std::io::{Read, Write};
use std::net::TcpStream as StdTcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rookery_actors::Metrics;
use rookery_node::server::{open_embedded, start_on};
use rookery_node::{Config, Node};
use rookery_store::Store;
use serde_json::Value;

use crate::support::{test_config, TestNode};

/// Whether a Redis server answers PING at `addr`.
pub fn redis_answers(addr: &str) -> bool {
    let Ok(mut s) = StdTcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_millis(300)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `redis-server` owned by a test (killed on drop), for tests that stop and restart Redis.
pub struct OwnRedis {
    pub port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    pub fn start() -> OwnRedis {
        let port = free_port();
        let mut r = OwnRedis { port, child: None };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (all its data is gone: nothing is kept on disk).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.child = Some(spawn_redis(self.port));
        wait_for_redis(self.port);
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn_redis(port: u16) -> Child {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server must be installed (the test command installs it)")
}

fn wait_for_redis(port: u16) {
    let addr = format!("127.0.0.1:{port}");
    for _ in 0..200 {
        if redis_answers(&addr) {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("redis-server on {addr} did not start");
}

/// The Redis every cluster test shares (isolated by key prefixes).
pub fn shared_redis() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if redis_answers("127.0.0.1:6379") {
            return "redis://127.0.0.1:6379".into();
        }
        // No Redis here: start one that stops with this test process (a shell watches our pid).
        let port = free_port();
        let script = format!(
            "redis-server --port {port} --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 & r=$!; \
             while kill -0 {} 2>/dev/null; do sleep 1; done; kill $r",
            std::process::id()
        );
        // The watcher lives as long as this process; it is never waited for on purpose.
        #[allow(clippy::zombie_processes)]
        Command::new("sh").args(["-c", &script]).stdin(Stdio::null()).spawn().expect("sh");
        wait_for_redis(port);
        format!("redis://127.0.0.1:{port}")
    })
    .clone()
}

/// A unique key prefix for one test's cluster.
pub fn unique_prefix(test: &str) -> String {
    format!("rookery-test-{test}-{}", uuid::Uuid::new_v4().simple())
}

/// One member of a test cluster.
pub struct Member {
    pub id: String,
    /// Clients for this node (the `node` field is unused: the node lives in `running`).
    pub client: TestNode,
    running: Option<(tokio::runtime::Runtime, Node)>,
}

/// Several nodes in one process over one store and one Redis.
pub struct TestCluster {
    pub members: Vec<Member>,
    pub store: Arc<dyn Store>,
    pub config: Config,
    /// The shared data directory (removed when the cluster is dropped).
    _dir: tempfile::TempDir,
}

impl TestCluster {
    /// Starts `n` nodes (`c-1` .. `c-n`) on the shared Redis.
    pub async fn start(test: &str, n: usize) -> TestCluster {
        Self::start_on(&shared_redis(), test, n).await
    }

    /// Starts `n` nodes on the Redis at `url`.
    pub async fn start_on(url: &str, test: &str, n: usize) -> TestCluster {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        config.redis = Some(url.to_string());
        config.redis_prefix = unique_prefix(test);
        config.cluster_heartbeat = Duration::from_millis(100);
        // Short enough to notice deaths quickly, long enough that a loaded machine's late heartbeat
        // does not flap the view.
        config.cluster_ttl = Duration::from_millis(1500);
        config.presence_grace = Duration::from_millis(200);
        let store = open_embedded(&config, &Arc::new(Metrics::new())).unwrap();
        let mut cluster = TestCluster { members: Vec::new(), store, config, _dir: dir };
        for i in 1..=n {
            let m = cluster.launch(&format!("c-{i}")).await.unwrap();
            cluster.members.push(m);
        }
        cluster.wait_for_view(n).await;
        cluster
    }

    /// Starts one node with id `id` on its own runtime.
    pub async fn launch(&self, id: &str) -> anyhow::Result<Member> {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let mut config = self.config.clone();
        config.node_id = Some(id.to_string());
        let store = self.store.clone();
        let started = runtime
            .spawn(async move {
                let (chat, admin) = crate::support::listeners(&config);
                start_on(config, chat, admin, store, Arc::new(Metrics::new())).await
            })
            .await
            .unwrap();
        let node = match started {
            Ok(node) => node,
            Err(e) => {
                // A runtime may not be dropped inside another one.
                runtime.shutdown_background();
                return Err(e);
            }
        };
        let client = TestNode {
            ws_base: format!("ws://{}", node.chat_addr),
            admin_base: format!("http://{}", node.admin_addr),
            base: format!("http://{}", node.chat_addr),
            node: None,
            http: reqwest::Client::new(),
            dir: tempfile::tempdir().unwrap(),
        };
        Ok(Member { id: id.to_string(), client, running: Some((runtime, node)) })
    }

    /// The node `i` (from 0) for clients.
    pub fn node(&self, i: usize) -> &TestNode {
        &self.members[i].client
    }

    /// Kills node `i` abruptly: its runtime stops with every task in it (actors, sockets,
    /// heartbeats), as in a crash. Writes it had handed to the shared store may still land.
    pub fn kill(&mut self, i: usize) {
        if let Some((runtime, node)) = self.members[i].running.take() {
            drop(node);
            runtime.shutdown_background();
        }
    }

    /// Stops node `i` gracefully (a clean leave).
    pub async fn stop(&mut self, i: usize) {
        if let Some((runtime, node)) = self.members[i].running.take() {
            runtime.spawn(node.stop()).await.unwrap().unwrap();
            runtime.shutdown_background();
        }
    }

    /// The node ids node `i` currently sees (from its console's API).
    pub async fn view_of(&self, i: usize) -> Vec<String> {
        let body = self.admin_get(i, "/admin/api/nodes").await;
        body["nodes"].as_array().unwrap().iter().map(|n| n["node_id"].as_str().unwrap().to_string()).collect()
    }

    /// A GET on node `i`'s admin API.
    pub async fn admin_get(&self, i: usize, path: &str) -> Value {
        let t = self.node(i);
        let r = t
            .http
            .get(format!("{}{path}", t.admin_base))
            .bearer_auth(self.config.admin_token.as_deref().unwrap())
            .send()
            .await
            .unwrap();
        r.json().await.unwrap()
    }

    /// Waits until every running node sees `n` nodes.
    pub async fn wait_for_view(&self, n: usize) {
        for i in 0..self.members.len() {
            if self.members[i].running.is_none() {
                continue;
            }
            crate::support::eventually(&format!("node {i} to see {n} nodes"), || async move {
                self.view_of(i).await.len() == n
            })
            .await;
        }
    }

    /// Which node (index) owns `conv`, as node 0 sees it.
    pub async fn owner_of(&self, conv: &str) -> usize {
        let body = self.admin_get(self.first_running(), &format!("/admin/api/conversations?q={conv}")).await;
        let owner = body["conversations"][0]["node"].as_str().expect("conversation listed").to_string();
        self.members.iter().position(|m| m.id == owner).expect("owner is a member")
    }

    fn first_running(&self) -> usize {
        self.members.iter().position(|m| m.running.is_some()).expect("a node runs")
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some((runtime, node)) = m.running.take() {
                drop(node);
                runtime.shutdown_background();
            }
        }
    }
}
