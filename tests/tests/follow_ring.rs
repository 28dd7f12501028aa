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

/// The packet count a capture tool reports when it stops: tcpdump's "N packets captured",
/// dumpcap's "Packets captured: N".
fn writer_count(stderr: &str) -> u64 {
    let after = |marker: &str| stderr.split(marker).nth(1).map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next());
    let tcpdump = stderr.lines().find_map(|l| l.strip_suffix(" packets captured").and_then(|n| n.trim().parse().ok()));
    // dumpcap redraws its running count with carriage returns before the final line.
    let dumpcap = after("Packets captured: ").flatten().and_then(|n| n.parse().ok());
    tcpdump.or(dumpcap).unwrap_or_else(|| panic!("no packet count in the capture tool's output:\n{stderr}"))
}

/// Follows `pattern` while `writer` (a capture tool's command line, started after the
/// follower) records a transfer of `bytes` through a 20 Mbit/s router; returns the
/// follower's summary and the writer's own packet count.
fn follow_real_writer(
    pattern: impl Fn(&std::path::Path) -> String,
    writer: &[&str],
    bytes: usize,
) -> (serde_json::Value, u64) {
    let work = tempfile::tempdir().unwrap();
    let lab = Lab::new();
    lab.offloads_off();
    lab.rate_limit(20);
    let server = lab.server(SERVER_V4, 5201);
    let session = work.path().join("session");
    let monitor = Command::new(tcpviz_bin())
        .args(["monitor", "--poll-interval", "0.5", "--pcap-path", &pattern(work.path())])
        .arg("--out")
        .arg(&session)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let target = pattern(work.path()).replace('*', "");
    let args: Vec<&str> = writer.iter().map(|a| if *a == "OUT" { target.as_str() } else { a }).collect();
    let args: Vec<&str> = args.iter().map(|a| if *a == "IF" { lab.veth_a.as_str() } else { a }).collect();
    let tool = lab.capture_tool(&args);
    lab.send(SERVER_V4, 5201, bytes);
    std::thread::sleep(Duration::from_millis(500));
    let tool = interrupt(tool);
    let _ = server.wait_with_output();
    std::thread::sleep(Duration::from_millis(1500));
    let out = interrupt(monitor);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "monitor: {stderr}");
    let summary = tcpviz_privileged_tests::summary(&session);
    let count = writer_count(&String::from_utf8_lossy(&tool.stderr));
    eprintln!("writer: {count} packets; follower: {} ({stderr})", summary["totals"]["packets"]);
    (summary, count)
}

/// tcpdump without -U writes its file header only when its first 4 KiB buffer is full: the
/// follower sees an empty file first.
#[test]
fn tcpdump_without_packet_buffering_started_after_the_follower() {
    if !privileged() {
        return;
    }
    let (summary, count) = follow_real_writer(
        |dir| dir.join("grow.pcap").display().to_string(),
        &["tcpdump", "-Z", "root", "-i", "IF", "-w", "OUT", "tcp port 5201"],
        1_000_000,
    );
    assert_eq!(summary["totals"]["packets"], count);
}

/// A tcpdump ring of 5 files of 1 MB that wraps (slots are rewritten in place), with and
/// without -U.
#[test]
fn tcpdump_ring_that_wraps() {
    if !privileged() {
        return;
    }
    for buffering in [&["-U"][..], &[][..]] {
        let mut writer = vec!["tcpdump", "-Z", "root", "-i", "IF", "-C", "1", "-W", "5"];
        writer.extend_from_slice(buffering);
        writer.extend_from_slice(&["-w", "OUT", "tcp port 5201"]);
        let (summary, count) = follow_real_writer(|dir| format!("{}/ring.pcap*", dir.display()), &writer, 8_000_000);
        assert_eq!(summary["totals"]["packets"], count, "tcpdump {buffering:?}");
        let files = summary["sections"]["follow"]["files_read"].as_u64().unwrap();
        assert!(files > 5, "the ring wrapped: {files} files read");
    }
}

/// dumpcap -b files:5 -b filesize:1000: pcapng files whose first bytes are all the same, the
/// oldest removed as each new one is made.
#[test]
fn dumpcap_ring() {
    if !privileged() {
        return;
    }
    let (summary, count) = follow_real_writer(
        |dir| format!("{}/ring*.pcapng", dir.display()),
        &["dumpcap", "-i", "IF", "-b", "files:5", "-b", "filesize:1000", "-w", "OUT", "-f", "tcp port 5201"],
        8_000_000,
    );
    assert_eq!(summary["totals"]["packets"], count);
    let follow = &summary["sections"]["follow"];
    assert!(follow["files_read"].as_u64().unwrap() > 5, "{follow}");
    assert_eq!(follow["files_missed"], 0, "{follow}");
}

/// `tcpdump -C 1 -z gzip`: each ring file is compressed once it rotates (ring.pcap1 becomes
/// ring.pcap1.gz). The follower reads the files as they are written and passes over their
/// compressed copies: every packet once.
#[test]
fn tcpdump_ring_compressed_after_rotation() {
    if !privileged() {
        return;
    }
    let (summary, count) = follow_real_writer(
        |dir| format!("{}/ring.pcap*", dir.display()),
        &["tcpdump", "-Z", "root", "-i", "IF", "-C", "1", "-z", "gzip", "-U", "-w", "OUT", "tcp port 5201"],
        6_000_000,
    );
    assert_eq!(summary["totals"]["packets"], count);
    let follow = &summary["sections"]["follow"];
    assert!(follow["files_read"].as_u64().unwrap() >= 3, "{follow}");
    assert_eq!(follow["compressed_files_cut_short"], 0, "{follow}");
}

/// A ring that was compressed file by file before the follower started (only `.gz` files
/// and the newest plain one are left): the compressed files are read through gzip.
#[test]
fn compressed_ring_files_written_before_the_follower() {
    if !privileged() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let lab = Lab::new();
    lab.offloads_off();
    lab.rate_limit(20);
    let server = lab.server(SERVER_V4, 5201);
    let target = work.path().join("ring.pcap").display().to_string();
    let tool = lab.capture_tool(&[
        "tcpdump",
        "-Z",
        "root",
        "-i",
        &lab.veth_a,
        "-C",
        "1",
        "-z",
        "gzip",
        "-U",
        "-w",
        &target,
        "tcp port 5201",
    ]);
    lab.send(SERVER_V4, 5201, 4_000_000);
    std::thread::sleep(Duration::from_millis(500));
    let tool = interrupt(tool);
    let _ = server.wait_with_output();
    std::thread::sleep(Duration::from_millis(1000));
    let names: Vec<String> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().filter(|n| n.ends_with(".gz")).count() >= 2, "{names:?}");
    let session = work.path().join("session");
    let monitor = Command::new(tcpviz_bin())
        .args(["monitor", "--poll-interval", "0.5", "--pcap-path"])
        .arg(format!("{}/ring.pcap*", work.path().display()))
        .arg("--out")
        .arg(&session)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(3000));
    let out = interrupt(monitor);
    assert!(out.status.success(), "monitor: {}", String::from_utf8_lossy(&out.stderr));
    let summary = tcpviz_privileged_tests::summary(&session);
    let count = writer_count(&String::from_utf8_lossy(&tool.stderr));
    assert_eq!(summary["totals"]["packets"], count, "{names:?}");
}
