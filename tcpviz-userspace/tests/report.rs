//! The HTML dashboards, opened in headless Chromium: each page of a real session renders
//! its plots with no JavaScript error, no CSP violation and no network request; a crafted
//! file name cannot inject script. Screenshots are kept under `target/report-screenshots/`.
//! (Big sessions: report_scale.rs.)
//!
//! The browser tests are skipped (with a message) only when `/usr/bin/chromium` is missing
//! (`cargo xtask setup` installs it).

mod common;

use std::io::Write as _;
use std::path::Path;
use std::process::Command;

use common::browser::{Scratch, assert_clean, figure, have_chromium, open, probe};
use common::{sample, tcpviz};
use tcpviz::alert::{AlertConfig, AlertEngine};
use tcpviz::event::{Event, KernelSample};
use tcpviz::output::summary::{FlowSummary, Summary};
use tcpviz::report::{self, page, report_page, summary_page, timeline};

/// The crafted name: closing the script element and opening another, in a capture path.
const NASTY_FILE: &str = "x</script><script>alert(1)</script>.pcap";
const NASTY_SESSION: &str = "session \"<img src=x onerror=alert(2)>";

/// Writes alerts.jsonl from the session's events with the default alert settings, as the
/// live agent and the follow mode will.
fn write_alerts(session: &Path) -> usize {
    let mut engine = AlertEngine::new(AlertConfig::default());
    let mut alerts = Vec::new();
    for line in std::fs::read_to_string(session.join("events.jsonl")).unwrap().lines() {
        let e: Event = serde_json::from_str(line).unwrap();
        engine.on_event(&e, &mut alerts);
    }
    let mut f = std::fs::File::create(session.join("alerts.jsonl")).unwrap();
    for a in &alerts {
        writeln!(f, "{}", serde_json::to_string(a).unwrap()).unwrap();
    }
    alerts.len()
}

/// A kernel_samples.jsonl for a flow, shaped like a Reno sawtooth.
fn write_kernel_samples(session: &Path, flow: &FlowSummary) {
    let d = &flow.directions[flow.data_direction()];
    let mut f = std::fs::File::create(session.join("kernel_samples.jsonl")).unwrap();
    for i in 0..200u32 {
        let t = flow.first_ts + flow.duration_s * i as f64 / 200.0;
        let sample = KernelSample {
            ts: (t * 1e9) as i64,
            flow_id: Some(flow.flow_id),
            src: d.src,
            sport: d.sport,
            dst: d.dst,
            dport: d.dport,
            snd_cwnd: 10 + (i % 50),
            ssthresh: if i < 50 { 0x7fff_ffff } else { 30 },
            srtt_us: 120 + i,
            snd_wnd: 65535,
            rcv_wnd: 65535,
            snd_una: 0,
            snd_nxt: 0,
            mss: Some(1448),
        };
        writeln!(f, "{}", serde_json::to_string(&sample).unwrap()).unwrap();
    }
}

fn load_summary(session: &Path) -> Summary {
    serde_json::from_str(&std::fs::read_to_string(session.join("summary.json")).unwrap()).unwrap()
}

fn run_ok(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn dashboards_of_a_real_session_render_offline_without_errors() {
    let dir = Scratch::new();
    // A capture whose path holds a crafted name (a file name cannot hold '/', so the name
    // runs through folders), next to a second capture, so events name their file.
    let crafted = dir.path().join(NASTY_FILE);
    std::fs::create_dir_all(crafted.parent().unwrap()).unwrap();
    std::fs::copy(sample("ipv4_loss_sender.pcap"), &crafted).unwrap();
    assert!(crafted.display().to_string().ends_with(NASTY_FILE));
    let session = dir.path().join(NASTY_SESSION);
    let printed = run_ok(
        tcpviz()
            .arg("parse-pcap")
            .arg("--in")
            .arg(&crafted)
            .arg("--in")
            .arg(sample("handshake_failures.pcap"))
            .arg("--out")
            .arg(&session)
            .arg("--quiet")
            .arg("--report"),
    );
    for page in [report::TIMELINE_FILE, report::SUMMARY_PAGE_FILE, report::REPORT_FILE] {
        assert!(printed.contains(&session.join(page).display().to_string()), "{page} not printed:\n{printed}");
    }

    // Alerts and kernel samples, as a live session has; then each command alone.
    assert!(write_alerts(&session) > 0, "the sample raises alerts");
    let summary = load_summary(&session);
    let worst = report_page::worst_flows(&summary);
    write_kernel_samples(&session, worst[0]);
    let out = run_ok(tcpviz().arg("plot").arg("--in").arg(&session));
    assert_eq!(out.trim(), session.join(report::TIMELINE_FILE).display().to_string());
    let out = run_ok(tcpviz().arg("report").arg("--in").arg(session.join("events.jsonl")));
    assert_eq!(out.trim(), session.join(report::REPORT_FILE).display().to_string());
    let out = run_ok(tcpviz().arg("summary").arg("--in").arg(&session));
    assert!(out.contains("retx%"), "the table is still printed:\n{out}");
    assert!(out.trim_end().ends_with(&session.join(report::SUMMARY_PAGE_FILE).display().to_string()));

    // The raw pages: plotly.js once, the CSP, crafted names only escaped.
    for page in [report::TIMELINE_FILE, report::SUMMARY_PAGE_FILE, report::REPORT_FILE] {
        let html = std::fs::read_to_string(session.join(page)).unwrap();
        assert_eq!(html.matches("* plotly.js v").count(), 1, "{page}: plotly.js embedded once");
        assert!(html.contains(page::CONTENT_SECURITY_POLICY), "{page}: CSP");
        assert!(!html.contains("alert(1)</script>") && !html.contains("<img src=x"), "{page}: unescaped input");
        assert!(html.contains("&lt;img src=x onerror=alert(2)&gt;"), "{page}: the session name, escaped");
    }
    let report_html = std::fs::read_to_string(session.join(report::REPORT_FILE)).unwrap();
    assert!(report_html.contains("x&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;.pcap"));
    let timeline_html = std::fs::read_to_string(session.join(report::TIMELINE_FILE)).unwrap();
    let fig = figure(&timeline_html, timeline::PLOT_ID);
    let hover = fig["data"].to_string();
    assert!(
        hover.contains("x&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;.pcap"),
        "file names in hovers, escaped"
    );
    let names: Vec<&str> = fig["data"].as_array().unwrap().iter().filter_map(|t| t["name"].as_str()).collect();
    assert!(names.contains(&"WARN alert") || names.contains(&"CRITICAL alert"), "alert bands: {names:?}");
    assert!(names.contains(&"retransmission") && names.contains(&"loss_infer"), "{names:?}");
    let ids = report_page::flow_plot_ids(worst[0].flow_id);
    let inflight = figure(&report_html, &ids[2]);
    assert!(inflight["data"].to_string().contains("kernel cwnd"), "cwnd beside bytes in flight");
    // The band under the time–sequence graph: a lossy flow spends time in loss recovery.
    let band = figure(&report_html, &ids[3]);
    assert!(band["data"].to_string().contains("loss recovery"), "{}", band["data"]);

    if !have_chromium() {
        return;
    }
    let o = open(&session.join(report::TIMELINE_FILE), "timeline");
    assert_clean(&o, "timeline", &[timeline::PLOT_ID.to_string()]);
    // Hovering a retransmission shows its details.
    let retransmissions = fig["data"].as_array().unwrap().iter().position(|t| t["name"] == "retransmission").unwrap();
    let hover = probe(
        &session.join(report::TIMELINE_FILE),
        &format!(
            "Plotly.Fx.hover('timeline', [{{curveNumber: {retransmissions}, pointNumber: 0}}]);
             var label = document.querySelector('#timeline .hovertext');
             document.getElementById('probe').textContent = label ? label.textContent : 'no hover label';"
        ),
    );
    eprintln!("timeline hover label: {hover}");
    for want in ["retransmission", "INFO", "flow ", "UTC (+", "frame ", "seq ", "flags "] {
        assert!(hover.contains(want), "{want:?} not in the hover label {hover:?}");
    }
    let o = open(&session.join(report::SUMMARY_PAGE_FILE), "summary");
    assert_clean(&o, "summary", &[summary_page::BARS_PLOT_ID.to_string()]);
    assert!(o.dom.contains(&format!("<table class=\"flows\" id=\"{}\"", summary_page::TABLE_ID)));
    // A click on "packets" sorts biggest first, a second click smallest first.
    let sorted = probe(
        &session.join(report::SUMMARY_PAGE_FILE),
        "var t = document.getElementById('flows'); var th = t.tHead.rows[0].cells[3]; var out = [];
         function col() { return Array.prototype.map.call(t.tBodies[0].rows, function (r) { return Number(r.cells[3].getAttribute('data-v')); }); }
         th.click(); out.push(col()); th.click(); out.push(col());
         document.getElementById('probe').textContent = JSON.stringify(out);",
    );
    let sorted: Vec<Vec<f64>> = serde_json::from_str(&sorted).unwrap_or_else(|_| panic!("{sorted}"));
    let mut by_packets: Vec<f64> = summary.flows.iter().map(|f| f.packets as f64).collect();
    by_packets.sort_by(|a, b| b.total_cmp(a));
    assert_eq!(sorted[0], by_packets, "descending on the first click");
    by_packets.reverse();
    assert_eq!(sorted[1], by_packets, "ascending on the second");
    let o = open(&session.join(report::REPORT_FILE), "report");
    let mut expected = vec![report_page::EVENTS_BY_KIND_PLOT_ID.to_string()];
    for f in &worst {
        expected.extend(report_page::flow_plot_ids(f.flow_id));
    }
    assert_clean(&o, "report", &expected);
    assert!(o.dom.contains("x&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;.pcap"), "the name shows as text");
}

#[test]
fn report_falls_back_to_the_events_when_the_capture_is_gone() {
    let dir = Scratch::new();
    let capture = dir.path().join("gone.pcap");
    std::fs::copy(sample("ipv4_loss_sender.pcap"), &capture).unwrap();
    let session = dir.path().join("s");
    run_ok(tcpviz().arg("parse-pcap").arg("--in").arg(&capture).arg("--out").arg(&session).arg("--quiet"));
    std::fs::remove_file(&capture).unwrap();
    let written = report::write_all(&session).unwrap();
    assert_eq!(written.len(), 3);
    let problems: Vec<String> = written.iter().flat_map(|w| &w.problems).map(|p| p.to_string()).collect();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("warning: capture ") && problems[0].contains("gone.pcap not found"),
        "{problems:?}"
    );
    let html = std::fs::read_to_string(session.join(report::REPORT_FILE)).unwrap();
    assert!(html.contains("are not readable from here"), "the page says the graphs are from events");
    assert!(html.contains("Flagged packets, data"));
    assert!(!session.join("kernel_samples.jsonl").exists());
    if !have_chromium() {
        return;
    }
    let summary = load_summary(&session);
    let mut expected = vec![report_page::EVENTS_BY_KIND_PLOT_ID.to_string()];
    expected.extend(report_page::flow_plot_ids(summary.flows[0].flow_id));
    let o = open(&session.join(report::REPORT_FILE), "report-from-events");
    assert_clean(&o, "report from events", &expected);
}

#[test]
fn an_events_file_alone_makes_a_timeline_and_clear_errors_for_the_rest() {
    let dir = Scratch::new();
    let session = dir.path().join("s");
    run_ok(
        tcpviz()
            .arg("parse-pcap")
            .arg("--in")
            .arg(sample("handshake_failures.pcap"))
            .arg("--out")
            .arg(&session)
            .arg("--quiet"),
    );
    std::fs::remove_file(session.join("summary.json")).unwrap();
    let page = report::write_timeline(&session.join("events.jsonl")).unwrap();
    assert!(page.problems.is_empty(), "{:?}", page.problems);
    let html = std::fs::read_to_string(page.path).unwrap();
    assert!(html.contains("No summary.json beside the events"));
    let o = tcpviz().arg("report").arg("--in").arg(&session).output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("summary.json is missing") && err.contains("parse-pcap"), "{err}");
    let o = tcpviz().arg("plot").arg("--in").arg(dir.path().join("nothing")).output().unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("no such file or folder"));
}
