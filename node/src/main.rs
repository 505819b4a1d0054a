//! `rookery`: parses the configuration, starts a node, stops it on SIGINT/SIGTERM.

use clap::Parser;
use rookery_node::config::{Cli, Command, Config, LogFormat};

/// mimalloc instead of the system allocator: the message path allocates and frees many small
/// buffers (frames, keys, records), where glibc's malloc and free cost about 14 % of the
/// instructions per message (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Hands the memory of stopped session actors back to the OS. Set as the session start thread's
/// release hook (`rookery_actors::spawner`), which runs it once a second on that thread, whose
/// heap holds session actors only: mimalloc frees a page that other threads emptied only when
/// the page's own thread collects.
fn release_session_memory() {
    // SAFETY: `mi_collect` has no preconditions; it works on the calling thread's heap only.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_collect(true)
    };
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let (args, dev_nodes) = match cli.command {
        Command::Serve(args) => (args, None),
        Command::DevCluster(dev) => (dev.serve, Some(dev.nodes)),
    };
    let config = match Config::load(args) {
        Ok(c) if dev_nodes.is_none() && c.redis.is_some() && c.jwt_secret.is_none() => {
            eprintln!("rookery: invalid setting jwt-secret: cluster mode needs --jwt-secret, the same on every node");
            return std::process::ExitCode::from(2);
        }
        Ok(c) => c,
        Err(e) => {
            eprintln!("rookery: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    init_logging(config.log_format);
    rookery_actors::spawner::set_release_hook(release_session_memory);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let result = match dev_nodes {
        Some(n) => runtime.block_on(run_dev_cluster(config, n)),
        None => runtime.block_on(run(config)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("rookery: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let bind = |addr| {
        rookery_node::listener::bind(addr, config.listen_backlog).map_err(|e| anyhow::anyhow!("binding {addr}: {e}"))
    };
    let chat = bind(config.listen)?;
    let admin = bind(config.admin_listen)?;
    let node = rookery_node::start(config, chat, admin).await?;
    println!(
        "rookery is running: chat and API on http://{}, ops console on http://{}",
        node.chat_addr, node.admin_addr
    );
    println!("open http://{}/ in a browser to chat", node.chat_addr);
    let shutdown = node.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        shutdown.cancel();
    });
    node.wait().await
}

async fn run_dev_cluster(config: Config, nodes: u16) -> anyhow::Result<()> {
    let nodes = rookery_node::dev_cluster::start(config, nodes).await?;
    for n in &nodes {
        println!(
            "rookery dev-cluster node {}: chat and API on http://{}, ops console on http://{}",
            n.app.hub.node_id, n.chat_addr, n.admin_addr
        );
    }
    if let Some(first) = nodes.first() {
        println!("open http://{}/ in a browser to chat", first.chat_addr);
    }
    wait_for_signal().await;
    let stops = nodes.into_iter().map(|n| n.stop());
    for r in futures_util::future::join_all(stops).await {
        r?;
    }
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ROOKERY_LOG")
        // ractor opens an INFO span for every actor, held while the actor runs (about 1 KB each).
        .unwrap_or_else(|_| "info,ractor=warn,fjall=warn,lsm_tree=warn".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
