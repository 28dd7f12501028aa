//! What `timeline.html` draws, read from a session's files: the events file read twice,
//! streaming, the first pass counting events per flow, kind and severity (and the time
//! range), the second filling the rate buckets and the sampled markers; the rows; the alert
//! spans. Drawing is [`super::timeline`]'s.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use rustc_hash::FxHashMap;
use serde::Deserialize;

use super::page::{epoch_ms, escape_plot_text, fmt_count, fmt_utc_time, truncate_chars};
use super::sampling::{EvenPicker, fold_tail, proportional_quotas};
use super::{LineCounts, Problem, ReportError, SessionFiles, for_each_line, read_json_lines};
use crate::alert::{Alert, Level};
use crate::event::{Event, EventKind, Severity};
use crate::flow::state::trouble_score;
use crate::output::jsonl::line_error;
use crate::output::summary::{Summary, endpoint};
use crate::time::ts_to_secs;

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
pub const RATE_BUCKETS: usize = 200;
/// Longest free text (file names, details) in a hover, in characters.
pub const MAX_HOVER_TEXT: usize = 160;

/// The fields of an event the first pass needs.
#[derive(Deserialize)]
struct EventHead {
    ts: f64,
    event: EventKind,
    flow_id: u64,
    severity: Severity,
    /// Not used here, but an event without it is of another schema (the original tcpviz
    /// one): the first pass says so.
    #[allow(dead_code)]
    origin: crate::event::Origin,
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
pub struct MarkerTrace {
    pub x: Vec<f64>,
    pub y: Vec<f64>,
    pub text: Vec<String>,
}

/// What the timeline draws.
pub struct TimelineData {
    pub summary: Option<Summary>,
    pub plan: RowPlan,
    pub traces: BTreeMap<(Severity, EventKind), MarkerTrace>,
    /// Events per time bucket and severity (all of them, not only the sampled).
    pub rate: Vec<[u64; 3]>,
    pub first: f64,
    pub last: f64,
    pub bucket_s: f64,
    pub total_events: u64,
    /// Markers are a sample of the events.
    pub sampled: bool,
    pub counts: LineCounts,
    pub alert_counts: Option<LineCounts>,
    /// Alerts in the session; `spans` holds the ones drawn.
    pub alert_total: usize,
    pub spans: Vec<AlertSpan>,
}

/// Reads what the timeline draws; what the session's files hold that could not be read
/// goes to `problems`.
pub fn collect(files: &SessionFiles, problems: &mut Vec<Problem>) -> Result<TimelineData, ReportError> {
    let summary = files.summary()?;
    let finished = summary.is_some();

    // Pass 1: counts per flow, kind and severity; the time range.
    let mut tallies: FxHashMap<u64, FlowTally> = FxHashMap::default();
    let (mut first, mut last) = (f64::INFINITY, f64::NEG_INFINITY);
    let counts = for_each_line(&files.events, |line| {
        let e = serde_json::from_str::<EventHead>(line).map_err(|e| line_error(&e, "an event"))?;
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
        Ok(())
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
    let second = for_each_line(&files.events, |line| {
        if lines_left == 0 {
            return Ok(());
        }
        lines_left -= 1;
        let head = serde_json::from_str::<EventHead>(line).map_err(|e| line_error(&e, "an event"))?;
        let bucket = (((head.ts - first) / bucket_s) as usize).min(RATE_BUCKETS - 1);
        rate[bucket][head.severity as usize] += 1;
        let Some(row) = row_for(head.flow_id) else { return Ok(()) };
        let Some(picker) = pickers.get_mut(&(row, head.event, head.severity)) else { return Ok(()) };
        if !picker.pick() {
            return Ok(());
        }
        let event = serde_json::from_str::<Event>(line).map_err(|e| line_error(&e, "an event"))?;
        let trace = traces.entry((head.severity, head.event)).or_default();
        trace.x.push(epoch_ms(head.ts));
        trace.y.push(row as f64 + lane_offset(head.event));
        trace.text.push(event_hover(&event, first));
        Ok(())
    })?
    .unwrap_or_default();
    // The second pass reads the drawn events whole: it may find a line the first pass's
    // few fields let through.
    let mut counts = counts;
    if second.unreadable > counts.unreadable {
        counts.unreadable = second.unreadable;
        counts.first_bad = second.first_bad;
    }
    problems.extend(counts.problems(&files.events, finished));

    // Alerts.
    let mut alerts = Vec::new();
    let alert_counts = read_json_lines::<Alert>(&files.alerts_path(), "an alert", |a| alerts.push(a))?;
    if let Some(c) = &alert_counts {
        problems.extend(c.problems(&files.alerts_path(), finished));
    }
    let all_spans = alert_spans(alerts, last);
    let alert_total = all_spans.len();
    let mut spans = all_spans;
    if spans.len() > MAX_ALERT_BANDS {
        spans.sort_by(|a, b| b.level.cmp(&a.level).then((b.end - b.start).total_cmp(&(a.end - a.start))));
        spans.truncate(MAX_ALERT_BANDS);
    }
    Ok(TimelineData {
        summary,
        plan,
        traces,
        rate,
        first,
        last,
        bucket_s,
        total_events,
        sampled,
        counts,
        alert_counts,
        alert_total,
        spans,
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::NS_PER_SEC;

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
            service: None,
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
