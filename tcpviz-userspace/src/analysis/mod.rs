//! The analyzer: per-segment rules on per-connection state, producing events.
pub mod findings;
pub mod flags;
pub mod rules;

use std::sync::Arc;

use crate::capture::decode::{Segment, TcpFlags};
use crate::capture::frame::TimestampNs;
use crate::event::{Event, EventKind, Extra, Origin, Severity};
use crate::flow::state::Flow;
use crate::flow::table::{FlowLimits, FlowTable, Retirement};

use findings::Finding;
use flags::AnalysisFlags as A;
use rules::{ConversationCheck, PacketAnalysis};

/// Where a packet came from, for the `frame` and `file` of its events.
#[derive(Debug, Clone, Copy, Default)]
pub struct PacketRef {
    /// 1-based packet number in its file.
    pub frame: u64,
    /// Index into the analyzer's file names.
    pub file_index: u16,
}

/// Severity of each Wireshark flag, from its expert-info level (note/chat: INFO, warn:
/// WARNING).
pub fn flag_severity(kind: EventKind) -> Severity {
    match kind {
        EventKind::OutOfOrder
        | EventKind::LostSegment
        | EventKind::AckLostSegment
        | EventKind::ZeroWindow
        | EventKind::WindowFull => Severity::Warning,
        _ => Severity::Info,
    }
}

/// Runs the analysis over segments in capture order.
pub struct Analyzer {
    table: FlowTable,
    files: Vec<Arc<str>>,
    /// Flows that ended, for the summary. Drained by the caller.
    retired: Vec<(Flow, Retirement)>,
    findings: Vec<Finding>,
    now: TimestampNs,
    segments: u64,
}

impl Analyzer {
    pub fn new(limits: FlowLimits) -> Analyzer {
        Analyzer {
            table: FlowTable::new(limits),
            files: Vec::new(),
            retired: Vec::new(),
            findings: Vec::new(),
            now: TimestampNs::MIN,
            segments: 0,
        }
    }

    /// Registers an input file; events name it when there is more than one.
    pub fn add_file(&mut self, name: &str) -> u16 {
        self.files.push(Arc::from(name));
        (self.files.len() - 1) as u16
    }

    pub fn flows_active(&self) -> usize {
        self.table.len()
    }

    pub fn flows_created(&self) -> u64 {
        self.table.flows_created()
    }

    pub fn evictions(&self) -> crate::flow::table::EvictionCounts {
        self.table.evicted
    }

    pub fn segments(&self) -> u64 {
        self.segments
    }

    pub fn active_flows(&self) -> impl Iterator<Item = &Flow> {
        self.table.iter()
    }

    /// Flows that ended since the last call.
    pub fn take_retired(&mut self) -> std::vec::Drain<'_, (Flow, Retirement)> {
        self.retired.drain(..)
    }

    fn file_name(&self, index: u16) -> Option<Arc<str>> {
        if self.files.len() > 1 { self.files.get(index as usize).cloned() } else { None }
    }

    /// Analyses one segment, appending its events to `events`.
    pub fn process(&mut self, seg: &Segment, at: PacketRef, events: &mut Vec<Event>) {
        self.process_observed(seg, at, events, |_, _, _| {});
    }

    /// [`process`](Self::process), then `observe(flow, dir, analysis)` with the segment's
    /// flow after the rules ran (its events already appended). The report uses it to draw
    /// per-packet series (sequence numbers, bytes in flight, RTT samples) that the events,
    /// which only name flagged packets, do not carry.
    pub fn process_observed(
        &mut self,
        seg: &Segment,
        at: PacketRef,
        events: &mut Vec<Event>,
        mut observe: impl FnMut(&Flow, usize, &PacketAnalysis),
    ) {
        self.segments += 1;
        if seg.ts > self.now {
            self.now = seg.ts;
        }
        let now = self.now;
        {
            let Analyzer { table, retired, files, .. } = self;
            table.advance(seg.ts, &mut |flow, why| {
                push_end_findings(&flow, now, files, events);
                retired.push((flow, why));
            });
        }

        let mut pa = PacketAnalysis { frame: at.frame, ..Default::default() };
        let (flow, dir) = self.table.get_or_create(seg);
        if let ConversationCheck::NewConversation = rules::check_conversation(flow, dir, seg, &mut pa) {
            if let Some(old) = self.table.restart(seg) {
                push_end_findings(&old, now, &self.files, events);
                self.retired.push((old, Retirement::Reused));
            }
            pa.flags.set(A::REUSED_PORTS);
        }
        let (flow, dir) = self.table.get_or_create(seg);
        flow.file_index = at.file_index;
        if seg.ts > flow.last_ts {
            flow.last_ts = seg.ts;
        }
        rules::analyze(flow, dir, seg, at.frame, &mut pa);

        let retransmitted = pa.flags.has(A::RETRANSMISSION | A::FAST_RETRANSMISSION | A::SPURIOUS_RETRANSMISSION);
        {
            let (fwd, rev) = flow.dirs_mut(dir);
            let st = &mut fwd.stats;
            st.packets += 1;
            st.payload_bytes += seg.payload_len as u64;
            if retransmitted {
                st.retransmitted_bytes += seg.payload_len as u64;
            }
            if let Some(b) = pa.bytes_in_flight {
                st.max_bytes_in_flight = st.max_bytes_in_flight.max(b);
            }
            if let Some(rtt) = pa.rtt_sample {
                rev.stats.rtt.add(rtt);
            }
        }

        self.findings.clear();
        findings::packet_findings(flow, dir, seg, &pa, &mut self.findings);
        if pa.flags.is_empty() && self.findings.is_empty() {
            observe(flow, dir, &pa);
            return;
        }

        let extra = packet_extra(flow, dir, seg, &pa);
        let file = if self.files.len() > 1 { self.files.get(at.file_index as usize).cloned() } else { None };
        let flags = seg.flags.letters();
        let mut emit = |kind: EventKind, severity: Severity, extra: Extra, flow: &mut Flow| {
            flow.dirs[dir].stats.events[kind.index()] += 1;
            events.push(Event {
                ts: seg.ts,
                event: kind,
                flow_id: flow.id,
                src: seg.src,
                dst: seg.dst,
                sport: seg.sport,
                dport: seg.dport,
                seq: seg.seq,
                ack: seg.ack,
                len: seg.payload_len,
                flags: flags.clone(),
                severity,
                extra,
                origin: Origin::Wire,
                frame: Some(at.frame),
                file: file.clone(),
            });
        };
        for (bit, kind) in A::EVENTS {
            if !pa.flags.has(bit) {
                continue;
            }
            let mut x = extra.clone();
            match kind {
                EventKind::DuplicateAck => {
                    x.dupack_num = Some(pa.dupack_num);
                    x.dupack_frame = Some(pa.dupack_frame);
                }
                k if k.is_retransmission() => {
                    if let Some((rto, rto_frame)) = pa.rto {
                        x.rto_ms = Some(ms(rto));
                        x.rto_frame = Some(rto_frame);
                    }
                }
                _ => {}
            }
            emit(kind, flag_severity(kind), x, flow);
        }
        for f in &self.findings {
            let mut x = extra.clone();
            x.reason = Some(f.reason);
            x.attempt = f.attempt;
            x.stall_ms = f.stall_ns.map(ms);
            emit(f.kind, f.severity, x, flow);
        }
        observe(flow, dir, &pa);
    }

    /// Ends the input: every flow still open is retired, with its end-of-flow findings.
    pub fn finish(&mut self, events: &mut Vec<Event>) {
        let now = self.now;
        let Analyzer { table, retired, files, .. } = self;
        for flow in table.drain() {
            push_end_findings(&flow, now, files, events);
            retired.push((flow, Retirement::End));
        }
        // Flows in creation order make the summary stable from run to run.
        retired.sort_by_key(|(f, _)| f.id);
    }

    #[doc(hidden)]
    pub fn file_name_of(&self, index: u16) -> Option<Arc<str>> {
        self.file_name(index)
    }
}

fn ms(ns: TimestampNs) -> f64 {
    ns as f64 / 1e6
}

fn packet_extra(flow: &Flow, dir: usize, seg: &Segment, pa: &PacketAnalysis) -> Extra {
    let fwd = &flow.dirs[dir];
    let rev = &flow.dirs[1 - dir];
    // The RTT that matters is that of the data: this direction's if the packet carries
    // data, the other's if it is an ACK.
    let data_dir = if seg.payload_len > 0 { fwd } else { rev };
    Extra {
        rel_seq: Some(rules::relative(seg.seq, fwd)),
        rel_ack: seg.flags.ack().then(|| rules::relative(seg.ack, rev)),
        window: fwd.scaled_window(),
        bytes_in_flight: pa.bytes_in_flight,
        srtt_ms: data_dir.stats.rtt.srtt_ns.map(ms),
        irtt_ms: (flow.first_rtt > 0).then(|| ms(flow.first_rtt)),
        ..Default::default()
    }
}

fn push_end_findings(flow: &Flow, now: TimestampNs, files: &[Arc<str>], events: &mut Vec<Event>) {
    let Some(f) = findings::end_findings(flow, now) else { return };
    let Some(client) = flow.lifecycle.client_dir else { return };
    let lc = &flow.lifecycle;
    let (from, ts, frame, flags) = if f.reason == crate::event::Reason::NoSynAck {
        (client, flow.ts_mru_syn, lc.last_syn_frame, TcpFlags(TcpFlags::SYN))
    } else {
        (1 - client, lc.last_synack_ts, lc.last_synack_frame, TcpFlags(TcpFlags::SYN | TcpFlags::ACK))
    };
    let (src, dst) = (flow.endpoints[from], flow.endpoints[1 - from]);
    let file = if files.len() > 1 { files.get(flow.file_index as usize).cloned() } else { None };
    events.push(Event {
        ts,
        event: f.kind,
        flow_id: flow.id,
        src: src.0,
        dst: dst.0,
        sport: src.1,
        dport: dst.1,
        seq: flow.dirs[from].base_seq,
        ack: 0,
        len: 0,
        flags: flags.letters(),
        severity: f.severity,
        extra: Extra {
            reason: Some(f.reason),
            attempt: f.attempt,
            irtt_ms: None,
            detail: Some(match f.reason {
                crate::event::Reason::NoSynAck => format!("{} SYN(s), no answer", lc.syns),
                _ => "the SYN-ACK was never acknowledged".to_string(),
            }),
            ..Default::default()
        },
        origin: Origin::Wire,
        frame: (frame > 0).then_some(frame),
        file,
    });
}
#[cfg(test)]
mod tests;
