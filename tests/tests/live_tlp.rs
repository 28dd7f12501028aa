//! Tail-loss probes seen on the wire against the kernel's own count of the probes it sent
//! (`TcpExt.TCPLossProbes` of the client's namespace, which the live section reports as a
//! delta over the run). An application writes bursts of eight segments, 250 ms apart, and
//! the router drops every second segment Linux marks with PSH (the last of a write, and its
//! retransmissions): every second burst loses its last segment, and the retransmission
//! that follows gets through. Each such loss leaves a tail no ACK answers, which the sender
//! probes:
//! at about its RTO (200 ms) when one segment is outstanding, after 2 x SRTT when two are
//! (the receiver delaying its ACK of the odd segment before the lost one). Random drops
//! would also drop probes, and a chain of backed-off timeouts could outlast the test.

use tcpviz_privileged_tests::*;

const PORT: u16 = 5501;

#[test]
fn tail_loss_probes_on_the_wire_agree_with_the_kernels_count() {
    if !privileged() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let session = work.path().join("tlp");
    let lab = Lab::new();
    lab.offloads_off();
    for tool in ["iptables", "ip6tables"] {
        lab.exec(
            &lab.r,
            &format!(
                "{tool} -A FORWARD -p tcp --dport {PORT} --tcp-flags PSH PSH -m length --length 1000:65535 \
                 -m statistic --mode nth --every 2 --packet 0 -j DROP"
            ),
        );
    }
    let agent = start_tcpviz(lab.live_args(&["--out", session.to_str().unwrap()]));
    let server = lab.server(SERVER_V4, PORT);
    // 100 bursts of 8 full segments, 250 ms apart: 25 s, some 50 probes.
    lab.send_bursts(SERVER_V4, PORT, 100, 8 * 1448, 250);
    let _ = server.wait_with_output();
    let (code, _, stderr) = agent.interrupt();
    assert_eq!(code, Some(0), "{stderr}");

    let summary = summary(&session);
    let live = &summary["sections"]["live"];
    let kernel = live["tcp_ext"]["TCPLossProbes"].as_u64().expect("TCPLossProbes in the live section");
    let probes: Vec<serde_json::Value> =
        events(&session).into_iter().filter(|e| e["event"] == "tail_loss_probe" && e["dport"] == PORT).collect();
    let by_reason = |r: &str| probes.iter().filter(|e| e["extra"]["reason"] == r).count();
    eprintln!(
        "kernel: {kernel} probes; wire: {} ({} of the last segment, {} of new data); tcp_ext {}",
        probes.len(),
        by_reason("probe_last_segment"),
        by_reason("probe_new_data"),
        live["tcp_ext"]
    );
    assert!(kernel >= 20, "too few probes to judge: {}", live["tcp_ext"]);
    let wire = probes.len() as u64;
    assert!(
        wire.abs_diff(kernel) * 10 <= kernel,
        "{wire} tail-loss probes on the wire, {kernel} by the kernel's count; tcp_ext {}",
        live["tcp_ext"]
    );
    // A probe is information, not an alarm: no probe event is above INFO.
    assert!(probes.iter().all(|e| e["severity"] == "INFO"));
    // The readings every 2 s during the 25 s run: spread over it, and adding up to the
    // run's growth.
    let during = live["tcp_ext_during"].as_array().expect("TcpExt readings during the run");
    let during_probes: u64 = during.iter().filter_map(|r| r["grown"]["TCPLossProbes"].as_u64()).sum();
    assert_eq!(during_probes, kernel, "{during:?}");
    assert!(during.len() >= 5, "{} readings with growth in a 25 s run: {during:?}", during.len());
    let report = std::process::Command::new(tcpviz_bin()).arg("report").arg("--in").arg(&session).output().unwrap();
    assert!(report.status.success(), "{}", String::from_utf8_lossy(&report.stderr));
    let html = std::fs::read_to_string(session.join("report.html")).unwrap();
    assert!(html.contains("tcp-ext-during") && html.contains("TCPLossProbes"), "the report draws them");
}
