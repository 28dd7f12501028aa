//! `timeline.html`: anomalies over time, one row per flow.
//!
//! Rows are the flows with the most trouble (the summary's trouble score), the rest folded
//! into one "other flows" row. Beyond [`MAX_MARKERS`] events the markers are a sample, in
//! proportion per row, kind and severity (each keeps at least one), picked evenly through
//! the file; the bars above the rows count every event, so the rate of trouble stays exact.
//! Alerts from `alerts.jsonl` are drawn as bands from the line that raised them to the next
//! line of the same flow and kind (or the end). What is drawn is read by
//! [`super::timeline_data`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

use plotly::common::{Fill, HoverInfo, LegendGroupTitle, Line, Marker, MarkerSymbol, Mode, Orientation, Title};
use plotly::layout::HoverMode;
use plotly::layout::{Axis, AxisType, BarMode, Legend, Margin};
use plotly::{Bar, Layout, Plot, Scatter};

use super::page::{
    Page, PageKind, epoch_ms, escape_html, escape_plot_text, fmt_count, fmt_seconds, fmt_utc_span, fmt_utc_time,
    truncate_chars,
};
use super::style::{COLOR_CRITICAL, COLOR_WARNING, kind_symbol, plot_config, severity_color};
use super::{LineCounts, Problem, ReportError, SessionFiles};
use crate::alert::Level;
use crate::event::{EventKind, Severity};
use crate::output::session;

use super::timeline_data::{AlertSpan, MAX_HOVER_TEXT, MAX_MARKERS_PER_LANE, MarkerTrace, Row, collect};
/// The limits of what the page draws (counted where the data is read).
pub use super::timeline_data::{MAX_ALERT_BANDS, MAX_MARKERS, MAX_ROWS};

pub const PLOT_ID: &str = "timeline";

const SEVERITIES: [Severity; 3] = [Severity::Info, Severity::Warning, Severity::Critical];

/// Renders the page; what the session's files hold that could not be read goes to
/// `problems` (and is said on the page).
pub fn render(files: &SessionFiles, problems: &mut Vec<Problem>) -> Result<String, ReportError> {
    let data = collect(files, problems)?;
    let rows = &data.plan.rows;
    let row_for = |flow_id: u64| data.plan.row_for(flow_id);
    let plot = build_plot(rows, &data.traces, &data.rate, data.first, data.bucket_s, &data.spans, &row_for);

    // The page.
    let subtitle = files.dir.display().to_string();
    let mut page = Page::new(PageKind::Timeline, "Timeline of TCP anomalies", &subtitle);
    let mut intro = String::new();
    if data.total_events == 0 {
        let _ = writeln!(
            intro,
            "<p class=\"note\">No events: no anomalies found in {} ({}).</p>",
            escape_html(&fmt_utc_span(data.first, data.last)),
            escape_html(&fmt_seconds(data.last - data.first)),
        );
    } else {
        let _ = writeln!(
            intro,
            "<p class=\"note\">{} events in {} flows, {} ({}). One row per flow, worst first (by trouble \
         score); colour is severity, symbol is event kind. Bars on top: all events, counted per {} of time. \
         Hover a marker for the event's details; drag to zoom, double-click to reset; click a legend entry to \
         hide or show a kind.</p>",
            fmt_count(data.total_events),
            fmt_count(rows.iter().map(|r| r.flows).sum()),
            escape_html(&fmt_utc_span(data.first, data.last)),
            escape_html(&fmt_seconds(data.last - data.first)),
            escape_html(&fmt_seconds(data.bucket_s)),
        );
    }
    if let Some(other) = data.plan.other.map(|r| &rows[r]) {
        let _ = writeln!(
            intro,
            "<p class=\"note\">The {} worst flows have a row each; the other {} flows (with {} events) share \
             the row “other flows”.</p>",
            rows.len() - 1,
            fmt_count(other.flows),
            fmt_count(other.events)
        );
    }
    if data.sampled {
        let shown: usize = data.traces.values().map(|t| t.x.len()).sum();
        let _ = writeln!(
            intro,
            "<p class=\"warn\">{} events, showing {} sampled per flow, kind and severity in proportion (each \
             keeps at least one and at most {}, which already overlap on a row; picked evenly through time). The \
             rate bars count all events.</p>",
            fmt_count(data.total_events),
            fmt_count(shown as u64),
            fmt_count(MAX_MARKERS_PER_LANE)
        );
    }
    match data.alert_counts {
        None => intro.push_str("<p class=\"note\">No alerts.jsonl in this session: no alert bands.</p>\n"),
        Some(_) if data.alert_total == 0 => intro.push_str("<p class=\"note\">No alerts were raised.</p>\n"),
        Some(_) => {
            let _ = write!(
                intro,
                "<p class=\"note\">{} alerts (alerts.jsonl) drawn as bands on their flow's row, orange for \
                 WARN and red for CRITICAL, from the alert to the next change of the same flow and kind.",
                fmt_count(data.alert_total as u64)
            );
            if data.alert_total > data.spans.len() {
                let _ = write!(intro, " Showing {} of them (critical first, then the longest).", data.spans.len());
            }
            intro.push_str("</p>\n");
        }
    }
    unreadable_note(&mut intro, session::EVENTS_FILE, &data.counts);
    if let Some(c) = &data.alert_counts {
        unreadable_note(&mut intro, session::ALERTS_FILE, c);
    }
    if data.summary.is_none() {
        intro.push_str(
            "<p class=\"note\">No summary.json beside the events: flows are ranked by their events alone.</p>\n",
        );
    }
    page.push_html(&intro);
    if data.total_events == 0
        && data.spans.is_empty()
        && data.summary.as_ref().and_then(|s| s.totals.first_ts).is_none()
    {
        // Nothing happened and no time is known: an empty plot of 1970 would only mislead.
        page.paragraph("note", "No events and no packets in this session: nothing to draw.");
    } else {
        page.plot(PLOT_ID, &plot);
    }
    Ok(page.finish())
}

pub(super) fn unreadable_note(html: &mut String, file: &str, counts: &LineCounts) {
    if let Some(bad) = &counts.first_bad {
        let _ = writeln!(
            html,
            "<p class=\"warn\">{} of {} lines of {} could not be read and were skipped (the first, line {}: {}).</p>",
            fmt_count(counts.unreadable),
            fmt_count(counts.lines),
            escape_html(file),
            bad.line,
            escape_html(&truncate_chars(&bad.reason, 300))
        );
    }
    if let Some(n) = counts.incomplete_last {
        let _ = writeln!(
            html,
            "<p class=\"warn\">The last line of {} (line {n}) is cut short and was skipped: a line still being \
             written, or cut by a writer that stopped.</p>",
            escape_html(file)
        );
    }
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
