//! Building the summary while flows end: the most troubled listed, the rest folded into
//! totals, so that the memory it takes is bounded by the listing, not by the flows seen.

use std::collections::BTreeMap;

use super::{FlowSummary, FoldedTotals, MAX_LISTED_FLOWS, Summary, Totals, ended_by, flow_state};
use crate::event::EventKind;
use crate::flow::state::Flow;
use crate::flow::table::Retirement;
use crate::output::sections::Sections;

/// Collects flows as they end and keeps the listing bounded: the `limit` most troubled
/// flows (ties: the earliest), the rest summed into [`FoldedTotals`]. A flow that cannot
/// make the list is never summarised, so a capture of millions of connections costs no
/// more than its top.
#[derive(Debug)]
pub struct SummaryBuilder {
    /// A heap whose top is the listed flow that would leave first.
    kept: std::collections::BinaryHeap<Listed>,
    folded: Folding,
    limit: usize,
    /// Kernel counts of every flow added, listed or folded.
    kernel: Option<crate::flow::kernel_join::KernelCounts>,
}

/// A listed flow, ordered so that the greatest is the least troubled (then the latest).
/// The retired flow itself (its trackers freed), with its rank beside it: it is summarised
/// once, at the end, if it is still listed then; the heap's sifts compare 16 bytes in
/// place; and a flow is smaller than its summary (a third of its size, with the summary's
/// maps and strings).
#[derive(Debug)]
struct Listed {
    rank: (std::cmp::Reverse<u64>, u64),
    flow: Box<Flow>,
    why: Retirement,
}

impl PartialEq for Listed {
    fn eq(&self, other: &Self) -> bool {
        self.rank == other.rank
    }
}

impl Eq for Listed {}

impl PartialOrd for Listed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Listed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.rank.cmp(&other.rank)
    }
}

impl Default for SummaryBuilder {
    fn default() -> Self {
        SummaryBuilder::with_limit(MAX_LISTED_FLOWS)
    }
}

impl SummaryBuilder {
    pub fn with_limit(limit: usize) -> SummaryBuilder {
        SummaryBuilder {
            kept: std::collections::BinaryHeap::new(),
            folded: Folding::default(),
            limit: limit.max(1),
            kernel: None,
        }
    }

    /// Adds a retired flow: listed if it is among the most troubled so far, else folded
    /// into the totals. Returns the flow that is not kept (this one, or the one it pushed
    /// out of the listing), for the caller to free.
    pub fn add(&mut self, mut flow: Box<Flow>, why: Retirement) -> Option<Box<Flow>> {
        if let Some(k) = &flow.kernel {
            self.kernel.get_or_insert_with(Default::default).add(&k.counts);
        }
        let tally = FlowTally::of(&flow);
        let rank = (std::cmp::Reverse(tally.trouble_score), flow.id);
        let mut out = None;
        if self.kept.len() >= self.limit {
            if self.kept.peek().is_some_and(|last| rank >= last.rank) {
                self.folded.add(&tally, why);
                return Some(flow);
            }
            if let Some(least) = self.kept.pop() {
                self.folded.add(&FlowTally::of(&least.flow), least.why);
                out = Some(least.flow);
            }
        }
        flow.shrink_to_counts();
        self.kept.push(Listed { rank, flow, why });
        out
    }

    pub fn finish(self, mut totals: Totals, sources: Vec<String>, errors: Vec<String>) -> Summary {
        totals.flows_folded = self.folded.flows;
        totals.kernel = self.kernel;
        totals.folded = self.folded.finish();
        // Ascending rank: most troubled first, then by flow id.
        let flows = self.kept.into_sorted_vec().into_iter().map(|l| FlowSummary::from_flow(&l.flow, l.why)).collect();
        Summary {
            schema_version: crate::event::SCHEMA_VERSION,
            tool: format!("tcpviz {}", env!("CARGO_PKG_VERSION")),
            sources,
            totals,
            errors,
            flows,
            sections: Sections::default(),
        }
    }
}

/// What the summary needs of a retired flow it does not list: its rank and its totals.
#[derive(Debug, Clone, Copy)]
struct FlowTally {
    trouble_score: u64,
    packets: u64,
    bytes: u64,
    retransmitted_bytes: u64,
    events: [u32; EventKind::COUNT],
    state: &'static str,
}

impl FlowTally {
    fn of(flow: &Flow) -> FlowTally {
        let mut t = FlowTally {
            trouble_score: 0,
            packets: 0,
            bytes: 0,
            retransmitted_bytes: 0,
            events: [0; EventKind::COUNT],
            state: flow_state(flow),
        };
        for d in &flow.dirs {
            t.packets += d.stats.packets;
            t.bytes += d.stats.payload_bytes;
            t.retransmitted_bytes += d.stats.retransmitted_bytes;
            for (sum, n) in t.events.iter_mut().zip(d.stats.events.to_array()) {
                *sum += n;
            }
        }
        t.trouble_score = crate::flow::state::trouble_score(&t.events);
        t
    }
}

/// [`FoldedTotals`] while flows are added: counts in arrays, not maps.
#[derive(Debug, Default)]
struct Folding {
    flows: u64,
    packets: u64,
    bytes: u64,
    retransmitted_bytes: u64,
    events: [u64; EventKind::COUNT],
    states: NameCounts,
    ended_by: NameCounts,
}

/// Counts by a name out of a handful (`flow_state`'s and `ended_by`'s): a short list
/// searched in place, once per folded flow, where a map compared strings.
#[derive(Debug, Default)]
struct NameCounts(Vec<(&'static str, u64)>);

impl NameCounts {
    fn add(&mut self, name: &'static str) {
        match self.0.iter_mut().find(|(n, _)| std::ptr::eq(*n, name) || *n == name) {
            Some((_, count)) => *count += 1,
            None => self.0.push((name, 1)),
        }
    }

    /// By name, as the summary lists them.
    fn into_sorted(self) -> BTreeMap<String, u64> {
        let mut sorted = BTreeMap::new();
        for (name, count) in self.0 {
            *sorted.entry(name.to_string()).or_default() += count;
        }
        sorted
    }
}

impl Folding {
    fn add(&mut self, t: &FlowTally, why: Retirement) {
        self.flows += 1;
        self.packets += t.packets;
        self.bytes += t.bytes;
        self.retransmitted_bytes += t.retransmitted_bytes;
        for (sum, n) in self.events.iter_mut().zip(t.events) {
            *sum += n as u64;
        }
        self.states.add(t.state);
        self.ended_by.add(ended_by(why));
    }

    fn finish(self) -> Option<FoldedTotals> {
        (self.flows > 0).then(|| FoldedTotals {
            flows: self.flows,
            packets: self.packets,
            bytes: self.bytes,
            retransmitted_bytes: self.retransmitted_bytes,
            events: EventKind::ALL
                .iter()
                .filter(|k| self.events[k.index()] > 0)
                .map(|k| (*k, self.events[k.index()]))
                .collect(),
            states: self.states.into_sorted(),
            ended_by: self.ended_by.into_sorted(),
        })
    }
}
