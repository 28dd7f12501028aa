//! The dashboards of big synthetic sessions: thousands of flows and many events keep the
//! pages bounded in size and quick to draw. `million_events_render_in_seconds` is ignored by
//! default: `cargo xtask report-scale` runs it in release mode and prints its figures.

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use common::browser::{Scratch, assert_clean, figure, have_chromium, open};
use tcpviz::event::{Event, EventKind, Extra, Origin, Reason, Severity};
use tcpviz::output::summary::{DirectionSummary, FlowSummary, RttSummary, Summary, Totals};
use tcpviz::report::{self, page, report_page, series, summary_page, timeline};

/// A synthetic session: `events` events over `flows` flows in ten minutes, a few flows
/// with most of the trouble (as in real captures), every kind and severity.
fn synthetic_session(dir: &Path, events: u64, flows: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let t0 = 1_750_000_000.0;
    let kinds = [
        (EventKind::DuplicateAck, Severity::Info, None),
        (EventKind::Retransmission, Severity::Info, None),
        (EventKind::WindowUpdate, Severity::Info, None),
        (EventKind::OutOfOrder, Severity::Warning, None),
        (EventKind::FastRetransmission, Severity::Info, None),
        (EventKind::LossInfer, Severity::Warning, Some(Reason::TripleDuplicateAck)),
        (EventKind::ZeroWindow, Severity::Warning, None),
        (EventKind::LossInfer, Severity::Critical, Some(Reason::RetransmissionTimeout)),
    ];
    // Flow f gets a share ~ 1/(f+1): flow 0 the most.
    let harmonic: f64 = (0..flows).map(|f| 1.0 / (f + 1) as f64).sum();
    let mut counts: Vec<[u64; 8]> = vec![[0; 8]; flows as usize];
    let mut w = std::io::BufWriter::new(std::fs::File::create(dir.join("events.jsonl")).unwrap());
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..events {
        // Inverse of the harmonic share, by a uniform draw.
        let mut u = (next() % 1_000_000) as f64 / 1e6 * harmonic;
        let mut flow = 0u64;
        while flow + 1 < flows && u > 1.0 / (flow + 1) as f64 {
            u -= 1.0 / (flow + 1) as f64;
            flow += 1;
        }
        let k = (next() % 100) as usize;
        let which = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 3, 4, 5, 6, 7][k % 20];
        let (kind, severity, reason) = kinds[which];
        counts[flow as usize][which] += 1;
        let e = Event {
            ts: ((t0 + 600.0 * i as f64 / events as f64) * 1e9) as i64,
            event: kind,
            flow_id: flow,
            src: format!("10.{}.{}.1", flow / 250, flow % 250).parse().unwrap(),
            dst: "192.0.2.80".parse().unwrap(),
            sport: 40_000 + (flow % 20_000) as u16,
            dport: 443,
            seq: i as u32,
            ack: 7,
            len: 1448,
            flags: "A".into(),
            severity,
            extra: Extra {
                reason,
                rel_seq: Some(i as u32),
                bytes_in_flight: Some(14_480),
                srtt_ms: Some(20.0),
                detail: (which == 7).then(|| "<b>timer</b> & \u{2028}".to_string()),
                ..Default::default()
            },
            origin: Origin::Wire,
            frame: Some(i + 1),
            file: None,
        };
        serde_json::to_writer(&mut w, &e).unwrap();
        w.write_all(b"\n").unwrap();
    }
    w.flush().unwrap();
    let dir_summary = |f: u64, n: u64| DirectionSummary {
        src: format!("10.{}.{}.1", f / 250, f % 250).parse().unwrap(),
        sport: 40_000 + (f % 20_000) as u16,
        dst: "192.0.2.80".parse().unwrap(),
        dport: 443,
        packets: n,
        bytes: n * 1448,
        retransmitted_bytes: 0,
        max_bytes_in_flight: 14_480,
        rtt: RttSummary {
            samples: 3,
            min_ms: Some(10.0),
            median_ms: Some(20.0),
            max_ms: Some(30.0),
            median_exact: true,
            ..Default::default()
        },
        rtt_timestamps: None,
        events: Default::default(),
        limited_by: None,
        process: None,
    };
    let mut listed: Vec<FlowSummary> = (0..flows)
        .map(|f| {
            let mut by_kind = std::collections::BTreeMap::new();
            for (i, (kind, _, _)) in kinds.iter().enumerate() {
                if counts[f as usize][i] > 0 {
                    *by_kind.entry(*kind).or_insert(0) += counts[f as usize][i];
                }
            }
            let mut per_kind = [0u32; EventKind::COUNT];
            for (k, v) in &by_kind {
                per_kind[k.index()] = *v as u32;
            }
            FlowSummary {
                flow_id: f,
                first_ts: t0,
                last_ts: t0 + 600.0,
                duration_s: 600.0,
                packets: 1000,
                bytes: 1000 * 1448,
                retransmission_rate: 0.01,
                handshake_rtt_ms: Some(20.0),
                state: "closed".into(),
                ended_by: "end".into(),
                trouble_score: tcpviz::flow::state::trouble_score(&per_kind),
                events: by_kind,
                directions: [dir_summary(f, 600), dir_summary(f, 400)],
                kernel: None,
                watched_since: None,
                watch_reason: None,
                watch_starts: None,
            }
        })
        .collect();
    listed.sort_by(|a, b| b.trouble_score.cmp(&a.trouble_score).then(a.flow_id.cmp(&b.flow_id)));
    let mut totals = Totals { packets: flows * 1000, tcp_segments: flows * 1000, flows, ..Default::default() };
    totals.first_ts = Some(t0);
    totals.last_ts = Some(t0 + 600.0);
    totals.duration_s = 600.0;
    for f in &listed {
        for (k, v) in &f.events {
            *totals.events.entry(*k).or_insert(0) += v;
        }
    }
    let summary = Summary {
        schema_version: 1,
        tool: "synthetic".into(),
        sources: vec!["/nonexistent/synthetic.pcap".into()],
        totals,
        errors: vec![],
        flows: listed,
        sections: Default::default(),
    };
    std::fs::write(dir.join("summary.json"), serde_json::to_string(&summary).unwrap()).unwrap();
}

struct ScaleFigures {
    sizes: [u64; 3],
    write_seconds: f64,
    /// Time each page took to draw all its plots in the browser (from the first script).
    render_ms: Vec<u64>,
}

fn scale_run(events: u64, flows: u64, name: &str) -> ScaleFigures {
    let dir = Scratch::new();
    let session = dir.path().join("s");
    let started = Instant::now();
    synthetic_session(&session, events, flows);
    eprintln!("{name}: generated {events} events over {flows} flows in {:.1} s", started.elapsed().as_secs_f64());
    let started = Instant::now();
    let written: Vec<PathBuf> = report::write_all(&session).unwrap().into_iter().map(|w| w.path).collect();
    let write_seconds = started.elapsed().as_secs_f64();
    let sizes: Vec<u64> = written.iter().map(|p| std::fs::metadata(p).unwrap().len()).collect();
    eprintln!("{name}: pages written in {write_seconds:.1} s, sizes {sizes:?} bytes");
    let js = page::plotly_js().len() as u64;
    for (p, size) in written.iter().zip(&sizes) {
        assert!(*size <= js + 8_000_000, "{} is {size} bytes: over plotly.js + 8 MB", p.display());
    }

    let timeline_html = std::fs::read_to_string(session.join(report::TIMELINE_FILE)).unwrap();
    assert!(timeline_html.contains("sampled per flow, kind and severity"), "the page says it samples");
    let fig = figure(&timeline_html, timeline::PLOT_ID);
    let marker_traces: Vec<&serde_json::Value> = fig["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["mode"] == "markers" && t["legendgroup"] != "alerts")
        .collect();
    let markers: usize = marker_traces.iter().map(|t| t["x"].as_array().unwrap().len()).sum();
    assert!(markers as u64 <= timeline::MAX_MARKERS + 31 * 8, "{markers} markers");
    assert!(markers as u64 >= timeline::MAX_MARKERS / 2, "{markers} markers");
    // Every row keeps markers, the folded one too.
    let mut rows_with_markers: Vec<i64> = marker_traces
        .iter()
        .flat_map(|t| t["y"].as_array().unwrap().iter().map(|y| y.as_f64().unwrap().round() as i64))
        .collect();
    rows_with_markers.sort();
    rows_with_markers.dedup();
    assert_eq!(rows_with_markers, (0..=timeline::MAX_ROWS as i64).collect::<Vec<_>>());
    let ticks = fig["layout"]["yaxis"]["ticktext"].as_array().unwrap();
    assert_eq!(ticks.len(), timeline::MAX_ROWS + 1);
    assert!(ticks.last().unwrap().as_str().unwrap().starts_with("other flows ("));
    assert!(ticks[0].as_str().unwrap().starts_with("#0 "), "the worst flow on top: {}", ticks[0]);
    let rate_total: u64 = fig["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["type"] == "bar")
        .flat_map(|t| t["y"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()))
        .sum();
    assert_eq!(rate_total, events, "the rate bars count every event");
    let summary_html = std::fs::read_to_string(session.join(report::SUMMARY_PAGE_FILE)).unwrap();
    assert_eq!(summary_html.matches("<tr>").count(), summary_page::MAX_TABLE_FLOWS.min(flows as usize) + 1);
    let report_html = std::fs::read_to_string(session.join(report::REPORT_FILE)).unwrap();
    assert!(report_html.contains("are not readable from here"));
    assert_eq!(report_html.matches("-tseq\"").count(), series::MAX_DETAIL_FLOWS * 2, "div and call per flow");

    let mut render_ms = Vec::new();
    if have_chromium() {
        for (page, shot, ids) in [
            (report::TIMELINE_FILE, "timeline", vec![timeline::PLOT_ID.to_string()]),
            (report::SUMMARY_PAGE_FILE, "summary", vec![summary_page::BARS_PLOT_ID.to_string()]),
            (report::REPORT_FILE, "report", vec![report_page::EVENTS_BY_KIND_PLOT_ID.to_string()]),
        ] {
            let o = open(&session.join(page), &format!("{name}-{shot}"));
            assert_clean(&o, &format!("{name} {page}"), &ids);
            render_ms.push(o.render_ms.expect("the page says how long it took"));
        }
    }
    ScaleFigures { sizes: [sizes[0], sizes[1], sizes[2]], write_seconds, render_ms }
}

#[test]
fn thousands_of_flows_and_many_events_stay_bounded() {
    scale_run(60_000, 2_000, "scale-60k");
}

/// `cargo xtask report-scale` (release): a million events over 2,000 flows.
#[test]
#[ignore = "a million events: run in release by cargo xtask report-scale"]
fn million_events_render_in_seconds() {
    let f = scale_run(1_000_000, 2_000, "scale-1m");
    eprintln!(
        "scale-1m: timeline {} bytes, summary {} bytes, report {} bytes, written in {:.1} s, drawn in {:?} ms",
        f.sizes[0], f.sizes[1], f.sizes[2], f.write_seconds, f.render_ms
    );
    assert!(f.render_ms.iter().all(|&ms| ms < 15_000), "a page took more than 15 s to draw: {:?}", f.render_ms);
}
