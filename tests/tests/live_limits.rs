//! Why is this connection slow: four lab transfers, each held back by something else, and
//! the live agent must name what held each one (`limited_by` in summary.json).

use tcpviz_privileged_tests::*;

#[test]
fn a_slow_reader_loss_a_paced_application_and_a_bottleneck_are_told_apart() {
    if !privileged() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let session = work.path().join("live");
    let lab = Lab::new();
    lab.offloads_off();
    // Port 5301: a reader that takes 4 KiB every 10 ms through a small receive buffer.
    // Port 5302: 8 % of the data segments dropped in the router.
    // Port 5303: an application that writes 1,000 bytes every 20 ms.
    // Port 5304, last: a bulk transfer through a 20 Mbit/s bottleneck (tbf in the router).
    lab.loss(0.08, 5302);
    let session_arg = session.display().to_string();
    let live = start_tcpviz(lab.live_args(&["--out", &session_arg]));
    let slow = lab.slow_server(SERVER_V4, 5301, 16_384, 4096, 10);
    lab.send(SERVER_V4, 5301, 400_000);
    let lossy = lab.server(SERVER_V4, 5302);
    lab.send(SERVER_V4, 5302, 3_000_000);
    let paced = lab.server(SERVER_V4, 5303);
    lab.send_bursts(SERVER_V4, 5303, 50, 1000, 20);
    for s in [slow, lossy, paced] {
        let _ = s.wait_with_output();
    }
    lab.rate_limit(20);
    let bottleneck = lab.server(SERVER_V4, 5304);
    lab.send(SERVER_V4, 5304, 2_000_000);
    let _ = bottleneck.wait_with_output();
    let (code, _, stderr) = live.interrupt();
    assert_eq!(code, Some(0), "tcpviz live failed: {stderr}");

    let summary = summary(&session);
    let flows = summary["flows"].as_array().unwrap();
    let limits = |port: u64| -> serde_json::Value {
        let f = flows
            .iter()
            .find(|f| f["directions"][0]["dport"] == port)
            .unwrap_or_else(|| panic!("no flow to port {port}: {summary}"));
        f["directions"][0]["limited_by"].clone()
    };
    let dominant = |l: &serde_json::Value| -> String {
        ["receiver_window", "congestion_window", "loss_recovery", "application"]
            .into_iter()
            .max_by(|a, b| l[a].as_f64().unwrap().total_cmp(&l[b].as_f64().unwrap()))
            .unwrap()
            .to_string()
    };
    let (slow, lossy, paced, bottleneck) = (limits(5301), limits(5302), limits(5303), limits(5304));
    eprintln!("slow reader: {slow}\nloss: {lossy}\npaced: {paced}\nbottleneck: {bottleneck}");
    assert_eq!(dominant(&slow), "receiver_window", "slow reader: {slow}");
    assert_eq!(dominant(&lossy), "loss_recovery", "loss: {lossy}");
    assert_eq!(dominant(&paced), "application", "paced: {paced}");
    assert_eq!(dominant(&bottleneck), "congestion_window", "bottleneck: {bottleneck}");
    // The kernel's cwnd came with its segment size, in bytes of the window.
    let samples = std::fs::read_to_string(session.join("kernel_samples.jsonl")).unwrap();
    assert!(samples.lines().any(|l| l.contains("\"mss\":1448")), "{}", &samples[..samples.len().min(2000)]);
    // The table names them too.
    let table = std::process::Command::new(tcpviz_bin()).arg("summary").arg("--in").arg(&session).output().unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    for label in ["rwnd ", "loss ", "app "] {
        assert!(table.contains(label), "{label}: {table}");
    }
}
