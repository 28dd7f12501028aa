//! The analysis side of the terminal view: about once a second (wall time) it walks the
//! flow table and the alert engine's windows and publishes a [`Snapshot`]. Between
//! snapshots it only keeps the last trouble events of each connection and the latest
//! alerts; nothing is done per packet.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::{FxHashMap, FxHashSet};

use super::snapshot::{AlertLine, EventLine, FlowDetail, FlowRow, KernelView, Snapshot, SnapshotSlot, ViewMode};
use crate::alert::{Alert, AlertEngine, Level};
use crate::event::{Event, EventKind, KernelSample, Origin};
use crate::flow::state::{Flow, trouble_score};
use crate::pipeline::Pipeline;
use crate::time::TimestampNs;

/// Rows handed to the view (the worst by score); the filter searches these.
pub const MAX_ROWS: usize = 1000;
/// Connections whose history is kept for the detail view (the worst first).
const MAX_HISTORIES: usize = 200;
/// Samples of history: one a snapshot, so about three minutes.
const HISTORY: usize = 180;
const RECENT_EVENTS: usize = 12;
/// Connections whose recent events are kept between snapshots.
const MAX_RECENT_FLOWS: usize = 4096;
const MAX_ALERTS: usize = 50;
const KERNEL_SAMPLES: usize = 65_536;
pub const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// The interface a connection (its endpoints, first sender first) is watched on, if known.
pub type InterfaceOf<'a> = dyn Fn((std::net::IpAddr, u16), (std::net::IpAddr, u16)) -> Option<String> + 'a;

/// For sources that know no interface (captures, follow).
pub fn no_interface(_: (std::net::IpAddr, u16), _: (std::net::IpAddr, u16)) -> Option<String> {
    None
}

#[derive(Default)]
struct History {
    bytes_per_s: VecDeque<u64>,
    rtt_us: VecDeque<u64>,
    in_flight: VecDeque<u64>,
    cwnd: VecDeque<u64>,
}

fn push(v: &mut VecDeque<u64>, x: u64) {
    if v.len() == HISTORY {
        v.pop_front();
    }
    v.push_back(x);
}

/// What the previous snapshot saw of a connection, to turn totals into rates.
#[derive(Clone, Copy, Default)]
struct Previous {
    packets: u64,
    bytes: u64,
    zero_window_ns: i64,
}

pub struct ViewFeed {
    slot: SnapshotSlot,
    mode: ViewMode,
    source: String,
    last_publish: Option<Instant>,
    last_event_time: Option<TimestampNs>,
    last_retx: u64,
    sequence: u64,
    retx_per_sec: VecDeque<u64>,
    previous: FxHashMap<u64, Previous>,
    histories: FxHashMap<u64, History>,
    recent: FxHashMap<u64, VecDeque<EventLine>>,
    alerts: VecDeque<AlertLine>,
    kernel: FxHashMap<u64, KernelView>,
}

impl ViewFeed {
    pub fn new(slot: SnapshotSlot, mode: ViewMode, source: String) -> ViewFeed {
        ViewFeed {
            slot,
            mode,
            source,
            last_publish: None,
            last_event_time: None,
            last_retx: 0,
            sequence: 0,
            retx_per_sec: VecDeque::new(),
            previous: FxHashMap::default(),
            histories: FxHashMap::default(),
            recent: FxHashMap::default(),
            alerts: VecDeque::new(),
            kernel: FxHashMap::default(),
        }
    }

    /// A snapshot is due (the first one at once).
    pub fn due(&self) -> bool {
        self.last_publish.is_none_or(|t| t.elapsed() >= PUBLISH_EVERY)
    }

    /// Keeps the trouble events (and kernel reports) of each connection for its detail.
    pub fn note_events(&mut self, events: &[Event]) {
        for e in events {
            if e.event.trouble_weight() == 0 && e.origin != Origin::Kernel {
                continue;
            }
            if self.recent.len() >= MAX_RECENT_FLOWS && !self.recent.contains_key(&e.flow_id) {
                continue;
            }
            let list = self.recent.entry(e.flow_id).or_default();
            if list.len() == RECENT_EVENTS {
                list.pop_back();
            }
            list.push_front(EventLine { ts: e.ts, kind: e.event, from: (e.src, e.sport), seq: e.seq, len: e.len });
        }
    }

    /// What the header names as the source (the live agent's hooks, once attached).
    pub fn set_source(&mut self, source: String) {
        self.source = source;
    }

    /// Keeps the WARN and CRITICAL changes for the alerts pane.
    pub fn note_alerts(&mut self, alerts: &[Alert]) {
        for a in alerts.iter().filter(|a| a.level != Level::Ok) {
            if self.alerts.len() == MAX_ALERTS {
                self.alerts.pop_back();
            }
            self.alerts.push_front(AlertLine {
                ts: a.ts,
                level: a.level,
                flow_id: a.flow_id,
                src: (a.src, a.sport),
                dst: (a.dst, a.dport),
                message: a.message.clone(),
            });
        }
    }

    /// The kernel's srtt, cwnd and ssthresh of a socket joined to a wire flow (live).
    pub fn note_kernel_sample(&mut self, s: &KernelSample) {
        let Some(id) = s.flow_id else { return };
        if self.kernel.len() >= KERNEL_SAMPLES && !self.kernel.contains_key(&id) {
            self.kernel.clear();
        }
        self.kernel
            .insert(id, KernelView { srtt_ms: s.srtt_us as f64 / 1000.0, cwnd: s.snd_cwnd, ssthresh: s.ssthresh });
    }

    /// Builds and publishes a snapshot. `records_lost`: what the source lost so far.
    pub fn publish(
        &mut self,
        pipeline: &Pipeline,
        engine: &AlertEngine,
        owners: &crate::attribution::Owners,
        interface_of: &InterfaceOf<'_>,
        records_lost: u64,
    ) {
        let now = Instant::now();
        let wall_s = self.last_publish.map_or(1.0, |t| now.duration_since(t).as_secs_f64().max(1e-3));
        self.last_publish = Some(now);
        let c = &pipeline.counters;
        let event_dt_s = match (self.last_event_time, c.last_ts) {
            (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e9,
            _ => 0.0,
        };
        self.last_event_time = c.last_ts;

        let retx: u64 = EventKind::ALL.iter().filter(|k| k.is_retransmission()).map(|k| c.events[k.index()]).sum();
        if self.retx_per_sec.len() == HISTORY {
            self.retx_per_sec.pop_front();
        }
        self.retx_per_sec.push_back(((retx - self.last_retx.min(retx)) as f64 / wall_s).round() as u64);
        self.last_retx = retx;

        // The alert windows: per flow, retransmissions and out-of-order now, and the level.
        let mut windows: FxHashMap<u64, (u64, u64, Level)> = FxHashMap::default();
        for (flow, kind, count, level) in engine.window_counts() {
            let w = windows.entry(flow).or_insert((0, 0, Level::Ok));
            if kind.is_retransmission() {
                w.0 += count;
            } else if kind == EventKind::OutOfOrder {
                w.1 += count;
            }
            w.2 = w.2.max(level);
        }

        let mut previous = FxHashMap::default();
        // The worst MAX_ROWS, kept as the flows go by: every connection's row at once was
        // tens of megabytes on a table of hundreds of thousands.
        let by_score = |a: &FlowRow, b: &FlowRow| super::snapshot::compare(a, b, super::snapshot::SortColumn::Score);
        let mut rows: Vec<FlowRow> = Vec::new();
        for flow in pipeline.analyzer().active_flows() {
            let before = self.previous.get(&flow.id).copied().unwrap_or_default();
            let (row, seen) = self.row(flow, before, event_dt_s, windows.get(&flow.id).copied());
            previous.insert(flow.id, seen);
            rows.push(row);
            if rows.len() == 2 * MAX_ROWS {
                rows.select_nth_unstable_by(MAX_ROWS - 1, by_score);
                rows.truncate(MAX_ROWS);
            }
        }
        self.previous = previous;
        rows.sort_by(by_score);
        rows.truncate(MAX_ROWS);
        // Owners of the rows shown only: two lookups per row, not per connection.
        for row in rows.iter_mut() {
            row.process = owners.either(row.a, row.b).map(|p| format!("{}[{}]", p.service(), p.pid));
            row.interface = interface_of(row.a, row.b);
        }

        self.record_histories(pipeline, &mut rows);
        let active: FxHashSet<u64> = self.previous.keys().copied().collect();
        self.recent.retain(|id, _| active.contains(id));
        self.kernel.retain(|id, _| active.contains(id));

        self.sequence += 1;
        self.slot.store(Snapshot {
            mode: self.mode,
            source: self.source.clone(),
            event_time: c.last_ts,
            sequence: self.sequence,
            packets: c.packets,
            tcp_segments: c.tcp_segments,
            flows_active: pipeline.analyzer().flows_active(),
            flows_seen: pipeline.analyzer().flows_created(),
            events: c.events.iter().sum(),
            retransmissions: retx,
            alerts_active: engine.active(),
            records_lost,
            retx_per_sec: self.retx_per_sec.iter().copied().collect(),
            rows,
            alerts: self.alerts.iter().cloned().collect(),
        });
    }

    fn row(
        &self,
        flow: &Flow,
        before: Previous,
        event_dt_s: f64,
        window: Option<(u64, u64, Level)>,
    ) -> (FlowRow, Previous) {
        let packets = flow.dirs[0].stats.packets + flow.dirs[1].stats.packets;
        let bytes = flow.dirs[0].stats.payload_bytes + flow.dirs[1].stats.payload_bytes;
        let rate = |now: u64, then: u64| {
            if event_dt_s > 0.0 { now.saturating_sub(then) as f64 / event_dt_s } else { 0.0 }
        };
        // A side advertising a zero window now is counted as stalled since the last
        // snapshot: a sample, cheap, and right to about a second.
        let stalled = !flow.is_closed() && flow.dirs.iter().any(|d| d.scaled_window() == Some(0));
        let zero_window_ns = before.zero_window_ns + if stalled { (event_dt_s * 1e9) as i64 } else { 0 };
        let total = |pred: fn(EventKind) -> bool| -> u64 {
            EventKind::ALL
                .iter()
                .filter(|k| pred(**k))
                .map(|k| flow.dirs.iter().map(|d| d.stats.events.get(*k) as u64).sum::<u64>())
                .sum()
        };
        let (retx_window, ooo_window, level) = window.unwrap_or((0, 0, Level::Ok));
        let row = FlowRow {
            flow_id: flow.id,
            a: flow.endpoints[0],
            b: flow.endpoints[1],
            process: None,
            interface: None,
            packets_per_s: rate(packets, before.packets),
            bytes_per_s: rate(bytes, before.bytes),
            retx_window,
            ooo_window,
            retx_total: total(EventKind::is_retransmission),
            ooo_total: total(|k| k == EventKind::OutOfOrder),
            zero_window_s: zero_window_ns as f64 / 1e9,
            rtt_ms: data_direction_rtt_ns(flow).map(|ns| ns as f64 / 1e6),
            limited: data_direction_limits(flow),
            kernel: self.kernel.get(&flow.id).copied(),
            level,
            state: state_name(flow),
            trouble_total: flow.dirs.iter().map(|d| trouble_score(&d.stats.events.to_array())).sum(),
            detail: Default::default(),
        };
        (row, Previous { packets, bytes, zero_window_ns })
    }

    /// One sample of history for the worst connections, and their details into the rows.
    fn record_histories(&mut self, pipeline: &Pipeline, rows: &mut [FlowRow]) {
        let kept: FxHashSet<u64> = rows.iter().take(MAX_HISTORIES).map(|r| r.flow_id).collect();
        self.histories.retain(|id, _| kept.contains(id));
        let flows: FxHashMap<u64, &Flow> =
            pipeline.analyzer().active_flows().filter(|f| kept.contains(&f.id)).map(|f| (f.id, f)).collect();
        for row in rows.iter_mut() {
            let recent = self.recent.get(&row.flow_id);
            if !kept.contains(&row.flow_id) {
                let events = recent.map(|r| r.iter().cloned().collect()).unwrap_or_default();
                row.detail = Arc::new(FlowDetail { events, ..Default::default() });
                continue;
            }
            let h = self.histories.entry(row.flow_id).or_default();
            push(&mut h.bytes_per_s, row.bytes_per_s as u64);
            push(&mut h.rtt_us, row.rtt_ms.map_or(0, |ms| (ms * 1000.0) as u64));
            push(&mut h.in_flight, flows.get(&row.flow_id).map_or(0, |f| bytes_in_flight(f)));
            push(&mut h.cwnd, row.kernel.map_or(0, |k| k.cwnd as u64));
            row.detail = Arc::new(FlowDetail {
                bytes_per_s: h.bytes_per_s.iter().copied().collect(),
                rtt_us: h.rtt_us.iter().copied().collect(),
                bytes_in_flight: h.in_flight.iter().copied().collect(),
                cwnd: h.cwnd.iter().copied().collect(),
                events: recent.map(|r| r.iter().cloned().collect()).unwrap_or_default(),
            });
        }
    }
}

/// The RTT of the direction that carries the data (more payload): the other side's RTT
/// samples time pure ACKs, which says little.
/// What limits the data direction now, and its shares so far.
fn data_direction_limits(flow: &Flow) -> Option<(crate::flow::limits::Limit, crate::flow::limits::LimitedBy)> {
    let (data, _) = data_and_other(flow);
    data.limits().map(|c| (c.current(), c.limited_by()))
}

fn data_direction_rtt_ns(flow: &Flow) -> Option<i64> {
    let (data, other) = data_and_other(flow);
    data.stats.rtt.srtt_ns().or(other.stats.rtt.srtt_ns())
}

/// The direction that carries more payload, then the other.
fn data_and_other(flow: &Flow) -> (&crate::flow::DirState, &crate::flow::DirState) {
    let [a, b] = &flow.dirs;
    if a.stats.payload_bytes >= b.stats.payload_bytes { (a, b) } else { (b, a) }
}

/// Bytes sent and not yet acknowledged, the larger of the two directions.
fn bytes_in_flight(flow: &Flow) -> u64 {
    let [a, b] = &flow.dirs;
    [(a, b), (b, a)]
        .iter()
        .filter(|(d, o)| d.valid_bif && d.base_seq_set && o.lastack != 0)
        .map(|(d, o)| d.nextseq.wrapping_sub(o.lastack))
        .filter(|n| *n < 1 << 30)
        .max()
        .unwrap_or(0) as u64
}

fn state_name(flow: &Flow) -> &'static str {
    let l = &flow.lifecycle;
    if l.refused {
        "REFUSED"
    } else if l.rst_seen {
        "RESET"
    } else if flow.dirs[0].fin_seen && flow.dirs[1].fin_seen {
        "CLOSED"
    } else if flow.dirs[0].fin_seen || flow.dirs[1].fin_seen {
        "CLOSING"
    } else if l.established {
        "ESTAB"
    } else if l.syns > 0 {
        "SYN"
    } else {
        "OPEN"
    }
}

#[cfg(test)]
mod tests;
