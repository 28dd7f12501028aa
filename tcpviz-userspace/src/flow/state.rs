//! Per-connection, per-direction TCP state.
//!
//! The sequence-analysis fields mirror Wireshark's `tcp_flow_t` and
//! `tcp_analyze_seq_flow_info_t` one to one, including its convention that a value of 0
//! means "not seen yet" for `nextseq`, `lastack` and `maxseqtobeacked` (the rules compare
//! raw sequence numbers, so this matters only for a flow whose numbers sit exactly on 0,
//! and keeping it makes our flags agree with tshark's packet for packet).

use std::net::IpAddr;

use crate::capture::decode::SackBlocks;
use crate::event::EventKind;
use crate::time::TimestampNs;

use super::ts_rtt::TsRtt;
use super::unacked::UnackedList;

/// RTT samples of one direction: exact count/min/max/mean, a smoothed RTT (RFC 6298), and a
/// fixed-size reservoir for the median, so memory stays bounded on long flows.
#[derive(Debug, Clone, Default)]
pub struct RttStats {
    pub count: u64,
    pub min_ns: i64,
    pub max_ns: i64,
    pub sum_ns: i64,
    /// The smoothed RTT once `count > 0` (not an `Option`: 8 bytes less puts the boxed stats
    /// in mimalloc's 80-byte class, not the 96-byte one; most connections have some).
    srtt_ns: i64,
    pub last_ns: i64,
    /// Samples in microseconds; exact while `count <= RESERVOIR` (empty while `count` is 1:
    /// the sample is `last_ns`).
    reservoir: Vec<u32>,
    rng: u64,
}

impl RttStats {
    pub const RESERVOIR: usize = 128;

    fn us(sample_ns: i64) -> u32 {
        (sample_ns / 1000).min(u32::MAX as i64) as u32
    }

    pub fn add(&mut self, sample_ns: i64) {
        let sample_ns = sample_ns.max(0);
        let previous_ns = self.last_ns;
        if self.count == 0 {
            self.min_ns = sample_ns;
            self.max_ns = sample_ns;
        } else {
            self.min_ns = self.min_ns.min(sample_ns);
            self.max_ns = self.max_ns.max(sample_ns);
        }
        self.count += 1;
        self.sum_ns = self.sum_ns.saturating_add(sample_ns);
        self.last_ns = sample_ns;
        self.srtt_ns = match self.count {
            1 => sample_ns,
            _ => self.srtt_ns + (sample_ns - self.srtt_ns) / 8,
        };
        let us = Self::us(sample_ns);
        if self.count == 1 {
            // The only sample is `last_ns`: the reservoir is allocated with the second, as
            // most directions of a scan or a flood of short connections have only one.
        } else if self.reservoir.len() < Self::RESERVOIR {
            if self.count == 2 {
                self.reservoir.push(Self::us(previous_ns));
            }
            self.reservoir.push(us);
        } else {
            // Algorithm R with a deterministic generator: the same input gives the same
            // summary on every run.
            self.rng = self.rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let j = (self.rng >> 33) % self.count;
            if (j as usize) < Self::RESERVOIR {
                self.reservoir[j as usize] = us;
            }
        }
    }

    /// The smoothed RTT (RFC 6298), once there is a sample.
    pub fn srtt_ns(&self) -> Option<i64> {
        (self.count > 0).then_some(self.srtt_ns)
    }

    /// Median in nanoseconds (exact up to `RESERVOIR` samples, estimated beyond).
    pub fn median_ns(&self) -> Option<i64> {
        match self.count {
            0 => return None,
            1 => return Some(Self::us(self.last_ns) as i64 * 1000),
            _ => {}
        }
        let mut v = self.reservoir.clone();
        v.sort_unstable();
        let n = v.len();
        let m = if n % 2 == 1 { v[n / 2] as i64 * 1000 } else { (v[n / 2 - 1] as i64 + v[n / 2] as i64) * 500 };
        Some(m)
    }

    pub fn median_is_exact(&self) -> bool {
        self.count as usize <= Self::RESERVOIR
    }
}

/// [`RttStats`] allocated with the first sample: most connections of a scan or a flood
/// never have one, and a quiet connection pays 8 bytes instead of a hundred.
#[derive(Debug, Clone, Default)]
pub struct LazyRtt(Option<Box<RttStats>>);

/// What a direction without samples reads.
static NO_RTT: RttStats =
    RttStats { count: 0, min_ns: 0, max_ns: 0, sum_ns: 0, srtt_ns: 0, last_ns: 0, reservoir: Vec::new(), rng: 0 };

impl LazyRtt {
    pub fn add(&mut self, sample_ns: i64) {
        self.0.get_or_insert_with(Default::default).add(sample_ns);
    }
}

impl std::ops::Deref for LazyRtt {
    type Target = RttStats;

    fn deref(&self) -> &RttStats {
        self.0.as_deref().unwrap_or(&NO_RTT)
    }
}

/// Events of one direction by kind. Most connections have none, or one kind (a scan's
/// refusals, a flood's resets): one kind is counted in place, and the counts of every kind
/// are allocated when a second kind comes. A quiet connection pays 16 bytes, not 150.
#[derive(Debug, Clone, Default)]
pub struct EventCounts {
    /// The only kind seen so far and its count (`None` once `all` is allocated).
    one: Option<(EventKind, u32)>,
    all: Option<Box<[u32; EventKind::COUNT]>>,
}

impl EventCounts {
    pub fn add(&mut self, kind: EventKind) {
        if let Some(all) = self.all.as_mut() {
            all[kind.index()] += 1;
            return;
        }
        match &mut self.one {
            None => self.one = Some((kind, 1)),
            Some((k, n)) if *k == kind => *n += 1,
            Some(_) => {
                let mut all = Box::new(self.to_array());
                all[kind.index()] += 1;
                self.one = None;
                self.all = Some(all);
            }
        }
    }

    /// Takes back one `kind` counted by `add` (an event whose kind changed after it was
    /// counted: a wire verdict the kernel's overruled).
    pub fn remove(&mut self, kind: EventKind) {
        if let Some(all) = self.all.as_mut() {
            all[kind.index()] = all[kind.index()].saturating_sub(1);
            return;
        }
        if let Some((k, n)) = &mut self.one
            && *k == kind
        {
            *n -= 1;
            if *n == 0 {
                self.one = None;
            }
        }
    }

    pub fn get(&self, kind: EventKind) -> u32 {
        match (&self.all, self.one) {
            (Some(all), _) => all[kind.index()],
            (None, Some((k, n))) if k == kind => n,
            _ => 0,
        }
    }

    /// [`trouble_score`] of these counts (every retired flow is ranked by it: most have no
    /// event, or one kind).
    pub fn trouble_score(&self) -> u64 {
        match (&self.all, self.one) {
            (Some(all), _) => trouble_score(all),
            (None, Some((k, n))) => k.trouble_weight() * n as u64,
            (None, None) => 0,
        }
    }

    /// Counts in the order of `EventKind::ALL`.
    pub fn to_array(&self) -> [u32; EventKind::COUNT] {
        if let Some(all) = self.all.as_deref() {
            return *all;
        }
        let mut a = [0; EventKind::COUNT];
        if let Some((k, n)) = self.one {
            a[k.index()] = n;
        }
        a
    }
}

/// Counters of one direction, kept for the summary.
#[derive(Debug, Clone, Default)]
pub struct DirStats {
    pub packets: u64,
    pub payload_bytes: u64,
    pub retransmitted_bytes: u64,
    pub events: EventCounts,
    pub rtt: LazyRtt,
}

/// State of one direction of a connection (Wireshark's `tcp_flow_t` + tcpviz counters).
#[derive(Debug, Clone)]
pub struct DirState {
    pub base_seq: u32,
    pub base_seq_set: bool,
    pub saw_syn: bool,
    pub saw_synack: bool,
    /// -1: not known yet; -2: no scaling in use; >= 0: the shift.
    pub win_scale: i8,
    /// Last raw window advertised by this direction (u32::MAX before the first packet).
    pub window: u32,
    /// True from a SYN until the first pure ACK (window not yet scaled).
    pub is_first_ack: bool,
    pub valid_bif: bool,
    /// Analysis flags of the last segment of this direction.
    pub lastsegmentflags: u32,
    pub nextseq: u32,
    pub nextseqtime: TimestampNs,
    pub nextseqframe: u64,
    pub maxseqtobeacked: u32,
    pub lastack: u32,
    pub lastacktime: TimestampNs,
    pub lastnondupack: u64,
    pub dupacknum: i32,
    pub unacked: UnackedList,
    /// tcpviz: highest ACK sent with the ACK flag (when `highest_ack_known`: an
    /// `Option<u32>` takes 8 bytes, the flag sits in padding), and duplicate ACKs of it
    /// since it moved.
    highest_ack_value: u32,
    highest_ack_known: bool,
    pub repeat_acks: u32,
    /// tcpviz: when the oldest data still unacknowledged was sent, for ack-stall detection.
    pub outstanding_since: crate::time::MaybeTs,
    /// What few connections need (SACK, zero windows, timer retransmissions).
    pub rare: Option<Box<DirRare>>,
    pub fin_seen: bool,
    /// Kept here, not in `stats`: a u32 there is padded to 8 bytes, here it pairs with
    /// another (the flow fits a smaller malloc size class).
    pub max_bytes_in_flight: u32,
    pub stats: DirStats,
}

impl Default for DirState {
    fn default() -> Self {
        DirState {
            base_seq: 0,
            base_seq_set: false,
            saw_syn: false,
            saw_synack: false,
            win_scale: -1,
            window: u32::MAX,
            is_first_ack: false,
            valid_bif: true,
            lastsegmentflags: 0,
            nextseq: 0,
            nextseqtime: 0,
            nextseqframe: 0,
            maxseqtobeacked: 0,
            lastack: 0,
            lastacktime: 0,
            lastnondupack: 0,
            dupacknum: 0,
            unacked: UnackedList::default(),
            highest_ack_value: 0,
            highest_ack_known: false,
            repeat_acks: 0,
            outstanding_since: crate::time::MaybeTs::NONE,
            rare: None,
            fin_seen: false,
            max_bytes_in_flight: 0,
            stats: DirStats::default(),
        }
    }
}

/// State of a direction that most connections never need, allocated when first needed so
/// that a quiet connection stays small.
#[derive(Debug, Clone, Default)]
pub struct DirRare {
    /// SACK blocks of the last segment of this direction.
    pub sack: SackBlocks,
    /// tcpviz: last time this direction advertised a zero window.
    pub last_zero_window: Option<TimestampNs>,
    /// tcpviz: last timer-driven retransmission of this direction.
    pub last_timer_retransmission: Option<TimestampNs>,
    /// tcpviz: data sent by timer retransmissions of the same head segment.
    pub timer_attempts: u32,
    pub timer_head_seq: u32,
    /// tcpviz: the other side's ACK when this direction last sent a tail-loss probe (one
    /// probe until that ACK moves, as a sender's probe timer is armed once per flight).
    pub probe_at_ack: Option<u32>,
    /// tcpviz, partial wire views only: the highest SACK edge the other side reported before
    /// any data of this direction was seen (see `analysis::rules::seed_from_sack`).
    pub sacked_before_data: Option<SackedBeforeData>,
    /// tcpviz: RTT from timestamp echoes of this direction's segments (when it sends data
    /// with timestamps).
    pub ts_rtt: TsRtt,
    /// tcpviz: what limited this direction's sending (from its second data segment).
    pub limits: Option<crate::flow::limits::LimitClock>,
}

/// A SACK edge seen before any data of the direction it acknowledges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SackedBeforeData {
    pub edge: u32,
    pub ts: TimestampNs,
    pub frame: u64,
}

static NO_SACK: SackBlocks = SackBlocks { len: 0, blocks: [(0, 0); 4] };

impl DirState {
    pub fn rare_mut(&mut self) -> &mut DirRare {
        self.rare.get_or_insert_with(Default::default)
    }

    /// SACK blocks of the last segment of this direction.
    pub fn sack(&self) -> &SackBlocks {
        self.rare.as_ref().map_or(&NO_SACK, |r| &r.sack)
    }

    /// Records the SACK blocks of this direction's latest segment.
    pub fn set_sack(&mut self, sack: SackBlocks) {
        if sack.len > 0 {
            self.rare_mut().sack = sack;
        } else if let Some(r) = self.rare.as_mut() {
            r.sack = sack;
        }
    }

    /// The timestamp-echo RTT of this direction's data, when it sent any with timestamps.
    /// The highest ACK this direction sent with the ACK flag.
    pub fn highest_ack(&self) -> Option<u32> {
        self.highest_ack_known.then_some(self.highest_ack_value)
    }

    pub fn set_highest_ack(&mut self, ack: u32) {
        self.highest_ack_value = ack;
        self.highest_ack_known = true;
    }

    pub fn limits(&self) -> Option<&crate::flow::limits::LimitClock> {
        self.rare.as_ref().and_then(|r| r.limits.as_ref())
    }

    pub fn limits_mut(&mut self) -> Option<&mut crate::flow::limits::LimitClock> {
        self.rare.as_mut().and_then(|r| r.limits.as_mut())
    }

    pub fn limited_by(&self) -> Option<crate::flow::limits::LimitedBy> {
        self.rare.as_ref().and_then(|r| r.limits.as_ref()).map(|l| l.limited_by())
    }

    pub fn ts_rtt(&self) -> Option<&TsRtt> {
        self.rare.as_ref().map(|r| &r.ts_rtt).filter(|t| t.rtt.count > 0)
    }

    pub fn last_zero_window(&self) -> Option<TimestampNs> {
        self.rare.as_ref().and_then(|r| r.last_zero_window)
    }

    pub fn last_timer_retransmission(&self) -> Option<TimestampNs> {
        self.rare.as_ref().and_then(|r| r.last_timer_retransmission)
    }

    /// The receive window this direction advertises, scaled when the scale is known.
    pub fn scaled_window(&self) -> Option<u64> {
        if self.window == u32::MAX {
            return None;
        }
        match self.win_scale {
            -2 => Some(self.window as u64),
            s if s >= 0 && !self.is_first_ack => Some((self.window as u64) << s),
            _ => None,
        }
    }
}

/// Handshake and teardown bookkeeping of a connection.
#[derive(Debug, Clone, Default)]
pub struct Lifecycle {
    /// Direction that sent the first SYN (the client); a byte, not a `usize`: it kept the
    /// flow 16 bytes over a malloc size class.
    pub client_dir: Option<u8>,
    pub first_syn_ts: crate::time::MaybeTs,
    pub syns: u32,
    pub synacks: u32,
    /// Frame of the most recent SYN and SYN-ACK, to point end-of-flow findings at them.
    pub last_syn_frame: u64,
    pub last_synack_frame: u64,
    pub last_synack_ts: TimestampNs,
    /// The client acknowledged the SYN-ACK (or data flowed both ways).
    pub established: bool,
    pub rst_seen: bool,
    pub refused: bool,
    /// The smaller MSS option of the two SYNs (0: none seen): about the largest segment
    /// either side sends, which tells a full segment from a short write through GSO
    /// super-packets (`flow::limits`). One u16 for both sides: it fits in padding.
    pub syn_mss: u16,
}

/// One TCP connection (one tshark `tcp.stream`).
#[derive(Debug, Clone)]
pub struct Flow {
    pub id: u64,
    /// `endpoints[0]` sent the first packet seen; direction 0 is from it.
    pub endpoints: [(IpAddr, u16); 2],
    pub first_ts: TimestampNs,
    pub last_ts: TimestampNs,
    pub dirs: [DirState; 2],
    /// Time of the most recent SYN (Wireshark's `ts_mru_syn`; 0 = none).
    pub ts_mru_syn: TimestampNs,
    /// Handshake RTT (Wireshark's `ts_first_rtt`; 0 = unknown).
    pub first_rtt: TimestampNs,
    pub lifecycle: Lifecycle,
    /// Index of the input file of the latest packet (several files can make one run).
    pub file_index: u32,
    /// What the kernel hooks said about this connection (live sessions).
    pub kernel: Option<Box<crate::flow::kernel_join::KernelFlowState>>,
}

impl Flow {
    pub fn new(id: u64, src: (IpAddr, u16), dst: (IpAddr, u16), ts: TimestampNs) -> Flow {
        Flow {
            id,
            endpoints: [src, dst],
            first_ts: ts,
            last_ts: ts,
            dirs: [DirState::default(), DirState::default()],
            ts_mru_syn: 0,
            first_rtt: 0,
            lifecycle: Lifecycle::default(),
            file_index: 0,
            kernel: None,
        }
    }

    /// Frees what only the analysis of further packets needs (segments waiting for their
    /// ACK, timestamps waiting for their echo, kernel reports waiting for their wire copy):
    /// a retired flow kept for the summary's listing holds its counts, not its trackers.
    pub fn shrink_to_counts(&mut self) {
        for d in &mut self.dirs {
            d.unacked = UnackedList::default();
            if let Some(r) = d.rare.as_deref_mut() {
                r.ts_rtt.forget_pending();
            }
        }
        if let Some(k) = self.kernel.as_deref_mut() {
            k.forget_pending();
        }
    }

    /// When the live agent's kernel side began watching it (capture policy `troubled`).
    pub fn watch(&self) -> Option<&crate::flow::watch::FlowWatch> {
        self.kernel.as_ref()?.watch.as_ref()
    }

    /// Direction of a packet from `src`.
    #[inline]
    pub fn direction_of(&self, src: (IpAddr, u16)) -> usize {
        // Ports first: they tell the directions apart without the addresses in most
        // connections (and the tuple is compared in place, not copied).
        let first = &self.endpoints[0];
        if src.1 == first.1 && src.0 == first.0 { 0 } else { 1 }
    }

    /// (sender side, receiver side) of a packet going in direction `dir`.
    pub fn dirs_mut(&mut self, dir: usize) -> (&mut DirState, &mut DirState) {
        let [a, b] = &mut self.dirs;
        if dir == 0 { (a, b) } else { (b, a) }
    }

    /// Closed: reset, or both sides sent a FIN.
    pub fn is_closed(&self) -> bool {
        self.lifecycle.rst_seen || (self.dirs[0].fin_seen && self.dirs[1].fin_seen)
    }

    /// A score to sort flows by trouble: weighted problem events.
    pub fn trouble_score(&self) -> u64 {
        self.dirs.iter().map(|d| d.stats.events.trouble_score()).sum()
    }
}

/// Weighted count of problem events (weights: [`EventKind::trouble_weight`]).
pub fn trouble_score(events: &[u32; EventKind::COUNT]) -> u64 {
    EventKind::ALL.iter().map(|k| k.trouble_weight() * events[k.index()] as u64).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_state_is_small() {
        // The flow table holds up to 262,144 of these: every byte here is 256 KiB there.
        let (flow, dir) = (std::mem::size_of::<Flow>(), std::mem::size_of::<DirState>());
        // 504 + malloc's 8-byte header is the 512-byte size class (536 was 544: 8 MB more
        // on a full table).
        assert!(flow <= 504, "Flow is {flow} bytes (DirState {dir})");
        // Boxed when a direction has RTT samples (most): mimalloc's 80-byte class.
        assert!(std::mem::size_of::<RttStats>() <= 80);
        let mut r = LazyRtt::default();
        assert_eq!((r.count, r.srtt_ns(), r.median_ns()), (0, None, None));
        r.add(5_000_000);
        assert_eq!((r.count, r.median_ns()), (1, Some(5_000_000)));
    }

    #[test]
    fn event_counts_one_kind_in_place_then_all() {
        let mut c = EventCounts::default();
        assert_eq!(c.get(EventKind::DuplicateAck), 0);
        c.add(EventKind::DuplicateAck);
        c.add(EventKind::DuplicateAck);
        assert!(c.all.is_none());
        c.add(EventKind::Retransmission);
        c.add(EventKind::DuplicateAck);
        assert_eq!((c.get(EventKind::DuplicateAck), c.get(EventKind::Retransmission)), (3, 1));
        let a = c.to_array();
        assert_eq!((a[EventKind::DuplicateAck.index()], a.iter().sum::<u32>()), (3, 4));
    }

    #[test]
    fn rtt_stats_exact_then_bounded() {
        let mut r = RttStats::default();
        for ms in [30, 10, 20] {
            r.add(ms * 1_000_000);
        }
        assert_eq!((r.min_ns, r.max_ns, r.count), (10_000_000, 30_000_000, 3));
        assert_eq!(r.median_ns(), Some(20_000_000));
        assert!(r.median_is_exact());
        for i in 0..10_000 {
            r.add(1_000_000 + (i % 100) * 1000);
        }
        assert_eq!(r.reservoir.len(), RttStats::RESERVOIR);
        let m = r.median_ns().unwrap();
        assert!((1_030_000..=1_070_000).contains(&m), "{m}");
        assert!(!r.median_is_exact());
        // SRTT follows RFC 6298's 1/8 gain.
        let mut s = RttStats::default();
        s.add(800);
        s.add(1600);
        assert_eq!(s.srtt_ns(), Some(900));
    }
}
