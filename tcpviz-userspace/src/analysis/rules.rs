//! Wireshark's TCP sequence analysis, rule for rule.
//!
//! This is a reimplementation of what tshark 4.0 does in `dissect_tcp()` and
//! `tcp_analyze_sequence_number()` (default preferences: analyze_sequence_numbers,
//! fastrt_supersedes_ooo, window scaling "not known" until a SYN shows it), so that every
//! flag can be checked against the tool network engineers already trust. The order of the
//! checks matters: some end the analysis of a packet early, exactly as in Wireshark.
//! `../shared/reference/wireshark-tcp-analysis.md` summarises the rules.
//!
//! tcpviz additions that do not change any flag: Karn-safe RTT samples, bytes in flight
//! computed from sequence numbers (Wireshark's `tcp_bif_seq_based` method, O(1) per packet),
//! and the bookkeeping the findings of `findings.rs` need. One addition does change flags,
//! and only in a live view that begins mid-connection (capture policy `troubled`, never for
//! a capture): [`note_sack_before_data`] and [`seed_from_sack`].

use crate::capture::decode::{Segment, TcpFlags};
use crate::flow::seq::{seq_gt, seq_le, seq_lt};
use crate::flow::state::{DirState, Flow, SackedBeforeData};
use crate::flow::unacked::{MAX_UNACKED_SEGMENTS, Unacked};
use crate::time::TimestampNs;

use super::flags::AnalysisFlags as A;

/// Time after the last ACK within which a retransmission of the ACKed sequence number
/// after two or more duplicate ACKs is a *fast* retransmission (Wireshark: 20 ms).
const FAST_RETRANSMISSION_WINDOW: TimestampNs = 20_000_000;
/// Out-of-order threshold when the handshake RTT is unknown (Wireshark: 3 ms).
const DEFAULT_OOO_THRESHOLD: TimestampNs = 3_000_000;

/// What the rules found for one packet.
#[derive(Debug, Clone, Copy, Default)]
pub struct PacketAnalysis {
    /// Frame number of the packet.
    pub frame: u64,
    pub flags: A,
    pub dupack_num: u32,
    pub dupack_frame: u64,
    /// For retransmissions: time since the eldest unacknowledged segment, and its frame.
    pub rto: Option<(TimestampNs, u64)>,
    pub bytes_in_flight: Option<u32>,
    /// An RTT sample this packet's ACK produced for the reverse direction.
    pub rtt_sample: Option<TimestampNs>,
    /// An RTT sample from the timestamp this packet echoes, for the reverse direction.
    pub ts_rtt_sample: Option<TimestampNs>,
    /// The packet's ACK moved the acknowledged point forward (or is the first ACK).
    pub ack_advanced: bool,
    /// This packet repeats the direction's highest ACK as a duplicate ACK in the sense of
    /// RFC 5681 (pure ACK, same number, same window), or with SACK blocks (RFC 6675): the
    /// count of such repeats since the ACK last moved. 0 when it is not one.
    pub repeat_ack_num: u32,
    /// `rev.lastack` before this packet, and how many duplicate ACKs (as above) the other
    /// side had sent for it.
    pub rev_lastack_before: u32,
    pub rev_repeat_acks_before: u32,
    /// Time since the other direction's last packet (None before it sent any).
    pub since_rev_packet: Option<TimestampNs>,
    /// This direction's highest sequence number before this packet (0: no data yet), how
    /// long ago it moved, and the flags of this direction's previous packet.
    pub nextseq_before: u32,
    pub since_new_data: Option<TimestampNs>,
    pub previous_flags: u32,
    /// A retransmission of data that had been retransmitted already.
    pub resent_again: bool,
    /// The kernel reported this segment as retransmitted where the wire rules said
    /// otherwise (`out_of_order`): their verdict, kept for comparison.
    pub wire_verdict: Option<crate::event::EventKind>,
}

/// Wireshark's conversation step before the sequence analysis: a SYN with a new initial
/// sequence number on a known conversation starts a new one ("reused ports").
pub enum ConversationCheck {
    Continue,
    /// Start a new conversation for this SYN; the old flow is finished.
    NewConversation,
}

/// Checks a SYN or SYN-ACK against the conversation (part of `dissect_tcp()`).
pub fn check_conversation(flow: &mut Flow, dir: usize, seg: &Segment, out: &mut PacketAnalysis) -> ConversationCheck {
    let f = seg.flags;
    let (fwd, _) = flow.dirs_mut(dir);
    if f.syn() && !f.ack() && fwd.base_seq_set {
        if seg.seq != fwd.base_seq {
            return ConversationCheck::NewConversation;
        }
        // A repeated SYN: restore nextseq, which an RST with seq == ack may have moved
        // (Wireshark issue 17616).
        fwd.nextseq = fwd.maxseqtobeacked;
    }
    if f.syn() && f.ack() && fwd.base_seq_set && seg.seq != fwd.base_seq {
        fwd.base_seq = seg.seq;
        out.flags.set(A::REUSED_PORTS);
    }
    ConversationCheck::Continue
}

/// Runs the analysis of one segment on its flow. `dir` is the segment's direction.
pub fn analyze(flow: &mut Flow, dir: usize, seg: &Segment, frame: u64, out: &mut PacketAnalysis) {
    let ts = seg.ts;
    let flags = seg.flags;
    let seq = seg.seq;
    let ack = seg.ack;
    {
        let (fwd, rev) = flow.dirs_mut(dir);
        // Base sequence numbers (relative numbering starts at 1 when the SYN is missing).
        if !fwd.base_seq_set {
            if flags.syn() {
                fwd.base_seq = seq;
                if flags.ack() {
                    fwd.saw_synack = true;
                } else {
                    fwd.saw_syn = true;
                }
            } else {
                fwd.base_seq = seq.wrapping_sub(1);
            }
            fwd.base_seq_set = true;
        }
        if !rev.base_seq_set && flags.ack() {
            rev.base_seq = ack.wrapping_sub(1);
            rev.base_seq_set = true;
        }
    }

    sequence_rules(flow, dir, seg, frame, out);

    // After the sequence analysis, dissect_tcp() handles SYN timing and the handshake RTT,
    // then the options (window scale, SACK), then validates window scaling on SYNs.
    let pure_ack = flags.ack() && !flags.syn();
    if flags.syn() && !flags.ack() {
        flow.ts_mru_syn = ts;
    }
    if pure_ack && flow.ts_mru_syn != 0 && flow.first_rtt == 0 {
        flow.first_rtt = ts - flow.ts_mru_syn;
    }
    let (fwd, _) = flow.dirs_mut(dir);
    if flags.syn() {
        fwd.is_first_ack = true;
    }
    if pure_ack {
        fwd.is_first_ack = false;
    }
    if let Some(ws) = seg.options.window_scale {
        fwd.win_scale = ws as i8;
    }
    fwd.set_sack(seg.options.sack);
    if flags.syn() {
        verify_window_scaling(flow, dir, flags.ack());
    }
}

/// Not a Wireshark rule; only for a wire view that begins in the middle of a connection
/// (see [`super::Analyzer::set_partial_wire_view`]). A SACK block's right edge is data the
/// other side has sent: when none of that side's data has been seen yet, the edge (and
/// when the SACK was seen) is kept for [`seed_from_sack`].
pub fn note_sack_before_data(flow: &mut Flow, dir: usize, seg: &Segment, frame: u64) {
    let (_, rev) = flow.dirs_mut(dir);
    if rev.nextseq != 0 {
        return;
    }
    let Some(right) = seg.options.sack.iter().map(|(_, right)| right).reduce(|a, b| if seq_gt(b, a) { b } else { a })
    else {
        return;
    };
    let r = rev.rare_mut();
    if r.sacked_before_data.is_none_or(|s| seq_gt(right, s.edge)) {
        r.sacked_before_data = Some(SackedBeforeData { edge: right, ts: seg.ts, frame });
    }
}

/// The first data segment of a direction that a SACK showed sending before the view began:
/// if it lies below the SACK's edge, it repeats data sent before, and the direction's
/// highest sequence number starts at the edge, as if that data had been seen when the SACK
/// was, so that the rules call it out. One above the edge is new data and starts the
/// direction as usual (not a gap: the view simply began later).
pub fn seed_from_sack(flow: &mut Flow, dir: usize, seg: &Segment) {
    let fwd = &mut flow.dirs[dir];
    if fwd.nextseq != 0 || seg.payload_len == 0 {
        return;
    }
    let Some(sacked) = fwd.rare.as_mut().and_then(|r| r.sacked_before_data.take()) else { return };
    if seq_lt(seg.seq, sacked.edge) {
        fwd.nextseq = sacked.edge;
        fwd.nextseqtime = sacked.ts;
        fwd.nextseqframe = sacked.frame;
    }
}

/// `verify_tcp_window_scaling()`: scaling is used only if both SYN and SYN-ACK offer it.
fn verify_window_scaling(flow: &mut Flow, dir: usize, is_synack: bool) {
    let (fwd, rev) = flow.dirs_mut(dir);
    if fwd.win_scale == -1 {
        fwd.win_scale = -2;
        rev.win_scale = -2;
    } else if is_synack && rev.win_scale == -2 {
        fwd.win_scale = -2;
    }
}

/// `tcp_analyze_sequence_number()`.
fn sequence_rules(flow: &mut Flow, dir: usize, seg: &Segment, frame: u64, out: &mut PacketAnalysis) {
    let ts = seg.ts;
    let flags = seg.flags;
    let seq = seg.seq;
    let ack = seg.ack;
    let seglen = seg.payload_len;
    let window = seg.window as u32;
    let syn_fin_rst = flags.has(TcpFlags::SYN | TcpFlags::FIN | TcpFlags::RST);
    let first_rtt = flow.first_rtt;
    let (fwd, rev) = flow.dirs_mut(dir);
    let a = &mut out.flags;

    out.rev_lastack_before = rev.lastack;
    out.rev_repeat_acks_before = rev.repeat_acks;
    out.since_rev_packet = (rev.lastacktime != 0).then(|| ts - rev.lastacktime);
    out.nextseq_before = fwd.nextseq;
    out.since_new_data = (fwd.nextseq != 0).then(|| ts - fwd.nextseqtime);
    out.previous_flags = fwd.lastsegmentflags;

    if flags.ack() {
        rev.valid_bif = true;
    }

    'fwd: {
        // ZERO WINDOW PROBE: one byte at the next expected sequence number into a zero window.
        if seglen == 1 && seq == fwd.nextseq && rev.window == 0 {
            a.set(A::ZERO_WINDOW_PROBE);
            break 'fwd;
        }
        // ZERO WINDOW
        if window == 0 && !syn_fin_rst {
            a.set(A::ZERO_WINDOW);
        }
        // LOST PACKET: a gap before this segment ("previous segment not captured").
        if fwd.nextseq != 0 && seq_gt(seq, fwd.nextseq) && !flags.rst() {
            a.set(A::LOST_PACKET);
            fwd.valid_bif = false;
        }
        // KEEP ALIVE: 0 or 1 byte, one before the next expected sequence number.
        if (seglen == 0 || seglen == 1) && seq == fwd.nextseq.wrapping_sub(1) && !syn_fin_rst {
            a.set(A::KEEP_ALIVE);
        }
        // WINDOW UPDATE
        if seglen == 0
            && window != 0
            && window != fwd.window
            && seq == fwd.nextseq
            && ack == fwd.lastack
            && !syn_fin_rst
        {
            a.set(A::WINDOW_UPDATE);
        }
        // WINDOW FULL: the segment fills the receiver's window exactly.
        if seglen > 0 && rev.win_scale != -1 && !syn_fin_rst {
            let shift = if rev.is_first_ack || rev.win_scale == -2 { 0 } else { rev.win_scale as u32 };
            let edge = rev.lastack.wrapping_add(rev.window.wrapping_shl(shift));
            if seq.wrapping_add(seglen) == edge {
                a.set(A::WINDOW_FULL);
            }
        }
        let repeats_last_ack =
            seglen == 0 && window == fwd.window && seq == fwd.nextseq && ack == fwd.lastack && !syn_fin_rst;
        // KEEP ALIVE ACK
        if repeats_last_ack && window != 0 && rev.lastsegmentflags & A::KEEP_ALIVE != 0 {
            a.set(A::KEEP_ALIVE_ACK);
            break 'fwd;
        }
        // ZERO WINDOW PROBE ACK
        if repeats_last_ack && window == 0 && rev.lastsegmentflags & A::ZERO_WINDOW_PROBE != 0 {
            a.set(A::ZERO_WINDOW_PROBE_ACK);
            break 'fwd;
        }
        // DUPLICATE ACK
        if repeats_last_ack && window != 0 {
            fwd.dupacknum = if fwd.dupacknum == -1 { 1 } else { fwd.dupacknum + 1 };
            a.set(A::DUPLICATE_ACK);
            out.dupack_num = fwd.dupacknum as u32;
            out.dupack_frame = fwd.lastnondupack;
        }
    }

    // finished_fwd: a new ACK number resets the duplicate-ACK run.
    if ack != fwd.lastack {
        fwd.lastnondupack = frame;
        fwd.dupacknum = 0;
    }

    // ACKED LOST PACKET: the ACK covers data never seen in the other direction.
    if rev.maxseqtobeacked != 0 && seq_gt(ack, rev.maxseqtobeacked) && flags.ack() {
        if seq_lt(rev.maxseqtobeacked, rev.nextseq) {
            rev.maxseqtobeacked = rev.nextseq;
            a.set(A::ACK_LOST_PACKET);
        } else {
            if rev.dupacknum == 0 {
                a.set(A::ACK_LOST_PACKET);
            }
            rev.dupacknum = -1;
        }
    }

    // RETRANSMISSION / FAST RETRANSMISSION / SPURIOUS / OUT-OF-ORDER
    let syn_or_fin = flags.has(TcpFlags::SYN | TcpFlags::FIN);
    'retrans: {
        if !(seglen > 0 || syn_or_fin) {
            break 'retrans;
        }
        let mut seq_not_advanced = fwd.nextseq != 0 && seq_lt(seq, fwd.nextseq);
        if a.has(A::KEEP_ALIVE) {
            break 'retrans;
        }
        // One byte less than nextseq with new data after it (after a zero-window probe).
        if seglen > 1 && fwd.nextseq.wrapping_sub(1) == seq {
            seq_not_advanced = false;
        }
        // SPURIOUS: all of it was already acknowledged.
        if seglen > 0 && rev.lastack != 0 && seq_le(seq.wrapping_add(seglen), rev.lastack) {
            a.set(A::SPURIOUS_RETRANSMISSION);
            break 'retrans;
        }
        // FAST RETRANSMISSION (checked before out-of-order: fastrt_supersedes_ooo).
        let since_rev_ack = elapsed(ts, rev.lastacktime);
        if seq_not_advanced
            && rev.dupacknum >= 2
            && rev.lastack == seq
            && since_rev_ack.is_some_and(|t| t < FAST_RETRANSMISSION_WINDOW)
        {
            a.set(A::FAST_RETRANSMISSION);
            break 'retrans;
        }
        // OUT-OF-ORDER: soon after the highest segment, and not a copy of it.
        let ooo_threshold = if first_rtt == 0 { DEFAULT_OOO_THRESHOLD } else { first_rtt };
        let since_nextseq = elapsed(ts, fwd.nextseqtime);
        let end = seq.wrapping_add(seglen).wrapping_add(syn_or_fin as u32);
        if seq_not_advanced && since_nextseq.is_some_and(|t| t < ooo_threshold) && fwd.nextseq != end {
            a.set(A::OUT_OF_ORDER);
            break 'retrans;
        }
        if seq_not_advanced {
            a.set(A::RETRANSMISSION);
            // Time since the eldest unacknowledged segment (or the highest one sent).
            out.rto = Some(match fwd.unacked.eldest() {
                Some(u) => (ts - u.ts, u.frame),
                None => (ts - fwd.nextseqtime, fwd.nextseqframe),
            });
        }
    }

    let is_retransmission = a.has(A::RETRANSMISSION | A::FAST_RETRANSMISSION | A::SPURIOUS_RETRANSMISSION);
    let mut nextseq = seq.wrapping_add(seglen);
    if (seglen > 0 || syn_or_fin) && fwd.unacked.len() < MAX_UNACKED_SEGMENTS {
        if syn_or_fin {
            nextseq = nextseq.wrapping_add(1);
        }
        if is_retransmission {
            out.resent_again = fwd.unacked.mark_retransmitted(seq, nextseq);
        }
        fwd.unacked.insert(Unacked { seq, nextseq, ts, frame, retransmitted: is_retransmission });
    }
    // Highest sequence number seen; zero-window probes do not advance it.
    let zwp = a.has(A::ZERO_WINDOW_PROBE);
    if (seq_gt(nextseq, fwd.nextseq) || fwd.nextseq == 0) && !zwp {
        fwd.nextseq = nextseq;
        fwd.nextseqframe = frame;
        fwd.nextseqtime = ts;
    }
    // Highest contiguous sequence number, for ACKED LOST PACKET.
    if (seq == fwd.maxseqtobeacked || fwd.maxseqtobeacked == 0) && !zwp {
        fwd.maxseqtobeacked = fwd.nextseq;
    }

    // tcpviz's own ACK bookkeeping (Wireshark's lastack also takes the ack field of
    // packets without the ACK flag, such as a SYN's zero).
    if flags.ack() {
        match fwd.highest_ack() {
            Some(h) if !seq_gt(ack, h) => {
                // An ACK answering a keep-alive or a zero-window probe, or closing the
                // window, says nothing about loss.
                // A duplicate ACK sits at the sender's next sequence number (a probe sits one
                // before it).
                let pure = seglen == 0 && !syn_or_fin && !flags.rst() && window != 0 && seq == fwd.nextseq;
                let answers_probe = rev.lastsegmentflags & (A::KEEP_ALIVE | A::ZERO_WINDOW_PROBE) != 0;
                if pure && !answers_probe && ack == h && (window == fwd.window || seg.options.sack.len > 0) {
                    fwd.repeat_acks += 1;
                    out.repeat_ack_num = fwd.repeat_acks;
                }
            }
            _ => {
                out.ack_advanced = true;
                fwd.set_highest_ack(ack);
                fwd.repeat_acks = 0;
            }
        }
    }
    fwd.window = window;
    fwd.lastack = ack;
    fwd.lastacktime = ts;
    fwd.lastsegmentflags = a.0;

    // Remove what this ACK acknowledges; an exact match of a segment sent once is an RTT
    // sample (Karn's rule: never from retransmitted data).
    let acked = rev.unacked.ack(ack);
    if flags.ack()
        && out.ack_advanced
        && let Some(u) = acked.exact
        && !acked.exact_retransmitted
    {
        out.rtt_sample = Some(ts - u.ts);
    }

    // Bytes in flight after this segment (sequence-number method), minus what the other
    // side has SACKed.
    if seglen != 0 && fwd.valid_bif {
        let mut in_flight = fwd.nextseq.wrapping_sub(rev.lastack);
        if rev.lastack == 0 {
            in_flight = 0;
        }
        let sacked: u32 = rev.sack().iter().map(|(l, r)| r.wrapping_sub(l)).fold(0u32, u32::wrapping_add);
        in_flight = in_flight.wrapping_sub(sacked);
        if in_flight > 0 && in_flight < 2_000_000_000 {
            out.bytes_in_flight = Some(in_flight - syn_or_fin as u32);
        }
    }
}

/// `now - then` when it is not negative (Wireshark computes it unsigned, so a timestamp
/// going backwards never satisfies a "within" test).
fn elapsed(now: TimestampNs, then: TimestampNs) -> Option<TimestampNs> {
    let d = now - then;
    (d >= 0).then_some(d)
}

/// Relative sequence number as Wireshark displays it.
pub fn relative(value: u32, dir: &DirState) -> u32 {
    value.wrapping_sub(dir.base_seq)
}
