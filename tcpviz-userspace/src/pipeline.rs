//! The one pipeline every source feeds: frames are decoded, segments analysed, events
//! handed to the sinks, and ended flows collected for the summary.

use std::collections::{BTreeMap, VecDeque};

use crate::analysis::{Analyzer, PacketRef, SEGMENT_READ_AHEAD};
use crate::capture::decode::{Segment, SkipReason, decode_frame};
use crate::capture::frame::Frame;
use crate::event::{Event, EventKind};
use crate::flow::table::{EvictionCounts, FlowLimits};
pub use crate::output::sink::EventSink;
use crate::output::summary::{Summary, SummaryBuilder, Totals};
use crate::time::{TimestampNs, ts_to_secs};

pub mod engine;
pub mod follower;
pub mod sharded;

/// Running counts of a pipeline.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    pub packets: u64,
    pub tcp_segments: u64,
    pub skipped: [u64; SkipReason::COUNT],
    pub events: [u64; EventKind::COUNT],
    pub first_ts: Option<TimestampNs>,
    pub last_ts: Option<TimestampNs>,
}

impl Counters {
    /// Decodes a frame, counting it, and counting why it is skipped if it is not TCP.
    pub fn decode(&mut self, frame: &Frame<'_>) -> Result<Segment, SkipReason> {
        self.packets += 1;
        decode_frame(frame).inspect_err(|&reason| self.skipped[reason as usize] += 1)
    }

    /// A TCP segment of time `ts` was read.
    pub fn count_segment(&mut self, ts: TimestampNs) {
        self.tcp_segments += 1;
        self.first_ts = Some(self.first_ts.map_or(ts, |t| t.min(ts)));
        self.last_ts = Some(self.last_ts.map_or(ts, |t| t.max(ts)));
    }

    pub fn skipped_map(&self) -> BTreeMap<String, u64> {
        SkipReason::ALL
            .iter()
            .zip(self.skipped.iter())
            .filter(|(_, n)| **n > 0)
            .map(|(r, n)| (r.as_str().to_string(), *n))
            .collect()
    }

    pub fn events_map(&self) -> BTreeMap<EventKind, u64> {
        EventKind::ALL.iter().filter(|k| self.events[k.index()] > 0).map(|k| (*k, self.events[k.index()])).collect()
    }
}

/// What a frame turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameOutcome {
    /// A TCP segment, analysed.
    Tcp,
    /// Not analysed, and why (counted in `Counters::skipped`).
    Skipped(SkipReason),
    /// A TCP segment the caller left out (counted by the caller).
    LeftOut,
}

/// How a pipeline runs, fixed when it is made.
#[derive(Debug, Clone, Copy)]
pub struct PipelineOptions {
    pub limits: FlowLimits,
    /// Flows listed individually in the summary (the most troubled).
    pub summary_flows: usize,
    /// Kernel reports are joined to the wire flows (live sessions, `--kernel-events`).
    pub kernel_mode: bool,
    /// Events name their file even while only one file has been read (the input may span
    /// several: a glob, a symlink a capture tool re-points).
    pub always_name_files: bool,
    /// The wire view of a connection may begin in its middle, at the trouble that made the
    /// live agent's kernel side copy it (capture policy `troubled`); see
    /// [`crate::analysis::Analyzer::set_partial_wire_view`].
    pub partial_wire_view: bool,
    /// Segments are decoded [`SEGMENT_READ_AHEAD`] frames before they are analysed, so that
    /// their connections' index buckets are fetched ahead (see [`Analyzer::prefetch`]),
    /// while the table is too large to stay cached. Only for a whole capture read at once
    /// (`parse-pcap`): events come out in the same order, but a few frames late, and the
    /// analyzer is behind the frames given.
    pub read_ahead: bool,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            limits: FlowLimits::default(),
            summary_flows: crate::output::summary::MAX_LISTED_FLOWS,
            kernel_mode: false,
            always_name_files: false,
            partial_wire_view: false,
            read_ahead: false,
        }
    }
}

pub struct Pipeline {
    analyzer: Analyzer,
    events: Vec<Event>,
    pub counters: Counters,
    summary: SummaryBuilder,
    read_ahead: bool,
    /// Segments decoded and not analysed yet (with `read_ahead`), oldest first.
    ahead: VecDeque<(Segment, PacketRef)>,
}

impl Pipeline {
    /// A pipeline with the default options but `limits`.
    pub fn new(limits: FlowLimits) -> Pipeline {
        Pipeline::with_options(PipelineOptions { limits, ..Default::default() })
    }

    pub fn with_options(opts: PipelineOptions) -> Pipeline {
        let mut analyzer = Analyzer::new(opts.limits);
        analyzer.set_kernel_mode(opts.kernel_mode);
        analyzer.set_always_name_files(opts.always_name_files);
        analyzer.set_partial_wire_view(opts.partial_wire_view);
        Pipeline {
            analyzer,
            events: Vec::with_capacity(64),
            counters: Counters::default(),
            summary: SummaryBuilder::with_limit(opts.summary_flows),
            read_ahead: opts.read_ahead,
            ahead: VecDeque::with_capacity(SEGMENT_READ_AHEAD + 1),
        }
    }

    /// Registers an input file. Segments read ahead are analysed first, so their events
    /// name files as they would have before it (they are written at the next frame).
    pub fn add_file(&mut self, name: &str) -> u32 {
        self.analyse_ahead();
        self.analyzer.add_file(name)
    }

    pub fn analyzer(&self) -> &Analyzer {
        debug_assert!(self.ahead.is_empty(), "the analyzer of a pipeline that reads ahead is behind");
        &self.analyzer
    }

    pub fn analyzer_mut(&mut self) -> &mut Analyzer {
        debug_assert!(self.ahead.is_empty(), "the analyzer of a pipeline that reads ahead is behind");
        &mut self.analyzer
    }

    /// Decodes and analyses one frame. A frame that is not TCP is counted by reason.
    pub fn process_frame(
        &mut self,
        frame: &Frame<'_>,
        file_index: u32,
        sink: &mut dyn EventSink,
    ) -> std::io::Result<FrameOutcome> {
        self.process_frame_where(frame, file_index, sink, |_| true)
    }

    /// [`process_frame`](Self::process_frame) for the segments `analyse` accepts; the others
    /// are TCP left out of the analysis (a copy of a packet already analysed).
    pub fn process_frame_where(
        &mut self,
        frame: &Frame<'_>,
        file_index: u32,
        sink: &mut dyn EventSink,
        analyse: impl FnOnce(&Segment) -> bool,
    ) -> std::io::Result<FrameOutcome> {
        match self.counters.decode(frame) {
            Ok(seg) if !analyse(&seg) => Ok(FrameOutcome::LeftOut),
            Ok(seg) => {
                let at = PacketRef { frame: frame.number, file_index };
                if self.read_ahead && self.analyzer.worth_prefetching() {
                    self.analyzer.prefetch(&seg);
                    self.ahead.push_back((seg, at));
                    if self.ahead.len() > SEGMENT_READ_AHEAD
                        && let Some((seg, at)) = self.ahead.pop_front()
                    {
                        self.analyse(&seg, at, sink)?;
                    }
                } else {
                    self.catch_up(sink)?;
                    self.analyse(&seg, at, sink)?;
                }
                Ok(FrameOutcome::Tcp)
            }
            Err(reason) => Ok(FrameOutcome::Skipped(reason)),
        }
    }

    pub fn process_segment(&mut self, seg: &Segment, at: PacketRef, sink: &mut dyn EventSink) -> std::io::Result<()> {
        self.catch_up(sink)?;
        self.analyse(seg, at, sink)
    }

    fn analyse(&mut self, seg: &Segment, at: PacketRef, sink: &mut dyn EventSink) -> std::io::Result<()> {
        self.counters.count_segment(seg.ts);
        self.analyzer.process(seg, at, &mut self.events);
        self.drain(sink)
    }

    /// Analyses the segments read ahead, leaving their events to the next drain.
    fn analyse_ahead(&mut self) {
        while let Some((seg, at)) = self.ahead.pop_front() {
            self.counters.count_segment(seg.ts);
            self.analyzer.process(&seg, at, &mut self.events);
        }
    }

    /// Analyses the segments read ahead and writes their events.
    fn catch_up(&mut self, sink: &mut dyn EventSink) -> std::io::Result<()> {
        if self.ahead.is_empty() {
            return Ok(());
        }
        self.analyse_ahead();
        self.drain(sink)
    }

    fn drain(&mut self, sink: &mut dyn EventSink) -> std::io::Result<()> {
        let mut retired = self.analyzer.take_retired();
        while let Some((flow, why)) = retired.next() {
            crate::flow::prefetch::prefetch_ahead(retired.as_slice(), |(f, _)| f);
            drop(self.summary.add(flow, why));
        }
        if self.events.is_empty() {
            return Ok(());
        }
        for e in &self.events {
            self.counters.events[e.event.index()] += 1;
        }
        let r = sink.on_events(&self.events);
        self.events.clear();
        r
    }

    /// Joins a kernel report (live sessions, `parse-pcap --kernel-events`).
    pub fn process_kernel(
        &mut self,
        k: &crate::analysis::kernel::KernelEvent,
        sink: &mut dyn EventSink,
    ) -> std::io::Result<()> {
        self.catch_up(sink)?;
        let c = &mut self.counters;
        c.first_ts = Some(c.first_ts.map_or(k.ts, |t| t.min(k.ts)));
        c.last_ts = Some(c.last_ts.map_or(k.ts, |t| t.max(k.ts)));
        self.analyzer.process_kernel(k, &mut self.events);
        self.drain(sink)
    }

    /// A watch of the live agent's kernel side started (capture policy `troubled`).
    pub fn process_watch(&mut self, w: &crate::flow::watch::WatchStart) {
        debug_assert!(self.ahead.is_empty(), "a live pipeline does not read ahead");
        self.analyzer.process_watch(w);
    }

    /// Ends the input: flows still open are finished (end-of-flow findings).
    pub fn finish(&mut self, sink: &mut dyn EventSink) -> std::io::Result<()> {
        self.catch_up(sink)?;
        self.analyzer.finish(&mut self.events);
        self.drain(sink)
    }

    /// The figures of `benchmark.log` for what was read so far.
    pub fn figures(&self, sources: Vec<String>, bytes: u64, wall_seconds: f64) -> crate::output::benchmark::RunFigures {
        let a = &self.analyzer;
        run_figures(&self.counters, a.flows_created(), a.evictions(), sources, bytes, wall_seconds)
    }

    /// The summary; call after [`finish`](Self::finish).
    pub fn summary(self, sources: Vec<String>, errors: Vec<String>, bytes: u64) -> Summary {
        let a = &self.analyzer;
        let totals = totals(&self.counters, a.flows_created(), a.evictions(), bytes);
        self.summary.finish(totals, sources, errors)
    }
}

/// The figures of `benchmark.log` of a run.
fn run_figures(
    c: &Counters,
    flows_created: u64,
    evictions: EvictionCounts,
    sources: Vec<String>,
    bytes: u64,
    wall_seconds: f64,
) -> crate::output::benchmark::RunFigures {
    crate::output::benchmark::RunFigures {
        sources,
        packets: c.packets,
        tcp_segments: c.tcp_segments,
        bytes,
        wall_seconds,
        skipped: c.skipped_map(),
        events: c.events_map().into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        flows: flows_created,
        extra: eviction_figures(evictions),
    }
}

/// The summary's totals of a run.
fn totals(c: &Counters, flows_created: u64, ev: EvictionCounts, bytes: u64) -> Totals {
    Totals {
        packets: c.packets,
        tcp_segments: c.tcp_segments,
        skipped: c.skipped_map(),
        flows: flows_created,
        bytes,
        first_ts: c.first_ts.map(ts_to_secs),
        last_ts: c.last_ts.map(ts_to_secs),
        duration_s: match (c.first_ts, c.last_ts) {
            (Some(a), Some(b)) => (b - a) as f64 / 1e9,
            _ => 0.0,
        },
        events: c.events_map(),
        flows_evicted_idle: ev.idle,
        flows_evicted_capacity: ev.capacity,
        flows_evicted_closed: ev.closed,
        flows_resumed: ev.resumed,
        flows_evicted_forgotten: ev.forgotten,
        flows_folded: 0,
        folded: None,
        kernel: None,
    }
}

/// The benchmark log's eviction lines, when the flow table was ever full.
fn eviction_figures(ev: EvictionCounts) -> BTreeMap<String, String> {
    if ev.capacity + ev.closed == 0 {
        return BTreeMap::new();
    }
    [
        ("flows_evicted_capacity", ev.capacity),
        ("flows_evicted_closed", ev.closed),
        ("flows_resumed", ev.resumed),
        ("flows_evicted_forgotten", ev.forgotten),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[cfg(test)]
mod tests {
    use etherparse::PacketBuilder;

    use super::*;
    use crate::capture::frame::LinkType;

    fn frame(data: &[u8]) -> Frame<'_> {
        Frame {
            ts: 7,
            link_type: LinkType::ETHERNET,
            data,
            orig_len: data.len() as u32,
            interface: 0,
            number: 1,
            direction: None,
        }
    }

    #[test]
    fn process_frame_says_what_the_frame_was() {
        let mut tcp = Vec::new();
        PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(40000, 80, 1000, 64240)
            .syn()
            .write(&mut tcp, &[])
            .unwrap();
        let mut udp = Vec::new();
        PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(5353, 5353)
            .write(&mut udp, b"x")
            .unwrap();
        let mut pipeline = Pipeline::new(FlowLimits::default());
        let mut events: Vec<Event> = Vec::new();
        assert_eq!(pipeline.process_frame(&frame(&tcp), 0, &mut events).unwrap(), FrameOutcome::Tcp);
        assert_eq!(
            pipeline.process_frame(&frame(&udp), 0, &mut events).unwrap(),
            FrameOutcome::Skipped(SkipReason::NotTcp)
        );
        assert_eq!((pipeline.counters.packets, pipeline.counters.tcp_segments), (2, 1));
        assert_eq!(pipeline.counters.skipped[SkipReason::NotTcp as usize], 1);
    }
}
