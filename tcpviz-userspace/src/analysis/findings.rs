//! tcpviz's higher-level findings on top of Wireshark's flags: inferred loss, handshake
//! and teardown anomalies. Each carries a reason and a severity.
//!
//! - `loss_infer`:
//!   - `triple_duplicate_ack` (WARNING): the third duplicate ACK of a run; the receiver is
//!     missing the segment the ACKs name. Duplicate ACKs are counted as TCP counts them: a
//!     pure ACK repeating the highest ACK with the same window (RFC 5681) or with SACK
//!     blocks (RFC 6675), so a receiver whose window grows while it waits still counts.
//!   - `retransmission_timeout` (WARNING, CRITICAL from the second attempt): a retransmission
//!     of the oldest unacknowledged data (it covers the receiver's last ACK) with no duplicate
//!     ACKs before it (or, after them, of data resent already: a failed fast retransmission)
//!     and after a quiet time of at least max(2 x SRTT, 10 ms) since the receiver's last
//!     packet, so the sender's retransmission timer fired rather than a partial ACK of an
//!     ongoing recovery. One per timer expiry, not one per segment resent after it. A
//!     tail-loss probe is not a timeout: see `tail_loss_probe`.
//!   - `ack_stall` (WARNING, CRITICAL from 3 s): data in flight and no ACK progress for
//!     max(1 s, 4 x SRTT), with the receive window open and no timer retransmission in that
//!     time (a stall explained by a timeout is reported as the timeout).
//! - `tail_loss_probe` (INFO): the sender's probe timer (RFC 8985, Linux's TLP) fired on a
//!   tail that no ACK answered. A data segment that either carries the next new data
//!   (`probe_new_data`) or repeats the highest segment sent (`probe_last_segment`), when
//!   - data was outstanding and the other side had acknowledged some of it; the segment is
//!     no zero-window probe or keep-alive (other timers);
//!   - nothing hinted at loss before: no duplicate ACK of the current ACK, no SACK block on
//!     the other side's last packet, and this direction's previous packet was no
//!     retransmission (a sender in recovery does not probe);
//!   - the quiet time since the later of the newest data and the other side's last packet is
//!     at least max(2 x the least RTT, 1 ms) (Linux 6 waits 2 x SRTT + 2 ms, RFC 8985
//!     2 x SRTT; the smoothed RTT of the wire's ACKs is no guide, as an ACK held back by a
//!     hole gives a sample of the whole repair, which the kernel's SACK-aware estimate never
//!     takes; the floor keeps a scheduling hiccup inside a burst from counting); with a
//!     single segment outstanding, 200 ms + the least RTT (RFC 8985 adds the worst-case
//!     delayed ACK, 200 ms, to 2 x SRTT; Linux waits for its RTO, at least 200 ms + SRTT): a
//!     receiver delaying its ACK of a lone request is not a lost tail;
//!   - this direction sent no probe since the other side's ACK last moved (a sender probes
//!     once per flight; a second silence is its retransmission timeout);
//!   - new data comes no later than twice that wait + 10 ms: a pacing sender (BBR, fq)
//!     or the application may send new data after any silence, and a probe timer would have
//!     fired long before. A repeat of the highest segment has no such bound.
//!
//!   With a single segment outstanding, the first timer repeat of it is the probe and the
//!   second the timeout, as Linux sends them.
//! - `handshake_anomaly`: `syn_retransmitted`, `syn_ack_retransmitted` (WARNING) per repeat;
//!   at the end of a flow `no_syn_ack` (CRITICAL: no answer at all for at least 1 s) or
//!   `no_final_ack` (WARNING).
//! - `teardown_anomaly` on every RST: `connection_refused` (WARNING: answers a SYN),
//!   `reset_with_data_in_flight` (WARNING), `reset` (WARNING: before any FIN),
//!   `reset_after_fin` (INFO).

use crate::capture::decode::Segment;
use crate::event::{EventKind, Reason, Severity};
use crate::flow::seq::{seq_gt, seq_le, seq_lt};
use crate::flow::state::Flow;
use crate::time::{NS_PER_SEC, TimestampNs};

use super::flags::AnalysisFlags as A;
use super::rules::PacketAnalysis;

const MIN_STALL: TimestampNs = NS_PER_SEC;
/// The shortest quiet time before a timer-driven retransmission: Linux's tail-loss probe
/// fires after max(2 x SRTT, 10 ms), its RTO after at least 200 ms. A retransmission sooner
/// after the other side's last packet answers that packet (a partial ACK in recovery).
const TIMER_FLOOR: TimestampNs = 10_000_000;
const CRITICAL_STALL: TimestampNs = 3 * NS_PER_SEC;
/// The shortest quiet time before a tail-loss probe, and what a single outstanding segment
/// adds to it (see the module documentation).
const PROBE_FLOOR: TimestampNs = 1_000_000;
const PROBE_LONE_SEGMENT_WAIT: TimestampNs = 200_000_000;
/// New data later than twice the wait and this is no probe (see the module documentation).
const PROBE_NEW_DATA_SLACK: TimestampNs = 10_000_000;
/// How long an unanswered SYN must have waited before it counts as never answered.
const HANDSHAKE_GRACE: TimestampNs = NS_PER_SEC;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Finding {
    pub kind: EventKind,
    pub severity: Severity,
    pub reason: Reason,
    pub attempt: Option<u32>,
    pub stall_ns: Option<TimestampNs>,
}

impl Finding {
    fn new(kind: EventKind, severity: Severity, reason: Reason) -> Finding {
        Finding { kind, severity, reason, attempt: None, stall_ns: None }
    }
}

/// Findings for one packet, after the rules ran. Updates the lifecycle bookkeeping.
pub fn packet_findings(flow: &mut Flow, dir: usize, seg: &Segment, pa: &PacketAnalysis, out: &mut Vec<Finding>) {
    let flags = seg.flags;
    let ts = seg.ts;
    let fl = pa.flags;
    let retransmitted = fl.has(A::RETRANSMISSION | A::FAST_RETRANSMISSION | A::SPURIOUS_RETRANSMISSION);

    // Handshake.
    if flags.syn() && !flags.ack() {
        let lc = &mut flow.lifecycle;
        if lc.client_dir.is_none() {
            lc.client_dir = Some(dir as u8);
            lc.first_syn_ts = crate::time::MaybeTs::some(ts);
        }
        lc.syns += 1;
        lc.last_syn_frame = pa.frame;
        if retransmitted {
            let mut f = Finding::new(EventKind::HandshakeAnomaly, Severity::Warning, Reason::SynRetransmitted);
            f.attempt = Some(lc.syns);
            out.push(f);
        }
    } else if flags.syn() && flags.ack() {
        let lc = &mut flow.lifecycle;
        lc.synacks += 1;
        lc.last_synack_frame = pa.frame;
        lc.last_synack_ts = ts;
        if retransmitted {
            let mut f = Finding::new(EventKind::HandshakeAnomaly, Severity::Warning, Reason::SynAckRetransmitted);
            f.attempt = Some(lc.synacks);
            out.push(f);
        }
    } else if flags.ack() && !flags.rst() {
        let lc = &mut flow.lifecycle;
        match lc.client_dir {
            Some(c) if c as usize == dir && lc.synacks > 0 => lc.established = true,
            None => lc.established = true,
            _ => {}
        }
    }

    // Teardown.
    if flags.fin() {
        flow.dirs[dir].fin_seen = true;
    }
    if flags.rst() {
        let lc = &flow.lifecycle;
        let reason = if !lc.established && lc.syns > 0 && lc.client_dir != Some(dir as u8) {
            Reason::ConnectionRefused
        } else if flow.dirs[0].fin_seen || flow.dirs[1].fin_seen {
            Reason::ResetAfterFin
        } else if data_in_flight(flow) {
            Reason::ResetWithDataInFlight
        } else {
            Reason::Reset
        };
        let severity = if reason == Reason::ResetAfterFin { Severity::Info } else { Severity::Warning };
        flow.lifecycle.rst_seen = true;
        flow.lifecycle.refused |= reason == Reason::ConnectionRefused;
        out.push(Finding::new(EventKind::TeardownAnomaly, severity, reason));
    }

    // Loss inferred from duplicate ACKs.
    if pa.repeat_ack_num == 3 {
        out.push(Finding::new(EventKind::LossInfer, Severity::Warning, Reason::TripleDuplicateAck));
    }

    let (fwd, rev) = flow.dirs_mut(dir);
    let seglen = seg.payload_len;
    if seg.window == 0 && !flags.syn() && !flags.fin() && !flags.rst() {
        fwd.rare_mut().last_zero_window = Some(ts);
    }

    let una = pa.rev_lastack_before;
    let least_rtt = (fwd.stats.rtt.count > 0).then_some(fwd.stats.rtt.min_ns);
    let probe = if rev.sack().len == 0 {
        tail_loss_probe(seg, pa, least_rtt, fwd.rare.as_ref().and_then(|r| r.probe_at_ack))
    } else {
        None
    };
    if let Some(reason) = probe {
        fwd.rare_mut().probe_at_ack = Some(una);
        let mut f = Finding::new(EventKind::TailLossProbe, Severity::Info, reason);
        f.stall_ns = pa.since_new_data.min(pa.since_rev_packet);
        out.push(f);
    }

    // Loss inferred from a timer retransmission of the head of the unacknowledged data.
    if probe.is_none()
        && fl.has(A::RETRANSMISSION)
        && seglen > 0
        && !flags.syn()
        && una != 0
        && seq_le(seg.seq, una)
        && seq_lt(una, seg.seq.wrapping_add(seglen))
        // Duplicate ACKs before it mean a fast retransmission, unless this repeats data
        // already resent: then the fast retransmission failed and the timer fired.
        && (pa.rev_repeat_acks_before == 0 || pa.resent_again)
        && pa.since_rev_packet.is_some_and(|quiet| quiet >= timer_floor(fwd.stats.rtt.srtt_ns()))
        // The copy must also come that long after the original (a capture's duplicated
        // frames are "retransmissions" sent at once).
        && pa.rto.is_some_and(|(age, _)| age >= timer_floor(fwd.stats.rtt.srtt_ns()))
    {
        let r = fwd.rare_mut();
        r.timer_attempts =
            if r.timer_head_seq == una && r.last_timer_retransmission.is_some() { r.timer_attempts + 1 } else { 1 };
        r.timer_head_seq = una;
        r.last_timer_retransmission = Some(ts);
        let severity = if r.timer_attempts >= 2 { Severity::Critical } else { Severity::Warning };
        let mut f = Finding::new(EventKind::LossInfer, severity, Reason::RetransmissionTimeout);
        f.attempt = Some(r.timer_attempts);
        out.push(f);
    }

    // Data sent with nothing outstanding starts the clock of an ack stall, unless the other
    // side had already acknowledged it (a late copy).
    let end = seg.seq.wrapping_add(seglen).wrapping_add((flags.syn() || flags.fin()) as u32);
    let unacked = rev.highest_ack().is_none_or(|h| seq_gt(end, h));
    if (seglen > 0 || flags.syn() || flags.fin()) && unacked && fwd.outstanding_since.is_none() {
        fwd.outstanding_since = crate::time::MaybeTs::some(ts);
    }

    // An ACK that moves forward ends a stall of the other direction's data.
    if pa.ack_advanced {
        if let Some(since) = rev.outstanding_since.get() {
            let stall = ts - since;
            let srtt = rev.stats.rtt.srtt_ns().unwrap_or(0);
            let threshold = MIN_STALL.max(4 * srtt);
            let explained = rev.last_timer_retransmission().is_some_and(|t| t >= since);
            // A receiver that closed its window during the wait explains it (and is
            // reported as zero_window).
            let window_closed = fwd.last_zero_window().is_some_and(|t| t >= since);
            if stall >= threshold && !explained && !window_closed {
                let severity = if stall >= CRITICAL_STALL { Severity::Critical } else { Severity::Warning };
                let mut f = Finding::new(EventKind::LossInfer, severity, Reason::AckStall);
                f.stall_ns = Some(stall);
                out.push(f);
            }
        }
        rev.outstanding_since = if rev.nextseq != 0 && seq_lt(seg.ack, rev.nextseq) {
            crate::time::MaybeTs::some(ts)
        } else {
            crate::time::MaybeTs::NONE
        };
    }
}

/// Is this segment a tail-loss probe (see the module documentation), and of which kind?
fn tail_loss_probe(
    seg: &Segment,
    pa: &PacketAnalysis,
    least_rtt: Option<TimestampNs>,
    probe_at_ack: Option<u32>,
) -> Option<Reason> {
    let flags = seg.flags;
    let (una, highest) = (pa.rev_lastack_before, pa.nextseq_before);
    if seg.payload_len == 0 || flags.syn() || flags.rst() || una == 0 || highest == 0 || !seq_lt(una, highest) {
        return None;
    }
    let resent = A::RETRANSMISSION | A::FAST_RETRANSMISSION | A::SPURIOUS_RETRANSMISSION;
    // A zero-window probe or a keep-alive is another timer's segment.
    let other_timer = pa.flags.has(A::ZERO_WINDOW_PROBE | A::KEEP_ALIVE);
    if pa.rev_repeat_acks_before != 0 || pa.previous_flags & resent != 0 || probe_at_ack == Some(una) || other_timer {
        return None;
    }
    let quiet = pa.since_new_data?.min(pa.since_rev_packet?);
    let least_rtt = least_rtt.unwrap_or(0);
    // One segment's worth outstanding (this segment's size standing in for the MSS)?
    let wait = if highest.wrapping_sub(una) <= seg.payload_len {
        PROBE_LONE_SEGMENT_WAIT + least_rtt
    } else {
        PROBE_FLOOR.max(2 * least_rtt)
    };
    if quiet < wait {
        return None;
    }
    let end = seg.seq.wrapping_add(seg.payload_len).wrapping_add(flags.fin() as u32);
    if seg.seq == highest {
        (quiet <= 2 * wait + PROBE_NEW_DATA_SLACK).then_some(Reason::ProbeNewData)
    } else if end == highest && seq_lt(una, end) {
        Some(Reason::ProbeLastSegment)
    } else {
        None
    }
}

fn timer_floor(srtt: Option<TimestampNs>) -> TimestampNs {
    TIMER_FLOOR.max(2 * srtt.unwrap_or(0))
}

fn data_in_flight(flow: &Flow) -> bool {
    (0..2).any(|d| {
        let (snd, rcv) = (&flow.dirs[d], &flow.dirs[1 - d]);
        snd.nextseq != 0 && rcv.highest_ack().is_some_and(|a| seq_gt(snd.nextseq, a))
    })
}

/// Findings when a flow ends (end of input, idle, evicted, or its ports reused).
/// `now` is the latest packet time seen anywhere.
pub fn end_findings(flow: &Flow, now: TimestampNs) -> Option<Finding> {
    let lc = &flow.lifecycle;
    let first_syn = lc.first_syn_ts.get()?;
    if lc.rst_seen {
        return None;
    }
    if lc.synacks == 0 {
        // Still inside the first retransmission timeout: too early to call.
        if now - first_syn < HANDSHAKE_GRACE {
            return None;
        }
        let mut f = Finding::new(EventKind::HandshakeAnomaly, Severity::Critical, Reason::NoSynAck);
        f.attempt = Some(lc.syns);
        return Some(f);
    }
    if !lc.established && now - flow.last_ts >= HANDSHAKE_GRACE {
        return Some(Finding::new(EventKind::HandshakeAnomaly, Severity::Warning, Reason::NoFinalAck));
    }
    None
}
