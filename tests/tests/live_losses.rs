//! Kernel-side losses beyond a full ring: runs of a program the kernel skipped because
//! another BPF program was running on that CPU (`recursion_misses` in bpftool). Parallel
//! lossy streams make the kernel skip some tracepoint runs (measured here: 50 to 150 in two
//! seconds of four iperf3 streams with 2 % loss); each must be counted with the losses.

use std::io::{Read, Write};
use std::time::Duration;

use tcpviz_privileged_tests::*;

/// `recursion_misses` by program name, from bpftool, for these program ids.
fn bpftool_misses(ids: &[u32]) -> Vec<(String, u64)> {
    let o = std::process::Command::new("bpftool").args(["prog", "show", "-j"]).output().unwrap();
    let progs: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    progs
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["id"].as_u64().is_some_and(|id| ids.contains(&(id as u32))))
        .map(|p| (p["name"].as_str().unwrap().to_string(), p["recursion_misses"].as_u64().unwrap_or(0)))
        .collect()
}

fn metrics(addr: &str) -> String {
    let mut c = std::net::TcpStream::connect(addr).expect("metrics endpoint");
    c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut s = String::new();
    let _ = c.read_to_string(&mut s);
    s
}

fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

#[test]
fn runs_the_kernel_skipped_are_counted_with_the_losses() {
    if !privileged() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let session = work.path().join("live");
    let lab = Lab::new();
    lab.loss(0.02, 5201);
    let addr = "127.0.0.1:19466";
    let mut agent = Agent::start(&lab.live_args(&["--metrics-addr", addr, "--out", session.to_str().unwrap()]), &[]);
    assert!(agent.wait_for("tcpviz live:", Duration::from_secs(20)), "{:?}", agent.stderr);
    let programs = programs_held_by(agent.pid());
    let server = lab.spawn(&lab.b, &["iperf3", "-s", "-1"]);
    std::thread::sleep(Duration::from_millis(300));
    lab.exec(&lab.a, &format!("iperf3 -c {SERVER_V4} -t 2 -P 4 > /dev/null"));
    let _ = server.wait_with_output();
    // The kernel's own count, read while the agent runs (it only grows), and the agent's
    // metrics once they have been refreshed after it.
    let kernel = bpftool_misses(&programs);
    let kernel_tracepoints: u64 = kernel.iter().filter(|(name, _)| !name.ends_with("gress")).map(|(_, n)| n).sum();
    assert!(kernel_tracepoints > 0, "the kernel skipped no tracepoint run this time: {kernel:?}");
    std::thread::sleep(Duration::from_millis(1200));
    let text = metrics(addr);
    let stderr = agent.stop();

    let summary = summary(&session);
    let live = &summary["sections"]["live"];
    let by_program = &live["recursion_misses_by_program"];
    for (name, n) in &kernel {
        assert!(by_program[name].as_u64().unwrap() >= *n, "{name}: bpftool said {n}, the summary {}", by_program[name]);
    }
    let tc_misses = by_program["tcpviz_ingress"].as_u64().unwrap() + by_program["tcpviz_egress"].as_u64().unwrap();
    let all_misses: u64 = by_program.as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    let causes = &live["lost_by_cause"];
    let events = &causes["kernel_events"];
    assert_eq!(events["recursion"].as_u64().unwrap(), all_misses - tc_misses);
    assert_eq!(causes["packets"]["recursion"].as_u64().unwrap(), tc_misses);
    let n = |v: &serde_json::Value| v.as_u64().unwrap();
    assert_eq!(
        n(&live["kernel_events_lost"]),
        n(&events["ring_full"]) + n(&events["recursion"]) + n(&events["unreadable"])
    );
    assert!(n(&events["recursion"]) >= kernel_tracepoints);
    assert_eq!(n(&live["lost_events"]), n(&live["kernel_events_lost"]) + n(&live["packets_lost"]));
    assert!(stderr.contains("runs the kernel skipped"), "{stderr}");

    // The metrics count them too, by cause and by program.
    let served = metric(&text, "tcpviz_lost_events_total{ring=\"kernel_events\",cause=\"recursion\"}");
    assert!(served >= kernel_tracepoints && served <= n(&events["recursion"]), "{text}");
    for (name, n) in &kernel {
        assert!(metric(&text, &format!("tcpviz_program_recursion_misses_total{{program=\"{name}\"}}")) >= *n);
    }
    // So do the benchmark log and the report.
    let bench = std::fs::read_to_string(session.join("benchmark.log")).unwrap();
    assert!(bench.contains(&format!("lost.kernel_events.recursion: {}", n(&events["recursion"]))), "{bench}");
    let report = std::fs::read_to_string(session.join("report.html")).unwrap();
    assert!(report.contains("lost in the kernel") && report.contains("the kernel skipped"), "report.html");
}
