//! `tcpviz live --tui` in a real terminal (tmux) on a real lossy transfer between network
//! namespaces: the connection appears with the process that owns it (learned from the
//! connect hook), its retransmissions counted, and `q` finishes the session as Ctrl-C does:
//! every file written, nothing left attached, the terminal given back.

use std::process::Command;
use std::time::{Duration, Instant};

use tcpviz_privileged_tests::*;

const PORT: u16 = 5701;

/// A tmux server of its own, with one 160x40 pane running a command; after it the pane
/// prints `EXIT=<status>` and `DONE`, and stays.
struct Pane {
    socket: String,
}

impl Pane {
    fn start(tag: &str, command: &str) -> Pane {
        let socket = format!("tcpviz-live-tui-{tag}-{}", std::process::id());
        let script = format!("{command}; echo EXIT=$?; echo DONE; sleep 600");
        let ok = Command::new("tmux")
            .args(["-L", &socket, "-f", "/dev/null", "new-session", "-d", "-x", "160", "-y", "40", &script])
            .status()
            .expect("tmux runs");
        assert!(ok.success(), "tmux new-session failed");
        Pane { socket }
    }

    /// `tcpviz live --tui` on `ifaces` in the lab's namespace `a`, once its view is up.
    fn live_view(tag: &str, lab: &Lab, ifaces: &[&str], session: &std::path::Path) -> Pane {
        let ifaces: String = ifaces.iter().map(|i| format!(" --iface {i}")).collect();
        let command = format!(
            "{} live --tui --capture all{ifaces} --netns {} --out {}",
            tcpviz_bin().display(),
            lab.a,
            session.display()
        );
        let pane = Pane::start(tag, &command);
        pane.wait_for("the live view", |s| s.contains("tcpviz live") && s.contains("connections:"));
        pane
    }

    fn tmux(&self, args: &[&str]) -> String {
        let o = Command::new("tmux").args(["-L", &self.socket]).args(args).output().expect("tmux runs");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn wait_for(&self, what: &str, ready: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let s = self.tmux(&["capture-pane", "-p"]);
            if ready(&s) {
                return s;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "timed out waiting for {what}; screen:\n{s}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["-L", &self.socket, "kill-server"]).status();
    }
}

#[test]
fn live_view_names_the_owner_and_q_finishes_the_session() {
    if !privileged() || Command::new("tmux").arg("-V").output().is_err() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let session = work.path().join("tui");
    let lab = Lab::new();
    lab.offloads_off();
    lab.loss(0.03, PORT);
    let pane = Pane::live_view("owner", &lab, &[&lab.veth_a], &session);
    let server = lab.server(SERVER_V4, PORT);
    lab.send(SERVER_V4, PORT, 4_000_000);
    let _ = server.wait_with_output();
    let row = format!("> {SERVER_V4}:{PORT}");
    let retransmissions = |s: &str| -> u64 {
        let after = s.split("retransmissions ").nth(1).unwrap_or("");
        after.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0)
    };
    let screen = pane.wait_for("the connection with its owner and retransmissions", |s| {
        s.lines().any(|l| l.contains(&row) && l.contains("python3[")) && retransmissions(s) > 0
    });
    assert!(screen.contains("process"), "{screen}");
    // One interface watched: the header names it and the hooks attached, and no column
    // repeats it on every row.
    let header = screen.lines().next().unwrap_or("");
    assert!(header.contains(&lab.veth_a) && header.contains("TC ") && header.contains(" tracepoints"), "{screen}");
    assert!(!header.contains(" 0 of "), "tracepoints attached: {screen}");
    assert!(!screen.contains("iface"), "{screen}");
    pane.tmux(&["send-keys", "q"]);
    let end = pane.wait_for("the end", |s| s.contains("DONE"));
    assert!(end.contains("EXIT=0"), "q ends the session: {end}");
    for f in ["summary.json", "events.jsonl", "capture.pcapng", "report.html"] {
        assert!(session.join(f).exists(), "{f} missing after q");
    }
    let summary = summary(&session);
    assert!(summary["totals"]["packets"].as_u64().unwrap() > 100, "{}", summary["totals"]);
    let state = tc_state(&lab, &lab.a, &lab.veth_a);
    assert!(!state.contains("tcpviz"), "left attached after q: {state}");
}

/// With several interfaces watched, a column says which one each connection is seen on.
#[test]
fn live_view_with_two_interfaces_names_the_connections_interface() {
    if !privileged() || Command::new("tmux").arg("-V").output().is_err() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let session = work.path().join("tui");
    let lab = Lab::new();
    let pane = Pane::live_view("iface", &lab, &[&lab.veth_a, "lo"], &session);
    let server = lab.server(SERVER_V4, PORT + 1);
    lab.send(SERVER_V4, PORT + 1, 1_000_000);
    let _ = server.wait_with_output();
    let screen = pane.wait_for("the connection on its interface", |s| {
        s.lines().any(|l| l.contains("10.201.1.1:") && l.contains(&format!(" {} ", lab.veth_a)))
    });
    assert!(screen.contains("iface"), "{screen}");
    pane.tmux(&["send-keys", "q"]);
    let end = pane.wait_for("the end", |s| s.contains("DONE"));
    assert!(end.contains("EXIT=0"), "q ends the session: {end}");
}
