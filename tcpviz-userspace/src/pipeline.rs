//! The one pipeline every source feeds: frames are decoded, segments analysed, events
//! handed to the sinks, and ended flows collected for the summary.

use std::collections::BTreeMap;

use crate::analysis::{Analyzer, PacketRef};
use crate::capture::decode::{Segment, SkipReason, decode_frame};
use crate::capture::frame::{Frame, TimestampNs, ts_to_secs};
use crate::event::{Event, EventKind};
use crate::flow::table::FlowLimits;
use crate::output::summary::{Summary, SummaryBuilder, Totals};

/// Receives events as they are found.
pub trait EventSink {
    fn on_events(&mut self, events: &[Event]) -> std::io::Result<()>;
}

impl EventSink for crate::output::jsonl::JsonlWriter {
    fn on_events(&mut self, events: &[Event]) -> std::io::Result<()> {
        self.write_events(events)
    }
}

impl EventSink for Vec<Event> {
    fn on_events(&mut self, events: &[Event]) -> std::io::Result<()> {
        self.extend_from_slice(events);
        Ok(())
    }
}

/// Running counts of a pipeline.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    pub packets: u64,
    pub tcp_segments: u64,
    pub skipped: [u64; SkipReason::ALL.len()],
    pub events: [u64; EventKind::COUNT],
    pub first_ts: Option<TimestampNs>,
    pub last_ts: Option<TimestampNs>,
}

impl Counters {
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

pub struct Pipeline {
    analyzer: Analyzer,
    events: Vec<Event>,
    pub counters: Counters,
    summary: SummaryBuilder,
}

impl Pipeline {
    pub fn new(limits: FlowLimits) -> Pipeline {
        Pipeline {
            analyzer: Analyzer::new(limits),
            events: Vec::with_capacity(64),
            counters: Counters::default(),
            summary: SummaryBuilder::default(),
        }
    }

    pub fn add_file(&mut self, name: &str) -> u32 {
        self.analyzer.add_file(name)
    }

    /// Lists at most `n` flows individually in the summary (the most troubled).
    pub fn set_summary_limit(&mut self, n: usize) {
        self.summary = SummaryBuilder::with_limit(n);
    }

    pub fn set_always_name_files(&mut self, on: bool) {
        self.analyzer.set_always_name_files(on);
    }

    pub fn analyzer(&self) -> &Analyzer {
        &self.analyzer
    }

    /// Decodes and analyses one frame. A frame that is not TCP is counted by reason.
    pub fn process_frame(
        &mut self,
        frame: &Frame<'_>,
        file_index: u32,
        sink: &mut dyn EventSink,
    ) -> std::io::Result<()> {
        self.counters.packets += 1;
        match decode_frame(frame) {
            Ok(seg) => self.process_segment(&seg, PacketRef { frame: frame.number, file_index }, sink),
            Err(reason) => {
                self.counters.skipped[reason as usize] += 1;
                Ok(())
            }
        }
    }

    pub fn process_segment(&mut self, seg: &Segment, at: PacketRef, sink: &mut dyn EventSink) -> std::io::Result<()> {
        self.counters.tcp_segments += 1;
        let c = &mut self.counters;
        c.first_ts = Some(c.first_ts.map_or(seg.ts, |t| t.min(seg.ts)));
        c.last_ts = Some(c.last_ts.map_or(seg.ts, |t| t.max(seg.ts)));
        self.analyzer.process(seg, at, &mut self.events);
        self.drain(sink)
    }

    fn drain(&mut self, sink: &mut dyn EventSink) -> std::io::Result<()> {
        for (flow, why) in self.analyzer.take_retired() {
            self.summary.add(&flow, why);
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
        let c = &mut self.counters;
        c.first_ts = Some(c.first_ts.map_or(k.ts, |t| t.min(k.ts)));
        c.last_ts = Some(c.last_ts.map_or(k.ts, |t| t.max(k.ts)));
        self.analyzer.process_kernel(k, &mut self.events);
        self.drain(sink)
    }

    pub fn set_kernel_mode(&mut self, on: bool) {
        self.analyzer.set_kernel_mode(on);
    }

    /// Ends the input: flows still open are finished (end-of-flow findings).
    pub fn finish(&mut self, sink: &mut dyn EventSink) -> std::io::Result<()> {
        self.analyzer.finish(&mut self.events);
        self.drain(sink)
    }

    /// The figures of `benchmark.log` for what was read so far.
    pub fn figures(&self, sources: Vec<String>, bytes: u64, wall_seconds: f64) -> crate::output::benchmark::RunFigures {
        let c = &self.counters;
        crate::output::benchmark::RunFigures {
            sources,
            packets: c.packets,
            tcp_segments: c.tcp_segments,
            bytes,
            wall_seconds,
            skipped: c.skipped_map(),
            events: c.events_map().into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            flows: self.analyzer.flows_created(),
            extra: Default::default(),
        }
    }

    /// The summary; call after [`finish`](Self::finish).
    pub fn summary(self, sources: Vec<String>, errors: Vec<String>, bytes: u64) -> Summary {
        let c = &self.counters;
        let ev = self.analyzer.evictions();
        let totals = Totals {
            packets: c.packets,
            tcp_segments: c.tcp_segments,
            skipped: c.skipped_map(),
            flows: self.analyzer.flows_created(),
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
            flows_folded: 0,
        };
        self.summary.finish(totals, sources, errors)
    }
}
