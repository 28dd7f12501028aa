//! What the kernel's own TCP hooks report, joined to the wire analysis.
//!
//! A kernel event names its socket by address and ports; it joins the wire flow with the
//! same 4-tuple. A `kernel_retransmit` is matched to the wire retransmission(s) of the same
//! flow that overlap its sequence range within `MATCH_WINDOW` of event time (the tracepoint
//! fires just before the packet reaches the TC egress hook). It is held until it matches or
//! the window passes, so the event names the wire frame it matched. Kernel events of a
//! connection the wire has not seen wait the same window for its first packet (a state
//! change comes just before the SYN), then get a flow of their own, numbered from
//! `KERNEL_ONLY_FLOW_BASE`.

use std::collections::VecDeque;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::capture::frame::TimestampNs;
use crate::event::{Event, EventKind, Extra, Origin, Severity};
use crate::flow::seq::seq_lt;

/// How far apart in event time a kernel retransmission and its wire copy may be.
pub const MATCH_WINDOW: TimestampNs = 50_000_000;
/// Flow ids of connections only the kernel hooks saw start here.
pub const KERNEL_ONLY_FLOW_BASE: u64 = 1_000_000_000;
/// Bound of the per-flow lists of recent retransmissions kept for matching.
const RECENT: usize = 256;

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
    Retransmit {
        state: i64,
        err: i64,
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
            EventKind::KernelRetransmit => KernelKind::Retransmit { state: state(), err: x.err.unwrap_or(0) },
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

/// Kernel counts of one flow, reported beside the wire counts in the summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelCounts {
    /// Wire retransmissions of the flow (any direction), for comparison.
    pub wire_retransmissions: u64,
    /// `kernel_retransmit` events that were sent (err 0).
    pub kernel_retransmissions: u64,
    /// ... of which matched a wire retransmission.
    pub matched: u64,
    pub kernel_retransmit_failures: u64,
    pub synack_retransmissions: u64,
    pub rto: u64,
    pub recovery: u64,
    pub resets_sent: u64,
    pub resets_received: u64,
    pub state_changes: u64,
}

#[derive(Debug, Clone, Copy)]
struct WireRetx {
    ts: TimestampNs,
    src: (IpAddr, u16),
    seq: u32,
    end: u32,
    frame: u64,
}

/// Kernel state of one flow (allocated on its first kernel event).
#[derive(Debug, Clone, Default)]
pub struct KernelFlowState {
    pub counts: KernelCounts,
    recent_wire: VecDeque<WireRetx>,
    /// Kernel retransmissions waiting for their wire copy.
    held: VecDeque<Event>,
}

fn overlaps(a: (u32, u32), b: (u32, u32)) -> bool {
    seq_lt(a.0, b.1) && seq_lt(b.0, a.1)
}

fn kernel_range(e: &Event) -> (u32, u32) {
    (e.seq, e.extra.end_seq.unwrap_or(e.seq.wrapping_add(1)))
}

impl KernelFlowState {
    /// A wire retransmission was seen: remember it, and release a held kernel event it
    /// matches.
    pub fn on_wire_retransmission(
        &mut self,
        ts: TimestampNs,
        src: (IpAddr, u16),
        seq: u32,
        len: u32,
        frame: u64,
        out: &mut Vec<Event>,
    ) {
        let end = seq.wrapping_add(len.max(1));
        if self.recent_wire.len() == RECENT {
            self.recent_wire.pop_front();
        }
        self.recent_wire.push_back(WireRetx { ts, src, seq, end, frame });
        if let Some(i) = self.held.iter().position(|e| {
            (e.src, e.sport) == src && (ts - e.ts).abs() <= MATCH_WINDOW && overlaps(kernel_range(e), (seq, end))
        }) {
            let mut e = self.held.remove(i).expect("index from position");
            e.extra.wire_frame = Some(frame);
            self.counts.matched += 1;
            out.push(e);
        }
    }

    /// A kernel retransmission: matched now if its wire copy was already seen, else held.
    pub fn on_kernel_retransmission(&mut self, mut e: Event, out: &mut Vec<Event>) {
        let range = kernel_range(&e);
        let hit = self.recent_wire.iter().rev().find(|w| {
            w.src == (e.src, e.sport) && (w.ts - e.ts).abs() <= MATCH_WINDOW && overlaps(range, (w.seq, w.end))
        });
        if let Some(w) = hit {
            e.extra.wire_frame = Some(w.frame);
            self.counts.matched += 1;
            out.push(e);
        } else {
            if self.held.len() == RECENT {
                out.extend(self.held.pop_front());
            }
            self.held.push_back(e);
        }
    }

    /// Releases held events whose window has passed (unmatched).
    pub fn expire(&mut self, now: TimestampNs, out: &mut Vec<Event>) {
        while self.held.front().is_some_and(|e| now - e.ts > MATCH_WINDOW) {
            out.extend(self.held.pop_front());
        }
    }

    /// Everything still held (end of the flow).
    pub fn flush(&mut self, out: &mut Vec<Event>) {
        out.extend(self.held.drain(..));
    }
}

/// Builds the event of a kernel report (flow id filled in by the analyzer).
pub fn kernel_event(k: &KernelEvent, flow_id: u64) -> Event {
    let mut extra = Extra::default();
    let (kind, severity) = match k.kind {
        KernelKind::Retransmit { state, err } => {
            extra.state = Some(tcp_state_name(state));
            extra.err = (err != 0).then_some(err);
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

/// Which kernel events the analyzer shows: only congestion states that matter (Recovery
/// and Loss; Open, Disorder and CWR are routine).
pub fn is_reported(k: &KernelEvent) -> bool {
    !matches!(k.kind, KernelKind::CongState(s) if s != 3 && s != 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kev(ts_ms: i64, seq: u32, end: u32) -> Event {
        kernel_event(
            &KernelEvent {
                ts: ts_ms * 1_000_000,
                kind: KernelKind::Retransmit { state: 1, err: 0 },
                src: "10.0.0.1".parse().unwrap(),
                sport: 5000,
                dst: "10.0.0.2".parse().unwrap(),
                dport: 80,
                seq_range: Some((seq, end)),
            },
            7,
        )
    }

    #[test]
    fn recorded_kernel_events_convert_back() {
        for k in [
            KernelKind::Retransmit { state: 1, err: 0 },
            KernelKind::Retransmit { state: 4, err: -11 },
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

    #[test]
    fn matches_in_either_order_within_the_window() {
        let src = ("10.0.0.1".parse().unwrap(), 5000);
        let mut s = KernelFlowState::default();
        let mut out = Vec::new();
        // Kernel first, wire 1 ms later.
        s.on_kernel_retransmission(kev(100, 1000, 2448), &mut out);
        assert!(out.is_empty(), "held until its wire copy or the window passes");
        s.on_wire_retransmission(101_000_000, src, 1000, 1448, 42, &mut out);
        assert_eq!(out[0].extra.wire_frame, Some(42));
        // Wire first (a copy seen before the kernel record was read).
        s.on_wire_retransmission(200_000_000, src, 5000, 1448, 50, &mut out);
        s.on_kernel_retransmission(kev(200, 5000, 6448), &mut out);
        assert_eq!(out[1].extra.wire_frame, Some(50));
        // No copy: released unmatched after the window.
        s.on_kernel_retransmission(kev(300, 9000, 10448), &mut out);
        s.expire(300_000_000 + MATCH_WINDOW + 1, &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(out[2].extra.wire_frame, None);
        // Another direction or a later time does not match.
        s.on_wire_retransmission(400_000_000, ("10.0.0.2".parse().unwrap(), 80), 12000, 100, 60, &mut out);
        s.on_kernel_retransmission(kev(500, 12000, 12100), &mut out);
        s.flush(&mut out);
        assert_eq!(out[3].extra.wire_frame, None);
        assert_eq!(s.counts.matched, 2);
    }
}
