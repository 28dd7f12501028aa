//! tcpviz kernel side.
//!
//! - A TC classifier (ingress and egress) copies the headers of every TCP packet into the
//!   `PACKETS` ring buffer. It only observes: every path returns `TC_ACT_UNSPEC`, which
//!   for TCX is "next program" and for clsact "the default action", so the packet's fate is
//!   never changed.
//! - Tracepoint programs copy the tracepoint's record as it is into the `TRACES` ring
//!   buffer; userspace decodes the fields with the offsets of the tracefs `format` files.
//!   The kernel side adds only what it alone can read: the socket's network namespace (for
//!   the namespace filter) and a retransmitted skb's sequence range.
//! - Capture policy `troubled` (`AgentConfig::capture`, in `watch`): the TC programs copy only packets of
//!   connections the kernel showed trouble on, decided here with no round trip through
//!   userspace. A tracepoint hit that is trouble (a retransmission, Recovery or Loss, a reset
//!   received) and an ACK this host sends with SACK blocks or a zero window enter the
//!   connection in `WATCHED` (an LRU map) with the time; it stays watched `watch_ns` after
//!   its last trouble. While nothing is watched, an ingress packet costs an array lookup.
//! - Records that find no room are counted per CPU (`COUNTS`), never lost silently.
//! - Diagnostics go through aya-log (`diag`), off unless the agent runs with `-vv`.
//!
//! Readers are not woken for every record (that costs microseconds per packet): records are
//! sent with `BPF_RB_NO_WAKEUP`, the one that makes the queue cross `wakeup_bytes` wakes the
//! reader, and the reader also drains on a timer.
#![no_std]
#![no_main]

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, TC_ACT_UNSPEC},
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_ktime_get_boot_ns, bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_kernel_buf, bpf_skb_load_bytes,
    },
    macros::{classifier, map, tracepoint},
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
    programs::{TcContext, TracePointContext},
};
use tcpviz_common::*;

mod diag;
mod watch;

use watch::{mark_from_trace, troubled};

#[map]
static PACKETS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

#[map]
static TRACES: RingBuf = RingBuf::with_byte_size(2 * 1024 * 1024, 0);

#[map]
static CONFIG: Array<AgentConfig> = Array::with_max_entries(1, 0);

#[map]
static TRACE_CONFIG: Array<TraceConfig> = Array::with_max_entries(TP_COUNT as u32, 0);

#[map]
static COUNTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTERS as u32, 0);

/// The last `tcp_probe` sample copied, per socket (by address): a socket's later hits are
/// left in the kernel for `PROBE_SAMPLE_NS` unless its cwnd or ssthresh changes.
#[map]
static PROBE_LAST: LruHashMap<u64, ProbeLast> = LruHashMap::with_max_entries(65536, 0);

/// Adds one to a counter of this CPU; returns its new value (0 if the slot is missing).
#[inline(always)]
fn count(index: u32) -> u64 {
    match COUNTS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        Some(c) => unsafe {
            *c += 1;
            *c
        },
        None => 0,
    }
}

/// Wake the reader only when this record makes the queue cross `wakeup_bytes`: waking on
/// every record above the mark would cost microseconds each while the reader is busy (it
/// also drains on a timer, so a crossing missed by a race only delays it). Used for the
/// kernel-event ring, whose rate is low.
#[inline(always)]
fn submit_flags(ring: &RingBuf, wakeup_bytes: u32, record_bytes: u64) -> u64 {
    let avail = ring.query(BPF_RB_AVAIL_DATA as u64);
    let mark = wakeup_bytes as u64;
    // Each record takes its size plus an 8-byte header, rounded up to 8.
    let step = (record_bytes + 8 + 7) & !7;
    if avail >= mark && avail < mark + step { BPF_RB_FORCE_WAKEUP as u64 } else { BPF_RB_NO_WAKEUP as u64 }
}

/// Does nothing: the floor `cargo xtask bench-live` measures the TC programs against (the
/// agent never attaches it).
#[classifier]
pub fn tcpviz_noop(_ctx: TcContext) -> i32 {
    TC_ACT_UNSPEC
}

// One pair of programs per kind of link header: on Ethernet (and loopback) IP starts at
// byte 14, on L3 devices (tun, wireguard, GRE) at byte 0. A constant per program keeps every
// packet offset provable for the verifier and costs no lookup per packet.

#[classifier]
pub fn tcpviz_ingress(ctx: TcContext) -> i32 {
    snapshot(&ctx, DIR_INGRESS, true);
    TC_ACT_UNSPEC
}

#[classifier]
pub fn tcpviz_egress(ctx: TcContext) -> i32 {
    snapshot(&ctx, DIR_EGRESS, true);
    TC_ACT_UNSPEC
}

#[classifier]
pub fn tcpviz_ingr_l3(ctx: TcContext) -> i32 {
    snapshot(&ctx, DIR_INGRESS, false);
    TC_ACT_UNSPEC
}

#[classifier]
pub fn tcpviz_egr_l3(ctx: TcContext) -> i32 {
    snapshot(&ctx, DIR_EGRESS, false);
    TC_ACT_UNSPEC
}

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_TCP: u8 = 6;

/// Reads a big-endian u16 at `off` of the linear packet data, bounds-checked.
#[inline(always)]
fn be16_at(ctx: &TcContext, off: usize) -> Option<u16> {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + off + 2 > end {
        return None;
    }
    let p = (start + off) as *const [u8; 2];
    // SAFETY: the two bytes lie before data_end (checked just above), so the read stays in
    // the packet; the verifier checks the same bound and rejects the program otherwise.
    Some(u16::from_be_bytes(unsafe { *p }))
}

#[inline(always)]
fn u8_at(ctx: &TcContext, off: usize) -> Option<u8> {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + off + 1 > end {
        return None;
    }
    // SAFETY: bounds checked against data_end just above.
    Some(unsafe { *((start + off) as *const u8) })
}

/// Reads a big-endian u32 with the load helper (used only by the optional address filter:
/// direct access to two adjacent words makes the compiler combine them in ways the
/// verifier rejects).
#[inline(always)]
fn be32_at(ctx: &TcContext, off: usize) -> Option<u32> {
    ctx.load::<u32>(off).ok().map(u32::from_be)
}

/// Is this a TCP packet we keep? Reads the headers in place (no helper calls). A header
/// outside the linear data is given the benefit of the doubt: userspace decodes it.
#[inline(always)]
fn wanted(ctx: &TcContext, cfg: &AgentConfig, ethernet: bool) -> bool {
    let mut off: usize = if ethernet { 14 } else { 0 };
    let ethertype = if ethernet {
        let mut t = match be16_at(ctx, 12) {
            Some(t) => t,
            None => return true,
        };
        if t == 0x8100 || t == 0x88a8 {
            t = match be16_at(ctx, 16) {
                Some(t) => t,
                None => return true,
            };
            off = 18;
        }
        t
    } else {
        // L3 device: skb->protocol says what follows.
        // SAFETY: the context's skb pointer is valid while the program runs.
        u16::from_be(unsafe { (*ctx.skb.skb).protocol } as u16)
    };
    let (proto, l4) = match ethertype {
        ETH_P_IP => {
            let Some(vihl) = u8_at(ctx, off) else { return true };
            (u8_at(ctx, off + 9), off + ((vihl & 0x0f) as usize) * 4)
        }
        // Extension headers are rare on TCP: keep those packets, userspace decides.
        ETH_P_IPV6 => (u8_at(ctx, off + 6), off + 40),
        _ => return false,
    };
    match proto {
        Some(IPPROTO_TCP) => {}
        Some(0 | 43 | 44 | 60) => return true,
        Some(_) => return false,
        None => return true,
    }
    if cfg.port_count > 0 {
        // Through the load helper: see be32_at.
        let Ok(ports) = ctx.load::<[u8; 4]>(l4) else { return true };
        let (sport, dport) = (u16::from_be_bytes([ports[0], ports[1]]), u16::from_be_bytes([ports[2], ports[3]]));
        let mut hit = false;
        let mut i = 0;
        while i < FILTER_SLOTS {
            if (i as u32) < cfg.port_count && (cfg.ports[i] == sport || cfg.ports[i] == dport) {
                hit = true;
            }
            i += 1;
        }
        if !hit {
            return false;
        }
    }
    if cfg.addr4_count > 0 && ethertype == ETH_P_IP {
        let (Some(src), Some(dst)) = (be32_at(ctx, off + 12), be32_at(ctx, off + 16)) else { return true };
        let mut hit = false;
        let mut i = 0;
        while i < FILTER_SLOTS {
            let a = u32::from_be(cfg.addr4[i]);
            if (i as u32) < cfg.addr4_count && (a == src || a == dst) {
                hit = true;
            }
            i += 1;
        }
        if !hit {
            return false;
        }
    }
    true
}

/// `ethernet`: the interface has an Ethernet header (else IP starts the packet).
#[inline(always)]
fn snapshot(ctx: &TcContext, direction: u8, ethernet: bool) {
    let Some(cfg) = CONFIG.get(0) else { return };
    let filtered = cfg.port_count > 0 || cfg.addr4_count > 0;
    if cfg.capture == CAPTURE_TROUBLED {
        if !troubled(ctx, cfg, direction, ethernet) {
            return;
        }
        // `troubled` found a TCP header already: without filters, nothing is left to check.
        if filtered && !wanted(ctx, cfg, ethernet) {
            return;
        }
    } else if !wanted(ctx, cfg, ethernet) {
        return;
    }
    let len = ctx.len();
    if len == 0 {
        return;
    }
    // No "seen" counter here: userspace derives it (records received + lost), which keeps a
    // per-CPU cache line out of the per-packet path.
    let Some(mut entry) = PACKETS.reserve::<PacketRecord>(0) else {
        diag::ring_full("PACKETS", count(COUNTER_PACKETS_LOST));
        return;
    };
    // SAFETY: a reserved ring-buffer slot that only this program owns until it is submitted.
    let rec = unsafe { &mut *entry.as_mut_ptr() };
    rec.kind = RECORD_PACKET;
    rec.direction = direction;
    // Read only for a packet that is copied: the field is skb->dev->ifindex, a pointer chase.
    // SAFETY: the context's skb pointer is valid while the program runs.
    rec.ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: bpf_ktime_get_boot_ns takes no arguments and touches no memory of ours.
    rec.ts_boot_ns = unsafe { bpf_ktime_get_boot_ns() };
    rec.orig_len = len;
    // SAFETY: the context's skb pointer is valid while the program runs.
    rec.gso_segs = unsafe { (*ctx.skb.skb).gso_segs }.min(u16::MAX as u32) as u16;
    rec._pad = 0;
    // One copy of the headers straight into the slot: min(len, SNAP_LEN) bytes. The mask
    // shows the verifier the size is within 1..=SNAP_LEN (SNAP_LEN is a power of two).
    let n = if (len as usize) < SNAP_LEN { len as usize } else { SNAP_LEN };
    let n = ((n - 1) & (SNAP_LEN - 1)) + 1;
    // SAFETY: the destination holds SNAP_LEN bytes and n <= SNAP_LEN.
    let r = unsafe { bpf_skb_load_bytes(ctx.skb.skb as *const _, 0, rec.data.as_mut_ptr() as *mut _, n as u32) };
    // The diagnostic sits in the branch the store takes anyway: no test of its own.
    rec.snap_len = if r == 0 {
        n as u16
    } else {
        diag::copy_failed("a packet's headers", r);
        0
    };
    // Wake the reader every `wakeup_bytes` of records per CPU, counted in a per-CPU slot:
    // asking the ring how full it is reads a cache line the reader writes, which costs more
    // than the rest of the program.
    let mut flags = BPF_RB_NO_WAKEUP as u64;
    if let Some(pending) = COUNTS.get_ptr_mut(COUNTER_PACKETS_PENDING) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe {
            *pending += core::mem::size_of::<PacketRecord>() as u64;
            if *pending >= cfg.wakeup_bytes as u64 {
                *pending = 0;
                flags = BPF_RB_FORCE_WAKEUP as u64;
            }
        }
    }
    entry.submit(flags);
}

/// Copies a tracepoint's record into the `TRACES` ring.
#[inline(always)]
fn trace(ctx: &TracePointContext, tp: u32) -> u32 {
    let (Some(cfg), Some(tcfg)) = (CONFIG.get(0), TRACE_CONFIG.get(tp)) else { return 0 };
    let len = tcfg.raw_len as usize;
    if len == 0 || len > TRACE_RAW_LEN {
        return 0;
    }
    // `tp` is a constant in each program: only the accept exits carry this code.
    let accept = matches!(tp, TP_SYS_EXIT_ACCEPT4 | TP_SYS_EXIT_ACCEPT);
    let mut accepted_sk = 0u64;
    if accept {
        let ret: i64 = if tcfg.ret_off == NO_FIELD {
            -1
        } else {
            // SAFETY: a probe read of the tracepoint record, which fails safely.
            unsafe { ctx.read_at(tcfg.ret_off as usize) }.unwrap_or(-1)
        };
        if ret < 0 {
            return 0;
        }
        accepted_sk = socket_of_descriptor(cfg, ret as u64);
    }
    count(COUNTER_TRACE_SEEN + tp);
    // The socket's namespace: sk -> sk_net -> ns.inum (offsets from BTF).
    let mut netns = 0u32;
    if (accept || tcfg.skaddr_off != NO_FIELD) && cfg.net_inum_off != 0 {
        let sk: u64 = if accept {
            accepted_sk
        } else {
            // SAFETY: read_at goes through bpf_probe_read_kernel, which returns an error
            // instead of faulting on a bad address; the value is only used as a number here.
            unsafe { ctx.read_at(tcfg.skaddr_off as usize) }.unwrap_or(0)
        };
        if sk != 0 {
            // SAFETY: a probe read, which fails with an error (not a fault) when the offset
            // from BTF does not point into the socket.
            let net: u64 = unsafe { bpf_probe_read_kernel((sk + cfg.sk_net_off as u64) as *const u64) }.unwrap_or(0);
            if net != 0 {
                // SAFETY: as above, a probe read that cannot fault.
                netns = unsafe { bpf_probe_read_kernel((net + cfg.net_inum_off as u64) as *const u32) }.unwrap_or(0);
            }
        }
    }
    // Accept exits are kept from every namespace: an accepted socket of another namespace
    // on this host may be the far end of a watched connection (userspace finds it through
    // /proc then: its state changes, filtered here, do not reach the join by address).
    if !accept && cfg.netns_inum != 0 && netns != cfg.netns_inum {
        count(COUNTER_TRACE_FILTERED);
        return 0;
    }
    // `tp` is a constant in each program: only `tcpviz_probe` has this code.
    if tp == TP_PROBE && tcfg.cwnd_off != NO_FIELD && tcfg.skaddr_off != NO_FIELD && sampled_out(ctx, tcfg) {
        count(COUNTER_PROBES_SAMPLED_OUT);
        return 0;
    }
    // Only the tracepoints that can show trouble carry this code (`tp` is a constant in each
    // program; userspace's `marks_trouble` picks among them).
    let can_mark = matches!(tp, TP_RETRANSMIT_SKB | TP_RETRANSMIT_SYNACK | TP_CONG_STATE_SET | TP_RECEIVE_RESET);
    if can_mark && cfg.capture == CAPTURE_TROUBLED && tcfg.marks_trouble != 0 {
        mark_from_trace(ctx, cfg, tcfg, tp);
    }
    let Some(mut entry) = TRACES.reserve::<TraceRecord>(0) else {
        diag::ring_full("TRACES", count(COUNTER_TRACE_LOST));
        return 0;
    };
    // SAFETY: a reserved slot owned by this program until submitted.
    let rec = unsafe { &mut *entry.as_mut_ptr() };
    rec.kind = RECORD_TRACE;
    rec.tracepoint = tp as u8;
    rec.netns = netns;
    // SAFETY: bpf_ktime_get_boot_ns takes no arguments and touches no memory of ours.
    rec.ts_boot_ns = unsafe { bpf_ktime_get_boot_ns() };
    rec.skb_seq = 0;
    rec.skb_end_seq = 0;
    rec.skb_gso_segs = 0;
    rec.skb_gso_size = 0;
    rec.sk_mss = 0;
    if tp == TP_PROBE && cfg.mss_cache_off != 0 && tcfg.skaddr_off != NO_FIELD {
        // SAFETY: probe reads, which fail with an error instead of faulting; the values are
        // only numbers to userspace.
        let sk: u64 = unsafe { ctx.read_at(tcfg.skaddr_off as usize) }.unwrap_or(0);
        if sk != 0 {
            // SAFETY: as above.
            rec.sk_mss = unsafe { bpf_probe_read_kernel((sk + cfg.mss_cache_off as u64) as *const u32) }.unwrap_or(0);
        }
    }
    rec.owner = if accept || tp == TP_INET_SOCK_SET_STATE { current_owner() } else { TaskOwner::default() };
    rec.accepted_sk = accepted_sk;
    if tcfg.skbaddr_off != NO_FIELD && cfg.skb_cb_off != 0 {
        // SAFETY: a probe read (bpf_probe_read_kernel), which fails with an error instead of
        // faulting; the value is only used as a number.
        let skb: u64 = unsafe { ctx.read_at(tcfg.skbaddr_off as usize) }.unwrap_or(0);
        if skb != 0 {
            // TCP_SKB_CB(skb) starts with seq and end_seq.
            // SAFETY: a probe read into a local array of its own size; a bad address gives
            // an error, not a fault.
            let range: [u32; 2] =
                unsafe { bpf_probe_read_kernel((skb + cfg.skb_cb_off as u64) as *const [u32; 2]) }.unwrap_or([0, 0]);
            rec.skb_seq = range[0];
            rec.skb_end_seq = range[1];
            if cfg.skb_gso_off != 0 {
                // SAFETY: as above; tcp_gso_segs and tcp_gso_size are two u16 side by side.
                let gso: [u16; 2] = unsafe {
                    bpf_probe_read_kernel((skb + cfg.skb_cb_off as u64 + cfg.skb_gso_off as u64) as *const [u16; 2])
                }
                .unwrap_or([0, 0]);
                rec.skb_gso_segs = gso[0];
                rec.skb_gso_size = gso[1];
            }
        }
    }
    if accept && accepted_sk != 0 && cfg.sock_ends_known != 0 && len <= ACCEPTED_ENDS_AT {
        rec.set_accepted_ends(socket_ends(cfg, accepted_sk));
    }
    // SAFETY: the tracepoint record is at least `len` bytes (its size from tracefs).
    let copied = unsafe { bpf_probe_read_kernel_buf(ctx.as_ptr() as *const u8, &mut rec.raw[..len]) };
    rec.raw_len = match copied {
        Ok(()) => len as u16,
        Err(e) => {
            diag::copy_failed("a tracepoint's record", e.into());
            0
        }
    };
    entry.submit(submit_flags(&TRACES, cfg.wakeup_bytes, core::mem::size_of::<TraceRecord>() as u64));
    0
}

/// The socket (`struct sock *`) behind descriptor `fd` of the current task, 0 when unknown:
/// `task->files->fdt->fd[fd]->private_data` (the `struct socket` of a socket's file)`->sk`.
/// An accept exit's descriptor is a socket's, just installed by this task.
#[inline(always)]
fn socket_of_descriptor(cfg: &AgentConfig, fd: u64) -> u64 {
    let [files_off, fdt_off, fds_off, max_fds_off, private_off, sk_off] = cfg.fd_path;
    if files_off == 0 {
        return 0;
    }
    // SAFETY: bpf_get_current_task takes no arguments; the task is only read through
    // probe reads below.
    let task = unsafe { bpf_get_current_task() };
    // SAFETY: probe reads, which return an error instead of faulting on a bad address; the
    // values are only followed through more probe reads, or handed to userspace as numbers.
    let read = |at: u64| -> u64 { unsafe { bpf_probe_read_kernel(at as *const u64) }.unwrap_or(0) };
    let files = read(task + files_off as u64);
    let fdt = if files == 0 { 0 } else { read(files + fdt_off as u64) };
    if fdt == 0 {
        return 0;
    }
    // SAFETY: as above.
    let max_fds = unsafe { bpf_probe_read_kernel((fdt + max_fds_off as u64) as *const u32) }.unwrap_or(0);
    if fd >= max_fds as u64 {
        return 0;
    }
    let fds = read(fdt + fds_off as u64);
    let file = if fds == 0 { 0 } else { read(fds + fd * 8) };
    let socket = if file == 0 { 0 } else { read(file + private_off as u64) };
    if socket == 0 { 0 } else { read(socket + sk_off as u64) }
}

/// Both ends of socket `sk` (`struct sock *`), read from its `sock_common` (offsets from
/// BTF); `family` 0 when neither IPv4 nor IPv6 or unreadable.
#[inline(always)]
fn socket_ends(cfg: &AgentConfig, sk: u64) -> SocketEnds {
    let [daddr, saddr, dport, num, family, v6_daddr, v6_saddr] = cfg.sock_ends_off;
    // SAFETY: probe reads, which return an error instead of faulting on a bad address.
    let read16 = |off: u32| unsafe { bpf_probe_read_kernel((sk + off as u64) as *const u16) }.unwrap_or(0);
    let mut ends = SocketEnds {
        family: read16(family),
        local_port: read16(num),
        remote_port_be: read16(dport),
        ..Default::default()
    };
    match ends.family {
        2 => {
            // SAFETY: as above.
            let (l, r) = unsafe {
                (
                    bpf_probe_read_kernel((sk + saddr as u64) as *const [u8; 4]),
                    bpf_probe_read_kernel((sk + daddr as u64) as *const [u8; 4]),
                )
            };
            match (l, r) {
                (Ok(l), Ok(r)) => {
                    ends.local_addr[..4].copy_from_slice(&l);
                    ends.remote_addr[..4].copy_from_slice(&r);
                }
                _ => ends.family = 0,
            }
        }
        10 => {
            // SAFETY: as above.
            let (l, r) = unsafe {
                (
                    bpf_probe_read_kernel((sk + v6_saddr as u64) as *const [u8; 16]),
                    bpf_probe_read_kernel((sk + v6_daddr as u64) as *const [u8; 16]),
                )
            };
            match (l, r) {
                (Ok(l), Ok(r)) => (ends.local_addr, ends.remote_addr) = (l, r),
                _ => ends.family = 0,
            }
        }
        _ => ends.family = 0,
    }
    ends
}

/// The task running now: the socket's owner where the hook runs in its process context.
#[inline(always)]
fn current_owner() -> TaskOwner {
    // SAFETY: these helpers take no pointers of ours; comm fails safely (zeroes then).
    let (pid_tgid, cgroup_id, comm) =
        unsafe { (bpf_get_current_pid_tgid(), bpf_get_current_cgroup_id(), bpf_get_current_comm().unwrap_or([0; 16])) };
    TaskOwner { tgid: (pid_tgid >> 32) as u32, tid: pid_tgid as u32, cgroup_id, comm }
}

/// Is this `tcp_probe` hit one to leave in the kernel? Yes when the socket
/// was sampled less than `PROBE_SAMPLE_NS` ago with the same cwnd and ssthresh; otherwise
/// this hit becomes its sample. Not inlined: inlined, its helper calls changed the register
/// allocation of `mark_from_trace` after it into a spill of a clobbered register, which the
/// verifier rejects.
#[inline(never)]
fn sampled_out(ctx: &TracePointContext, tcfg: &TraceConfig) -> bool {
    // SAFETY: reads of the tracepoint record through the probe helper, which fails safely;
    // the socket's address is only a key here.
    let (sk, cwnd, ssthresh): (u64, u32, u32) = unsafe {
        (
            ctx.read_at(tcfg.skaddr_off as usize).unwrap_or(0),
            ctx.read_at(tcfg.cwnd_off as usize).unwrap_or(0),
            if tcfg.ssthresh_off != NO_FIELD { ctx.read_at(tcfg.ssthresh_off as usize).unwrap_or(0) } else { 0 },
        )
    };
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: a plain value read at once; a concurrent update gives an equally valid one.
    if let Some(last) = unsafe { PROBE_LAST.get(sk) }
        && now.saturating_sub(last.ts_ns) < PROBE_SAMPLE_NS
        && last.snd_cwnd == cwnd
        && last.ssthresh == ssthresh
    {
        return true;
    }
    // A failed insert only means this socket's next hit is copied too.
    let _ = PROBE_LAST.insert(sk, ProbeLast { ts_ns: now, snd_cwnd: cwnd, ssthresh }, 0);
    false
}

// One program per entry of `tcpviz_common::TRACEPOINTS`, named as its `program` (a userspace
// test checks the object against the table), passing that entry's `TP_*` index.
#[tracepoint]
pub fn tcpviz_retransmit_skb(ctx: TracePointContext) -> u32 {
    trace(&ctx, TP_RETRANSMIT_SKB)
}

#[tracepoint]
pub fn tcpviz_retransmit_synack(ctx: TracePointContext) -> u32 {
    trace(&ctx, TP_RETRANSMIT_SYNACK)
}

#[tracepoint]
pub fn tcpviz_probe(ctx: TracePointContext) -> u32 {
    trace(&ctx, TP_PROBE)
}

#[tracepoint]
pub fn tcpviz_cong_state_set(ctx: TracePointContext) -> u32 {
    trace(&ctx, TP_CONG_STATE_SET)
}

#[tracepoint]
pub fn tcpviz_inet_sock_set_state(ctx: TracePointContext) -> u32 {
    trace(&ctx, TP_INET_SOCK_SET_STATE)
}

#[tracepoint]
pub fn tcpviz_send_reset(ctx: TracePointContext) -> u32 {
    trace(&ctx, TP_SEND_RESET)
}

#[tracepoint]
pub fn tcpviz_receive_reset(ctx: TracePointContext) -> u32 {
    trace(&ctx, TP_RECEIVE_RESET)
}

#[tracepoint]
pub fn tcpviz_sys_exit_accept4(ctx: TracePointContext) -> u32 {
    trace(&ctx, TP_SYS_EXIT_ACCEPT4)
}

#[tracepoint]
pub fn tcpviz_sys_exit_accept(ctx: TracePointContext) -> u32 {
    trace(&ctx, TP_SYS_EXIT_ACCEPT)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
