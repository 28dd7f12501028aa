//! The `tcpviz` binary on good and bad input.

mod common;

use std::path::Path;
use std::process::Command;

use common::{lines, sample, tcpviz};

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

/// gzip and zstd captures are read as tshark reads them: the same events as the plain file.
#[test]
fn compressed_captures_give_the_events_of_the_plain_file() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let plain = std::fs::read(sample("ipv4_loss_sender.pcap")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&plain).unwrap();
    let zst = ruzstd::encoding::compress_to_vec(&plain[..], ruzstd::encoding::CompressionLevel::Fastest);
    // Named without a telling suffix: the first bytes decide.
    let inputs = [("plain.pcap", plain.clone()), ("capture.gz", gz.finish().unwrap()), ("capture.bin", zst)];
    let mut events = Vec::new();
    for (name, bytes) in &inputs {
        let input = dir.path().join(name);
        std::fs::write(&input, bytes).unwrap();
        let out = dir.path().join(format!("s-{name}"));
        let o = tcpviz().args(["parse-pcap", "--quiet"]).arg(&input).arg("--out").arg(&out).output().unwrap();
        assert!(o.status.success(), "{name}: {}", String::from_utf8_lossy(&o.stderr));
        events.push(std::fs::read_to_string(out.join("events.jsonl")).unwrap());
    }
    assert!(events[0].lines().count() > 100);
    assert_eq!(events[0], events[1], "gzip");
    assert_eq!(events[0], events[2], "zstd");
}

/// The damaged files of the shared corpus, when it is available.
#[test]
fn damaged_corpus_files_fail_cleanly() {
    // TCPVIZ_CORPUS may name several folders; the damaged files are in the first.
    let Some(corpus) = std::env::var_os("TCPVIZ_CORPUS").and_then(|v| std::env::split_paths(&v).next()) else {
        return;
    };
    let corpus =
        if corpus.is_relative() { Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(corpus) } else { corpus };
    let dir = tempfile::tempdir().unwrap();
    for (file, needle, packets) in [
        (
            "suricata__http-mime-truncated.pcap",
            "cut short in the record header of packet 2697 (byte offset 2715459: 1 of its 16 bytes)",
            2696,
        ),
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

/// Runs a command whose standard output (and, with `stderr_too`, standard error) is a pipe
/// nobody reads any more, as in `tcpviz ... | head -0`. Returns the exit status and what
/// went to standard error (empty when it was closed too).
fn with_closed_pipe(cmd: &mut Command, stderr_too: bool) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    if stderr_too {
        cmd.stderr(writer.try_clone().unwrap());
    } else {
        cmd.stderr(std::process::Stdio::piped());
    }
    cmd.stdout(writer);
    let o = cmd.output().unwrap();
    (o.status.code(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// Every command that prints ends quietly with status 0 when its reader is gone (the live
/// agent's test is in the privileged tests).
#[test]
fn a_closed_pipe_ends_every_printing_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s");
    let o = tcpviz()
        .args(["parse-pcap", "--quiet", "--out"])
        .arg(&session)
        .arg(sample("ipv4_loss_sender.pcap"))
        .output()
        .unwrap();
    assert!(o.status.success());
    let commands: Vec<(&str, Vec<std::ffi::OsString>)> = vec![
        ("help", vec!["--help".into()]),
        ("version", vec!["--version".into()]),
        (
            "parse-pcap",
            vec![
                "parse-pcap".into(),
                "--report".into(),
                "--out".into(),
                dir.path().join("p").into(),
                sample("ipv4_loss_sender.pcap").into(),
            ],
        ),
        ("summary", vec!["summary".into(), "--in".into(), session.clone().into()]),
        ("plot", vec!["plot".into(), "--in".into(), session.clone().into()]),
        ("report", vec!["report".into(), "--in".into(), session.clone().into()]),
        (
            // Alerts are printed as they are raised: the first one finds the pipe closed
            // and the run ends as on Ctrl-C, long before --duration.
            "monitor",
            vec![
                "monitor".into(),
                "--threshold".into(),
                "2".into(),
                "--duration".into(),
                "60".into(),
                "--pcap-path".into(),
                sample("ipv4_loss_sender.pcap").into(),
                "--out".into(),
                dir.path().join("m").into(),
            ],
        ),
    ];
    for (name, args) in &commands {
        for stderr_too in [false, true] {
            let started = std::time::Instant::now();
            let (code, err) = with_closed_pipe(tcpviz().args(args), stderr_too);
            assert_eq!(code, Some(0), "{name} (stderr closed too: {stderr_too}): {err}");
            assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{name}: {err}");
            assert!(started.elapsed() < std::time::Duration::from_secs(30), "{name} did not stop");
        }
    }
    // The monitor that stopped early still finished its session.
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("m/summary.json")).unwrap()).unwrap();
    assert!(summary["sections"]["alerts"]["raised"].as_u64().unwrap() > 0);
    assert!(dir.path().join("p/report.html").is_file(), "parse-pcap --report did its work");
}

/// Standard output on a full disk is an error, said once, not a panic.
#[test]
fn standard_output_on_a_full_disk_is_an_error() {
    if !Path::new("/dev/full").exists() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let o = tcpviz()
        .args(["parse-pcap", "--quiet", "--out"])
        .arg(dir.path().join("s"))
        .arg(sample("zero_window.pcap"))
        .stdout(std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.matches("cannot write to standard output").count(), 1, "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// A command that fails on its inputs says which file and why, once, and leaves no empty
/// session folder behind.
#[test]
fn input_errors_name_the_file_once_and_leave_no_session_folder() {
    let dir = tempfile::tempdir().unwrap();
    let o = tcpviz().current_dir(dir.path()).arg("parse-pcap").arg("missing.pcap").output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8(o.stderr).unwrap();
    assert_eq!(err.trim_end(), "error: cannot read missing.pcap: No such file or directory (os error 2)");
    assert!(!dir.path().join("artifacts").exists(), "no empty artifacts/session_* is left");

    // One good input and one missing: nothing is read, nothing is written.
    let out = dir.path().join("new/s");
    let o = tcpviz()
        .arg("parse-pcap")
        .arg(sample("zero_window.pcap"))
        .arg(dir.path().join("gone.pcap"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("gone.pcap"));
    assert!(!dir.path().join("new").exists());

    // A file where the session folder should be.
    let file = dir.path().join("afile");
    std::fs::write(&file, "x").unwrap();
    let o = tcpviz().arg("parse-pcap").arg(sample("zero_window.pcap")).arg("--out").arg(&file).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(err.contains(&format!("cannot create the session folder {}", file.display())), "{err}");
}

/// Files of 1, 3, 10, 23 and 30 bytes, pcap and pcapng: each error says where the file
/// was cut, with the right counts.
#[test]
fn files_cut_in_their_header_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = std::fs::read(sample("ipv4_loss_sender.pcap")).unwrap();
    let pcapng = std::fs::read(sample("ipv6_loss_receiver.pcapng")).unwrap();
    let shb_len = u32::from_le_bytes(pcapng[4..8].try_into().unwrap()) as usize;
    for (name, bytes, len, want) in [
        ("a.pcap", &pcap, 1, "cut short in its file header: 1 byte".to_string()),
        ("a.pcap", &pcap, 3, "cut short in its file header: 3 bytes".into()),
        ("a.pcap", &pcap, 10, "cut short in its pcap file header (10 of its 24 bytes)".into()),
        ("a.pcap", &pcap, 23, "cut short in its pcap file header (23 of its 24 bytes)".into()),
        ("a.pcap", &pcap, 30, "cut short in the record header of packet 1 (byte offset 24: 6 of its 16 bytes)".into()),
        ("b.pcapng", &pcapng, 10, format!("cut short in its pcapng section header (10 of its {shb_len} bytes)")),
        ("b.pcapng", &pcapng, 23, format!("cut short in its pcapng section header (23 of its {shb_len} bytes)")),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes[..len]).unwrap();
        let o = tcpviz().arg("parse-pcap").arg(&path).arg("--out").arg(dir.path().join("s")).output().unwrap();
        assert_eq!(o.status.code(), Some(1));
        let err = String::from_utf8(o.stderr).unwrap();
        assert!(err.contains(&format!("error: {}: {want}", path.display())), "{len}: {err}");
    }
}

/// `summary --format csv|json` print only data: one CSV row per flow listed, or one JSON
/// object with the totals and the flows.
#[test]
fn summary_formats_for_scripts() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s");
    let o = tcpviz()
        .args(["parse-pcap", "--quiet"])
        .arg(sample("handshake_failures.pcap"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let flows = summary["flows"].as_array().unwrap().len();
    assert!(flows >= 2);
    let csv = tcpviz().args(["summary", "--format", "csv", "--top", "1000", "--in"]).arg(&out).output().unwrap();
    assert!(csv.status.success());
    let text = String::from_utf8(csv.stdout).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), flows + 1, "{text}");
    let columns = rows[0].split(',').count();
    assert!(rows.iter().all(|r| r.split(',').count() == columns), "{text}");
    assert!(rows[0].starts_with("flow_id,src,sport,dst,dport,state"));
    let json = tcpviz().args(["summary", "--format", "json", "--top", "1", "--in"]).arg(&out).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("only JSON on standard output");
    assert_eq!(v["flows"].as_array().unwrap().len(), 1);
    assert_eq!(v["flows_in_summary"], flows);
    assert_eq!(v["totals"]["packets"], summary["totals"]["packets"]);
    assert!(!out.join("summary.html").exists(), "json and csv write no page");
}

/// `tcpviz dashboards` writes the three pages of a session in one go.
#[test]
fn dashboards_writes_every_page() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s");
    let o = tcpviz()
        .args(["parse-pcap", "--quiet"])
        .arg(sample("zero_window.pcap"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = tcpviz().args(["dashboards", "--in"]).arg(&out).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let printed = String::from_utf8(o.stdout).unwrap();
    for page in ["report.html", "timeline.html", "summary.html"] {
        assert!(out.join(page).is_file() && printed.contains(page), "{page}: {printed}");
    }
}

/// `parse-pcap --cross-check` runs tshark on the same file: on the samples, every flag
/// agrees; without tshark, the summary says why there is no comparison.
#[test]
fn cross_check_with_tshark() {
    let dir = tempfile::tempdir().unwrap();
    let tshark_here = Command::new("tshark").arg("--version").output().is_ok_and(|o| o.status.success());
    if tshark_here {
        let out = dir.path().join("checked");
        let o = tcpviz()
            .args(["parse-pcap", "--quiet", "--cross-check"])
            .arg(sample("ipv4_loss_sender.pcap"))
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stderr).contains("every flag agrees"));
        let s: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
        let check = &s["sections"]["cross_check"];
        assert_eq!(check["agree"], true, "{check}");
        // The recorded tshark truth of the sample has as many retransmissions.
        let recorded = std::fs::read_to_string(sample("ipv4_loss_sender.pcap.flagged.csv")).unwrap();
        let truth = tcpviz::cross_check::parse_tshark_csv(&recorded).unwrap();
        assert_eq!(check["flags"]["retransmission"]["matches"], truth["retransmission"].len() as u64);
        assert!(truth["retransmission"].len() > 10);
    } else {
        eprintln!("tshark not installed: only the missing-tshark case is checked");
    }
    let out = dir.path().join("no-tshark");
    let o = tcpviz()
        .args(["parse-pcap", "--quiet", "--cross-check"])
        .arg(sample("zero_window.pcap"))
        .arg("--out")
        .arg(&out)
        .env("PATH", dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let error = s["sections"]["cross_check"]["error"].as_str().unwrap();
    assert!(error.contains("tshark is not installed"), "{error}");
}
