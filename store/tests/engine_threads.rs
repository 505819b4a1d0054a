//! The engine runs enough background threads that its flush worker does not spin
//! (`embedded::background::engine_workers`). A test binary of its own: in this process only the
//! one store below starts engine threads, so they can be counted.

#![cfg(target_os = "linux")]

use std::time::{Duration, Instant};

use rookery_store::embedded::{EmbeddedOptions, EmbeddedStore, ENGINE_MAX_WORKERS, ENGINE_MIN_WORKERS};

/// The threads of this process named `name`.
fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name))
        .count()
}

#[test]
fn the_engine_runs_at_least_three_background_threads_whatever_the_core_count() {
    let dir = tempfile::tempdir().unwrap();
    let _store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    // A new thread names itself once it runs, a moment after it was started.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = threads_named("fjall:worker");
    while seen < ENGINE_MIN_WORKERS && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        seen = threads_named("fjall:worker");
    }
    assert!(seen >= ENGINE_MIN_WORKERS, "{seen} engine threads, expected at least {ENGINE_MIN_WORKERS}");
    assert!(seen <= ENGINE_MAX_WORKERS, "{seen} engine threads, expected at most {ENGINE_MAX_WORKERS}");
}
