//! Kernel-side diagnostics through aya-log: the `AYA_LOGS` ring, which the agent reads and
//! forwards into `tracing` (target `tcpviz::kernel`).
//!
//! Off unless the agent runs with `-vv`: aya-log's level gate is `AYA_LOG_LEVEL`, a global in
//! `.rodata` that the agent sets to 0 (nothing) before loading. That map is frozen read-only,
//! so the verifier reads each gate as a constant and removes the code behind it: what is
//! left of a diagnostic is that check. Every call here sits on a path of trouble or failure
//! (a connection that becomes watched, a map insert or a ring reservation that failed, a
//! copy that failed), never on a healthy packet's.

use aya_ebpf::cty::c_long;
use aya_log_ebpf::macro_support::{Level, level_enabled};
use aya_log_ebpf::{debug, warn};
use tcpviz_common::{WATCH_SACK_SENT, WATCH_TRACEPOINT, WatchKey};

/// The `tracing` target of everything the kernel side logs.
const TARGET: &str = "tcpviz::kernel";

/// What made a connection watched, in words; `tracepoint` is a `TP_*` (a constant where the
/// callers inline this, so the match folds).
#[inline(always)]
fn reason_text(reason: u8, tracepoint: u32) -> &'static str {
    if reason == WATCH_TRACEPOINT {
        match tracepoint {
            tcpviz_common::TP_RETRANSMIT_SKB => "tracepoint tcp_retransmit_skb",
            tcpviz_common::TP_RETRANSMIT_SYNACK => "tracepoint tcp_retransmit_synack",
            tcpviz_common::TP_CONG_STATE_SET => "tracepoint tcp_cong_state_set (Recovery or Loss)",
            tcpviz_common::TP_RECEIVE_RESET => "tracepoint tcp_receive_reset",
            _ => "tracepoint",
        }
    } else if reason == WATCH_SACK_SENT {
        "SACK sent"
    } else {
        "zero window sent"
    }
}

/// A connection became watched: it was not in `WATCHED`, or its watch had expired.
#[inline(always)]
pub(crate) fn became_watched(key: &WatchKey, reason: u8, tracepoint: u32) {
    let why = reason_text(reason, tracepoint);
    if key.ip_version == 4 {
        let (src, dst) =
            ([key.src[0], key.src[1], key.src[2], key.src[3]], [key.dst[0], key.dst[1], key.dst[2], key.dst[3]]);
        debug!(&(), target: TARGET, "became watched ({}): {:i}:{} -> {:i}:{}", why, src, key.sport, dst, key.dport);
    } else {
        debug!(&(), target: TARGET, "became watched ({}): [{:i}]:{} -> [{:i}]:{}", why, key.src, key.sport, key.dst, key.dport);
    }
}

/// `WATCHED` refused an entry (an LRU map makes room by evicting the least recently used,
/// so this is a failure to allocate one, not a full map).
#[inline(always)]
pub(crate) fn watch_insert_failed(key: &WatchKey, err: c_long) {
    warn!(&(), target: TARGET, "WATCHED insert failed (error {}): port {} -> port {}; the connection is not watched",
        err, key.sport, key.dport);
}

/// A ring had no room for a record; `lost` is this CPU's count of such records, so that a
/// full ring logs its 1st, 2nd, 4th, 8th… loss, not each one.
#[inline(always)]
pub(crate) fn ring_full(ring: &'static str, lost: u64) {
    if level_enabled(Level::Warn) && lost.is_power_of_two() {
        warn!(&(), target: TARGET, "ring {} full: {} records lost on this CPU so far", ring, lost);
    }
}

/// A copy into a record failed (`what`: the packet's headers, a tracepoint's record).
#[inline(always)]
pub(crate) fn copy_failed(what: &'static str, err: c_long) {
    warn!(&(), target: TARGET, "copy of {} failed (error {})", what, err);
}
