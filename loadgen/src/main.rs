//! `rookery-loadgen`: drives Rookery (or a peer server, for comparison) with an open-loop load
//! and reports throughput, latency and whether every acked message reached every member.

mod http;
mod ranges;
mod report;
mod run;
mod setup;
mod target;
mod ws;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Load generator for Rookery.
#[derive(Debug, Parser)]
#[command(name = "rookery-loadgen", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one scenario and print (and optionally write) its report.
    Run(Opts),
}

/// The scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Pairs of users in direct conversations, each sending at `--rate`.
    Direct,
    /// Groups of `--group-size`, every member sending at `--rate`.
    Group,
    /// One sender at `--rate` into one conversation holding all `--users`.
    Fanout,
    /// Open `--users` connections as fast as possible; report connections per second.
    ConnectStorm,
    /// Open `--users` connections and hold them for `--duration`; report server memory.
    Idle,
    /// `--users` concurrent readers paging through history (over HTTP, or with WebSocket
    /// `sync` replays: `--history-via`).
    History,
}

/// How the `history` scenario reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HistoryVia {
    #[default]
    /// `GET /api/conversations/{id}/messages`, pages of 50 before spread positions.
    Http,
    /// A WebSocket `sync` from a spread position, read up to its `synced` (the node's
    /// `sync_batch` messages at most): the catch-up of a reconnecting client.
    Ws,
}

/// Options of `run`.
#[derive(Debug, Clone, clap::Args)]
pub struct Opts {
    /// Base URL(s) of the chat listener(s), comma separated; connections are spread over them.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:8080")]
    pub url: Vec<String>,
    /// The server kind under load.
    #[arg(long, value_enum, default_value = "rookery")]
    pub target: target::Target,
    #[arg(long, value_enum, default_value = "group")]
    pub scenario: Scenario,
    /// Number of users (one connection each).
    #[arg(long, default_value_t = 100)]
    pub users: usize,
    /// Members per group (`group` scenario); rooms of the `history` scenario.
    #[arg(long, default_value_t = 10)]
    pub group_size: usize,
    /// Messages per second per sending connection (open loop: send times are fixed in advance).
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// Seconds of sending (or holding, for `idle`; reading, for `history`).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds over which connections are opened.
    #[arg(long, default_value_t = 1.0)]
    pub ramp: f64,
    /// Message body size in bytes.
    #[arg(long, default_value_t = 64)]
    pub message_size: usize,
    /// Seconds to wait after sending stops for the last deliveries.
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,
    /// Admin listener of the (first) Rookery node, for the bulk-user setup.
    #[arg(long, default_value = "http://127.0.0.1:9090")]
    pub admin_url: String,
    /// Admin token of Rookery (needed for setup).
    #[arg(long, env = "ROOKERY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Check that every acked message reached every other member exactly once, in order; on
    /// Rookery, also read every conversation's stored history at the end and count acked
    /// messages missing from it (`lost`) and messages stored twice.
    #[arg(long)]
    pub verify: bool,
    /// Rookery only: ask for each message to come back to its sending session too (the
    /// protocol's default). Off by default, so that Rookery, like the Socket.IO and raw peers,
    /// sends a message to the other members and its sender gets the ack alone.
    #[arg(long)]
    pub echo: bool,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Exit with status 3 when the end-to-end p99 (ack p99 for targets without deliveries) is
    /// above this many milliseconds.
    #[arg(long)]
    pub max_p99_ms: Option<f64>,
    /// Exit with status 3 when the delivery ratio is below this (0..1).
    #[arg(long)]
    pub min_delivery: Option<f64>,
    /// Spread connections over this many source addresses 127.0.0.1.. (loopback targets only).
    #[arg(long, default_value_t = 4)]
    pub source_addrs: u8,
    /// Connections opened at once (`connect-storm`, `idle`).
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Server process id, to report its memory (`idle`).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Messages written before the `history` scenario reads.
    #[arg(long, default_value_t = 5000)]
    pub history_messages: usize,
    /// Pages (or `sync` replays) per second per `history` reader, paced from fixed times (0: as
    /// fast as it can).
    #[arg(long, default_value_t = 0.0)]
    pub history_rate: f64,
    /// How the `history` scenario reads: `http` pages or WebSocket `sync` replays (`ws`).
    #[arg(long, value_enum, default_value = "http")]
    pub history_via: HistoryVia,
    /// No live progress line.
    #[arg(long)]
    pub quiet: bool,
}

fn main() -> std::process::ExitCode {
    let Command::Run(opts) = Cli::parse().command;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(run::run(opts.clone())) {
        Ok(report) => {
            report::print_summary(&report);
            if let Some(path) = &opts.json {
                if let Err(e) = std::fs::write(path, serde_json::to_vec_pretty(&report).expect("report serialises")) {
                    eprintln!("rookery-loadgen: writing {}: {e}", path.display());
                    return std::process::ExitCode::from(1);
                }
            }
            let mut failed = false;
            if let Some(max) = opts.max_p99_ms {
                let p99 = if report.e2e.count > 0 { report.e2e.p99_ms } else { report.ack.p99_ms };
                if p99 > max {
                    eprintln!("threshold missed: p99 {p99:.2} ms > {max} ms");
                    failed = true;
                }
            }
            if let Some(min) = opts.min_delivery {
                if report.delivery_ratio < min {
                    eprintln!("threshold missed: delivery {:.4} < {min}", report.delivery_ratio);
                    failed = true;
                }
            }
            if let Some(v) = &report.verify {
                if !v.passed() {
                    eprintln!(
                        "verify failed: {} missing, {} duplicated, {} reordered, {} lost, {} stored twice",
                        v.missing, v.duplicated, v.reordered, v.lost, v.stored_twice
                    );
                    failed = true;
                }
            }
            if failed {
                std::process::ExitCode::from(3)
            } else {
                std::process::ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("rookery-loadgen: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
