//! Cache hints: asking for memory the analysis is about to read (a flow retired long ago or
//! written on another core, an index bucket, a slot) before it is read, so that the read
//! does not wait for it.

use super::state::Flow;

/// Asks for a flow's memory to be brought into this core's cache, without waiting for it:
/// a flow about to be read whole (retired, summarised) that was last touched long ago or
/// on another core.
#[inline]
pub fn prefetch(flow: &Flow) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let start = (flow as *const Flow).cast::<i8>();
        for offset in (0..std::mem::size_of::<Flow>()).step_by(64) {
            // SAFETY: a prefetch is a hint; the address is inside `flow`, and no memory is
            // read or written.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(offset)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = flow;
}

/// Asks for the cache line holding `at` to be brought into this core's cache.
#[inline]
pub fn prefetch_line<T>(at: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: a prefetch is a hint; no memory is read or written.
        unsafe { _mm_prefetch::<_MM_HINT_T0>((at as *const T).cast::<i8>()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

/// How far ahead a run of retired flows is read. 8 rather than 4: a flow is 8 lines, often
/// on another core, and at 4 the merging thread of a 2-thread SYN scan still waited on most
/// of them (best times 4-7 % lower in runs taken in turn; the medians move less than the
/// noise).
pub const RETIRED_READ_AHEAD: usize = 8;

/// Prefetches the flow [`RETIRED_READ_AHEAD`] places into `rest`, the flows still to come
/// of a run being retired, summarised or merged: each was last touched long ago (evicted,
/// idle) or on another core.
#[inline]
pub fn prefetch_ahead<T>(rest: &[T], flow: impl FnOnce(&T) -> &Flow) {
    if let Some(ahead) = rest.get(RETIRED_READ_AHEAD - 1) {
        prefetch(flow(ahead));
    }
}
