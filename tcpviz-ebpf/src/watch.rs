//! Capture policy `troubled`: which connections are watched, decided in the kernel.
//!
//! A tracepoint hit that is trouble (a retransmission, Recovery or Loss, a reset received)
//! and an ACK this host sends with SACK blocks or a zero window enter the connection in
//! `WATCHED` (an LRU map) with the time; it stays watched `watch_ns` after its last trouble.
//! The TC programs ask `troubled` before they copy a packet. A connection that becomes
//! watched (it was absent, or its watch had expired) is told to userspace with a
//! `WatchRecord` in the `TRACES` ring: the session's wire view of it begins there.

use aya_ebpf::{
    helpers::{bpf_ktime_get_boot_ns, bpf_ktime_get_coarse_ns, bpf_ktime_get_ns},
    macros::map,
    maps::{Array, LruHashMap},
    programs::{TcContext, TracePointContext},
};
use tcpviz_common::*;

use crate::{ETH_P_IP, ETH_P_IPV6, IPPROTO_TCP, TRACES, be16_at, count, diag, submit_flags};

/// Watched connections (both directions of each) and the time of their last trouble.
/// Userspace sets the size (`--max-watched`) before loading.
#[map]
static WATCHED: LruHashMap<WatchKey, u64> = LruHashMap::with_max_entries(65536, 0);

/// Time of the last trouble anywhere (`watch_clock`): while it is older than `watch_ns`, nothing is
/// watched and ingress packets need no parsing.
#[map]
static LAST_TROUBLE: Array<u64> = Array::with_max_entries(1, 0);

/// Why a connection is marked: `WATCH_*`, and for `WATCH_TRACEPOINT` which one (`TP_*`).
#[derive(Clone, Copy)]
pub(super) struct Why {
    pub reason: u8,
    pub tracepoint: u32,
}

/// Enters the connection `key` names (and its reverse) as watched from `now`; `counter` is
/// the `COUNTER_MARKS_*` of `why`.
#[inline(always)]
fn mark_watched(key: &WatchKey, now: u64, cfg: &AgentConfig, counter: u32, why: Why) {
    // Looked up before the insert refreshes it: only a watch that starts is told (trouble
    // paths only; a healthy packet never gets here).
    // SAFETY: a plain u64 read at once; a concurrent update gives an equally valid time.
    let newly = match unsafe { WATCHED.get(key) } {
        Some(t) => now.saturating_sub(*t) > cfg.watch_ns,
        None => true,
    };
    // The start's time is read before the insert: a packet that another CPU copies because
    // of this entry is then never older than the start.
    // SAFETY: helper without preconditions.
    let started = if newly { unsafe { bpf_ktime_get_boot_ns() } } else { 0 };
    let rev = WatchKey {
        src: key.dst,
        dst: key.src,
        sport: key.dport,
        dport: key.sport,
        ip_version: key.ip_version,
        _pad: [0; 3],
    };
    if let Err(e) = WATCHED.insert(key, now, 0).and_then(|()| WATCHED.insert(rev, now, 0)) {
        count(COUNTER_MARKS_FAILED);
        diag::watch_insert_failed(key, e.into());
        return;
    }
    if let Some(last) = LAST_TROUBLE.get_ptr_mut(0) {
        // SAFETY: a valid slot of a one-entry array; a racing writer on another CPU stores
        // a time just as recent, so either value is right.
        unsafe { *last = now };
    }
    count(counter);
    if newly {
        watch_started(key, started, cfg, why);
    }
}

/// Tells userspace (and, with `-vv`, the log) that `key`'s connection became watched at
/// `ts_boot_ns`.
#[inline(always)]
fn watch_started(key: &WatchKey, ts_boot_ns: u64, cfg: &AgentConfig, why: Why) {
    diag::became_watched(key, why.reason, why.tracepoint);
    let Some(mut entry) = TRACES.reserve::<WatchRecord>(0) else {
        diag::ring_full("TRACES", count(COUNTER_WATCH_LOST));
        return;
    };
    // SAFETY: a reserved slot owned by this program until submitted.
    let rec = unsafe { &mut *entry.as_mut_ptr() };
    rec.kind = RECORD_WATCH;
    rec.reason = why.reason;
    rec.tracepoint = why.tracepoint as u8;
    rec._pad = [0; 5];
    // The time base of every other record (the watch clock is the monotonic one).
    rec.ts_boot_ns = ts_boot_ns;
    rec.key = *key;
    entry.submit(submit_flags(&TRACES, cfg.wakeup_bytes, core::mem::size_of::<WatchRecord>() as u64));
}

/// Capture policy `troubled`: is this packet's connection watched? An ACK this host sends
/// with SACK blocks (data missing here) or a zero window (its receive buffer is full) is
/// trouble itself and starts watching.
///
/// The healthy path is what an always-on agent costs. On ingress: one array lookup, and
/// once there was trouble the coarse clock (a value the kernel keeps, no clock read). On
/// egress also the EtherType, the IP header's first bytes and the TCP header's flags,
/// window and first options, read in place in the common layout. Addresses and ports are
/// read only to mark a connection or look one up.
#[inline(always)]
pub(super) fn troubled(ctx: &TcContext, cfg: &AgentConfig, direction: u8, ethernet: bool) -> bool {
    let last = LAST_TROUBLE.get(0).copied().unwrap_or(0);
    // No trouble yet since the agent started: not even the clock is read.
    let now = if last != 0 { watch_clock() } else { 0 };
    // Saturating: a mark made on another CPU after this program read `now` carries a
    // later time; that is "just marked", not ages ago.
    let anything_watched = last != 0 && now.saturating_sub(last) <= cfg.watch_ns;
    if direction == DIR_INGRESS && !anything_watched {
        return false;
    }
    let Some(tcp) = locate_tcp(ctx, ethernet) else { return false };
    if direction == DIR_EGRESS {
        let trouble = if tcp.in_place { sent_trouble_in_place(ctx, tcp.l4) } else { sent_trouble(ctx, tcp.l4) };
        if trouble != 0 {
            if let Some(key) = watch_key(ctx, &tcp) {
                let reason = if trouble == COUNTER_MARKS_SACK_SENT { WATCH_SACK_SENT } else { WATCH_ZERO_WINDOW_SENT };
                mark_watched(&key, watch_clock(), cfg, trouble, Why { reason, tracepoint: 0 });
            }
            return true;
        }
        if !anything_watched {
            return false;
        }
    }
    let Some(key) = watch_key(ctx, &tcp) else { return false };
    // SAFETY: the value is a plain u64 read at once; a concurrent update gives an equally
    // valid time.
    match unsafe { WATCHED.get(key) } {
        Some(t) => now.saturating_sub(*t) <= cfg.watch_ns,
        None => false,
    }
}

/// The clock of watches: coarse monotonic time, a value the kernel keeps at each tick, so
/// reading it costs no clock read; its resolution (a tick) is nothing against a watch of
/// seconds.
#[inline(always)]
fn watch_clock() -> u64 {
    // SAFETY: helper without preconditions.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// Where a TCP packet's headers are.
struct TcpAt {
    /// Offset of the IP header, and its version (4 or 6).
    l3: usize,
    ip_version: u8,
    /// Offset of the TCP header.
    l4: usize,
    /// The common layout (Ethernet, no VLAN tag, IPv4 without options or IPv6, headers in
    /// the linear data): `l4` is one of two constants and the TCP header can be read in
    /// place, with no helper call.
    in_place: bool,
}

/// `N` bytes at the constant offset `OFF` of the linear packet data, bounds-checked.
#[inline(always)]
fn bytes_at<const OFF: usize, const N: usize>(ctx: &TcContext) -> Option<[u8; N]> {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + OFF + N > end {
        return None;
    }
    let p = (start + OFF) as *const [u8; N];
    // SAFETY: the N bytes lie before data_end (checked just above); the verifier checks the
    // same bound and rejects the program otherwise.
    Some(unsafe { p.read_unaligned() })
}

/// Ethernet + IPv4 without options, or Ethernet + IPv6, with TCP: where its headers are,
/// read in place.
#[inline(always)]
fn locate_tcp_in_place(ctx: &TcContext) -> Option<TcpAt> {
    match be16_at(ctx, 12)? {
        ETH_P_IP => {
            let ip = bytes_at::<14, 10>(ctx)?;
            (ip[0] == 0x45 && ip[9] == IPPROTO_TCP).then_some(TcpAt { l3: 14, ip_version: 4, l4: 34, in_place: true })
        }
        ETH_P_IPV6 => {
            let ip = bytes_at::<14, 8>(ctx)?;
            (ip[6] == IPPROTO_TCP).then_some(TcpAt { l3: 14, ip_version: 6, l4: 54, in_place: true })
        }
        _ => None,
    }
}

/// A big-endian u16 at a constant offset: in place when it is in the linear data, else
/// through the load helper (a forwarded packet may arrive with its headers in fragments).
#[inline(always)]
fn u16_at(ctx: &TcContext, off: usize) -> Option<u16> {
    be16_at(ctx, off).or_else(|| ctx.load::<[u8; 2]>(off).ok().map(u16::from_be_bytes))
}

/// The headers of a TCP packet; `None` for anything else. Past the link header, reads go
/// through the load helper: direct reads at an offset that is not a constant make the
/// compiler write bounds checks the verifier cannot follow.
#[inline(always)]
fn locate_tcp(ctx: &TcContext, ethernet: bool) -> Option<TcpAt> {
    if ethernet && let Some(at) = locate_tcp_in_place(ctx) {
        return Some(at);
    }
    let mut l3: usize = if ethernet { 14 } else { 0 };
    let ethertype = if ethernet {
        let mut t = u16_at(ctx, 12)?;
        if t == 0x8100 || t == 0x88a8 {
            t = u16_at(ctx, 16)?;
            l3 = 18;
        }
        t
    } else {
        // SAFETY: the context's skb pointer is valid while the program runs.
        u16::from_be(unsafe { (*ctx.skb.skb).protocol } as u16)
    };
    match ethertype {
        ETH_P_IP => {
            let h = ctx.load::<[u8; 10]>(l3).ok()?;
            (h[9] == IPPROTO_TCP).then_some(TcpAt {
                l3,
                ip_version: 4,
                l4: l3 + ((h[0] & 0x0f) as usize) * 4,
                in_place: false,
            })
        }
        // TCP right after the fixed header; extension headers before TCP are rare.
        ETH_P_IPV6 => {
            let h = ctx.load::<[u8; 8]>(l3).ok()?;
            (h[6] == IPPROTO_TCP).then_some(TcpAt { l3, ip_version: 6, l4: l3 + 40, in_place: false })
        }
        _ => None,
    }
}

/// The connection a packet belongs to, named as the packet names it.
#[inline(always)]
fn watch_key(ctx: &TcContext, tcp: &TcpAt) -> Option<WatchKey> {
    let mut key = WatchKey { ip_version: tcp.ip_version, ..Default::default() };
    if tcp.ip_version == 4 {
        let a = ctx.load::<[u8; 8]>(tcp.l3 + 12).ok()?;
        key.src[..4].copy_from_slice(&a[..4]);
        key.dst[..4].copy_from_slice(&a[4..]);
    } else {
        let a = ctx.load::<[u8; 32]>(tcp.l3 + 8).ok()?;
        key.src.copy_from_slice(&a[..16]);
        key.dst.copy_from_slice(&a[16..]);
    }
    let ports = ctx.load::<[u8; 4]>(tcp.l4).ok()?;
    key.sport = u16::from_be_bytes([ports[0], ports[1]]);
    key.dport = u16::from_be_bytes([ports[2], ports[3]]);
    Some(key)
}

/// Is this packet this host sends trouble? The counter of the kind of trouble (an ACK with
/// SACK blocks, or with a zero window), or 0. SACK blocks are looked for where Linux puts
/// them (this host's own packets): first, or after the aligned timestamps option, each
/// behind two NOPs.
#[inline(always)]
fn sent_trouble(ctx: &TcContext, l4: usize) -> u32 {
    // Bytes 12.. of the TCP header: offset and flags, window, checksum, urgent pointer, then
    // the first 16 bytes of options. A shorter packet (a pure ACK with few options) is
    // read again with only what it has.
    let mut h = [0u8; 24];
    if let Ok(b) = ctx.load::<[u8; 24]>(l4 + 12) {
        h = b;
    } else if let Ok(b) = ctx.load::<[u8; 12]>(l4 + 12) {
        h[..12].copy_from_slice(&b);
    } else if let Ok(b) = ctx.load::<[u8; 4]>(l4 + 12) {
        h[..4].copy_from_slice(&b);
    } else {
        return 0;
    }
    judge_sent(&h)
}

/// `sent_trouble` for the common layout, read in place: the TCP header at offset 34
/// (IPv4) or 54 (IPv6).
#[inline(always)]
fn sent_trouble_in_place(ctx: &TcContext, l4: usize) -> u32 {
    let mut h = [0u8; 24];
    let got =
        if l4 == 34 { tcp_bytes_in_place::<46, 54>(ctx, &mut h) } else { tcp_bytes_in_place::<66, 74>(ctx, &mut h) };
    if got { judge_sent(&h) } else { 0 }
}

/// Bytes 12..36 of the TCP header (`AT` = its byte 12, `OPT` = its byte 20) into `h`, as
/// many as the packet has: flags and window, then the first options.
#[inline(always)]
fn tcp_bytes_in_place<const AT: usize, const OPT: usize>(ctx: &TcContext, h: &mut [u8; 24]) -> bool {
    let Some(fixed) = bytes_at::<AT, 4>(ctx) else { return false };
    h[..4].copy_from_slice(&fixed);
    if fixed[0] >> 4 > 5 {
        if let Some(opt) = bytes_at::<OPT, 16>(ctx) {
            h[8..].copy_from_slice(&opt);
        } else if let Some(opt) = bytes_at::<OPT, 4>(ctx) {
            h[8..12].copy_from_slice(&opt);
        }
    }
    true
}

/// The trouble an ACK this host sends shows, from bytes 12..36 of its TCP header.
#[inline(always)]
fn judge_sent(h: &[u8; 24]) -> u32 {
    let doff = h[0] >> 4;
    let flags = h[1];
    // An ACK, neither SYN (0x02) nor RST (0x04).
    if flags & 0x10 == 0 || flags & 0x06 != 0 {
        return 0;
    }
    if h[2] == 0 && h[3] == 0 {
        return COUNTER_MARKS_ZERO_WINDOW_SENT;
    }
    let opt = &h[8..];
    let sack_first = doff > 5 && opt[0] == 1 && opt[1] == 1 && opt[2] == 5;
    let sack_after_timestamps = doff >= 9
        && opt[0] == 1
        && opt[1] == 1
        && opt[2] == 8
        && opt[3] == 10
        && opt[12] == 1
        && opt[13] == 1
        && opt[14] == 5;
    if sack_first || sack_after_timestamps { COUNTER_MARKS_SACK_SENT } else { 0 }
}

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// Reads a field of the tracepoint record at `off` (`NO_FIELD`: absent).
#[inline(always)]
fn field<T>(ctx: &TracePointContext, off: u16) -> Option<T> {
    if off == NO_FIELD {
        return None;
    }
    // SAFETY: a read of the tracepoint record through the probe helper, which fails safely.
    unsafe { ctx.read_at::<T>(off as usize) }.ok()
}

/// A tracepoint hit (of `TP_*` `tp`) that is trouble: its socket's connection becomes
/// watched.
#[inline(always)]
pub(super) fn mark_from_trace(ctx: &TracePointContext, cfg: &AgentConfig, tcfg: &TraceConfig, tp: u32) {
    if tcfg.state_off != NO_FIELD {
        let Some(state) = field::<u8>(ctx, tcfg.state_off) else { return };
        if state >= 16 || (tcfg.trouble_states >> state) & 1 == 0 {
            return;
        }
    }
    let (Some(family), Some(sport), Some(dport)) =
        (field::<u16>(ctx, tcfg.family_off), field::<u16>(ctx, tcfg.sport_off), field::<u16>(ctx, tcfg.dport_off))
    else {
        return;
    };
    let mut key = WatchKey { sport, dport, ..Default::default() };
    if family == AF_INET {
        let (Some(src), Some(dst)) = (field::<[u8; 4]>(ctx, tcfg.saddr_off), field::<[u8; 4]>(ctx, tcfg.daddr_off))
        else {
            return;
        };
        key.ip_version = 4;
        key.src[..4].copy_from_slice(&src);
        key.dst[..4].copy_from_slice(&dst);
    } else if family == AF_INET6 {
        let (Some(src), Some(dst)) = (field::<[u8; 16]>(ctx, tcfg.saddr6_off), field::<[u8; 16]>(ctx, tcfg.daddr6_off))
        else {
            return;
        };
        // A dual-stack socket talking IPv4 has v4-mapped addresses (::ffff:a.b.c.d); its
        // packets are IPv4.
        let head = u64::from_ne_bytes([src[0], src[1], src[2], src[3], src[4], src[5], src[6], src[7]]);
        let mapped = head == 0 && src[8] == 0 && src[9] == 0 && src[10] == 0xff && src[11] == 0xff;
        if mapped {
            key.ip_version = 4;
            key.src[..4].copy_from_slice(&src[12..]);
            key.dst[..4].copy_from_slice(&dst[12..]);
        } else {
            key.ip_version = 6;
            key.src = src;
            key.dst = dst;
        }
    } else {
        return;
    }
    // Tracepoint programs may not read the coarse clock; the precise one is the same
    // monotonic clock, a tick ahead at most (which the saturating checks read as "now").
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    mark_watched(&key, now, cfg, COUNTER_MARKS_TRACEPOINT, Why { reason: WATCH_TRACEPOINT, tracepoint: tp });
}
