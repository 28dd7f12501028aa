//! The graphs of a flow's series ([`super::series`]): the time–sequence (Stevens/tcptrace)
//! graph, RTT over time, bytes in flight over time (with the kernel's cwnd and ssthresh for
//! live sessions).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use plotly::common::{AxisSide, HoverInfo, Line, LineShape, Marker, MarkerSymbol, Mode, Title, Visible};
use plotly::layout::{Annotation, Axis, Legend, Margin, RangeMode};
use plotly::{Layout, Plot, Scatter};

use super::page::{escape_plot_text, fmt_count};
use super::series::{FlowSeries, FlowTarget, Limit, MAX_SERIES_POINTS, Mark, SeriesOrigin};
use super::style::{kind_color, kind_symbol, plot_config};
use crate::event::EventKind;

/// The time axis of a flow's plots: the same range on all three, so they line up.
fn axis_time(target: &FlowTarget) -> Axis {
    let duration = target.t(target.last_ns).max(1e-6);
    let pad = duration * 0.02;
    Axis::new()
        .title(Title::with_text("time since the flow's first packet (s)"))
        .range(vec![-pad, duration + pad])
        .zero_line(false)
        .hover_format(".6f")
}

/// Says in the plot area why a plot has nothing to draw.
fn with_empty_note(layout: Layout, empty: bool, text: &str) -> Layout {
    if !empty {
        return layout;
    }
    layout.annotations(vec![
        Annotation::new()
            .text(escape_plot_text(text))
            .x_ref("paper")
            .y_ref("paper")
            .x(0.5)
            .y(0.5)
            .show_arrow(false)
            .font(plotly::common::Font::new().size(14).color("#616e7c")),
    ])
}

/// The layout of a flow's plots: fixed side margins and the legend in a row above the plot,
/// so the three time axes of a flow line up one under the other. An empty plot is short.
fn layout(title: &str, height: usize, empty: bool) -> Layout {
    use plotly::common::{Anchor, Orientation};
    Layout::new()
        .title(
            Title::with_text(title)
                .x(0.0)
                .x_anchor(Anchor::Left)
                .y(0.98)
                .y_anchor(Anchor::Top)
                .y_ref(plotly::common::Reference::Container),
        )
        .height(if empty { 200 } else { height })
        .margin(Margin::new().top(if empty { 50 } else { 78 }).bottom(50).left(90).right(90).auto_expand(false))
        .hover_mode(plotly::layout::HoverMode::Closest)
        .legend(
            Legend::new()
                .orientation(Orientation::Horizontal)
                .x(0.0)
                .x_anchor(Anchor::Left)
                .y(1.02)
                .y_anchor(Anchor::Bottom),
        )
}

/// The time–sequence graph of the data direction: each segment a vertical bar from its
/// first to its last byte, the ACKs and the receive-window limit of the other side as
/// steps, and the flagged packets (retransmissions, duplicate ACKs, …) marked.
pub fn time_sequence_plot(s: &FlowSeries) -> Plot {
    let mut plot = Plot::new();
    if !s.segments.is_empty() {
        let mut x = Vec::with_capacity(s.segments.len() * 3);
        let mut y = Vec::with_capacity(s.segments.len() * 3);
        for p in &s.segments {
            x.extend([Some(p.t), Some(p.t), None]);
            y.extend([Some(p.seq), Some(p.seq + p.len as u64), None]);
        }
        plot.add_trace(
            Scatter::new(x, y)
                .name("data segments")
                .mode(Mode::LinesMarkers)
                .line(Line::new().color("#1f3b57").width(1.5))
                .marker(
                    Marker::new()
                        .symbol(MarkerSymbol::LineEW)
                        .size(5)
                        .color("#1f3b57")
                        .line(Line::new().width(1.0).color("#1f3b57")),
                )
                .hover_template("t = %{x:.6f} s<br>seq %{y}<extra>data segment</extra>"),
        );
    }
    if !s.acks.is_empty() {
        plot.add_trace(
            Scatter::new(s.acks.iter().map(|a| a.t).collect(), s.acks.iter().map(|a| a.ack).collect())
                .name("ACKed (receiver)")
                .mode(Mode::Lines)
                .line(Line::new().color("#2ca02c").width(1.5).shape(LineShape::Hv))
                .hover_template("t = %{x:.6f} s<br>ACK %{y}<extra>ACK</extra>"),
        );
        if s.acks.iter().any(|a| a.window_edge.is_some()) {
            plot.add_trace(
                Scatter::new(s.acks.iter().map(|a| a.t).collect(), s.acks.iter().map(|a| a.window_edge).collect())
                    .name("receive window limit")
                    .mode(Mode::Lines)
                    .line(Line::new().color("#c9a400").width(1.2).shape(LineShape::Hv))
                    .hover_template("t = %{x:.6f} s<br>ACK + window %{y}<extra>window limit</extra>"),
            );
        }
    }
    add_marks(&mut plot, &s.marks);
    let title = match s.origin {
        SeriesOrigin::Captures => format!("Time–sequence graph, data {}", s.target.data_label()),
        SeriesOrigin::Events => format!("Flagged packets, data {} (events only)", s.target.data_label()),
    };
    let empty = s.segments.is_empty() && s.acks.is_empty() && s.marks.is_empty();
    plot.set_layout(
        with_empty_note(layout(&escape_plot_text(&title), 460, empty), empty, "no data segments and no ACKs")
            .x_axis(axis_time(&s.target))
            .y_axis(
                Axis::new()
                    .title(Title::with_text("relative sequence number (bytes)"))
                    .separate_thousands(true)
                    .range_mode(RangeMode::ToZero),
            ),
    );
    plot.set_configuration(plot_config());
    plot
}

fn add_marks(plot: &mut Plot, marks: &[Mark]) {
    let mut by_kind: BTreeMap<EventKind, Vec<&Mark>> = BTreeMap::new();
    for m in marks {
        by_kind.entry(m.kind).or_default().push(m);
    }
    for (kind, marks) in by_kind {
        let x: Vec<f64> = marks.iter().map(|m| m.t).collect();
        let y: Vec<u64> = marks.iter().map(|m| m.y).collect();
        let text: Vec<String> = marks.iter().map(|m| m.text.clone()).collect();
        let big = kind.is_retransmission() || kind == EventKind::LossInfer;
        // Routine kinds start hidden (a click on the legend shows them): hundreds of
        // window updates would bury the retransmissions.
        let routine = matches!(
            kind,
            EventKind::WindowUpdate | EventKind::KeepAlive | EventKind::KeepAliveAck | EventKind::ZeroWindowProbeAck
        );
        plot.add_trace(
            Scatter::new(x, y)
                .name(kind.as_str())
                .visible(if routine { Visible::LegendOnly } else { Visible::True })
                .mode(Mode::Markers)
                .marker(
                    Marker::new()
                        .symbol(kind_symbol(kind))
                        .size(if big { 10 } else { 7 })
                        .color(kind_color(kind))
                        .line(Line::new().width(1.0).color(kind_color(kind))),
                )
                .text_array(text)
                .hover_info(HoverInfo::Text),
        );
    }
}

/// RTT samples over time (Karn's rule: never from retransmitted data), the data's RTT from
/// timestamp echoes when both ends use them, and the kernel's smoothed RTT when there are
/// kernel samples.
pub fn rtt_plot(s: &FlowSeries) -> Plot {
    let mut plot = Plot::new();
    let (data_name, reverse_name) = match s.origin {
        SeriesOrigin::Captures => {
            ("RTT of the data (ACK − segment)".to_string(), "RTT of the other direction".to_string())
        }
        SeriesOrigin::Events => ("smoothed RTT at flagged packets".to_string(), String::new()),
    };
    if !s.rtt_data.is_empty() {
        plot.add_trace(
            Scatter::new(s.rtt_data.iter().map(|p| p.0).collect(), s.rtt_data.iter().map(|p| p.1).collect())
                .name(data_name)
                .mode(Mode::Markers)
                .marker(Marker::new().size(5).color("#1f77b4"))
                .hover_template("t = %{x:.6f} s<br>RTT %{y:.3f} ms<extra></extra>"),
        );
    }
    if !s.rtt_timestamps.is_empty() {
        plot.add_trace(
            Scatter::new(
                s.rtt_timestamps.iter().map(|p| p.0).collect(),
                s.rtt_timestamps.iter().map(|p| p.1).collect(),
            )
            .name("RTT of the data (timestamp echo)")
            .mode(Mode::Markers)
            .marker(Marker::new().size(4).color("#ff7f0e").symbol(MarkerSymbol::Cross))
            .hover_template("t = %{x:.6f} s<br>RTT %{y:.3f} ms<extra>timestamp echo</extra>"),
        );
    }
    if !s.rtt_reverse.is_empty() {
        plot.add_trace(
            Scatter::new(s.rtt_reverse.iter().map(|p| p.0).collect(), s.rtt_reverse.iter().map(|p| p.1).collect())
                .name(reverse_name)
                .mode(Mode::Markers)
                .marker(Marker::new().size(4).color("#9aa7b5").symbol(MarkerSymbol::CircleOpen))
                .hover_template("t = %{x:.6f} s<br>RTT %{y:.3f} ms<extra>other direction</extra>"),
        );
    }
    let srtt: Vec<(f64, f64)> = s.kernel.iter().filter_map(|k| k.srtt_ms.map(|v| (k.t, v))).collect();
    if !srtt.is_empty() {
        plot.add_trace(
            Scatter::new(srtt.iter().map(|p| p.0).collect(), srtt.iter().map(|p| p.1).collect())
                .name("kernel srtt (tcp_probe)")
                .mode(Mode::Lines)
                .line(Line::new().color("#9467bd").width(1.5))
                .hover_template("t = %{x:.6f} s<br>kernel srtt %{y:.3f} ms<extra></extra>"),
        );
    }
    let title = format!("RTT over time, data {}", s.target.data_label());
    let empty = s.rtt_data.is_empty() && s.rtt_reverse.is_empty() && s.rtt_timestamps.is_empty() && srtt.is_empty();
    let why = match s.origin {
        SeriesOrigin::Captures => "no RTT sample: no ACK matched a segment sent only once (Karn's rule)",
        SeriesOrigin::Events => "no RTT in the flow's events",
    };
    let mut layout = with_empty_note(layout(&escape_plot_text(&title), 340, empty), empty, why)
        .x_axis(axis_time(&s.target))
        .y_axis(Axis::new().title(Title::with_text("RTT (ms)")).range_mode(RangeMode::ToZero));
    if !empty {
        layout = layout.update_menus(vec![y_scale_menu()]);
    }
    plot.set_layout(layout);
    plot.set_configuration(plot_config());
    plot
}

/// Linear and log buttons for the y axis, above the plot's right end: one slow RTT (a
/// retransmitted SYN's) flattens every sub-millisecond one on a linear axis.
fn y_scale_menu() -> plotly::layout::update_menu::UpdateMenu {
    use plotly::common::Anchor;
    use plotly::layout::update_menu::{Button, ButtonMethod, UpdateMenu, UpdateMenuDirection, UpdateMenuType};
    let button = |label: &str, scale: &str| {
        Button::new()
            .label(label)
            .method(ButtonMethod::Relayout)
            .args(serde_json::json!([{ "yaxis.type": scale, "yaxis.autorange": true }]))
    };
    UpdateMenu::new()
        .ty(UpdateMenuType::Buttons)
        .direction(UpdateMenuDirection::Left)
        .buttons(vec![button("linear", "linear"), button("log", "log")])
        .show_active(true)
        .x(1.0)
        .x_anchor(Anchor::Right)
        .y(1.0)
        .y_anchor(Anchor::Bottom)
}

/// Bytes in flight (sent, not yet acknowledged, as seen at the capture point), with the
/// kernel's congestion window and slow-start threshold beside it for live sessions.
/// The colour of each limit in the band under the time–sequence graph.
fn limit_color(l: Limit) -> &'static str {
    match l {
        Limit::ReceiverWindow => "#c9a400",
        Limit::CongestionWindow => "#1f77b4",
        Limit::LossRecovery => "#d62728",
        Limit::Application => "#9aa5b1",
    }
}

/// The band under the time–sequence graph: what held the sender back, over time, one
/// colour per limit (`flow::limits`).
pub fn limits_plot(s: &FlowSeries) -> Plot {
    let mut plot = Plot::new();
    for limit in Limit::ALL {
        let spans: Vec<_> = s.limits.iter().filter(|p| p.limit == limit).collect();
        if spans.is_empty() {
            continue;
        }
        // One filled rectangle per span, the spans of a limit in one trace.
        let mut x = Vec::with_capacity(spans.len() * 6);
        let mut y = Vec::with_capacity(spans.len() * 6);
        for p in &spans {
            x.extend([Some(p.start), Some(p.end), Some(p.end), Some(p.start), Some(p.start), None]);
            y.extend([Some(0.0), Some(0.0), Some(1.0), Some(1.0), Some(0.0), None]);
        }
        let share: f64 = spans.iter().map(|p| p.end - p.start).sum();
        plot.add_trace(
            Scatter::new(x, y)
                .name(format!("{} ({})", limit.name(), limit.short()))
                .mode(Mode::Lines)
                .fill(plotly::common::Fill::ToSelf)
                .fill_color(limit_color(limit))
                .line(Line::new().color(limit_color(limit)).width(0.5))
                .hover_template(format!(
                    "t = %{{x:.6f}} s<br>limited by the {}<br>{:.3} s of the flow<extra></extra>",
                    limit.name(),
                    share
                )),
        );
    }
    let empty = s.limits.is_empty();
    let title = format!("What limited the sender, data {}", s.target.data_label());
    let why_empty = match s.origin {
        SeriesOrigin::Captures => "the data direction sent fewer than two segments",
        SeriesOrigin::Events => "needs the packets (the capture), not only the events",
    };
    let layout = with_empty_note(layout(&escape_plot_text(&title), 170, empty), empty, why_empty)
        .x_axis(axis_time(&s.target))
        .y_axis(Axis::new().range(vec![0.0, 1.0]).show_tick_labels(false).show_grid(false).zero_line(false));
    plot.set_layout(layout);
    plot.set_configuration(plot_config());
    plot
}

pub fn in_flight_plot(s: &FlowSeries) -> Plot {
    let mut plot = Plot::new();
    if !s.in_flight.is_empty() {
        plot.add_trace(
            Scatter::new(s.in_flight.iter().map(|p| p.0).collect(), s.in_flight.iter().map(|p| p.1).collect())
                .name("bytes in flight")
                .mode(Mode::Lines)
                .line(Line::new().color("#1f3b57").width(1.2).shape(LineShape::Hv))
                .hover_template("t = %{x:.6f} s<br>%{y:,} bytes in flight<extra></extra>"),
        );
    }
    let empty = s.in_flight.is_empty() && s.kernel.is_empty();
    let title = format!("Bytes in flight, data {}", s.target.data_label());
    let mut layout = with_empty_note(layout(&escape_plot_text(&title), 340, empty), empty, "no data in flight")
        .x_axis(axis_time(&s.target))
        .y_axis(
            Axis::new()
                .title(Title::with_text("bytes in flight"))
                .range_mode(RangeMode::ToZero)
                .separate_thousands(true),
        );
    if !s.kernel.is_empty() {
        plot.add_trace(
            Scatter::new(s.kernel.iter().map(|k| k.t).collect(), s.kernel.iter().map(|k| k.cwnd).collect())
                .name("kernel cwnd (segments)")
                .y_axis("y2")
                .mode(Mode::Lines)
                .line(Line::new().color("#d62728").width(1.5).shape(LineShape::Hv))
                .hover_template("t = %{x:.6f} s<br>cwnd %{y} segments<extra></extra>"),
        );
        plot.add_trace(
            Scatter::new(s.kernel.iter().map(|k| k.t).collect(), s.kernel.iter().map(|k| k.ssthresh).collect())
                .name("kernel ssthresh (segments)")
                .y_axis("y2")
                .mode(Mode::Lines)
                .line(Line::new().color("#f08c00").width(1.5).dash(plotly::common::DashType::Dash).shape(LineShape::Hv))
                .hover_template("t = %{x:.6f} s<br>ssthresh %{y} segments<extra></extra>"),
        );
        layout = layout.y_axis2(
            Axis::new()
                .title(Title::with_text("cwnd, ssthresh (segments)"))
                .overlaying("y")
                .side(AxisSide::Right)
                .range_mode(RangeMode::ToZero)
                .show_grid(false),
        );
    }
    plot.set_layout(layout);
    plot.set_configuration(plot_config());
    plot
}

/// What a flow's series hold, for the note under its heading.
pub fn series_note(s: &FlowSeries) -> String {
    let mut note = match s.origin {
        SeriesOrigin::Captures => format!("{} packets of this flow re-read from the capture", fmt_count(s.packets)),
        SeriesOrigin::Events => "Only the flagged packets (from events.jsonl)".to_string(),
    };
    if s.decimated {
        let _ = write!(
            note,
            "; long series thinned evenly to at most {} points per trace",
            fmt_count(MAX_SERIES_POINTS as u64)
        );
    }
    if s.marks_total > s.marks.len() as u64 {
        let _ = write!(
            note,
            "; {} of {} flagged packets marked",
            fmt_count(s.marks.len() as u64),
            fmt_count(s.marks_total)
        );
    }
    note.push('.');
    note
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::KernelSample;
    use crate::report::LineCounts;
    use crate::report::series::tests::target;
    use crate::report::series::{KernelSeries, LimitSpan, kernel_series};
    use crate::time::NS_PER_SEC;

    #[test]
    fn kernel_samples_are_matched_and_plotted_beside_bytes_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kernel_samples.jsonl");
        let mut lines = String::new();
        for i in 0..20u32 {
            let sample = KernelSample {
                ts: 100 * NS_PER_SEC + i as i64 * 100_000_000,
                flow_id: if i % 2 == 0 { Some(4) } else { None },
                src: "10.0.0.1".parse().unwrap(),
                sport: 5000,
                dst: "10.0.0.2".parse().unwrap(),
                dport: 80,
                snd_cwnd: 10 + i,
                ssthresh: if i < 10 { 0x7fff_ffff } else { 12 },
                srtt_us: 20_000 + i * 100,
                snd_wnd: 65535,
                rcv_wnd: 65535,
                snd_una: 1,
                snd_nxt: 1,
                mss: None,
            };
            lines.push_str(&serde_json::to_string(&sample).unwrap());
            lines.push('\n');
        }
        // Another socket, and a line cut short by a writer still running.
        lines.push_str(&lines.lines().next().unwrap().replace("5000", "6000").replace("\"flow_id\":4,", ""));
        lines.push_str("\n{\"ts\":1");
        std::fs::write(&path, lines).unwrap();
        let (map, counts) = kernel_series(&path, &[target()]).unwrap();
        assert_eq!(counts, Some(LineCounts { lines: 21, incomplete_last: Some(22), ..Default::default() }));
        let KernelSeries { points, decimated } = &map[&4];
        assert!(!decimated);
        assert_eq!(points.len(), 20);
        assert_eq!(points[0].ssthresh, None, "0x7fffffff is not set yet");
        assert_eq!(points[19].ssthresh, Some(12));
        assert!((points[19].t - 1.9).abs() < 1e-9);

        let series = FlowSeries {
            target: target(),
            origin: SeriesOrigin::Captures,
            packets: 3,
            segments: vec![],
            acks: vec![],
            rtt_data: vec![(0.1, 20.0)],
            rtt_reverse: vec![],
            rtt_timestamps: vec![(0.15, 21.0)],
            in_flight: vec![(0.1, 1000), (0.2, 2000)],
            marks: vec![],
            marks_total: 0,
            kernel: points.clone(),
            limits: vec![
                LimitSpan { start: 0.0, end: 0.5, limit: Limit::CongestionWindow },
                LimitSpan { start: 0.5, end: 0.75, limit: Limit::LossRecovery },
                LimitSpan { start: 0.75, end: 1.0, limit: Limit::CongestionWindow },
            ],
            decimated: false,
        };
        // The band: one trace per limit that held, a filled rectangle per span.
        let band: serde_json::Value = serde_json::from_str(&limits_plot(&series).to_json()).unwrap();
        let names: Vec<&str> = band["data"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["congestion window (cwnd)", "loss recovery (loss)"]);
        assert_eq!(band["data"][0]["x"].as_array().unwrap().len(), 12, "two rectangles");
        assert_eq!(band["data"][1]["fill"], "toself");
        let json: serde_json::Value = serde_json::from_str(&in_flight_plot(&series).to_json()).unwrap();
        let names: Vec<&str> = json["data"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["bytes in flight", "kernel cwnd (segments)", "kernel ssthresh (segments)"]);
        assert_eq!(json["data"][1]["yaxis"], "y2");
        assert_eq!(json["data"][2]["y"][0], serde_json::Value::Null, "unset ssthresh is a gap");
        assert_eq!(json["layout"]["yaxis2"]["overlaying"], "y");
        let rtt: serde_json::Value = serde_json::from_str(&rtt_plot(&series).to_json()).unwrap();
        let names: Vec<&str> = rtt["data"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            ["RTT of the data (ACK − segment)", "RTT of the data (timestamp echo)", "kernel srtt (tcp_probe)"]
        );

        // No file: no kernel series, no error.
        let (map, counts) = kernel_series(&dir.path().join("none.jsonl"), &[target()]).unwrap();
        assert!(map.is_empty() && counts.is_none());
    }
}
