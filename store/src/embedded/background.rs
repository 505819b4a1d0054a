//! The engine's background threads (memtable flushes and compactions) run at a lower CPU
//! priority than the threads that serve requests.
//!
//! A flush or a compaction is a burst of CPU work (tens to hundreds of milliseconds on one
//! core) that nobody waits for, while the tokio workers and the store writer carry every
//! message's ack. On a machine with few cores the burst took a core from them: the node's acks
//! over 25 ms came in clusters that matched the engine threads' CPU time to the quarter second
//! (docs/benchmarks.md, 2026-12-04, late night). At [`BACKGROUND_NICE`] the engine's threads
//! still get idle CPU at once and about a tenth of a busy core, so flushes keep up with writes
//! (and if they fell behind, the engine's own write throttling would leave them the CPU).
//!
//! Linux only: the nice value of one thread is set through its thread id
//! (`setpriority(PRIO_PROCESS, tid)`). Elsewhere the threads keep the process's priority.

/// The nice value of the engine's background threads (the request path runs at the process's
/// own, normally 0). 10 weighs about a tenth of a nice-0 thread in the Linux scheduler.
pub const BACKGROUND_NICE: i32 = 10;

/// The name fjall gives its flush and compaction threads.
const ENGINE_THREAD: &str = "fjall:worker";

/// Lowers the priority of every engine background thread of this process to
/// [`BACKGROUND_NICE`] (a thread already at that nice value or above is left alone). Called
/// after each open of the database, which starts its threads. Returns how many it lowered.
#[cfg(target_os = "linux")]
pub(crate) fn lower_engine_threads() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    let mut lowered = 0;
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse::<libc::id_t>().ok()) else { continue };
        let is_engine = std::fs::read_to_string(task.path().join("comm")).is_ok_and(|c| c.trim_end() == ENGINE_THREAD);
        if is_engine && nice_of(tid).is_some_and(|n| n < BACKGROUND_NICE) && set_nice(tid, BACKGROUND_NICE) {
            lowered += 1;
        }
    }
    if lowered > 0 {
        tracing::debug!(threads = lowered, nice = BACKGROUND_NICE, "lowered the store engine's background threads");
    }
    lowered
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn lower_engine_threads() -> usize {
    0
}

/// A thread's nice value, from `/proc/self/task/<tid>/stat` (field 19).
#[cfg(target_os = "linux")]
pub(crate) fn nice_of(tid: libc::id_t) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // The thread's name (field 2) is in parentheses and may hold spaces: count after it.
    stat.rsplit_once(')')?.1.split_whitespace().nth(16)?.parse().ok()
}

#[cfg(target_os = "linux")]
fn set_nice(tid: libc::id_t, nice: i32) -> bool {
    // SAFETY: `setpriority` takes plain integers and touches no memory of ours; with
    // PRIO_PROCESS and a thread id, Linux sets that one thread's nice value. Raising a nice
    // value needs no privilege.
    #[allow(unsafe_code)]
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) };
    r == 0
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn engine_threads() -> Vec<(libc::id_t, Option<i32>)> {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .flatten()
            .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == ENGINE_THREAD))
            .map(|t| {
                let tid = t.file_name().to_str().unwrap().parse().unwrap();
                (tid, nice_of(tid))
            })
            .collect()
    }

    #[test]
    fn an_opened_store_runs_its_engine_threads_below_the_request_path() {
        let dir = tempfile::tempdir().unwrap();
        let _store = crate::embedded::EmbeddedStore::open(dir.path(), Default::default()).unwrap();
        let threads = engine_threads();
        assert!(!threads.is_empty(), "the engine started its background threads");
        for (tid, nice) in threads {
            assert!(nice.is_some_and(|n| n >= BACKGROUND_NICE), "engine thread {tid} at nice {nice:?}");
        }
        let me = nice_of(std::process::id() as libc::id_t).unwrap();
        assert!(me < BACKGROUND_NICE, "the process itself keeps its priority (nice {me})");
    }
}
