//! Wiring: open the store, start the actors, serve the chat and admin listeners, shut down in
//! phases.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rookery_actors::limits::Limit;
use rookery_actors::{Hub, HubConfig, Metrics};
use rookery_store::embedded::{CommitDelay, EmbeddedOptions, EmbeddedStore};
use rookery_store::Store;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{LoginThrottle, Passwords, Tokens};
use crate::config::Config;

/// Everything request handlers share.
pub struct App {
    pub config: Config,
    pub hub: Arc<Hub>,
    pub store: Arc<dyn Store>,
    /// Attachment bytes.
    pub blobs: Arc<dyn object_store::ObjectStore>,
    pub passwords: Passwords,
    pub tokens: Tokens,
    pub throttle: LoginThrottle,
    pub metrics: Arc<Metrics>,
    /// Tracks every WebSocket connection task, so shutdown can wait for their close frames.
    pub sockets: TaskTracker,
    /// Open WebSocket connections per client address.
    pub conn_limit: crate::conn_limit::ConnLimit,
    /// HTTP writes per user.
    pub write_limit: crate::api::write_limit::WriteLimit,
    pub started: Instant,
}

/// A running node.
pub struct Node {
    pub chat_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub app: Arc<App>,
    /// The admin API token in force (generated when not configured).
    pub admin_token: String,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Node {
    /// Starts the shutdown sequence and waits for it to finish.
    ///
    /// # Errors
    /// When a phase of the shutdown failed.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await.context("node task panicked")?
    }

    /// A token that starts the shutdown when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until the node has stopped (after its shutdown token was cancelled).
    ///
    /// # Errors
    /// When a phase of the shutdown failed.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("node task panicked")?
    }
}

/// Reads the JWT secret from the config, or from `<data-dir>/jwt.secret`, creating it once.
fn jwt_secret(config: &Config) -> anyhow::Result<String> {
    if let Some(s) = &config.jwt_secret {
        return Ok(s.clone());
    }
    let path = config.data_dir.join("jwt.secret");
    if let Ok(s) = std::fs::read_to_string(&path) {
        let s = s.trim().to_string();
        anyhow::ensure!(s.len() >= 32, "{} holds a secret shorter than 32 bytes", path.display());
        return Ok(s);
    }
    let secret = crate::auth::tokens::random_secret(48);
    write_private(&path, &secret)?;
    Ok(secret)
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut f = options.open(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// Starts a node on the given listeners (tests pass listeners bound to port 0).
///
/// # Errors
/// When the data directory, the store or the actors cannot be set up.
pub async fn start(config: Config, chat: TcpListener, admin: TcpListener) -> anyhow::Result<Node> {
    config.validate()?;
    let metrics = Arc::new(Metrics::new());
    let store = match &config.scylla {
        Some(nodes) => open_scylla(&config, nodes).await?,
        None => open_embedded(&config, &metrics)?,
    };
    start_on(config, chat, admin, store, metrics).await
}

/// Connects to ScyllaDB, creating or migrating the keyspace.
///
/// # Errors
/// When no contact point answers or the schema cannot be applied.
pub async fn open_scylla(config: &Config, nodes: &[String]) -> anyhow::Result<Arc<dyn Store>> {
    use rookery_store::scylla::{parse_consistency, ScyllaOptions, ScyllaStore};
    let mut options = ScyllaOptions::new(nodes.to_vec());
    options.keyspace = config.scylla_keyspace.clone();
    options.replication = config.scylla_replication.clone();
    options.consistency = parse_consistency(&config.scylla_consistency).context("scylla-consistency")?;
    let store = ScyllaStore::connect(options).await.with_context(|| format!("connecting to ScyllaDB at {nodes:?}"))?;
    Ok(Arc::new(store))
}

/// Opens the embedded store in the data directory (creating both as needed).
///
/// # Errors
/// When the directory cannot be created or the store cannot be opened.
pub fn open_embedded(config: &Config, metrics: &Arc<Metrics>) -> anyhow::Result<Arc<dyn Store>> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let batch_metrics = metrics.clone();
    let options = EmbeddedOptions {
        no_sync: !config.store_sync,
        min_free_bytes: config.store_min_free_mb * 1024 * 1024,
        commit_delay: CommitDelay(config.store_commit_delay),
        observer: Some(Arc::new(move |jobs, took: Duration| {
            batch_metrics.store_batch_seconds.observe(took.as_secs_f64());
            batch_metrics.store_batch_jobs.observe(jobs as f64);
        })),
    };
    let embedded =
        EmbeddedStore::open(&config.data_dir.join("store"), options).context("opening the embedded store")?;
    Ok(Arc::new(embedded))
}

/// The node id when none is configured: `node-<port>` alone; in a cluster, where ports repeat
/// across machines, `<host>-<port>`.
fn default_node_id(config: &Config, port: u16) -> String {
    if config.redis.is_none() {
        return format!("node-{port}");
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "node".into());
    let host: String =
        host.trim().chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).take(50).collect();
    format!("{host}-{port}")
}

/// Starts a node on the given listeners over `store` (shared by every node of a dev cluster).
///
/// # Errors
/// When the data directory, the actors or the cluster cannot be set up.
pub async fn start_on(
    config: Config,
    chat: TcpListener,
    admin: TcpListener,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Node> {
    config.validate()?;
    let chat_addr = chat.local_addr()?;
    let admin_addr = admin.local_addr()?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let node_id = config.node_id.clone().unwrap_or_else(|| default_node_id(&config, chat_addr.port()));
    let store: Arc<dyn Store> =
        Arc::new(rookery_actors::metered::MeteredStore::new(store, metrics.store_op_seconds.clone()));

    let hub_config = HubConfig {
        node_id: node_id.clone(),
        max_body: config.max_body,
        sync_batch: 500,
        outbound_queue: config.outbound_queue,
        session_inflight: 64,
        conv_idle_after: config.conv_idle,
        conv_tick: Duration::from_secs(1).min(config.conv_idle),
        receipt_coalesce: Duration::from_millis(100),
        max_presence_query: 256,
        send_limit: Limit { per_s: config.send_rate_limit, burst: config.send_rate_limit * 2.0 },
        typing_limit: Limit { per_s: config.typing_rate_limit, burst: 5.0 },
        call_limit: Limit { per_s: config.call_rate_limit, burst: config.call_rate_limit * 2.0 },
        abuse_threshold: config.abuse_threshold,
        presence_grace: config.presence_grace,
    };
    let hub = Hub::start(hub_config, store.clone(), metrics.clone()).await?;
    if let Some(url) = &config.redis {
        let cluster = rookery_actors::cluster::ClusterConfig {
            redis_url: url.clone(),
            prefix: config.redis_prefix.clone(),
            timing: rookery_actors::cluster::membership::Timing {
                heartbeat: config.cluster_heartbeat,
                ttl: config.cluster_ttl,
            },
            chat_addr: chat_addr.to_string(),
            admin_addr: admin_addr.to_string(),
        };
        hub.join_cluster(cluster).await.context("joining the cluster")?;
    }
    let secret = jwt_secret(&config)?;
    let admin_token = match &config.admin_token {
        Some(t) => t.clone(),
        None => {
            let t = crate::auth::tokens::random_secret(24);
            // Printed once, on purpose, and never logged.
            println!("rookery admin token (generated for this run): {t}");
            t
        }
    };
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let blob_spec = config.blob_store.clone().unwrap_or_else(|| config.data_dir.join("blobs").display().to_string());
    let blobs = crate::blobs::open(&blob_spec)?;
    let conn_limit = crate::conn_limit::ConnLimit::new(config.max_connections_per_addr);
    let config_write_limit = config.api_write_rate_limit;
    let app = Arc::new(App {
        passwords: Passwords::new(config.argon2, cores)?,
        tokens: Tokens::new(secret.as_bytes()),
        throttle: LoginThrottle::new(config.login_failures_per_user, config.login_failures_per_addr),
        config,
        hub: hub.clone(),
        store,
        blobs,
        metrics: metrics.clone(),

        sockets: TaskTracker::new(),
        conn_limit,
        write_limit: crate::api::write_limit::WriteLimit::new(config_write_limit),
        started: Instant::now(),
    });

    let shutdown = CancellationToken::new();
    let chat_router = crate::api::router(app.clone());
    let minter = app.clone();
    let mint_token: rookery_admin::TokenMinter = Arc::new(move |user: &str| {
        let ttl = minter.config.access_ttl.as_secs() as i64;
        minter.tokens.access(user, rookery_actors::now_ms() / 1000, ttl)
    });
    let admin_router = rookery_admin::router(rookery_admin::Console {
        samples: rookery_admin::Samples::start(metrics.clone()),
        metrics,
        hub,
        admin_token: admin_token.clone(),
        mint_token,
        chat_addr: chat_addr.to_string(),
        started: Instant::now(),
    });

    let task = tokio::spawn(serve(app.clone(), chat, chat_router, admin, admin_router, shutdown.clone()));
    tracing::info!(%chat_addr, %admin_addr, node_id, "rookery node started");
    Ok(Node { chat_addr, admin_addr, app, admin_token, shutdown, task })
}

async fn serve(
    app: Arc<App>,
    chat: TcpListener,
    chat_router: axum::Router,
    admin: TcpListener,
    admin_router: axum::Router,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let limits = crate::http_server::HttpLimits { header_timeout: app.config.http_header_timeout };
    let grace = app.config.shutdown_grace;
    let chat_server = tokio::spawn(crate::http_server::serve(chat, chat_router, limits, shutdown.clone(), grace));
    let admin_server = tokio::spawn(crate::http_server::serve(admin, admin_router, limits, shutdown.clone(), grace));
    shutdown.cancelled().await;

    // Phase 1: the listeners stop accepting (graceful shutdown above). Phase 2: close every
    // session with 1001, let conversations finish their writes, flush the store.
    let deadline = tokio::time::Instant::now() + grace;
    tracing::info!(?grace, "shutting down");
    app.hub.shutdown(grace).await;
    // Phase 3: wait for the sockets to send their close frames.
    app.sockets.close();
    let _ = tokio::time::timeout_at(deadline, app.sockets.wait()).await;
    let _ = tokio::time::timeout_at(deadline, chat_server).await;
    let _ = tokio::time::timeout_at(deadline, admin_server).await;
    tracing::info!("stopped");
    Ok(())
}
