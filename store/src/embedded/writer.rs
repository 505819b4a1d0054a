//! Group commit: one writer thread takes every write job queued since its last commit, applies
//! them to one batch, commits it and syncs the journal once, then answers every job.
//!
//! Durability therefore costs one fsync per batch, not per message: under load a batch holds
//! everything that arrived while the previous fsync ran.
//!
//! Jobs run one at a time on the writer thread, so a job's read-check-write (a unique username,
//! the one direct conversation of a pair, a refresh token used once) is atomic. A job reads
//! through [`Txn`], which sees the writes of earlier jobs of the same batch.
//!
//! Queue: bounded at [`QUEUE_CAPACITY`] jobs. Overflow policy: callers wait (backpressure) for a
//! free slot; nothing is dropped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use fjall::{Database, Keyspace, PersistMode};
use tokio::sync::{mpsc, oneshot};

use crate::{StoreError, StoreResult};

/// Most write jobs waiting for the writer thread.
pub const QUEUE_CAPACITY: usize = 8192;
/// Most jobs folded into one batch (one fsync).
pub const MAX_BATCH_JOBS: usize = 2048;

/// The keyspaces of the embedded store. The discriminant indexes `Keyspaces::all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Ks {
    Users = 0,
    Usernames,
    Refresh,
    UserRefresh,
    Convs,
    Members,
    UserConvs,
    Directs,
    Messages,
    MessageIds,
    Dedupe,
    Cursors,
    UserSearch,
    Attachments,
    AttachmentConvs,
    Bans,
    Mutes,
    Audit,
    Fences,
}

impl Ks {
    pub(crate) const ALL: [Ks; 19] = [
        Ks::Users,
        Ks::Usernames,
        Ks::Refresh,
        Ks::UserRefresh,
        Ks::Convs,
        Ks::Members,
        Ks::UserConvs,
        Ks::Directs,
        Ks::Messages,
        Ks::MessageIds,
        Ks::Dedupe,
        Ks::Cursors,
        Ks::UserSearch,
        Ks::Attachments,
        Ks::AttachmentConvs,
        Ks::Bans,
        Ks::Mutes,
        Ks::Audit,
        Ks::Fences,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Ks::Users => "users",
            Ks::Usernames => "usernames",
            Ks::Refresh => "refresh",
            Ks::UserRefresh => "user_refresh",
            Ks::Convs => "convs",
            Ks::Members => "members",
            Ks::UserConvs => "user_convs",
            Ks::Directs => "directs",
            Ks::Messages => "messages",
            Ks::MessageIds => "message_ids",
            Ks::Dedupe => "dedupe",
            Ks::Cursors => "cursors",
            Ks::UserSearch => "user_search",
            Ks::Attachments => "attachments",
            Ks::AttachmentConvs => "attachment_convs",
            Ks::Bans => "bans",
            Ks::Mutes => "mutes",
            Ks::Audit => "audit",
            Ks::Fences => "fences",
        }
    }
}

/// The open database and its keyspaces.
pub(crate) struct Keyspaces {
    pub(crate) db: Database,
    pub(crate) all: Vec<Keyspace>,
}

impl Keyspaces {
    pub(crate) fn get(&self, ks: Ks) -> &Keyspace {
        &self.all[ks as usize]
    }
}

/// A key of one keyspace.
type Key = (Ks, Vec<u8>);
/// Pending writes: `None` deletes.
type Overlay = HashMap<Key, Option<Vec<u8>>>;

/// What a job sees: the committed database plus the writes of earlier jobs in this batch.
pub(crate) struct Txn<'a> {
    keyspaces: &'a Keyspaces,
    batch: &'a Overlay,
    own: Vec<(Key, Option<Vec<u8>>)>,
}

impl Txn<'_> {
    /// Reads a key, seeing this job's and this batch's earlier writes.
    pub(crate) fn get(&self, ks: Ks, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        if let Some((_, v)) = self.own.iter().rev().find(|((k, kk), _)| *k == ks && kk == key) {
            return Ok(v.clone());
        }
        if let Some(v) = self.batch.get(&(ks, key.to_vec())) {
            return Ok(v.clone());
        }
        self.keyspaces
            .get(ks)
            .get(key)
            .map(|v| v.map(|s| s.to_vec()))
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    pub(crate) fn put(&mut self, ks: Ks, key: Vec<u8>, value: Vec<u8>) {
        self.own.push(((ks, key), Some(value)));
    }

    pub(crate) fn delete(&mut self, ks: Ks, key: Vec<u8>) {
        self.own.push(((ks, key), None));
    }

    /// Committed keys under a prefix (writes of this batch are not seen by scans).
    pub(crate) fn scan_keys(&self, ks: Ks, prefix: &[u8]) -> StoreResult<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        for guard in self.keyspaces.get(ks).prefix(prefix) {
            let (k, _) = guard.into_inner().map_err(|e| StoreError::Unavailable(e.to_string()))?;
            out.push(k.to_vec());
        }
        Ok(out)
    }
}

type Completion = Box<dyn FnOnce(StoreResult<()>) + Send>;
type Job = Box<dyn FnOnce(&mut Txn<'_>) -> Completion + Send>;

enum Request {
    Job(Job),
}

/// Handle to the writer thread. Cloning shares the same thread.
#[derive(Clone)]
pub(crate) struct Writer {
    tx: mpsc::Sender<Request>,
}

/// Observes each batch (for metrics): number of jobs and how long the commit and sync took.
pub type BatchObserver = Arc<dyn Fn(usize, std::time::Duration) + Send + Sync>;

impl Writer {
    pub(crate) fn start(keyspaces: Arc<Keyspaces>, sync: bool, observer: Option<BatchObserver>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        std::thread::Builder::new()
            .name("rookery-store-writer".into())
            .spawn(move || run(keyspaces, rx, sync, observer))
            .expect("spawning the store writer thread");
        Writer { tx }
    }

    /// Runs `f` on the writer thread inside the next batch and resolves when that batch is
    /// durable. If `f` fails, none of its writes are applied.
    pub(crate) async fn submit<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Txn<'_>) -> StoreResult<T> + Send + 'static,
    {
        let (done_tx, done_rx) = oneshot::channel::<StoreResult<T>>();
        let job: Job = Box::new(move |txn| {
            let result = f(txn);
            if result.is_err() {
                txn.own.clear();
            }
            Box::new(move |durable: StoreResult<()>| {
                let _ = done_tx.send(durable.and(result));
            })
        });
        self.tx.send(Request::Job(job)).await.map_err(|_| StoreError::Unavailable("the store is closed".into()))?;
        done_rx.await.map_err(|_| StoreError::Unavailable("the store writer stopped".into()))?
    }
}

fn run(keyspaces: Arc<Keyspaces>, mut rx: mpsc::Receiver<Request>, sync: bool, observer: Option<BatchObserver>) {
    let mut jobs: Vec<Job> = Vec::with_capacity(64);
    while let Some(first) = rx.blocking_recv() {
        let Request::Job(job) = first;
        jobs.push(job);
        while jobs.len() < MAX_BATCH_JOBS {
            match rx.try_recv() {
                Ok(Request::Job(job)) => jobs.push(job),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let n = jobs.len();
        let mut overlay: Overlay = HashMap::new();
        let mut completions: Vec<Completion> = Vec::with_capacity(n);
        for job in jobs.drain(..) {
            let mut txn = Txn { keyspaces: &keyspaces, batch: &overlay, own: Vec::new() };
            let completion = job(&mut txn);
            let own = std::mem::take(&mut txn.own);
            for (k, v) in own {
                overlay.insert(k, v);
            }
            completions.push(completion);
        }
        let outcome = commit(&keyspaces, overlay, sync);
        if let Some(observe) = &observer {
            observe(n, started.elapsed());
        }
        for completion in completions {
            completion(outcome.clone());
        }
    }
    // Every handle is gone: make what was written durable before the thread ends.
    let _ = keyspaces.db.persist(PersistMode::SyncAll);
}

fn commit(keyspaces: &Keyspaces, overlay: Overlay, sync: bool) -> StoreResult<()> {
    if overlay.is_empty() {
        return Ok(());
    }
    let mut batch = keyspaces.db.batch();
    for ((ks, key), value) in overlay {
        match value {
            Some(v) => batch.insert(keyspaces.get(ks), key, v),
            None => batch.remove(keyspaces.get(ks), key),
        }
    }
    batch.commit().map_err(|e| StoreError::Unavailable(e.to_string()))?;
    if sync {
        keyspaces.db.persist(PersistMode::SyncAll).map_err(|e| StoreError::Unavailable(e.to_string()))?;
    }
    Ok(())
}
