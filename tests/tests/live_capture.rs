//! Capture policy `troubled`: the kernel side copies only the packets of connections it saw
//! trouble on. Checked against a full tcpdump of the same interface over the same period,
//! analysed offline: the retransmissions the full capture shows must be in the agent's
//! events, on the sending side and on the receiving side, and a healthy connection next to
//! them must cost no packet records at all. The summary says from when on the lossy
//! connection was watched (`watched_since`), and that the healthy ones never were; and
//! `/metrics` counts the connections watched.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use tcpviz_privileged_tests::*;

const LOSSY_PORT: u16 = 5201;
const HEALTHY_PORT: u16 = 5202;

fn start_agent(ns: &str, iface: &str, session: &Path, metrics_addr: &str) -> Running {
    start_tcpviz([
        "live",
        "--capture",
        "troubled",
        "--iface",
        iface,
        "--netns",
        ns,
        "--out",
        session.to_str().unwrap(),
        "--metrics-addr",
        metrics_addr,
    ])
}

/// A full capture of `iface` in `ns`, as an operator would take it.
fn full_capture(lab: &Lab, ns: &str, iface: &str, path: &Path) -> Child {
    let child = lab.spawn(
        ns,
        &[
            "tcpdump",
            "-Z",
            "root",
            "-i",
            iface,
            "-s",
            "128",
            "-U",
            "--immediate-mode",
            "-w",
            path.to_str().unwrap(),
            "tcp",
        ],
    );
    std::thread::sleep(Duration::from_secs(1));
    child
}

fn parse(capture: &Path, out: &Path) -> Vec<serde_json::Value> {
    let o =
        Command::new(tcpviz_bin()).args(["parse-pcap", "--quiet"]).arg(capture).arg("--out").arg(out).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    events(out)
}

const RETRANSMISSIONS: [&str; 3] = ["retransmission", "fast_retransmission", "spurious_retransmission"];

/// (source port, sequence number, payload length) of every wire event of these kinds.
fn wire_segments(events: &[serde_json::Value], kinds: &[&str]) -> BTreeSet<(u64, u32, u32)> {
    events
        .iter()
        .filter(|e| e["origin"] == "wire" && kinds.contains(&e["event"].as_str().unwrap_or("")))
        .map(|e| (e["sport"].as_u64().unwrap(), e["seq"].as_u64().unwrap() as u32, e["len"].as_u64().unwrap() as u32))
        .collect()
}

/// Does one of `seen` hold the segment that starts at `seq`? TC egress sees a GSO packet
/// before it is cut into the segments a capture tool records: one event of the agent may
/// cover several of the full capture's.
fn covered(seen: &BTreeSet<(u64, u32, u32)>, sport: u64, seq: u32) -> bool {
    seen.iter().any(|&(p, start, len)| p == sport && seq.wrapping_sub(start) < len.max(1))
}

/// Runs a lossy and a healthy transfer with the agent and a full capture on `iface` of
/// `ns`; returns the full capture's retransmissions, the agent's events and its summary.
type Segments = BTreeSet<(u64, u32, u32)>;

fn run_side(ns_of: impl Fn(&Lab) -> (String, String)) -> Side {
    let work = tempfile::tempdir().unwrap();
    let lab = Lab::new();
    lab.offloads_off();
    lab.loss(0.01, LOSSY_PORT);
    let (ns, iface) = ns_of(&lab);
    let dump = work.path().join("full.pcap");
    let tcpdump = full_capture(&lab, &ns, &iface, &dump);
    let session = work.path().join("agent");
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let agent = start_agent(&ns, &iface, &session, &metrics_addr);
    // Healthy connections first: nothing is watched yet, and nothing of them may be copied.
    // Five, because even a clean link sometimes gives one a tail-loss probe or reordering
    // between the CPUs' backlogs (trouble, rightly watched), more so on a busy machine.
    for _ in 0..5 {
        let server = lab.server(SERVER_V4, HEALTHY_PORT);
        lab.send_on_one_cpu(SERVER_V4, HEALTHY_PORT, 1_000_000);
        let _ = server.wait_with_output();
    }
    let server = lab.server(SERVER_V4, LOSSY_PORT);
    lab.send(SERVER_V4, LOSSY_PORT, 20_000_000);
    let _ = server.wait_with_output();
    // The metrics are updated once a second; the lossy connection is watched for 30 s
    // after its last trouble.
    std::thread::sleep(Duration::from_millis(1500));
    let metrics = http_get(&metrics_addr, "/metrics").expect("agent /metrics");
    let watched = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tcpviz_watched_connections "))
        .unwrap_or_else(|| panic!("no tcpviz_watched_connections:\n{metrics}"))
        .parse()
        .unwrap();
    let tcpdump_said = String::from_utf8_lossy(&interrupt(tcpdump).stderr).into_owned();
    let (code, _, stderr) = agent.interrupt();
    assert_eq!(code, Some(0), "tcpviz live failed: {stderr}");
    // A reference that dropped packets only shows fewer retransmissions to look for.
    println!("reference capture: {}", tcpdump_said.trim().replace('\n', "; "));
    let full_events = parse(&dump, &work.path().join("full"));
    let full = wire_segments(&full_events, &RETRANSMISSIONS);
    assert!(full.len() >= 20, "too few retransmissions to judge: {}", full.len());
    // The client ports of the healthy connections that were healthy indeed: a tail-loss
    // probe, or a drop in a queue on the way, is trouble the agent rightly watches.
    let troubled: BTreeSet<u64> = full_events
        .iter()
        .filter(|e| !TRACE_OF_HEALTH.contains(&e["event"].as_str().unwrap_or("")))
        .filter_map(client_port)
        .collect();
    let full_summary = summary(&work.path().join("full"));
    let healthy = full_summary["flows"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| f["directions"].as_array().unwrap())
        .filter(|d| d["dport"] == HEALTHY_PORT)
        .filter_map(|d| d["sport"].as_u64())
        .filter(|p| !troubled.contains(p))
        .collect();
    Side { full, healthy, agent: events(&session), summary: summary(&session), watched }
}

/// Events a healthy connection has too.
const TRACE_OF_HEALTH: [&str; 2] = ["window_update", "kernel_state_change"];

/// The client's port of an event of a connection to `HEALTHY_PORT`.
fn client_port(e: &serde_json::Value) -> Option<u64> {
    if e["dport"] == HEALTHY_PORT {
        e["sport"].as_u64()
    } else if e["sport"] == HEALTHY_PORT {
        e["dport"].as_u64()
    } else {
        None
    }
}

struct Side {
    /// The full capture's retransmissions.
    full: Segments,
    /// Client ports of the connections to `HEALTHY_PORT` the full capture shows no
    /// trouble on.
    healthy: BTreeSet<u64>,
    agent: Vec<serde_json::Value>,
    summary: serde_json::Value,
    /// `tcpviz_watched_connections` on /metrics after the lossy transfer.
    watched: f64,
}

/// The agent saw a full-capture retransmission when it has a wire event for the same
/// segment that calls it out of the ordinary. A retransmission that fills a hole soon
/// after the segments past it is "out of order" to the rules when the partial view has no
/// handshake to time it against.
fn check_side(name: &str, side: &Side) {
    let Side { full, healthy, agent, summary, watched } = side;
    let side = name;
    // The lossy connection was still watched; no more were than the summary says ever were
    // (each is two entries of the kernel's map, one per direction).
    let ever_watched = (summary["flows"].as_array().unwrap().iter()).filter(|f| !f["watched_since"].is_null()).count();
    assert!(
        *watched >= 1.0 && *watched <= ever_watched as f64,
        "{side}: {watched} connections watched, {ever_watched} ever"
    );
    let mut kinds = RETRANSMISSIONS.to_vec();
    kinds.push("out_of_order");
    let seen = wire_segments(agent, &kinds);
    let caught = full.iter().filter(|&&(sport, seq, _)| covered(&seen, sport, seq)).count();
    assert!(
        caught * 10 >= full.len() * 9,
        "{side}: the agent has {caught} of the {} retransmissions of the full capture; live section: {}",
        full.len(),
        summary["sections"]["live"]
    );
    let live = &summary["sections"]["live"];
    assert_eq!(live["capture"], "troubled", "{live}");
    let marks = &live["trouble_marks"];
    assert_eq!(marks["failed"], 0, "{live}");
    // Not one packet of a connection the full capture shows no trouble on was copied (the
    // kernel's reports of its state changes still give it a flow).
    assert!(!healthy.is_empty(), "{side}: no healthy connection stayed healthy");
    for e in agent.iter().filter(|e| e["origin"] == "wire") {
        let port = client_port(e);
        assert!(
            !port.is_some_and(|p| healthy.contains(&p)),
            "{side}: a packet of a healthy connection was copied: {e}"
        );
    }
    for f in summary["flows"].as_array().unwrap() {
        let ports = f["directions"].as_array().unwrap().iter().filter_map(|d| d["sport"].as_u64()).collect::<Vec<_>>();
        if ports.iter().any(|p| healthy.contains(p)) {
            assert_eq!(f["packets"], 0, "{side}: packets of a healthy connection were copied: {f}");
            assert!(f.get("watched_since").is_none(), "{side}: a healthy connection was watched: {f}");
        }
    }
    // The wire view of the lossy connection begins at its watch start, never after its
    // first wire event.
    let lossy = lossy_flow(summary);
    let since = lossy["watched_since"].as_f64().unwrap_or_else(|| panic!("{side}: no watched_since: {lossy}"));
    let first_wire = agent
        .iter()
        .filter(|e| e["origin"] == "wire" && e["flow_id"] == lossy["flow_id"])
        .filter_map(|e| e["ts"].as_f64())
        .fold(f64::INFINITY, f64::min);
    assert!(first_wire.is_finite(), "{side}: no wire event of the lossy flow");
    assert!(since <= first_wire, "{side}: watched since {since}, first wire event at {first_wire}: {lossy}");
    let starts = lossy["watch_starts"].as_u64().unwrap_or(0);
    assert!(starts >= 1 && live["watch_starts"].as_u64().unwrap() >= starts, "{side}: {live} / {lossy}");
    println!(
        "{side}: {caught} of {} retransmissions; marks {marks}; lossy flow watched since {since} ({}, {starts} \
         starts), {:.6} s before its first wire event; {watched} of {ever_watched} connections watched at the end",
        full.len(),
        lossy["watch_reason"],
        first_wire - since
    );
}

/// The summary's flow of the lossy connection (the agent's flow ids are its own).
fn lossy_flow(summary: &serde_json::Value) -> &serde_json::Value {
    summary["flows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["directions"].as_array().unwrap().iter().any(|d| d["dport"] == LOSSY_PORT))
        .expect("the lossy flow in the summary")
}

#[test]
fn troubled_on_the_sender_catches_its_retransmissions_and_nothing_healthy() {
    if !privileged() {
        return;
    }
    let side = run_side(|lab| (lab.a.clone(), lab.veth_a.clone()));
    check_side("sender", &side);
    assert!(side.summary["sections"]["live"]["trouble_marks"]["tracepoint"].as_u64().unwrap() > 0);
    // The sender's own kernel showed the trouble first: a retransmission or Recovery.
    let reason = lossy_flow(&side.summary)["watch_reason"].as_str().unwrap();
    assert!(["tcp_retransmit_skb", "tcp_cong_state_set"].contains(&reason), "{reason}");
}

#[test]
fn troubled_on_the_receiver_is_started_by_the_sacks_it_sends() {
    if !privileged() {
        return;
    }
    let side = run_side(|lab| (lab.b.clone(), lab.veth_b.clone()));
    check_side("receiver", &side);
    // The receiver's kernel retransmits nothing: its own SACKs started the watch.
    assert!(side.summary["sections"]["live"]["trouble_marks"]["sack_sent"].as_u64().unwrap() > 0);
    assert_eq!(lossy_flow(&side.summary)["watch_reason"], "sack_sent");
}

#[test]
fn kernel_policy_attaches_no_tc_program_and_still_reports_the_kernel() {
    if !privileged() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let lab = Lab::new();
    lab.offloads_off();
    lab.loss(0.03, LOSSY_PORT);
    let session = work.path().join("agent");
    let agent = start_tcpviz(["live", "--capture", "kernel", "--netns", &lab.a, "--out", session.to_str().unwrap()]);
    let during = tc_state(&lab, &lab.a, &lab.veth_a);
    assert!(!during.contains("tcpviz"), "{during}");
    let server = lab.server(SERVER_V4, LOSSY_PORT);
    lab.send(SERVER_V4, LOSSY_PORT, 4_000_000);
    let _ = server.wait_with_output();
    let (code, _, stderr) = agent.interrupt();
    assert_eq!(code, Some(0), "{stderr}");
    let events = events(&session);
    assert!(events.iter().any(|e| e["event"] == "kernel_retransmit"));
    assert!(events.iter().all(|e| e["origin"] == "kernel"));
    let summary = summary(&session);
    assert_eq!(summary["sections"]["live"]["capture"], "kernel");
    assert_eq!(summary["sections"]["live"]["packets_seen_by_tc"], 0);
    // tcp_probe fires on every ACK; the kernel side copies one sample per socket per 100 ms
    // (or when cwnd or ssthresh changes) and leaves the rest.
    let live = &summary["sections"]["live"];
    let probes = live["kernel_events_by_tracepoint"]["tcp:tcp_probe"].as_u64().unwrap();
    let left = live["kernel_samples_left_in_kernel"].as_u64().unwrap();
    assert!(left > 0 && left < probes && live["kernel_samples_written"].as_u64().unwrap() > 0, "{live}");
    // The namespace's own counters explain the retransmissions: how many were fast, timed
    // out or tail loss probes.
    let ext = &summary["sections"]["live"]["tcp_ext"];
    let n = |k: &str| ext[k].as_u64().unwrap_or_else(|| panic!("no {k} in {ext}"));
    let kernel_retransmits = events.iter().filter(|e| e["event"] == "kernel_retransmit").count() as u64;
    let explained = n("TCPFastRetrans") + n("TCPTimeouts") + n("TCPLossProbes") + n("TCPSlowStartRetrans");
    assert!(explained > 0 && explained <= kernel_retransmits * 3, "{ext}; {kernel_retransmits} kernel retransmits");
}
