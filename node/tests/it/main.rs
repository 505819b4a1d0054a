//! Integration tests of the node: one binary, real sockets, real store on disk.

mod abuse;
mod actors;
mod auth;
mod bad_input;
mod browser;
mod cluster;
mod cluster_support;
mod conversations;
mod deploy;
mod faults;
mod features;
mod messaging;
mod metrics;
mod moderation;
mod openapi;
mod process;
mod repo;
mod rfc6455;
mod support;
