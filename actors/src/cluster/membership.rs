//! Cluster membership: every node heartbeats an expiring key in Redis and reads everybody
//! else's, and the result is the node's [`View`].
//!
//! Keys (all under the cluster's prefix):
//! - `<p>:alive:<node>`: the node's [`NodeInfo`] as JSON, set with a TTL of `ttl` (default 3 s)
//!   every `heartbeat` (default 1 s). A node that stops heartbeating drops out of every view
//!   within `ttl + heartbeat`.
//! - `<p>:nodes`: the set of node ids ever registered; ids whose key expired are pruned.
//!
//! Node ids are unique: a heartbeat only refreshes a key that is absent or that carries this
//! process's own `instance` token (a Lua script makes the check and the write atomic), so a second
//! process started with a taken id is refused at start. A node that was declared dead and comes
//! back simply heartbeats again and reappears in the views.
//!
//! While Redis is unreachable the view is frozen at its last value (nobody can see anybody's
//! heartbeats, so dropping peers would only move conversations for nothing) and `redis_up` is
//! false; the node keeps serving what it owns and rejoins when Redis answers again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

/// One member as the cluster sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeInfo {
    pub id: Arc<str>,
    /// The chat (HTTP + WebSocket) address.
    pub chat_addr: String,
    /// The ops console address.
    pub admin_addr: String,
    /// Random per process: tells a restarted node from its previous life.
    pub instance: String,
    pub started_ms: i64,
    /// When this record was written (the node's clock).
    pub heartbeat_ms: i64,
    /// Open sessions at the last heartbeat.
    pub sessions: u64,
    /// Running conversation actors at the last heartbeat.
    pub conversations: u64,
}

/// The members this node currently believes alive, itself included, sorted by id.
#[derive(Debug, Clone)]
pub struct View {
    pub nodes: Vec<NodeInfo>,
    pub ids: Arc<[Arc<str>]>,
    /// When the view was last confirmed against Redis.
    pub confirmed: Instant,
    /// Whether the last heartbeat reached Redis.
    pub redis_up: bool,
}

impl View {
    pub(crate) fn new(mut nodes: Vec<NodeInfo>, redis_up: bool) -> View {
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        nodes.dedup_by(|a, b| a.id == b.id);
        let ids = nodes.iter().map(|n| n.id.clone()).collect();
        View { nodes, ids, confirmed: Instant::now(), redis_up }
    }
}

/// Why joining failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("node id {0} is in use by another running node; give each node its own --node-id")]
    IdTaken(String),
    #[error("Redis is unreachable: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Timing of membership.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How often a node heartbeats and re-reads the view. Default 1 s.
    pub heartbeat: Duration,
    /// How long a heartbeat keeps a node alive. Default 3 s.
    pub ttl: Duration,
}

const HEARTBEAT: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, rec = pcall(cjson.decode, cur)
  if ok and rec['instance'] ~= ARGV[1] then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[4])
return 1
"#;

/// Reads and writes membership records.
#[derive(Clone)]
pub struct Membership {
    prefix: Arc<str>,
    conn: ConnectionManager,
    script: Arc<redis::Script>,
    pub timing: Timing,
}

impl Membership {
    pub fn new(prefix: &str, conn: ConnectionManager, timing: Timing) -> Self {
        Membership { prefix: prefix.into(), conn, script: Arc::new(redis::Script::new(HEARTBEAT)), timing }
    }

    fn alive_key(&self, id: &str) -> String {
        format!("{}:alive:{id}", self.prefix)
    }

    fn nodes_key(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    /// Writes this node's record.
    ///
    /// # Errors
    /// `IdTaken` when another live process holds the id; `Redis` when Redis cannot be reached.
    pub async fn heartbeat(&self, me: &NodeInfo) -> Result<(), JoinError> {
        let json = serde_json::to_string(me).expect("node info encodes");
        let mut conn = self.conn.clone();
        let ok: i64 = self
            .script
            .key(self.alive_key(&me.id))
            .key(self.nodes_key())
            .arg(&me.instance)
            .arg(json)
            .arg(self.timing.ttl.as_millis() as u64)
            .arg(&*me.id)
            .invoke_async(&mut conn)
            .await?;
        if ok == 1 {
            Ok(())
        } else {
            Err(JoinError::IdTaken(me.id.to_string()))
        }
    }

    /// Every live member's record.
    ///
    /// # Errors
    /// When Redis cannot be reached.
    pub async fn members(&self) -> Result<Vec<NodeInfo>, redis::RedisError> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = redis::cmd("SMEMBERS").arg(self.nodes_key()).query_async(&mut conn).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.alive_key(id)).collect();
        let records: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
        let mut live = Vec::new();
        let mut dead = Vec::new();
        for (id, rec) in ids.into_iter().zip(records) {
            match rec.and_then(|r| serde_json::from_str::<NodeInfo>(&r).ok()) {
                Some(info) => live.push(info),
                None => dead.push(id),
            }
        }
        if !dead.is_empty() {
            // A node whose key expired between the two reads re-adds itself on its next beat.
            let _: Result<(), _> = redis::cmd("SREM").arg(self.nodes_key()).arg(&dead).query_async(&mut conn).await;
        }
        Ok(live)
    }

    /// Removes this node's record (a clean leave), if it is still ours.
    pub async fn leave(&self, me: &NodeInfo) {
        let mut conn = self.conn.clone();
        let key = self.alive_key(&me.id);
        let current: Result<Option<String>, _> = redis::cmd("GET").arg(&key).query_async(&mut conn).await;
        let ours = current
            .ok()
            .flatten()
            .and_then(|r| serde_json::from_str::<NodeInfo>(&r).ok())
            .is_some_and(|r| r.instance == me.instance);
        if ours {
            let _: Result<(), _> = redis::cmd("DEL").arg(&key).query_async(&mut conn).await;
            let _: Result<(), _> = redis::cmd("SREM").arg(self.nodes_key()).arg(&*me.id).query_async(&mut conn).await;
        }
    }
}
