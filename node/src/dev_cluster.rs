//! `rookery dev-cluster`: several nodes in one process over one embedded store and a real
//! Redis, for trying cluster mode on one machine (and for tests of cluster mode).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use rookery_actors::Metrics;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::server::{open_embedded, start_on, Node};

/// Starts `nodes` nodes: node `i` (from 0) listens on the configured chat and admin ports + `i`
/// (port 0 stays 0: any free port) and is called `<node-id>-<i+1>` (default `dev-<i+1>`).
/// They share the data directory, so also the JWT secret; the admin token, when not configured,
/// is generated once for all of them.
///
/// # Errors
/// Without `--redis`, or when a listener, the store or a node cannot start.
pub async fn start(mut config: Config, nodes: u16) -> anyhow::Result<Vec<Node>> {
    anyhow::ensure!(config.redis.is_some(), "dev-cluster needs --redis <url>");
    anyhow::ensure!((1..=32).contains(&nodes), "--nodes must be between 1 and 32");
    config.validate()?;
    if config.admin_token.is_none() {
        let t = crate::auth::tokens::random_secret(24);
        println!("rookery admin token (generated for this run, every node): {t}");
        config.admin_token = Some(t);
    }
    let first_metrics = Arc::new(Metrics::new());
    let store = match &config.scylla {
        Some(nodes) => crate::server::open_scylla(&config, nodes).await?,
        None => open_embedded(&config, &first_metrics)?,
    };
    let prefix = config.node_id.clone().unwrap_or_else(|| "dev".into());
    let mut started = Vec::new();
    for i in 0..nodes {
        let mut c = config.clone();
        c.node_id = Some(format!("{prefix}-{}", i + 1));
        let chat = bind(offset(config.listen, i), config.listen_backlog)?;
        let admin = bind(offset(config.admin_listen, i), config.listen_backlog)?;
        let metrics = if i == 0 { first_metrics.clone() } else { Arc::new(Metrics::new()) };
        started.push(start_on(c, chat, admin, store.clone(), metrics).await?);
    }
    Ok(started)
}

fn offset(addr: SocketAddr, i: u16) -> SocketAddr {
    let mut a = addr;
    if a.port() != 0 {
        a.set_port(a.port().saturating_add(i));
    }
    a
}

fn bind(addr: SocketAddr, backlog: u32) -> anyhow::Result<TcpListener> {
    crate::listener::bind(addr, backlog).with_context(|| format!("binding {addr}"))
}
