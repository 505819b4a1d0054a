//! The free-space reserve of the data directory's filesystem.
//!
//! While the space available there is below the reserve, the writer refuses every write with
//! `Unavailable` before touching the engine. A write therefore never starts on a disk that is
//! about to fill, the engine's own flushes and compactions keep some room, and the node keeps
//! serving reads. Free space is read with `statvfs` (the space available to unprivileged users,
//! so a filesystem's root-only blocks do not count), at most once per [`CHECK_EVERY`].

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a free-space reading is trusted. A write burst costs one `statvfs` per interval,
/// and writes resume at most this long after space returns.
pub const CHECK_EVERY: Duration = Duration::from_millis(250);

/// One mebibyte, the unit of the reserve's configuration.
const MIB: u64 = 1024 * 1024;

/// The reserve and the last reading of free space.
pub(crate) struct DiskReserve {
    dir: PathBuf,
    /// 0: no reserve (writes are still refused when the engine fails, see the writer).
    min_free: u64,
    last: Mutex<Option<(Instant, Option<u64>)>>,
}

impl DiskReserve {
    pub(crate) fn new(dir: &Path, min_free: u64) -> Self {
        DiskReserve { dir: dir.to_path_buf(), min_free, last: Mutex::new(None) }
    }

    /// Bytes available on the filesystem of the directory, `None` when it cannot be read (then
    /// nothing is refused for lack of space: the engine's own errors still are).
    pub(crate) fn free_bytes(&self) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, free)) = *last {
            if at.elapsed() < CHECK_EVERY {
                return free;
            }
        }
        let free = available_bytes(&self.dir);
        *last = Some((Instant::now(), free));
        free
    }

    /// Why writes must be refused now, if they must.
    pub(crate) fn refusal(&self) -> Option<String> {
        if self.min_free == 0 {
            return None;
        }
        let free = self.free_bytes()?;
        (free < self.min_free).then(|| {
            format!(
                "free space on the data directory's filesystem ({} MiB) is below the reserve of {} MiB; \
                 writes resume when space is freed",
                free / MIB,
                self.min_free / MIB
            )
        })
    }

    /// Whether there is room to try reopening the engine after a failed write: more than the
    /// reserve and more than `floor` (so that, with no reserve, a disk that is still full is
    /// not reopened over and over).
    pub(crate) fn room_to_reopen(&self, floor: u64) -> bool {
        self.free_bytes().is_none_or(|free| free > self.min_free.max(floor))
    }
}

#[cfg(unix)]
fn available_bytes(dir: &Path) -> Option<u64> {
    let stat = nix::sys::statvfs::statvfs(dir).ok()?;
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Some(stat.blocks_available() as u64 * stat.fragment_size() as u64)
}

#[cfg(not(unix))]
fn available_bytes(_: &Path) -> Option<u64> {
    None
}
