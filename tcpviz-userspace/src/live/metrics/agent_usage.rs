//! What the metrics read of the agent itself: its ring buffers' fill and its CPU and RSS.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::AtomicU64;

/// A read-only view of a ring buffer's positions: its consumer and producer pages, mapped
/// once (a second mapping of the ring the agent reads; reading it costs two loads).
pub(super) struct RingView {
    pub(super) name: &'static str,
    ptr: *mut libc::c_void,
    page: usize,
    size: u64,
}

// SAFETY: the mapping is only read, through atomic loads, and lives as long as the view.
unsafe impl Send for RingView {}

impl RingView {
    pub(super) fn map(name: &'static str, fd: BorrowedFd<'_>) -> Option<RingView> {
        // A ring buffer's max_entries is its size in bytes.
        let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
        let size: u64 =
            fdinfo.lines().find_map(|l| l.strip_prefix("max_entries:")).and_then(|v| v.trim().parse().ok())?;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        // SAFETY: maps two pages of a BPF ring buffer's descriptor read-only (the consumer
        // position, then the producer's); the kernel checks the offsets, and the result is
        // checked before use.
        let ptr =
            unsafe { libc::mmap(std::ptr::null_mut(), 2 * page, libc::PROT_READ, libc::MAP_SHARED, fd.as_raw_fd(), 0) };
        if ptr == libc::MAP_FAILED {
            tracing::debug!("cannot map the {name} ring's positions: {}", std::io::Error::last_os_error());
            return None;
        }
        Some(RingView { name, ptr, page, size })
    }

    pub(super) fn fill(&self) -> f64 {
        let load = |offset: usize| {
            // SAFETY: both positions are 8-byte aligned u64s at the start of their page,
            // inside the mapping; the kernel updates them atomically.
            unsafe {
                (*(self.ptr.cast::<u8>().add(offset) as *const AtomicU64)).load(std::sync::atomic::Ordering::Acquire)
            }
        };
        let (consumer, producer) = (load(0), load(self.page));
        producer.saturating_sub(consumer) as f64 / self.size.max(1) as f64
    }
}

impl Drop for RingView {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe { libc::munmap(self.ptr, 2 * self.page) };
    }
}

/// The agent's CPU seconds (user + system) and resident bytes, from /proc/self.
pub(super) fn process_usage() -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name, in parentheses, may hold spaces: the fields follow its last `)`.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 (1-based), 12 and 13 after the name and state.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    Some((ticks as f64 / hz, pages * page))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_usage_reads_proc_self() {
        let (cpu, rss) = process_usage().expect("/proc/self");
        assert!(cpu >= 0.0 && rss > 0);
    }
}
