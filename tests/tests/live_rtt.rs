//! RTT from TCP timestamp echoes, measured on the wire at the sender, against the kernel's own
//! smoothed RTT of the same socket (`tcp:tcp_probe`), through a router whose `tbf` rate limit
//! builds real queueing delay: the two estimators see the same queue, so their medians agree.

use std::fs;
use std::path::Path;

use tcpviz_privileged_tests::*;

const PORT: u16 = 5401;

/// The median over time of the kernel's srtt of the socket that sent to `port`, in ms: each
/// sample holds until the next. The kernel side copies a sample every 100 ms or when cwnd
/// changes, which it does most while the queue grows, so a plain median of the samples
/// would weigh that phase more than the wire's estimators do.
fn kernel_srtt_median_ms(session: &Path, port: u16) -> (f64, usize) {
    let text = fs::read_to_string(session.join("kernel_samples.jsonl")).expect("kernel_samples.jsonl");
    let samples: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|s| s["dport"] == port && s["srtt_us"].as_f64().is_some_and(|us| us > 0.0))
        .map(|s| (s["ts"].as_f64().unwrap(), s["srtt_us"].as_f64().unwrap() / 1000.0))
        .collect();
    assert!(samples.len() >= 10, "too few kernel srtt samples: {}", samples.len());
    let mut held: Vec<(f64, f64)> = samples.windows(2).map(|w| (w[0].1, w[1].0 - w[0].0)).collect();
    held.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total: f64 = held.iter().map(|h| h.1).sum();
    let mut so_far = 0.0;
    for (srtt, time) in &held {
        so_far += time;
        if so_far >= total / 2.0 {
            return (*srtt, samples.len());
        }
    }
    unreachable!("the held times add up to their total")
}

#[test]
fn timestamp_rtt_agrees_with_the_kernels_srtt_through_a_queue() {
    if !privileged() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let session = work.path().join("rtt");
    let lab = Lab::new();
    lab.offloads_off();
    lab.rate_limit(20);
    let agent = start_tcpviz(lab.live_args(&["--out", session.to_str().unwrap()]));
    let server = lab.server(SERVER_V4, PORT);
    // 4 s at 20 Mbit/s: the sender fills the router's queue, and the RTT grows from well
    // under a millisecond to tens of milliseconds.
    lab.send(SERVER_V4, PORT, 10_000_000);
    let _ = server.wait_with_output();
    let (code, _, stderr) = agent.interrupt();
    assert_eq!(code, Some(0), "{stderr}");

    let summary = summary(&session);
    let data = summary["flows"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| f["directions"].as_array().unwrap())
        .find(|d| d["dport"] == PORT)
        .expect("the data direction in summary.json")
        .clone();
    let by_timestamps = &data["rtt_timestamps"];
    let samples = by_timestamps["samples"].as_u64().unwrap_or(0);
    assert!(samples >= 50, "too few timestamp RTT samples: {data}");
    let wire = by_timestamps["median_ms"].as_f64().unwrap();
    let (kernel, kernel_samples) = kernel_srtt_median_ms(&session, PORT);
    // The queue must have been real, or the comparison says nothing.
    assert!(kernel > 5.0, "no queueing delay: kernel srtt median {kernel} ms");
    let ratio = wire / kernel;
    eprintln!(
        "timestamp RTT median {wire:.2} ms ({samples} samples), ACK RTT median {}, kernel srtt median {kernel:.2} ms",
        data["rtt"]["median_ms"]
    );

    assert!(
        (0.8..=1.2).contains(&ratio),
        "timestamp RTT median {wire:.2} ms vs kernel srtt median {kernel:.2} ms over {kernel_samples} samples \
         (ratio {ratio:.2}); {data}"
    );
}
