//! Records that cross the kernel/userspace boundary.
//!
//! Every type here is `#[repr(C)]`, made only of primitives, with explicit padding so that
//! the layout is the same for the BPF target and the host, and a compile-time size check
//! pins it. Userspace decodes records with [`decode`] (feature `user`), which checks the
//! length instead of trusting it.
#![no_std]

#[cfg(feature = "std")]
extern crate std;

/// Bytes of each packet the TC program copies: Ethernet + 2 VLAN tags (22) + IPv6 (40)
/// + TCP with the largest options (60) = 122, rounded up.
pub const SNAP_LEN: usize = 128;

/// Direction of a packet seen by the TC program.
pub const DIR_INGRESS: u8 = 0;
pub const DIR_EGRESS: u8 = 1;

/// Record kinds, the first byte of every ring-buffer record.
pub const RECORD_PACKET: u8 = 1;
pub const RECORD_TRACE: u8 = 2;
pub const RECORD_WATCH: u8 = 3;

/// The tracepoints, in the order of the config and counter arrays.
pub const TP_RETRANSMIT_SKB: u32 = 0;
pub const TP_RETRANSMIT_SYNACK: u32 = 1;
pub const TP_PROBE: u32 = 2;
pub const TP_CONG_STATE_SET: u32 = 3;
pub const TP_INET_SOCK_SET_STATE: u32 = 4;
pub const TP_SEND_RESET: u32 = 5;
pub const TP_RECEIVE_RESET: u32 = 6;
/// Syscall exits of accept4/accept: the process that took a passive open (attribution).
pub const TP_SYS_EXIT_ACCEPT4: u32 = 7;
pub const TP_SYS_EXIT_ACCEPT: u32 = 8;
pub const TP_COUNT: usize = 9;

/// A tracepoint tcpviz hooks, and the eBPF program that handles it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tracepoint {
    /// `TP_*`: its slot in the config array and in the "seen" counters.
    pub index: u32,
    pub category: &'static str,
    pub name: &'static str,
    /// The eBPF program's name (its function in tcpviz-ebpf).
    pub program: &'static str,
}

const fn tp(index: u32, category: &'static str, name: &'static str, program: &'static str) -> Tracepoint {
    Tracepoint { index, category, name, program }
}

/// Every tracepoint, indexed by the `TP_*` constants: the one list the kernel programs, the
/// config and counter arrays and userspace follow.
pub const TRACEPOINTS: [Tracepoint; TP_COUNT] = [
    tp(TP_RETRANSMIT_SKB, "tcp", "tcp_retransmit_skb", "tcpviz_retransmit_skb"),
    tp(TP_RETRANSMIT_SYNACK, "tcp", "tcp_retransmit_synack", "tcpviz_retransmit_synack"),
    tp(TP_PROBE, "tcp", "tcp_probe", "tcpviz_probe"),
    tp(TP_CONG_STATE_SET, "tcp", "tcp_cong_state_set", "tcpviz_cong_state_set"),
    tp(TP_INET_SOCK_SET_STATE, "sock", "inet_sock_set_state", "tcpviz_inet_sock_set_state"),
    tp(TP_SEND_RESET, "tcp", "tcp_send_reset", "tcpviz_send_reset"),
    tp(TP_RECEIVE_RESET, "tcp", "tcp_receive_reset", "tcpviz_receive_reset"),
    tp(TP_SYS_EXIT_ACCEPT4, "syscalls", "sys_exit_accept4", "tcpviz_sys_exit_accept4"),
    tp(TP_SYS_EXIT_ACCEPT, "syscalls", "sys_exit_accept", "tcpviz_sys_exit_accept"),
];

// Each entry sits at its own index.
const _: () = {
    let mut i = 0;
    while i < TP_COUNT {
        assert!(TRACEPOINTS[i].index as usize == i);
        i += 1;
    }
};

/// Bytes of a tracepoint's record copied as they are; userspace reads the fields at the
/// offsets of the tracefs `format` file, so the kernel side needs no layout knowledge.
pub const TRACE_RAW_LEN: usize = 144;

/// Index of the per-CPU counters (array `COUNTS`). Slot 0 holds the bytes of packet records
/// queued since the last reader wakeup on this CPU (packets seen are the records received
/// plus the ones lost, so they need no counter).
pub const COUNTER_PACKETS_PENDING: u32 = 0;
pub const COUNTER_PACKETS_LOST: u32 = 1;
pub const COUNTER_TRACE_LOST: u32 = 2;
pub const COUNTER_TRACE_FILTERED: u32 = 3;
/// Then one "seen" counter per tracepoint: `COUNTER_TRACE_SEEN + TP_*`.
pub const COUNTER_TRACE_SEEN: u32 = 4;
/// Then, in capture policy `troubled`: trouble marks (a connection entered or refreshed in
/// `WATCHED`), by where the trouble was seen, and marks that could not be stored.
pub const COUNTER_MARKS_TRACEPOINT: u32 = COUNTER_TRACE_SEEN + TP_COUNT as u32;
pub const COUNTER_MARKS_SACK_SENT: u32 = COUNTER_MARKS_TRACEPOINT + 1;
pub const COUNTER_MARKS_ZERO_WINDOW_SENT: u32 = COUNTER_MARKS_TRACEPOINT + 2;
pub const COUNTER_MARKS_FAILED: u32 = COUNTER_MARKS_TRACEPOINT + 3;
/// Watch starts (`WatchRecord`) that found the `TRACES` ring full.
pub const COUNTER_WATCH_LOST: u32 = COUNTER_MARKS_TRACEPOINT + 4;
/// `tcp_probe` hits of a socket sampled less than `PROBE_SAMPLE_NS` before with the same
/// cwnd and ssthresh: left in the kernel, not copied to the ring.
pub const COUNTER_PROBES_SAMPLED_OUT: u32 = COUNTER_MARKS_TRACEPOINT + 5;
pub const COUNTERS: usize = COUNTER_PROBES_SAMPLED_OUT as usize + 1;

/// One `tcp_probe` record per socket per this many nanoseconds, unless its cwnd or
/// ssthresh changes: the tracepoint fires on every ACK, and copying each would cost more
/// than the rest of the agent on a busy host.
pub const PROBE_SAMPLE_NS: u64 = 100_000_000;

/// The last `tcp_probe` sample of a socket copied to the ring (`PROBE_LAST` map value).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeLast {
    pub ts_ns: u64,
    pub snd_cwnd: u32,
    pub ssthresh: u32,
}

/// "This tracepoint has no such field."
pub const NO_FIELD: u16 = 0xffff;

/// A packet header snapshot taken by the TC classifier.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PacketRecord {
    /// `RECORD_PACKET`.
    pub kind: u8,
    /// `DIR_INGRESS` or `DIR_EGRESS`.
    pub direction: u8,
    /// Number of valid bytes in `data`.
    pub snap_len: u16,
    /// Index of the interface the packet was seen on (in the agent's network namespace).
    pub ifindex: u32,
    /// `bpf_ktime_get_boot_ns()` when the program ran.
    pub ts_boot_ns: u64,
    /// Length of the whole packet (skb->len).
    pub orig_len: u32,
    /// Segments of a GSO super-packet (TC egress sees them before segmentation; capture
    /// tools see each segment); 0 or 1 for an ordinary packet.
    pub gso_segs: u16,
    pub _pad: u16,
    pub data: [u8; SNAP_LEN],
}

const _: () = assert!(core::mem::size_of::<PacketRecord>() == 24 + SNAP_LEN);

/// A tracepoint hit: the record as the kernel wrote it, plus what only the kernel side can
/// read (the socket's network namespace, a retransmitted skb's sequence range).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TraceRecord {
    /// `RECORD_TRACE`.
    pub kind: u8,
    /// `TP_*`.
    pub tracepoint: u8,
    /// Valid bytes in `raw`.
    pub raw_len: u16,
    /// Inode number of the socket's network namespace (0 when unknown).
    pub netns: u32,
    pub ts_boot_ns: u64,
    /// `TCP_SKB_CB(skb)->seq` and `end_seq` of a retransmitted skb (0 otherwise).
    pub skb_seq: u32,
    pub skb_end_seq: u32,
    /// `TCP_SKB_CB(skb)->tcp_gso_segs` and `tcp_gso_size` of a retransmitted skb: the
    /// segments it holds (what the kernel adds to `TcpRetransSegs`) and their size (0 when
    /// unknown).
    pub skb_gso_segs: u16,
    pub skb_gso_size: u16,
    /// `tcp_probe`: the socket's `mss_cache` (0 otherwise or when unknown), which turns its
    /// cwnd in segments into bytes.
    pub sk_mss: u32,
    /// The task running when the hook fired: filled only by the hooks that run in the
    /// context of the process owning the socket (`inet_sock_set_state`, whose CLOSE ->
    /// SYN_SENT move is a connect(); the accept exits), zero otherwise.
    pub owner: TaskOwner,
    /// The accept exits: the kernel address of the accepted socket (`struct sock *`), found
    /// through the returned descriptor; 0 otherwise or when unknown. It is the `skaddr` of
    /// that socket's `inet_sock_set_state` records, which name both its ends.
    pub accepted_sk: u64,
    pub raw: [u8; TRACE_RAW_LEN],
}

const _: () = assert!(core::mem::size_of::<TraceRecord>() == 72 + TRACE_RAW_LEN);

/// Both ends of a socket as its `struct sock_common` holds them, read by the kernel side.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketEnds {
    /// `AF_INET` (2) or `AF_INET6` (10); 0 when the ends are unknown.
    pub family: u16,
    /// The local port in host order (`skc_num`).
    pub local_port: u16,
    /// The remote port as the socket holds it, in network order (`skc_dport`).
    pub remote_port_be: u16,
    pub _pad: u16,
    /// The first 4 bytes for `AF_INET`.
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
}

const _: () = assert!(core::mem::size_of::<SocketEnds>() == 40);

/// Where an accept exit's record carries the accepted socket's ends: at the end of `raw`,
/// past the exit's own fields (24 bytes; the kernel side writes the ends only when the
/// tracepoint's record ends before this). Its state changes, which name both ends, are
/// filtered out when the socket is of another namespace than the watched one, and finding
/// it in that namespace's /proc tables cost a read of the whole table per accept.
pub const ACCEPTED_ENDS_AT: usize = TRACE_RAW_LEN - core::mem::size_of::<SocketEnds>();

impl TraceRecord {
    /// An accept exit's accepted socket's ends, when the kernel side read them.
    pub fn accepted_ends(&self) -> Option<SocketEnds> {
        if !matches!(self.tracepoint as u32, TP_SYS_EXIT_ACCEPT4 | TP_SYS_EXIT_ACCEPT)
            || self.raw_len as usize > ACCEPTED_ENDS_AT
        {
            return None;
        }
        // SAFETY: `raw[ACCEPTED_ENDS_AT..]` is exactly a SocketEnds' size, and every bit
        // pattern is one (integers and byte arrays); the read is unaligned.
        let ends = unsafe { core::ptr::read_unaligned(self.raw[ACCEPTED_ENDS_AT..].as_ptr().cast::<SocketEnds>()) };
        (ends.family != 0).then_some(ends)
    }

    /// Writes an accept exit's accepted socket's ends (the caller checks that the record's
    /// own fields end before [`ACCEPTED_ENDS_AT`]).
    #[inline(always)]
    pub fn set_accepted_ends(&mut self, ends: SocketEnds) {
        // SAFETY: `raw[ACCEPTED_ENDS_AT..]` is exactly a SocketEnds' size; the write is
        // unaligned.
        unsafe { core::ptr::write_unaligned(self.raw[ACCEPTED_ENDS_AT..].as_mut_ptr().cast::<SocketEnds>(), ends) }
    }
}

/// The current task as the eBPF helpers give it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskOwner {
    /// Process id (the kernel's tgid) and thread id.
    pub tgid: u32,
    pub tid: u32,
    /// Id of the task's cgroup in the cgroup2 hierarchy (the inode of its directory).
    pub cgroup_id: u64,
    /// Command name, NUL-padded.
    pub comm: [u8; 16],
}

const _: () = assert!(core::mem::size_of::<TaskOwner>() == 32);

/// Per-tracepoint settings, from the tracefs `format` file.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceConfig {
    /// Bytes to copy (the record size, at most `TRACE_RAW_LEN`); 0 disables the program.
    pub raw_len: u16,
    /// Offset of the `skaddr` field, or `NO_FIELD`.
    pub skaddr_off: u16,
    /// Offset of the `skbaddr` field, or `NO_FIELD`.
    pub skbaddr_off: u16,
    /// 1: a hit of this tracepoint is trouble that starts watching its connection (capture
    /// policy `troubled`); 0: it is only reported.
    pub marks_trouble: u16,
    /// Offsets of the socket's address fields (`family`, `sport`, `dport` in host order,
    /// `saddr`/`daddr` for IPv4, `saddr_v6`/`daddr_v6`), or `NO_FIELD`.
    pub family_off: u16,
    pub sport_off: u16,
    pub dport_off: u16,
    pub saddr_off: u16,
    pub daddr_off: u16,
    pub saddr6_off: u16,
    pub daddr6_off: u16,
    /// Offset of a one-byte state that must be in `trouble_states` (a bit mask) for the hit to
    /// count as trouble (`tcp_cong_state_set`'s `cong_state`: Recovery and Loss), or
    /// `NO_FIELD` when every hit counts.
    pub state_off: u16,
    pub trouble_states: u16,
    /// Offsets of `snd_cwnd` and `ssthresh` (`tcp_probe` only, else `NO_FIELD`): the hits of
    /// a socket are sampled in the kernel (`PROBE_SAMPLE_NS`).
    pub cwnd_off: u16,
    pub ssthresh_off: u16,
    /// Offset of a syscall exit's `ret` (accept4/accept only, else `NO_FIELD`): failed
    /// accepts are left in the kernel.
    pub ret_off: u16,
}

const _: () = assert!(core::mem::size_of::<TraceConfig>() == 32);

/// A connection as one direction of its packets names it (source first), the key of the
/// `WATCHED` map. IPv4 addresses fill the first 4 bytes, the rest are zero; ports are in
/// host order. A watched connection is entered under both directions, so a packet is looked
/// up as it comes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct WatchKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    /// 4 or 6.
    pub ip_version: u8,
    pub _pad: [u8; 3],
}

const _: () = assert!(core::mem::size_of::<WatchKey>() == 40);

/// Why a connection became watched (`WatchRecord::reason`).
/// A tracepoint hit that is trouble (`WatchRecord::tracepoint` says which).
pub const WATCH_TRACEPOINT: u8 = 1;
/// An ACK this host sent with SACK blocks.
pub const WATCH_SACK_SENT: u8 = 2;
/// An ACK this host sent with a zero window.
pub const WATCH_ZERO_WINDOW_SENT: u8 = 3;

/// A connection became watched (capture policy `troubled`): it was not in `WATCHED`, or its
/// watch had expired. Sent through the `TRACES` ring, so that the session can say from when
/// on the wire view of that connection holds its packets.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct WatchRecord {
    /// `RECORD_WATCH`.
    pub kind: u8,
    /// `WATCH_*`.
    pub reason: u8,
    /// `TP_*` of the tracepoint when `reason` is `WATCH_TRACEPOINT`, else 0.
    pub tracepoint: u8,
    pub _pad: [u8; 5],
    /// `bpf_ktime_get_boot_ns()` when the watch started.
    pub ts_boot_ns: u64,
    /// The connection as the trouble named it (the watch covers both directions).
    pub key: WatchKey,
}

const _: () = assert!(core::mem::size_of::<WatchRecord>() == 16 + core::mem::size_of::<WatchKey>());

/// Capture policies of the TC programs (`AgentConfig::capture`).
/// Every TCP packet.
pub const CAPTURE_ALL: u32 = 0;
/// Only packets of connections the kernel showed trouble on (`WATCHED`).
pub const CAPTURE_TROUBLED: u32 = 1;

/// Most ports / IPv4 addresses the TC filter takes.
pub const FILTER_SLOTS: usize = 8;

/// Agent-wide settings (array `CONFIG`, index 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AgentConfig {
    /// Only sockets of this network namespace (its inode number); 0 = all.
    pub netns_inum: u32,
    /// `offsetof(struct sock, __sk_common.skc_net.net)`, from the kernel's BTF.
    pub sk_net_off: u32,
    /// `offsetof(struct net, ns.inum)`.
    pub net_inum_off: u32,
    /// `offsetof(struct sk_buff, cb)`.
    pub skb_cb_off: u32,
    /// `offsetof(struct tcp_skb_cb, tcp_gso_segs)`, followed by `tcp_gso_size`; 0 when the
    /// kernel's BTF does not show them so.
    pub skb_gso_off: u32,
    /// `offsetof(struct tcp_sock, mss_cache)`; 0 when the kernel's BTF does not show it.
    pub mss_cache_off: u32,
    /// From the current task to the socket behind one of its descriptors, for the accept
    /// exits: the offsets of `task_struct.files`, `files_struct.fdt`, `fdtable.fd`,
    /// `fdtable.max_fds`, `file.private_data` and `socket.sk`. All 0 when the kernel's BTF
    /// lacks one (`files` is never at 0).
    pub fd_path: [u32; 6],
    /// In `struct sock`, for the accepted socket's ends ([`SocketEnds`]): the offsets of
    /// `skc_daddr`, `skc_rcv_saddr`, `skc_dport`, `skc_num`, `skc_family`, `skc_v6_daddr`
    /// and `skc_v6_rcv_saddr` (`__sk_common.` each), used when `sock_ends_known` is 1.
    pub sock_ends_off: [u32; 7],
    pub sock_ends_known: u32,
    /// Wake the reader once this many bytes of records were queued (per CPU for packets); it
    /// also drains on a timer.
    pub wakeup_bytes: u32,
    /// TCP ports to keep (either side); empty = all.
    pub port_count: u32,
    pub ports: [u16; FILTER_SLOTS],
    /// IPv4 addresses to keep (either side, network byte order); empty = all.
    pub addr4_count: u32,
    pub addr4: [u32; FILTER_SLOTS],
    /// `CAPTURE_ALL` or `CAPTURE_TROUBLED`.
    pub capture: u32,
    /// How long a connection stays watched after its last trouble, in nanoseconds.
    pub watch_ns: u64,
}

const _: () = assert!(core::mem::size_of::<AgentConfig>() == 88 + 2 * FILTER_SLOTS + 4 + 4 * FILTER_SLOTS + 12);

// SAFETY: plain integers and arrays of them, no padding bytes left undefined (explicit
// padding fields), so any bit pattern is valid and the layout is stable.
#[cfg(feature = "user")]
unsafe impl aya::Pod for AgentConfig {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for TraceConfig {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for WatchKey {}
// SAFETY: as above (two u32 after a u64: no padding).
#[cfg(feature = "user")]
unsafe impl aya::Pod for ProbeLast {}

#[cfg(feature = "user")]
pub mod decode {
    //! Size-checked decoding of ring-buffer records.
    use super::{PacketRecord, TraceRecord, WatchRecord};

    /// Why a record could not be decoded.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum DecodeError {
        /// The record is shorter than its type.
        TooShort { kind: u8, len: usize, want: usize },
        /// The first byte names no known record.
        UnknownKind(u8),
        /// The record is empty.
        Empty,
        /// A length field inside the record exceeds its buffer.
        BadLength,
        /// A field holds a value its record never carries (a watch's reason, tracepoint or
        /// IP version).
        BadValue,
    }

    /// A decoded record.
    pub enum Record {
        Packet(PacketRecord),
        Trace(TraceRecord),
        Watch(WatchRecord),
    }

    impl Record {
        /// When the kernel took it (`bpf_ktime_get_boot_ns`), to order the records of both
        /// rings.
        pub fn ts_boot_ns(&self) -> u64 {
            match self {
                Record::Packet(p) => p.ts_boot_ns,
                Record::Trace(t) => t.ts_boot_ns,
                Record::Watch(w) => w.ts_boot_ns,
            }
        }
    }

    /// Reads a `T` from the start of `bytes` if there are enough of them.
    ///
    /// # Safety
    /// `T` must be a `#[repr(C)]` type made of integers and integer arrays (every bit
    /// pattern is a valid value), as all the records of this crate are.
    unsafe fn read_record<T: Copy>(bytes: &[u8]) -> Option<T> {
        if bytes.len() < core::mem::size_of::<T>() {
            return None;
        }
        // SAFETY: length checked above; read_unaligned has no alignment requirement.
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
    }

    fn too_short<T>(kind: u8, bytes: &[u8]) -> DecodeError {
        DecodeError::TooShort { kind, len: bytes.len(), want: core::mem::size_of::<T>() }
    }

    /// Decodes any record.
    pub fn record(bytes: &[u8]) -> Result<Record, DecodeError> {
        match bytes.first() {
            None => Err(DecodeError::Empty),
            Some(&super::RECORD_PACKET) => packet(bytes).map(Record::Packet),
            Some(&super::RECORD_TRACE) => {
                // SAFETY: TraceRecord is plain integers.
                let rec = unsafe { read_record::<TraceRecord>(bytes) }
                    .ok_or_else(|| too_short::<TraceRecord>(super::RECORD_TRACE, bytes))?;
                if rec.raw_len as usize > super::TRACE_RAW_LEN {
                    return Err(DecodeError::BadLength);
                }
                Ok(Record::Trace(rec))
            }
            Some(&super::RECORD_WATCH) => watch(bytes).map(Record::Watch),
            Some(&other) => Err(DecodeError::UnknownKind(other)),
        }
    }

    /// Decodes a watch start: a known reason (a tracepoint of the table), an IPv4 or IPv6
    /// connection.
    pub fn watch(bytes: &[u8]) -> Result<WatchRecord, DecodeError> {
        match bytes.first() {
            None => return Err(DecodeError::Empty),
            Some(&super::RECORD_WATCH) => {}
            Some(&other) => return Err(DecodeError::UnknownKind(other)),
        }
        // SAFETY: WatchRecord is plain integers.
        let rec = unsafe { read_record::<WatchRecord>(bytes) }
            .ok_or_else(|| too_short::<WatchRecord>(super::RECORD_WATCH, bytes))?;
        let reason_ok = match rec.reason {
            super::WATCH_TRACEPOINT => (rec.tracepoint as usize) < super::TP_COUNT,
            super::WATCH_SACK_SENT | super::WATCH_ZERO_WINDOW_SENT => true,
            _ => false,
        };
        if !reason_ok || !matches!(rec.key.ip_version, 4 | 6) {
            return Err(DecodeError::BadValue);
        }
        Ok(rec)
    }

    /// Decodes a TC packet snapshot.
    pub fn packet(bytes: &[u8]) -> Result<PacketRecord, DecodeError> {
        match bytes.first() {
            None => Err(DecodeError::Empty),
            Some(&super::RECORD_PACKET) => {
                // SAFETY: PacketRecord is plain integers.
                let rec = unsafe { read_record::<PacketRecord>(bytes) }
                    .ok_or_else(|| too_short::<PacketRecord>(super::RECORD_PACKET, bytes))?;
                if rec.snap_len as usize > super::SNAP_LEN {
                    return Err(DecodeError::BadLength);
                }
                Ok(rec)
            }
            Some(&other) => Err(DecodeError::UnknownKind(other)),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn short_or_inconsistent_records_are_rejected() {
            let bytes = [super::super::RECORD_PACKET, 0, 0];
            assert!(matches!(packet(&bytes), Err(DecodeError::TooShort { .. })));
            assert_eq!(packet(&[]).unwrap_err(), DecodeError::Empty);
            assert_eq!(packet(&[99]).unwrap_err(), DecodeError::UnknownKind(99));
            let mut full = [0u8; core::mem::size_of::<PacketRecord>()];
            full[0] = super::super::RECORD_PACKET;
            full[2] = 200; // snap_len 200 > SNAP_LEN
            assert_eq!(packet(&full).unwrap_err(), DecodeError::BadLength);
            full[2] = 60;
            assert_eq!(packet(&full).unwrap().snap_len, 60);
            let mut t = [0u8; core::mem::size_of::<TraceRecord>()];
            t[0] = super::super::RECORD_TRACE;
            assert!(matches!(record(&t), Ok(Record::Trace(_))));
            assert!(matches!(record(&t[..20]), Err(DecodeError::TooShort { .. })));
        }

        /// A watch start as the kernel side writes it: the layout userspace reads it with.
        #[test]
        fn watch_records_decode_and_odd_ones_are_rejected() {
            use super::super::*;
            let key = WatchKey {
                src: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                dst: [10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                sport: 40000,
                dport: 5201,
                ip_version: 4,
                _pad: [0; 3],
            };
            let w = WatchRecord {
                kind: RECORD_WATCH,
                reason: WATCH_TRACEPOINT,
                tracepoint: TP_CONG_STATE_SET as u8,
                _pad: [0; 5],
                ts_boot_ns: 123_456_789,
                key,
            };
            let mut bytes = [0u8; core::mem::size_of::<WatchRecord>()];
            // SAFETY: a plain-integer record copied into a buffer of its own size.
            unsafe { core::ptr::write_unaligned(bytes.as_mut_ptr().cast::<WatchRecord>(), w) };
            // The byte offsets the kernel side writes (checked against the layout here, not
            // against itself): kind, reason, tracepoint, time at 8, key at 16.
            assert_eq!(&bytes[..3], &[RECORD_WATCH, WATCH_TRACEPOINT, TP_CONG_STATE_SET as u8]);
            assert_eq!(bytes[8..16], 123_456_789u64.to_ne_bytes());
            assert_eq!(bytes[16..20], [10, 0, 0, 1]);
            assert_eq!(bytes[48..50], 40000u16.to_ne_bytes());
            assert_eq!(bytes[52], 4);
            let Ok(Record::Watch(got)) = record(&bytes) else { panic!("a watch record") };
            assert_eq!((got.reason, got.tracepoint, got.ts_boot_ns), (w.reason, w.tracepoint, w.ts_boot_ns));
            assert_eq!(got.key, key);
            assert_eq!(Record::Watch(got).ts_boot_ns(), 123_456_789);
            assert!(matches!(record(&bytes[..40]), Err(DecodeError::TooShort { kind: RECORD_WATCH, .. })));
            let mut bad = bytes;
            bad[2] = TP_COUNT as u8;
            assert_eq!(watch(&bad).unwrap_err(), DecodeError::BadValue, "no such tracepoint");
            bad = bytes;
            bad[1] = 9;
            assert_eq!(watch(&bad).unwrap_err(), DecodeError::BadValue, "no such reason");
            bad = bytes;
            bad[1] = WATCH_SACK_SENT;
            assert!(watch(&bad).is_ok());
            bad[52] = 5;
            assert_eq!(watch(&bad).unwrap_err(), DecodeError::BadValue, "no such IP version");
        }
    }
}

#[cfg(feature = "std")]
pub mod privilege {
    //! Whether this process may do what needs root: the one check of the agent, the
    //! privileged tests and xtask. Read from `/proc/self/status`, whose `Uid:` line gives the
    //! real, effective, saved and filesystem uids and `CapEff:` the effective capabilities.
    use std::string::String;

    pub const CAP_NET_ADMIN: u32 = 12;
    pub const CAP_PERFMON: u32 = 38;
    pub const CAP_BPF: u32 = 39;

    fn status_line(key: &str) -> Option<String> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        status.lines().find_map(|l| l.strip_prefix(key).map(|v| String::from(v.trim())))
    }

    /// True when the effective uid is 0.
    pub fn is_root() -> bool {
        status_line("Uid:").is_some_and(|v| v.split_whitespace().nth(1) == Some("0"))
    }

    /// True when every one of `caps` is in the effective set.
    pub fn has_capabilities(caps: &[u32]) -> bool {
        let eff = status_line("CapEff:").and_then(|v| u64::from_str_radix(&v, 16).ok()).unwrap_or(0);
        caps.iter().all(|&c| c < 64 && eff & (1 << c) != 0)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn root_has_every_capability() {
            // A root process (without a reduced bounding set) holds them all; anyone else
            // who is not root must not be told they are.
            if is_root() {
                assert!(has_capabilities(&[CAP_NET_ADMIN, CAP_PERFMON, CAP_BPF]));
            }
            assert!(has_capabilities(&[]));
        }
    }
}
