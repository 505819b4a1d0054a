//! Durable appends per second on the embedded store, with group commit.
//!
//! `cargo run --release -p rookery-store --example append_throughput -- [writers] [seconds] [body bytes]`
//!
//! Runs twice in one process on fresh directories: first with one writer (every append waits for
//! its own fsync: the cost without group commit), then with `writers` concurrent writers (appends
//! share batches and fsyncs). Prints both and the ratio.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rookery_store::conformance::message;
use rookery_store::embedded::{EmbeddedOptions, EmbeddedStore};
use rookery_store::Store;

async fn measure(writers: usize, seconds: f64, body: usize) -> (f64, f64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let batches = Arc::new(AtomicU64::new(0));
    let b = batches.clone();
    let options = EmbeddedOptions {
        no_sync: false,
        min_free_bytes: 0,
        observer: Some(Arc::new(move |_, _| {
            b.fetch_add(1, Ordering::Relaxed);
        })),
        ..EmbeddedOptions::default()
    };
    let store = Arc::new(EmbeddedStore::open(dir.path(), options).expect("open store"));
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (store, done) = (store.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let conv = format!("conv{}", w % 64);
            let mut seq = (w / 64) as u64 * 1_000_000_000;
            while Instant::now() < deadline {
                seq += 1;
                let mut m = message(&conv, seq, "u", Some(&format!("{w}-{seq}")));
                m.body = "x".repeat(body);
                store.append_messages(vec![m]).await.expect("append");
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer task");
    }
    let secs = started.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed) as f64;
    (n / secs, n / batches.load(Ordering::Relaxed).max(1) as f64)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let writers: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(256);
    let seconds: f64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5.0);
    let body: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(100);
    let (single, _) = measure(1, seconds, body).await;
    let (grouped, per_batch) = measure(writers, seconds, body).await;
    println!("durable appends/s, {body}-byte bodies, fsync per batch:");
    println!("  1 writer (one fsync per append): {single:>10.0}");
    println!("  {writers} writers (group commit):   {grouped:>10.0}   ({per_batch:.1} appends per fsync)");
    println!("  ratio: {:.1}x", grouped / single.max(1.0));
}
