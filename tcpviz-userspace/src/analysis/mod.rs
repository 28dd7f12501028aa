//! The analyzer: per-segment rules on per-connection state, producing events.
pub mod findings;
pub mod flags;
pub mod kernel;
pub mod rules;

use std::sync::Arc;

use crate::capture::decode::{Segment, TcpFlags};
use crate::event::{Event, EventKind, Extra, Origin, Severity};
use crate::flow::key::FlowKey;
use crate::flow::state::Flow;
use crate::flow::table::{FlowLimits, FlowTable, Retirement};
use crate::time::TimestampNs;

use crate::flow::kernel_join::WireSegment;
use crate::flow::watch::PendingWatches;
use kernel::KERNEL_ONLY_FLOW_BASE;

use findings::Finding;
use flags::AnalysisFlags as A;
use rules::{ConversationCheck, PacketAnalysis};

/// Where a packet came from, for the `frame` and `file` of its events.
#[derive(Debug, Clone, Copy, Default)]
pub struct PacketRef {
    /// 1-based packet number in its file.
    pub frame: u64,
    /// Index into the analyzer's file names.
    pub file_index: u32,
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

/// How many segments ahead of its analysis a caller that holds them in a batch hands one
/// to [`Analyzer::prefetch`]: far enough for memory to answer (a few hundred nanoseconds,
/// against well under a hundred per segment on a busy table), near enough that what was
/// fetched is still cached. Distances of 8 and 16 were slower on the generated captures,
/// and so was fetching the slot and the flow too in further steps (a flow is eight lines).
pub const SEGMENT_READ_AHEAD: usize = 12;

/// Tracked connections from which a lookup is likely to miss the cache: about where the
/// slots and index entries they take (some 90 bytes each) outgrow a core's L2 cache.
const PREFETCH_FROM_FLOWS: usize = 8_192;

/// Runs the analysis over segments in capture order.
pub struct Analyzer {
    table: FlowTable,
    files: Vec<Arc<str>>,
    /// Flows that ended, for the summary. Drained by the caller.
    retired: Vec<(Box<Flow>, Retirement)>,
    findings: Vec<Finding>,
    now: TimestampNs,
    /// Name the file in events even when there is only one so far (a follower of ring
    /// files cannot know that more will come).
    always_name_files: bool,
    /// Kernel events are joined (live sessions, `parse-pcap --kernel-events`): wire
    /// retransmissions are then remembered for matching.
    kernel_mode: bool,
    /// Kernel events of connections the wire has not shown (yet).
    orphans: kernel::Orphans,
    /// Connections only the kernel hooks saw.
    kernel_only: rustc_hash::FxHashMap<FlowKey, Box<Flow>>,
    next_kernel_only: u64,
    /// Flows (id, key) whose kernel side waits for a window to pass, for the kernel sweep.
    /// An entry may outlive its flow; the sweep drops it then.
    kernel_waiting: std::collections::BTreeMap<u64, FlowKey>,
    last_kernel_sweep: TimestampNs,
    /// Time of the latest wire packet. A kernel report waits for its wire copy until the
    /// wire has moved past it, not until the kernel has: a wire source read from a file
    /// that a capture tool is writing runs behind the hooks.
    wire_now: TimestampNs,
    /// Watch starts of connections the wire has not shown yet (live, policy `troubled`).
    pending_watches: PendingWatches,
    /// Connections may be seen from their middle on (live, policy `troubled`): see
    /// [`Analyzer::set_partial_wire_view`].
    partial_wire_view: bool,
    /// [`PREFETCH_FROM_FLOWS`], but for tests.
    prefetch_from_flows: usize,
}

impl Analyzer {
    pub fn new(limits: FlowLimits) -> Analyzer {
        Analyzer {
            table: FlowTable::new(limits),
            files: Vec::new(),
            retired: Vec::new(),
            findings: Vec::new(),
            now: TimestampNs::MIN,
            always_name_files: false,
            kernel_mode: false,
            orphans: Default::default(),
            kernel_only: Default::default(),
            next_kernel_only: KERNEL_ONLY_FLOW_BASE,
            kernel_waiting: Default::default(),
            last_kernel_sweep: TimestampNs::MIN,
            wire_now: TimestampNs::MIN,
            pending_watches: PendingWatches::default(),
            partial_wire_view: false,
            prefetch_from_flows: PREFETCH_FROM_FLOWS,
        }
    }

    /// Registers an input file; events name it when there is more than one.
    pub fn add_file(&mut self, name: &str) -> u32 {
        self.files.push(Arc::from(name));
        (self.files.len() - 1) as u32
    }

    pub fn flows_active(&self) -> usize {
        self.table.len()
    }

    pub fn flows_created(&self) -> u64 {
        self.table.flows_created()
    }

    pub fn evictions(&self) -> crate::flow::table::EvictionCounts {
        self.table.evictions()
    }

    pub fn active_flows(&self) -> impl Iterator<Item = &Flow> {
        self.table.iter()
    }

    /// Flows that ended since the last call.
    pub fn take_retired(&mut self) -> std::vec::Drain<'_, (Box<Flow>, Retirement)> {
        self.retired.drain(..)
    }

    /// Joins kernel events to the wire flows (see [`kernel`]).
    pub fn set_kernel_mode(&mut self, on: bool) {
        self.kernel_mode = on;
    }

    /// The wire flow of a socket, if the wire has shown it.
    pub fn flow_id_of(&self, src: std::net::IpAddr, sport: u16, dst: std::net::IpAddr, dport: u16) -> Option<u64> {
        self.table.get(&FlowKey::new(src, sport, dst, dport)).map(|f| f.id)
    }

    /// A `tcp_probe` sample of a socket: the kernel's congestion window of the direction it
    /// sends, for what limits that direction (`flow::limits`). Returns the wire flow's id.
    pub fn note_kernel_sample(&mut self, s: &crate::event::KernelSample) -> Option<u64> {
        let flow = self.table.get_mut(&FlowKey::new(s.src, s.sport, s.dst, s.dport))?;
        if let Some(mss) = s.mss {
            let dir = flow.direction_of((s.src, s.sport));
            if let Some(c) = flow.dirs[dir].limits_mut() {
                c.set_kernel_cwnd(s.snd_cwnd, mss);
            }
        }
        Some(flow.id)
    }

    pub fn set_always_name_files(&mut self, on: bool) {
        self.always_name_files = on;
    }

    /// The view of a connection may begin in its middle, at the trouble that made the
    /// kernel side copy it. On the receiver that trouble is a SACK it sends, and the
    /// retransmissions that fill the hole follow at once: the segments they repeat passed
    /// before the view began, so Wireshark's rules take them for new data. A SACK seen before
    /// any data of the other direction tells how far that side has sent
    /// ([`rules::note_sack_before_data`]). Off for captures, so that they agree with tshark.
    pub fn set_partial_wire_view(&mut self, on: bool) {
        self.partial_wire_view = on;
    }

    /// This analyzer is one shard of a sharded pipeline (`pipeline::sharded`): it sees a
    /// share of the connections, and is told the time of the whole stream
    /// ([`advance_clock`](Self::advance_clock)) and when to sweep ([`sweep`](Self::sweep)).
    pub fn set_shard(&mut self) {
        self.table.set_external_sweeps(true);
    }

    /// The time of the whole stream (the latest packet of any shard) has reached `now`.
    pub fn advance_clock(&mut self, now: TimestampNs) {
        self.now = self.now.max(now);
    }

    /// Retires the flows idle as of `now`, as a table's own sweep would at that packet.
    pub fn sweep(&mut self, now: TimestampNs, events: &mut Vec<Event>) {
        self.advance_clock(now);
        let now = self.now;
        let Analyzer { table, retired, files, always_name_files, .. } = self;
        table.sweep(now, &mut |flow, why| {
            let file = name_file(files, *always_name_files, flow.file_index);
            retire(flow, why, now, file, retired, events);
        });
    }

    fn file_name(&self, index: u32) -> Option<Arc<str>> {
        name_file(&self.files, self.always_name_files, index)
    }

    /// Whether [`prefetch`](Self::prefetch) can save anything: with a few thousand
    /// connections the table stays cached, and reading ahead only costs (a tenth more time
    /// per packet on a capture of three bulk transfers).
    #[inline]
    pub fn worth_prefetching(&self) -> bool {
        self.table.len() >= self.prefetch_from_flows
    }

    /// Tests read ahead on small tables.
    #[cfg(test)]
    pub fn set_prefetch_from_flows(&mut self, flows: usize) {
        self.prefetch_from_flows = flows;
    }

    /// Prepares for `seg`, to be analysed [`SEGMENT_READ_AHEAD`] segments from now (see
    /// [`FlowTable::prefetch`]). Only a hint: nothing changes.
    #[inline]
    pub fn prefetch(&self, seg: &Segment) {
        self.table.prefetch(seg);
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
        if seg.ts > self.now {
            self.now = seg.ts;
        }
        self.wire_now = self.wire_now.max(seg.ts);
        let now = self.now;
        let placed = self.table.place(seg);
        {
            let Analyzer { table, retired, files, always_name_files, .. } = self;
            table.advance(seg.ts, &placed, &mut |flow, why| {
                let file = name_file(files, *always_name_files, flow.file_index);
                retire(flow, why, now, file, retired, events);
            });
        }

        let mut pa = PacketAnalysis { frame: at.frame, ..Default::default() };
        let created_before = self.table.flows_created();
        let slot = self.table.find_or_create(&placed, seg);
        let flow = self.table.at_mut(slot);
        let dir = flow.direction_of((seg.src, seg.sport));
        if let ConversationCheck::NewConversation = rules::check_conversation(flow, dir, seg, &mut pa) {
            let old = self.table.restart_at(slot, seg);
            let file = self.file_name(old.file_index);
            retire(old, Retirement::Reused, now, file, &mut self.retired, events);
            pa.flags.set(A::REUSED_PORTS);
        }
        let new_flow = self.table.flows_created() != created_before;
        let flow = self.table.at_mut(slot);
        if new_flow
            && !self.pending_watches.is_empty()
            && let Some(w) = self.pending_watches.take(&FlowKey::new(seg.src, seg.sport, seg.dst, seg.dport))
        {
            flow.kernel.get_or_insert_with(Default::default).watch = Some(w);
        }
        // The new connection's first direction is that of this packet.
        let dir = flow.direction_of((seg.src, seg.sport));
        flow.file_index = at.file_index;
        if seg.ts > flow.last_ts {
            flow.last_ts = seg.ts;
        }
        if self.partial_wire_view {
            rules::seed_from_sack(flow, dir, seg);
        }
        rules::analyze(flow, dir, seg, at.frame, &mut pa);
        if self.partial_wire_view && seg.options.sack.len > 0 {
            rules::note_sack_before_data(flow, dir, seg, at.frame);
        }
        if let Some((tsval, tsecr)) = seg.options.timestamp {
            pa.ts_rtt_sample = time_by_timestamps(flow, dir, seg, tsval, tsecr);
        }

        const RETRANSMITTED: u32 = A::RETRANSMISSION | A::FAST_RETRANSMISSION | A::SPURIOUS_RETRANSMISSION;
        // Live: the kernel's verdict on an out-of-order segment, if its report came first;
        // else the segment's events wait for it (see `flow::kernel_join`).
        let mut wait_for_kernel = false;
        if self.kernel_mode && pa.flags.has(RETRANSMITTED | A::OUT_OF_ORDER) {
            let flagged = pa.flags.has(RETRANSMITTED);
            let k = flow.kernel.get_or_insert_with(Default::default);
            let confirmed = k.on_wire_segment(wire_segment(seg, at.frame), flagged, events);
            if !flagged && confirmed {
                pa.flags.clear(A::OUT_OF_ORDER);
                pa.flags.set(A::RETRANSMISSION);
                pa.wire_verdict = Some(EventKind::OutOfOrder);
            }
            wait_for_kernel = !flagged && !confirmed;
        }
        let retransmitted = pa.flags.has(RETRANSMITTED);
        {
            let (fwd, rev) = flow.dirs_mut(dir);
            let st = &mut fwd.stats;
            st.packets += 1;
            st.payload_bytes += seg.payload_len as u64;
            if retransmitted {
                st.retransmitted_bytes += seg.payload_len as u64;
            }
            if let Some(b) = pa.bytes_in_flight {
                fwd.max_bytes_in_flight = fwd.max_bytes_in_flight.max(b);
            }
            if let Some(rtt) = pa.rtt_sample {
                rev.stats.rtt.add(rtt);
            }
        }

        track_limits(flow, dir, seg, &pa, retransmitted);

        self.findings.clear();
        findings::packet_findings(flow, dir, seg, &pa, &mut self.findings);
        if !pa.flags.is_empty() || !self.findings.is_empty() {
            let file = name_file(&self.files, self.always_name_files, at.file_index);
            let first = events.len();
            emit_packet_events(flow, dir, seg, at.frame, file, &pa, &self.findings, events);
            if wait_for_kernel {
                let mine = events.split_off(first);
                let k = flow.kernel.get_or_insert_with(Default::default);
                k.hold_wire(wire_segment(seg, at.frame), mine, events);
            }
        }
        observe(flow, dir, &pa);
        let closed = flow.is_closed();
        self.table.set_closed(slot, closed);
        let flow = self.table.at_mut(slot);

        if self.kernel_mode {
            if let Some(k) = flow.kernel.as_mut() {
                k.expire(self.wire_now, self.now, events);
                if k.waits() {
                    self.kernel_waiting.insert(flow.id, FlowKey::new(seg.src, seg.sport, seg.dst, seg.dport));
                }
            }
            if new_flow && !self.orphans.is_empty() {
                self.adopt_orphans(FlowKey::new(seg.src, seg.sport, seg.dst, seg.dport), events);
            }
            self.kernel_sweep(events);
        }
    }

    /// Ends the input: every flow still open is retired, with its end-of-flow findings.
    pub fn finish(&mut self, events: &mut Vec<Event>) {
        let now = self.now;
        while let Some(k) = self.orphans.pop_front() {
            self.orphan_to_kernel_only(k, events);
        }
        // A watch that no packet followed: the connection is known from the kernel only, and
        // the summary says that it was watched all the same.
        if !self.pending_watches.is_empty() {
            for (key, flow) in self.kernel_only.iter_mut() {
                let k = flow.kernel.get_or_insert_with(Default::default);
                k.watch = k.watch.take().or_else(|| self.pending_watches.take(key));
            }
        }
        let Analyzer { table, retired, files, always_name_files, kernel_only, .. } = self;
        let flows: Vec<Box<Flow>> = table.drain().chain(kernel_only.drain().map(|(_, f)| f)).collect();
        for flow in flows {
            let file = name_file(files, *always_name_files, flow.file_index);
            retire(flow, Retirement::End, now, file, retired, events);
        }
        // Flows in creation order make the summary stable from run to run.
        retired.sort_by_key(|(f, _)| f.id);
    }
}

/// A flow leaves the table: its end-of-flow findings and held kernel events go out.
fn retire(
    mut flow: Box<Flow>,
    why: Retirement,
    now: TimestampNs,
    file: Option<Arc<str>>,
    retired: &mut Vec<(Box<Flow>, Retirement)>,
    events: &mut Vec<Event>,
) {
    push_end_findings(&flow, now, file, events);
    if let Some(k) = flow.kernel.as_mut() {
        k.flush(events);
    }
    retired.push((flow, why));
}

/// What held each direction's sending back (see `flow::limits`): time since the last
/// packet to the limit that held, then what holds from this packet on.
fn track_limits(flow: &mut Flow, dir: usize, seg: &Segment, pa: &PacketAnalysis, retransmitted: bool) {
    use crate::flow::limits::{LimitClock, SenderView};
    if seg.flags.syn()
        && let Some(mss) = seg.options.mss
    {
        let lc = &mut flow.lifecycle;
        lc.syn_mss = if lc.syn_mss == 0 { mss } else { lc.syn_mss.min(mss) };
    }
    let view = |flow: &Flow, d: usize| SenderView {
        nextseq: flow.dirs[d].nextseq,
        acked: flow.dirs[1 - d].lastack,
        window: flow.dirs[1 - d].scaled_window(),
        syn_mss: flow.lifecycle.syn_mss,
        rtt: flow.first_rtt,
    };
    let mut clocks = false;
    for d in &mut flow.dirs {
        if let Some(c) = d.limits_mut() {
            c.advance(seg.ts);
            clocks = true;
        }
    }
    if seg.payload_len > 0 {
        let v = view(flow, dir);
        let fwd = &mut flow.dirs[dir];
        // The second data segment starts the clock (`payload_bytes` counts this one).
        if fwd.limits_mut().is_none() && fwd.stats.payload_bytes > seg.payload_len as u64 {
            fwd.rare_mut().limits = Some(LimitClock::new(seg.ts));
        }
        if let Some(c) = fwd.limits_mut() {
            c.on_data(seg.payload_len, retransmitted, v);
            clocks = true;
        }
    }
    if !clocks {
        return;
    }
    if pa.flags.has(A::DUPLICATE_ACK) && pa.dupack_num >= 3 {
        let v = view(flow, 1 - dir);
        if let Some(c) = flow.dirs[1 - dir].limits_mut() {
            c.on_duplicate_acks(v);
        }
    }
    for d in 0..2 {
        let v = view(flow, d);
        if let Some(c) = flow.dirs[d].limits_mut() {
            c.update(v);
        }
    }
}

fn wire_segment(seg: &Segment, frame: u64) -> WireSegment {
    WireSegment { ts: seg.ts, src: (seg.src, seg.sport), seq: seg.seq, len: seg.payload_len, frame }
}

/// The timestamp-echo RTT estimator (see `flow::ts_rtt`): the ACK side first, so that a
/// data segment that also acknowledges does not time itself.
fn time_by_timestamps(flow: &mut Flow, dir: usize, seg: &Segment, tsval: u32, tsecr: u32) -> Option<TimestampNs> {
    let (fwd, rev) = flow.dirs_mut(dir);
    let mut sample = None;
    if seg.flags.ack()
        && tsecr != 0
        && let Some(rare) = rev.rare.as_mut()
    {
        sample = rare.ts_rtt.on_echo(tsecr, seg.ts);
    }
    if seg.payload_len > 0 || seg.flags.fin() {
        fwd.rare_mut().ts_rtt.on_send(tsval, seg.ts);
    }
    sample
}

#[allow(clippy::too_many_arguments)]
fn emit_packet_events(
    flow: &mut Flow,
    dir: usize,
    seg: &Segment,
    frame: u64,
    file: Option<Arc<str>>,
    pa: &PacketAnalysis,
    findings: &[Finding],
    events: &mut Vec<Event>,
) {
    let extra = packet_extra(flow, dir, seg, pa);
    let flags = seg.flags.letters();
    let mut emit = |kind: EventKind, severity: Severity, extra: Extra, flow: &mut Flow| {
        flow.dirs[dir].stats.events.add(kind);
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
            frame: Some(frame),
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
                x.wire_verdict = pa.wire_verdict;
                if let Some((rto, rto_frame)) = pa.rto {
                    x.rto_ms = Some(ms(rto));
                    x.rto_frame = Some(rto_frame);
                }
            }
            _ => {}
        }
        emit(kind, flag_severity(kind), x, flow);
    }
    for f in findings {
        let mut x = extra.clone();
        x.reason = Some(f.reason);
        x.attempt = f.attempt;
        x.stall_ms = f.stall_ns.map(ms);
        emit(f.kind, f.severity, x, flow);
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
        srtt_ms: data_dir.stats.rtt.srtt_ns().map(ms),
        irtt_ms: (flow.first_rtt > 0).then(|| ms(flow.first_rtt)),
        ..Default::default()
    }
}

fn name_file(files: &[Arc<str>], always: bool, index: u32) -> Option<Arc<str>> {
    if always || files.len() > 1 { files.get(index as usize).cloned() } else { None }
}

fn push_end_findings(flow: &Flow, now: TimestampNs, file: Option<Arc<str>>, events: &mut Vec<Event>) {
    let Some(f) = findings::end_findings(flow, now) else { return };
    let Some(client) = flow.lifecycle.client_dir.map(usize::from) else { return };
    let lc = &flow.lifecycle;
    let (from, ts, frame, flags) = if f.reason == crate::event::Reason::NoSynAck {
        (client, flow.ts_mru_syn, lc.last_syn_frame, TcpFlags(TcpFlags::SYN))
    } else {
        (1 - client, lc.last_synack_ts, lc.last_synack_frame, TcpFlags(TcpFlags::SYN | TcpFlags::ACK))
    };
    let (src, dst) = (flow.endpoints[from], flow.endpoints[1 - from]);
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
