//! What the kernel's own TCP hooks report, joined to the wire analysis.
//!
//! A kernel event names its socket by address and ports; it joins the wire flow with the
//! same 4-tuple. Its retransmission reports are matched to the flow's wire retransmissions
//! by the flow's own join state (`flow::kernel_join`). Kernel events of a connection the
//! wire has not seen wait `MATCH_WINDOW` for its first packet (a state change comes just
//! before the SYN), then get a flow of their own, numbered from `KERNEL_ONLY_FLOW_BASE`.

use std::collections::VecDeque;
use std::net::IpAddr;

use rustc_hash::FxHashMap;

use super::{Analyzer, retire};
use crate::event::{Event, EventKind, Extra, Origin, Severity};
use crate::flow::kernel_join::{KernelFlowState, MATCH_WINDOW};
use crate::flow::key::FlowKey;
use crate::flow::state::Flow;
use crate::flow::table::Retirement;
use crate::flow::watch::{FlowWatch, WatchStart};
use crate::time::TimestampNs;

/// Flow ids of connections only the kernel hooks saw start here.
pub const KERNEL_ONLY_FLOW_BASE: u64 = 1_000_000_000;
/// A kernel report, decoded from a tracepoint record.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelEvent {
    pub ts: TimestampNs,
    pub kind: KernelKind,
    /// The local socket's address and port, then the peer's.
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
    /// Sequence range of a retransmitted skb (`TCP_SKB_CB`), when known.
    pub seq_range: Option<(u32, u32)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelKind {
    /// `err` is 0 for a retransmission sent (kernels since 6.17 also report failures).
    /// `segs` and `mss` are the skb's `tcp_skb_pcount()` and `tcp_skb_mss()` (0: unknown).
    Retransmit {
        state: i64,
        err: i64,
        segs: u16,
        mss: u16,
    },
    RetransmitSynack,
    /// `tcp_cong_state_set`: 0 Open, 1 Disorder, 2 CWR, 3 Recovery, 4 Loss.
    CongState(u8),
    StateChange {
        old: i64,
        new: i64,
    },
    ResetSent {
        state: i64,
        reason: Option<i64>,
    },
    ResetReceived,
}

/// Linux TCP state names (include/net/tcp_states.h).
pub fn tcp_state_name(state: i64) -> String {
    match state {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW_SYN_RECV",
        _ => return format!("state {state}"),
    }
    .to_string()
}

fn tcp_state_number(name: &str) -> i64 {
    (1..=12).find(|&n| tcp_state_name(n) == name).unwrap_or(0)
}

impl KernelEvent {
    /// The kernel report behind a recorded kernel event (to join a live session's kernel
    /// events into the offline analysis of a capture of the same period).
    pub fn from_event(e: &Event) -> Option<KernelEvent> {
        let x = &e.extra;
        let state = || x.state.as_deref().map(tcp_state_number).unwrap_or(0);
        let kind = match e.event {
            EventKind::KernelRetransmit => KernelKind::Retransmit {
                state: state(),
                err: x.err.unwrap_or(0),
                segs: x.segments.unwrap_or(0).min(u16::MAX as u32) as u16,
                mss: x.mss.unwrap_or(0).min(u16::MAX as u32) as u16,
            },
            EventKind::KernelRetransmitSynack => KernelKind::RetransmitSynack,
            EventKind::KernelRto => KernelKind::CongState(4),
            EventKind::KernelRecovery => KernelKind::CongState(3),
            EventKind::KernelStateChange => {
                KernelKind::StateChange { old: x.old_state.as_deref().map(tcp_state_number).unwrap_or(0), new: state() }
            }
            EventKind::KernelResetSent => KernelKind::ResetSent { state: state(), reason: x.reset_reason },
            EventKind::KernelResetReceived => KernelKind::ResetReceived,
            _ => return None,
        };
        Some(KernelEvent {
            ts: e.ts,
            kind,
            src: e.src,
            sport: e.sport,
            dst: e.dst,
            dport: e.dport,
            seq_range: x.end_seq.map(|end| (e.seq, end)),
        })
    }
}

/// Builds the event of a kernel report (flow id filled in by the analyzer).
pub fn kernel_event(k: &KernelEvent, flow_id: u64) -> Event {
    let mut extra = Extra::default();
    let (kind, severity) = match k.kind {
        KernelKind::Retransmit { state, err, segs, mss } => {
            extra.state = Some(tcp_state_name(state));
            extra.err = (err != 0).then_some(err);
            extra.segments = (segs > 0).then_some(segs as u32);
            extra.mss = (mss > 0).then_some(mss as u32);
            let sev = if err != 0 { Severity::Warning } else { Severity::Info };
            (EventKind::KernelRetransmit, sev)
        }
        KernelKind::RetransmitSynack => (EventKind::KernelRetransmitSynack, Severity::Warning),
        KernelKind::CongState(4) => {
            extra.detail = Some("entered Loss: the retransmission timer fired".into());
            (EventKind::KernelRto, Severity::Warning)
        }
        KernelKind::CongState(_) => {
            extra.detail = Some("entered fast recovery".into());
            (EventKind::KernelRecovery, Severity::Info)
        }
        KernelKind::StateChange { old, new } => {
            extra.state = Some(tcp_state_name(new));
            extra.old_state = Some(tcp_state_name(old));
            (EventKind::KernelStateChange, Severity::Info)
        }
        KernelKind::ResetSent { state, reason } => {
            extra.state = (state != 0).then(|| tcp_state_name(state));
            extra.reset_reason = reason;
            (EventKind::KernelResetSent, Severity::Warning)
        }
        KernelKind::ResetReceived => (EventKind::KernelResetReceived, Severity::Warning),
    };
    let (seq, end) = k.seq_range.unwrap_or((0, 0));
    if k.seq_range.is_some() {
        extra.end_seq = Some(end);
    }
    Event {
        ts: k.ts,
        event: kind,
        flow_id,
        src: k.src,
        dst: k.dst,
        sport: k.sport,
        dport: k.dport,
        seq,
        ack: 0,
        len: end.wrapping_sub(seq),
        flags: String::new(),
        severity,
        extra,
        origin: Origin::Kernel,
        frame: None,
        file: None,
    }
}

impl KernelEvent {
    /// Segments of a retransmitted skb, as the kernel counts them in `TcpRetransSegs`: its
    /// own count, else its sequence range over its segment size, else one.
    pub fn segments(&self) -> u64 {
        let KernelKind::Retransmit { segs, mss, .. } = self.kind else { return 0 };
        if segs > 0 {
            return segs as u64;
        }
        let len = self.seq_range.map_or(0, |(s, e)| e.wrapping_sub(s)) as u64;
        if mss > 0 { len.div_ceil(mss as u64).max(1) } else { 1 }
    }
}

/// Which kernel events the analyzer shows: only congestion states that matter (Recovery
/// and Loss; Open, Disorder and CWR are routine).
pub fn is_reported(k: &KernelEvent) -> bool {
    !matches!(k.kind, KernelKind::CongState(s) if s != 3 && s != 4)
}

/// How far the kernel's clock may run ahead of a wire that has stopped before its reports
/// are given up on.
const KERNEL_WAIT_BACKSTOP: TimestampNs = 5_000_000_000;

/// Bounds of the kernel side tables.
const MAX_ORPHANS: usize = 4096;
pub(super) const MAX_KERNEL_ONLY_FLOWS: usize = 65_536;
/// The kernel's own flows evicted at once when there are [`MAX_KERNEL_ONLY_FLOWS`].
pub(super) const KERNEL_ONLY_EVICTION_BATCH: usize = MAX_KERNEL_ONLY_FLOWS / 64;

/// The kernel side of the analyzer: reports joined to their wire flows.
impl Analyzer {
    /// Joins a kernel report to its flow (see [`kernel`]).
    pub fn process_kernel(&mut self, k: &KernelEvent, events: &mut Vec<Event>) {
        if k.ts > self.now {
            self.now = k.ts;
        }
        let key = FlowKey::new(k.src, k.sport, k.dst, k.dport);
        if let Some(flow) = self.table.get_mut(&key) {
            let id = flow.id;
            if attach_kernel(flow, k, events) {
                self.kernel_waiting.insert(id, key);
            }
        } else if let Some(flow) = self.kernel_only.get_mut(&key) {
            let id = flow.id;
            if attach_kernel(flow, k, events) {
                self.kernel_waiting.insert(id, key);
            }
        } else if is_reported(k) {
            if self.orphans.len() == MAX_ORPHANS {
                let oldest = self.orphans.pop_front().expect("full queue");
                self.orphan_to_kernel_only(oldest, events);
            }
            self.orphans.push_back(k.clone());
        }
        self.kernel_sweep(events);
    }

    /// The live agent's kernel side began watching a connection: its flow's wire view begins
    /// there (see [`crate::flow::watch`]).
    pub fn process_watch(&mut self, w: &WatchStart) {
        match self.table.get_mut(&w.key()) {
            Some(flow) => FlowWatch::add(&mut flow.kernel.get_or_insert_with(Default::default).watch, w),
            // Kept for the first packet of the connection; if none comes, a flow of the
            // kernel's reports takes it at the end.
            None => self.pending_watches.add(*w),
        }
    }

    /// Kernel events that waited for a wire flow with this key.
    pub(super) fn adopt_orphans(&mut self, key: FlowKey, events: &mut Vec<Event>) {
        let mine = self.orphans.take(&key);
        if mine.is_empty() {
            return;
        }
        if let Some(flow) = self.table.get_mut(&key) {
            let mut waits = false;
            for k in &mine {
                waits = attach_kernel(flow, k, events);
            }
            if waits {
                self.kernel_waiting.insert(flow.id, key);
            }
        }
    }

    pub(super) fn orphan_to_kernel_only(&mut self, k: KernelEvent, events: &mut Vec<Event>) {
        let key = FlowKey::new(k.src, k.sport, k.dst, k.dport);
        if !self.kernel_only.contains_key(&key) {
            if self.kernel_only.len() >= MAX_KERNEL_ONLY_FLOWS {
                self.evict_kernel_only(events);
            }
            let id = self.next_kernel_only;
            self.next_kernel_only += 1;
            self.kernel_only.insert(key, Box::new(Flow::new(id, (k.src, k.sport), (k.dst, k.dport), k.ts)));
        }
        let flow = self.kernel_only.get_mut(&key).expect("inserted above");
        if attach_kernel(flow, &k, events) {
            self.kernel_waiting.insert(flow.id, key);
        }
    }

    /// Makes room among the kernel's own flows: the [`KERNEL_ONLY_EVICTION_BATCH`] least
    /// recently active go at once (ties to the eldest), retired in the order they were
    /// created. One at a time, each new connection of a full map read all of it: on a host
    /// whose every connection the hooks report, the agent fell behind for good once 65,536
    /// were known.
    fn evict_kernel_only(&mut self, events: &mut Vec<Event>) {
        let mut by_activity: Vec<(TimestampNs, u64, FlowKey)> =
            self.kernel_only.iter().map(|(key, f)| (f.last_ts, f.id, *key)).collect();
        let n = KERNEL_ONLY_EVICTION_BATCH.min(by_activity.len());
        if n == 0 {
            return;
        }
        by_activity.select_nth_unstable(n - 1);
        let gone = &mut by_activity[..n];
        gone.sort_unstable_by_key(|&(_, id, _)| id);
        for (_, _, key) in gone.iter() {
            if let Some(old) = self.kernel_only.remove(key) {
                retire(old, Retirement::Capacity, self.now, None, &mut self.retired, events);
            }
        }
    }

    /// Releases what waited longer than the match window (at most every 10 ms of event time).
    pub(super) fn kernel_sweep(&mut self, events: &mut Vec<Event>) {
        if self.now.saturating_sub(self.last_kernel_sweep) < 10_000_000 {
            return;
        }
        self.last_kernel_sweep = self.now;
        let now = self.wire_now.max(self.now.saturating_sub(KERNEL_WAIT_BACKSTOP));
        while self.orphans.front().is_some_and(|k| now.saturating_sub(k.ts) > MATCH_WINDOW) {
            let k = self.orphans.pop_front().expect("front checked");
            self.orphan_to_kernel_only(k, events);
        }
        // Only the flows something waits in, in the order of their ids (wire flows in the
        // order they were created, then the kernel's own): every flow of the table, read
        // every 10 ms, was most of a live session's time on many connections.
        let Analyzer { table, kernel_only, kernel_waiting, now: latest, .. } = self;
        kernel_waiting.retain(|&id, key| {
            let flow = if id >= KERNEL_ONLY_FLOW_BASE {
                kernel_only.get_mut(key).map(|f| &mut **f)
            } else {
                table.get_mut_same_activity(key)
            };
            // Gone (retired, its reports released then), or another connection of the key.
            let Some(k) = flow.filter(|f| f.id == id).and_then(|f| f.kernel.as_deref_mut()) else { return false };
            k.expire(now, *latest, events);
            k.waits()
        });
    }
}

/// Returns whether the flow's kernel side now waits for something (see
/// [`KernelFlowState::waits`]).
pub(super) fn attach_kernel(flow: &mut Flow, k: &KernelEvent, events: &mut Vec<Event>) -> bool {
    let state = flow.kernel.get_or_insert_with(|| Box::new(KernelFlowState::default()));
    let c = &mut state.counts;
    match k.kind {
        KernelKind::Retransmit { err: 0, .. } => c.kernel_retransmissions += 1,
        KernelKind::Retransmit { .. } => c.kernel_retransmit_failures += 1,
        KernelKind::RetransmitSynack => c.synack_retransmissions += 1,
        KernelKind::CongState(4) => c.rto += 1,
        KernelKind::CongState(3) => c.recovery += 1,
        KernelKind::CongState(_) => return state.waits(),
        KernelKind::StateChange { .. } => c.state_changes += 1,
        KernelKind::ResetSent { .. } => c.resets_sent += 1,
        KernelKind::ResetReceived => c.resets_received += 1,
    }
    let e = kernel_event(k, flow.id);
    let dir = flow.direction_of((k.src, k.sport));
    flow.dirs[dir].stats.events.add(e.event);
    if k.ts > flow.last_ts {
        flow.last_ts = k.ts;
    }
    let state = flow.kernel.as_mut().expect("created above");
    if matches!(k.kind, KernelKind::Retransmit { err: 0, .. }) {
        let relabelled = state.on_kernel_retransmission(e, k.segments(), events);
        // Wire segments counted as out-of-order are retransmissions after all.
        let stats = &mut flow.dirs[dir].stats;
        for _ in 0..relabelled.packets {
            stats.events.remove(EventKind::OutOfOrder);
            stats.events.add(EventKind::Retransmission);
        }
        stats.retransmitted_bytes += relabelled.bytes;
    } else {
        events.push(e);
    }
    state.waits()
}

/// Kernel reports of connections the wire has not shown (yet), oldest first, with a count
/// per connection: a new wire flow looks for its own among thousands without reading them.
#[derive(Default)]
pub(super) struct Orphans {
    queue: VecDeque<KernelEvent>,
    per_key: FxHashMap<FlowKey, u32>,
}

impl Orphans {
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn front(&self) -> Option<&KernelEvent> {
        self.queue.front()
    }

    pub fn push_back(&mut self, k: KernelEvent) {
        *self.per_key.entry(key_of(&k)).or_default() += 1;
        self.queue.push_back(k);
    }

    pub fn pop_front(&mut self) -> Option<KernelEvent> {
        let k = self.queue.pop_front()?;
        let key = key_of(&k);
        if let Some(n) = self.per_key.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.per_key.remove(&key);
            }
        }
        Some(k)
    }

    /// The reports of `key`, in their order; the others keep theirs.
    pub fn take(&mut self, key: &FlowKey) -> Vec<KernelEvent> {
        if self.per_key.remove(key).is_none() {
            return Vec::new();
        }
        let (mine, rest): (Vec<_>, Vec<_>) = self.queue.drain(..).partition(|k| key_of(k) == *key);
        self.queue = rest.into();
        mine
    }
}

fn key_of(k: &KernelEvent) -> FlowKey {
    FlowKey::new(k.src, k.sport, k.dst, k.dport)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new wire flow takes its own waiting reports, in their order; the others keep
    /// theirs, and a key whose reports all left (taken or expired) has none to take.
    #[test]
    fn orphans_are_taken_by_their_connection_in_order() {
        let report = |sport: u16, ts: TimestampNs| KernelEvent {
            ts,
            kind: KernelKind::ResetReceived,
            src: "10.0.0.1".parse().unwrap(),
            sport,
            dst: "10.0.0.2".parse().unwrap(),
            dport: 80,
            seq_range: None,
        };
        let mut orphans = Orphans::default();
        for (sport, ts) in [(1, 10), (2, 20), (1, 30), (3, 40), (2, 50)] {
            orphans.push_back(report(sport, ts));
        }
        let times = |v: &[KernelEvent]| v.iter().map(|k| k.ts).collect::<Vec<_>>();
        assert_eq!(times(&orphans.take(&key_of(&report(1, 0)))), [10, 30]);
        assert!(orphans.take(&key_of(&report(1, 0))).is_empty());
        assert_eq!(orphans.len(), 3);
        assert_eq!(orphans.pop_front().map(|k| k.ts), Some(20));
        // Port 2's first report expired; its second is still there.
        assert_eq!(times(&orphans.take(&key_of(&report(2, 0)))), [50]);
        assert_eq!(orphans.pop_front().map(|k| k.ts), Some(40));
        assert!(orphans.is_empty() && orphans.take(&key_of(&report(3, 0))).is_empty());
    }

    #[test]
    fn recorded_kernel_events_convert_back() {
        for k in [
            KernelKind::Retransmit { state: 1, err: 0, segs: 0, mss: 0 },
            KernelKind::Retransmit { state: 1, err: 0, segs: 3, mss: 1448 },
            KernelKind::Retransmit { state: 4, err: -11, segs: 1, mss: 1448 },
            KernelKind::RetransmitSynack,
            KernelKind::CongState(4),
            KernelKind::CongState(3),
            KernelKind::StateChange { old: 2, new: 1 },
            KernelKind::ResetSent { state: 1, reason: Some(3) },
            KernelKind::ResetReceived,
        ] {
            let ke = KernelEvent {
                ts: 5,
                kind: k,
                src: "10.0.0.1".parse().unwrap(),
                sport: 1,
                dst: "10.0.0.2".parse().unwrap(),
                dport: 2,
                seq_range: matches!(k, KernelKind::Retransmit { .. }).then_some((10, 20)),
            };
            let json = serde_json::to_string(&kernel_event(&ke, 3)).unwrap();
            let back: Event = serde_json::from_str(&json).unwrap();
            assert_eq!(KernelEvent::from_event(&back), Some(ke));
        }
    }
}
