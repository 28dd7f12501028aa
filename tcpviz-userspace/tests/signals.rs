//! `tcpviz monitor` stopped by two signals in a row (Ctrl-C, then SIGTERM while it finishes
//! the session and draws the dashboards) still ends cleanly with every file complete.
//! (The live agent's signal tests need root: tests/tests/live_signals.rs.)

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{bin, sample};

fn kill(pid: u32, sig: &str) {
    assert!(Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success());
}

#[test]
fn monitor_ends_cleanly_on_a_second_signal() {
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("capture.pcap");
    std::fs::copy(sample("ipv4_loss_sender.pcap"), &capture).unwrap();
    let want = {
        let out = dir.path().join("offline");
        let o = Command::new(bin()).args(["parse-pcap", "--quiet"]).arg(&capture).arg("--out").arg(&out).output();
        assert!(o.unwrap().status.success());
        std::fs::read_to_string(out.join("events.jsonl")).unwrap()
    };
    for (gap_ms, second) in [(0, "-TERM"), (20, "-TERM"), (0, "-INT")] {
        let session = dir.path().join(format!("monitor-{gap_ms}{second}"));
        let mut child = Command::new(bin())
            .args(["monitor", "--poll-interval", "0.2", "--pcap-path"])
            .arg(&capture)
            .arg("--out")
            .arg(&session)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until it follows the file and has read it: its events file stops growing.
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        stderr.read_line(&mut line).unwrap();
        assert!(line.starts_with("following"), "{line}");
        let events = session.join("events.jsonl");
        let (mut last, mut stable) = (0, 0);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while stable < 3 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(150));
            let len = std::fs::metadata(&events).map(|m| m.len()).unwrap_or(0);
            stable = if len > 0 && len == last { stable + 1 } else { 0 };
            last = len;
        }
        kill(child.id(), "-INT");
        std::thread::sleep(Duration::from_millis(gap_ms));
        kill(child.id(), second);
        let o = child.wait_with_output().unwrap();
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
        assert!(o.status.success(), "monitor ({gap_ms} ms, {second}): {}: {rest}", o.status);
        assert_eq!(std::fs::read_to_string(&events).unwrap(), want, "every event, once");
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(session.join("summary.json")).unwrap()).unwrap();
        assert!(summary["totals"]["packets"].as_u64().unwrap() > 0);
        for page in ["timeline.html", "summary.html", "report.html"] {
            assert!(session.join(page).is_file(), "{page}");
        }
    }
}
