//! The `tcpviz` binary on good and bad input.

use std::path::{Path, PathBuf};
use std::process::Command;

fn tcpviz() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tcpviz"))
}

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples").join(name)
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).unwrap().lines().count()
}

#[test]
fn parse_pcap_writes_the_session_and_prints_the_paths() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s");
    let o = tcpviz()
        .arg("parse-pcap")
        .arg("--in")
        .arg(sample("ipv4_loss_sender.pcap"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let printed = String::from_utf8(o.stdout).unwrap();
    for f in ["events.jsonl", "summary.json", "benchmark.log"] {
        assert!(out.join(f).is_file(), "{f}");
        assert!(printed.contains(&out.join(f).display().to_string()), "{printed}");
    }
    let bench = std::fs::read_to_string(out.join("benchmark.log")).unwrap();
    for key in [
        "source:",
        "packets: 1793",
        "bytes:",
        "wall_seconds:",
        "packets_per_second:",
        "mb_per_second:",
        "events.duplicate_ack:",
    ] {
        assert!(bench.contains(key), "{key} missing in\n{bench}");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["totals"]["packets"], 1793);
    let flow = &summary["flows"][0];
    // Karn-safe samples come from ACKs that name a segment's end exactly; SACK recovery
    // leaves long runs without any (tshark's ack_rtt has a similar count, 57).
    assert!(flow["directions"][0]["rtt"]["samples"].as_u64().unwrap() > 30);
    assert!(flow["handshake_rtt_ms"].as_f64().unwrap() > 0.0);
    // The readable table, worst flow first.
    let o = tcpviz().arg("summary").arg("--in").arg(&out).output().unwrap();
    let table = String::from_utf8(o.stdout).unwrap();
    assert!(table.contains("10.88.1.1:") && table.contains("retx%"), "{table}");
    // The events file alone works too.
    let o = tcpviz().arg("summary").arg("--in").arg(out.join("events.jsonl")).output().unwrap();
    assert!(o.status.success());
}

#[test]
fn several_files_positional_and_default_session_folder() {
    let dir = tempfile::tempdir().unwrap();
    let o = tcpviz()
        .current_dir(dir.path())
        .arg("parse-pcap")
        .arg(sample("zero_window.pcap"))
        .arg(sample("handshake_failures.pcap"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let sessions: Vec<_> =
        std::fs::read_dir(dir.path().join("artifacts")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(sessions.len(), 1);
    let name = sessions[0].file_name().unwrap().to_str().unwrap().to_string();
    assert!(name.starts_with("session_") && name.len() == "session_20261126_071500".len(), "{name}");
    let events = std::fs::read_to_string(sessions[0].join("events.jsonl")).unwrap();
    let files: std::collections::BTreeSet<String> = events
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["file"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(files.len(), 2, "each event names its file when there are several");
}

#[test]
fn a_file_cut_short_keeps_every_event_before_the_cut_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let full = std::fs::read(sample("ipv4_loss_sender.pcap")).unwrap();
    let cut = dir.path().join("cut.cap");
    std::fs::write(&cut, &full[..full.len() * 2 / 3 + 7]).unwrap();
    let out = dir.path().join("s");
    let o = tcpviz().arg("parse-pcap").arg(&cut).arg("--out").arg(&out).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(err.contains("cut.cap") && err.contains("cut short in the middle of packet"), "{err}");
    assert!(!err.contains("panicked"));
    // Every event of the packets before the cut is there.
    let reference = dir.path().join("r");
    tcpviz().arg("parse-pcap").arg(sample("ipv4_loss_sender.pcap")).arg("--out").arg(&reference).output().unwrap();
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let read = summary["totals"]["packets"].as_u64().unwrap();
    assert!(read > 1000);
    let before: Vec<String> = std::fs::read_to_string(reference.join("events.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["frame"].as_u64().is_some_and(|f| f <= read))
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            // Findings made at the end of a flow differ (the flow ends earlier): compare flags.
            v["extra"] = serde_json::Value::Null;
            v.to_string()
        })
        .collect();
    let got: Vec<String> = std::fs::read_to_string(out.join("events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["extra"] = serde_json::Value::Null;
            v.to_string()
        })
        .collect();
    let missing: Vec<&String> = before.iter().filter(|e| !got.contains(e)).collect();
    assert!(missing.is_empty(), "{} events lost: {:?}", missing.len(), missing.first());
    assert!(std::fs::read_to_string(out.join("benchmark.log")).unwrap().contains("error.0:"));
    assert!(lines(&out.join("events.jsonl")) > 0);
}

#[test]
fn non_captures_get_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in
        [("notes.txt", &b"this is not a capture\n"[..]), ("empty.pcap", b""), ("x.pcap.gz", b"\x1f\x8b\x08\0junk")]
    {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        let o = tcpviz().arg("parse-pcap").arg(&p).arg("--out").arg(dir.path().join("s")).output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{name}");
        let err = String::from_utf8(o.stderr).unwrap();
        let first = err.lines().next().unwrap();
        assert!(first.starts_with("error: ") && first.contains(name), "{err}");
        assert!(!err.contains("panicked") && !err.contains("NomError"), "{err}");
    }
    let o = tcpviz()
        .arg("parse-pcap")
        .arg(dir.path().join("missing.pcap"))
        .arg("--out")
        .arg(dir.path().join("s"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8(o.stderr).unwrap().contains("No such file"));
}

/// The damaged files of the shared corpus, when it is available.
#[test]
fn damaged_corpus_files_fail_cleanly() {
    let Some(corpus) = std::env::var_os("TCPVIZ_CORPUS").map(PathBuf::from) else { return };
    let corpus =
        if corpus.is_relative() { Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(corpus) } else { corpus };
    let dir = tempfile::tempdir().unwrap();
    for (file, needle, packets) in [
        ("suricata__http-mime-truncated.pcap", "cut short in the middle of packet", 2696),
        ("suricata__tls_DER-incomplete-header.pcap", "damaged at packet 7", 6),
        ("libpcap__pcapng-invalid-vers-1.pcapng", "unsupported capture file: pcapng section version", 0),
    ] {
        let out = dir.path().join(file);
        let o = tcpviz().arg("parse-pcap").arg(corpus.join(file)).arg("--out").arg(&out).output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{file}");
        let err = String::from_utf8(o.stderr).unwrap();
        assert!(err.contains(file) && err.contains(needle), "{file}: {err}");
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
        assert_eq!(summary["totals"]["tcp_segments"], packets, "{file}: packets before the damage, as tshark counts");
    }
}
