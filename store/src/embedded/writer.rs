//! Group commit: one writer thread takes every write job queued since its last commit, applies
//! them to one batch, commits it and syncs the journal once, then answers every job.
//!
//! Durability therefore costs one fsync per batch, not per message: under load a batch holds
//! everything that arrived while the previous fsync ran.
//!
//! Commit delay ([`CommitDelay`]): when writes arrive together but each fsync is quick, batches
//! stay small and the fsyncs themselves become the cost (each one takes CPU in the kernel and
//! the disk's driver, besides its wait). With a delay set, a writer whose last batch held more than one job and whose new
//! batch is still small waits that long for more jobs before it commits. A lone write (the last
//! batch held one job) never waits, so a quiet node answers as fast as without it.
//!
//! Jobs run one at a time on the writer thread, so a job's read-check-write (a unique username,
//! the one direct conversation of a pair, a refresh token used once) is atomic. A job reads
//! through [`Txn`], which sees the writes of earlier jobs of the same batch.
//!
//! Queue: bounded at [`QUEUE_CAPACITY`] jobs. Overflow policy: callers wait (backpressure) for a
//! free slot; nothing is dropped.
//!
//! Faults: while free space is below the reserve ([`super::disk`]) nothing is written: every job
//! that would write is answered `Unavailable` (one that writes nothing still gets its answer).
//! A batch whose journal write or sync fails is answered `Unavailable` and was not applied: the
//! journal is synced before the batch reaches the memtables, so nobody ever reads a write that
//! was not acknowledged. The engine refuses writes after such a failure, so the writer then
//! refuses every job and reopens the database from its directory (journal recovery drops a torn
//! last batch), as a restart would, once there is room again; reads are served by the old
//! engine until the moment of the reopen.

use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use fjall::compaction::Leveled;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use foldhash::{HashMap, HashMapExt};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot};

use super::disk::DiskReserve;
use super::heads::{Heads, Note};
use super::{CACHE_BYTES, L0_COMPACTION_THRESHOLD, MEMTABLE_BYTES};
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

    /// Opens (or creates) the database in `dir` with every keyspace. The threads the engine
    /// starts for flushes and compactions run below the request path
    /// ([`super::background`]).
    fn open(dir: &Path) -> StoreResult<Self> {
        super::background::opened_at_background_priority(|| Self::open_here(dir))
    }

    fn open_here(dir: &Path) -> StoreResult<Self> {
        let db = Database::builder(dir)
            .cache_size(CACHE_BYTES)
            .worker_threads(super::background::engine_workers())
            .open()
            .map_err(|e| StoreError::Unavailable(format!("opening {}: {e}", dir.display())))?;
        let mut all = Vec::with_capacity(Ks::ALL.len());
        for ks in Ks::ALL {
            all.push(
                db.keyspace(ks.name(), || {
                    // Level 0 gathers more tables before compaction (`L0_COMPACTION_THRESHOLD`
                    // says why); the rest of the leveled strategy is fjall's default.
                    let compaction = Leveled::default().with_l0_threshold(L0_COMPACTION_THRESHOLD);
                    // Filter and index blocks are partitioned from level 1 on (fjall's default
                    // starts at level 3): a point read (the per-send client_id lookup, the
                    // commit's seq check) then loads one small partition through the block cache
                    // instead of a whole table's filter, which thrashed the cache and was
                    // re-read and re-checksummed on every miss once the tables grew
                    // (docs/benchmarks.md). Memory stays bounded by the cache, whatever the data.
                    KeyspaceCreateOptions::default()
                        .compaction_strategy(Arc::new(compaction))
                        .max_memtable_size(MEMTABLE_BYTES)
                        .filter_block_partitioning_policy(fjall::config::PartitioningPolicy::new([false, true]))
                        .index_block_partitioning_policy(fjall::config::PartitioningPolicy::new([false, true]))
                })
                .map_err(|e| StoreError::Unavailable(e.to_string()))?,
            );
        }
        Ok(Keyspaces { db, all })
    }
}

/// A full disk is not reopened before this much is free (with no reserve configured, a reopen
/// on a disk that is still full would fail its next write at once).
const REOPEN_MIN_FREE: u64 = 4 * 1024 * 1024;
/// First wait between reopen attempts; it doubles up to [`REOPEN_MAX_WAIT`].
const REOPEN_FIRST_WAIT: Duration = Duration::from_millis(100);
const REOPEN_MAX_WAIT: Duration = Duration::from_secs(5);
/// How often a failed writer looks at its queue and at the free space.
const RECOVERY_POLL: Duration = Duration::from_millis(20);
/// How long a reopen waits for reads still using the old engine.
const READERS_GRACE: Duration = Duration::from_secs(5);

/// The engine, the reason it refuses writes (if it does) and the reopen after a failure.
pub(crate) struct Engine {
    dir: PathBuf,
    /// `None` only while the database is being reopened.
    current: RwLock<Option<Arc<Keyspaces>>>,
    /// Set when a write or sync failed: the engine refuses writes until it is reopened.
    failure: Mutex<Option<String>>,
    reserve: DiskReserve,
}

impl Engine {
    pub(crate) fn open(dir: &Path, min_free_bytes: u64) -> StoreResult<Self> {
        let keyspaces = Keyspaces::open(dir)?;
        Ok(Engine {
            dir: dir.to_path_buf(),
            current: RwLock::new(Some(Arc::new(keyspaces))),
            failure: Mutex::new(None),
            reserve: DiskReserve::new(dir, min_free_bytes),
        })
    }

    /// The open database, for reads.
    pub(crate) fn keyspaces(&self) -> StoreResult<Arc<Keyspaces>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| StoreError::Unavailable("the store is reopening after a failed write; retry".into()))
    }

    /// Why writes are refused now (a failed write not yet recovered, or free space below the
    /// reserve), if they are.
    pub(crate) fn write_refusal(&self) -> Option<String> {
        if let Some(failure) = self.failure.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            return Some(format!("a write failed ({failure}); the store reopens when there is room"));
        }
        self.reserve.refusal()
    }

    fn failed(&self) -> bool {
        self.failure.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    fn fail(&self, reason: String) {
        *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
    }

    /// Drops the failed database (once the reads using it are done) and opens it again from its
    /// directory, as a restart would.
    fn reopen(&self) -> StoreResult<()> {
        let old = self.current.write().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(old) = old {
            let gone = Arc::downgrade(&old);
            drop(old);
            let deadline = Instant::now() + READERS_GRACE;
            while gone.strong_count() > 0 {
                if Instant::now() > deadline {
                    return Err(StoreError::Unavailable("reads of the failed database did not finish".into()));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let keyspaces = Keyspaces::open(&self.dir)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(keyspaces));
        *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(())
    }
}

/// Keys and values as the engine keeps them: made once by the job and handed to the batch as
/// they are, with no copy into the engine's own type at commit.
pub(crate) type Slice = fjall::Slice;

/// A key of one keyspace.
type Key = (Ks, Slice);

/// A batch's pending writes, by keyspace (`None` deletes). One table per keyspace, so a read
/// looks a key up without copying it; the tables are kept from batch to batch with their
/// capacity (filled from empty, each batch rehashed them several times). Bound: what one batch
/// writes ([`MAX_BATCH_JOBS`] jobs).
struct Overlay {
    by_ks: Vec<HashMap<Slice, Option<Slice>>>,
}

impl Overlay {
    fn new() -> Self {
        Overlay { by_ks: Ks::ALL.iter().map(|_| HashMap::new()).collect() }
    }

    fn get(&self, ks: Ks, key: &[u8]) -> Option<&Option<Slice>> {
        self.by_ks[ks as usize].get(key)
    }

    fn insert(&mut self, (ks, key): Key, value: Option<Slice>) {
        self.by_ks[ks as usize].insert(key, value);
    }

    fn is_empty(&self) -> bool {
        self.by_ks.iter().all(HashMap::is_empty)
    }
}

/// A job's write and note lists, kept by the writer from job to job with their capacity. Lists
/// that a large job grew past [`TxnBuffers::KEEP`] entries are dropped rather than kept.
#[derive(Default)]
struct TxnBuffers {
    own: Vec<(Key, Option<Slice>)>,
    notes: Vec<(Box<str>, Note)>,
}

impl TxnBuffers {
    const KEEP: usize = 64;

    /// Takes back a job's emptied lists.
    fn recycle(&mut self, own: Vec<(Key, Option<Slice>)>, notes: Vec<(Box<str>, Note)>) {
        if own.capacity() <= Self::KEEP {
            self.own = own;
        }
        if notes.capacity() <= Self::KEEP {
            self.notes = notes;
        }
    }
}

/// What a job sees: the committed database plus the writes of earlier jobs in this batch.
pub(crate) struct Txn<'a> {
    keyspaces: &'a Keyspaces,
    batch: &'a Overlay,
    own: Vec<(Key, Option<Slice>)>,
    /// What the writer knows of conversations' committed heads (fence, last `seq`).
    pub(crate) heads: &'a mut Heads,
    notes: Vec<(Box<str>, Note)>,
}

impl<'a> Txn<'a> {
    fn new(keyspaces: &'a Keyspaces, batch: &'a Overlay, heads: &'a mut Heads) -> Self {
        Txn::with_buffers(keyspaces, batch, heads, TxnBuffers::default())
    }

    /// A transaction that records its writes and notes in `buffers` (empty, with the capacity
    /// earlier jobs left them), so that a job does not allocate them anew.
    fn with_buffers(keyspaces: &'a Keyspaces, batch: &'a Overlay, heads: &'a mut Heads, buffers: TxnBuffers) -> Self {
        let TxnBuffers { own, notes } = buffers;
        debug_assert!(own.is_empty() && notes.is_empty());
        Txn { keyspaces, batch, own, heads, notes }
    }

    /// Reads a key, seeing this job's and this batch's earlier writes.
    pub(crate) fn get(&self, ks: Ks, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        match self.pending(ks, key) {
            Some(v) => Ok(v.map(<[u8]>::to_vec)),
            None => self.committed(ks, key),
        }
    }

    /// This job's or this batch's write of a key, if there is one: `Some(None)` for a delete.
    pub(crate) fn pending(&self, ks: Ks, key: &[u8]) -> Option<Option<&[u8]>> {
        if let Some((_, v)) = self.own.iter().rev().find(|((k, kk), _)| *k == ks && **kk == *key) {
            return Some(v.as_deref());
        }
        self.batch.get(ks, key).map(|v| v.as_deref())
    }

    /// Reads a key from the committed database, ignoring this batch.
    pub(crate) fn committed(&self, ks: Ks, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        self.keyspaces
            .get(ks)
            .get(key)
            .map(|v| v.map(|s| s.to_vec()))
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    /// The highest committed key in `lo..=hi` (writes of this batch are not seen).
    pub(crate) fn last_committed_key(&self, ks: Ks, lo: &[u8], hi: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        match self.keyspaces.get(ks).range(lo..=hi).next_back() {
            Some(guard) => {
                let (k, _) = guard.into_inner().map_err(|e| StoreError::Unavailable(e.to_string()))?;
                Ok(Some(k.to_vec()))
            }
            None => Ok(None),
        }
    }

    pub(crate) fn put(&mut self, ks: Ks, key: impl Into<Slice>, value: impl Into<Slice>) {
        self.own.push(((ks, key.into()), Some(value.into())));
    }

    pub(crate) fn delete(&mut self, ks: Ks, key: impl Into<Slice>) {
        self.own.push(((ks, key.into()), None));
    }

    /// Records a write that moves a conversation's head; applied once the batch is durable.
    pub(crate) fn note(&mut self, conv: &str, note: Note) {
        self.notes.push((conv.into(), note));
    }

    /// Drops this job's writes and notes (the job failed).
    fn discard(&mut self) {
        self.own.clear();
        self.notes.clear();
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
/// A write job: runs against the batch (`Some`), or is refused without running (`None`); either
/// way it returns what answers its caller once the batch's outcome is known.
type Job = Box<dyn FnOnce(Option<&mut Txn<'_>>) -> Completion + Send>;

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

/// A batch with at least this many jobs is committed without waiting for more.
pub const COMMIT_DELAY_BELOW: usize = 32;

/// How long group commit waits to gather more jobs into a small batch (the module's
/// documentation says when). Zero: never.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitDelay(pub Duration);

impl CommitDelay {
    /// The wait before committing a batch of `jobs` jobs when the previous batch held
    /// `last_batch`; `None` when it is committed at once.
    pub fn wait(self, last_batch: usize, jobs: usize) -> Option<Duration> {
        (!self.0.is_zero() && last_batch > 1 && jobs < COMMIT_DELAY_BELOW).then_some(self.0)
    }
}

impl Writer {
    pub(crate) fn start(engine: Arc<Engine>, sync: bool, delay: CommitDelay, observer: Option<BatchObserver>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        std::thread::Builder::new()
            .name("rookery-store-writer".into())
            .spawn(move || run(engine, rx, sync, delay, observer))
            .expect("spawning the store writer thread");
        Writer { tx }
    }

    /// Runs `f` on the writer thread inside the next batch and resolves when that batch is
    /// durable. If `f` fails, none of its writes are applied. `Unavailable` when its writes were
    /// refused (free space below the reserve, the engine recovering from a failed write) or the
    /// batch's commit failed; then nothing of it was written.
    pub(crate) async fn submit<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Txn<'_>) -> StoreResult<T> + Send + 'static,
    {
        let (done_tx, done_rx) = oneshot::channel::<StoreResult<T>>();
        let job = job(
            f,
            Answer::new(move |answer| {
                let _ = done_tx.send(answer);
            }),
        );
        self.tx.send(Request::Job(job)).await.map_err(|_| StoreError::Unavailable("the store is closed".into()))?;
        done_rx.await.map_err(|_| StoreError::Unavailable("the store writer stopped".into()))?
    }

    /// [`submit`](Writer::submit) without a task waiting for the answer: `done` runs on the
    /// writer thread with what `submit` would have returned, so it must not block. When the
    /// queue is full, a task waits for room (the same backpressure as `submit`, off the caller);
    /// then a later submission may overtake this one, so a caller that needs order submits the
    /// next write from `done`.
    pub(crate) fn submit_then<T, F>(&self, f: F, done: impl FnOnce(StoreResult<T>) + Send + 'static)
    where
        T: Send + 'static,
        F: FnOnce(&mut Txn<'_>) -> StoreResult<T> + Send + 'static,
    {
        let request = Request::Job(job(f, Answer::new(done)));
        let closed = match self.tx.try_send(request) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Closed(request)) => request,
            Err(mpsc::error::TrySendError::Full(request)) => match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    let tx = self.tx.clone();
                    drop(runtime.spawn(async move {
                        if let Err(mpsc::error::SendError(request)) = tx.send(request).await {
                            refuse_request(request);
                        }
                    }));
                    return;
                }
                // Outside any runtime (no caller today): wait here instead.
                Err(_) => match self.tx.blocking_send(request) {
                    Ok(()) => return,
                    Err(mpsc::error::SendError(request)) => request,
                },
            },
        };
        refuse_request(closed);
    }
}

/// Where a job's outcome goes. Called exactly once: with the outcome, or, if the job is dropped
/// unanswered (the writer thread stopped), with `Unavailable`. Held inside the job's own box,
/// so it needs no allocation of its own.
struct Answer<T, D: FnOnce(StoreResult<T>)>(Option<D>, PhantomData<fn(T)>);

impl<T, D: FnOnce(StoreResult<T>)> Answer<T, D> {
    fn new(done: D) -> Self {
        Answer(Some(done), PhantomData)
    }

    fn send(mut self, outcome: StoreResult<T>) {
        if let Some(done) = self.0.take() {
            done(outcome);
        }
    }
}

impl<T, D: FnOnce(StoreResult<T>)> Drop for Answer<T, D> {
    fn drop(&mut self) {
        if let Some(done) = self.0.take() {
            done(Err(StoreError::Unavailable("the store writer stopped".into())));
        }
    }
}

/// A write job: runs `f` against the batch (its writes dropped if it fails) and answers once
/// the batch's outcome is known.
fn job<T, F, D>(f: F, answer: Answer<T, D>) -> Job
where
    T: Send + 'static,
    F: FnOnce(&mut Txn<'_>) -> StoreResult<T> + Send + 'static,
    D: FnOnce(StoreResult<T>) + Send + 'static,
{
    Box::new(move |txn| {
        let result = txn.map(|txn| {
            let result = f(txn);
            if result.is_err() {
                txn.discard();
            }
            result
        });
        Box::new(move |durable: StoreResult<()>| {
            let outcome = durable
                .and_then(|()| result.unwrap_or_else(|| Err(StoreError::Unavailable("the write was refused".into()))));
            answer.send(outcome);
        })
    })
}

fn refuse(job: Job, reason: &str) {
    job(None)(Err(StoreError::Unavailable(reason.to_string())));
}

/// Refuses a request that could not be queued because the writer thread is gone.
fn refuse_request(request: Request) {
    let Request::Job(job) = request;
    refuse(job, "the store is closed");
}

fn run(
    engine: Arc<Engine>,
    mut rx: mpsc::Receiver<Request>,
    sync: bool,
    delay: CommitDelay,
    observer: Option<BatchObserver>,
) {
    let mut jobs: Vec<Job> = Vec::with_capacity(64);
    let mut overlay = Overlay::new();
    let mut heads = Heads::new();
    let mut notes: Vec<(Box<str>, Note)> = Vec::new();
    let mut buffers = TxnBuffers::default();
    let mut refusing = false;
    let mut last_batch = 0;
    loop {
        if engine.failed() {
            if !recover(&engine, &mut rx) {
                break;
            }
            refusing = false;
        }
        let Some(Request::Job(first)) = rx.blocking_recv() else { break };
        jobs.push(first);
        take_queued(&mut rx, &mut jobs);
        if let Some(wait) = delay.wait(last_batch, jobs.len()) {
            std::thread::sleep(wait);
            take_queued(&mut rx, &mut jobs);
        }
        let started = Instant::now();
        let n = jobs.len();
        last_batch = n;
        let refusal = engine.write_refusal();
        if refusal.is_some() != refusing {
            refusing = refusal.is_some();
            match &refusal {
                Some(reason) => tracing::error!(%reason, "the store refuses writes"),
                None => tracing::info!("the store accepts writes again"),
            }
        }
        let keyspaces = match engine.keyspaces() {
            Ok(ks) => ks,
            Err(e) => {
                for job in jobs.drain(..) {
                    refuse(job, &e.to_string());
                }
                continue;
            }
        };
        if let Some(reason) = refusal {
            // Nothing is written. A job that writes nothing (a flush, a check that fails, a
            // revocation of an unknown token) still gets its answer; the others are refused.
            for job in jobs.drain(..) {
                let mut txn = Txn::new(&keyspaces, &overlay, &mut heads);
                let completion = job(Some(&mut txn));
                let wrote = !txn.own.is_empty();
                completion(if wrote { Err(StoreError::Unavailable(reason.clone())) } else { Ok(()) });
            }
            continue;
        }
        let mut completions: Vec<Completion> = Vec::with_capacity(n);
        for job in jobs.drain(..) {
            let mut txn = Txn::with_buffers(&keyspaces, &overlay, &mut heads, std::mem::take(&mut buffers));
            let completion = job(Some(&mut txn));
            let (mut own, mut job_notes) = (std::mem::take(&mut txn.own), std::mem::take(&mut txn.notes));
            for (k, v) in own.drain(..) {
                overlay.insert(k, v);
            }
            notes.append(&mut job_notes);
            buffers.recycle(own, job_notes);
            completions.push(completion);
        }
        let outcome = commit(&keyspaces, &mut overlay, sync);
        drop(keyspaces);
        match &outcome {
            Ok(()) => heads.apply(notes.drain(..)),
            Err(e) => {
                // The engine refuses every write from now on; `recover` reopens it.
                tracing::error!(error = %e, jobs = n, "a store write failed; nothing of it was acknowledged");
                engine.fail(match e {
                    StoreError::Unavailable(detail) => detail.clone(),
                    other => other.to_string(),
                });
                notes.clear();
                heads.clear();
                refusing = true;
            }
        }
        if let Some(observe) = &observer {
            observe(n, started.elapsed());
        }
        for completion in completions {
            completion(outcome.clone());
        }
    }
    // Every handle is gone: make what was written durable before the thread ends.
    if let Ok(keyspaces) = engine.keyspaces() {
        let _ = keyspaces.db.persist(PersistMode::SyncAll);
    }
}

/// Moves the jobs already queued into `jobs`, up to [`MAX_BATCH_JOBS`].
fn take_queued(rx: &mut mpsc::Receiver<Request>, jobs: &mut Vec<Job>) {
    while jobs.len() < MAX_BATCH_JOBS {
        match rx.try_recv() {
            Ok(Request::Job(job)) => jobs.push(job),
            Err(_) => break,
        }
    }
}

/// After a failed write: refuses every job until the database is reopened, which is tried once
/// there is room on the disk, with a growing wait between attempts. Returns `false` when every
/// handle to the store is gone.
fn recover(engine: &Engine, rx: &mut mpsc::Receiver<Request>) -> bool {
    let mut wait = REOPEN_FIRST_WAIT;
    let mut next_attempt = Instant::now();
    loop {
        loop {
            match rx.try_recv() {
                Ok(Request::Job(job)) => {
                    let reason = engine.write_refusal().unwrap_or_else(|| "the store is recovering".into());
                    refuse(job, &reason);
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
        if Instant::now() >= next_attempt && engine.reserve.room_to_reopen(REOPEN_MIN_FREE) {
            match engine.reopen() {
                Ok(()) => {
                    tracing::info!("the store was reopened after a failed write and accepts writes again");
                    return true;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?wait, "reopening the store failed");
                    next_attempt = Instant::now() + wait;
                    wait = (wait * 2).min(REOPEN_MAX_WAIT);
                }
            }
        }
        std::thread::sleep(RECOVERY_POLL);
    }
}

/// Writes the batch (and empties the overlay); with `sync`, the journal is synced before the
/// batch is applied to the memtables, so a failed sync leaves nothing readable behind.
fn commit(keyspaces: &Keyspaces, overlay: &mut Overlay, sync: bool) -> StoreResult<()> {
    if overlay.is_empty() {
        return Ok(());
    }
    let mut batch = keyspaces.db.batch().durability(sync.then_some(PersistMode::SyncAll));
    for (ks, pending) in Ks::ALL.iter().zip(overlay.by_ks.iter_mut()) {
        for (key, value) in pending.drain() {
            match value {
                Some(v) => batch.insert(keyspaces.get(*ks), key, v),
                None => batch.remove(keyspaces.get(*ks), key),
            }
        }
    }
    batch.commit().map_err(|e| StoreError::Unavailable(e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc as std_mpsc;

    use super::*;

    /// Level 0 of a keyspace gathers `L0_COMPACTION_THRESHOLD` flushed tables before they are
    /// compacted (fjall's default, 4, would have merged them), and is compacted once it has them.
    #[test]
    fn level_0_is_compacted_at_the_threshold_and_not_before() {
        let dir = tempfile::tempdir().unwrap();
        let keyspaces = Keyspaces::open(dir.path()).unwrap();
        let messages = keyspaces.get(Ks::Messages);
        // Every table spans the same key range, as flushed message tables do (their keys lead
        // with random conversation ids): tables that overlap nothing are moved down, not merged.
        let flush = |n: u8| {
            messages.insert([0, n], [n]).unwrap();
            messages.insert([255, n], [n]).unwrap();
            messages.rotate_memtable_and_wait().unwrap();
        };
        let below = L0_COMPACTION_THRESHOLD - 1;
        for n in 0..below {
            flush(n);
        }
        // A compaction at fjall's default would have started after the fourth flush; it takes
        // milliseconds for tables this small. (The first table may have been moved down into
        // the empty level 1 instead.)
        std::thread::sleep(Duration::from_millis(1500));
        let gathered = messages.l0_table_count();
        assert!(
            gathered >= usize::from(below) - 1,
            "level 0 was compacted below the threshold: {gathered} tables left"
        );
        // Three more: level 0 reaches the threshold and is compacted.
        for n in below..below + 3 {
            flush(n);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while messages.l0_table_count() >= usize::from(L0_COMPACTION_THRESHOLD) {
            assert!(Instant::now() < deadline, "level 0 was not compacted at the threshold");
            std::thread::sleep(Duration::from_millis(20));
        }
        for n in 0..below + 3 {
            for key in [[0, n], [255, n]] {
                assert_eq!(messages.get(key).unwrap().as_deref(), Some(&[n][..]), "compaction kept every key");
            }
        }
    }

    #[test]
    fn only_a_small_batch_after_a_shared_one_waits() {
        let delay = CommitDelay(Duration::from_millis(1));
        assert_eq!(delay.wait(2, 1), Some(Duration::from_millis(1)));
        assert_eq!(delay.wait(2, COMMIT_DELAY_BELOW - 1), Some(Duration::from_millis(1)));
        assert_eq!(delay.wait(1, 1), None, "a lone write never waits");
        assert_eq!(delay.wait(0, 1), None, "nor the first");
        assert_eq!(delay.wait(5, COMMIT_DELAY_BELOW), None, "a batch that is big enough goes at once");
        assert_eq!(CommitDelay::default().wait(5, 1), None, "zero: never");
    }

    /// A job that writes one key and reports its answer on `done`.
    fn put(n: u8, done: &std_mpsc::Sender<u8>) -> Request {
        let done = done.clone();
        Request::Job(job(
            move |txn: &mut Txn<'_>| {
                txn.put(Ks::Users, vec![b'k', n], vec![n]);
                Ok(())
            },
            Answer::new(move |r: StoreResult<()>| {
                r.expect("the write commits");
                let _ = done.send(n);
            }),
        ))
    }

    #[test]
    fn the_writer_gathers_writes_after_a_shared_batch_and_not_after_a_lone_one() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(Engine::open(dir.path(), 0).unwrap());
        let batches = Arc::new(Mutex::new(Vec::new()));
        let seen = batches.clone();
        let observer: BatchObserver = Arc::new(move |n, _| seen.lock().unwrap().push(n));
        let delay = CommitDelay(Duration::from_millis(500));
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let (done, answers) = std_mpsc::channel();
        // Three jobs queued before the writer runs: its first batch holds all three.
        for n in 0..3 {
            tx.try_send(put(n, &done)).ok().unwrap();
        }
        // Without fsync: the test is about which jobs share a batch, not about the disk.
        let writer = std::thread::spawn(move || run(engine, rx, false, delay, Some(observer)));
        for _ in 0..3 {
            answers.recv().unwrap();
        }
        // After a shared batch, a write waits for company: one sent 20 ms later joins it.
        let started = Instant::now();
        tx.try_send(put(3, &done)).ok().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        tx.try_send(put(4, &done)).ok().unwrap();
        assert_eq!([answers.recv().unwrap(), answers.recv().unwrap()], [3, 4]);
        assert!(started.elapsed() >= Duration::from_millis(500), "the batch waited out its delay");
        // That batch held two, so the next lone write waits too; the one after it does not.
        tx.try_send(put(5, &done)).ok().unwrap();
        assert_eq!(answers.recv().unwrap(), 5);
        let started = Instant::now();
        tx.try_send(put(6, &done)).ok().unwrap();
        assert_eq!(answers.recv().unwrap(), 6);
        assert!(started.elapsed() < Duration::from_millis(400), "a write after a lone one goes at once");
        drop(tx);
        writer.join().unwrap();
        assert_eq!(*batches.lock().unwrap(), [3, 2, 1, 1]);
    }
}
