//! The join of a flow's kernel retransmission reports to its wire retransmissions.
//!
//! A `kernel_retransmit` is matched to the wire retransmission(s) of the same flow that
//! overlap its sequence range within `MATCH_WINDOW` of event time (the tracepoint fires
//! just after the packet reaches the capture point). It is held until it matches or the
//! window passes, so the event names the wire frame it matched. The reports themselves are
//! decoded in `analysis::kernel`; this is the per-flow state the flow carries.

use std::collections::VecDeque;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::event::Event;
use crate::flow::seq::seq_lt;
use crate::time::TimestampNs;

/// How far apart in event time a kernel retransmission and its wire copy may be.
pub const MATCH_WINDOW: TimestampNs = 50_000_000;
/// How long a wire retransmission is kept for a kernel report that has not been read yet.
/// The two arrive by different roads (a ring buffer, a file another tool writes), and
/// either may run behind the other by far more than `MATCH_WINDOW`: a burst after a
/// timeout is hundreds of retransmissions in a few milliseconds. Keeping them by time, not
/// by count, is what lets such a burst match (a count of 256 lost 40 % of one).
const WIRE_KEPT_FOR: TimestampNs = 5_000_000_000;
/// Memory bound of each per-flow list, far above what one flow retransmits in
/// `WIRE_KEPT_FOR`; past it the oldest entry goes (a held kernel report unmatched).
const MAX_PENDING: usize = 8192;

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
    /// When the kernel side began watching the connection (capture policy `troubled`). Kept
    /// here, not in the flow: every flow in the table would pay for the field.
    pub watch: Option<crate::flow::watch::FlowWatch>,
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
        while self
            .recent_wire
            .front()
            .is_some_and(|w| self.recent_wire.len() == MAX_PENDING || ts.saturating_sub(w.ts) > WIRE_KEPT_FOR)
        {
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
        // Kernel reports of a flow come in time order: a wire copy older than the window
        // of this one can match no later report either.
        while self.recent_wire.front().is_some_and(|w| e.ts.saturating_sub(w.ts) > MATCH_WINDOW) {
            self.recent_wire.pop_front();
        }
        let hit = self.recent_wire.iter().rev().find(|w| {
            w.src == (e.src, e.sport) && (w.ts - e.ts).abs() <= MATCH_WINDOW && overlaps(range, (w.seq, w.end))
        });
        if let Some(w) = hit {
            e.extra.wire_frame = Some(w.frame);
            self.counts.matched += 1;
            out.push(e);
        } else {
            if self.held.len() == MAX_PENDING {
                out.extend(self.held.pop_front());
            }
            self.held.push_back(e);
        }
    }

    /// Releases held events whose window has passed (unmatched).
    pub fn expire(&mut self, now: TimestampNs, out: &mut Vec<Event>) {
        while self.held.front().is_some_and(|e| now.saturating_sub(e.ts) > MATCH_WINDOW) {
            out.extend(self.held.pop_front());
        }
    }

    /// Everything still held (end of the flow).
    pub fn flush(&mut self, out: &mut Vec<Event>) {
        out.extend(self.held.drain(..));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventKind, Extra, Origin, Severity};

    /// A kernel retransmission report of 10.0.0.1:5000 at `ts_ms`.
    fn kev(ts_ms: i64, seq: u32, end: u32) -> Event {
        Event {
            ts: ts_ms * 1_000_000,
            event: EventKind::KernelRetransmit,
            flow_id: 7,
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.0.0.2".parse().unwrap(),
            sport: 5000,
            dport: 80,
            seq,
            ack: 0,
            len: end.wrapping_sub(seq),
            flags: String::new(),
            severity: Severity::Info,
            extra: Extra { end_seq: Some(end), ..Default::default() },
            origin: Origin::Kernel,
            frame: None,
            file: None,
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

    /// 400 segments resent 200 us apart (80 ms in all, more than the match window), each
    /// reported by the kernel 20 us after its wire copy.
    const BURST: u32 = 400;

    fn burst_ts(i: u32) -> TimestampNs {
        1_000_000_000 + i as i64 * 200_000
    }

    fn burst_seq(i: u32) -> u32 {
        1000 + i * 1448
    }

    fn burst_wire_copy(s: &mut KernelFlowState, i: u32, out: &mut Vec<Event>) {
        let src = ("10.0.0.1".parse().unwrap(), 5000);
        s.on_wire_retransmission(burst_ts(i), src, burst_seq(i), 1448, 10 + i as u64, out);
    }

    fn burst_report(i: u32) -> Event {
        let mut k = kev(0, burst_seq(i), burst_seq(i) + 1448);
        k.ts = burst_ts(i) + 20_000;
        k
    }

    /// Seen live: after a timeout the kernel resent a burst of segments, and its reports
    /// were read after tcpdump's copies of all of them. A list bounded at 256 entries had
    /// dropped the first copies by then, and 43 of 106 reports stayed unmatched.
    #[test]
    fn a_burst_matches_when_the_kernel_reports_arrive_after_all_its_wire_copies() {
        let mut s = KernelFlowState::default();
        let mut out = Vec::new();
        for i in 0..BURST {
            burst_wire_copy(&mut s, i, &mut out);
        }
        for i in 0..BURST {
            s.on_kernel_retransmission(burst_report(i), &mut out);
        }
        assert_eq!(out.len(), 400);
        assert!(out.iter().enumerate().all(|(i, e)| e.extra.wire_frame == Some(10 + i as u64)));
        // Copies older than any report still to come are let go.
        assert!(s.recent_wire.len() < 400, "{}", s.recent_wire.len());
    }

    /// The other way round: the reports were read first and wait for their copies.
    #[test]
    fn a_burst_matches_when_the_wire_copies_arrive_after_all_the_kernel_reports() {
        let mut s = KernelFlowState::default();
        let mut out = Vec::new();
        for i in 0..BURST {
            s.on_kernel_retransmission(burst_report(i), &mut out);
        }
        for i in 0..BURST {
            burst_wire_copy(&mut s, i, &mut out);
            s.expire(burst_ts(i), &mut out);
        }
        assert_eq!(out.len(), 400);
        assert_eq!(s.counts.matched, 400);
    }
}
