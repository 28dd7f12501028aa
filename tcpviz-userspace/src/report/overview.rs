//! The overview of report.html: what the session read, what it found, and what a live
//! session's kernel side did, as key–value tables.

use std::fmt::Write as _;

use super::page::{escape_html, fmt_bytes, fmt_count, fmt_seconds, fmt_utc, truncate_chars};
use crate::output::sections::LiveSection;
use crate::output::summary::Summary;

pub(super) fn overview_table(summary: &Summary, alerts: Option<(u64, u64)>) -> String {
    let t = &summary.totals;
    let mut h = String::from("<table class=\"kv\">");
    let mut row = |key: &str, value_html: String| {
        let _ = write!(h, "<tr><th>{}</th><td>{}</td></tr>", escape_html(key), value_html);
    };
    let sources = if summary.sources.is_empty() {
        "–".to_string()
    } else {
        summary
            .sources
            .iter()
            .map(|s| format!("<span class=\"mono\">{}</span>", escape_html(&truncate_chars(s, 400))))
            .collect::<Vec<_>>()
            .join("<br>")
    };
    row("capture sources", sources);
    if let Some(view) = summary.sections.live.as_ref().and_then(wire_view) {
        row("wire view", escape_html(&view));
    }
    if let Some(live) = summary.sections.live.as_ref().filter(|l| !l.interfaces.is_empty()) {
        row("interfaces", live_interfaces(live));
    }
    if let Some(check) = &summary.sections.cross_check {
        row("cross-check with tshark", escape_html(&crate::cross_check::describe(check)));
    }
    if let (Some(a), Some(b)) = (t.first_ts, t.last_ts) {
        row("first packet", escape_html(&fmt_utc(a)));
        row("last packet", escape_html(&fmt_utc(b)));
    }
    row("duration", escape_html(&fmt_seconds(t.duration_s)));
    row("packets read", fmt_count(t.packets));
    row("TCP segments", fmt_count(t.tcp_segments));
    // A live session reads no file: its bytes are those of the packets the TC programs saw.
    let bytes_label = if summary.sections.live.is_some() { "bytes seen on the wire" } else { "capture bytes read" };
    row(bytes_label, escape_html(&fmt_bytes(t.bytes)));
    let mut flows = fmt_count(t.flows);
    if t.flows_evicted_idle > 0 {
        let _ = write!(flows, " ({} retired idle)", fmt_count(t.flows_evicted_idle));
    }
    if let Some(line) = t.eviction_line() {
        let _ = write!(flows, "; {}", escape_html(&line));
    }
    if t.flows_folded > 0 {
        let _ = write!(flows, "; {} least troubled not listed in summary.json", fmt_count(t.flows_folded));
    }
    row("TCP flows", flows);
    let events = if t.events.is_empty() {
        "none".to_string()
    } else {
        let by_kind: Vec<String> = t.events.iter().map(|(k, v)| format!("{k} {}", fmt_count(*v))).collect();
        format!("{} ({})", fmt_count(t.events.values().sum()), escape_html(&by_kind.join(", ")))
    };
    row("events", events);
    if let Some(line) = t.kernel_line() {
        row("kernel and wire", escape_html(&line));
    }
    row(
        "alerts",
        match alerts {
            None => "no alerts.jsonl in this session".to_string(),
            Some((0, 0)) => "none raised".to_string(),
            Some((w, c)) => format!("{} WARN, {} CRITICAL raised", fmt_count(w), fmt_count(c)),
        },
    );
    let skipped: u64 = t.skipped.values().sum();
    row(
        "skipped frames",
        if skipped == 0 {
            "none".to_string()
        } else {
            let by: Vec<String> =
                t.skipped.iter().map(|(k, v)| format!("{} {}", k.replace('_', " "), fmt_count(*v))).collect();
            format!("{} ({})", fmt_count(skipped), escape_html(&by.join(", ")))
        },
    );
    row(
        "errors",
        if summary.errors.is_empty() {
            "none".to_string()
        } else {
            summary.errors.iter().map(|e| escape_html(&truncate_chars(e, 600))).collect::<Vec<_>>().join("<br>")
        },
    );
    let mut sections = summary.sections.to_json();
    // Drawn as a plot of its own below.
    if let Some(live) = sections.get_mut("live").and_then(|l| l.as_object_mut()) {
        live.remove("tcp_ext_during");
    }
    if let Some(live) = sections.get("live") {
        row("lost in the kernel", escape_html(&live_losses(live)));
    }
    // Figures other sources add (the live agent's lost events, kernel counts, …), as nested
    // tables: raw JSON runs off the page.
    for (key, value) in &sections {
        row(&truncate_chars(key, 80), json_table(value, 0));
    }
    h.push_str("</table>\n");
    h
}

/// A JSON value as HTML: an object as a key–value table (nested ones inside), a list of
/// plain values joined, a list of objects one table after the other. Deep or long values
/// are cut short, and said so.
fn json_table(value: &serde_json::Value, depth: usize) -> String {
    use serde_json::Value;
    const MAX_ROWS: usize = 100;
    match value {
        Value::Object(map) if depth < 4 && !map.is_empty() => {
            let mut t = String::from("<table class=\"kv\">");
            for (k, v) in map.iter().take(MAX_ROWS) {
                let _ = write!(
                    t,
                    "<tr><th>{}</th><td>{}</td></tr>",
                    escape_html(&truncate_chars(k, 80)),
                    json_table(v, depth + 1)
                );
            }
            if map.len() > MAX_ROWS {
                let _ = write!(t, "<tr><td colspan=\"2\">… {} more</td></tr>", map.len() - MAX_ROWS);
            }
            t.push_str("</table>");
            t
        }
        Value::Array(items) if depth < 4 && items.iter().any(Value::is_object) => {
            let mut parts: Vec<String> = items.iter().take(MAX_ROWS).map(|v| json_table(v, depth + 1)).collect();
            if items.len() > MAX_ROWS {
                parts.push(format!("… {} more", items.len() - MAX_ROWS));
            }
            parts.join("")
        }
        Value::Array(items) if items.iter().all(|v| !v.is_array() && !v.is_object()) => {
            let text: Vec<String> = items.iter().map(plain_json).collect();
            escape_html(&truncate_chars(&text.join(", "), 2000))
        }
        Value::Null => "–".into(),
        Value::String(_) | Value::Bool(_) | Value::Number(_) => escape_html(&truncate_chars(&plain_json(value), 2000)),
        other => format!("<span class=\"mono\">{}</span>", escape_html(&truncate_chars(&other.to_string(), 2000))),
    }
}

/// A plain JSON value as text: strings without their quotes, numbers with separators.
fn plain_json(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) if n.is_u64() => fmt_count(n.as_u64().unwrap_or(0)),
        other => other.to_string(),
    }
}

/// Which packets a live session's wire view holds, in words, so that a partial view is never
/// taken for a whole one. `None` for sessions of versions that copied every packet and did
/// not say so.
fn wire_view(live: &LiveSection) -> Option<String> {
    match live.capture.as_deref()? {
        "troubled" => {
            let marks = live.trouble_marks.as_ref().map_or(0, |m| m.tracepoint + m.sack_sent + m.zero_window_sent);
            Some(format!(
                "partial (--capture troubled): only connections the kernel showed trouble on, from their first \
                 trouble to {} s after their last; {} trouble marks{}",
                live.watch_secs.unwrap_or(0.0),
                fmt_count(marks),
                live.watch_starts.map(|n| format!(", {} watches started", fmt_count(n))).unwrap_or_default()
            ))
        }
        "all" => Some("every TCP packet (--capture all)".into()),
        "kernel" => Some("none: the kernel's TCP events only".into()),
        "file" => Some("the capture file another tool writes (--pcap-path)".into()),
        other => Some(format!("--capture {other}")),
    }
}

/// Each interface of a live session with its packets and how it was watched; and the
/// packets seen at a second point of the host, analysed once.
fn live_interfaces(live: &LiveSection) -> String {
    let mut lines: Vec<String> = live
        .interfaces
        .iter()
        .map(|i| {
            let gone =
                i.gone_at.map(|t| format!(", went away {}", fmt_utc(crate::time::ts_to_secs(t)))).unwrap_or_default();
            format!(
                "<span class=\"mono\">{}</span>: {} packets ({}{})",
                escape_html(&i.name),
                fmt_count(i.packets),
                escape_html(&i.hook),
                escape_html(&gone)
            )
        })
        .collect();
    if live.packets_seen_again > 0 {
        lines.push(format!(
            "{} packets seen again at a second interface or on loopback: analysed where each direction was first seen",
            fmt_count(live.packets_seen_again)
        ));
    }
    lines.join("<br>")
}

/// What the live agent's kernel side lost, by cause, in words. Sessions of earlier versions
/// name only the ring-buffer losses.
fn live_losses(live: &serde_json::Value) -> String {
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let causes = &live["lost_by_cause"];
    if !causes.is_object() {
        let (p, k) = (n(&live["packets_lost"]), n(&live["kernel_events_lost"]));
        return if p + k == 0 {
            "none".into()
        } else {
            format!("{} packets, {} kernel events (ring buffer full)", fmt_count(p), fmt_count(k))
        };
    }
    let (packets, events) = (&causes["packets"], &causes["kernel_events"]);
    let ring = (n(&packets["ring_full"]), n(&events["ring_full"]));
    let recursion = n(&packets["recursion"]) + n(&events["recursion"]);
    let unreadable = n(&events["unreadable"]);
    let total = ring.0 + ring.1 + recursion + unreadable;
    if total == 0 {
        return "none".into();
    }
    let mut parts = Vec::new();
    if ring.0 + ring.1 > 0 {
        parts.push(format!("ring buffer full: {} packets, {} kernel events", fmt_count(ring.0), fmt_count(ring.1)));
    }
    if recursion > 0 {
        let by: Vec<String> = live["recursion_misses_by_program"]
            .as_object()
            .map(|m| m.iter().filter(|(_, v)| n(v) > 0).map(|(k, v)| format!("{k} {}", fmt_count(n(v)))).collect())
            .unwrap_or_default();
        parts.push(format!(
            "program runs the kernel skipped because another BPF program was running on the CPU: {} ({})",
            fmt_count(recursion),
            by.join(", ")
        ));
    }
    if unreadable > 0 {
        parts.push(format!("unreadable tracepoint records: {}", fmt_count(unreadable)));
    }
    format!("{} records ({})", fmt_count(total), parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::sections::TroubleMarks;

    #[test]
    fn live_losses_name_every_cause() {
        let live = serde_json::json!({
            "packets_lost": 3,
            "kernel_events_lost": 9,
            "lost_by_cause": {
                "packets": {"ring_full": 3, "recursion": 0},
                "kernel_events": {"ring_full": 5, "recursion": 2, "unreadable": 2},
            },
            "recursion_misses_by_program": {"tcpviz_probe": 0, "tcpviz_retransmit_skb": 2},
        });
        let text = live_losses(&live);
        assert!(text.starts_with("12 records"), "{text}");
        assert!(text.contains("ring buffer full: 3 packets, 5 kernel events"), "{text}");
        assert!(text.contains("skipped") && text.contains(": 2 (tcpviz_retransmit_skb 2)"), "{text}");
        assert!(!text.contains("tcpviz_probe"), "programs without misses are not listed: {text}");
        assert!(text.contains("unreadable tracepoint records: 2"), "{text}");
        let none = serde_json::json!({"lost_by_cause": {"packets": {}, "kernel_events": {}}});
        assert_eq!(live_losses(&none), "none");
        // A session of an earlier version.
        let old = serde_json::json!({"packets_lost": 4, "kernel_events_lost": 0});
        assert_eq!(live_losses(&old), "4 packets, 0 kernel events (ring buffer full)");
    }

    #[test]
    fn a_partial_wire_view_says_so() {
        let troubled = LiveSection {
            capture: Some("troubled".into()),
            watch_secs: Some(30.0),
            trouble_marks: Some(TroubleMarks { tracepoint: 100, sack_sent: 20, ..Default::default() }),
            ..Default::default()
        };
        let text = wire_view(&troubled).unwrap();
        assert!(text.starts_with("partial (--capture troubled)") && text.contains("30 s after"), "{text}");
        assert!(text.ends_with("120 trouble marks"), "{text}");
        let started = LiveSection { watch_starts: Some(7), ..troubled };
        assert!(wire_view(&started).unwrap().ends_with("120 trouble marks, 7 watches started"));
        let all = LiveSection { capture: Some("all".into()), ..Default::default() };
        assert_eq!(wire_view(&all).unwrap(), "every TCP packet (--capture all)");
        let file = LiveSection { capture: Some("file".into()), ..Default::default() };
        assert!(wire_view(&file).unwrap().contains("--pcap-path"));
        assert_eq!(wire_view(&LiveSection::default()), None, "an earlier version's session");
    }

    #[test]
    fn sections_are_tables_not_raw_json() {
        let v = serde_json::json!({
            "live": {"hooks": {"tc:<eth0>": "tcx"}, "interfaces": [{"name": "lo", "packets": 12345}], "netns": null},
            "ports": [80, 443],
        });
        let html = json_table(&v, 0);
        assert!(!html.contains('{') && !html.contains("&quot;"), "{html}");
        assert!(html.contains("<th>tc:&lt;eth0&gt;</th><td>tcx</td>"), "{html}");
        assert!(html.contains("<th>packets</th><td>12,345</td>") && html.contains("80, 443"), "{html}");
        assert!(html.contains("<th>netns</th><td>–</td>"), "{html}");
    }
}
