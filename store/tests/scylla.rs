//! The store conformance suite against a live ScyllaDB, when `ROOKERY_TEST_SCYLLA=host:port`
//! names one (each run in a fresh keyspace, replication factor 1). Without it the test says so
//! and passes: ScyllaDB cannot run on the machines this suite usually runs on.

#![cfg(feature = "scylla")]

use std::sync::Arc;

use rookery_store::scylla::{ScyllaOptions, ScyllaStore};
use rookery_store::{conformance, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_store_passes_the_conformance_suite() {
    let Ok(addr) = std::env::var("ROOKERY_TEST_SCYLLA") else {
        eprintln!("ROOKERY_TEST_SCYLLA is not set: the ScyllaDB conformance run is skipped");
        return;
    };
    let mut options = ScyllaOptions::new(addr.split(',').map(str::to_string).collect());
    options.keyspace = format!("rookery_test_{}", std::process::id());
    options.replication = "{'class': 'SimpleStrategy', 'replication_factor': 1}".into();
    let store: Arc<dyn Store> = Arc::new(ScyllaStore::connect(options).await.expect("connecting to ScyllaDB"));
    conformance::run_all(store).await;
}
