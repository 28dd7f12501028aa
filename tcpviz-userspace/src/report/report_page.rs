//! `report.html`: the overview of a session and, for its worst flows, the time–sequence,
//! RTT and bytes-in-flight graphs.

use std::fmt::Write as _;

use plotly::common::{HoverInfo, Marker, Title};
use plotly::layout::{Axis, Margin};
use plotly::{Bar, Layout, Plot};

use super::flow_plots::{in_flight_plot, limits_plot, rtt_plot, series_note, time_sequence_plot};
use super::overview::overview_table;
use super::page::{
    Page, PageKind, escape_html, fmt_bytes, fmt_count, fmt_ms, fmt_seconds, fmt_utc, truncate_chars, watch_reason_words,
};
use super::series::{
    FlowTarget, MAX_DETAIL_FLOWS, kernel_series, locate_captures, series_from_captures, series_from_events,
};
use super::style::{kind_color, plot_config};
use super::timeline::unreadable_note;
use super::timeline_data::{AlertSpan, alert_spans};
use super::{Problem, ReportError, SessionFiles, read_json_lines};
use crate::alert::{Alert, Level};
use crate::output::session;
use crate::output::summary::{FlowSummary, RttSummary, Summary};

pub const EVENTS_BY_KIND_PLOT_ID: &str = "events-by-kind";
pub const TCP_EXT_PLOT_ID: &str = "tcp-ext-during";
/// Alerts listed in the overview at most.
const MAX_ALERT_ROWS: usize = 20;

/// Ids of a flow's plots: time–sequence, RTT, bytes in flight, what limited the sender.
pub fn flow_plot_ids(flow_id: u64) -> [String; 4] {
    [
        format!("flow-{flow_id}-tseq"),
        format!("flow-{flow_id}-rtt"),
        format!("flow-{flow_id}-inflight"),
        format!("flow-{flow_id}-limits"),
    ]
}

/// The flows drawn in detail: the worst by trouble score (then bytes); when no flow has
/// any trouble, the largest one.
pub fn worst_flows(summary: &Summary) -> Vec<&FlowSummary> {
    let mut flows: Vec<&FlowSummary> = summary.flows.iter().filter(|f| f.packets > 0).collect();
    flows.sort_by(|a, b| {
        b.trouble_score.cmp(&a.trouble_score).then(b.bytes.cmp(&a.bytes)).then(a.flow_id.cmp(&b.flow_id))
    });
    let troubled = flows.iter().take_while(|f| f.trouble_score > 0).count();
    flows.truncate(if troubled > 0 { troubled.min(MAX_DETAIL_FLOWS) } else { 1 });
    flows
}

/// Renders the page; what could not be read, and captures that are gone, go to `problems`
/// (and are said on the page).
pub fn render(files: &SessionFiles, summary: &Summary, problems: &mut Vec<Problem>) -> Result<String, ReportError> {
    let t = &summary.totals;
    let mut page = Page::new(PageKind::Report, "TCP report", &files.dir.display().to_string());

    let mut alerts = Vec::new();
    let alert_counts = read_json_lines::<Alert>(&files.alerts_path(), "an alert", |a| alerts.push(a))?;
    // The report needs summary.json: the session is finished.
    if let Some(c) = &alert_counts {
        problems.extend(c.problems(&files.alerts_path(), true));
    }
    let raised = |level: Level| alerts.iter().filter(|a| a.level == level).count() as u64;
    let (warn_alerts, critical_alerts) = (raised(Level::Warn), raised(Level::Critical));
    let spans = alert_spans(alerts.iter().cloned(), t.last_ts.unwrap_or(0.0));

    // At a glance.
    let total_events: u64 = t.events.values().sum();
    let troubled = summary.flows.iter().filter(|f| f.trouble_score > 0).count() as u64;
    let mut cards = String::from("<div class=\"cards\">");
    let mut card = |value: String, key: &str| {
        let _ = write!(
            cards,
            "<div class=\"card\"><div class=\"v\">{}</div><div class=\"k\">{}</div></div>",
            escape_html(&value),
            escape_html(key)
        );
    };
    card(fmt_seconds(t.duration_s), "duration");
    card(fmt_count(t.packets), "packets");
    card(fmt_count(t.flows), "TCP flows");
    card(fmt_count(troubled), "flows with trouble");
    card(fmt_count(total_events), "events");
    card(
        match alert_counts {
            Some(_) => fmt_count(warn_alerts + critical_alerts),
            None => "–".into(),
        },
        "alerts raised",
    );
    card(fmt_count(summary.errors.len() as u64), "read errors");
    cards.push_str("</div>\n");
    page.push_html(&cards);
    for e in &summary.errors {
        page.paragraph("warn", &format!("error: {}", truncate_chars(e, 600)));
    }

    page.heading(2, "overview", "Overview");
    page.push_html(&overview_table(summary, alert_counts.as_ref().map(|_| (warn_alerts, critical_alerts))));
    if let Some(c) = &alert_counts {
        let mut note = String::new();
        unreadable_note(&mut note, session::ALERTS_FILE, c);
        page.push_html(&note);
    }

    if total_events > 0 {
        page.heading(2, "events-heading", "Events by kind");
        page.plot(EVENTS_BY_KIND_PLOT_ID, &events_by_kind_plot(summary));
    }
    if let Some(live) = summary.sections.live.as_ref().filter(|l| !l.tcp_ext_during.is_empty()) {
        page.heading(2, "tcp-ext-heading", "The kernel's TCP counters during the run");
        page.paragraph(
            "note",
            "What the namespace's TcpExt counters (/proc/net/netstat) grew by between readings every 2 s: tail \
             loss probes, timeouts, fast retransmits, reordering. The kernel's own account, beside the wire's events.",
        );
        page.plot(TCP_EXT_PLOT_ID, &tcp_ext_plot(&live.tcp_ext_during, t.first_ts));
    }

    if !spans.is_empty() {
        page.heading(2, "alerts", "Alerts");
        page.push_html(&alert_table(&spans, summary));
    }

    // The worst flows in detail.
    let worst = worst_flows(summary);
    if worst.is_empty() {
        page.heading(2, "flows", "Flows");
        page.paragraph("note", "No TCP flow in this session.");
        return Ok(page.finish());
    }
    page.heading(2, "flows", if worst[0].trouble_score > 0 { "The worst flows" } else { "The largest flow" });
    if worst[0].trouble_score == 0 {
        page.paragraph("note", "No flow has any trouble; the largest flow is drawn.");
    }
    let targets: Vec<FlowTarget> = worst.iter().map(|f| FlowTarget::from_summary(f)).collect();
    let (kernel, kernel_counts) = kernel_series(&files.kernel_samples_path(), &targets)?;
    if let Some(c) = &kernel_counts {
        problems.extend(c.problems(&files.kernel_samples_path(), true));
        let mut note = String::new();
        unreadable_note(&mut note, session::KERNEL_SAMPLES_FILE, c);
        page.push_html(&note);
    }
    let (captures, missing) = locate_captures(&files.dir, &summary.sources);
    let series = if captures.is_empty() {
        let what = if summary.sources.is_empty() {
            "The session names no capture file".to_string()
        } else {
            format!("The capture files ({}) are not readable from here", summary.sources.join(", "))
        };
        page.paragraph(
            "warn",
            &format!("{what}: the graphs below show only the flagged packets of each flow, from events.jsonl (no per-packet series)."),
        );
        if !summary.sources.is_empty() {
            problems.push(Problem::warning(format!(
                "capture {} not found (moved or deleted?): the flow graphs of the report show only the flagged \
                 packets, from events.jsonl; put the capture back (or beside the session) for the full graphs",
                missing.join(", ")
            )));
        }
        let (series, counts) = series_from_events(&files.events, &targets, &kernel)?;
        if let Some(c) = &counts {
            problems.extend(c.problems(&files.events, true));
            let mut note = String::new();
            unreadable_note(&mut note, session::EVENTS_FILE, c);
            page.push_html(&note);
        }
        series
    } else {
        if !missing.is_empty() {
            page.paragraph(
                "warn",
                &format!("Capture files not found (their packets are missing from the graphs): {}", missing.join(", ")),
            );
            problems.push(Problem::warning(format!(
                "capture {} not found (moved or deleted?): its packets are missing from the report's flow graphs",
                missing.join(", ")
            )));
        }
        let (series, notes) = series_from_captures(&captures, &targets, &kernel);
        for e in &notes.errors {
            page.paragraph("warn", &format!("re-reading the capture: {}", truncate_chars(e, 600)));
            problems.push(Problem::warning(format!("re-reading the capture for the report: {e}")));
        }
        if notes.packets != t.packets && missing.is_empty() {
            let text = format!(
                "The capture files hold {} packets where the analysis read {}: they may have changed since.",
                fmt_count(notes.packets),
                fmt_count(t.packets)
            );
            page.paragraph("warn", &text);
            problems.push(Problem::warning(text));
        }
        series
    };
    page.paragraph(
        "note",
        "Time–sequence graph (as tcptrace and Wireshark's Stevens graph): each data segment is a vertical bar from its \
         first to its last byte; the green steps are what the receiver acknowledged, the yellow steps the limit its \
         window allows. Retransmissions and other flagged packets are marked (hover for details); routine kinds \
         such as window updates start hidden (click the legend). The band under it shows what held the sender back \
         over time: the receiver's window, the congestion window, loss recovery or the application (see \
         limited_by in the summary). Drag to zoom. RTTs are measured at the capture \
         point: on the sender's side they are the path RTT, on the receiver's side the receiver's own delay.",
    );
    for (f, s) in worst.iter().zip(&series) {
        let ids = flow_plot_ids(f.flow_id);
        page.heading(
            2,
            &format!("flow-{}", f.flow_id),
            &format!("Flow #{}: {} (trouble score {})", f.flow_id, f.label().replace(" -> ", " → "), f.trouble_score),
        );
        page.push_html(&flow_table(f));
        page.paragraph("note", &series_note(s));
        if s.kernel.is_empty() && crate::output::rotation::exists(&files.kernel_samples_path()) {
            page.paragraph("note", "No kernel samples (kernel_samples.jsonl) for this flow.");
        }
        page.plot(&ids[0], &time_sequence_plot(s));
        page.plot(&ids[3], &limits_plot(s));
        page.plot(&ids[1], &rtt_plot(s));
        page.plot(&ids[2], &in_flight_plot(s));
    }
    Ok(page.finish())
}

/// The TcpExt readings of a live run: one stacked bar series per counter that grew, at the
/// time of each reading (seconds since the first packet).
fn tcp_ext_plot(readings: &[crate::output::sections::TcpExtReading], first_ts: Option<f64>) -> Plot {
    let origin = first_ts.or(readings.first().map(|r| r.ts)).unwrap_or(0.0);
    let counters: std::collections::BTreeSet<&String> = readings.iter().flat_map(|r| r.grown.keys()).collect();
    let mut plot = Plot::new();
    for name in counters {
        let (x, y): (Vec<f64>, Vec<u64>) =
            readings.iter().filter_map(|r| Some((r.ts - origin, *r.grown.get(name)?))).unzip();
        plot.add_trace(
            Bar::new(x, y)
                .name(name.as_str())
                .hover_template(format!("t = %{{x:.1f}} s<br>{name} +%{{y:,}}<extra></extra>")),
        );
    }
    plot.set_layout(
        Layout::new()
            .height(340)
            .margin(Margin::new().top(30).bottom(60).left(70).right(20))
            .bar_mode(plotly::layout::BarMode::Stack)
            .x_axis(Axis::new().title(Title::with_text("time since the first packet (s), at each reading")))
            .y_axis(
                Axis::new()
                    .title(Title::with_text("growth since the reading before"))
                    .range_mode(plotly::layout::RangeMode::ToZero),
            ),
    );
    plot.set_configuration(plot_config());
    plot
}

fn events_by_kind_plot(summary: &Summary) -> Plot {
    let kinds: Vec<_> = summary.totals.events.iter().collect();
    let names: Vec<String> = kinds.iter().map(|(k, _)| k.to_string()).collect();
    let counts: Vec<u64> = kinds.iter().map(|(_, v)| **v).collect();
    let bars = counts.clone();
    let colors: Vec<&'static str> = kinds.iter().map(|(k, _)| kind_color(**k)).collect();
    let text: Vec<String> = kinds.iter().map(|(k, v)| format!("{k}: {}", fmt_count(**v))).collect();
    let labels: Vec<String> = counts.iter().map(|c| fmt_count(*c)).collect();
    let mut plot = Plot::new();
    plot.add_trace(
        Bar::new(names, bars)
            .name("events")
            .marker(Marker::new().color_array(colors))
            .text_array(labels)
            .text_position(plotly::common::TextPosition::Outside)
            .clip_on_axis(false)
            .hover_text_array(text)
            .hover_info(HoverInfo::Text),
    );
    // A log scale when counts differ by two orders of magnitude or more: a handful of
    // timeouts stays visible beside thousands of window updates.
    let (least, most) = (counts.iter().min().copied().unwrap_or(1).max(1), counts.iter().max().copied().unwrap_or(1));
    let y_axis = if most >= 100 * least {
        Axis::new().title(Title::with_text("events (log scale)")).type_(plotly::layout::AxisType::Log).dtick(1.0)
    } else {
        Axis::new().title(Title::with_text("events")).range_mode(plotly::layout::RangeMode::ToZero)
    };
    plot.set_layout(
        Layout::new()
            .height(360)
            .margin(Margin::new().top(30).bottom(110).left(70).right(20))
            .show_legend(false)
            .y_axis(y_axis)
            .x_axis(Axis::new().tick_angle(-30.0)),
    );
    plot.set_configuration(plot_config());
    plot
}

fn alert_table(spans: &[AlertSpan], summary: &Summary) -> String {
    let mut sorted: Vec<&AlertSpan> = spans.iter().collect();
    sorted.sort_by(|a, b| b.level.cmp(&a.level).then((b.end - b.start).total_cmp(&(a.end - a.start))));
    let label_of = |id: u64| {
        summary.flows.iter().find(|f| f.flow_id == id).map(|f| f.label().replace(" -> ", " → ")).unwrap_or_default()
    };
    let mut h = String::new();
    let _ = write!(
        h,
        "<p class=\"note\">{} alert periods (from alerts.jsonl){}; the timeline draws them as bands.</p>\n\
         <table><thead><tr><th>level</th><th>flow</th><th>kind</th><th>from</th><th class=\"num\">lasted</th>\
         <th class=\"num\">events in window</th><th>message</th></tr></thead><tbody>\n",
        fmt_count(spans.len() as u64),
        if spans.len() > MAX_ALERT_ROWS {
            format!(", the {MAX_ALERT_ROWS} most severe and longest listed")
        } else {
            String::new()
        }
    );
    for a in sorted.into_iter().take(MAX_ALERT_ROWS) {
        let level = a.level.as_str();
        let _ = writeln!(
            h,
            "<tr><td class=\"sev-{}\">{}</td><td class=\"mono\">#{} {}</td><td>{}</td><td>{}</td><td class=\"num\">{}{}</td>\
             <td class=\"num\">{} (threshold {} in {:.0} s)</td><td>{}</td></tr>",
            if a.level == Level::Critical { "CRITICAL" } else { "WARNING" },
            level,
            a.flow_id,
            escape_html(&label_of(a.flow_id)),
            a.kind,
            escape_html(&fmt_utc(a.start)),
            escape_html(&fmt_seconds(a.end - a.start)),
            if a.open { " (still active)" } else { "" },
            a.count,
            a.threshold,
            a.window_s,
            escape_html(&truncate_chars(&a.message, 300))
        );
    }
    h.push_str("</tbody></table>\n");
    h
}

fn flow_table(f: &FlowSummary) -> String {
    let d = f.data_direction();
    let dir = &f.directions[d];
    let mut h = String::from("<table class=\"kv\">");
    let mut row = |key: &str, value: String| {
        let _ = write!(h, "<tr><th>{}</th><td>{}</td></tr>", escape_html(key), escape_html(&value));
    };
    row("state", format!("{} (ended by: {})", f.state, f.ended_by));
    // Live sessions: who owns each end, and which hook said so.
    for d in &f.directions {
        if let Some(p) = &d.process {
            row(
                &format!("process at {}", crate::output::summary::endpoint(d.src, d.sport)),
                format!("{} (cgroup id {}, from {})", p.label(), p.cgroup_id, p.hook),
            );
        }
    }
    if let Some(since) = f.watched_since {
        let starts = f.watch_starts.unwrap_or(1);
        row(
            "watched since",
            format!(
                "{}, after {}: the wire view of this connection begins here{}",
                fmt_utc(since),
                watch_reason_words(f.watch_reason.as_deref()),
                if starts > 1 { format!(" ({starts} watches started, with gaps between them)") } else { String::new() }
            ),
        );
    }
    row("packets", format!("{} ({} in the data direction)", fmt_count(f.packets), fmt_count(dir.packets)));
    row(
        "payload bytes",
        format!(
            "{} ({} retransmitted, {:.2} %)",
            fmt_bytes(f.bytes),
            fmt_bytes(dir.retransmitted_bytes),
            f.retransmission_rate * 100.0
        ),
    );
    row("duration", fmt_seconds(f.duration_s));
    let rtt_words = |rtt: &RttSummary| {
        format!(
            "min {} · median {}{} · max {} ({} samples)",
            fmt_ms(rtt.min_ms),
            fmt_ms(rtt.median_ms),
            if rtt.median_exact { "" } else { " (estimated)" },
            fmt_ms(rtt.max_ms),
            fmt_count(rtt.samples)
        )
    };
    row("RTT of the data (ms)", rtt_words(&dir.rtt));
    if let Some(rtt) = &dir.rtt_timestamps {
        row("RTT by timestamp echo (ms)", rtt_words(rtt));
    }
    row("handshake RTT (ms)", fmt_ms(f.handshake_rtt_ms));
    row("max bytes in flight", fmt_count(dir.max_bytes_in_flight as u64));
    let events: Vec<String> = f.events.iter().map(|(k, v)| format!("{k} {}", fmt_count(*v))).collect();
    row("events", if events.is_empty() { "none".into() } else { events.join(", ") });
    if let Some(l) = &dir.limited_by {
        row("limited by", format!("{} of {}: {}", l.dominant().name(), fmt_seconds(l.seconds), l.shares_text()));
    }
    if let Some(k) = &f.kernel {
        row(
            "kernel retransmissions",
            format!(
                "{} segments in {} reports (tcp_retransmit_skb), {} found on the wire; {} segments the wire rules \
                 called out_of_order are retransmissions by the kernel's word (counted so above)",
                fmt_count(k.kernel_retransmitted_segments),
                fmt_count(k.kernel_retransmissions),
                fmt_count(k.matched_segments),
                fmt_count(k.reclassified)
            ),
        );
    }
    h.push_str("</table>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watched_flow_says_where_its_wire_view_begins() {
        let f = crate::flow::state::Flow::new(3, ("10.0.0.1".parse().unwrap(), 1), ("10.0.0.2".parse().unwrap(), 2), 0);
        let mut f = FlowSummary::from_flow(&f, crate::flow::table::Retirement::End);
        assert!(!flow_table(&f).contains("watched since"));
        f.watched_since = Some(1_700_000_000.5);
        f.watch_reason = Some("tcp_retransmit_skb".into());
        let h = flow_table(&f);
        assert!(
            h.contains(
                "2023-11-14 22:13:20.500000 UTC, after tracepoint tcp_retransmit_skb: the wire view of this \
                        connection begins here</td>"
            ),
            "{h}"
        );
    }
    #[test]
    fn an_attributed_flow_names_the_process_of_each_end() {
        let f = crate::flow::state::Flow::new(3, ("10.0.0.1".parse().unwrap(), 1), ("10.0.0.2".parse().unwrap(), 2), 0);
        let mut f = FlowSummary::from_flow(&f, crate::flow::table::Retirement::End);
        assert!(!flow_table(&f).contains("process at"));
        f.directions[1].process = Some(std::sync::Arc::new(crate::attribution::Process {
            pid: 7,
            comm: "nginx".into(),
            cgroup: Some("system.slice/nginx.service".into()),
            cgroup_id: 5,
            hook: crate::attribution::HOOK_ACCEPT4.into(),
        }));
        let h = flow_table(&f);
        assert!(
            h.contains(
                "<th>process at 10.0.0.2:2</th><td>nginx[7] system.slice/nginx.service (cgroup id 5, from \
                 syscalls:sys_exit_accept4)</td>"
            ),
            "{h}"
        );
    }

    #[test]
    fn a_flow_says_what_limited_it_and_what_the_kernel_resent() {
        let f = crate::flow::state::Flow::new(3, ("10.0.0.1".parse().unwrap(), 1), ("10.0.0.2".parse().unwrap(), 2), 0);
        let mut f = FlowSummary::from_flow(&f, crate::flow::table::Retirement::End);
        let h = flow_table(&f);
        assert!(!h.contains("limited by") && !h.contains("kernel retransmissions"), "{h}");
        f.directions[0].limited_by = Some(crate::flow::limits::LimitedBy {
            seconds: 2.0,
            receiver_window: 0.75,
            congestion_window: 0.25,
            loss_recovery: 0.0,
            application: 0.0,
        });
        f.kernel = Some(crate::flow::kernel_join::KernelCounts {
            kernel_retransmitted_segments: 12,
            kernel_retransmissions: 10,
            matched_segments: 11,
            reclassified: 4,
            ..Default::default()
        });
        let h = flow_table(&f);
        assert!(h.contains("<th>limited by</th><td>receiver window of 2.00 s: receiver window 75 %"), "{h}");
        assert!(h.contains("12 segments in 10 reports (tcp_retransmit_skb), 11 found on the wire; 4 segments"), "{h}");
    }
}
