//! `parse-pcap --threads N`: connections sharded across worker threads by canonical key,
//! with output byte for byte that of one thread.
//!
//! The calling thread reads and decodes the frames and hands each segment to the worker
//! that owns its connection (a hash of its canonical key), in batches. Each worker runs its
//! own analyzer on its share of the connections. The calling thread then merges what the
//! workers produced back into frame order, and writes it. Three things make the merged
//! output that of one analyzer:
//! - **Flow ids.** A worker numbers the flows it creates; the ids in the output number
//!   every flow in creation order. Each segment's result says how many flows it created, so
//!   the merger hands out the global ids in frame order and rewrites the ids of events and
//!   of retired flows.
//! - **Idle sweeps.** One table sweeps once per second of packet time, at the packet that
//!   crosses the second; a worker sees only its own packets' times. So the reader keeps
//!   that clock ([`SweepClock`]) and sends a sweep to every worker at that packet, with the
//!   time of the whole stream, which every segment carries too.
//! - **Retirement order.** A sweep, and the end of input, retire flows in creation order;
//!   the merger merges the workers' retired flows by global id.
//!
//! - **Evictions.** A connection's worker is that of its flow table partition
//!   ([`crate::flow::table`]): a partition fills and evicts at its own packets, whichever
//!   thread holds it, so evictions are the same too. A table has at most 16 partitions (of
//!   at least 1,024 connections each), which bounds the useful number of workers.
//!
//! Kernel reports are joined by one analyzer ([`super::Pipeline`]), never sharded.

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use rustc_hash::FxHashMap;

use super::{Counters, EventSink, FrameOutcome, PipelineOptions, run_figures, totals};
use crate::analysis::{Analyzer, PacketRef, SEGMENT_READ_AHEAD};
use crate::capture::decode::Segment;
use crate::capture::frame::Frame;
use crate::event::Event;
use crate::flow::key::FlowKey;
use crate::flow::state::Flow;
use crate::flow::table::{EvictionCounts, FlowLimits, Retirement, SweepClock, partition_of_key, partitions};
use crate::output::benchmark::RunFigures;
use crate::output::summary::{Summary, SummaryBuilder};
use crate::time::TimestampNs;

/// Segments handed to the workers at a time.
const BATCH_SEGMENTS: usize = 2_048;
/// Batches handed out and not yet merged: the reader runs this far ahead of the merge.
const BATCHES_IN_FLIGHT: usize = 4;
/// A route of a batch's plan: the sweep every worker runs at that point.
const SWEEP: u8 = u8::MAX;
/// At most this many workers (a route names its worker in a byte; the flow table has fewer
/// partitions anyway).
pub const MAX_THREADS: usize = 64;

/// What a worker is given to do, in frame order.
enum Work {
    Segment { seg: Segment, at: PacketRef, now: TimestampNs },
    Sweep { now: TimestampNs },
}

// Flows are handed back boxed as they were retired, to be freed, not moved.
#[allow(clippy::vec_box)]
enum ToWorker {
    /// Work, and retired flows to free.
    Batch(Vec<Work>, Vec<Box<Flow>>),
    /// The next input file's name (events name their file).
    AddFile(String),
    Finish {
        now: TimestampNs,
    },
}

/// What one work item produced: its events, the flows it retired, the flows it created.
#[derive(Clone, Copy)]
struct ItemResult {
    events: u32,
    retired: u32,
    created: u32,
}

#[derive(Default)]
struct Results {
    items: Vec<ItemResult>,
    events: Vec<Event>,
    retired: Vec<(Box<Flow>, Retirement)>,
    /// The batch's work list, emptied, to be filled again: a new one for every batch was
    /// hundreds of kilobytes allocated on the reading thread and freed on a worker's.
    spent: Vec<Work>,
}

struct Finished {
    /// The end of input's retirements, one item.
    results: Results,
    flows_created: u64,
    evictions: EvictionCounts,
}

enum FromWorker {
    Batch(Results),
    Finished(Finished),
}

struct Worker {
    to: SyncSender<ToWorker>,
    from: Receiver<FromWorker>,
    handle: Option<JoinHandle<()>>,
    /// The batch being filled.
    work: Vec<Work>,
}

/// The pipeline of [`super::Pipeline`], sharded across `threads` workers.
pub struct ShardedPipeline {
    workers: Vec<Worker>,
    /// Per batch handed out, the worker of each segment in frame order (or [`SWEEP`]).
    plans: VecDeque<Vec<u8>>,
    plan: Vec<u8>,
    sweeps: SweepClock,
    now: TimestampNs,
    merger: Merger,
    pub counters: Counters,
    finished: Option<(u64, EvictionCounts)>,
    /// The flow table's size, whose partitions the connections are routed by.
    max_flows: usize,
    /// Work lists the workers are done with (see [`Results::spent`]).
    spare_work: Vec<Vec<Work>>,
}

/// Flow ids from the workers' numbering to the stream's, and the output in frame order.
struct Merger {
    next_global: u64,
    /// Per worker: its live flows' global ids.
    ids: Vec<IdMap>,
    /// Per worker: retired flows, handed back with its next batch to be freed there (the
    /// thread that allocated them, and not the one that has the most to do).
    #[allow(clippy::vec_box)]
    freed: Vec<Vec<Box<Flow>>>,
    summary: SummaryBuilder,
    events: Vec<Event>,
}

fn worker_error() -> std::io::Error {
    std::io::Error::other("an analysis worker thread stopped")
}

impl ShardedPipeline {
    /// `threads` workers, at most one per partition of the flow table (see [`MAX_THREADS`]):
    /// with fewer than 2, the caller should run a [`super::Pipeline`]. `files` are the input
    /// names, registered in every worker (events name their file).
    pub fn new(opts: PipelineOptions, threads: usize, files: &[String]) -> std::io::Result<ShardedPipeline> {
        let threads = Self::workers(threads, opts.limits);
        let limits = opts.limits;
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads {
            let mut analyzer = Analyzer::new(limits);
            analyzer.set_shard();
            analyzer.set_always_name_files(opts.always_name_files);
            for f in files {
                analyzer.add_file(f);
            }
            let (to, work_rx) = sync_channel(BATCHES_IN_FLIGHT + 1);
            let (result_tx, from) = sync_channel(BATCHES_IN_FLIGHT + 1);
            let handle = std::thread::Builder::new()
                .name(format!("tcpviz-shard-{i}"))
                .spawn(move || work(analyzer, work_rx, result_tx))?;
            workers.push(Worker { to, from, handle: Some(handle), work: Vec::with_capacity(BATCH_SEGMENTS) });
        }
        Ok(ShardedPipeline {
            merger: Merger {
                next_global: 0,
                ids: (0..threads).map(|_| IdMap::default()).collect(),
                freed: (0..threads).map(|_| Vec::new()).collect(),
                summary: SummaryBuilder::with_limit(opts.summary_flows),
                events: Vec::new(),
            },
            workers,
            plans: VecDeque::new(),
            plan: Vec::with_capacity(BATCH_SEGMENTS),
            sweeps: SweepClock::default(),
            now: TimestampNs::MIN,
            counters: Counters::default(),
            finished: None,
            max_flows: limits.max_flows,
            spare_work: Vec::new(),
        })
    }

    /// The workers `threads` asks for give: one per partition of the flow table at most.
    pub fn workers(threads: usize, limits: FlowLimits) -> usize {
        threads.min(partitions(limits.max_flows)).clamp(1, MAX_THREADS)
    }

    /// Decodes a frame and hands its segment to its worker; the events of earlier frames
    /// reach `sink` as the workers' results come back.
    pub fn process_frame(
        &mut self,
        frame: &Frame<'_>,
        file_index: u32,
        sink: &mut dyn EventSink,
    ) -> std::io::Result<FrameOutcome> {
        let seg = match self.counters.decode(frame) {
            Ok(seg) => seg,
            Err(reason) => return Ok(FrameOutcome::Skipped(reason)),
        };
        self.counters.count_segment(seg.ts);
        self.now = self.now.max(seg.ts);
        let now = self.now;
        if self.sweeps.due(now) {
            for w in &mut self.workers {
                w.work.push(Work::Sweep { now });
            }
            self.plan.push(SWEEP);
        }
        let key = FlowKey::new(seg.src, seg.sport, seg.dst, seg.dport);
        let shard = partition_of_key(&key, self.max_flows) % self.workers.len();
        let at = PacketRef { frame: frame.number, file_index };
        self.workers[shard].work.push(Work::Segment { seg, at, now });
        self.plan.push(shard as u8);
        if self.plan.len() >= BATCH_SEGMENTS {
            self.hand_out()?;
            if self.plans.len() > BATCHES_IN_FLIGHT {
                self.merge_oldest(sink)?;
            }
        }
        Ok(FrameOutcome::Tcp)
    }

    /// Analysis threads.
    pub fn threads(&self) -> usize {
        self.workers.len()
    }

    /// Registers the next input file, once the events of the frames before it are written
    /// (whether events name their file depends on how many files there are).
    pub fn add_file(&mut self, name: &str, sink: &mut dyn EventSink) -> std::io::Result<()> {
        self.flush(sink)?;
        for w in &self.workers {
            w.to.send(ToWorker::AddFile(name.to_string())).map_err(|_| worker_error())?;
        }
        Ok(())
    }

    /// Hands out the batch being filled and writes the events of every frame given so far
    /// (a follow, when it has read what the capture holds: its events must not wait for a
    /// batch to fill).
    pub fn flush(&mut self, sink: &mut dyn EventSink) -> std::io::Result<()> {
        if !self.plan.is_empty() {
            self.hand_out()?;
        }
        while !self.plans.is_empty() {
            self.merge_oldest(sink)?;
        }
        Ok(())
    }

    /// Sends the batch being filled to the workers.
    fn hand_out(&mut self) -> std::io::Result<()> {
        for (w, freed) in self.workers.iter_mut().zip(&mut self.merger.freed) {
            let fresh = self.spare_work.pop().unwrap_or_else(|| Vec::with_capacity(BATCH_SEGMENTS));
            let work = std::mem::replace(&mut w.work, fresh);
            w.to.send(ToWorker::Batch(work, std::mem::take(freed))).map_err(|_| worker_error())?;
        }
        self.plans.push_back(std::mem::replace(&mut self.plan, Vec::with_capacity(BATCH_SEGMENTS)));
        Ok(())
    }

    /// Merges the results of the oldest batch handed out into `sink`.
    fn merge_oldest(&mut self, sink: &mut dyn EventSink) -> std::io::Result<()> {
        let Some(plan) = self.plans.pop_front() else { return Ok(()) };
        let mut results = Vec::with_capacity(self.workers.len());
        for w in &self.workers {
            match w.from.recv() {
                Ok(FromWorker::Batch(mut r)) => {
                    self.spare_work.push(std::mem::take(&mut r.spent));
                    results.push(r);
                }
                _ => return Err(worker_error()),
            }
        }
        self.merger.merge_batch(&plan, results, &mut self.counters);
        self.merger.flush(sink)
    }

    /// Ends the input: every worker retires its flows, and the workers stop.
    pub fn finish(&mut self, sink: &mut dyn EventSink) -> std::io::Result<()> {
        self.flush(sink)?;
        for w in &self.workers {
            w.to.send(ToWorker::Finish { now: self.now }).map_err(|_| worker_error())?;
        }
        let mut ends = Vec::with_capacity(self.workers.len());
        let (mut flows, mut ev) = (0, EvictionCounts::default());
        for w in &mut self.workers {
            let Ok(FromWorker::Finished(f)) = w.from.recv() else { return Err(worker_error()) };
            flows += f.flows_created;
            ev.add(&f.evictions);
            ends.push(f.results);
            if let Some(h) = w.handle.take() {
                h.join().map_err(|_| worker_error())?;
            }
        }
        let mut taken: Vec<Taken> = ends.into_iter().map(Taken::from).collect();
        self.merger.merge_retirements(&mut taken, &mut self.counters);
        self.finished = Some((flows, ev));
        self.merger.flush(sink)
    }

    fn created_and_evictions(&self) -> (u64, EvictionCounts) {
        self.finished.unwrap_or_default()
    }

    /// The figures of `benchmark.log`; call after [`finish`](Self::finish).
    pub fn figures(&self, sources: Vec<String>, bytes: u64, wall_seconds: f64) -> RunFigures {
        let (flows, ev) = self.created_and_evictions();
        let mut figures = run_figures(&self.counters, flows, ev, sources, bytes, wall_seconds);
        figures.extra.insert("threads".to_string(), self.workers.len().to_string());
        figures
    }

    /// The summary; call after [`finish`](Self::finish).
    pub fn summary(self, sources: Vec<String>, errors: Vec<String>, bytes: u64) -> Summary {
        let (flows, ev) = self.created_and_evictions();
        let totals = totals(&self.counters, flows, ev, bytes);
        self.merger.summary.finish(totals, sources, errors)
    }
}

/// A worker's flow ids (numbered from 0 in the order it creates them) to the stream's:
/// recent ones in a window indexed by id, and the few that outlive the window in a map.
/// Flows mostly end in about the order they start, so the window stays near the number of
/// live flows, and the lookups (one per event) walk it in order rather than all over a
/// hash table.
#[derive(Default)]
struct IdMap {
    /// The worker id of `window[0]`.
    base: u64,
    /// Global ids, [`IdMap::GONE`] for a retired flow.
    window: VecDeque<u64>,
    /// Live flows older than `base`.
    old: FxHashMap<u64, u64>,
    live: usize,
}

impl IdMap {
    const GONE: u64 = u64::MAX;

    /// The worker created its next flow, `global` in the stream.
    fn push(&mut self, global: u64) {
        self.window.push_back(global);
        self.live += 1;
        // A few long-lived flows must not hold a window of every flow since them.
        if self.window.len() > 4_096 && self.window.len() > 4 * self.live {
            for _ in 0..self.window.len() / 2 {
                if let Some(g) = self.window.pop_front().filter(|&g| g != Self::GONE) {
                    self.old.insert(self.base, g);
                }
                self.base += 1;
            }
        }
    }

    fn get(&self, local: u64) -> Option<u64> {
        match local.checked_sub(self.base) {
            Some(i) => self.window.get(i as usize).copied().filter(|&g| g != Self::GONE),
            None => self.old.get(&local).copied(),
        }
    }

    /// The flow retired: its global id, for the last time.
    fn remove(&mut self, local: u64) -> Option<u64> {
        let global = match local.checked_sub(self.base) {
            Some(i) => std::mem::replace(self.window.get_mut(i as usize)?, Self::GONE),
            None => self.old.remove(&local)?,
        };
        if global == Self::GONE {
            return None;
        }
        self.live -= 1;
        while self.window.front() == Some(&Self::GONE) {
            self.window.pop_front();
            self.base += 1;
        }
        Some(global)
    }
}

/// One worker's results of a batch, taken in order as the merge goes.
struct Taken {
    items: std::vec::IntoIter<ItemResult>,
    events: std::iter::Peekable<std::vec::IntoIter<Event>>,
    retired: std::vec::IntoIter<(Box<Flow>, Retirement)>,
}

impl From<Results> for Taken {
    fn from(r: Results) -> Taken {
        Taken { items: r.items.into_iter(), events: r.events.into_iter().peekable(), retired: r.retired.into_iter() }
    }
}

impl Taken {
    /// The next item's counts (a worker gives one per work item, so they do not run out).
    fn next_item(&mut self) -> ItemResult {
        self.items.next().unwrap_or(ItemResult { events: 0, retired: 0, created: 0 })
    }

    /// The next retired flow, those a few after it already on their way to this core's cache:
    /// it was written on the worker's core, and the summary's first read of each retired
    /// flow was most of the merging thread's time.
    fn next_retired(&mut self) -> Option<(Box<Flow>, Retirement)> {
        let next = self.retired.next();
        crate::flow::prefetch::prefetch_ahead(self.retired.as_slice(), |(f, _)| f);
        next
    }

    fn peek_retired(&self) -> Option<&Flow> {
        self.retired.as_slice().first().map(|(f, _)| &**f)
    }
}

impl Merger {
    fn merge_batch(&mut self, plan: &[u8], results: Vec<Results>, counters: &mut Counters) {
        let mut taken: Vec<Taken> = results.into_iter().map(Taken::from).collect();
        for &route in plan {
            if route == SWEEP {
                self.merge_retirements(&mut taken, counters);
                continue;
            }
            let w = route as usize;
            let item = taken[w].next_item();
            // Flows created by this segment take the next global ids.
            for _ in 0..item.created {
                self.ids[w].push(self.next_global);
                self.next_global += 1;
            }
            for _ in 0..item.events {
                if let Some(e) = taken[w].events.next() {
                    self.emit(w, e, counters);
                }
            }
            for _ in 0..item.retired {
                if let Some((flow, why)) = taken[w].next_retired() {
                    self.retire(w, flow, why);
                }
            }
        }
    }

    /// One item of every worker that retires flows (a sweep, the end of input): the flows
    /// in global id order, each after its own events, as one table retires them.
    fn merge_retirements(&mut self, taken: &mut [Taken], counters: &mut Counters) {
        let mut left: Vec<(u32, u32)> = taken
            .iter_mut()
            .map(|t| {
                let item = t.next_item();
                (item.events, item.retired)
            })
            .collect();
        loop {
            let next = (0..taken.len())
                .filter(|&w| left[w].1 > 0)
                .filter_map(|w| Some((w, taken[w].peek_retired()?.id)))
                .min_by_key(|&(w, local)| self.global_id(w, local));
            let Some((w, local)) = next else { break };
            while left[w].0 > 0
                && let Some(e) = taken[w].events.next_if(|e| e.flow_id == local)
            {
                left[w].0 -= 1;
                self.emit(w, e, counters);
            }
            left[w].1 -= 1;
            if let Some((flow, why)) = taken[w].next_retired() {
                self.retire(w, flow, why);
            }
        }
        // Retiring only emits events of the flow retired; anything else goes out after.
        for (w, t) in taken.iter_mut().enumerate() {
            for _ in 0..left[w].0 {
                if let Some(e) = t.events.next() {
                    self.emit(w, e, counters);
                }
            }
        }
    }

    fn global_id(&self, worker: usize, local: u64) -> u64 {
        self.ids[worker].get(local).unwrap_or(local)
    }

    fn emit(&mut self, worker: usize, mut e: Event, counters: &mut Counters) {
        e.flow_id = self.global_id(worker, e.flow_id);
        counters.events[e.event.index()] += 1;
        self.events.push(e);
    }

    fn retire(&mut self, worker: usize, mut flow: Box<Flow>, why: Retirement) {
        if let Some(global) = self.ids[worker].remove(flow.id) {
            flow.id = global;
        }
        // Often the flow just retired; else one retired earlier, maybe by another worker
        // (mimalloc frees it on the thread that allocated it either way).
        if let Some(free) = self.summary.add(flow, why) {
            self.freed[worker].push(free);
        }
    }

    fn flush(&mut self, sink: &mut dyn EventSink) -> std::io::Result<()> {
        if self.events.is_empty() {
            return Ok(());
        }
        let r = sink.on_events(&self.events);
        self.events.clear();
        r
    }
}

/// A worker: its analyzer over the work it is given, until told the input ended.
fn work(mut analyzer: Analyzer, work: Receiver<ToWorker>, results: SyncSender<FromWorker>) {
    while let Ok(msg) = work.recv() {
        match msg {
            ToWorker::Batch(mut items, freed) => {
                // Freeing reads each flow's lists (last touched on the merger's core).
                let mut freed = freed.into_iter();
                while let Some(flow) = freed.next() {
                    crate::flow::prefetch::prefetch_ahead(freed.as_slice(), |f| f);
                    drop(flow);
                }
                let mut out = Results { items: Vec::with_capacity(items.len()), ..Default::default() };
                for (i, item) in items.iter().enumerate() {
                    if let Some(Work::Segment { seg, .. }) = items.get(i + SEGMENT_READ_AHEAD)
                        && analyzer.worth_prefetching()
                    {
                        analyzer.prefetch(seg);
                    }
                    let events_before = out.events.len();
                    let created_before = analyzer.flows_created();
                    match item {
                        Work::Segment { seg, at, now } => {
                            analyzer.advance_clock(*now);
                            analyzer.process(seg, *at, &mut out.events);
                        }
                        Work::Sweep { now } => analyzer.sweep(*now, &mut out.events),
                    }
                    let retired_before = out.retired.len();
                    out.retired.extend(analyzer.take_retired());
                    out.items.push(ItemResult {
                        events: (out.events.len() - events_before) as u32,
                        retired: (out.retired.len() - retired_before) as u32,
                        created: (analyzer.flows_created() - created_before) as u32,
                    });
                }
                items.clear();
                out.spent = items;
                if results.send(FromWorker::Batch(out)).is_err() {
                    return;
                }
            }
            ToWorker::AddFile(name) => {
                analyzer.add_file(&name);
            }
            ToWorker::Finish { now } => {
                analyzer.advance_clock(now);
                let mut events = Vec::new();
                analyzer.finish(&mut events);
                let retired: Vec<_> = analyzer.take_retired().collect();
                let item = ItemResult { events: events.len() as u32, retired: retired.len() as u32, created: 0 };
                let _ = results.send(FromWorker::Finished(Finished {
                    results: Results { items: vec![item], events, retired, spent: Vec::new() },
                    flows_created: analyzer.flows_created(),
                    evictions: analyzer.evictions(),
                }));
                return;
            }
        }
    }
}

#[cfg(test)]
#[path = "sharded_tests.rs"]
mod tests;
