//! User search on 100,000 users: the index answers a prefix query without scanning.
//!
//! `cargo run --release -p rookery-store --example search_users -- [users]`

use std::sync::Arc;
use std::time::Instant;

use rookery_protocol::User;
use rookery_store::embedded::{EmbeddedOptions, EmbeddedStore};
use rookery_store::{Store, UserRecord};

#[tokio::main]
async fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).expect("open"));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for chunk in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in (chunk..n).step_by(16) {
                let user = User {
                    id: format!("{i:032x}"),
                    username: format!("user{i:06}"),
                    display_name: format!("Display {i}"),
                    avatar: None,
                    created_at: 0,
                };
                store
                    .create_user(UserRecord { user, password_hash: "!".into(), deleted: false })
                    .await
                    .expect("create");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    println!("created {n} users in {:.1} s", started.elapsed().as_secs_f64());
    for (prefix, label) in [
        ("user0999", "username prefix, first page of 100 matches"),
        ("display 4242", "display-name prefix, 11 matches"),
        ("user", "username prefix, first page of 20 of all"),
    ] {
        let rounds = 2000;
        let t = Instant::now();
        let mut found = 0;
        for _ in 0..rounds {
            found = store.search_users(prefix, None, 20).await.expect("search").0.len();
        }
        let per = t.elapsed().as_secs_f64() / rounds as f64 * 1e6;
        println!("search {prefix:?} ({label}): {found} results, {per:.1} µs per query");
    }
}
