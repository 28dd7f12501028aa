//! `--rotate-mb` / `--keep` on `tcpviz monitor`: the session's JSON-lines files become
//! bounded parts of whole lines, and `summary`, `plot` and `report` read the parts as one
//! session, with the same results as an unrotated run. A rotated capture (parts as `live`
//! writes them) is followed as one capture.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{bin, sample};

const SAMPLE: &str = "ipv4_loss_sender.pcap";
/// 20 kB parts: the sample's 212 kB of events give about eleven.
const PART_MB: &str = "0.02";
const PART_BYTES: u64 = 20_000;

/// Runs `monitor` over a capture that is already whole, for long enough to read it all.
fn monitor(pcap_path: &str, out: &Path, extra: &[&str]) {
    let o = Command::new(bin())
        .args(["monitor", "--pcap-path", pcap_path, "--duration", "2", "--poll-interval", "0.3"])
        .args(extra)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "monitor {extra:?}: {}", String::from_utf8_lossy(&o.stderr));
}

fn summary(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap()
}

/// The parts of `file` (`events.jsonl`) in a session folder, in order of their number.
fn parts(dir: &Path, file: &str) -> Vec<PathBuf> {
    let parts = tcpviz::output::rotation::parts_of(&dir.join(file));
    let mut numbers: Vec<u64> =
        parts.iter().map(|p| tcpviz::output::rotation::part_number(file, &name(p)).unwrap()).collect();
    let sorted = numbers.clone();
    numbers.sort();
    assert_eq!(numbers, sorted, "parts in order");
    parts
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// Each part: at most PART_BYTES, whole JSON lines only. Returns the parts' text in order.
fn read_parts(parts: &[PathBuf]) -> String {
    let mut all = String::new();
    for p in parts {
        let text = std::fs::read_to_string(p).unwrap();
        assert!(text.len() as u64 <= PART_BYTES, "{} holds {} bytes", p.display(), text.len());
        assert!(text.is_empty() || text.ends_with('\n'), "{} ends inside a line", p.display());
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("{}: a line that is not JSON ({e}): {line}", p.display()));
        }
        all.push_str(&text);
    }
    all
}

fn run(args: &[&str], dir: &Path) -> (String, String) {
    let o = Command::new(bin()).args(args).arg("--in").arg(dir).output().unwrap();
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn monitor_rotates_into_bounded_parts_that_read_as_one_session() {
    let tmp = tempfile::tempdir().unwrap();
    let whole = tmp.path().join("unrotated_session");
    let rotated = tmp.path().join("rotated_session");
    let capture = sample(SAMPLE).display().to_string();
    monitor(&capture, &whole, &[]);
    monitor(&capture, &rotated, &["--rotate-mb", PART_MB]);

    assert!(!rotated.join("events.jsonl").exists(), "only parts");
    let event_parts = parts(&rotated, "events.jsonl");
    assert!(event_parts.len() >= 8, "{event_parts:?}");
    let events = read_parts(&event_parts);
    let expected = std::fs::read_to_string(whole.join("events.jsonl")).unwrap();
    assert!(expected.len() > 150_000, "the sample gives enough events to rotate");
    assert_eq!(events, expected, "the parts in order hold the unrotated file, line for line");
    let alerts = read_parts(&parts(&rotated, "alerts.jsonl"));
    assert_eq!(alerts, std::fs::read_to_string(whole.join("alerts.jsonl")).unwrap());

    // The summary: the same totals, and the rotation settings and parts.
    let (a, b) = (summary(&whole), summary(&rotated));
    assert_eq!(a["totals"], b["totals"]);
    assert_eq!(a["flows"], b["flows"]);
    let rotation = &b["sections"]["rotation"];
    assert_eq!(rotation["rotate_mb"], 0.02);
    let listed: Vec<String> = rotation["files"]["events.jsonl"]["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, event_parts.iter().map(|p| name(p)).collect::<Vec<_>>());
    assert_eq!(rotation["files"]["events.jsonl"]["records_written"], expected.lines().count() as u64);
    assert!(a["sections"].get("rotation").is_none());

    // summary, plot and report over the parts.
    assert_eq!(run(&["summary", "--format", "json"], &whole).0, run(&["summary", "--format", "json"], &rotated).0);
    for (command, page) in [("plot", "timeline.html"), ("report", "report.html")] {
        for dir in [&whole, &rotated] {
            let (_, stderr) = run(&[command], dir);
            assert!(!stderr.contains("error") && !stderr.contains("warning"), "{command} {}: {stderr}", dir.display());
        }
        let of = |dir: &Path| {
            std::fs::read_to_string(dir.join(page)).unwrap().replace(&dir.display().to_string(), "SESSION")
        };
        if page == "timeline.html" {
            // Drawn from events.jsonl alone: the same page.
            assert!(of(&whole) == of(&rotated), "{page} differs between the rotated and the unrotated session");
        } else {
            // The report also lists the summary's sections, rotation among them.
            assert!(of(&rotated).contains("rotation"));
        }
    }
}

#[test]
fn keep_leaves_the_newest_parts_and_counts_what_it_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let whole = tmp.path().join("unrotated_session");
    let kept = tmp.path().join("kept_session");
    let capture = sample(SAMPLE).display().to_string();
    monitor(&capture, &whole, &[]);
    monitor(&capture, &kept, &["--rotate-mb", PART_MB, "--keep", "3"]);

    let expected = std::fs::read_to_string(whole.join("events.jsonl")).unwrap();
    let event_parts = parts(&kept, "events.jsonl");
    assert_eq!(event_parts.len(), 3, "{event_parts:?}");
    let left = read_parts(&event_parts);
    assert!(expected.ends_with(&left), "the parts kept are the newest");
    let file = &summary(&kept)["sections"]["rotation"]["files"]["events.jsonl"];
    let opened = file["parts_opened"].as_u64().unwrap();
    assert!(opened >= 8);
    assert_eq!(file["deleted"]["parts"].as_u64().unwrap(), opened - 3);
    let deleted = file["deleted"]["records"].as_u64().unwrap();
    assert_eq!(deleted + left.lines().count() as u64, expected.lines().count() as u64, "{file}");
    assert_eq!(
        file["deleted"]["bytes"].as_u64().unwrap() + left.len() as u64,
        expected.len() as u64,
        "the bytes deleted and kept add up"
    );
    assert_eq!(summary(&kept)["totals"], summary(&whole)["totals"], "the analysis saw everything");
    // The oldest parts are gone: the first kept is number opened - 2.
    assert_eq!(tcpviz::output::rotation::part_number("events.jsonl", &name(&event_parts[0])), Some(opened - 2));
}

/// A rotated capture as `live --rotate-mb` writes it (each part a whole pcapng): each part
/// reads on its own (our reader, and tshark when installed), and `monitor` follows the
/// glob of parts as one capture, finding what it finds in the original.
#[test]
fn a_rotated_capture_is_followed_as_one() {
    use tcpviz::capture::reader::{CaptureReader, Next};
    use tcpviz::output::pcapng::PcapngWriter;
    use tcpviz::output::record_file::OnFailure;
    use tcpviz::output::rotation::RotationSettings;

    let tmp = tempfile::tempdir().unwrap();
    let whole = tmp.path().join("unrotated_session");
    monitor(&sample(SAMPLE).display().to_string(), &whole, &[]);

    let ring = tmp.path().join("ring");
    std::fs::create_dir(&ring).unwrap();
    let settings = RotationSettings { max_bytes: Some(50_000), ..Default::default() };
    let mut writer = PcapngWriter::create(&ring.join("capture.pcapng"), 65535, OnFailure::Stop, settings).unwrap();
    let mut reader = CaptureReader::new(std::fs::File::open(sample(SAMPLE)).unwrap(), SAMPLE);
    let mut interface = None;
    let mut packets = 0u64;
    while let Next::Frame(f) = reader.next_frame().unwrap() {
        let id = match interface {
            Some(id) => id,
            None => *interface.insert(writer.add_interface(f.link_type, "sample").unwrap()),
        };
        writer.write_packet(id, f.ts, f.data, f.orig_len, None).unwrap();
        packets += 1;
    }
    writer.flush().unwrap();
    drop(writer);

    let capture_parts = parts(&ring, "capture.pcapng");
    assert!(capture_parts.len() >= 4, "{capture_parts:?}");
    let mut read_back = 0;
    for p in &capture_parts {
        assert!(std::fs::metadata(p).unwrap().len() <= 50_000);
        let mut r = CaptureReader::new(std::fs::File::open(p).unwrap(), name(p));
        loop {
            match r.next_frame().unwrap() {
                Next::Frame(_) => read_back += 1,
                Next::End { pending } => {
                    assert_eq!(pending, 0, "{} ends inside a block", p.display());
                    break;
                }
            }
        }
        if let Ok(o) = Command::new("tshark").arg("-r").arg(p).arg("-q").output() {
            assert!(o.status.success(), "tshark -r {}: {}", p.display(), String::from_utf8_lossy(&o.stderr));
        }
    }
    assert_eq!(read_back, packets);

    let followed = tmp.path().join("followed_session");
    monitor(&format!("{}/capture_*.pcapng", ring.display()), &followed, &[]);
    let (a, b) = (summary(&whole), summary(&followed));
    assert_eq!(b["totals"]["packets"], packets);
    assert_eq!(a["totals"]["events"], b["totals"]["events"]);
    assert_eq!(a["totals"]["packets"], b["totals"]["packets"]);
    assert_eq!(b["sources"].as_array().unwrap().len(), capture_parts.len(), "{}", b["sources"]);
}

/// The settings are checked before anything starts, from flags and from `--config` alike.
#[test]
fn bad_rotation_settings_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let capture = sample(SAMPLE).display().to_string();
    let error = |args: &[&str]| {
        let o = Command::new(bin()).args(args).arg("--out").arg(tmp.path().join("never")).output().unwrap();
        assert!(!o.status.success(), "{args:?}");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let e = error(&["monitor", "--pcap-path", &capture, "--keep", "3"]);
    assert!(e.contains("--keep needs --rotate-mb or --rotate-secs"), "{e}");
    let e = error(&["monitor", "--pcap-path", &capture, "--rotate-mb", "0.001"]);
    assert!(e.contains("--rotate-mb must be between"), "{e}");
    let e = error(&["monitor", "--pcap-path", &capture, "--rotate-secs", "1", "--keep", "0"]);
    assert!(e.contains("--keep must be at least 1"), "{e}");
    let config = tmp.path().join("agent.toml");
    std::fs::write(&config, "keep = 3\n").unwrap();
    let e = error(&["live", "--config", config.to_str().unwrap()]);
    assert!(e.contains("--keep needs --rotate-mb"), "{e}");
    assert!(!tmp.path().join("never").exists(), "no session folder for a run that never started");
}
