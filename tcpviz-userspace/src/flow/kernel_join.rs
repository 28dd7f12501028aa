//! The join of a flow's kernel retransmission reports to its wire retransmissions.
//!
//! A `kernel_retransmit` is matched to the wire retransmission(s) of the same flow that
//! overlap its sequence range within `MATCH_WINDOW` of event time (the tracepoint fires
//! just after the packet reaches the capture point). It is held until it matches or the
//! window passes, so the event names the wire frame it matched. The reports themselves are
//! decoded in `analysis::kernel`; this is the per-flow state the flow carries.
//!
//! The kernel's verdict wins. A segment Wireshark's rules call `out_of_order` (at
//! sub-millisecond RTTs, a retransmission sent within an RTT of the highest segment is one)
//! is a retransmission when the kernel reports it as one. Such a segment's events wait for a
//! report, as reports wait for their segment, and leave relabelled as `retransmission`
//! with the wire rules' verdict kept in `extra.wire_verdict`, so that counts, the headline
//! rate and alerts all see the reconciled verdict.

use std::collections::VecDeque;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::event::{Event, EventKind};
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

/// Kernel counts of one flow, reported beside the wire counts in the summary. Segment
/// counts are in MSS-sized segments, as the kernel's `TcpRetransSegs` counts them (one
/// report can be a GSO skb of several).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelCounts {
    /// Wire retransmissions of the flow (any direction), for comparison: the segments the
    /// wire rules flag, and those the kernel confirmed.
    pub wire_retransmissions: u64,
    /// `kernel_retransmit` events that were sent (err 0).
    pub kernel_retransmissions: u64,
    /// ... of which matched a wire retransmission.
    pub matched: u64,
    /// The segments of those reports (`tcp_skb_pcount`), and of those matched.
    #[serde(default)]
    pub kernel_retransmitted_segments: u64,
    #[serde(default)]
    pub matched_segments: u64,
    /// Wire segments the rules called `out_of_order` that the kernel reported as
    /// retransmitted: counted as retransmissions (`extra.wire_verdict` keeps the rules' word).
    #[serde(default)]
    pub reclassified: u64,
    /// The reconciled count: the kernel's retransmitted segments, plus the wire's
    /// retransmitted segments no kernel report accounts for (the other side's, or a
    /// connection whose kernel is not this host's).
    #[serde(default)]
    pub retransmitted_segments: u64,
    pub kernel_retransmit_failures: u64,
    pub synack_retransmissions: u64,
    pub rto: u64,
    pub recovery: u64,
    pub resets_sent: u64,
    pub resets_received: u64,
    pub state_changes: u64,
}

impl KernelCounts {
    /// Sums another flow's counts into these (totals of a session).
    pub fn add(&mut self, o: &KernelCounts) {
        self.wire_retransmissions += o.wire_retransmissions;
        self.kernel_retransmissions += o.kernel_retransmissions;
        self.matched += o.matched;
        self.kernel_retransmitted_segments += o.kernel_retransmitted_segments;
        self.matched_segments += o.matched_segments;
        self.reclassified += o.reclassified;
        self.retransmitted_segments += o.retransmitted_segments;
        self.kernel_retransmit_failures += o.kernel_retransmit_failures;
        self.synack_retransmissions += o.synack_retransmissions;
        self.rto += o.rto;
        self.recovery += o.recovery;
        self.resets_sent += o.resets_sent;
        self.resets_received += o.resets_received;
        self.state_changes += o.state_changes;
    }
}

#[derive(Debug, Clone, Copy)]
struct WireRetx {
    ts: TimestampNs,
    src: (IpAddr, u16),
    seq: u32,
    end: u32,
    frame: u64,
    /// Flagged a retransmission by the wire rules (not only out-of-order).
    retransmission: bool,
    /// A kernel report covers it (its segments are the report's).
    matched: bool,
}

/// A kernel retransmission report, kept for the wire segments in its range: `report` until
/// one matched it (then it has gone out), the range until the wire has passed it.
#[derive(Debug, Clone)]
struct KernelRetx {
    ts: TimestampNs,
    src: (IpAddr, u16),
    seq: u32,
    end: u32,
    segments: u64,
    report: Option<Event>,
}

/// The events of a wire segment the rules called `out_of_order`, waiting for the kernel to
/// say whether it was a retransmission.
#[derive(Debug, Clone)]
struct HeldWire {
    ts: TimestampNs,
    src: (IpAddr, u16),
    seq: u32,
    end: u32,
    events: Vec<Event>,
}

/// A wire segment the rules flagged retransmitted or out-of-order.
#[derive(Debug, Clone, Copy)]
pub struct WireSegment {
    pub ts: TimestampNs,
    pub src: (IpAddr, u16),
    pub seq: u32,
    pub len: u32,
    /// Its packet's frame number.
    pub frame: u64,
}

/// What a kernel report changed in the flow's wire counts: wire packets it confirmed as
/// retransmissions after their events had been counted as `out_of_order`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Relabelled {
    pub packets: u64,
    pub bytes: u64,
}

/// Kernel state of one flow (allocated on its first kernel event).
#[derive(Debug, Clone, Default)]
pub struct KernelFlowState {
    pub counts: KernelCounts,
    /// When the kernel side began watching the connection (capture policy `troubled`). Kept
    /// here, not in the flow: every flow in the table would pay for the field.
    pub watch: Option<crate::flow::watch::FlowWatch>,
    /// The kernel's segment size (`tcp_skb_mss`) of the last report: wire retransmissions
    /// of GSO packets count their segments by it.
    mss: u16,
    recent_wire: VecDeque<WireRetx>,
    /// Kernel retransmissions, waiting for their wire copy or the wire to pass them.
    kernel: VecDeque<KernelRetx>,
    held_wire: VecDeque<HeldWire>,
}

fn overlaps(a: (u32, u32), b: (u32, u32)) -> bool {
    seq_lt(a.0, b.1) && seq_lt(b.0, a.1)
}

fn kernel_range(e: &Event) -> (u32, u32) {
    (e.seq, e.extra.end_seq.unwrap_or(e.seq.wrapping_add(1)))
}

impl KernelFlowState {
    /// Lets go of the reports still waiting to be joined (a retired flow, kept for the
    /// summary, needs its counts only).
    pub fn forget_pending(&mut self) {
        self.recent_wire = VecDeque::new();
        self.kernel = VecDeque::new();
        self.held_wire = VecDeque::new();
    }

    /// Whether anything waits for its window to pass ([`expire`](Self::expire) has work).
    pub fn waits(&self) -> bool {
        !self.kernel.is_empty() || !self.held_wire.is_empty()
    }

    /// Segments of a wire packet of `len` payload bytes (a GSO packet holds several).
    fn wire_segments(&self, len: u32) -> u64 {
        if self.mss > 0 { (len as u64).div_ceil(self.mss as u64).max(1) } else { 1 }
    }

    /// A wire segment leaves the join: a retransmission no kernel report covered counts
    /// its own segments in the reconciled count.
    fn forget_wire(&mut self, w: WireRetx) {
        if w.retransmission && !w.matched {
            self.counts.retransmitted_segments += self.wire_segments(w.end.wrapping_sub(w.seq));
        }
    }

    fn pop_wire_while(&mut self, mut old: impl FnMut(&WireRetx, usize) -> bool) {
        while let Some(w) = self.recent_wire.front().copied()
            && old(&w, self.recent_wire.len())
        {
            self.recent_wire.pop_front();
            self.forget_wire(w);
        }
    }

    /// A wire segment the rules flagged as retransmitted (`retransmission`: true) or
    /// out-of-order. Releases a held kernel report it matches, and tells whether the kernel
    /// reported its range as retransmitted: an out-of-order segment is then a retransmission
    /// (its events are to be labelled so by the caller).
    pub fn on_wire_segment(&mut self, seg: WireSegment, retransmission: bool, out: &mut Vec<Event>) -> bool {
        let WireSegment { ts, src, seq, len, frame } = seg;
        let end = seq.wrapping_add(len.max(1));
        self.pop_wire_while(|w, n| n == MAX_PENDING || ts.saturating_sub(w.ts) > WIRE_KEPT_FOR);
        let mut confirmed = false;
        for k in self.kernel.iter_mut() {
            if k.src == src && (ts - k.ts).abs() <= MATCH_WINDOW && overlaps((k.seq, k.end), (seq, end)) {
                confirmed = true;
                if let Some(mut e) = k.report.take() {
                    e.extra.wire_frame = Some(frame);
                    self.counts.matched += 1;
                    self.counts.matched_segments += k.segments;
                    out.push(e);
                    break;
                }
            }
        }
        if retransmission || confirmed {
            self.counts.wire_retransmissions += 1;
        }
        if confirmed && !retransmission {
            self.counts.reclassified += 1;
        }
        let w = WireRetx { ts, src, seq, end, frame, retransmission: retransmission || confirmed, matched: confirmed };
        self.recent_wire.push_back(w);
        confirmed
    }

    /// The events of an out-of-order segment no kernel report confirmed yet: they wait for
    /// one until `MATCH_WINDOW` has passed (see [`Self::expire`]).
    pub fn hold_wire(&mut self, seg: WireSegment, events: Vec<Event>, out: &mut Vec<Event>) {
        let WireSegment { ts, src, seq, len, .. } = seg;
        if self.held_wire.len() == MAX_PENDING
            && let Some(h) = self.held_wire.pop_front()
        {
            // Released as they were: past the bound, the wire rules' word stands.
            out.extend(h.events);
        }
        self.held_wire.push_back(HeldWire { ts, src, seq, end: seq.wrapping_add(len.max(1)), events });
    }

    /// A kernel retransmission of `segments` segments: matched now if its wire copy was
    /// already seen, else held. Out-of-order wire segments waiting in its range become
    /// retransmissions, and their events go out before the report.
    pub fn on_kernel_retransmission(&mut self, mut e: Event, segments: u64, out: &mut Vec<Event>) -> Relabelled {
        let range = kernel_range(&e);
        let (ts, src) = (e.ts, (e.src, e.sport));
        if let Some(mss) = e.extra.mss {
            self.mss = mss.min(u16::MAX as u32) as u16;
        }
        self.counts.kernel_retransmitted_segments += segments;
        // Kernel reports of a flow come in time order: a wire copy older than the window
        // of this one can match no later report either.
        self.pop_wire_while(|w, _| ts.saturating_sub(w.ts) > MATCH_WINDOW);
        self.counts.retransmitted_segments += segments;
        let mut relabelled = Relabelled::default();
        let mut first_frame = None;
        let mut i = 0;
        while i < self.held_wire.len() {
            let h = &self.held_wire[i];
            if h.src == src && (h.ts - e.ts).abs() <= MATCH_WINDOW && overlaps(range, (h.seq, h.end)) {
                let h = self.held_wire.remove(i).expect("index in range");
                relabelled.packets += 1;
                relabelled.bytes += h.end.wrapping_sub(h.seq) as u64;
                self.counts.wire_retransmissions += 1;
                self.counts.reclassified += 1;
                for mut w in h.events {
                    if w.event == EventKind::OutOfOrder {
                        w.event = EventKind::Retransmission;
                        w.severity = crate::analysis::flag_severity(EventKind::Retransmission);
                        w.extra.wire_verdict = Some(EventKind::OutOfOrder);
                        first_frame = first_frame.or(w.frame);
                    }
                    out.push(w);
                }
            } else {
                i += 1;
            }
        }
        // Every wire copy in its range is accounted for by this report; the latest names it.
        let mut frame = first_frame;
        for w in self.recent_wire.iter_mut().rev() {
            if w.src == src && (w.ts - ts).abs() <= MATCH_WINDOW && overlaps(range, (w.seq, w.end)) {
                frame = frame.or(Some(w.frame));
                w.matched = true;
                w.retransmission = true;
            }
        }
        let report = match frame {
            Some(frame) => {
                e.extra.wire_frame = Some(frame);
                self.counts.matched += 1;
                self.counts.matched_segments += segments;
                out.push(e);
                None
            }
            None => Some(e),
        };
        if self.kernel.len() == MAX_PENDING
            && let Some(old) = self.kernel.pop_front()
        {
            self.release_unmatched(old, out);
        }
        self.kernel.push_back(KernelRetx { ts, src, seq: range.0, end: range.1, segments, report });
        relabelled
    }

    fn release_unmatched(&mut self, k: KernelRetx, out: &mut Vec<Event>) {
        out.extend(k.report);
    }

    /// Releases kernel reports whose window has passed on the wire's clock `wire_now`
    /// (unmatched), and out-of-order segments whose window has passed on `now`, the later
    /// of both clocks (their word stands).
    pub fn expire(&mut self, wire_now: TimestampNs, now: TimestampNs, out: &mut Vec<Event>) {
        while self.kernel.front().is_some_and(|k| wire_now.saturating_sub(k.ts) > MATCH_WINDOW) {
            let k = self.kernel.pop_front().expect("front checked");
            self.release_unmatched(k, out);
        }
        while self.held_wire.front().is_some_and(|h| now.saturating_sub(h.ts) > MATCH_WINDOW) {
            out.extend(self.held_wire.pop_front().expect("front checked").events);
        }
    }

    /// Everything still held (end of the flow).
    pub fn flush(&mut self, out: &mut Vec<Event>) {
        while let Some(k) = self.kernel.pop_front() {
            self.release_unmatched(k, out);
        }
        for h in self.held_wire.drain(..) {
            out.extend(h.events);
        }
        self.pop_wire_while(|_, _| true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventKind, Extra, Origin, Severity};

    fn ws(ts: TimestampNs, src: (IpAddr, u16), seq: u32, len: u32, frame: u64) -> WireSegment {
        WireSegment { ts, src, seq, len, frame }
    }

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
        s.on_kernel_retransmission(kev(100, 1000, 2448), 1, &mut out);
        assert!(out.is_empty(), "held until its wire copy or the window passes");
        s.on_wire_segment(ws(101_000_000, src, 1000, 1448, 42), true, &mut out);
        assert_eq!(out[0].extra.wire_frame, Some(42));
        // Wire first (a copy seen before the kernel record was read).
        s.on_wire_segment(ws(200_000_000, src, 5000, 1448, 50), true, &mut out);
        s.on_kernel_retransmission(kev(200, 5000, 6448), 1, &mut out);
        assert_eq!(out[1].extra.wire_frame, Some(50));
        // No copy: released unmatched after the window.
        s.on_kernel_retransmission(kev(300, 9000, 10448), 1, &mut out);
        s.expire(300_000_000 + MATCH_WINDOW + 1, 300_000_000 + MATCH_WINDOW + 1, &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(out[2].extra.wire_frame, None);
        // Another direction or a later time does not match.
        s.on_wire_segment(ws(400_000_000, ("10.0.0.2".parse().unwrap(), 80), 12000, 100, 60), true, &mut out);
        s.on_kernel_retransmission(kev(500, 12000, 12100), 1, &mut out);
        s.flush(&mut out);
        assert_eq!(out[3].extra.wire_frame, None);
        assert_eq!(s.counts.matched, 2);
    }

    /// A wire event of 10.0.0.1:5000 as the rules flagged it.
    fn wire_event(ts_ms: i64, kind: EventKind, seq: u32, frame: u64) -> Event {
        let mut e = kev(ts_ms, seq, seq + 1448);
        e.event = kind;
        e.origin = Origin::Wire;
        e.frame = Some(frame);
        e.extra = Extra::default();
        e
    }

    /// The kernel's verdict wins over the wire rules' `out_of_order`, whichever comes first;
    /// an out-of-order segment the kernel does not report keeps the rules' verdict.
    #[test]
    fn an_out_of_order_segment_the_kernel_resent_is_a_retransmission() {
        let src = ("10.0.0.1".parse().unwrap(), 5000);
        let mut s = KernelFlowState::default();
        let mut out = Vec::new();
        // Wire first: its events wait, then leave relabelled before the report.
        assert!(!s.on_wire_segment(ws(100_000_000, src, 1000, 1448, 7), false, &mut out));
        s.hold_wire(
            ws(100_000_000, src, 1000, 1448, 0),
            vec![wire_event(100, EventKind::OutOfOrder, 1000, 7)],
            &mut out,
        );
        s.expire(100_000_000, 110_000_000, &mut out);
        assert!(out.is_empty(), "held within the window");
        let mut report = kev(100, 1000, 2448);
        report.extra.segments = Some(1);
        report.extra.mss = Some(1448);
        let r = s.on_kernel_retransmission(report, 1, &mut out);
        assert_eq!(r, Relabelled { packets: 1, bytes: 1448 });
        assert_eq!((out[0].event, out[0].extra.wire_verdict), (EventKind::Retransmission, Some(EventKind::OutOfOrder)));
        assert_eq!(out[0].severity, Severity::Info);
        assert_eq!((out[1].event, out[1].extra.wire_frame), (EventKind::KernelRetransmit, Some(7)));
        // Kernel first: the segment is confirmed as it arrives.
        s.on_kernel_retransmission(kev(200, 5000, 6448), 1, &mut out);
        assert!(s.on_wire_segment(ws(200_100_000, src, 5000, 1448, 9), false, &mut out));
        assert_eq!(out[2].extra.wire_frame, Some(9));
        // Truly out of order: no report, the rules' verdict stands once the window passed.
        assert!(!s.on_wire_segment(ws(300_000_000, src, 9000, 1448, 11), false, &mut out));
        s.hold_wire(
            ws(300_000_000, src, 9000, 1448, 0),
            vec![wire_event(300, EventKind::OutOfOrder, 9000, 11)],
            &mut out,
        );
        s.expire(300_000_000, 300_000_000 + MATCH_WINDOW + 1, &mut out);
        assert_eq!((out[3].event, out[3].extra.wire_verdict), (EventKind::OutOfOrder, None));
        s.flush(&mut out);
        assert_eq!(out.len(), 4);
        let c = &s.counts;
        assert_eq!((c.reclassified, c.wire_retransmissions, c.retransmitted_segments), (2, 2, 2));
        assert_eq!((c.kernel_retransmitted_segments, c.matched_segments, c.matched), (2, 2, 2));
    }

    /// A GSO skb the kernel resent is several segments: one report confirms each of them,
    /// and the reconciled count adds the segments the wire did not show.
    #[test]
    fn one_report_confirms_every_segment_of_its_skb() {
        let src = ("10.0.0.1".parse().unwrap(), 5000);
        let mut s = KernelFlowState::default();
        let mut out = Vec::new();
        for i in 0..3u32 {
            let seq = 1000 + i * 1448;
            assert!(!s.on_wire_segment(ws(100_000_000, src, seq, 1448, 5 + i as u64), false, &mut out));
            s.hold_wire(
                ws(100_000_000, src, seq, 1448, 0),
                vec![wire_event(100, EventKind::OutOfOrder, seq, 5)],
                &mut out,
            );
        }
        let r = s.on_kernel_retransmission(kev(100, 1000, 1000 + 3 * 1448), 3, &mut out);
        assert_eq!(r.packets, 3);
        assert!(out[..3].iter().all(|e| e.event == EventKind::Retransmission));
        // A report the wire never showed: its 2 segments count all the same.
        s.on_kernel_retransmission(kev(150, 90_000, 90_000 + 2 * 1448), 2, &mut out);
        s.flush(&mut out);
        assert_eq!(out[4].extra.wire_frame, None);
        assert_eq!((s.counts.retransmitted_segments, s.counts.kernel_retransmitted_segments), (5, 5));
        assert_eq!((s.counts.matched, s.counts.matched_segments), (1, 3));
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
        s.on_wire_segment(ws(burst_ts(i), src, burst_seq(i), 1448, 10 + i as u64), true, out);
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
            s.on_kernel_retransmission(burst_report(i), 1, &mut out);
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
            s.on_kernel_retransmission(burst_report(i), 1, &mut out);
        }
        for i in 0..BURST {
            burst_wire_copy(&mut s, i, &mut out);
            s.expire(burst_ts(i), burst_ts(i), &mut out);
        }
        assert_eq!(out.len(), 400);
        assert_eq!(s.counts.matched, 400);
    }
}
