//! `timeline.html`: anomalies over time, one row per flow.
//!
//! The events file is read twice, streaming: the first pass counts events per flow, kind
//! and severity (and the time range), the second draws. Rows are the flows with the most
//! trouble (the summary's trouble score), the rest folded into one "other flows" row.
//! Beyond [`MAX_MARKERS`] events the markers are a sample, in proportion per row, kind and
//! severity (each keeps at least one), picked evenly through the file; the bars above the
//! rows count every event, so the rate of trouble stays exact. Alerts from `alerts.jsonl`
//! are drawn as bands from the line that raised them to the next line of the same flow
//! and kind (or the end).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use plotly::common::{Fill, HoverInfo, LegendGroupTitle, Line, Marker, MarkerSymbol, Mode, Orientation, Title};
use plotly::layout::HoverMode;
use plotly::layout::{Axis, AxisType, BarMode, Legend, Margin};
use plotly::{Bar, Configuration, Layout, Plot, Scatter};
use rustc_hash::FxHashMap;
use serde::Deserialize;

use super::page::{
    COLOR_CRITICAL, COLOR_INFO, COLOR_WARNING, Page, PageKind, epoch_ms, escape_html, escape_plot_text, fmt_count,
    fmt_seconds, fmt_utc_span, fmt_utc_time, truncate_chars,
};
use super::sampling::{EvenPicker, fold_tail, proportional_quotas};
use super::{LineCounts, ReportError, SessionFiles, for_each_line, read_json_lines};
use crate::alert::{Alert, Level};
use crate::capture::frame::ts_to_secs;
use crate::event::{Event, EventKind, Severity};
use crate::flow::state::trouble_score;
use crate::output::summary::endpoint;

/// Flows drawn on rows of their own; the rest share one "other flows" row.
pub const MAX_ROWS: usize = 30;
/// Event markers drawn at most (sampled beyond). SVG markers cost the browser about a
/// fifth of a millisecond each: 10,000 draw in about two seconds on a slow machine.
pub const MAX_MARKERS: u64 = 10_000;
/// Markers of one flow, kind and severity at most: one sub-lane of a row is about a
/// thousand pixels long, so more would only overlap (and slow the browser down).
pub const MAX_MARKERS_PER_LANE: u64 = 1_000;
/// Alert bands drawn at most (critical first, then the longest).
pub const MAX_ALERT_BANDS: usize = 2_000;
/// Time buckets of the event-rate bars.
const RATE_BUCKETS: usize = 200;
/// Longest free text (file names, details) in a hover, in characters.
const MAX_HOVER_TEXT: usize = 160;

pub const PLOT_ID: &str = "timeline";

const SEVERITIES: [Severity; 3] = [Severity::Info, Severity::Warning, Severity::Critical];

pub fn severity_color(s: Severity) -> &'static str {
    match s {
        Severity::Info => COLOR_INFO,
        Severity::Warning => COLOR_WARNING,
        Severity::Critical => COLOR_CRITICAL,
    }
}

/// One symbol per kind, so kinds stay apart where colours (severities) coincide.
pub fn kind_symbol(kind: EventKind) -> MarkerSymbol {
    match kind {
        EventKind::Retransmission => MarkerSymbol::Circle,
        EventKind::FastRetransmission => MarkerSymbol::Diamond,
        EventKind::SpuriousRetransmission => MarkerSymbol::CircleOpen,
        EventKind::OutOfOrder => MarkerSymbol::TriangleRight,
        EventKind::LostSegment => MarkerSymbol::X,
        EventKind::AckLostSegment => MarkerSymbol::XOpen,
        EventKind::DuplicateAck => MarkerSymbol::TriangleDown,
        EventKind::ZeroWindow => MarkerSymbol::Square,
        EventKind::ZeroWindowProbe => MarkerSymbol::SquareOpen,
        EventKind::ZeroWindowProbeAck => MarkerSymbol::SquareX,
        EventKind::KeepAlive => MarkerSymbol::HexagonOpen,
        EventKind::KeepAliveAck => MarkerSymbol::Hexagon,
        EventKind::WindowFull => MarkerSymbol::Pentagon,
        EventKind::WindowUpdate => MarkerSymbol::TriangleUpOpen,
        EventKind::ReusedPorts => MarkerSymbol::StarOpen,
        EventKind::LossInfer => MarkerSymbol::Star,
        EventKind::HandshakeAnomaly => MarkerSymbol::Hourglass,
        EventKind::TeardownAnomaly => MarkerSymbol::BowTie,
        EventKind::KernelRetransmit => MarkerSymbol::CrossThin,
        EventKind::KernelRetransmitSynack => MarkerSymbol::CrossThinOpen,
        EventKind::KernelRto => MarkerSymbol::Cross,
        EventKind::KernelRecovery => MarkerSymbol::CrossOpen,
        EventKind::KernelResetSent => MarkerSymbol::YDown,
        EventKind::KernelResetReceived => MarkerSymbol::YUp,
        EventKind::KernelStateChange => MarkerSymbol::LineNS,
    }
}

/// The fields of an event the first pass needs.
#[derive(Deserialize)]
struct EventHead {
    ts: f64,
    event: EventKind,
    flow_id: u64,
    severity: Severity,
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
}

/// What the first pass learns of one flow.
struct FlowTally {
    label: String,
    total: u64,
    by_kind: Vec<(EventKind, Severity, u64)>,
}

impl FlowTally {
    fn add(&mut self, kind: EventKind, severity: Severity) {
        self.total += 1;
        match self.by_kind.iter_mut().find(|(k, s, _)| *k == kind && *s == severity) {
            Some(entry) => entry.2 += 1,
            None => self.by_kind.push((kind, severity, 1)),
        }
    }

    fn score(&self) -> u64 {
        let mut counts = [0u32; EventKind::COUNT];
        for (k, _, n) in &self.by_kind {
            counts[k.index()] = counts[k.index()].saturating_add(*n as u32);
        }
        trouble_score(&counts)
    }
}

/// A row of the timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub label: String,
    /// Flows on the row (1, or the folded ones).
    pub flows: u64,
    pub events: u64,
    pub score: u64,
}

/// A flow ranked for a row.
#[derive(Debug, Clone, PartialEq)]
pub struct RankedFlow {
    pub flow_id: u64,
    pub label: String,
    pub score: u64,
    pub events: u64,
}

/// The rows of a timeline and which flow goes on which.
#[derive(Debug, Clone, Default)]
pub struct RowPlan {
    pub rows: Vec<Row>,
    /// Row of each flow with a row of its own.
    pub row_of: FxHashMap<u64, usize>,
    /// The "other flows" row, when flows were folded.
    pub other: Option<usize>,
}

impl RowPlan {
    /// The row of a flow: its own, else "other flows"; None for a flow the plan does not
    /// know when nothing was folded (an alert of a flow without events).
    pub fn row_for(&self, flow_id: u64) -> Option<usize> {
        self.row_of.get(&flow_id).copied().or(self.other)
    }
}

/// Rows for ranked flows: the top `max_rows` by trouble score (then events, then id), the
/// rest folded into "other flows".
pub fn plan_rows(mut flows: Vec<RankedFlow>, max_rows: usize) -> RowPlan {
    flows.sort_by(|a, b| b.score.cmp(&a.score).then(b.events.cmp(&a.events)).then(a.flow_id.cmp(&b.flow_id)));
    let (shown, folded) = fold_tail(flows, max_rows);
    let mut plan = RowPlan::default();
    for (i, f) in shown.into_iter().enumerate() {
        plan.row_of.insert(f.flow_id, i);
        plan.rows.push(Row {
            label: format!("#{} {}", f.flow_id, f.label),
            flows: 1,
            events: f.events,
            score: f.score,
        });
    }
    if !folded.is_empty() {
        plan.other = Some(plan.rows.len());
        plan.rows.push(Row {
            label: format!("other flows ({})", fmt_count(folded.len() as u64)),
            flows: folded.len() as u64,
            events: folded.iter().map(|f| f.events).sum(),
            score: folded.iter().map(|f| f.score).sum(),
        });
    }
    plan
}

/// An alert in force: from the line that raised it to the next line of the same flow and
/// kind, or the end of the session.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertSpan {
    pub flow_id: u64,
    pub kind: EventKind,
    pub level: Level,
    pub start: f64,
    pub end: f64,
    /// Still active when the session ended.
    pub open: bool,
    pub count: u64,
    pub threshold: u64,
    pub window_s: f64,
    pub message: String,
}

/// Turns alert lines (level changes, in time order) into spans of WARN/CRITICAL.
pub fn alert_spans(alerts: impl IntoIterator<Item = Alert>, session_end: f64) -> Vec<AlertSpan> {
    let mut open: BTreeMap<(u64, EventKind), AlertSpan> = BTreeMap::new();
    let mut spans = Vec::new();
    for a in alerts {
        let ts = ts_to_secs(a.ts);
        if let Some(mut span) = open.remove(&(a.flow_id, a.kind)) {
            span.end = ts.max(span.start);
            spans.push(span);
        }
        if a.level != Level::Ok {
            open.insert(
                (a.flow_id, a.kind),
                AlertSpan {
                    flow_id: a.flow_id,
                    kind: a.kind,
                    level: a.level,
                    start: ts,
                    end: ts,
                    open: false,
                    count: a.count,
                    threshold: a.threshold,
                    window_s: a.window_s,
                    message: a.message,
                },
            );
        }
    }
    for (_, mut span) in open {
        span.end = session_end.max(span.start);
        span.open = true;
        spans.push(span);
    }
    spans.sort_by(|a, b| a.start.total_cmp(&b.start).then(a.flow_id.cmp(&b.flow_id)));
    spans
}

/// Markers of one (kind, severity): x in epoch milliseconds, y the row (with a small
/// offset per kind), hover text.
#[derive(Default)]
struct MarkerTrace {
    x: Vec<f64>,
    y: Vec<f64>,
    text: Vec<String>,
}

pub fn render(files: &SessionFiles) -> Result<String, ReportError> {
    let summary = files.summary()?;

    // Pass 1: counts per flow, kind and severity; the time range.
    let mut tallies: FxHashMap<u64, FlowTally> = FxHashMap::default();
    let (mut first, mut last) = (f64::INFINITY, f64::NEG_INFINITY);
    let counts = for_each_line(&files.events, |line| {
        let Ok(e) = serde_json::from_str::<EventHead>(line) else { return false };
        first = first.min(e.ts);
        last = last.max(e.ts);
        tallies
            .entry(e.flow_id)
            .or_insert_with(|| FlowTally {
                label: format!("{} → {}", endpoint(e.src, e.sport), endpoint(e.dst, e.dport)),
                total: 0,
                by_kind: Vec::new(),
            })
            .add(e.event, e.severity);
        true
    })?
    .unwrap_or_default();
    let total_events: u64 = tallies.values().map(|t| t.total).sum();
    if let Some(s) = &summary {
        // The session's span, not only that of its events.
        if let (Some(a), Some(b)) = (s.totals.first_ts, s.totals.last_ts) {
            first = first.min(a);
            last = last.max(b);
        }
    }
    if !first.is_finite() || !last.is_finite() {
        (first, last) = (0.0, 0.0);
    }

    // Rows.
    let summary_scores: FxHashMap<u64, (u64, String)> = summary
        .as_ref()
        .map(|s| s.flows.iter().map(|f| (f.flow_id, (f.trouble_score, f.label().replace(" -> ", " → ")))).collect())
        .unwrap_or_default();
    let ranked: Vec<RankedFlow> = tallies
        .iter()
        .map(|(&flow_id, t)| {
            let (score, label) = match summary_scores.get(&flow_id) {
                Some((score, label)) => (*score, label.clone()),
                None => (t.score(), t.label.clone()),
            };
            RankedFlow { flow_id, label, score, events: t.total }
        })
        .collect();
    let plan = plan_rows(ranked, MAX_ROWS);
    let rows = &plan.rows;
    let row_for = |flow_id: u64| plan.row_for(flow_id);

    // Quotas per (row, kind, severity).
    let mut key_counts: BTreeMap<(usize, EventKind, Severity), u64> = BTreeMap::new();
    for (&flow_id, t) in &tallies {
        let Some(row) = row_for(flow_id) else { continue };
        for &(k, s, n) in &t.by_kind {
            *key_counts.entry((row, k, s)).or_default() += n;
        }
    }
    drop(tallies);
    let keys: Vec<(usize, EventKind, Severity)> = key_counts.keys().copied().collect();
    let key_sizes: Vec<u64> = key_counts.values().copied().collect();
    let quotas: Vec<u64> =
        proportional_quotas(&key_sizes, MAX_MARKERS).into_iter().map(|q| q.min(MAX_MARKERS_PER_LANE)).collect();
    let mut pickers: FxHashMap<(usize, EventKind, Severity), EvenPicker> =
        keys.iter().zip(key_sizes.iter().zip(&quotas)).map(|(k, (&n, &q))| (*k, EvenPicker::new(n, q))).collect();
    let sampled = quotas.iter().sum::<u64>() < total_events;

    // Sub-lanes: the kinds present spread a little around their row's centre.
    let kinds_present: Vec<EventKind> = {
        let mut v: Vec<EventKind> = keys.iter().map(|k| k.1).collect();
        v.sort();
        v.dedup();
        v
    };
    let lane_step = if kinds_present.len() > 1 { (0.56 / (kinds_present.len() - 1) as f64).min(0.14) } else { 0.0 };
    let lane_offset = |kind: EventKind| -> f64 {
        let i = kinds_present.iter().position(|k| *k == kind).unwrap_or(0) as f64;
        (i - (kinds_present.len().saturating_sub(1)) as f64 / 2.0) * lane_step
    };

    // Pass 2: rate buckets of every event, markers of the sampled ones.
    let span = (last - first).max(1e-3);
    let bucket_s = span / RATE_BUCKETS as f64;
    let mut rate = vec![[0u64; 3]; RATE_BUCKETS];
    let mut traces: BTreeMap<(Severity, EventKind), MarkerTrace> = BTreeMap::new();
    // A file still being written (a live session) has grown since the first pass: draw
    // what the first pass counted.
    let mut lines_left = counts.lines;
    for_each_line(&files.events, |line| {
        if lines_left == 0 {
            return true;
        }
        lines_left -= 1;
        let Ok(head) = serde_json::from_str::<EventHead>(line) else { return false };
        let bucket = (((head.ts - first) / bucket_s) as usize).min(RATE_BUCKETS - 1);
        rate[bucket][head.severity as usize] += 1;
        let Some(row) = row_for(head.flow_id) else { return true };
        let Some(picker) = pickers.get_mut(&(row, head.event, head.severity)) else { return true };
        if !picker.pick() {
            return true;
        }
        let Ok(event) = serde_json::from_str::<Event>(line) else { return false };
        let trace = traces.entry((head.severity, head.event)).or_default();
        trace.x.push(epoch_ms(head.ts));
        trace.y.push(row as f64 + lane_offset(head.event));
        trace.text.push(event_hover(&event, first));
        true
    })?;

    // Alerts.
    let mut alerts = Vec::new();
    let alert_counts = read_json_lines::<Alert>(&files.alerts_path(), |a| alerts.push(a))?;
    let all_spans = alert_spans(alerts, last);
    let alert_total = all_spans.len();
    let mut spans = all_spans;
    if spans.len() > MAX_ALERT_BANDS {
        spans.sort_by(|a, b| b.level.cmp(&a.level).then((b.end - b.start).total_cmp(&(a.end - a.start))));
        spans.truncate(MAX_ALERT_BANDS);
    }

    let plot = build_plot(rows, &traces, &rate, first, bucket_s, &spans, &row_for);

    // The page.
    let subtitle = files.dir.display().to_string();
    let mut page = Page::new(PageKind::Timeline, "Timeline of TCP anomalies", &subtitle);
    let mut intro = String::new();
    if total_events == 0 {
        let _ = writeln!(
            intro,
            "<p class=\"note\">No events: no anomalies found in {} ({}).</p>",
            escape_html(&fmt_utc_span(first, last)),
            escape_html(&fmt_seconds(last - first)),
        );
    } else {
        let _ = writeln!(
            intro,
            "<p class=\"note\">{} events in {} flows, {} ({}). One row per flow, worst first (by trouble \
         score); colour is severity, symbol is event kind. Bars on top: all events, counted per {} of time. \
         Hover a marker for the event's details; drag to zoom, double-click to reset; click a legend entry to \
         hide or show a kind.</p>",
            fmt_count(total_events),
            fmt_count(rows.iter().map(|r| r.flows).sum()),
            escape_html(&fmt_utc_span(first, last)),
            escape_html(&fmt_seconds(last - first)),
            escape_html(&fmt_seconds(bucket_s)),
        );
    }
    if let Some(other) = plan.other.map(|r| &rows[r]) {
        let _ = writeln!(
            intro,
            "<p class=\"note\">The {} worst flows have a row each; the other {} flows (with {} events) share \
             the row “other flows”.</p>",
            rows.len() - 1,
            fmt_count(other.flows),
            fmt_count(other.events)
        );
    }
    if sampled {
        let shown: usize = traces.values().map(|t| t.x.len()).sum();
        let _ = writeln!(
            intro,
            "<p class=\"warn\">{} events, showing {} sampled per flow, kind and severity in proportion (each \
             keeps at least one and at most {}, which already overlap on a row; picked evenly through time). The \
             rate bars count all events.</p>",
            fmt_count(total_events),
            fmt_count(shown as u64),
            fmt_count(MAX_MARKERS_PER_LANE)
        );
    }
    match alert_counts {
        None => intro.push_str("<p class=\"note\">No alerts.jsonl in this session: no alert bands.</p>\n"),
        Some(_) if alert_total == 0 => intro.push_str("<p class=\"note\">No alerts were raised.</p>\n"),
        Some(_) => {
            let _ = write!(
                intro,
                "<p class=\"note\">{} alerts (alerts.jsonl) drawn as bands on their flow's row, orange for \
                 WARN and red for CRITICAL, from the alert to the next change of the same flow and kind.",
                fmt_count(alert_total as u64)
            );
            if alert_total > spans.len() {
                let _ = write!(intro, " Showing {} of them (critical first, then the longest).", spans.len());
            }
            intro.push_str("</p>\n");
        }
    }
    unreadable_note(&mut intro, "events.jsonl", counts);
    if let Some(c) = alert_counts {
        unreadable_note(&mut intro, "alerts.jsonl", c);
    }
    if summary.is_none() {
        intro.push_str(
            "<p class=\"note\">No summary.json beside the events: flows are ranked by their events alone.</p>\n",
        );
    }
    page.push_html(&intro);
    if total_events == 0 && spans.is_empty() && summary.as_ref().and_then(|s| s.totals.first_ts).is_none() {
        // Nothing happened and no time is known: an empty plot of 1970 would only mislead.
        page.paragraph("note", "No events and no packets in this session: nothing to draw.");
    } else {
        page.plot(PLOT_ID, &plot);
    }
    Ok(page.finish())
}

pub(super) fn unreadable_note(html: &mut String, file: &str, counts: LineCounts) {
    if counts.unreadable > 0 {
        let _ = writeln!(
            html,
            "<p class=\"warn\">{} of {} lines of {} could not be read and were skipped (a line cut short by a \
             writer still running, or a newer format).</p>",
            fmt_count(counts.unreadable),
            fmt_count(counts.lines),
            escape_html(file)
        );
    }
}

/// Hover text of an event, below the kind and severity its trace's template shows: flow,
/// time, frame, numbers, flags, reason and every extra field. All text from the event is
/// escaped for plotly. Kept short: it is most of the timeline's size.
pub fn event_hover(e: &Event, t0: f64) -> String {
    let ts = ts_to_secs(e.ts);
    let mut s = String::with_capacity(200);
    let _ = write!(
        s,
        "flow {}: {} → {}<br>{} UTC (+{:.6} s)<br>",
        e.flow_id,
        endpoint(e.src, e.sport),
        endpoint(e.dst, e.dport),
        fmt_utc_time(ts),
        ts - t0
    );
    if let Some(frame) = e.frame {
        let _ = write!(s, "frame {frame}");
        if let Some(file) = &e.file {
            let _ = write!(s, " of {}", escape_plot_text(&truncate_chars(file, MAX_HOVER_TEXT)));
        }
        s.push_str(" · ");
    }
    let _ = write!(
        s,
        "seq {} ack {} len {} flags {}",
        e.seq,
        e.ack,
        e.len,
        escape_plot_text(&truncate_chars(&e.flags, 16))
    );
    let extra = serde_json::to_value(&e.extra).unwrap_or_default();
    if let Some(map) = extra.as_object() {
        let mut fields = Vec::new();
        if let Some(reason) = map.get("reason").and_then(|v| v.as_str()) {
            fields.push(format!("reason {}", escape_plot_text(reason)));
        }
        for (key, value) in map {
            if key == "reason" || key == "detail" {
                continue;
            }
            let value = match value {
                serde_json::Value::Number(n) => match n.as_f64() {
                    Some(f) if n.is_f64() => format!("{f:.3}"),
                    _ => n.to_string(),
                },
                serde_json::Value::String(t) => t.clone(),
                other => other.to_string(),
            };
            fields.push(format!("{}={}", escape_plot_text(key), escape_plot_text(&truncate_chars(&value, 40))));
        }
        if !fields.is_empty() {
            s.push_str("<br>");
            s.push_str(&fields.join(" · "));
        }
        if let Some(detail) = map.get("detail").and_then(|v| v.as_str()) {
            let _ = write!(s, "<br>{}", escape_plot_text(&truncate_chars(detail, MAX_HOVER_TEXT)));
        }
    }
    s
}

fn alert_hover(a: &AlertSpan, row_label: &str) -> String {
    format!(
        "<b>{} alert</b>: {}<br>{}<br>{} events in {:.0} s (threshold {})<br>from {} to {}{} ({})<br>{}",
        a.level.as_str(),
        a.kind,
        escape_plot_text(row_label),
        a.count,
        a.window_s,
        a.threshold,
        fmt_utc_time(a.start),
        fmt_utc_time(a.end),
        if a.open { ", still active at the end" } else { "" },
        fmt_seconds(a.end - a.start),
        escape_plot_text(&truncate_chars(&a.message, MAX_HOVER_TEXT))
    )
}

fn build_plot(
    rows: &[Row],
    traces: &BTreeMap<(Severity, EventKind), MarkerTrace>,
    rate: &[[u64; 3]],
    first: f64,
    bucket_s: f64,
    spans: &[AlertSpan],
    row_for: &dyn Fn(u64) -> Option<usize>,
) -> Plot {
    let mut plot = Plot::new();
    let row_count = rows.len().max(1);
    let span_ms = (bucket_s * rate.len() as f64 * 1e3).max(1.0);

    // Alert bands under everything else: one filled polygon per alert, one trace per level.
    for level in [Level::Warn, Level::Critical] {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        let (mut sx, mut sy, mut stext) = (Vec::new(), Vec::new(), Vec::new());
        for (a, row) in spans.iter().filter(|a| a.level == level).filter_map(|a| Some((a, row_for(a.flow_id)?))) {
            let row = row as f64;
            let x0 = epoch_ms(a.start);
            // A band raised at the very end still shows.
            let x1 = epoch_ms(a.end).max(x0 + span_ms * 0.002);
            for (px, py) in [(x0, row - 0.45), (x1, row - 0.45), (x1, row + 0.45), (x0, row + 0.45), (x0, row - 0.45)] {
                x.push(Some(px));
                y.push(Some(py));
            }
            x.push(None);
            y.push(None);
            sx.push(x0);
            sy.push(row - 0.38);
            stext.push(alert_hover(a, &rows[row as usize].label));
        }
        if sx.is_empty() {
            continue;
        }
        let (color, fill) = match level {
            Level::Critical => (COLOR_CRITICAL, "rgba(214,39,40,0.16)"),
            _ => (COLOR_WARNING, "rgba(240,140,0,0.16)"),
        };
        plot.add_trace(
            Scatter::new(x, y)
                .name(format!("{} alert", level.as_str()))
                .legend_group("alerts")
                .legend_group_title(LegendGroupTitle::with_text("alerts (alerts.jsonl)"))
                .mode(Mode::Lines)
                .fill(Fill::ToSelf)
                .fill_color(fill)
                .line(Line::new().width(0.0).color(fill))
                .hover_info(HoverInfo::Skip),
        );
        plot.add_trace(
            Scatter::new(sx, sy)
                .name(format!("{} alert start", level.as_str()))
                .legend_group("alerts")
                .show_legend(false)
                .mode(Mode::Markers)
                .marker(Marker::new().symbol(MarkerSymbol::TriangleRight).size(9).color(color))
                .text_array(stext)
                .hover_info(HoverInfo::Text),
        );
    }

    // Event rate of all events, stacked by severity, on the top axis.
    let centers: Vec<f64> = (0..rate.len()).map(|i| epoch_ms(first + (i as f64 + 0.5) * bucket_s)).collect();
    for sev in SEVERITIES {
        let counts: Vec<u64> = rate.iter().map(|b| b[sev as usize]).collect();
        if rate.iter().all(|b| b[sev as usize] == 0) {
            continue;
        }
        let text: Vec<String> = rate
            .iter()
            .enumerate()
            .map(|(i, b)| {
                format!(
                    "{} {} events from {} ({} bucket)",
                    b[sev as usize],
                    sev.as_str(),
                    fmt_utc_time(first + i as f64 * bucket_s),
                    fmt_seconds(bucket_s)
                )
            })
            .collect();
        plot.add_trace(
            Bar::new(centers.clone(), counts)
                .name(format!("{} rate", sev.as_str()))
                .legend_group(sev.as_str())
                .show_legend(false)
                .y_axis("y2")
                .width(bucket_s * 1e3)
                .marker(Marker::new().color(severity_color(sev)))
                .text_array(text)
                .hover_info(HoverInfo::Text)
                .text_position(plotly::common::TextPosition::None),
        );
    }

    // Markers: one trace per (severity, kind), critical drawn last (on top).
    for ((sev, kind), t) in traces {
        plot.add_trace(
            Scatter::new(t.x.clone(), t.y.clone())
                .name(kind.as_str())
                .legend_group(sev.as_str())
                .legend_group_title(LegendGroupTitle::with_text(sev.as_str()))
                .mode(Mode::Markers)
                .marker(
                    // No per-marker opacity or outline: each costs the browser as much again.
                    Marker::new()
                        .symbol(kind_symbol(*kind))
                        .size(if *sev == Severity::Info { 8 } else { 10 })
                        .color(severity_color(*sev)),
                )
                .text_array(t.text.clone())
                .hover_template(format!("<b>{kind}</b> · {}<br>%{{text}}<extra></extra>", sev.as_str())),
        );
    }

    // Heights in pixels: rows of 26 px, the rate bars 130 px; tall enough for the legend
    // (about 21 px an entry, 36 a group title and its gap) not to scroll.
    let rate_px = 130.0;
    let gap_px = 40.0;
    let groups =
        SEVERITIES.iter().filter(|sev| traces.keys().any(|(s, _)| s == *sev)).count() + usize::from(!spans.is_empty());
    let alert_entries = [Level::Warn, Level::Critical].iter().filter(|l| spans.iter().any(|a| a.level == **l)).count();
    let legend_px = 21.0 * (traces.len() + alert_entries) as f64 + 36.0 * groups as f64 + 20.0;
    let lanes_px = (26.0 * row_count as f64 + 40.0).max(legend_px - rate_px - gap_px).max(120.0);
    let (top, bottom) = (60.0, 60.0);
    let height = lanes_px + rate_px + gap_px + top + bottom;
    let plot_px = lanes_px + rate_px + gap_px;
    let lanes_top = lanes_px / plot_px;
    let tick_text: Vec<String> = rows.iter().map(|r| escape_plot_text(&r.label)).collect();
    let layout = Layout::new()
        .height(height as usize)
        .margin(Margin::new().top(top as usize).bottom(bottom as usize).left(20).right(20))
        .hover_mode(HoverMode::Closest)
        .bar_mode(BarMode::Stack)
        .bar_gap(0.0)
        .legend(
            Legend::new()
                .orientation(Orientation::Vertical)
                .group_click(plotly::layout::GroupClick::ToggleItem)
                .trace_group_gap(14),
        )
        .x_axis(
            Axis::new()
                .type_(AxisType::Date)
                // The session's span, also when there is nothing to draw in it.
                .range(vec![epoch_ms(first) - span_ms * 0.01, epoch_ms(first) + span_ms * 1.01])
                .title(Title::with_text("time (UTC)"))
                .hover_format("%H:%M:%S.%6f")
                .show_grid(true)
                .anchor("y"),
        )
        .y_axis(
            Axis::new()
                .domain(&[0.0, lanes_top])
                .range(vec![row_count as f64 - 0.5, -0.5])
                .tick_mode(plotly::common::TickMode::Array)
                .tick_values((0..rows.len()).map(|r| r as f64).collect())
                .tick_text(tick_text)
                .auto_margin(true)
                .zero_line(false)
                .show_grid(true)
                .grid_color("#eef1f4")
                .tick_font(plotly::common::Font::new().family("ui-monospace, Menlo, Consolas, monospace").size(11))
                .title(Title::with_text("flow (worst first)")),
        )
        .y_axis2(
            Axis::new()
                .domain(&[(lanes_px + gap_px) / plot_px, 1.0])
                .anchor("x")
                .title(Title::with_text(format!("events per {}", fmt_seconds(bucket_s))))
                .range_mode(plotly::layout::RangeMode::ToZero),
        );
    let layout = if traces.is_empty() {
        layout.annotations(vec![
            plotly::layout::Annotation::new()
                .text("no anomalies found")
                .x_ref("paper")
                .y_ref("paper")
                .x(0.5)
                .y(lanes_top / 2.0)
                .show_arrow(false)
                .font(plotly::common::Font::new().size(14).color("#616e7c")),
        ])
    } else {
        layout
    };
    plot.set_layout(layout);
    plot.set_configuration(plot_config());
    plot
}

/// The plotly configuration of every plot: responsive, no plotly logo or cloud links, no
/// LaTeX typesetting (a `$` in a file name must stay text).
pub fn plot_config() -> Configuration {
    Configuration::new()
        .responsive(true)
        .display_logo(false)
        .typeset_math(false)
        .show_send_to_cloud(false)
        .show_link(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::frame::NS_PER_SEC;

    fn alert(t: f64, flow_id: u64, kind: EventKind, level: Level, previous: Level) -> Alert {
        Alert {
            ts: (t * NS_PER_SEC as f64) as i64,
            flow_id,
            kind,
            level,
            previous,
            count: 10,
            window_s: 60.0,
            threshold: 10,
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.0.0.2".parse().unwrap(),
            sport: 1,
            dport: 2,
            message: "m".into(),
        }
    }

    #[test]
    fn alert_spans_run_to_the_next_change_of_the_same_flow_and_kind_or_the_end() {
        use EventKind::{OutOfOrder as O, Retransmission as R};
        use Level::{Critical as C, Ok, Warn as W};
        let spans = alert_spans(
            vec![
                alert(10.0, 1, R, W, Ok),
                alert(12.0, 2, R, W, Ok),
                alert(15.0, 1, O, C, Ok),
                alert(20.0, 1, R, C, W),
                alert(30.0, 1, R, Ok, C),
            ],
            100.0,
        );
        let got: Vec<(u64, EventKind, Level, f64, f64, bool)> =
            spans.iter().map(|s| (s.flow_id, s.kind, s.level, s.start, s.end, s.open)).collect();
        assert_eq!(
            got,
            vec![
                (1, R, W, 10.0, 20.0, false),
                (2, R, W, 12.0, 100.0, true),
                (1, O, C, 15.0, 100.0, true),
                (1, R, C, 20.0, 30.0, false),
            ]
        );
    }

    #[test]
    fn rows_fold_beyond_the_top_flows_ranked_by_trouble() {
        let flows: Vec<RankedFlow> = (0..2000u64)
            .map(|i| RankedFlow { flow_id: i, label: format!("f{i}"), score: i % 100, events: i })
            .collect();
        let plan = plan_rows(flows, 30);
        let (rows, row_of) = (&plan.rows, &plan.row_of);
        assert_eq!(rows.len(), 31);
        assert_eq!(plan.other, Some(30));
        assert_eq!(plan.row_for(0), Some(30));
        assert_eq!(rows[0].label, "#1999 f1999", "score 99, most events");
        assert!(rows[..30].windows(2).all(|w| w[0].score >= w[1].score));
        assert_eq!(rows[30].flows, 1970);
        assert_eq!(rows[30].label, "other flows (1,970)");
        assert_eq!(row_of.len(), 30);
        assert_eq!(rows.iter().map(|r| r.events).sum::<u64>(), (0..2000u64).sum::<u64>());
        let few: Vec<RankedFlow> =
            (0..3u64).map(|i| RankedFlow { flow_id: i, label: String::new(), score: 0, events: 1 }).collect();
        let plan = plan_rows(few, 30);
        assert_eq!((plan.rows.len(), plan.other), (3, None));
        assert_eq!((plan.row_for(2), plan.row_for(99)), (Some(2), None));
    }

    #[test]
    fn hover_text_is_escaped_and_names_the_details() {
        let e = Event {
            ts: 1_700_000_001_500_000_000,
            event: EventKind::LossInfer,
            flow_id: 7,
            src: "10.0.0.1".parse().unwrap(),
            dst: "fd00::2".parse().unwrap(),
            sport: 443,
            dport: 5555,
            seq: 1,
            ack: 2,
            len: 3,
            flags: "PA".into(),
            severity: Severity::Critical,
            extra: crate::event::Extra {
                reason: Some(crate::event::Reason::RetransmissionTimeout),
                rto_ms: Some(201.5),
                detail: Some("<script>alert(1)</script>".into()),
                ..Default::default()
            },
            origin: crate::event::Origin::Wire,
            frame: Some(42),
            file: Some("x</script><b>.pcap".into()),
        };
        let h = event_hover(&e, 1_700_000_000.0);
        for want in [
            "flow 7: 10.0.0.1:443 → [fd00::2]:5555",
            "(+1.500000 s)",
            "frame 42 of x&lt;/script&gt;&lt;b&gt;.pcap · seq 1 ack 2 len 3 flags PA",
            "reason retransmission_timeout · ",
            "rto_ms=201.500",
            "&lt;script&gt;alert(1)&lt;/script&gt;",
        ] {
            assert!(h.contains(want), "{want:?} not in {h}");
        }
        assert!(!h.contains("<script") && !h.contains("<b>.pcap"));
    }
}
