//! The kernel side's diagnostics (aya-log, forwarded into `tracing` under the target
//! `tcpviz::kernel`): with `-vv` the agent says why each connection became watched, once per
//! watch that starts, and logs a full ring; without it the kernel side logs nothing at all
//! (its log code is not even loaded).

use std::path::Path;

use tcpviz_privileged_tests::*;

const LOSSY_PORT: u16 = 5201;

/// A lossy transfer from A to B with the agent in `troubled` mode on A's interface; returns
/// the agent's standard error and its summary.
fn lossy_run(verbose: bool, work: &Path) -> (String, serde_json::Value) {
    let lab = Lab::new();
    lab.offloads_off();
    lab.loss(0.01, LOSSY_PORT);
    let session = work.join(if verbose { "vv" } else { "quiet" });
    let mut args = vec![];
    if verbose {
        args.push("-vv");
    }
    args.extend(["live", "--capture", "troubled", "--iface", &lab.veth_a, "--netns", &lab.a]);
    args.extend(["--out", session.to_str().unwrap()]);
    let agent = start_tcpviz(&args);
    let server = lab.server(SERVER_V4, LOSSY_PORT);
    lab.send(SERVER_V4, LOSSY_PORT, 8_000_000);
    let _ = server.wait_with_output();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (code, _, stderr) = agent.interrupt();
    assert_eq!(code, Some(0), "tcpviz live failed: {stderr}");
    (stderr, summary(&session))
}

fn watch_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains("tcpviz::kernel") && l.contains("became watched")).collect()
}

#[test]
fn with_vv_the_kernel_says_why_a_connection_became_watched() {
    if !privileged() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (stderr, summary) = lossy_run(true, work.path());
    let live = &summary["sections"]["live"];
    let starts = live["watch_starts"].as_u64().expect("watch_starts in the live section");
    assert!(starts > 0, "the lossy transfer started no watch: {live}");
    let lines = watch_lines(&stderr);
    // One line per watch that starts, not one per mark: the marks (every retransmission,
    // every move to Recovery) far outnumber them.
    let marks = live["trouble_marks"]["tracepoint"].as_u64().unwrap();
    assert!(marks > starts, "{live}");
    println!("{starts} watch starts, {marks} tracepoint marks:\n{}", lines.join("\n"));
    assert_eq!(lines.len() as u64, starts, "{live}\n{}", lines.join("\n"));
    // The sender's kernel retransmitted: a tracepoint started the watch of the lossy
    // connection, named with its addresses and ports as its socket names them.
    let lossy = format!("-> {SERVER_V4}:{LOSSY_PORT}");
    let line = lines.iter().find(|l| l.contains(&lossy)).unwrap_or_else(|| panic!("{}", lines.join("\n")));
    assert!(line.contains("became watched (tracepoint tcp_"), "{line}");
    assert!(line.contains(&format!("{CLIENT_V4}:")), "{line}");
    // The flow that line names carries the same start in the summary.
    let flow = summary["flows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["directions"][0]["dport"] == LOSSY_PORT || f["directions"][1]["dport"] == LOSSY_PORT)
        .expect("the lossy flow");
    let reason = flow["watch_reason"].as_str().unwrap();
    assert!(line.contains(&format!("tracepoint {reason}")), "{line} / {reason}");
}

#[test]
fn without_vv_the_kernel_logs_nothing() {
    if !privileged() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (stderr, summary) = lossy_run(false, work.path());
    // The same trouble happened ...
    assert!(summary["sections"]["live"]["watch_starts"].as_u64().unwrap() > 0, "{}", summary["sections"]["live"]);
    // ... and nothing of the kernel side's log reached the output.
    assert!(watch_lines(&stderr).is_empty(), "{stderr}");
    assert!(!stderr.contains("tcpviz::kernel"), "{stderr}");
}

/// A ring too small for the traffic: the kernel logs its 1st, 2nd, 4th… loss per CPU, not
/// each one.
#[test]
fn with_vv_a_full_ring_is_logged_a_few_times() {
    if !privileged() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let session = work.path().join("tiny");
    let lab = Lab::new();
    let agent = start_tcpviz([
        "-vv",
        "live",
        "--capture",
        "all",
        "--ring-bytes",
        "4096",
        "--iface",
        &lab.veth_a,
        "--netns",
        &lab.a,
        "--out",
        session.to_str().unwrap(),
    ]);
    let server = lab.server(SERVER_V4, LOSSY_PORT);
    lab.send(SERVER_V4, LOSSY_PORT, 20_000_000);
    let _ = server.wait_with_output();
    let (code, _, stderr) = agent.interrupt();
    assert_eq!(code, Some(0), "{stderr}");
    let lost = summary(&session)["sections"]["live"]["lost_by_cause"]["packets"]["ring_full"].as_u64().unwrap();
    assert!(lost > 100, "the ring never filled: {lost}");
    let lines: Vec<&str> =
        stderr.lines().filter(|l| l.contains("tcpviz::kernel") && l.contains("ring PACKETS full")).collect();
    assert!(!lines.is_empty(), "{stderr}");
    // At most one line per power of two per CPU.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let bound = cpus * (64 - lost.leading_zeros() as usize);
    assert!(lines.len() <= bound, "{} lines for {lost} losses:\n{}", lines.len(), lines.join("\n"));
    assert!(lines.iter().any(|l| l.contains("full: 1 records lost")), "{}", lines.join("\n"));
    println!("{lost} packets lost to a full ring:\n{}", lines.join("\n"));
}
