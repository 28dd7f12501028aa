//! How many connections `--capture troubled` watches now, for `/metrics`.
//!
//! The kernel's `WATCHED` map holds both directions of each watched connection with the time
//! of its last trouble (`bpf_ktime_get_coarse_ns`); an entry whose trouble is older than
//! `--watch` stays in the LRU map until it is pushed out, but no longer lets packets through.
//! So the count is that of the entries still within `--watch`, halved. A key at a time would
//! be two system calls per entry (the map holds up to twice `--max-watched`, 131,072 by
//! default); `BPF_MAP_LOOKUP_BATCH` copies thousands per call.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use tcpviz_common::WatchKey;

/// `BPF_MAP_LOOKUP_BATCH` in linux/bpf.h.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// Entries copied per system call.
const BATCH_ENTRIES: usize = 4_096;

/// The `batch` member of `union bpf_attr` (linux/bpf.h), the part this command reads.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Reads the count from the map (its own descriptor of it).
pub struct WatchedCount {
    map: OwnedFd,
    watch_ns: u64,
    keys: Vec<WatchKey>,
    values: Vec<u64>,
}

impl WatchedCount {
    pub fn new(map: impl AsFd, watch_ns: u64) -> io::Result<WatchedCount> {
        Ok(WatchedCount {
            map: map.as_fd().try_clone_to_owned()?,
            watch_ns,
            keys: Vec::with_capacity(BATCH_ENTRIES),
            values: Vec::with_capacity(BATCH_ENTRIES),
        })
    }

    /// Connections watched now (entries within `--watch` of their last trouble, halved).
    pub fn read(&mut self) -> io::Result<u64> {
        let now = coarse_now();
        let mut live_entries = 0u64;
        // The position in the map, which the kernel hands back (a bucket number for a hash
        // map; 8 bytes leave room).
        let (mut position, mut next) = (0u64, 0u64);
        let mut first = true;
        loop {
            self.keys.clear();
            self.values.clear();
            let mut attr = BatchAttr {
                in_batch: if first { 0 } else { &raw mut position as u64 },
                out_batch: &raw mut next as u64,
                keys: self.keys.as_mut_ptr() as u64,
                values: self.values.as_mut_ptr() as u64,
                count: BATCH_ENTRIES as u32,
                map_fd: self.map.as_raw_fd() as u32,
                ..Default::default()
            };
            // SAFETY: `attr` names buffers of `BATCH_ENTRIES` keys and values (the map's key
            // and value types) that live past the call; the kernel writes at most `count`
            // of each and the batch position, and reads nothing else.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_bpf,
                    BPF_MAP_LOOKUP_BATCH,
                    &raw mut attr,
                    std::mem::size_of::<BatchAttr>() as libc::c_uint,
                )
            };
            let error = (r < 0).then(io::Error::last_os_error);
            // ENOENT: the end of the map, with the last entries copied.
            let end = matches!(&error, Some(e) if e.raw_os_error() == Some(libc::ENOENT));
            if let Some(e) = error
                && !end
            {
                return Err(e);
            }
            let copied = (attr.count as usize).min(BATCH_ENTRIES);
            // SAFETY: the kernel initialised the first `count` of each (plain integers).
            unsafe { self.values.set_len(copied) };
            live_entries += self.values.iter().filter(|&&t| now.saturating_sub(t) <= self.watch_ns).count() as u64;
            if end {
                return Ok(live_entries / 2);
            }
            position = next;
            first = false;
        }
    }
}

/// CLOCK_MONOTONIC_COARSE: `bpf_ktime_get_coarse_ns` in the kernel.
fn coarse_now() -> u64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}
