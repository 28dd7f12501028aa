//! `--tui` in a real terminal: tmux runs `tcpviz monitor --tui` in a detached session of a
//! fixed size, the test types keys with `send-keys` and reads the screen with
//! `capture-pane`. The capture is the corpus's `ndpi__rtsp.pcap` (TCPVIZ_CORPUS): three
//! RTSP connections still open at its end, with 46, 42 and 39 retransmissions.
//!
//! Each test has its own tmux server (`-L`), removed at the end. Screens are polled with a
//! timeout, never read after a fixed sleep.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::bin;

const WAIT: Duration = Duration::from_secs(60);

struct Pane {
    socket: String,
}

impl Pane {
    /// Runs `command` in a 120x40 tmux pane; after it the pane prints `EXIT=<status>`,
    /// the terminal's line settings, and `DONE`, and stays.
    fn start(name: &str, command: &str) -> Pane {
        let socket = format!("tcpviz-tui-{name}-{}", std::process::id());
        let script = format!(
            "{command}; echo EXIT=$?; stty -a | tr ' ;' '\\n\\n' | grep -xE -- '-?(icanon|echo|isig)' | tr '\\n' ' '; echo DONE; sleep 600"
        );
        let ok = Command::new("tmux")
            .args(["-L", &socket, "-f", "/dev/null", "new-session", "-d", "-x", "120", "-y", "40", &script])
            .status()
            .expect("tmux runs");
        assert!(ok.success(), "tmux new-session failed");
        Pane { socket }
    }

    fn tmux(&self, args: &[&str]) -> String {
        let o = Command::new("tmux").args(["-L", &self.socket]).args(args).output().expect("tmux runs");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// The tcpviz the pane runs: the pane runs `sh -c SCRIPT`, and tcpviz is its child.
    fn tcpviz_pid(&self) -> i32 {
        let shell = self.tmux(&["display-message", "-p", "#{pane_pid}"]).trim().to_string();
        let children = Command::new("ps").args(["-o", "pid=,comm=", "--ppid", &shell]).output().unwrap();
        let children = String::from_utf8_lossy(&children.stdout).into_owned();
        children
            .lines()
            .find(|l| l.contains("tcpviz"))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no tcpviz under the pane's shell {shell}: {children}"))
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p"])
    }

    /// The screen and what scrolled off it.
    #[cfg(feature = "test-hooks")]
    fn history(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-S", "-"])
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys"];
        args.extend_from_slice(keys);
        self.tmux(&args);
    }

    /// The screen once `ready` holds for it; panics with the last screen after [`WAIT`].
    fn wait_for(&self, what: &str, ready: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if ready(&s) {
                return s;
            }
            assert!(start.elapsed() < WAIT, "timed out waiting for {what}; screen:\n{s}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["-L", &self.socket, "kill-server"]).status();
    }
}

fn tmux_available() -> bool {
    Command::new("tmux").arg("-V").output().is_ok_and(|o| o.status.success())
}

fn rtsp_capture() -> Option<PathBuf> {
    let dirs = std::env::var_os("TCPVIZ_CORPUS")?;
    std::env::split_paths(&dirs).map(|d| d.join("ndpi__rtsp.pcap")).find(|p| p.exists())
}

/// A folder the monitor follows, fed with the capture, and the session folder to write.
fn fed_folder(tmp: &Path, capture: &Path) -> (PathBuf, PathBuf) {
    let cap = tmp.join("cap");
    std::fs::create_dir(&cap).unwrap();
    std::fs::copy(capture, cap.join("ring.pcap")).unwrap();
    (cap.join("ring.pcap"), tmp.join("session"))
}

fn monitor_command(pcap: &Path, out: &Path, env: &str) -> String {
    format!(
        "{env} {} monitor --tui --pcap-path {} --out {} --window 3600 --threshold 3 --critical 10",
        bin(),
        pcap.display(),
        out.display()
    )
}

/// The connection rows on the screen, top down: their client ports.
fn row_ports(screen: &str) -> Vec<u16> {
    screen
        .lines()
        .filter(|l| l.starts_with("10.1.1.10:"))
        .filter_map(|l| l["10.1.1.10:".len()..].split_whitespace().next()?.parse().ok())
        .collect()
}

macro_rules! need_tmux_and_corpus {
    () => {{
        if !tmux_available() {
            eprintln!("skipped: tmux is not installed (cargo xtask setup installs it)");
            return;
        }
        match rtsp_capture() {
            Some(c) => c,
            None => {
                eprintln!("skipped: TCPVIZ_CORPUS does not hold ndpi__rtsp.pcap");
                return;
            }
        }
    }};
}

#[test]
fn worst_first_sort_filter_detail_then_q_writes_the_session() {
    let capture = need_tmux_and_corpus!();
    let tmp = tempfile::tempdir().unwrap();
    let (pcap, out) = fed_folder(tmp.path(), &capture);
    let pane = Pane::start("main", &monitor_command(&pcap, &out, ""));

    let s = pane.wait_for("three connections", |s| row_ports(s).len() == 3);
    assert!(s.contains("tcpviz monitor") && s.contains("records lost 0"), "{s}");
    // Worst first: the most retransmissions in the window, all CRITICAL.
    assert_eq!(row_ports(&s), vec![52478, 52480, 52482], "{s}");
    let top = s.lines().find(|l| l.starts_with("10.1.1.10:52478")).unwrap();
    assert!(top.contains("46/46") && top.contains("CRITICAL"), "{top}");
    assert!(s.contains("CRITICAL flow"), "the alerts pane lists the changes: {s}");

    // `r` reverses the order; `0` sorts by state (ESTAB, REFUSED, RESET).
    pane.keys(&["r"]);
    pane.wait_for("reversed order", |s| row_ports(s) == [52482, 52480, 52478]);
    pane.keys(&["0"]);
    pane.wait_for("order by state", |s| row_ports(s) == [52482, 52478, 52480] && s.contains("sort state"));
    pane.keys(&["1"]);
    pane.wait_for("order by score again", |s| row_ports(s) == [52478, 52480, 52482]);

    // `/` filters: by port, then by address with no match; Esc clears.
    pane.keys(&["/", "52480", "Enter"]);
    let s = pane.wait_for("the filtered row", |s| row_ports(s) == [52480]);
    assert!(s.contains("1 shown of 3"), "{s}");
    pane.keys(&["/", "BSpace", "BSpace", "BSpace", "BSpace", "BSpace", "192.168.", "Enter"]);
    pane.wait_for("no match", |s| s.contains("no connection matches the filter"));
    pane.keys(&["Escape"]);
    pane.wait_for("all rows back", |s| row_ports(s).len() == 3);

    // Down then Enter opens the second connection's detail; Esc goes back.
    pane.keys(&["Down", "Enter"]);
    let s = pane.wait_for("the detail view", |s| s.contains("(Esc back)"));
    assert!(s.contains("10.1.1.10:52480 > 10.2.2.2:8554"), "{s}");
    assert!(s.contains("bytes in flight") && s.contains("recent events") && s.contains("retransmission"), "{s}");
    assert!(s.contains("limited by ") && s.contains("so far rwnd"), "why it is slow: {s}");
    pane.keys(&["Escape"]);
    pane.wait_for("the table again", |s| row_ports(s).len() == 3);

    // `q` ends the session as Ctrl-C does: files and dashboards written, exit 0, and the
    // terminal back to normal.
    pane.keys(&["q"]);
    let s = pane.wait_for("the end", |s| s.contains("DONE"));
    assert!(s.contains("EXIT=0"), "{s}");
    assert!(s.contains("icanon") && !s.contains("-icanon") && !s.contains("-echo"), "{s}");
    assert_eq!(pane.tmux(&["display-message", "-p", "#{alternate_on}"]).trim(), "0");
    for f in ["summary.json", "events.jsonl", "alerts.jsonl", "report.html"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["totals"]["packets"], 568);
}

#[test]
fn a_narrow_terminal_gets_the_compact_layout_and_resizing_works() {
    let capture = need_tmux_and_corpus!();
    let tmp = tempfile::tempdir().unwrap();
    let (pcap, out) = fed_folder(tmp.path(), &capture);
    let pane = Pane::start("narrow", &monitor_command(&pcap, &out, ""));
    let s = pane.wait_for("the wide table", |s| row_ports(s).len() == 3);
    assert!(s.contains("throughput"), "{s}");
    pane.tmux(&["resize-window", "-x", "70", "-y", "30"]);
    let s = pane.wait_for("the compact table", |s| row_ports(s).len() == 3 && !s.contains("throughput"));
    assert!(s.lines().all(|l| l.chars().count() <= 70), "{s}");
    pane.keys(&["C-c"]);
    let s = pane.wait_for("the end", |s| s.contains("DONE"));
    assert!(s.contains("EXIT=0"), "Ctrl-C ends as q does: {s}");
    assert!(out.join("summary.json").exists());
}

#[test]
fn sigterm_finishes_the_session_and_restores_the_terminal() {
    let capture = need_tmux_and_corpus!();
    let tmp = tempfile::tempdir().unwrap();
    let (pcap, out) = fed_folder(tmp.path(), &capture);
    let pane = Pane::start("term", &monitor_command(&pcap, &out, ""));
    pane.wait_for("the table", |s| row_ports(s).len() == 3);
    let pid = pane.tcpviz_pid();
    assert!(Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap().success());
    let s = pane.wait_for("the end", |s| s.contains("DONE"));
    assert!(s.contains("EXIT=0"), "{s}");
    assert!(s.contains("icanon") && !s.contains("-icanon") && !s.contains("-echo"), "{s}");
    assert_eq!(pane.tmux(&["display-message", "-p", "#{alternate_on}"]).trim(), "0");
    assert!(out.join("summary.json").exists());
}

#[test]
fn a_terminal_that_hangs_up_finishes_the_session_and_the_process_ends() {
    let capture = need_tmux_and_corpus!();
    let tmp = tempfile::tempdir().unwrap();
    let (pcap, out) = fed_folder(tmp.path(), &capture);
    let pane = Pane::start("hangup", &monitor_command(&pcap, &out, ""));
    pane.wait_for("the table", |s| row_ports(s).len() == 3);
    let pid = pane.tcpviz_pid();
    // The window closes: the terminal hangs up and SIGHUP comes.
    pane.tmux(&["kill-server"]);
    let gone = |pid: i32| !Path::new(&format!("/proc/{pid}")).exists();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !gone(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if !gone(pid) {
        let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // SAFETY: kill(2) on the tcpviz this test started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        panic!("tcpviz still runs 20 s after its terminal hung up: {cpu}");
    }
    assert!(out.join("summary.json").exists(), "the session was finished");
}

#[cfg(feature = "test-hooks")]
#[test]
fn a_panic_in_the_drawing_code_restores_the_terminal_and_finishes_the_session() {
    let capture = need_tmux_and_corpus!();
    let tmp = tempfile::tempdir().unwrap();
    let (pcap, out) = fed_folder(tmp.path(), &capture);
    let env = "RUST_BACKTRACE=0 TCPVIZ_TEST_PANIC_IN_DRAW=20";
    let pane = Pane::start("panic", &monitor_command(&pcap, &out, env));
    pane.wait_for("the end", |s| s.contains("DONE"));
    let s = pane.history();
    assert!(s.contains("a panic in the drawing code"), "the message is on the normal screen: {s}");
    assert!(s.contains("error: the terminal view failed"), "{s}");
    assert!(s.contains("EXIT=1"), "{s}");
    assert!(s.contains("icanon") && s.contains("echo") && !s.contains("-icanon") && !s.contains("-echo"), "{s}");
    assert_eq!(pane.tmux(&["display-message", "-p", "#{alternate_on}"]).trim(), "0", "alternate screen left");
    assert!(out.join("summary.json").exists(), "the session was still finished");
}

#[test]
fn without_a_terminal_tui_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("session");
    let o = Command::new(bin())
        .args(["monitor", "--tui", "--pcap-path"])
        .arg(tmp.path().join("none.pcap"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("--tui needs a terminal, and standard output is not one"), "{err}");
    assert!(!out.exists(), "no session folder is left behind");
}
