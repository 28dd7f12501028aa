//! SIGTERM or SIGINT at any moment of a live run (while attaching, twice in a row, while the
//! dashboards are drawn) ends the agent cleanly: exit status 0, nothing attached, every
//! session file complete.

use std::fs::File;
use std::path::Path;
use std::time::Duration;

use tcpviz::capture::reader::{CaptureReader, Next};
use tcpviz_privileged_tests::*;

fn args<'a>(lab: &'a Lab, session: &'a Path, mode: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = lab.live_args(&["--tc-mode", mode, "--out", session.to_str().unwrap()]);
    a.extend_from_slice(extra);
    a
}

/// Nothing of the agent on the interface, none of its programs loaded, no marker.
fn assert_nothing_attached(lab: &Lab, programs: &[u32], what: &str) {
    let state = tc_state(lab, &lab.a, &lab.veth_a);
    assert!(!state.contains("tcpviz") && !state.contains("clsact"), "{what}: {state}");
    let left = loaded_after(programs, Duration::from_secs(3));
    assert!(left.is_empty(), "{what}: programs still loaded: {left:?}");
    assert!(clsact_markers_for(&lab.veth_a).is_empty(), "{what}: a marker is left");
}

/// Every session file is whole: JSON lines parse, the capture reads to its end with as
/// many packets as the summary says were written, no temporary page is left.
fn assert_session_complete(session: &Path, what: &str) -> serde_json::Value {
    let summary = summary(session);
    for file in ["events.jsonl", "alerts.jsonl", "kernel_samples.jsonl"] {
        let text = std::fs::read_to_string(session.join(file)).unwrap_or_else(|e| panic!("{what}: {file}: {e}"));
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{what}: {file}: {e}: {line}"));
        }
    }
    let mut reader = CaptureReader::new(File::open(session.join("capture.pcapng")).unwrap(), "x");
    let mut frames = 0;
    loop {
        match reader.next_frame() {
            Ok(Next::Frame(_)) => frames += 1,
            Ok(Next::End { pending }) => {
                assert_eq!(pending, 0, "{what}: capture.pcapng ends in half a block");
                break;
            }
            Err(e) => panic!("{what}: capture.pcapng: {e}"),
        }
    }
    assert_eq!(summary["sections"]["live"]["packets_written"], frames, "{what}");
    let tmp: Vec<_> = std::fs::read_dir(session)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .map(|e| e.file_name())
        .collect();
    assert!(tmp.is_empty(), "{what}: {tmp:?}");
    summary
}

#[test]
fn a_stop_signal_while_attaching_leaves_nothing_attached() {
    if !privileged() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let lab = Lab::new();
    // The moments between attach steps, held open by the agent's test pause: after the
    // tracepoints, after the clsact qdisc was added (no filter yet), after the first filter
    // or TCX link.
    let cases = [
        ("clsact", "attach-tracepoints", libc::SIGTERM),
        ("clsact", "attach-qdisc", libc::SIGTERM),
        ("clsact", "attach-ingress", libc::SIGINT),
        ("tcx", "attach-ingress", libc::SIGTERM),
    ];
    for (mode, point, sig) in cases {
        let what = format!("{mode} {point}");
        let session = work.path().join(format!("{mode}-{point}"));
        let pause = format!("{point}:300");
        let mut agent = Agent::start(&args(&lab, &session, mode, &[]), &[("TCPVIZ_TEST_PAUSE_AT", &pause)]);
        assert!(agent.wait_for(&format!("test pause: {point}"), Duration::from_secs(20)), "{what}: {:?}", agent.stderr);
        let programs = programs_held_by(agent.pid());
        agent.signal(sig);
        let (status, _, stderr) = agent.finish();
        assert!(status.success(), "{what}: {status}: {stderr}");
        assert!(stderr.contains("a stop signal arrived during start-up"), "{what}: {stderr}");
        assert_nothing_attached(&lab, &programs, &what);
        let summary = assert_session_complete(&session, &what);
        let live = &summary["sections"]["live"];
        assert_eq!(live["stopped_by_signal"], true, "{what}");
        let tc = live["hooks"][format!("tc:{}", lab.veth_a)].as_str().unwrap().to_string();
        assert!(tc.ends_with("stopped during start-up"), "{what}: {tc}");
    }
}

#[test]
fn a_stop_signal_right_after_the_start_leaves_nothing_attached() {
    if !privileged() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let lab = Lab::new();
    for delay_ms in [0, 20, 60, 150, 400] {
        let what = format!("SIGTERM after {delay_ms} ms");
        let session = work.path().join(format!("after-{delay_ms}"));
        let agent = Agent::start(&args(&lab, &session, "clsact", &[]), &[]);
        std::thread::sleep(Duration::from_millis(delay_ms));
        agent.signal(libc::SIGTERM);
        let (status, _, stderr) = agent.finish();
        use std::os::unix::process::ExitStatusExt;
        // Before its first instruction the process has the default action (it dies
        // having attached nothing); from then on it ends cleanly.
        assert!(status.success() || status.signal() == Some(libc::SIGTERM), "{what}: {status}: {stderr}");
        assert_nothing_attached(&lab, &[], &what);
        eprintln!("{what}: {status}");
        if status.success() {
            assert_session_complete(&session, &what);
        }
    }
}

#[test]
fn two_signals_in_a_row_end_the_agent_cleanly() {
    if !privileged() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let lab = Lab::new();
    for (first, second, gap_ms) in [(libc::SIGTERM, libc::SIGTERM, 0), (libc::SIGINT, libc::SIGTERM, 30)] {
        let what = format!("signals {first} then {second} {gap_ms} ms apart");
        let session = work.path().join(format!("twice-{first}-{gap_ms}"));
        let mut agent = Agent::start(&args(&lab, &session, "clsact", &[]), &[]);
        assert!(agent.wait_for("tcpviz live:", Duration::from_secs(20)), "{:?}", agent.stderr);
        let programs = programs_held_by(agent.pid());
        let server = lab.server(SERVER_V4, 5201);
        lab.send(SERVER_V4, 5201, 300_000);
        let _ = server.wait_with_output();
        agent.signal(first);
        std::thread::sleep(Duration::from_millis(gap_ms));
        agent.signal(second);
        let (status, _, stderr) = agent.finish();
        assert!(status.success(), "{what}: {status}: {stderr}");
        assert_nothing_attached(&lab, &programs, &what);
        let summary = assert_session_complete(&session, &what);
        // 300 kB are about 200 segments of 1448 bytes (GSO packets count their segments).
        let live = &summary["sections"]["live"];
        assert!(live["tcp_segments_seen_by_tc"].as_u64().unwrap() > 200, "{what}: {live}");
        assert!(live["packets_written"].as_u64().unwrap() > 0, "{what}: {live}");
    }
}

#[test]
fn a_signal_while_the_dashboards_are_drawn_ends_the_agent_at_once() {
    if !privileged() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let lab = Lab::new();
    // The agent ends by itself (--duration) or by a first signal; a signal while it draws
    // the pages (held open after the first page) skips the pages not yet drawn.
    for first_stop in ["duration", "signal"] {
        let what = format!("stopped by {first_stop}, then SIGTERM while drawing");
        let session = work.path().join(first_stop);
        let extra: &[&str] = if first_stop == "duration" { &["--duration", "0.5"] } else { &[] };
        let mut agent =
            Agent::start(&args(&lab, &session, "clsact", extra), &[("TCPVIZ_TEST_PAUSE_AT", "dashboards:800")]);
        assert!(agent.wait_for("tcpviz live:", Duration::from_secs(20)), "{:?}", agent.stderr);
        let programs = programs_held_by(agent.pid());
        if first_stop == "signal" {
            agent.signal(libc::SIGINT);
        }
        assert!(agent.wait_for("test pause: dashboards", Duration::from_secs(20)), "{what}: {:?}", agent.stderr);
        // The hooks are already gone while the pages are drawn.
        assert_nothing_attached(&lab, &programs, &what);
        agent.signal(libc::SIGTERM);
        let (status, _, stderr) = agent.finish();
        assert!(status.success(), "{what}: {status}: {stderr}");
        assert!(stderr.contains("dashboards not written") && stderr.contains("tcpviz report"), "{what}: {stderr}");
        assert!(session.join("timeline.html").is_file(), "{what}: the page drawn before the signal stays");
        assert!(!session.join("summary.html").exists() && !session.join("report.html").exists(), "{what}");
        assert_session_complete(&session, &what);
    }
}
