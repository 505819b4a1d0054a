//! The Rookery node: configuration, auth, the HTTP API, the WebSocket gateway and the wiring
//! that starts and stops them. `main` parses the configuration and calls [`server::start`];
//! tests call the same function on `127.0.0.1:0`.

pub mod api;
pub mod auth;
pub mod blobs;
pub mod config;
pub mod conn_limit;
pub mod dev_cluster;
pub mod frames;
pub mod gateway;
pub mod hibernation;
pub mod http_server;
pub mod listener;
pub mod server;
pub mod ws_read;

pub use config::Config;
pub use server::{start, Node};
