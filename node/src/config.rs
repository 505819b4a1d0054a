//! The node's configuration: one struct, layered defaults < TOML file < env `ROOKERY_*` < flags,
//! validated once at start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

/// Command line of the `rookery` binary.
#[derive(Debug, Parser)]
#[command(name = "rookery", version, about = "Rookery chat node")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one node.
    Serve(ServeArgs),
    /// Run a cluster of N nodes in one process, sharing one embedded store, over a real Redis:
    /// for trying cluster mode on one machine. Node i (from 0) listens on `--listen` + i and
    /// `--admin-listen` + i and is called `dev-<i+1>` unless `--node-id` gives a prefix.
    DevCluster(DevClusterArgs),
}

/// Flags of `rookery dev-cluster`: the node count, and every flag of `serve` (`--redis` needed).
#[derive(Debug, Clone, Args)]
pub struct DevClusterArgs {
    /// Number of nodes. Default: 3.
    #[arg(long, default_value_t = 3)]
    pub nodes: u16,
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Flags of `rookery serve`. Each is also read from the env var named beside it and from the
/// TOML file given by `--config` (keys as the flag names, with `_` for `-`).
#[derive(Debug, Default, Clone, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "ROOKERY_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Chat and HTTP API listener. Default: 127.0.0.1:8080.
    #[arg(long, env = "ROOKERY_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Ops console listener (metrics, admin API). Default: 127.0.0.1:9090.
    #[arg(long, env = "ROOKERY_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Data directory of the embedded store and the generated secrets. Default: ./data.
    #[arg(long, env = "ROOKERY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// This node's id (1-64 of A-Za-z0-9_-). Default: `node-` and the listener's port; in
    /// cluster mode the host name, `-` and the port.
    #[arg(long, env = "ROOKERY_NODE_ID")]
    pub node_id: Option<String>,
    /// Redis URL (`redis://host:port[/db]`): run as a member of a cluster. Every node of a
    /// cluster needs the same `--jwt-secret` and a unique `--node-id`.
    #[arg(long, env = "ROOKERY_REDIS")]
    pub redis: Option<String>,
    /// Prefix of the cluster's Redis keys and channels (several clusters can share a Redis).
    /// Default: rookery.
    #[arg(long, env = "ROOKERY_REDIS_PREFIX")]
    pub redis_prefix: Option<String>,
    /// Cluster heartbeat period in milliseconds. Default: 1000.
    #[arg(long, env = "ROOKERY_CLUSTER_HEARTBEAT_MS")]
    pub cluster_heartbeat_ms: Option<u64>,
    /// A node that has not heartbeat for this many milliseconds is dead. Default: 3000.
    #[arg(long, env = "ROOKERY_CLUSTER_TTL_MS")]
    pub cluster_ttl_ms: Option<u64>,
    /// ScyllaDB contact points (host:port,...): keep history in ScyllaDB.
    #[arg(long, env = "ROOKERY_SCYLLA")]
    pub scylla: Option<String>,
    /// ScyllaDB keyspace (created and migrated by the node). Default: rookery.
    #[arg(long, env = "ROOKERY_SCYLLA_KEYSPACE")]
    pub scylla_keyspace: Option<String>,
    /// Replication of a new keyspace, as CQL. Default:
    /// `{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}`.
    #[arg(long, env = "ROOKERY_SCYLLA_REPLICATION")]
    pub scylla_replication: Option<String>,
    /// Consistency of reads and writes (`local_quorum`, `quorum`, `one`, ...). Default:
    /// local_quorum. Lightweight transactions use `local_serial`.
    #[arg(long, env = "ROOKERY_SCYLLA_CONSISTENCY")]
    pub scylla_consistency: Option<String>,
    /// Secret that signs access tokens (HS256), at least 32 bytes. Default: generated once and
    /// kept in `<data-dir>/jwt.secret`.
    #[arg(long, env = "ROOKERY_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Bearer token of the admin API, at least 16 bytes. Default: generated at each start and
    /// printed once.
    #[arg(long, env = "ROOKERY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Log format: text or json. Default: text.
    #[arg(long, env = "ROOKERY_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Largest message body in bytes. Default: 8192.
    #[arg(long, env = "ROOKERY_MAX_BODY")]
    pub max_body: Option<usize>,
    /// Largest WebSocket message in bytes; larger ones close with 1009. Default: 65536.
    #[arg(long, env = "ROOKERY_MAX_FRAME")]
    pub max_frame: Option<usize>,
    /// Server ping interval in milliseconds; silence for two intervals closes. Default: 25000.
    #[arg(long, env = "ROOKERY_HEARTBEAT_MS")]
    pub heartbeat_ms: Option<u64>,
    /// Milliseconds without a client frame for a session's actor (`sync`, `presence`, calls)
    /// after which the actor hibernates (stops, keeping the connection and the session's rate
    /// limits; the next such frame starts it again). 0: never. At least 100 otherwise.
    /// Default: 15000.
    #[arg(long, env = "ROOKERY_SESSION_HIBERNATE_MS")]
    pub session_hibernate_ms: Option<u64>,
    /// Open WebSocket connections allowed per client address (more get 429); 0 for no limit.
    /// Default: 10000.
    #[arg(long, env = "ROOKERY_MAX_CONNECTIONS_PER_ADDR")]
    pub max_connections_per_addr: Option<u32>,
    /// Connections the kernel queues for each listener before the node accepts them (the
    /// `listen(2)` backlog, capped by `net.core.somaxconn`). Default: 4096.
    #[arg(long, env = "ROOKERY_LISTEN_BACKLOG")]
    pub listen_backlog: Option<u32>,
    /// Time allowed for an HTTP request head (and an idle keep-alive connection), in
    /// milliseconds. Default: 10000.
    #[arg(long, env = "ROOKERY_HTTP_HEADER_TIMEOUT_MS")]
    pub http_header_timeout_ms: Option<u64>,
    /// HTTP writes (POST, PUT, PATCH, DELETE under `/api`, except sign-up and login, which have
    /// their own limits) per user per second, sustained; bursts of ten times this. 0: no limit.
    /// Default: 10.
    #[arg(long, env = "ROOKERY_API_WRITE_RATE_LIMIT")]
    pub api_write_rate_limit: Option<f64>,
    /// Outbound queue bound per session, in frames. Default: 1024.
    #[arg(long, env = "ROOKERY_OUTBOUND_QUEUE")]
    pub outbound_queue: Option<usize>,
    /// Access token lifetime in seconds. Default: 900.
    #[arg(long, env = "ROOKERY_ACCESS_TTL")]
    pub access_ttl: Option<u64>,
    /// Refresh token lifetime in seconds. Default: 2592000 (30 days).
    #[arg(long, env = "ROOKERY_REFRESH_TTL")]
    pub refresh_ttl: Option<u64>,
    /// Seconds of idleness after which a conversation actor stops. Default: 60.
    #[arg(long, env = "ROOKERY_CONV_IDLE")]
    pub conv_idle: Option<u64>,
    /// Grace period for shutdown in seconds. Default: 10.
    #[arg(long, env = "ROOKERY_SHUTDOWN_GRACE")]
    pub shutdown_grace: Option<u64>,
    /// Failed logins allowed per username per minute. Default: 5.
    #[arg(long, env = "ROOKERY_LOGIN_FAILURES_PER_USER")]
    pub login_failures_per_user: Option<u32>,
    /// Failed logins allowed per client address per minute. Default: 30.
    #[arg(long, env = "ROOKERY_LOGIN_FAILURES_PER_ADDR")]
    pub login_failures_per_addr: Option<u32>,
    /// fsync the store after each group-committed batch. Default: true.
    #[arg(long, env = "ROOKERY_STORE_SYNC")]
    pub store_sync: Option<bool>,
    /// Microseconds the embedded store's group commit waits to gather more writes into a small
    /// batch while writes arrive together (never after a lone write); fewer fsyncs for the
    /// same writes. 0: never wait; at most 100000. Default: 1000.
    #[arg(long, env = "ROOKERY_STORE_COMMIT_DELAY_US")]
    pub store_commit_delay_us: Option<u64>,
    /// Free space, in MiB, to keep on the data directory's filesystem: below it the embedded
    /// store refuses writes (clients get `unavailable`, `/readyz` answers 503) and keeps serving
    /// reads; writes resume when space returns. 0: no reserve. Default: 64.
    #[arg(long, env = "ROOKERY_STORE_MIN_FREE_MB")]
    pub store_min_free_mb: Option<u64>,
    /// Sends per second per session (burst: twice as many); 0 for no limit. Default: 50.
    #[arg(long, env = "ROOKERY_SEND_RATE_LIMIT")]
    pub send_rate_limit: Option<f64>,
    /// Typing frames per second per session (burst 5); 0 for no limit. Default: 2.
    #[arg(long, env = "ROOKERY_TYPING_RATE_LIMIT")]
    pub typing_rate_limit: Option<f64>,
    /// Call signalling frames per second per session (burst: twice as many); 0 for no limit.
    /// Default: 20.
    #[arg(long, env = "ROOKERY_CALL_RATE_LIMIT")]
    pub call_rate_limit: Option<f64>,
    /// Rate-limit refusals within 10 s after which a session is closed with 4008; 0 never.
    /// Default: 100.
    #[arg(long, env = "ROOKERY_ABUSE_THRESHOLD")]
    pub abuse_threshold: Option<u32>,
    /// Milliseconds a user must stay without sessions before `offline` is announced (quick
    /// reconnects announce nothing). Default: 3000.
    #[arg(long, env = "ROOKERY_PRESENCE_GRACE_MS")]
    pub presence_grace_ms: Option<u64>,
    /// Where attachment bytes go: a directory, `file:///dir`, or `s3://bucket` (builds with
    /// the default `s3` feature). Default: `<data-dir>/blobs`.
    #[arg(long, env = "ROOKERY_BLOB_STORE")]
    pub blob_store: Option<String>,
    /// Largest attachment in bytes; larger uploads get 413. Default: 26214400 (25 MiB).
    #[arg(long, env = "ROOKERY_MAX_ATTACHMENT")]
    pub max_attachment: Option<u64>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The validated configuration of a node.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `None`: derived from the bound chat port at start.
    pub node_id: Option<String>,
    pub jwt_secret: Option<String>,
    pub admin_token: Option<String>,
    /// Cluster mode: the Redis URL (`None`: run alone).
    pub redis: Option<String>,
    /// ScyllaDB contact points (`None`: the embedded store in the data directory).
    pub scylla: Option<Vec<String>>,
    pub scylla_keyspace: String,
    pub scylla_replication: String,
    /// A consistency name accepted by `rookery_store::scylla::parse_consistency`.
    pub scylla_consistency: String,
    pub redis_prefix: String,
    pub cluster_heartbeat: Duration,
    pub cluster_ttl: Duration,
    pub log_format: LogFormat,
    pub max_body: usize,
    pub max_frame: usize,
    pub heartbeat: Duration,
    /// `None`: session actors never hibernate.
    pub session_hibernate: Option<Duration>,
    pub http_header_timeout: Duration,
    pub api_write_rate_limit: f64,
    pub outbound_queue: usize,
    pub max_connections_per_addr: u32,
    pub listen_backlog: u32,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub conv_idle: Duration,
    pub shutdown_grace: Duration,
    pub login_failures_per_user: u32,
    pub login_failures_per_addr: u32,
    pub store_sync: bool,
    /// Group commit's gathering wait (zero: none).
    pub store_commit_delay: Duration,
    /// Free-space reserve of the embedded store, in MiB (0: none).
    pub store_min_free_mb: u64,
    pub send_rate_limit: f64,
    pub typing_rate_limit: f64,
    pub call_rate_limit: f64,
    pub abuse_threshold: u32,
    pub presence_grace: Duration,
    /// `None`: `<data-dir>/blobs`.
    pub blob_store: Option<String>,
    pub max_attachment: u64,
    /// argon2id parameters (memory KiB, iterations, lanes). Fixed: m=19456, t=2, p=1.
    pub argon2: (u32, u32, u32),
}

/// Invalid configuration; the message says which setting and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {detail}")]
    File { path: String, detail: String },
    #[error("invalid setting {setting}: {reason}")]
    Invalid { setting: &'static str, reason: String },
}

impl Config {
    /// The documented defaults with data in `data_dir` (see each flag for the value).
    pub fn with_defaults(data_dir: impl AsRef<Path>) -> Self {
        Config {
            listen: "127.0.0.1:8080".parse().expect("valid address"),
            admin_listen: "127.0.0.1:9090".parse().expect("valid address"),
            data_dir: data_dir.as_ref().to_path_buf(),
            node_id: None,
            jwt_secret: None,
            admin_token: None,
            redis: None,
            scylla: None,
            scylla_keyspace: "rookery".into(),
            scylla_replication: "{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}".into(),
            scylla_consistency: "local_quorum".into(),
            redis_prefix: "rookery".into(),
            cluster_heartbeat: Duration::from_millis(1000),
            cluster_ttl: Duration::from_millis(3000),
            log_format: LogFormat::Text,
            max_body: 8192,
            max_frame: 64 * 1024,
            heartbeat: Duration::from_millis(25_000),
            session_hibernate: Some(Duration::from_millis(15_000)),
            http_header_timeout: Duration::from_millis(10_000),
            api_write_rate_limit: 10.0,
            outbound_queue: 1024,
            max_connections_per_addr: 10_000,
            listen_backlog: 4096,
            access_ttl: Duration::from_secs(900),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            conv_idle: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(10),
            login_failures_per_user: 5,
            login_failures_per_addr: 30,
            store_sync: true,
            store_commit_delay: Duration::from_millis(1),
            store_min_free_mb: 64,
            send_rate_limit: 50.0,
            typing_rate_limit: 2.0,
            call_rate_limit: 20.0,
            abuse_threshold: 100,
            presence_grace: Duration::from_millis(3000),
            blob_store: None,
            max_attachment: 25 * 1024 * 1024,
            argon2: (19_456, 2, 1),
        }
    }

    /// Layers defaults < `--config` file < env < flags (clap already put env under flags).
    ///
    /// # Errors
    /// An unreadable or invalid file, or an invalid value.
    pub fn load(args: ServeArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError::File { path: path.display().to_string(), detail: e.to_string() })?;
                toml::from_str::<ServeArgs>(&text)
                    .map_err(|e| ConfigError::File { path: path.display().to_string(), detail: e.to_string() })?
            }
            None => ServeArgs::default(),
        };
        let d = Config::with_defaults(args.data_dir.clone().or(file.data_dir.clone()).unwrap_or_else(|| "data".into()));
        macro_rules! pick {
            ($field:ident) => {
                args.$field.clone().or(file.$field.clone())
            };
        }
        let c = Config {
            listen: pick!(listen).unwrap_or(d.listen),
            admin_listen: pick!(admin_listen).unwrap_or(d.admin_listen),
            data_dir: d.data_dir.clone(),
            node_id: pick!(node_id),
            jwt_secret: pick!(jwt_secret),
            admin_token: pick!(admin_token),
            redis: pick!(redis),
            scylla: pick!(scylla)
                .map(|s| s.split(',').map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect()),
            scylla_keyspace: pick!(scylla_keyspace).unwrap_or(d.scylla_keyspace),
            scylla_replication: pick!(scylla_replication).unwrap_or(d.scylla_replication),
            scylla_consistency: pick!(scylla_consistency).unwrap_or(d.scylla_consistency),
            redis_prefix: pick!(redis_prefix).unwrap_or(d.redis_prefix),
            cluster_heartbeat: pick!(cluster_heartbeat_ms).map(Duration::from_millis).unwrap_or(d.cluster_heartbeat),
            cluster_ttl: pick!(cluster_ttl_ms).map(Duration::from_millis).unwrap_or(d.cluster_ttl),
            log_format: pick!(log_format).unwrap_or(d.log_format),
            max_body: pick!(max_body).unwrap_or(d.max_body),
            max_frame: pick!(max_frame).unwrap_or(d.max_frame),
            heartbeat: pick!(heartbeat_ms).map(Duration::from_millis).unwrap_or(d.heartbeat),
            session_hibernate: match pick!(session_hibernate_ms) {
                Some(0) => None,
                Some(ms) => Some(Duration::from_millis(ms)),
                None => d.session_hibernate,
            },
            http_header_timeout: pick!(http_header_timeout_ms)
                .map(Duration::from_millis)
                .unwrap_or(d.http_header_timeout),
            api_write_rate_limit: pick!(api_write_rate_limit).unwrap_or(d.api_write_rate_limit),
            outbound_queue: pick!(outbound_queue).unwrap_or(d.outbound_queue),
            max_connections_per_addr: pick!(max_connections_per_addr).unwrap_or(d.max_connections_per_addr),
            listen_backlog: pick!(listen_backlog).unwrap_or(d.listen_backlog),
            access_ttl: pick!(access_ttl).map(Duration::from_secs).unwrap_or(d.access_ttl),
            refresh_ttl: pick!(refresh_ttl).map(Duration::from_secs).unwrap_or(d.refresh_ttl),
            conv_idle: pick!(conv_idle).map(Duration::from_secs).unwrap_or(d.conv_idle),
            shutdown_grace: pick!(shutdown_grace).map(Duration::from_secs).unwrap_or(d.shutdown_grace),
            login_failures_per_user: pick!(login_failures_per_user).unwrap_or(d.login_failures_per_user),
            login_failures_per_addr: pick!(login_failures_per_addr).unwrap_or(d.login_failures_per_addr),
            store_sync: pick!(store_sync).unwrap_or(d.store_sync),
            store_commit_delay: pick!(store_commit_delay_us).map(Duration::from_micros).unwrap_or(d.store_commit_delay),
            store_min_free_mb: pick!(store_min_free_mb).unwrap_or(d.store_min_free_mb),
            send_rate_limit: pick!(send_rate_limit).unwrap_or(d.send_rate_limit),
            typing_rate_limit: pick!(typing_rate_limit).unwrap_or(d.typing_rate_limit),
            call_rate_limit: pick!(call_rate_limit).unwrap_or(d.call_rate_limit),
            abuse_threshold: pick!(abuse_threshold).unwrap_or(d.abuse_threshold),
            presence_grace: pick!(presence_grace_ms).map(Duration::from_millis).unwrap_or(d.presence_grace),
            blob_store: pick!(blob_store),
            max_attachment: pick!(max_attachment).unwrap_or(d.max_attachment),

            argon2: d.argon2,
        };
        c.validate()?;
        Ok(c)
    }

    /// Checks ranges and secrets.
    ///
    /// # Errors
    /// The first invalid setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |setting, reason: &str| Err(ConfigError::Invalid { setting, reason: reason.to_string() });
        if self.max_body == 0 || self.max_body > self.max_frame {
            return bad("max-body", "must be between 1 and max-frame");
        }
        if self.max_frame < 1024 || self.max_frame > 16 * 1024 * 1024 {
            return bad("max-frame", "must be between 1 KiB and 16 MiB");
        }
        if self.heartbeat < Duration::from_millis(100) {
            return bad("heartbeat-ms", "must be at least 100");
        }
        if self.session_hibernate.is_some_and(|h| h < Duration::from_millis(100)) {
            return bad("session-hibernate-ms", "must be 0 (never) or at least 100");
        }
        if self.http_header_timeout < Duration::from_millis(100) {
            return bad("http-header-timeout-ms", "must be at least 100");
        }
        if self.listen_backlog == 0 || self.listen_backlog > 65_535 {
            return bad("listen-backlog", "must be between 1 and 65535");
        }
        for (name, v) in [
            ("send-rate-limit", self.send_rate_limit),
            ("api-write-rate-limit", self.api_write_rate_limit),
            ("typing-rate-limit", self.typing_rate_limit),
            ("call-rate-limit", self.call_rate_limit),
        ] {
            if !(0.0..=1_000_000.0).contains(&v) {
                return Err(ConfigError::Invalid { setting: name, reason: "must be between 0 and 1000000".into() });
            }
        }
        if self.store_commit_delay > Duration::from_millis(100) {
            return bad("store-commit-delay-us", "must be at most 100000 (100 ms)");
        }
        if self.store_min_free_mb > 1024 * 1024 {
            return bad("store-min-free-mb", "must be at most 1048576 (1 TiB)");
        }
        if self.outbound_queue < 16 {
            return bad("outbound-queue", "must be at least 16");
        }
        if self.access_ttl.is_zero() || self.refresh_ttl.is_zero() {
            return bad("access-ttl/refresh-ttl", "must be positive");
        }
        if self.jwt_secret.as_ref().is_some_and(|s| s.len() < 32) {
            return bad("jwt-secret", "must be at least 32 bytes");
        }
        if self.admin_token.as_ref().is_some_and(|s| s.len() < 16) {
            return bad("admin-token", "must be at least 16 bytes");
        }
        if self.scylla.as_ref().is_some_and(|n| n.is_empty()) {
            return bad("scylla", "needs at least one host:port");
        }
        if !rookery_store::scylla::schema::valid_identifier(&self.scylla_keyspace) {
            return bad("scylla-keyspace", "must be a letter then letters, digits or _ (at most 48)");
        }
        if rookery_store::scylla::parse_consistency(&self.scylla_consistency).is_none() {
            return bad(
                "scylla-consistency",
                "must be one of any, one, two, three, quorum, all, local_quorum, each_quorum, local_one",
            );
        }
        if !self.scylla_replication.trim_start().starts_with('{') {
            return bad(
                "scylla-replication",
                "must be a CQL map such as {'class': 'NetworkTopologyStrategy', 'replication_factor': 3}",
            );
        }
        if let Some(url) = &self.redis {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return bad("redis", "must be a redis:// URL");
            }
        }
        if self.redis_prefix.is_empty()
            || self.redis_prefix.len() > 64
            || self.redis_prefix.contains(char::is_whitespace)
        {
            return bad("redis-prefix", "must be 1-64 characters without spaces");
        }
        if self.cluster_heartbeat < Duration::from_millis(50) || self.cluster_ttl < self.cluster_heartbeat * 2 {
            return bad("cluster-heartbeat-ms/cluster-ttl-ms", "heartbeat at least 50 ms, TTL at least two heartbeats");
        }
        if let Some(id) = &self.node_id {
            if !rookery_protocol::is_valid_id(id) {
                return bad("node-id", "must be 1-64 of A-Za-z0-9_-");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_file_under_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rookery.toml");
        std::fs::write(&file, "max_body = 100\nmax_frame = 4096\nnode_id = \"from-file\"\n").unwrap();
        let args = ServeArgs { config: Some(file), max_body: Some(200), ..Default::default() };
        let c = Config::load(args).unwrap();
        assert_eq!(c.max_body, 200, "a flag beats the file");
        assert_eq!(c.max_frame, 4096, "the file beats the default");
        assert_eq!(c.node_id.as_deref(), Some("from-file"));
        assert_eq!(c.heartbeat, Duration::from_millis(25_000), "default");
        assert_eq!(c.session_hibernate, Some(Duration::from_millis(15_000)), "default");
        assert_eq!(c.store_commit_delay, Duration::from_millis(1), "default");
    }

    #[test]
    fn the_store_commit_delay_is_in_microseconds_and_bounded() {
        let c = Config::load(ServeArgs { store_commit_delay_us: Some(250), ..Default::default() }).unwrap();
        assert_eq!(c.store_commit_delay, Duration::from_micros(250));
        let off = Config::load(ServeArgs { store_commit_delay_us: Some(0), ..Default::default() }).unwrap();
        assert!(off.store_commit_delay.is_zero());
        let e = Config::load(ServeArgs { store_commit_delay_us: Some(100_001), ..Default::default() }).unwrap_err();
        assert!(e.to_string().contains("store-commit-delay-us"), "{e}");
    }

    #[test]
    fn session_hibernation_can_be_turned_off() {
        let off = Config::load(ServeArgs { session_hibernate_ms: Some(0), ..Default::default() }).unwrap();
        assert_eq!(off.session_hibernate, None);
        let e = Config::load(ServeArgs { session_hibernate_ms: Some(50), ..Default::default() }).unwrap_err();
        assert!(e.to_string().contains("session-hibernate-ms"), "{e}");
    }

    #[test]
    fn refuses_bad_values_with_the_setting_named() {
        let e = Config::load(ServeArgs { jwt_secret: Some("short".into()), ..Default::default() }).unwrap_err();
        assert!(e.to_string().contains("jwt-secret"), "{e}");
        let e = Config::load(ServeArgs { redis: Some("localhost:6379".into()), ..Default::default() }).unwrap_err();
        assert!(e.to_string().contains("redis"), "{e}");
        let e = Config::load(ServeArgs {
            redis: Some("redis://127.0.0.1:6379".into()),
            cluster_heartbeat_ms: Some(1000),
            cluster_ttl_ms: Some(1500),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("cluster"), "{e}");
        for backlog in [0, 70_000] {
            let e = Config::load(ServeArgs { listen_backlog: Some(backlog), ..Default::default() }).unwrap_err();
            assert!(e.to_string().contains("listen-backlog"), "{e}");
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "no_such_key = 1\n").unwrap();
        let e = Config::load(ServeArgs { config: Some(file), ..Default::default() }).unwrap_err();
        assert!(e.to_string().contains("no_such_key"), "{e}");
    }
}
