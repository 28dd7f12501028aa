//! `tcpviz monitor` on a real `tcpdump -C … -W …` ring capture of namespace traffic with
//! induced loss: the events equal those of `parse-pcap` over the same files in order.

use std::process::{Command, Stdio};
use std::time::Duration;

use tcpviz_privileged_tests::{Lab, SERVER_V4, interrupt, privileged, tcpviz_bin};

#[test]
fn ring_capture_followed_live_equals_offline() {
    if !privileged() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let ring = work.path().join("ring.pcap");
    let lab = Lab::new();
    lab.offloads_off();
    lab.loss(0.02, 5201);
    let server = lab.server(SERVER_V4, 5201);

    let session = work.path().join("session");
    let monitor = Command::new(tcpviz_bin())
        .args(["monitor", "--poll-interval", "0.5", "--pcap-path"])
        .arg(format!("{}*", ring.display()))
        .arg("--out")
        .arg(&session)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // 1 MB files, up to 30 of them (no wrap during the test), flushed per packet.
    let tcpdump = lab.tcpdump(&ring, 0, &["-C", "1", "-W", "30"], "tcp port 5201");
    lab.send(SERVER_V4, 5201, 6_000_000);
    std::thread::sleep(Duration::from_secs(1));
    let dump = interrupt(tcpdump);
    let _ = server.wait_with_output();
    std::thread::sleep(Duration::from_secs(2));
    let out = interrupt(monitor);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "monitor: {stderr}");

    let mut files: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("ring.pcap"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "tcpdump wrote {} files: {}", files.len(), String::from_utf8_lossy(&dump.stderr));
    let offline = work.path().join("offline");
    let o = Command::new(tcpviz_bin())
        .arg("parse-pcap")
        .arg("--quiet")
        .args(&files)
        .arg("--out")
        .arg(&offline)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let live = std::fs::read_to_string(session.join("events.jsonl")).unwrap();
    let want = std::fs::read_to_string(offline.join("events.jsonl")).unwrap();
    let (l, w): (Vec<&str>, Vec<&str>) = (live.lines().collect(), want.lines().collect());
    if let Some(i) = l.iter().zip(&w).position(|(a, b)| a != b) {
        panic!("event {} differs:\nfollow  {}\noffline {}", i + 1, l[i], w[i]);
    }
    assert_eq!(l.len(), w.len(), "event count");
    assert!(w.iter().any(|e| e.contains("\"retransmission\"") || e.contains("fast_retransmission")), "the loss shows");
    // Every packet tcpdump wrote was read once.
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(session.join("summary.json")).unwrap()).unwrap();
    let offline_summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(offline.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["totals"]["packets"], offline_summary["totals"]["packets"]);
    assert_eq!(summary["sections"]["follow"]["files_read"], files.len() as u64);
}
