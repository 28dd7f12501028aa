//! Pages opened in headless Chromium, for the dashboard tests: what the browser saw
//! (errors, CSP violations, requests, plots drawn), and scratch folders kept on request.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tcpviz::report::page;

pub const CHROMIUM: &str = "/usr/bin/chromium";

/// `target/report-screenshots/`, found from the test binary (`target/<profile>/deps/`).
pub fn screenshots_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).map(Path::to_path_buf).unwrap_or_else(std::env::temp_dir);
    let dir = target.join("report-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn have_chromium() -> bool {
    if Path::new(CHROMIUM).exists() {
        return true;
    }
    eprintln!("SKIPPED: {CHROMIUM} is missing, the pages were not opened in a browser (cargo xtask setup installs it)");
    false
}

/// What the browser saw of a page.
#[derive(Debug)]
pub struct Opened {
    pub dom: String,
    pub errors: String,
    pub expected: usize,
    pub rendered: usize,
    pub render_ms: Option<u64>,
    /// Plot divs plotly drew (class `js-plotly-plot`).
    pub plots: Vec<String>,
    /// Requests the page itself made (the browser's own background requests excluded).
    pub page_requests: Vec<String>,
    pub wall: Duration,
}

/// One browser at a time: the machine has two cores and the pages are heavy.
pub static BROWSER: Mutex<()> = Mutex::new(());

pub fn chromium(args: &[&str], user_dir: &Path) -> (String, Duration) {
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
pub fn open(page: &Path, name: &str) -> Opened {
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
pub fn probe(page: &Path, script: &str) -> String {
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

pub fn element_text(dom: &str, open_tag: &str) -> String {
    let Some(start) = dom.find(open_tag) else { panic!("{open_tag} missing from the page") };
    let body = &dom[start + dom[start..].find('>').unwrap() + 1..];
    body[..body.find("</").unwrap()].replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

/// URL requests in Chromium's network log that a page started (the browser's own, such as
/// update checks, have no initiating origin; a `file://` page's requests have "null").
pub fn page_requests(netlog: &Path) -> Vec<String> {
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

pub fn assert_clean(o: &Opened, page: &str, plot_ids: &[String]) {
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
pub fn figure(html: &str, id: &str) -> serde_json::Value {
    let call = format!("tcpvizPlot(\"{id}\", ");
    let start = html.find(&call).unwrap_or_else(|| panic!("plot {id} missing")) + call.len();
    let end = start + html[start..].find(");</script>").unwrap();
    serde_json::from_str(&html[start..end]).unwrap()
}

/// A scratch folder, kept (and printed) when `TCPVIZ_KEEP_TEST_SESSIONS` is set, to look at
/// the pages after a run.
pub struct Scratch {
    path: PathBuf,
    _removed_on_drop: Option<tempfile::TempDir>,
}

impl Scratch {
    pub fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        if std::env::var_os("TCPVIZ_KEEP_TEST_SESSIONS").is_some() {
            let path = dir.keep();
            eprintln!("keeping {}", path.display());
            return Scratch { path, _removed_on_drop: None };
        }
        Scratch { path: dir.path().to_path_buf(), _removed_on_drop: Some(dir) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}
