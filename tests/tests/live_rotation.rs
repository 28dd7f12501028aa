//! `tcpviz live --capture all --rotate-mb 1 --keep 3` during transfers in namespaces: at
//! most three parts of each file remain, each a whole file on its own (our reader, and
//! tshark when installed, read every capture part to its end), and the packets and lines
//! kept plus those `--keep` deleted are what the agent wrote and analysed.
//!
//! Needs root. `cargo build -p tcpviz --features test-hooks`, then
//! `cargo test -p tcpviz-privileged-tests --test live_rotation -- --test-threads=1`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tcpviz::capture::reader::{CaptureReader, Next};
use tcpviz::output::rotation::{part_number, parts_of};
use tcpviz_privileged_tests::*;

const KEEP: usize = 3;
const PART_BYTES: u64 = 1_000_000;

/// The highest part number of `file` in the session folder.
fn last_part(session: &Path, file: &str) -> u64 {
    parts_of(&session.join(file))
        .iter()
        .filter_map(|p| part_number(file, &p.file_name()?.to_string_lossy()))
        .max()
        .unwrap_or(0)
}

fn names(parts: &[PathBuf]) -> Vec<String> {
    parts.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect()
}

/// Packets of one capture part, read to its end; it must end on a block boundary.
fn packets_of(part: &Path) -> u64 {
    let mut r = CaptureReader::new(std::fs::File::open(part).unwrap(), part.display().to_string());
    let mut n = 0;
    loop {
        match r.next_frame() {
            Ok(Next::Frame(_)) => n += 1,
            Ok(Next::End { pending }) => {
                assert_eq!(pending, 0, "{} ends inside a block", part.display());
                return n;
            }
            Err(e) => panic!("{}: {e}", part.display()),
        }
    }
}

/// tshark's packet count of a part, when tshark is installed.
fn tshark_packets(part: &Path) -> Option<u64> {
    let o = Command::new("tshark").arg("-r").arg(part).args(["-T", "fields", "-e", "frame.number"]).output().ok()?;
    assert!(o.status.success(), "tshark -r {}: {}", part.display(), String::from_utf8_lossy(&o.stderr));
    Some(String::from_utf8_lossy(&o.stdout).lines().count() as u64)
}

#[test]
fn live_rotates_its_files_and_keeps_the_newest_parts() {
    if !privileged() {
        return;
    }
    let lab = Lab::new();
    lab.offloads_off();
    let work = tempfile::tempdir().unwrap();
    let session = work.path().join("s");
    let mut args = lab.live_args(&["--rotate-mb", "1", "--keep", "3", "--out", session.to_str().unwrap()]);
    args.extend_from_slice(&["--threshold", "1"]);
    let agent = start_tcpviz(args);
    // Transfers until the capture has passed its third megabyte (TC sees GSO super-packets:
    // a few hundred bytes of record per 20-60 KB sent), so that --keep has deleted parts.
    let start = Instant::now();
    let mut port = 5201;
    while last_part(&session, "capture.pcapng") < KEEP as u64 + 2 {
        assert!(start.elapsed() < Duration::from_secs(120), "the capture did not grow past {} parts", KEEP + 1);
        let server = lab.server(SERVER_V4, port);
        lab.send(SERVER_V4, port, 200_000_000);
        let _ = server.wait_with_output();
        port += 1;
    }
    let (code, _out, stderr) = agent.interrupt();
    assert_eq!(code, Some(0), "tcpviz live failed: {stderr}");
    let state = tc_state(&lab, &lab.a, &lab.veth_a);
    assert!(!state.contains("tcpviz"), "{state}");

    let summary = summary(&session);
    let rotation = &summary["sections"]["rotation"];
    assert_eq!(rotation["rotate_mb"], 1.0, "{rotation}");
    assert_eq!(rotation["keep"], KEEP, "{rotation}");
    assert!(!session.join("capture.pcapng").exists() && !session.join("events.jsonl").exists());

    // The capture: at most KEEP parts, each bounded and whole; kept + deleted = written,
    // and written + not written = analysed.
    let capture_parts = parts_of(&session.join("capture.pcapng"));
    let file = &rotation["files"]["capture.pcapng"];
    assert_eq!(capture_parts.len(), KEEP, "{file}");
    assert_eq!(file["parts"], serde_json::json!(names(&capture_parts)));
    let mut kept = 0;
    for part in &capture_parts {
        assert!(std::fs::metadata(part).unwrap().len() <= PART_BYTES, "{}", part.display());
        let n = packets_of(part);
        assert!(n > 0, "{}", part.display());
        if let Some(t) = tshark_packets(part) {
            assert_eq!(t, n, "tshark and tcpviz count the packets of {} alike", part.display());
        }
        kept += n;
    }
    let deleted = &file["deleted"];
    assert!(deleted["parts"].as_u64().unwrap() >= 2, "{file}");
    assert_eq!(deleted["parts"].as_u64().unwrap() + KEEP as u64, file["parts_opened"].as_u64().unwrap());
    let written = summary["sections"]["live"]["packets_written"].as_u64().unwrap();
    assert_eq!(file["records_written"].as_u64().unwrap(), written);
    assert_eq!(kept + deleted["records"].as_u64().unwrap(), written, "{file}");
    let not_written = summary["sections"]["not_written"]["capture.pcapng"].as_u64().unwrap();
    assert_eq!(
        written + not_written,
        summary["totals"]["packets"].as_u64().unwrap(),
        "every packet analysed is counted"
    );

    // The JSON-lines files: the same bounds, whole lines, and the lines add up.
    for name in ["events.jsonl", "kernel_samples.jsonl", "alerts.jsonl"] {
        let parts = parts_of(&session.join(name));
        let file = &rotation["files"][name];
        assert!(!parts.is_empty() && parts.len() <= KEEP, "{name}: {parts:?}");
        assert_eq!(file["parts"], serde_json::json!(names(&parts)));
        let mut lines = 0;
        for part in &parts {
            let text = std::fs::read_to_string(part).unwrap();
            assert!(text.len() as u64 <= PART_BYTES && (text.is_empty() || text.ends_with('\n')), "{}", part.display());
            for line in text.lines() {
                serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{}: {e}", part.display()));
            }
            lines += text.lines().count() as u64;
        }
        assert_eq!(lines + file["deleted"]["records"].as_u64().unwrap(), file["records_written"].as_u64().unwrap());
    }
    println!("capture: {file}; packets analysed {}", summary["totals"]["packets"]);

    // The dashboards read the parts left as the session.
    let o = Command::new(tcpviz_bin()).args(["report", "--in"]).arg(&session).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
