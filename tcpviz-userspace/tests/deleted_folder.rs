//! A session folder deleted while `parse-pcap` or `monitor` writes into it.

mod common;

use std::process::Command;

use common::{HalfWritten, Pcap, Running, read_pcap, sample, tcpviz, wait_for_a_line};

/// parse-pcap whose session folder is deleted while it runs (its input is a FIFO, so the
/// test decides when the reading goes on): one error naming the file, status 1.
#[test]
fn parse_pcap_notices_its_folder_deleted_while_running() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("input.pcap");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let session = dir.path().join("s");
    let mut run = Running::start(tcpviz().args(["parse-pcap", "--quiet", "--out"]).arg(&session).arg(&fifo));
    let mut writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    let Pcap { header, records } = read_pcap(&sample("ipv4_loss_sender.pcap"));
    writer.write_all(&header).unwrap();
    for r in &records[..records.len() / 2] {
        writer.write_all(r).unwrap();
    }
    let start = std::time::Instant::now();
    while !session.join("events.jsonl").exists() {
        assert!(start.elapsed().as_secs() < 30);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::fs::remove_dir_all(&session).unwrap();
    for r in &records[records.len() / 2..] {
        writer.write_all(r).unwrap();
    }
    drop(writer);

    let (code, _, err) = run.finish();
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.matches("error:").count(), 1, "{err}");
    assert!(
        err.contains(&format!(
            "error: cannot write {}: the file was deleted while being written (was its folder removed?)",
            session.join("events.jsonl").display()
        )),
        "{err}"
    );
    assert!(!session.exists(), "nothing is made again");
}

/// monitor whose session folder is deleted while it runs: it says so once, naming the file,
/// goes on analysing, and at the end gives its table on the terminal and status 1.
#[test]
fn monitor_goes_on_when_its_folder_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("growing.pcap");
    let writing = HalfWritten::start(&sample("ipv4_loss_sender.pcap"), &capture);
    let session = dir.path().join("s");
    let mut run = Running::start(
        tcpviz().args(["monitor", "--poll-interval", "0.2", "--pcap-path"]).arg(&capture).arg("--out").arg(&session),
    );
    wait_for_a_line(&session.join("events.jsonl"));
    std::fs::remove_dir_all(&session).unwrap();
    writing.finish();
    run.wait_stderr("deleted while being written");
    // Interrupted only once it read the whole capture (a Ctrl-C ends a pass where it is).
    run.wait_read_to_end(&capture);
    let (code, out, err) = run.interrupt();
    assert_eq!(code, Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let events = session.join("events.jsonl");
    assert_eq!(
        err.matches(&format!("warning: cannot write {}: the file was deleted", events.display())).count(),
        1,
        "{err}"
    );
    assert!(err.contains(&format!("error: cannot write {}", session.join("summary.json").display())), "{err}");
    // The results are on the terminal: all 1793 packets analysed.
    assert!(out.contains("\n1793 packets (1793 TCP)"), "{out}");
    assert!(out.contains("lines not written)"), "{out}");
    assert!(!session.exists(), "nothing is made again");
}
