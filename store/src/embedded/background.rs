//! The engine's background threads (memtable flushes and compactions): how many there are
//! ([`engine_workers`]), and that they run at a lower CPU priority than the threads that serve
//! requests.
//!
//! A flush or a compaction is a burst of CPU work (tens to hundreds of milliseconds on one
//! core) that nobody waits for, while the tokio workers and the store writer carry every
//! message's ack. On a machine with few cores the burst took a core from them: the node's acks
//! over 25 ms came in clusters that matched the engine threads' CPU time to the quarter second
//! (docs/benchmarks.md, 2026-12-04, late night). At [`BACKGROUND_NICE`] the engine's threads
//! still get idle CPU at once and about a tenth of a busy core, so flushes keep up with writes.
//! If they fell behind, fjall's own backpressure would leave them the CPU: it holds the store
//! writer's commits back (sleeping) while 4 sealed memtables wait for their flush or level 0
//! holds 20 runs or more.
//!
//! How: on Linux a new thread starts with the nice value of the thread that creates it, so the
//! database is opened on a short-lived thread that first lowers its own priority
//! ([`opened_at_background_priority`]); every thread fjall starts there inherits it. Elsewhere
//! the threads keep the process's priority.

/// How many background threads the engine runs: as many as it would by default (one per core,
/// at most 4), but never fewer than [`MIN_WORKERS`].
///
/// Why the floor: fjall keeps its first worker for flushes. When that worker receives a request
/// to compact, it puts it back on the queue and takes the next message, which is often the same
/// request again. It keeps doing so until another worker is free to take it. After each flush
/// the engine queues one compaction request per worker. With two workers (fjall's default on a
/// 2-core machine) the only other worker is busy with the compaction itself, so the first worker
/// spins on a full core for as long as the compaction runs. That spin was a third of the engine
/// threads' CPU time and 5 % of the node's (docs/benchmarks.md, 2026-12-04, near midnight).
/// With three workers, the third one is idle and takes the request (or the request finds
/// nothing left to compact), and the first worker stops at once; it spins again only while
/// both others compact at the same time.
///
/// One worker would not spin, but fjall 3.1 can deadlock with one: a worker that rotates a
/// memtable then waits for room on its own full queue to ask for the flush.
pub(crate) fn engine_workers() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    cores.clamp(MIN_WORKERS, MAX_WORKERS)
}

/// The fewest background threads the engine runs (one per core, at least this many).
pub const MIN_WORKERS: usize = 3;
/// The most background threads the engine runs (fjall's own default cap).
pub const MAX_WORKERS: usize = 4;

/// The nice value of the engine's background threads (the request path runs at the process's
/// own, normally 0). 10 weighs about a tenth of a nice-0 thread in the Linux scheduler.
pub const BACKGROUND_NICE: i32 = 10;

/// Runs `open` (which starts the engine's threads) on a thread of its own at
/// [`BACKGROUND_NICE`], so that the threads it starts run at that priority, and returns its
/// result. The calling thread's priority is left as it is. Opening is also recovery (the
/// journal is replayed): it runs at that priority too.
pub(crate) fn opened_at_background_priority<T: Send>(open: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        let opener = std::thread::Builder::new().name("rookery-store-open".into()).spawn_scoped(s, || {
            lower_this_thread();
            open()
        });
        match opener.expect("spawning the store's opening thread").join() {
            Ok(opened) => opened,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

#[cfg(target_os = "linux")]
fn lower_this_thread() {
    // SAFETY: `gettid` and `setpriority` take and return plain integers and touch no memory of
    // ours; with PRIO_PROCESS and a thread id, Linux sets that one thread's nice value. Raising
    // a nice value needs no privilege.
    #[allow(unsafe_code)]
    let lowered = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, BACKGROUND_NICE) };
    if lowered != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "could not lower the store engine's thread priority");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_this_thread() {}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// A thread's nice value, from `/proc/self/task/<tid>/stat` (field 19; the thread's name,
    /// field 2, is in parentheses and may hold spaces, so fields are counted after it).
    fn nice_of(task: &std::path::Path) -> Option<i32> {
        let stat = std::fs::read_to_string(task.join("stat")).ok()?;
        stat.rsplit_once(')')?.1.split_whitespace().nth(16)?.parse().ok()
    }

    /// The nice value of every thread of this process named `name`.
    fn nice_of_threads(name: &str) -> Vec<Option<i32>> {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .flatten()
            .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name))
            .map(|t| nice_of(&t.path()))
            .collect()
    }

    /// [`nice_of_threads`] once at least one thread of that name shows (a new thread names
    /// itself once it runs, a moment after it was started), up to 5 s.
    fn nice_of_named_threads(name: &str) -> Vec<Option<i32>> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let found = nice_of_threads(name);
            if !found.is_empty() || std::time::Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn an_opened_store_runs_its_engine_threads_below_the_request_path() {
        let dir = tempfile::tempdir().unwrap();
        let _store = crate::embedded::EmbeddedStore::open(dir.path(), Default::default()).unwrap();
        let engine = nice_of_named_threads("fjall:worker");
        assert!(!engine.is_empty(), "the engine started its background threads");
        for nice in engine {
            assert!(nice.is_some_and(|n| n >= BACKGROUND_NICE), "an engine thread at nice {nice:?}");
        }
        let writer = nice_of_named_threads("rookery-store-w");
        assert!(!writer.is_empty(), "the store writer runs");
        for nice in writer {
            assert!(nice.is_some_and(|n| n < BACKGROUND_NICE), "the store writer keeps its priority ({nice:?})");
        }
    }
}
