//! Writing on a full file system (a 1 MiB tmpfs), into a read-only folder, and into a
//! folder deleted while running, for `parse-pcap`, `monitor` and `live` (also with rotated
//! files); and the live agent's clear errors and quiet end on a closed pipe. Each case:
//! one clear message naming the file; a non-zero status, or (monitor, live) the analysis
//! goes on and what could not be written is counted; nothing left attached; never half a
//! JSON line (or pcapng block).
//!
//! Needs root (mounts, namespaces). Run one at a time: `cargo xtask test`, or
//! `cargo test -p tcpviz-privileged-tests --test write_failures -- --test-threads=1`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tcpviz::capture::reader::{CaptureReader, Next};
use tcpviz_privileged_tests::*;

/// A small tmpfs mounted on a temporary folder, always unmounted.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn new(options: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let st = Command::new("mount").args(["-t", "tmpfs", "-o", options, "tcpviz-test"]).arg(dir.path()).status();
        assert!(st.unwrap().success(), "mount -t tmpfs -o {options}");
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills it up, leaving `free` bytes (rounded to pages by tmpfs).
    fn fill(&self, free: u64) -> PathBuf {
        let filler = self.path().join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let len = f.metadata().unwrap().len();
        f.set_len(len.saturating_sub(free)).unwrap();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if !Command::new("umount").arg(self.path()).status().is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(self.path()).status();
        }
    }
}

/// Every file of a session holds whole records only: each JSON-lines file ends with a
/// newline and each line parses; a summary parses; no temporary file is left.
fn assert_whole(session: &Path) {
    let Ok(entries) = std::fs::read_dir(session) else { return };
    for e in entries {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(!name.ends_with(".tmp"), "temporary file left: {}", path.display());
        let bytes = std::fs::read(&path).unwrap();
        if name.ends_with(".jsonl") {
            assert!(bytes.is_empty() || bytes.ends_with(b"\n"), "{name} ends inside a line");
            for (i, line) in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()).enumerate() {
                assert!(serde_json::from_slice::<serde_json::Value>(line).is_ok(), "{name} line {}", i + 1);
            }
        } else if name.ends_with(".json") {
            assert!(serde_json::from_slice::<serde_json::Value>(&bytes).is_ok(), "{name}");
        } else if name.ends_with(".pcapng") {
            let mut r = CaptureReader::new(&bytes[..], name.clone());
            loop {
                match r.next_frame() {
                    Ok(Next::Frame(_)) => {}
                    Ok(Next::End { pending }) => {
                        assert_eq!(pending, 0, "{name} ends inside a block");
                        break;
                    }
                    Err(e) => panic!("{name}: {e}"),
                }
            }
        }
    }
}

fn lines(path: &Path) -> u64 {
    std::fs::read_to_string(path).map(|t| t.lines().count() as u64).unwrap_or(0)
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `parse-pcap` on a 1 MiB tmpfs with little room left, over a range of room: the run
/// either fits, or fails with one error naming the file that did not fit; what is left is
/// whole lines and whole JSON documents, never a temporary file.
#[test]
fn parse_pcap_on_a_full_file_system_leaves_only_whole_lines() {
    if !privileged() {
        return;
    }
    let capture = sample("ipv4_loss_sender.pcap");
    let mut outcomes = std::collections::BTreeMap::<String, u32>::new();
    for free_kib in [0u64, 8, 40, 120, 200, 208, 212, 216, 224, 240, 400] {
        let fs = Tmpfs::new("size=1m");
        fs.fill(free_kib * 1024);
        let session = fs.path().join("s");
        let o = Command::new(tcpviz_bin())
            .args(["parse-pcap", "--quiet", "--out"])
            .arg(&session)
            .arg(&capture)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("panicked"), "{free_kib} KiB: {err}");
        assert_whole(&session);
        if o.status.success() {
            *outcomes.entry("fits".into()).or_default() += 1;
            continue;
        }
        assert_eq!(o.status.code(), Some(1), "{free_kib} KiB: {err}");
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
        assert_eq!(errors.len(), 1, "{free_kib} KiB: one message: {err}");
        assert!(errors[0].ends_with("No space left on device (os error 28)"), "{err}");
        let file = ["events.jsonl", "summary.json", "benchmark.log"]
            .into_iter()
            .find(|f| errors[0].contains(&format!("cannot write {}", session.join(f).display())))
            .unwrap_or_else(|| panic!("{free_kib} KiB: the message names no session file: {err}"));
        *outcomes.entry(file.into()).or_default() += 1;
        if file == "events.jsonl" {
            assert!(!session.join("summary.json").exists());
        }
    }
    eprintln!("outcomes by free room: {outcomes:?}");
    assert!(outcomes.contains_key("events.jsonl") && outcomes.contains_key("fits"), "{outcomes:?}");
}

/// A read-only folder (a read-only tmpfs: root ignores file modes): the error names the
/// file, status 1, nothing written.
#[test]
fn parse_pcap_and_monitor_into_a_read_only_folder() {
    if !privileged() {
        return;
    }
    let fs = Tmpfs::new("size=1m,ro");
    let capture = sample("zero_window.pcap");
    for command in ["parse-pcap", "monitor"] {
        let mut cmd = Command::new(tcpviz_bin());
        cmd.arg(command);
        if command == "monitor" {
            cmd.args(["--duration", "5", "--pcap-path"]);
        }
        let o = cmd.arg(&capture).arg("--out").arg(fs.path()).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{command}: {err}");
        let want = format!(
            "error: cannot write {}: Read-only file system (os error 30)",
            fs.path().join("events.jsonl").display()
        );
        assert!(err.lines().any(|l| l == want), "{command}: {err}");
        // A session folder to be made inside it.
        let mut cmd = Command::new(tcpviz_bin());
        cmd.arg(command);
        if command == "monitor" {
            cmd.args(["--duration", "5", "--pcap-path"]);
        }
        let o = cmd.arg(&capture).arg("--out").arg(fs.path().join("new")).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{command}: {err}");
        let want =
            format!("cannot create the session folder {}: Read-only file system", fs.path().join("new").display());
        assert!(err.contains(&want), "{command}: {err}");
    }
    assert_eq!(std::fs::read_dir(fs.path()).unwrap().count(), 0);
}

/// `monitor` on a file system that fills up while it runs, then has room again: it warns
/// once naming the file, goes on analysing, writes again when it can, and its summary
/// counts the lines it could not write (status 1: the session is incomplete).
#[test]
fn monitor_on_a_full_file_system_counts_what_it_could_not_write_and_resumes() {
    if !privileged() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let fs = Tmpfs::new("size=1m");
    let capture = work.path().join("growing.pcap");
    let Pcap { header, records } = read_pcap(&sample("ipv4_loss_sender.pcap"));
    let mut f = std::fs::File::create(&capture).unwrap();
    let thirds = [0, records.len() / 3, records.len() * 2 / 3, records.len()];
    let append = |f: &mut std::fs::File, part: usize| {
        for r in &records[thirds[part]..thirds[part + 1]] {
            f.write_all(r).unwrap();
        }
        f.flush().unwrap();
    };
    f.write_all(&header).unwrap();
    append(&mut f, 0);
    let session = fs.path().join("s");
    let mut run = Running::start(
        Command::new(tcpviz_bin())
            .args(["monitor", "--poll-interval", "0.2", "--threshold", "3", "--pcap-path"])
            .arg(&capture)
            .arg("--out")
            .arg(&session),
    );
    let events = session.join("events.jsonl");
    wait_for_a_line(&events);
    let filler = fs.fill(0);
    append(&mut f, 1);
    run.wait_stderr(&format!("warning: cannot write {}: No space left on device", events.display()));
    std::fs::remove_file(&filler).unwrap();
    append(&mut f, 2);
    run.wait_stderr(&format!("note: {} is written again", events.display()));
    // Interrupted only once it read the whole capture (a Ctrl-C ends a pass where it is).
    run.wait_read_to_end(&capture);
    let (code, out, err) = run.interrupt();
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.matches("warning: cannot write").count(), err.matches("is written again").count(), "{err}");
    assert_whole(&session);

    let summary = json(&session.join("summary.json"));
    let not_written = &summary["sections"]["not_written"];
    let lost = not_written["events.jsonl"].as_u64().unwrap();
    assert!(lost > 0, "{not_written}");
    let found: u64 = summary["totals"]["events"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(found, 656, "every packet was analysed");
    assert_eq!(lines(&events) + lost, found, "each event is written or counted");
    let raised = summary["sections"]["alerts"]["raised"].as_u64().unwrap();
    let alerts_lost = not_written["alerts.jsonl"].as_u64().unwrap();
    assert_eq!(lines(&session.join("alerts.jsonl")) + alerts_lost, raised);
    let errors: Vec<&str> = summary["errors"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
    let want =
        format!("cannot write {}: No space left on device (os error 28) ({lost} lines not written)", events.display());
    assert!(errors.contains(&want.as_str()), "{errors:?}");
    let bench = std::fs::read_to_string(session.join("benchmark.log")).unwrap();
    assert!(bench.contains(&format!("not_written.events.jsonl: {lost}")), "{bench}");
    assert!(out.contains(&format!("error: {want}")), "the table says it too: {out}");
}

/// `monitor` on a file system that stays full to the end: it goes on analysing, and the
/// summary that cannot be written at the end is one error naming it; the results still
/// come on the terminal, status 1. (A file system cannot be turned read-only under a
/// process that writes to it — the kernel refuses a remount while files are open for
/// writing — so read-only folders are covered at the start.)
#[test]
fn monitor_on_a_file_system_full_to_the_end() {
    if !privileged() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let fs = Tmpfs::new("size=1m");
    let capture = work.path().join("growing.pcap");
    let writing = HalfWritten::start(&sample("ipv4_loss_sender.pcap"), &capture);
    let session = fs.path().join("s");
    let mut run = Running::start(
        Command::new(tcpviz_bin())
            .args(["monitor", "--poll-interval", "0.2", "--pcap-path"])
            .arg(&capture)
            .arg("--out")
            .arg(&session),
    );
    let events = session.join("events.jsonl");
    wait_for_a_line(&events);
    fs.fill(0);
    writing.finish();
    run.wait_stderr(&format!("warning: cannot write {}: No space left on device", events.display()));
    run.wait_read_to_end(&capture);
    let (code, out, err) = run.interrupt();
    assert_eq!(code, Some(1), "{err}");
    let want = format!("error: cannot write {}: No space left on device", session.join("summary.json").display());
    assert_eq!(err.matches(&want).count(), 1, "{err}");
    assert_eq!(err.matches(&format!("warning: cannot write {}", events.display())).count(), 1, "{err}");
    assert!(out.contains("1793 packets (1793 TCP)") && out.contains(&want), "{out}");
    assert!(out.contains("lines not written)"), "{out}");
    assert!(!session.join("summary.json").exists());
    assert_whole(&session);
}

fn start_live(lab: &Lab, session: &Path, extra: &[&str]) -> Running {
    let mut args = lab.live_args(&["--out", session.to_str().unwrap()]);
    args.extend_from_slice(extra);
    start_tcpviz(args)
}

/// A sample of the agent's `/metrics`, once its once-a-second update has seen what came
/// before.
fn metric(addr: &str, series: &str) -> f64 {
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let text = http_get(addr, "/metrics").expect("agent /metrics");
    let prefix = format!("{series} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {series}:\n{text}"))
        .parse()
        .unwrap()
}

fn assert_nothing_attached(lab: &Lab) {
    let state = tc_state(lab, &lab.a, &lab.veth_a);
    assert!(!state.contains("tcpviz") && !state.contains("clsact"), "{state}");
    assert!(tcpviz_programs().is_empty(), "{:?}", tcpviz_programs());
}

/// `live` on a file system that fills up while it runs: it warns once per file, keeps
/// analysing every packet, writes again once there is room, counts what it could not
/// write; the capture it wrote reads to its end; nothing stays attached.
#[test]
fn live_on_a_full_file_system_keeps_analysing() {
    if !privileged() {
        return;
    }
    let lab = Lab::new();
    lab.offloads_off();
    let fs = Tmpfs::new("size=1m");
    // Room for the headers of the files, not for the packets of the transfer (veth hands
    // TC super-packets of up to 64 KB even with offloads off: a few thousand records).
    let filler = fs.fill(64 * 1024);
    let session = fs.path().join("s");
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let mut live = start_live(&lab, &session, &["--metrics-addr", &metrics_addr]);
    let server = lab.server(SERVER_V4, 5201);
    lab.send(SERVER_V4, 5201, 50_000_000);
    let _ = server.wait_with_output();
    let capture = session.join("capture.pcapng");
    live.wait_stderr(&format!("warning: cannot write {}: No space left on device", capture.display()));
    std::fs::remove_file(&filler).unwrap();
    let server = lab.server(SERVER_V4, 5202);
    lab.send(SERVER_V4, 5202, 100_000);
    let _ = server.wait_with_output();
    live.wait_stderr(&format!("note: {} is written again", capture.display()));
    let not_written = metric(&metrics_addr, r#"tcpviz_records_not_written_total{file="capture.pcapng"}"#);
    let (code, _out, err) = live.interrupt();
    assert_eq!(code, Some(1), "{err}");
    assert_nothing_attached(&lab);
    assert_whole(&session);

    let summary = json(&session.join("summary.json"));
    let lost = summary["sections"]["not_written"]["capture.pcapng"].as_u64().unwrap();
    let written = summary["sections"]["live"]["packets_written"].as_u64().unwrap();
    assert!(lost > 0 && written > 0, "{}", summary["sections"]);
    assert_eq!(not_written, lost as f64, "/metrics counts what the summary does");
    let analysed = summary["totals"]["packets"].as_u64().unwrap();
    assert_eq!(analysed, written + lost, "every packet analysed, written or counted");
    let mut r = CaptureReader::new(std::fs::File::open(&capture).unwrap(), "capture");
    let mut frames = 0;
    while let Ok(Next::Frame(_)) = r.next_frame() {
        frames += 1;
    }
    assert_eq!(frames, written);
    let errors = summary["errors"].as_array().unwrap();
    assert!(
        errors.iter().any(|e| e.as_str().unwrap().starts_with(&format!("cannot write {}", capture.display()))),
        "{errors:?}"
    );
}

/// The same with `--rotate-mb` and `--keep`: the failure is said once, naming the part
/// being written; writing resumes in parts once there is room; every part is whole, and
/// the packets kept, deleted and not written add up to those analysed.
#[test]
fn live_rotating_on_a_full_file_system_keeps_analysing() {
    if !privileged() {
        return;
    }
    let lab = Lab::new();
    lab.offloads_off();
    let fs = Tmpfs::new("size=1m");
    let filler = fs.fill(64 * 1024);
    let session = fs.path().join("s");
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let mut live = start_live(&lab, &session, &["--rotate-mb", "0.05", "--keep", "2", "--metrics-addr", &metrics_addr]);
    let server = lab.server(SERVER_V4, 5201);
    lab.send(SERVER_V4, 5201, 50_000_000);
    let _ = server.wait_with_output();
    let capture_part = format!("warning: cannot write {}", session.join("capture_").display());
    live.wait_stderr(&capture_part);
    std::fs::remove_file(&filler).unwrap();
    let server = lab.server(SERVER_V4, 5202);
    lab.send(SERVER_V4, 5202, 20_000_000);
    let _ = server.wait_with_output();
    live.wait_stderr(&format!("note: {}", session.join("capture_").display()));
    let rotated_away = metric(&metrics_addr, r#"tcpviz_records_rotated_away_total{file="capture.pcapng"}"#);
    let (code, _out, err) = live.interrupt();
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.matches(&capture_part).count(), 1, "said once: {err}");
    assert_nothing_attached(&lab);
    assert_whole(&session);

    let summary = json(&session.join("summary.json"));
    let lost = summary["sections"]["not_written"]["capture.pcapng"].as_u64().unwrap();
    let written = summary["sections"]["live"]["packets_written"].as_u64().unwrap();
    assert!(lost > 0 && written > 0, "{}", summary["sections"]);
    assert_eq!(summary["totals"]["packets"].as_u64().unwrap(), written + lost, "every packet analysed is counted");
    let file = &summary["sections"]["rotation"]["files"]["capture.pcapng"];
    let parts = tcpviz::output::rotation::parts_of(&session.join("capture.pcapng"));
    assert!(!parts.is_empty() && parts.len() <= 2, "{parts:?}");
    let mut kept = 0;
    for part in &parts {
        assert!(std::fs::metadata(part).unwrap().len() <= 50_000, "{}", part.display());
        let mut r = CaptureReader::new(std::fs::File::open(part).unwrap(), "part");
        while let Ok(Next::Frame(_)) = r.next_frame() {
            kept += 1;
        }
    }
    assert_eq!(kept + file["deleted"]["records"].as_u64().unwrap(), written, "{file}");
    // Two parts kept of the four or so the transfers fill (about 1,500 packet records of
    // 50 kB parts): parts were deleted before /metrics was read.
    assert!(
        rotated_away > 0.0 && rotated_away <= file["deleted"]["records"].as_f64().unwrap(),
        "{rotated_away} {file}"
    );
}

/// `live` into a read-only folder: one error naming the file, status 1, nothing attached.
#[test]
fn live_into_a_read_only_folder_fails_cleanly() {
    if !privileged() {
        return;
    }
    let lab = Lab::new();
    let fs = Tmpfs::new("size=1m,ro");
    let o =
        Command::new(tcpviz_bin()).args(lab.live_args(&["--duration", "5", "--out"])).arg(fs.path()).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let want = format!(
        "error: cannot write {}: Read-only file system (os error 30)",
        fs.path().join("events.jsonl").display()
    );
    assert!(err.lines().any(|l| l == want), "{err}");
    assert_eq!(err.matches("error:").count(), 1, "{err}");
    assert_nothing_attached(&lab);
}

/// `live` whose folder is deleted while it runs: it says so, goes on, and ends with the
/// table and status 1; nothing attached.
#[test]
fn live_with_its_folder_deleted_keeps_analysing() {
    if !privileged() {
        return;
    }
    let lab = Lab::new();
    let work = tempfile::tempdir().unwrap();
    let session = work.path().join("s");
    let mut live = start_live(&lab, &session, &[]);
    let server = lab.server(SERVER_V4, 5201);
    lab.send(SERVER_V4, 5201, 200_000);
    let _ = server.wait_with_output();
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::remove_dir_all(&session).unwrap();
    let server = lab.server(SERVER_V4, 5202);
    lab.send(SERVER_V4, 5202, 200_000);
    let _ = server.wait_with_output();
    live.wait_stderr("deleted while being written");
    let (code, out, err) = live.interrupt();
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("error: cannot write {}", session.join("summary.json").display())), "{err}");
    assert!(out.contains(" flows, ") && out.contains("state"), "the table: {out}");
    assert!(!session.exists());
    assert_nothing_attached(&lab);
}

/// The live agent with its standard output closed (`tcpviz live ... | head -1`): the first
/// alert finds the reader gone, and it ends as on Ctrl-C, quietly, status 0.
#[test]
fn live_ends_quietly_on_a_closed_pipe() {
    if !privileged() {
        return;
    }
    let lab = Lab::new();
    lab.offloads_off();
    lab.loss(0.05, 5201);
    let work = tempfile::tempdir().unwrap();
    let session = work.path().join("s");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let child = Command::new(tcpviz_bin())
        .args(lab.live_args(&["--threshold", "1", "--duration", "120", "--out"]))
        .arg(&session)
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let started = Instant::now();
    let server = lab.server(SERVER_V4, 5201);
    lab.send(SERVER_V4, 5201, 2_000_000);
    let _ = server.wait_with_output();
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(60), "it did not stop by itself");
    assert!(json(&session.join("summary.json"))["sections"]["alerts"]["raised"].as_u64().unwrap() > 0);
    assert_nothing_attached(&lab);
}

/// `--metrics-addr` on an address in use: the message names the flag and says the cause
/// once; no session folder is left, nothing attached.
#[test]
fn live_metrics_address_in_use_is_one_clear_message() {
    if !privileged() {
        return;
    }
    let lab = Lab::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let work = tempfile::tempdir().unwrap();
    let session = work.path().join("s");
    let o = Command::new(tcpviz_bin())
        .args(lab.live_args(&["--duration", "5"]))
        .args(["--metrics-addr", &addr.to_string(), "--out"])
        .arg(&session)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let want = format!("error: cannot serve metrics on {addr} (--metrics-addr): Address already in use (os error 98)");
    assert!(err.lines().any(|l| l == want), "{err}");
    assert_eq!(err.matches("Address already in use").count(), 1, "{err}");
    assert!(!session.exists(), "no empty session folder");
    assert_nothing_attached(&lab);
}
