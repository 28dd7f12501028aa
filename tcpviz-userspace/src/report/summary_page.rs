//! `summary.html`: events by kind per flow (stacked bars) and a sortable table of flows.

use std::fmt::Write as _;

use plotly::common::{HoverInfo, Marker, Orientation, Title};
use plotly::layout::{Axis, BarMode, Legend, Margin};
use plotly::{Bar, Layout, Plot};

use super::SessionFiles;
use super::page::{
    Page, PageKind, escape_html, escape_plot_text, fmt_bytes, fmt_count, fmt_ms, fmt_seconds, fmt_utc, fmt_utc_time,
    watch_reason_words,
};
use super::sampling::fold_tail;
use super::style::{kind_color, plot_config};
use crate::event::EventKind;
use crate::output::summary::{FlowSummary, Summary};

/// Flows in the table at most (the worst; the rest are in summary.json).
pub const MAX_TABLE_FLOWS: usize = 2_000;
/// Flows with a bar of their own in the chart; the rest are summed in one bar.
pub const MAX_BAR_FLOWS: usize = 30;

pub const BARS_PLOT_ID: &str = "events-by-flow";
pub const TABLE_ID: &str = "flows";

pub fn render(files: &SessionFiles, summary: &Summary) -> String {
    let mut page = Page::new(PageKind::Summary, "Flows", &files.dir.display().to_string());
    let t = &summary.totals;
    let mut intro = String::new();
    let _ = writeln!(
        intro,
        "<p class=\"note\">{} flows in the session, {} listed in summary.json{}, worst first by trouble score \
         (losses and timeouts weigh most). {} events.</p>",
        fmt_count(t.flows),
        fmt_count(summary.flows.len() as u64),
        if t.flows_folded > 0 {
            format!(" ({} of the least troubled folded into a count)", fmt_count(t.flows_folded))
        } else {
            String::new()
        },
        fmt_count(t.events.values().sum())
    );
    page.push_html(&intro);

    let kinds: Vec<EventKind> = EventKind::ALL
        .into_iter()
        .filter(|k| summary.flows.iter().any(|f| f.count(*k) > 0) || t.events.contains_key(k))
        .collect();

    page.heading(2, "events-by-flow-heading", "Events by kind, per flow");
    let with_events: Vec<&FlowSummary> = summary.flows.iter().filter(|f| !f.events.is_empty()).collect();
    if with_events.is_empty() {
        page.paragraph("note", "No flow has any event.");
    } else {
        let (shown, rest) = fold_tail(with_events, MAX_BAR_FLOWS);
        if !rest.is_empty() {
            // Their sum would dwarf every flow's bar: it is said, not drawn.
            let events: u64 = rest.iter().map(|f| f.events.values().sum::<u64>()).sum();
            page.paragraph(
                "note",
                &format!(
                    "The {} worst flows with events; the other {} flows with events have {} events in all (see the table).",
                    shown.len(),
                    fmt_count(rest.len() as u64),
                    fmt_count(events)
                ),
            );
        }
        page.plot(BARS_PLOT_ID, &events_by_flow_plot(&shown, &kinds));
    }

    page.heading(2, "flows-heading", "Flows");
    let listed = summary.flows.len().min(MAX_TABLE_FLOWS);
    let mut note = "Click a column header to sort; click again to reverse. RTTs are those of the data \
                    direction (the one that sent more bytes), measured at the capture point."
        .to_string();
    if summary.flows.iter().any(|f| f.watched_since.is_some()) {
        note.push_str(
            " Watched since: when the kernel began watching the connection (--capture troubled); its wire \
             packets, and the counts from them, begin there.",
        );
    }
    if summary.flows.len() > listed {
        let _ = write!(
            note,
            " The {} worst flows of {} are listed; summary.json has them all.",
            listed,
            summary.flows.len()
        );
    }
    page.paragraph("note", &note);
    page.push_html("<div class=\"table-wrap\">");
    page.push_html(&flow_table(&summary.flows[..listed], &kinds));
    page.push_html("</div>\n");
    page.push_html(SORT_SCRIPT);
    page.finish()
}

fn events_by_flow_plot(shown: &[&FlowSummary], kinds: &[EventKind]) -> Plot {
    let labels: Vec<String> = shown
        .iter()
        .map(|f| escape_plot_text(&format!("#{} {}", f.flow_id, f.label().replace(" -> ", " → "))))
        .collect();
    let mut plot = Plot::new();
    for &kind in kinds {
        let counts: Vec<u64> = shown.iter().map(|f| f.count(kind)).collect();
        if counts.iter().all(|&c| c == 0) {
            continue;
        }
        let text: Vec<String> =
            labels.iter().zip(&counts).map(|(l, c)| format!("{l}<br>{kind}: {}", fmt_count(*c))).collect();
        plot.add_trace(
            Bar::new(counts, labels.clone())
                .orientation(Orientation::Horizontal)
                .name(kind.as_str())
                .marker(Marker::new().color(kind_color(kind)))
                .text_array(text)
                .hover_info(HoverInfo::Text)
                .text_position(plotly::common::TextPosition::None),
        );
    }
    let rows = labels.len();
    // Horizontal bars list categories bottom to top: reversed, the worst flow is on top.
    let top_down: Vec<String> = labels.iter().rev().cloned().collect();
    plot.set_layout(
        Layout::new()
            .bar_mode(BarMode::Stack)
            // Tall enough for the rows and for the legend (one line per kind).
            .height((120 + 24 * rows).max(110 + 21 * kinds.len()))
            .margin(Margin::new().top(30).bottom(50).left(20).right(20))
            .legend(Legend::new().title(Title::with_text("event kind")).trace_order(plotly::layout::TraceOrder::Normal))
            .x_axis(Axis::new().title(Title::with_text("events")).range_mode(plotly::layout::RangeMode::ToZero))
            .y_axis(
                Axis::new()
                    .auto_margin(true)
                    .category_order(plotly::layout::CategoryOrder::Array)
                    .category_array(top_down)
                    .tick_font(plotly::common::Font::new().family("ui-monospace, Menlo, Consolas, monospace").size(11)),
            ),
    );
    plot.set_configuration(plot_config());
    plot
}

/// The flow table. Every cell carries its sort value in `data-v`; text from the summary is
/// escaped.
fn flow_table(flows: &[FlowSummary], kinds: &[EventKind]) -> String {
    let mut h = String::with_capacity(512 + flows.len() * 400);
    let _ = write!(h, "<table class=\"flows\" id=\"{TABLE_ID}\"><thead><tr>");
    let watched = flows.iter().any(|f| f.watched_since.is_some());
    let mut headers: Vec<(&str, &str, bool)> = vec![
        ("flow", "flow id (tshark's tcp.stream counts from 0 too)", true),
        ("connection", "first sender → receiver", false),
        ("state", "open, closed (FIN both ways), reset, refused", false),
        ("packets", "packets, both directions", true),
        ("bytes", "TCP payload bytes, both directions", true),
        ("duration", "first to last packet", true),
        ("RTT min (ms)", "RTT of the data direction, minimum", true),
        ("RTT median (ms)", "RTT of the data direction, median", true),
        ("RTT max (ms)", "RTT of the data direction, maximum", true),
        ("handshake RTT (ms)", "SYN to the ACK of the SYN-ACK", true),
        ("retx %", "retransmitted payload bytes over all payload bytes", true),
        ("score", "trouble score: weighted problem events", true),
        (
            "limited by",
            "what held the data direction's sender back longest, and its share of the time: the receiver's \
             window (rwnd), the congestion window (cwnd), loss recovery (loss) or the application (app)",
            false,
        ),
    ];
    // Live sessions: the processes owning the sockets (attribution).
    let processes = flows.iter().any(|f| f.processes_label().is_some());
    if processes {
        headers.insert(3, ("processes", "owner of each end: command[pid] cgroup (- when not attributed)", false));
    }
    if watched {
        headers.insert(3, ("watched since", "when the kernel began watching it: its wire view begins there", true));
    }
    for (name, title, numeric) in &headers {
        let _ = write!(
            h,
            "<th{} title=\"{}\">{}</th>",
            if *numeric { " class=\"num\" data-type=\"num\"" } else { "" },
            escape_html(title),
            escape_html(name)
        );
    }
    for k in kinds {
        let _ = write!(
            h,
            "<th class=\"num\" data-type=\"num\" title=\"{k} events\">{}</th>",
            escape_html(&kind_heading(*k))
        );
    }
    // Live sessions: the kernel's retransmissions beside the wire's, as the terminal table has.
    let kernel = flows.iter().any(|f| f.kernel.is_some());
    if kernel {
        h.push_str(
            "<th class=\"num\" data-type=\"num\" title=\"segments the kernel reported retransmitted (tcp_retransmit_skb, \
             counted as TcpRetransSegs counts them)\">kernel retx segs</th>\
             <th class=\"num\" data-type=\"num\" title=\"of which the wire copy was found\">matched</th>\
             <th class=\"num\" data-type=\"num\" title=\"wire segments the rules called out_of_order that the kernel \
             resent: counted as retransmissions in every figure here\">ooo → retx</th>",
        );
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    for f in flows {
        let rtt = f.data_rtt();
        let label = f.label().replace(" -> ", " → ");
        let num = |h: &mut String, v: f64, shown: &str| {
            let _ = write!(h, "<td class=\"num\" data-v=\"{v}\">{}</td>", escape_html(shown));
        };
        let opt = |h: &mut String, v: Option<f64>| {
            num(h, v.unwrap_or(-1.0), &fmt_ms(v));
        };
        h.push_str("<tr>");
        num(&mut h, f.flow_id as f64, &f.flow_id.to_string());
        let _ = write!(h, "<td class=\"mono conn\" data-v=\"{0}\">{0}</td>", escape_html(&label));
        let _ = write!(h, "<td data-v=\"{0}\">{0}</td>", escape_html(&f.state));
        if watched {
            watch_cell(&mut h, f);
        }
        if processes {
            let p = f.processes_label().unwrap_or_default().replace(" -> ", " → ");
            let _ = write!(h, "<td class=\"mono\" data-v=\"{0}\">{0}</td>", escape_html(&p));
        }
        num(&mut h, f.packets as f64, &fmt_count(f.packets));
        num(&mut h, f.bytes as f64, &fmt_bytes(f.bytes));
        num(&mut h, f.duration_s, &fmt_seconds(f.duration_s));
        opt(&mut h, rtt.min_ms);
        opt(&mut h, rtt.median_ms);
        opt(&mut h, rtt.max_ms);
        opt(&mut h, f.handshake_rtt_ms);
        num(&mut h, f.retransmission_rate * 100.0, &format!("{:.2}", f.retransmission_rate * 100.0));
        num(&mut h, f.trouble_score as f64, &fmt_count(f.trouble_score));
        let limited = f.directions[f.data_direction()].limited_by;
        let _ = write!(
            h,
            "<td data-v=\"{}\" title=\"{}\">{}</td>",
            escape_html(&f.limited_label()),
            escape_html(&limited.map(|l| limits_title(&l)).unwrap_or_default()),
            escape_html(&f.limited_label())
        );
        for k in kinds {
            let c = f.count(*k);
            num(&mut h, c as f64, &if c == 0 { String::new() } else { fmt_count(c) });
        }
        if kernel {
            match &f.kernel {
                Some(k) => {
                    for n in [k.kernel_retransmitted_segments, k.matched_segments, k.reclassified] {
                        num(&mut h, n as f64, &fmt_count(n));
                    }
                }
                None => h.push_str(&"<td class=\"num\" data-v=\"-1\">–</td>".repeat(3)),
            }
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody></table>\n");
    h
}

/// Every limit's share, for the tooltip of the "limited by" cell.
fn limits_title(l: &crate::flow::limits::LimitedBy) -> String {
    format!("over {:.3} s: {}", l.seconds, l.shares_text())
}

/// The "watched since" cell: the time of day, the date and the reason in its tooltip.
fn watch_cell(h: &mut String, f: &FlowSummary) {
    match f.watched_since {
        Some(since) => {
            let starts = f.watch_starts.unwrap_or(1);
            let title = format!(
                "{}, after {}{}",
                fmt_utc(since),
                watch_reason_words(f.watch_reason.as_deref()),
                if starts > 1 { format!("; {starts} watches started (gaps between them)") } else { String::new() }
            );
            let _ = write!(
                h,
                "<td class=\"num\" data-v=\"{since}\" title=\"{}\">{}</td>",
                escape_html(&title),
                escape_html(&fmt_utc_time(since))
            );
        }
        None => h.push_str("<td class=\"num\" data-v=\"-1\"></td>"),
    }
}

/// Short column headings for the kinds (the full name is in the header's tooltip).
fn kind_heading(kind: EventKind) -> String {
    match kind {
        EventKind::Retransmission => "retx".into(),
        EventKind::FastRetransmission => "fast retx".into(),
        EventKind::SpuriousRetransmission => "spurious retx".into(),
        EventKind::OutOfOrder => "out of order".into(),
        EventKind::LostSegment => "lost seg".into(),
        EventKind::AckLostSegment => "ACKed lost".into(),
        EventKind::DuplicateAck => "dup ACK".into(),
        EventKind::ZeroWindowProbeAck => "zwin probe ACK".into(),
        EventKind::ZeroWindowProbe => "zwin probe".into(),
        EventKind::ZeroWindow => "zero win".into(),
        other => other.as_str().replace('_', " "),
    }
}

/// Sorts the flow table on a header click: numbers by `data-v`, text by locale order.
const SORT_SCRIPT: &str = r#"<script>
(function () {
  var table = document.getElementById('flows');
  if (!table) return;
  var heads = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(heads, function (th, col) {
    th.addEventListener('click', function () {
      var numeric = th.getAttribute('data-type') === 'num';
      // First click: numbers biggest first, text A to Z; the next click reverses.
      var current = th.getAttribute('aria-sort');
      var ascending = current ? current !== 'ascending' : !numeric;
      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute('aria-sort'); });
      th.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[col].getAttribute('data-v'), y = b.cells[col].getAttribute('data-v');
        var d = numeric ? (Number(x) - Number(y)) : x.localeCompare(y);
        return ascending ? d : -d;
      });
      var frag = document.createDocumentFragment();
      rows.forEach(function (r) { frag.appendChild(r); });
      body.appendChild(frag);
    });
  });
})();
</script>
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::state::Flow;
    use crate::flow::table::Retirement;

    fn flow(id: u64) -> FlowSummary {
        let f = Flow::new(id, ("10.0.0.1".parse().unwrap(), 40000), ("10.0.0.2".parse().unwrap(), 5201), 0);
        FlowSummary::from_flow(&f, Retirement::End)
    }

    #[test]
    fn attributed_flows_name_their_processes_in_both_tables() {
        let plain = flow(1);
        assert!(!flow_table(std::slice::from_ref(&plain), &[]).contains(">processes</th>"), "no column without owners");
        let mut owned = flow(2);
        owned.directions[0].process = Some(std::sync::Arc::new(crate::attribution::Process {
            pid: 42,
            comm: "curl".into(),
            cgroup: Some("system.slice/backup.service".into()),
            cgroup_id: 9,
            hook: crate::attribution::HOOK_CONNECT.into(),
        }));
        let h = flow_table(&[owned.clone(), plain.clone()], &[]);
        assert!(h.contains(">processes</th>"), "{h}");
        assert!(h.contains(">curl[42] system.slice/backup.service → -</td>"), "{h}");
        let cells = |row: &str| row.matches("<td").count();
        let rows: Vec<&str> = h.split("<tr>").skip(2).collect();
        assert_eq!(cells(rows[0]), cells(rows[1]));
        let summary = crate::output::summary::Summary {
            schema_version: crate::event::SCHEMA_VERSION,
            tool: "tcpviz".into(),
            sources: Vec::new(),
            totals: Default::default(),
            errors: Vec::new(),
            flows: vec![owned, plain],
            sections: Default::default(),
        };
        let t = crate::output::summary::render_table(&summary, 10);
        assert!(t.contains("processes") && t.contains("curl[42] system.slice/backup.service -> -"), "{t}");
    }

    #[test]
    fn watched_flows_say_since_when() {
        let plain = flow(1);
        assert!(!flow_table(std::slice::from_ref(&plain), &[]).contains("watched since"), "no column without watches");
        let watched = FlowSummary {
            watched_since: Some(1_700_000_000.25),
            watch_reason: Some("sack_sent".into()),
            watch_starts: Some(2),
            ..flow(2)
        };
        let h = flow_table(&[watched, plain], &[]);
        assert!(h.contains(">watched since</th>"), "{h}");
        assert!(h.contains(">22:13:20.250000</td>"), "{h}");
        assert!(h.contains("after an ACK with SACK blocks this host sent; 2 watches started"), "{h}");
        // The unwatched flow has an empty cell that sorts last, and the rows stay aligned.
        assert!(h.contains("<td class=\"num\" data-v=\"-1\"></td>"), "{h}");
        let cells = |row: &str| row.matches("<td").count();
        let rows: Vec<&str> = h.split("<tr>").skip(2).collect();
        assert_eq!(cells(rows[0]), cells(rows[1]));
    }
}
