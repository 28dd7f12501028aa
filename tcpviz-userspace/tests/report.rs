//! The HTML dashboards, opened in headless Chromium: each page of a real session renders
//! its plots with no JavaScript error, no CSP violation and no network request; a crafted
//! file name cannot inject script; big sessions stay bounded. Screenshots are kept under
//! `target/report-screenshots/`.
//!
//! The browser tests are skipped (with a message) only when `/usr/bin/chromium` is missing
//! (`cargo xtask setup` installs it). `million_events_render_in_seconds` is ignored by
//! default: `cargo xtask report-scale` runs it in release mode and prints its figures.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tcpviz::alert::{AlertConfig, AlertEngine};
use tcpviz::event::{Event, EventKind, Extra, KernelSample, Origin, Reason, Severity};
use tcpviz::output::summary::{DirectionSummary, FlowSummary, RttSummary, Summary, Totals};
use tcpviz::report::{self, flow_detail, page, report_page, summary_page, timeline};

const CHROMIUM: &str = "/usr/bin/chromium";
/// The crafted name: closing the script element and opening another, in a capture path.
const NASTY_FILE: &str = "x</script><script>alert(1)</script>.pcap";
const NASTY_SESSION: &str = "session \"<img src=x onerror=alert(2)>";

fn tcpviz() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tcpviz"))
}

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples").join(name)
}

/// `target/report-screenshots/`, found from the test binary (`target/<profile>/deps/`).
fn screenshots_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).map(Path::to_path_buf).unwrap_or_else(std::env::temp_dir);
    let dir = target.join("report-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn have_chromium() -> bool {
    if Path::new(CHROMIUM).exists() {
        return true;
    }
    eprintln!("SKIPPED: {CHROMIUM} is missing, the pages were not opened in a browser (cargo xtask setup installs it)");
    false
}

/// What the browser saw of a page.
#[derive(Debug)]
struct Opened {
    dom: String,
    errors: String,
    expected: usize,
    rendered: usize,
    render_ms: Option<u64>,
    /// Plot divs plotly drew (class `js-plotly-plot`).
    plots: Vec<String>,
    /// Requests the page itself made (the browser's own background requests excluded).
    page_requests: Vec<String>,
    wall: Duration,
}

/// One browser at a time: the machine has two cores and the pages are heavy.
static BROWSER: Mutex<()> = Mutex::new(());

fn chromium(args: &[&str], user_dir: &Path) -> (String, Duration) {
    let started = Instant::now();
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", user_dir.display()))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut s).unwrap();
        s
    });
    let deadline = started + Duration::from_secs(120);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within 120 s: {args:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (reader.join().unwrap(), started.elapsed())
}

/// Opens a page: dumps its DOM (with a network log) and takes a screenshot `<name>.png`.
fn open(page: &Path, name: &str) -> Opened {
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let url = format!("file://{}", page.canonicalize().unwrap().display());
    let work = tempfile::tempdir().unwrap();
    let netlog = work.path().join("netlog.json");
    let (dom, wall) = chromium(
        &["--virtual-time-budget=10000", &format!("--log-net-log={}", netlog.display()), "--dump-dom", &url],
        &work.path().join("profile1"),
    );
    let shot = screenshots_dir().join(format!("{name}.png"));
    let _ = std::fs::remove_file(&shot);
    chromium(
        &["--virtual-time-budget=10000", "--window-size=1400,2000", &format!("--screenshot={}", shot.display()), &url],
        &work.path().join("profile2"),
    );
    assert!(shot.is_file(), "no screenshot {}", shot.display());

    let errors = element_text(&dom, &format!("<pre id=\"{}\"", page::ERRORS_ELEMENT_ID));
    let status_start = dom.find(&format!("<div id=\"{}\"", page::STATUS_ELEMENT_ID)).expect("status element");
    let status = &dom[status_start..dom[status_start..].find('>').unwrap() + status_start];
    let attr = |name: &str| -> Option<String> {
        let key = format!("{name}=\"");
        let at = status.find(&key)? + key.len();
        Some(status[at..at + status[at..].find('"')?].to_string())
    };
    let plots = dom
        .match_indices("js-plotly-plot\" id=\"")
        .map(|(i, m)| {
            let rest = &dom[i + m.len()..];
            rest[..rest.find('"').unwrap()].to_string()
        })
        .collect();
    Opened {
        errors,
        expected: attr("data-expected").and_then(|v| v.parse().ok()).unwrap_or(usize::MAX),
        rendered: attr("data-rendered").and_then(|v| v.parse().ok()).unwrap_or(0),
        render_ms: attr("data-render-ms").and_then(|v| v.parse().ok()),
        plots,
        page_requests: page_requests(&netlog),
        dom,
        wall,
    }
}

/// Runs `script` in a copy of the page once it has drawn, and returns the text the script
/// left in `<pre id="probe">` (how the tests click and hover, with `--dump-dom` only).
fn probe(page: &Path, script: &str) -> String {
    let html = std::fs::read_to_string(page).unwrap();
    let copy = page.with_extension("probe.html");
    let injected = format!(
        "<pre id=\"probe\"></pre><script>\ntry {{ {script} }} catch (e) {{ document.getElementById('probe').textContent = 'probe failed: ' + e; }}\n</script>\n</body>"
    );
    std::fs::write(&copy, html.replacen("</body>", &injected, 1)).unwrap();
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let work = tempfile::tempdir().unwrap();
    let url = format!("file://{}", copy.canonicalize().unwrap().display());
    let (dom, _) = chromium(&["--virtual-time-budget=10000", "--dump-dom", &url], &work.path().join("profile"));
    std::fs::remove_file(&copy).unwrap();
    element_text(&dom, "<pre id=\"probe\"")
}

fn element_text(dom: &str, open_tag: &str) -> String {
    let Some(start) = dom.find(open_tag) else { panic!("{open_tag} missing from the page") };
    let body = &dom[start + dom[start..].find('>').unwrap() + 1..];
    body[..body.find("</").unwrap()].replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

/// URL requests in Chromium's network log that a page started (the browser's own, such as
/// update checks, have no initiating origin; a `file://` page's requests have "null").
fn page_requests(netlog: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(netlog).unwrap_or_default();
    let log: serde_json::Value = serde_json::from_str(&text)
        .or_else(|_| serde_json::from_str(&format!("{}]}}", text.trim_end().trim_end_matches(','))))
        .expect("chromium's network log");
    let start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"].as_u64();
    log["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter(|e| e["type"].as_u64() == start_job)
                .filter(|e| e["params"]["initiator"].as_str() != Some("not an origin"))
                .filter_map(|e| e["params"]["url"].as_str().map(str::to_string))
                .filter(|u| !u.starts_with("file:") && !u.starts_with("data:") && !u.starts_with("blob:"))
                .collect()
        })
        .unwrap_or_default()
}

fn assert_clean(o: &Opened, page: &str, plot_ids: &[String]) {
    assert_eq!(o.errors.trim(), "", "{page}: JavaScript errors or CSP violations");
    assert!(o.page_requests.is_empty(), "{page}: requests left the page: {:?}", o.page_requests);
    assert_eq!(o.rendered, o.expected, "{page}: {} of {} plots rendered", o.rendered, o.expected);
    for id in plot_ids {
        assert!(o.plots.contains(id), "{page}: plot {id} not rendered (rendered: {:?})", o.plots);
    }
    // Nothing from the crafted names became markup.
    assert!(!o.dom.contains("<script>alert(1)"), "{page}: script injected");
    assert!(!o.dom.contains("<img src=\"x\""), "{page}: markup injected");
    eprintln!("{page}: {} plots in {:?} ms, browser {:.1} s", o.rendered, o.render_ms, o.wall.as_secs_f64());
}

/// The JSON figure of a plot, out of the page.
fn figure(html: &str, id: &str) -> serde_json::Value {
    let call = format!("tcpvizPlot(\"{id}\", ");
    let start = html.find(&call).unwrap_or_else(|| panic!("plot {id} missing")) + call.len();
    let end = start + html[start..].find(");</script>").unwrap();
    serde_json::from_str(&html[start..end]).unwrap()
}

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
    let d = &flow.directions[summary_page::data_direction(flow)];
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

/// A scratch folder, kept (and printed) when `TCPVIZ_KEEP_TEST_SESSIONS` is set, to look at
/// the pages after a run.
struct Scratch {
    path: PathBuf,
    _removed_on_drop: Option<tempfile::TempDir>,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        if std::env::var_os("TCPVIZ_KEEP_TEST_SESSIONS").is_some() {
            let path = dir.keep();
            eprintln!("keeping {}", path.display());
            return Scratch { path, _removed_on_drop: None };
        }
        Scratch { path: dir.path().to_path_buf(), _removed_on_drop: Some(dir) }
    }

    fn path(&self) -> &Path {
        &self.path
    }
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
    let html = std::fs::read_to_string(page).unwrap();
    assert!(html.contains("No summary.json beside the events"));
    let o = tcpviz().arg("report").arg("--in").arg(&session).output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("summary.json is missing") && err.contains("parse-pcap"), "{err}");
    let o = tcpviz().arg("plot").arg("--in").arg(dir.path().join("nothing")).output().unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("no such file or folder"));
}

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
        events: Default::default(),
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
    let written = report::write_all(&session).unwrap();
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
    assert_eq!(report_html.matches("-tseq\"").count(), flow_detail::MAX_DETAIL_FLOWS * 2, "div and call per flow");

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
