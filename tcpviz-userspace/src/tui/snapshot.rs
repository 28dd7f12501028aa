//! What the analysis hands the terminal view about once a second: plain data, built by
//! [`ViewFeed`](super::feed::ViewFeed) and swapped into a [`SnapshotSlot`] that the drawing
//! thread reads at its own pace (the analysis never waits on drawing).

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::alert::Level;
use crate::time::TimestampNs;

/// The latest snapshot, shared between the analysis (writer) and the view (reader). A swap
/// of one `Arc` under the lock: neither side holds it longer than that.
#[derive(Clone, Default)]
pub struct SnapshotSlot(Arc<Mutex<Arc<Snapshot>>>);

impl std::fmt::Debug for SnapshotSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SnapshotSlot")
    }
}

impl SnapshotSlot {
    pub fn store(&self, snap: Snapshot) {
        let snap = Arc::new(snap);
        match self.0.lock() {
            Ok(mut g) => *g = snap,
            Err(poisoned) => *poisoned.into_inner() = snap,
        }
    }

    pub fn load(&self) -> Arc<Snapshot> {
        match self.0.lock() {
            Ok(g) => Arc::clone(&g),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }
}

/// Which command runs the view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ViewMode {
    #[default]
    Monitor,
    Live,
}

impl ViewMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ViewMode::Monitor => "monitor",
            ViewMode::Live => "live",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub mode: ViewMode,
    pub source: String,
    /// Newest packet time seen (event time).
    pub event_time: Option<TimestampNs>,
    /// Number of snapshots published so far (0: nothing analysed yet).
    pub sequence: u64,
    pub packets: u64,
    pub tcp_segments: u64,
    pub flows_active: usize,
    pub flows_seen: u64,
    pub events: u64,
    pub retransmissions: u64,
    pub alerts_active: usize,
    /// Records the source lost (live: ring buffer and reader losses; follow: files missed,
    /// unreadable or cut short).
    pub records_lost: u64,
    /// Retransmissions per second over the last minutes, oldest first.
    pub retx_per_sec: Vec<u64>,
    /// The connections, worst first (at most [`MAX_ROWS`](super::feed::MAX_ROWS)).
    pub rows: Vec<FlowRow>,
    /// Latest WARN and CRITICAL changes, newest first.
    pub alerts: Vec<AlertLine>,
}

/// The kernel's own view of a socket (live sessions, `tcp:tcp_probe`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KernelView {
    pub srtt_ms: f64,
    pub cwnd: u32,
    pub ssthresh: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FlowRow {
    pub flow_id: u64,
    /// `a` sent the first packet seen.
    pub a: (IpAddr, u16),
    pub b: (IpAddr, u16),
    /// The process owning either end (`service[pid]`, the service being the cgroup below the
    /// root, else the command), when a live agent's hooks saw the socket open.
    pub process: Option<String>,
    /// The interface the connection is watched on (live sessions: where its first
    /// direction was first seen, when several interfaces are watched).
    pub interface: Option<String>,
    pub packets_per_s: f64,
    /// Payload bytes per second, both directions.
    pub bytes_per_s: f64,
    pub retx_window: u64,
    pub ooo_window: u64,
    pub retx_total: u64,
    pub ooo_total: u64,
    /// Seconds a side advertised a zero window (sampled at each snapshot).
    pub zero_window_s: f64,
    /// Smoothed wire RTT of the data direction.
    pub rtt_ms: Option<f64>,
    /// What holds the data direction's sender back now, and what held it longest so far
    /// (`flow::limits`); None before its second data segment.
    pub limited: Option<(crate::flow::limits::Limit, crate::flow::limits::LimitedBy)>,
    pub kernel: Option<KernelView>,
    pub level: Level,
    pub state: &'static str,
    /// Weighted problem events over the connection's life (the summary's order).
    pub trouble_total: u64,
    /// Throughput, RTT, bytes in flight and cwnd over the last minutes, and recent events.
    pub detail: Arc<FlowDetail>,
}

/// History of one connection for its detail view, one sample per snapshot, oldest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlowDetail {
    pub bytes_per_s: Vec<u64>,
    pub rtt_us: Vec<u64>,
    pub bytes_in_flight: Vec<u64>,
    pub cwnd: Vec<u64>,
    /// Newest first.
    pub events: Vec<EventLine>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventLine {
    pub ts: TimestampNs,
    pub kind: crate::event::EventKind,
    pub from: (IpAddr, u16),
    pub seq: u32,
    pub len: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AlertLine {
    pub ts: TimestampNs,
    pub level: Level,
    pub flow_id: u64,
    pub src: (IpAddr, u16),
    pub dst: (IpAddr, u16),
    pub message: String,
}

fn level_rank(l: Level) -> u64 {
    match l {
        Level::Ok => 0,
        Level::Warn => 1,
        Level::Critical => 2,
    }
}

impl FlowRow {
    /// How bad the connection is now: retransmissions and out-of-order segments in the
    /// alert window weigh most, then the alert level, then time spent at a zero window.
    /// Each part is capped below the weight of the part before, so the order is
    /// lexicographic in (recent trouble, level, zero-window time).
    pub fn score(&self) -> u64 {
        let recent = (3 * self.retx_window + 2 * self.ooo_window).min(u64::MAX / 1_000_000);
        let zw_tenths = ((self.zero_window_s * 10.0) as u64).min(999);
        recent * 10_000 + level_rank(self.level) * 1_000 + zw_tenths
    }
}

/// Columns the table can be sorted by (`s` cycles, the number keys pick one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortColumn {
    #[default]
    Score,
    Connection,
    PacketsPerSecond,
    Throughput,
    RetxWindow,
    OooWindow,
    RetxTotal,
    ZeroWindow,
    Rtt,
    State,
}

impl SortColumn {
    pub const ALL: [SortColumn; 10] = [
        SortColumn::Score,
        SortColumn::Connection,
        SortColumn::PacketsPerSecond,
        SortColumn::Throughput,
        SortColumn::RetxWindow,
        SortColumn::OooWindow,
        SortColumn::RetxTotal,
        SortColumn::ZeroWindow,
        SortColumn::Rtt,
        SortColumn::State,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SortColumn::Score => "score",
            SortColumn::Connection => "connection",
            SortColumn::PacketsPerSecond => "pkt/s",
            SortColumn::Throughput => "throughput",
            SortColumn::RetxWindow => "retx(win)",
            SortColumn::OooWindow => "ooo(win)",
            SortColumn::RetxTotal => "retx(total)",
            SortColumn::ZeroWindow => "zero-win",
            SortColumn::Rtt => "rtt",
            SortColumn::State => "state",
        }
    }

    pub fn next(self) -> SortColumn {
        let i = SortColumn::ALL.iter().position(|c| *c == self).unwrap_or(0);
        SortColumn::ALL[(i + 1) % SortColumn::ALL.len()]
    }
}

/// The order of `column`, the natural way first: the largest numbers, the connection in
/// address order, the state alphabetically. Ties fall back to the score, then the flow id,
/// so rows do not jump between frames.
pub fn compare(a: &FlowRow, b: &FlowRow, column: SortColumn) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let f = |x: f64, y: f64| y.partial_cmp(&x).unwrap_or(Ordering::Equal);
    let primary = match column {
        SortColumn::Score => b.score().cmp(&a.score()).then(b.trouble_total.cmp(&a.trouble_total)),
        SortColumn::Connection => (a.a, a.b).cmp(&(b.a, b.b)),
        SortColumn::PacketsPerSecond => f(a.packets_per_s, b.packets_per_s),
        SortColumn::Throughput => f(a.bytes_per_s, b.bytes_per_s),
        SortColumn::RetxWindow => b.retx_window.cmp(&a.retx_window),
        SortColumn::OooWindow => b.ooo_window.cmp(&a.ooo_window),
        SortColumn::RetxTotal => b.retx_total.cmp(&a.retx_total),
        SortColumn::ZeroWindow => f(a.zero_window_s, b.zero_window_s),
        SortColumn::Rtt => f(a.rtt_ms.unwrap_or(-1.0), b.rtt_ms.unwrap_or(-1.0)),
        SortColumn::State => a.state.cmp(b.state),
    };
    primary.then(b.score().cmp(&a.score())).then(a.flow_id.cmp(&b.flow_id))
}

/// A filter typed after `/`: every word must match. A word that is a number matches a
/// port exactly; any other word is looked for in the addresses (`10.0.0.1:80` form), the
/// process, and the state.
pub fn matches(row: &FlowRow, filter: &str) -> bool {
    filter.split_whitespace().all(|word| {
        if let Ok(port) = word.parse::<u16>() {
            return row.a.1 == port || row.b.1 == port;
        }
        let word = word.to_ascii_lowercase();
        let text = format!(
            "{} {} {} {} {}",
            crate::output::summary::endpoint(row.a.0, row.a.1),
            crate::output::summary::endpoint(row.b.0, row.b.1),
            row.process.as_deref().unwrap_or(""),
            row.interface.as_deref().unwrap_or(""),
            row.state
        )
        .to_ascii_lowercase();
        text.contains(&word)
    })
}

/// The rows to show: those the filter keeps, in the order asked (reversed on request).
pub fn visible_rows<'a>(rows: &'a [FlowRow], filter: &str, column: SortColumn, reversed: bool) -> Vec<&'a FlowRow> {
    let mut v: Vec<&FlowRow> = rows.iter().filter(|r| matches(r, filter)).collect();
    v.sort_by(|a, b| if reversed { compare(b, a, column) } else { compare(a, b, column) });
    v
}

/// A quiet established connection from 10.0.0.1 to 10.0.0.2:`port`, for tests.
#[cfg(test)]
pub(crate) fn tests_row(id: u64, port: u16) -> FlowRow {
    FlowRow {
        flow_id: id,
        a: ("10.0.0.1".parse().unwrap(), 40000 + id as u16),
        b: ("10.0.0.2".parse().unwrap(), port),
        process: None,
        interface: None,
        packets_per_s: 0.0,
        bytes_per_s: 0.0,
        retx_window: 0,
        ooo_window: 0,
        retx_total: 0,
        ooo_total: 0,
        zero_window_s: 0.0,
        limited: None,
        rtt_ms: None,
        kernel: None,
        level: Level::Ok,
        state: "ESTAB",
        trouble_total: 0,
        detail: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: u64, port: u16) -> FlowRow {
        tests_row(id, port)
    }

    #[test]
    fn recent_trouble_outweighs_level_which_outweighs_zero_window() {
        let mut retx = row(1, 80);
        retx.retx_window = 1;
        let mut critical = row(2, 80);
        critical.level = Level::Critical;
        critical.zero_window_s = 500.0;
        let mut stalled = row(3, 80);
        stalled.zero_window_s = 12.5;
        let mut quiet = row(4, 80);
        quiet.retx_total = 100; // old trouble, nothing in the window
        assert!(retx.score() > critical.score());
        assert!(critical.score() > stalled.score());
        assert!(stalled.score() > quiet.score());
        let mut ooo = row(5, 80);
        ooo.ooo_window = 2;
        assert!(ooo.score() > retx.score(), "2 out-of-order (weight 2) beat 1 retransmission (weight 3)");
        let rows = vec![quiet.clone(), stalled.clone(), retx.clone(), critical.clone(), ooo.clone()];
        let order: Vec<u64> = visible_rows(&rows, "", SortColumn::Score, false).iter().map(|r| r.flow_id).collect();
        assert_eq!(order, vec![5, 1, 2, 3, 4]);
        let reversed: Vec<u64> = visible_rows(&rows, "", SortColumn::Score, true).iter().map(|r| r.flow_id).collect();
        assert_eq!(reversed, vec![4, 3, 2, 1, 5]);
    }

    #[test]
    fn score_ties_keep_a_stable_order_and_lifetime_trouble_breaks_them() {
        let mut a = row(7, 80);
        a.trouble_total = 3;
        let b = row(2, 80);
        let c = row(5, 80);
        let rows = vec![c, b, a];
        let order: Vec<u64> = visible_rows(&rows, "", SortColumn::Score, false).iter().map(|r| r.flow_id).collect();
        assert_eq!(order, vec![7, 2, 5]);
    }

    #[test]
    fn every_column_sorts_largest_first() {
        let mut slow = row(1, 80);
        slow.bytes_per_s = 10.0;
        slow.rtt_ms = Some(80.0);
        slow.packets_per_s = 1.0;
        let mut fast = row(2, 443);
        fast.bytes_per_s = 1e6;
        fast.packets_per_s = 900.0;
        let rows = vec![slow, fast];
        let first = |c| visible_rows(&rows, "", c, false)[0].flow_id;
        assert_eq!(first(SortColumn::Throughput), 2);
        assert_eq!(first(SortColumn::PacketsPerSecond), 2);
        assert_eq!(first(SortColumn::Rtt), 1, "a known RTT sorts before an unknown one");
        assert_eq!(first(SortColumn::Connection), 1);
        // Cycling visits every column once and comes back.
        let mut c = SortColumn::Score;
        for _ in 0..SortColumn::ALL.len() {
            c = c.next();
        }
        assert_eq!(c, SortColumn::Score);
    }

    #[test]
    fn filter_by_port_exactly_address_process_or_state() {
        let mut rows = vec![row(1, 80), row(2, 8080), row(3, 443)];
        rows[1].process = Some("system.slice/nginx.service[77]".into());
        let ids = |f: &str| -> Vec<u64> {
            visible_rows(&rows, f, SortColumn::Connection, false).iter().map(|r| r.flow_id).collect()
        };
        assert_eq!(ids("80"), vec![1], "a port matches exactly, not 8080");
        assert_eq!(ids("8080"), vec![2]);
        assert_eq!(ids("10.0.0.2:443"), vec![3]);
        assert_eq!(ids("10.0.0.1"), vec![1, 2, 3]);
        assert_eq!(ids("estab 443"), vec![3], "all words must match");
        assert_eq!(ids("192.168"), Vec::<u64>::new());
        assert_eq!(ids("nginx"), vec![2], "the owning service");
        assert_eq!(ids(""), vec![1, 2, 3]);
        // An empty table stays empty whatever the filter and order.
        assert!(visible_rows(&[], "80", SortColumn::Rtt, true).is_empty());
    }

    #[test]
    fn the_slot_hands_over_the_latest_snapshot() {
        let slot = SnapshotSlot::default();
        assert_eq!(slot.load().sequence, 0);
        let reader = slot.clone();
        slot.store(Snapshot { sequence: 3, ..Default::default() });
        assert_eq!(reader.load().sequence, 3);
    }
}
