//! The embedded backend against the conformance suite, plus what only it can show: data
//! survives closing and reopening the directory, and group commit folds writes into batches.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rookery_store::conformance::{self, message};
use rookery_store::embedded::{EmbeddedOptions, EmbeddedStore};
use rookery_store::{HistoryQuery, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    conformance::run_all(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_writes_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
        store.append_messages((1..=3).map(|s| message("conv", s, "u", None)).collect()).await.unwrap();
    }
    // The first handle is dropped; the writer thread ends once its channel closes, and the
    // directory lock is released when the database is dropped. Wait for that with a deadline.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let store = loop {
        match EmbeddedStore::open(dir.path(), EmbeddedOptions::default()) {
            Ok(s) => break s,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => panic!("reopen: {e}"),
        }
    };
    let (page, _) = store.messages("conv", HistoryQuery::after(0, 10)).await.unwrap();
    assert_eq!(page.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
}

/// The writer remembers each conversation's fence and highest `seq` instead of reading them per
/// append: a taken `seq` is still refused whether it is above, at or below what it remembers,
/// a gap below the head can still be filled, and after a reopen (nothing remembered) the
/// engine is read again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seq_conflicts_hold_with_the_writers_memory_of_heads() {
    let dir = tempfile::tempdir().unwrap();
    let conflict = |r: Result<(), rookery_store::StoreError>| matches!(r, Err(rookery_store::StoreError::Conflict(_)));
    {
        let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
        let token = store.claim_conversation("conv", "n").await.unwrap();
        store.append_fenced(token, vec![message("conv", 1, "u", None), message("conv", 2, "u", None)]).await.unwrap();
        assert!(conflict(store.append_fenced(token, vec![message("conv", 2, "u", None)]).await), "the head itself");
        assert!(conflict(store.append_fenced(token, vec![message("conv", 1, "u", None)]).await), "below the head");
        store.append_fenced(token, vec![message("conv", 5, "u", None)]).await.unwrap();
        store.append_fenced(token, vec![message("conv", 4, "u", None)]).await.unwrap();
        assert!(conflict(store.append_fenced(token, vec![message("conv", 4, "u", None)]).await), "a filled gap");
        let batch = vec![message("conv", 6, "u", None), message("conv", 6, "u", None)];
        assert!(conflict(store.append_fenced(token, batch).await), "twice in one append");
        assert_eq!(store.last_message("conv").await.unwrap().unwrap().seq, 5, "the refused append wrote nothing");
        store.append_fenced(token, vec![message("conv", 6, "u", None)]).await.unwrap();
        let newer = store.claim_conversation("conv", "m").await.unwrap();
        let stale = store.append_fenced(token, vec![message("conv", 7, "u", None)]).await;
        assert!(matches!(stale, Err(rookery_store::StoreError::Fenced(_))), "{stale:?}");
        store.append_fenced(newer, vec![message("conv", 7, "u", None)]).await.unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let store = loop {
        match EmbeddedStore::open(dir.path(), EmbeddedOptions::default()) {
            Ok(s) => break s,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await
            }
            Err(e) => panic!("reopen: {e}"),
        }
    };
    let (token, _) = store.fence("conv").await.unwrap().unwrap();
    assert!(conflict(store.append_fenced(token, vec![message("conv", 7, "u", None)]).await), "after a reopen");
    store.append_fenced(token, vec![message("conv", 3, "u", None)]).await.expect("the gap at 3 is free");
    store.append_fenced(token, vec![message("conv", 8, "u", None)]).await.unwrap();
    let (page, _) = store.messages("conv", HistoryQuery::after(0, 20)).await.unwrap();
    assert_eq!(page.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5, 6, 7, 8]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_batches_concurrent_writes() {
    let dir = tempfile::tempdir().unwrap();
    let batches = Arc::new(AtomicUsize::new(0));
    let jobs = Arc::new(AtomicUsize::new(0));
    let (b, j) = (batches.clone(), jobs.clone());
    let options = EmbeddedOptions {
        no_sync: false,
        min_free_bytes: 0,
        observer: Some(Arc::new(move |n, _| {
            b.fetch_add(1, Ordering::Relaxed);
            j.fetch_add(n, Ordering::Relaxed);
        })),
        ..EmbeddedOptions::default()
    };
    let store = Arc::new(EmbeddedStore::open(dir.path(), options).unwrap());
    let mut tasks = Vec::new();
    for i in 0..500u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.append_messages(vec![message(&format!("c{}", i % 10), i / 10 + 1, "u", None)]).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let (b, j) = (batches.load(Ordering::Relaxed), jobs.load(Ordering::Relaxed));
    assert_eq!(j, 500);
    assert!(b < 250, "500 concurrent appends took {b} batches (fsyncs); group commit should fold them");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_the_free_space_reserve_writes_are_refused_and_reads_served() {
    let dir = tempfile::tempdir().unwrap();
    // A reserve no disk meets.
    let options = EmbeddedOptions { min_free_bytes: u64::MAX, ..EmbeddedOptions::default() };
    let store = EmbeddedStore::open(dir.path(), options).unwrap();
    let refused = store.append_messages(vec![message("conv", 1, "u", Some("c1"))]).await.unwrap_err();
    assert!(matches!(&refused, rookery_store::StoreError::Unavailable(why) if why.contains("reserve")), "{refused}");
    let (page, more) = store.messages("conv", HistoryQuery::after(0, 10)).await.unwrap();
    assert!(page.is_empty() && !more, "reads are served");
    assert!(store.message_by_client_id("conv", "u", "c1").await.unwrap().is_none(), "nothing was written");
    let why = store.ping().await.unwrap_err();
    assert!(why.to_string().contains("reserve"), "{why}");
}
