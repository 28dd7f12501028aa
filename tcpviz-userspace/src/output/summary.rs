//! `summary.json`: per-flow and overall figures, and the readable table of
//! `tcpviz summary`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::event::EventKind;
use crate::flow::state::{DirState, Flow, RttStats, trouble_score};
use crate::flow::table::Retirement;
use crate::output::sections::Sections;
use crate::time::ts_to_secs;

mod builder;
pub use builder::SummaryBuilder;

/// How many flows the summary lists individually by default (`--summary-flows`); beyond,
/// the least troubled are folded into [`FoldedTotals`], so the summary and the memory that
/// builds it stay bounded on captures with millions of flows. Ten thousand is more than a
/// reader goes through, and keeps summary.json near 10 MB.
pub const MAX_LISTED_FLOWS: usize = 10_000;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RttSummary {
    pub samples: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub min_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub median_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub max_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mean_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub srtt_ms: Option<f64>,
    /// False when the median is estimated from a sample of the RTTs.
    pub median_exact: bool,
}

impl RttSummary {
    fn from_stats(r: &RttStats) -> RttSummary {
        let ms = |ns: i64| ns as f64 / 1e6;
        if r.count == 0 {
            return RttSummary { median_exact: true, ..Default::default() };
        }
        RttSummary {
            samples: r.count,
            min_ms: Some(ms(r.min_ns)),
            median_ms: r.median_ns().map(ms),
            max_ms: Some(ms(r.max_ns)),
            mean_ms: Some(ms(r.sum_ns / r.count as i64)),
            srtt_ms: r.srtt_ns().map(ms),
            median_exact: r.median_is_exact(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DirectionSummary {
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
    pub packets: u64,
    /// TCP payload bytes.
    pub bytes: u64,
    pub retransmitted_bytes: u64,
    pub max_bytes_in_flight: u32,
    /// RTT of this direction's data (its segments until their ACKs), by sequence and ACK
    /// numbers under Karn's rule (Wireshark's `tcp.analysis.ack_rtt`).
    pub rtt: RttSummary,
    /// RTT of this direction's data from TCP timestamp echoes (RFC 7323): the first send of
    /// each TSval until the first ACK that echoes it; it keeps sampling through recovery.
    /// Absent without timestamps.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rtt_timestamps: Option<RttSummary>,
    pub events: BTreeMap<EventKind, u64>,
    /// What limited this direction's sending, as fractions of its time from its second
    /// data segment on (`flow::limits`). Absent for a direction that sent less.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub limited_by: Option<crate::flow::limits::LimitedBy>,
    /// Live sessions: the process owning the socket that sends this direction, when this
    /// host holds it and a hook saw it open (`crate::attribution`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub process: Option<std::sync::Arc<crate::attribution::Process>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FlowSummary {
    pub flow_id: u64,
    pub first_ts: f64,
    pub last_ts: f64,
    pub duration_s: f64,
    pub packets: u64,
    pub bytes: u64,
    /// Retransmitted payload bytes over all payload bytes.
    pub retransmission_rate: f64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub handshake_rtt_ms: Option<f64>,
    /// open, closed (FIN both ways), reset, or refused.
    pub state: String,
    /// Why it left the flow table: end, idle, capacity, reused.
    pub ended_by: String,
    pub trouble_score: u64,
    pub events: BTreeMap<EventKind, u64>,
    /// Direction 0 is from the endpoint that sent the first packet seen.
    pub directions: [DirectionSummary; 2],
    /// What the kernel hooks reported, beside the wire counts (live sessions).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub kernel: Option<crate::flow::kernel_join::KernelCounts>,
    /// Live, capture policy `troubled`: when the kernel side began watching the connection
    /// (epoch seconds, as `first_ts`). Its wire view begins there: earlier packets are not
    /// in it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub watched_since: Option<f64>,
    /// What started that watch: a tracepoint (`tcp_retransmit_skb`, `tcp_cong_state_set`,
    /// …), `sack_sent` or `zero_window_sent` (an ACK this host sent).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub watch_reason: Option<String>,
    /// Watches that started from then on: more than one means gaps in the wire view (a
    /// watch ends `--watch-secs` after the last trouble).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub watch_starts: Option<u64>,
}

impl FlowSummary {
    /// The direction that carries the data (more payload bytes): its RTT is the flow's RTT.
    pub fn data_direction(&self) -> usize {
        if self.directions[1].bytes > self.directions[0].bytes { 1 } else { 0 }
    }

    /// RTT of the flow's data, else of whichever direction has samples. Measured at the
    /// capture point: the other direction's is often the local host's ACK delay.
    pub fn data_rtt(&self) -> &RttSummary {
        let d = self.data_direction();
        if self.directions[d].rtt.samples > 0 { &self.directions[d].rtt } else { &self.directions[1 - d].rtt }
    }

    pub fn from_flow(flow: &Flow, why: Retirement) -> FlowSummary {
        let dir = |i: usize| -> DirectionSummary {
            let d: &DirState = &flow.dirs[i];
            let (src, dst) = (flow.endpoints[i], flow.endpoints[1 - i]);
            DirectionSummary {
                src: src.0,
                sport: src.1,
                dst: dst.0,
                dport: dst.1,
                packets: d.stats.packets,
                bytes: d.stats.payload_bytes,
                retransmitted_bytes: d.stats.retransmitted_bytes,
                max_bytes_in_flight: d.max_bytes_in_flight,
                rtt: RttSummary::from_stats(&d.stats.rtt),
                rtt_timestamps: d.ts_rtt().map(|t| RttSummary::from_stats(&t.rtt)),
                events: counts_map(&d.stats.events.to_array()),
                limited_by: d.limited_by(),
                process: None,
            }
        };
        let mut total = [0u32; EventKind::COUNT];
        for d in &flow.dirs {
            for (t, c) in total.iter_mut().zip(d.stats.events.to_array()) {
                *t += c;
            }
        }
        let bytes: u64 = flow.dirs.iter().map(|d| d.stats.payload_bytes).sum();
        let retrans: u64 = flow.dirs.iter().map(|d| d.stats.retransmitted_bytes).sum();
        FlowSummary {
            flow_id: flow.id,
            first_ts: ts_to_secs(flow.first_ts),
            last_ts: ts_to_secs(flow.last_ts),
            duration_s: (flow.last_ts - flow.first_ts) as f64 / 1e9,
            packets: flow.dirs.iter().map(|d| d.stats.packets).sum(),
            bytes,
            retransmission_rate: if bytes > 0 { retrans as f64 / bytes as f64 } else { 0.0 },
            handshake_rtt_ms: (flow.first_rtt > 0).then(|| flow.first_rtt as f64 / 1e6),
            state: flow_state(flow).into(),
            ended_by: ended_by(why).into(),
            trouble_score: trouble_score(&total),
            events: counts_map(&total),
            directions: [dir(0), dir(1)],
            kernel: flow.kernel.as_ref().map(|k| k.counts.clone()),
            watched_since: flow.watch().map(|w| ts_to_secs(w.since)),
            watch_reason: flow.watch().map(|w| w.reason.to_string()),
            watch_starts: flow.watch().map(|w| w.starts),
        }
    }

    /// Short label: `a:port -> b:port`.
    pub fn label(&self) -> String {
        let d = &self.directions[0];
        format!("{} -> {}", endpoint(d.src, d.sport), endpoint(d.dst, d.dport))
    }

    /// The owners of both ends, in the order of `label` (`-` for an end not attributed), or
    /// None when neither is known.
    pub fn processes_label(&self) -> Option<String> {
        let [a, b] = &self.directions;
        if a.process.is_none() && b.process.is_none() {
            return None;
        }
        let l = |d: &DirectionSummary| d.process.as_ref().map_or_else(|| "-".into(), |p| p.label());
        Some(format!("{} -> {}", l(a), l(b)))
    }

    pub fn count(&self, kind: EventKind) -> u64 {
        self.events.get(&kind).copied().unwrap_or(0)
    }

    /// What limited the data direction (`rwnd 82%`), `-` when it sent too little to say.
    pub fn limited_label(&self) -> String {
        self.directions[self.data_direction()].limited_by.map_or_else(|| "-".into(), |l| l.label())
    }

    /// Retransmission events of every kind (plain, fast, spurious).
    pub fn retransmissions(&self) -> u64 {
        self.events.iter().filter(|(k, _)| k.is_retransmission()).map(|(_, n)| n).sum()
    }
}

/// open, closed (FIN both ways), reset, or refused.
fn flow_state(flow: &Flow) -> &'static str {
    let lc = &flow.lifecycle;
    if lc.refused {
        "refused"
    } else if lc.rst_seen {
        "reset"
    } else if flow.dirs[0].fin_seen && flow.dirs[1].fin_seen {
        "closed"
    } else {
        "open"
    }
}

fn ended_by(why: Retirement) -> &'static str {
    match why {
        Retirement::End => "end",
        Retirement::Idle => "idle",
        Retirement::Capacity => "capacity",
        Retirement::Reused => "reused",
    }
}

pub fn endpoint(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

fn counts_map(counts: &[u32; EventKind::COUNT]) -> BTreeMap<EventKind, u64> {
    EventKind::ALL.iter().filter(|k| counts[k.index()] > 0).map(|k| (*k, counts[k.index()] as u64)).collect()
}

/// Overall figures.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Totals {
    /// Packet records read.
    pub packets: u64,
    /// Packets that decoded as TCP segments.
    pub tcp_segments: u64,
    /// Frames skipped, by reason.
    pub skipped: BTreeMap<String, u64>,
    pub flows: u64,
    pub bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub first_ts: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub last_ts: Option<f64>,
    pub duration_s: f64,
    pub events: BTreeMap<EventKind, u64>,
    pub flows_evicted_idle: u64,
    /// Open connections evicted because more were alive than `--max-flows`.
    pub flows_evicted_capacity: u64,
    /// Closed connections evicted (before any open one) because the table was full.
    #[serde(default)]
    pub flows_evicted_closed: u64,
    /// Evicted connections seen again, whose analysis went on where it stopped.
    #[serde(default)]
    pub flows_resumed: u64,
    /// Evicted connections let go (the store of evicted connections is bounded too): their
    /// summary entry is written then, and seen again they start a new flow, as in a capture
    /// that begins in their middle.
    #[serde(default)]
    pub flows_evicted_forgotten: u64,
    /// Flows not listed individually (folded because there were too many).
    pub flows_folded: u64,
    /// What the folded flows add up to (absent when every flow is listed).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub folded: Option<FoldedTotals>,
    /// Live sessions (and `--kernel-events`): the kernel's retransmission counts of every
    /// flow, listed or folded, and how they were reconciled with the wire's.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub kernel: Option<crate::flow::kernel_join::KernelCounts>,
}

impl Totals {
    /// What a full flow table did, in words (None if it never was full).
    pub fn eviction_line(&self) -> Option<String> {
        use crate::report::page::fmt_count;
        if self.flows_evicted_capacity + self.flows_evicted_closed == 0 {
            return None;
        }
        Some(format!(
            "flow table full (--max-flows): {} open and {} closed connections evicted, {} of them seen again and \
             analysed on from where they stopped, {} let go (seen again after that, a connection starts a new flow)",
            fmt_count(self.flows_evicted_capacity),
            fmt_count(self.flows_evicted_closed),
            fmt_count(self.flows_resumed),
            fmt_count(self.flows_evicted_forgotten)
        ))
    }

    /// How the kernel's retransmissions and the wire's were reconciled, in words (None
    /// without kernel reports).
    pub fn kernel_line(&self) -> Option<String> {
        use crate::report::page::fmt_count;
        let k = self.kernel.as_ref()?;
        Some(format!(
            "retransmitted segments: {} (the kernel reported {} in {} tcp_retransmit_skb, {} of them found on the wire; \
             {} segments the wire rules called out_of_order are counted as retransmissions because the kernel \
             resent them, and every retransmission figure uses that verdict)",
            fmt_count(k.retransmitted_segments),
            fmt_count(k.kernel_retransmitted_segments),
            fmt_count(k.kernel_retransmissions),
            fmt_count(k.matched_segments),
            fmt_count(k.reclassified),
        ))
    }
}

/// The sums of the flows folded out of the listing: a capture of millions of flows keeps
/// its totals without one entry per flow.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FoldedTotals {
    pub flows: u64,
    pub packets: u64,
    /// TCP payload bytes.
    pub bytes: u64,
    pub retransmitted_bytes: u64,
    pub events: BTreeMap<EventKind, u64>,
    /// Flows by state (open, closed, reset, refused).
    pub states: BTreeMap<String, u64>,
    /// Flows by why they left the flow table (end, idle, capacity, reused).
    pub ended_by: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub schema_version: u32,
    pub tool: String,
    pub sources: Vec<String>,
    pub totals: Totals,
    /// Errors of the run: damaged inputs (the figures cover what came before them), and
    /// files the long-running modes could not write (with the lines not written).
    pub errors: Vec<String>,
    /// Flows sorted by trouble (worst first), then by flow id.
    pub flows: Vec<FlowSummary>,
    /// Extra sections (alerts, kernel counts) added by other sources.
    #[serde(default, skip_serializing_if = "Sections::is_empty")]
    pub sections: Sections,
}

/// The readable table of `tcpviz summary`: flows sorted by trouble.
pub fn render_table(summary: &Summary, top: usize) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let t = &summary.totals;
    let _ = writeln!(
        s,
        // The span is the capture's (first to last packet), not the time the analysis took.
        "{} packets ({} TCP) spanning {:.1} s of capture, {} flows, {} events",
        t.packets,
        t.tcp_segments,
        t.duration_s,
        t.flows,
        t.events.values().sum::<u64>()
    );
    if !t.events.is_empty() {
        let kinds: Vec<String> = t.events.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(s, "events: {}", kinds.join(", "));
    }
    let skipped: u64 = t.skipped.values().sum();
    if skipped > 0 {
        let r: Vec<String> = t.skipped.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(s, "skipped frames: {skipped} ({})", r.join(", "));
    }
    if let Some(line) = t.eviction_line() {
        let _ = writeln!(s, "{line}");
    }
    if let Some(line) = t.kernel_line() {
        let _ = writeln!(s, "{line}");
    }
    for e in &summary.errors {
        let _ = writeln!(s, "error: {e}");
    }
    let _ = writeln!(s);
    // Live sessions: the kernel's retransmitted segments beside the wire's, how many were
    // found on the wire, and how many of the wire's out-of-order ones they made
    // retransmissions (`retx` and `retx%` already count those).
    let kernel = summary.flows.iter().any(|f| f.kernel.is_some());
    let _ = write!(
        s,
        "{:>6}  {:<47} {:>8} {:>10} {:>7} {:>6} {:>6} {:>6} {:>5} {:>9} {:>8} {:>9}",
        "flow", "connection", "packets", "bytes", "retx%", "retx", "ooo", "lost", "zwin", "rtt(ms)", "score", "limited"
    );
    if kernel {
        let _ = write!(s, " {:>6} {:>7} {:>7}", "k-retx", "matched", "ooo>rtx");
    }
    // Live sessions: the processes owning the connection's sockets.
    let processes = summary.flows.iter().take(top).any(|f| f.processes_label().is_some());
    let _ = writeln!(s, "  state{}", if processes { "        processes" } else { "" });
    for f in summary.flows.iter().take(top) {
        let retx = f.retransmissions();
        let rtt = f.data_rtt().median_ms.map(|m| format!("{m:.3}")).unwrap_or_else(|| "-".into());
        let mut label = f.label();
        if label.len() > 47 {
            label.truncate(46);
            label.push('…');
        }
        let _ = write!(
            s,
            "{:>6}  {:<47} {:>8} {:>10} {:>7.2} {:>6} {:>6} {:>6} {:>5} {:>9} {:>8} {:>9}",
            f.flow_id,
            label,
            f.packets,
            f.bytes,
            f.retransmission_rate * 100.0,
            retx,
            f.count(EventKind::OutOfOrder),
            f.count(EventKind::LostSegment),
            f.count(EventKind::ZeroWindow),
            rtt,
            f.trouble_score,
            f.limited_label(),
        );
        if kernel {
            match &f.kernel {
                Some(k) => {
                    let _ = write!(
                        s,
                        " {:>6} {:>7} {:>7}",
                        k.kernel_retransmitted_segments, k.matched_segments, k.reclassified
                    );
                }
                None => {
                    let _ = write!(s, " {:>6} {:>7} {:>7}", "-", "-", "-");
                }
            }
        }
        match f.processes_label().filter(|_| processes) {
            Some(p) => {
                let _ = writeln!(s, "  {:<12} {p}", f.state);
            }
            None => {
                let _ = writeln!(s, "  {}", f.state);
            }
        }
    }
    if summary.flows.len() > top {
        let _ = writeln!(s, "… {} more flows (see summary.json)", summary.flows.len() - top);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_flow_table_is_said_in_words_and_a_table_with_room_is_not() {
        assert_eq!(Totals::default().eviction_line(), None);
        let t = Totals { flows_evicted_closed: 40_040, flows_evicted_forgotten: 39_016, ..Default::default() };
        let line = t.eviction_line().unwrap();
        assert!(line.contains("0 open and 40,040 closed connections evicted"), "{line}");
        assert!(line.contains("39,016 let go"), "{line}");
    }
}
