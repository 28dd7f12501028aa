//! Rendering of one frame: header, connections table, alerts pane and key line; or the
//! detail of one connection. Below 80 columns the table and header get a compact layout.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Sparkline, Table, TableState};

use super::keys::ViewState;
use super::snapshot::{FlowRow, Snapshot, SortColumn, ViewMode};
use crate::alert::Level;
use crate::output::summary::endpoint;
use crate::time::{NS_PER_SEC, TimestampNs};

/// Narrower than this, the compact layout.
pub const COMPACT_BELOW: u16 = 80;

pub fn draw(f: &mut Frame<'_>, snap: &Snapshot, rows: &[&FlowRow], state: &ViewState) {
    let area = f.area();
    let compact = area.width < COMPACT_BELOW;
    let alerts_height = if compact { 4 } else { 7 };
    let [header, body, alerts, keys] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Min(3),
        Constraint::Length(alerts_height),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_header(f, header, snap, state, compact);
    match state.detail {
        Some(id) => draw_detail(f, body, snap, id),
        None => draw_table(f, body, snap, rows, state, compact),
    }
    draw_alerts(f, alerts, snap);
    draw_keys(f, keys, state);
}

fn level_style(level: Level) -> Style {
    match level {
        Level::Critical => Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
        Level::Warn => Style::default().fg(Color::Yellow),
        Level::Ok => Style::default(),
    }
}

/// The newest `width` samples (a sparkline draws from the start of its data).
fn tail(data: &[u64], width: u16) -> &[u64] {
    &data[data.len().saturating_sub(width as usize)..]
}

pub fn human_rate(bytes_per_s: f64) -> String {
    let units = ["B/s", "kB/s", "MB/s", "GB/s"];
    let mut v = bytes_per_s;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 { format!("{v:.0} {}", units[i]) } else { format!("{v:.1} {}", units[i]) }
}

fn clock(ts: TimestampNs) -> String {
    chrono::DateTime::from_timestamp(ts.div_euclid(NS_PER_SEC), ts.rem_euclid(NS_PER_SEC) as u32)
        .map(|t| t.format("%H:%M:%S").to_string())
        .unwrap_or_default()
}

fn draw_header(f: &mut Frame<'_>, area: Rect, snap: &Snapshot, state: &ViewState, compact: bool) {
    let mut title = vec![
        Span::styled(format!("tcpviz {}", snap.mode.as_str()), Style::default().add_modifier(Modifier::BOLD)),
        Span::raw(format!("  {}", snap.source)),
    ];
    if let Some(t) = snap.event_time {
        title.push(Span::raw(format!("  at {}", clock(t))));
    }
    if state.paused.is_some() {
        title.push(Span::styled("  PAUSED (p resumes)", Style::default().fg(Color::Black).bg(Color::Yellow)));
    }
    let totals = if compact {
        format!(
            "{} pkts  {} flows  {} retx  lost {}",
            snap.packets, snap.flows_active, snap.retransmissions, snap.records_lost
        )
    } else {
        format!(
            "{} packets ({} TCP)  flows {} active / {} seen  events {}  retransmissions {}  alerts {}  records lost {}",
            snap.packets,
            snap.tcp_segments,
            snap.flows_active,
            snap.flows_seen,
            snap.events,
            snap.retransmissions,
            snap.alerts_active,
            snap.records_lost
        )
    };
    let lost_style = if snap.records_lost > 0 { Style::default().fg(Color::Red) } else { Style::default() };
    let [text, spark_line] = Layout::vertical([Constraint::Length(2), Constraint::Length(1)]).areas(area);
    f.render_widget(Paragraph::new(vec![Line::from(title), Line::styled(totals, lost_style)]), text);
    let now = snap.retx_per_sec.last().copied().unwrap_or(0);
    let label = format!("retx/s {now:>5} ");
    let [label_area, spark] =
        Layout::horizontal([Constraint::Length(label.len() as u16), Constraint::Min(1)]).areas(spark_line);
    f.render_widget(Paragraph::new(label), label_area);
    f.render_widget(
        Sparkline::default().data(tail(&snap.retx_per_sec, spark.width)).style(Style::default().fg(Color::Red)),
        spark,
    );
}

/// Column headers and the sort column each stands for (`None`: not sortable). The process
/// column is there when a connection's owner is known (a live agent's hooks saw it open).
fn columns(
    mode: ViewMode,
    compact: bool,
    (with_process, with_interface): (bool, bool),
) -> Vec<(&'static str, Option<SortColumn>, Constraint)> {
    use SortColumn::*;
    if compact {
        return vec![
            ("connection", Some(Connection), Constraint::Min(20)),
            ("retx", Some(RetxWindow), Constraint::Length(5)),
            ("ooo", Some(OooWindow), Constraint::Length(5)),
            ("rtt ms", Some(Rtt), Constraint::Length(7)),
            ("level", None, Constraint::Length(5)),
        ];
    }
    let mut c = vec![("connection", Some(Connection), Constraint::Min(30))];
    if with_process {
        c.push(("process", None, Constraint::Length(16)));
    }
    if with_interface {
        c.push(("iface", None, Constraint::Length(10)));
    }
    c.extend([
        ("pkt/s", Some(PacketsPerSecond), Constraint::Length(7)),
        ("throughput", Some(Throughput), Constraint::Length(10)),
        ("retx win/all", Some(RetxWindow), Constraint::Length(12)),
        ("ooo win/all", Some(OooWindow), Constraint::Length(11)),
        ("0win s", Some(ZeroWindow), Constraint::Length(6)),
        ("rtt ms", Some(Rtt), Constraint::Length(8)),
    ]);
    if mode == ViewMode::Live {
        c.push(("srtt ms", None, Constraint::Length(8)));
        c.push(("cwnd", None, Constraint::Length(6)));
        c.push(("ssthr", None, Constraint::Length(6)));
    }
    c.push(("level", None, Constraint::Length(8)));
    c.push(("state", Some(State), Constraint::Length(8)));
    c
}

fn rtt_text(ms: Option<f64>) -> String {
    ms.map_or("-".into(), |ms| if ms < 10.0 { format!("{ms:.2}") } else { format!("{ms:.1}") })
}

fn cells(r: &FlowRow, mode: ViewMode, compact: bool, (with_process, with_interface): (bool, bool)) -> Vec<String> {
    let conn = format!("{} > {}", endpoint(r.a.0, r.a.1), endpoint(r.b.0, r.b.1));
    let level = r.level.as_str().to_string();
    if compact {
        return vec![conn, r.retx_window.to_string(), r.ooo_window.to_string(), rtt_text(r.rtt_ms), level];
    }
    let mut c = vec![conn];
    if with_process {
        c.push(r.process.clone().unwrap_or_else(|| "-".into()));
    }
    if with_interface {
        c.push(r.interface.clone().unwrap_or_else(|| "-".into()));
    }
    c.extend([
        format!("{:.0}", r.packets_per_s),
        human_rate(r.bytes_per_s),
        format!("{}/{}", r.retx_window, r.retx_total),
        format!("{}/{}", r.ooo_window, r.ooo_total),
        format!("{:.0}", r.zero_window_s),
        rtt_text(r.rtt_ms),
    ]);
    if mode == ViewMode::Live {
        match r.kernel {
            Some(k) => {
                c.push(rtt_text(Some(k.srtt_ms)));
                c.push(k.cwnd.to_string());
                // A huge ssthresh means the kernel has not set one yet.
                c.push(if k.ssthresh >= 0x7fff_ffff { "-".into() } else { k.ssthresh.to_string() });
            }
            None => c.extend(["-".into(), "-".into(), "-".into()]),
        }
    }
    c.push(level);
    c.push(r.state.to_string());
    c
}

fn draw_table(f: &mut Frame<'_>, area: Rect, snap: &Snapshot, rows: &[&FlowRow], state: &ViewState, compact: bool) {
    // The process and interface columns only where some connection has them.
    let optional = (snap.rows.iter().any(|r| r.process.is_some()), snap.rows.iter().any(|r| r.interface.is_some()));
    let cols = columns(snap.mode, compact, optional);
    let arrow = if state.reversed { "^" } else { "v" };
    let header = Row::new(cols.iter().map(|(name, col, _)| {
        if *col == Some(state.sort) {
            Cell::from(format!("{name}{arrow}")).style(Style::default().add_modifier(Modifier::REVERSED))
        } else {
            Cell::from(*name)
        }
    }))
    .style(Style::default().add_modifier(Modifier::BOLD));
    let body: Vec<Row<'_>> =
        rows.iter().map(|r| Row::new(cells(r, snap.mode, compact, optional)).style(level_style(r.level))).collect();
    let title = format!(
        " connections: {} shown of {} (sort {}{}{}) ",
        rows.len(),
        snap.rows.len(),
        state.sort.name(),
        if state.reversed { ", reversed" } else { "" },
        if state.filter.is_empty() { String::new() } else { format!(", filter '{}'", state.filter) }
    );
    let table = Table::new(body, cols.iter().map(|c| c.2))
        .header(header)
        .block(Block::default().borders(Borders::TOP).title(title))
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    let mut ts = TableState::default();
    if !rows.is_empty() {
        ts.select(Some(state.selected.min(rows.len() - 1)));
    }
    f.render_stateful_widget(table, area, &mut ts);
    if rows.is_empty() {
        let why = if snap.sequence == 0 {
            "waiting for the first packets"
        } else if snap.rows.is_empty() {
            "no connection tracked"
        } else {
            "no connection matches the filter (Esc clears it)"
        };
        let inner = Rect { y: area.y + 2, height: area.height.saturating_sub(2), ..area };
        f.render_widget(Paragraph::new(format!("  {why}")), inner);
    }
}

fn draw_detail(f: &mut Frame<'_>, area: Rect, snap: &Snapshot, id: u64) {
    let Some(r) = snap.rows.iter().find(|r| r.flow_id == id) else {
        f.render_widget(
            Paragraph::new("  this connection is no longer tracked (closed, or evicted); Esc goes back")
                .block(Block::default().borders(Borders::TOP).title(format!(" flow {id} "))),
            area,
        );
        return;
    };
    let d = &r.detail;
    let title = format!(" flow {} {} > {}  (Esc back) ", r.flow_id, endpoint(r.a.0, r.a.1), endpoint(r.b.0, r.b.1));
    let mut info = vec![format!(
        "state {}  level {}  {:.0} pkt/s  {}  retransmissions {} in window / {} total  out-of-order {} / {}  zero window {:.0} s  rtt {} ms",
        r.state,
        r.level.as_str(),
        r.packets_per_s,
        human_rate(r.bytes_per_s),
        r.retx_window,
        r.retx_total,
        r.ooo_window,
        r.ooo_total,
        r.zero_window_s,
        rtt_text(r.rtt_ms)
    )];
    if let Some((now, so_far)) = &r.limited {
        info.push(format!(
            "limited by {} now; so far rwnd {:.0}%  cwnd {:.0}%  loss {:.0}%  app {:.0}% of {:.1} s",
            now.name(),
            so_far.receiver_window * 100.0,
            so_far.congestion_window * 100.0,
            so_far.loss_recovery * 100.0,
            so_far.application * 100.0,
            so_far.seconds
        ));
    }
    if let Some(k) = r.kernel {
        info.push(format!("kernel: srtt {} ms  cwnd {}  ssthresh {}", rtt_text(Some(k.srtt_ms)), k.cwnd, k.ssthresh));
    }
    let block = Block::default().borders(Borders::TOP).title(title);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let mut series: Vec<(String, &[u64])> = vec![
        (format!("throughput (now {})", human_rate(r.bytes_per_s)), &d.bytes_per_s),
        (format!("rtt (now {} ms)", rtt_text(r.rtt_ms)), &d.rtt_us),
        (format!("bytes in flight (now {})", d.bytes_in_flight.last().copied().unwrap_or(0)), &d.bytes_in_flight),
    ];
    if snap.mode == ViewMode::Live {
        series.push((format!("kernel cwnd (now {})", d.cwnd.last().copied().unwrap_or(0)), &d.cwnd));
    }
    let mut constraints = vec![Constraint::Length(info.len() as u16)];
    constraints.extend(series.iter().map(|_| Constraint::Length(3)));
    constraints.push(Constraint::Min(2));
    let parts = Layout::vertical(constraints).split(inner);
    f.render_widget(Paragraph::new(info.join("\n")), parts[0]);
    for (i, (name, data)) in series.iter().enumerate() {
        let area = parts[i + 1];
        let block = Block::default().title(format!("{name}, last {} s", data.len()));
        let spark = Sparkline::default().data(tail(data, area.width)).style(Style::default().fg(Color::Cyan));
        f.render_widget(spark.block(block), area);
    }
    let events: Vec<Line<'_>> =
        std::iter::once(Line::styled("recent events", Style::default().add_modifier(Modifier::BOLD)))
            .chain(d.events.iter().map(|e| {
                Line::raw(format!(
                    "{} {:<24} from {} seq {} len {}",
                    clock(e.ts),
                    e.kind.to_string(),
                    endpoint(e.from.0, e.from.1),
                    e.seq,
                    e.len
                ))
            }))
            .collect();
    f.render_widget(Paragraph::new(events), parts[parts.len() - 1]);
}

fn draw_alerts(f: &mut Frame<'_>, area: Rect, snap: &Snapshot) {
    let lines: Vec<Line<'_>> = snap
        .alerts
        .iter()
        .take(area.height.saturating_sub(1) as usize)
        .map(|a| {
            Line::from(vec![
                Span::raw(format!("{} ", clock(a.ts))),
                Span::styled(format!("{:<8}", a.level.as_str()), level_style(a.level)),
                Span::raw(format!(
                    " flow {} {} > {}  {}",
                    a.flow_id,
                    endpoint(a.src.0, a.src.1),
                    endpoint(a.dst.0, a.dst.1),
                    a.message
                )),
            ])
        })
        .collect();
    let block = Block::default().borders(Borders::TOP).title(" alerts (latest WARN and CRITICAL) ");
    f.render_widget(Paragraph::new(lines).block(block), area);
}

fn draw_keys(f: &mut Frame<'_>, area: Rect, state: &ViewState) {
    let text = if state.quitting {
        "finishing the session: summary and dashboards are being written...".to_string()
    } else if state.editing {
        format!("filter (address, port, state; Enter applies, Esc clears): {}_", state.filter)
    } else if state.detail.is_some() {
        "Esc back  p pause  q quit".to_string()
    } else {
        "q quit  / filter  s sort  1-0 column  r reverse  Up/Down select  Enter detail  p pause".to_string()
    };
    f.render_widget(Paragraph::new(text).style(Style::default().add_modifier(Modifier::REVERSED)), area);
}

#[cfg(test)]
mod tests {
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    use super::*;
    use crate::tui::snapshot::visible_rows;

    fn screen(width: u16, snap: &Snapshot, state: &ViewState) -> String {
        let mut t = Terminal::new(TestBackend::new(width, 30)).unwrap();
        let rows = visible_rows(&snap.rows, &state.filter, state.sort, state.reversed);
        t.draw(|f| draw(f, snap, &rows, state)).unwrap();
        let buf = t.backend().buffer().clone();
        (0..buf.area.height)
            .map(|y| (0..buf.area.width).map(|x| buf[(x, y)].symbol().to_string()).collect::<String>() + "\n")
            .collect()
    }

    #[test]
    fn empty_wide_compact_and_detail_screens_draw() {
        let state = ViewState::default();
        let empty = Snapshot::default();
        for w in [40, 79, 80, 200] {
            assert!(screen(w, &empty, &state).contains("waiting for the first packets"));
        }
        let mut worst = crate::tui::snapshot::tests_row(1, 80);
        worst.retx_window = 7;
        worst.level = Level::Critical;
        let snap = Snapshot {
            mode: ViewMode::Live,
            sequence: 1,
            rows: vec![crate::tui::snapshot::tests_row(2, 443), worst],
            retx_per_sec: vec![0, 3, 9],
            ..Default::default()
        };
        let wide = screen(160, &snap, &state);
        assert!(wide.contains("cwnd") && wide.contains("0win s"), "{wide}");
        assert!(!wide.contains("iface") && !wide.contains("process"), "no column without values: {wide}");
        // The interface column once a connection's interface is known; `/` finds it.
        let mut on_veth = snap.clone();
        on_veth.rows[1].interface = Some("veth-srv".into());
        let with_iface = screen(180, &on_veth, &state);
        assert!(with_iface.contains("iface"), "{with_iface}");
        let row = with_iface.lines().find(|l| l.contains("10.0.0.1:") && l.contains(":80 ")).unwrap();
        assert!(row.contains("veth-srv"), "{with_iface}");
        let filtered = ViewState { filter: "veth-srv".into(), ..Default::default() };
        assert_eq!(visible_rows(&on_veth.rows, &filtered.filter, filtered.sort, false).len(), 1);
        let first_row = wide.lines().find(|l| l.contains("10.0.0.1:")).unwrap();
        assert!(first_row.contains(":80 ") && first_row.contains("CRITICAL"), "{wide}");
        let narrow = screen(60, &snap, &state);
        assert!(!narrow.contains("throughput") && narrow.contains("retx"), "{narrow}");
        let detail = ViewState { detail: Some(1), ..Default::default() };
        let d = screen(100, &snap, &detail);
        assert!(d.contains("bytes in flight") && d.contains("recent events"), "{d}");
        let gone = ViewState { detail: Some(99), ..Default::default() };
        assert!(screen(100, &snap, &gone).contains("no longer tracked"));
        // A terminal too small for anything still draws.
        let mut t = Terminal::new(TestBackend::new(10, 3)).unwrap();
        t.draw(|f| draw(f, &snap, &[], &state)).unwrap();
    }

    #[test]
    fn rates_read_as_people_write_them() {
        assert_eq!(human_rate(0.0), "0 B/s");
        assert_eq!(human_rate(1500.0), "1.5 kB/s");
        assert_eq!(human_rate(2.5e9), "2.5 GB/s");
    }
}
