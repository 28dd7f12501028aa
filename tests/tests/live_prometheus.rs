//! `/metrics` scraped by a real Prometheus server (Debian's `prometheus`, installed by
//! `cargo xtask setup`) during a lossy transfer: the retransmission counters Prometheus
//! stored must be the agent's own, at that scrape and in its summary, within one scrape's
//! difference; and `promtool check metrics` must accept the agent's output.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tcpviz_privileged_tests::*;

const PORT: u16 = 5231;
/// The counters compared: the kernel's own retransmissions, and those seen on the wire.
const KERNEL: &str = r#"tcpviz_events_total{kind="kernel_retransmit"}"#;
const WIRE: &str = r#"sum(tcpviz_events_total{kind=~"retransmission|fast_retransmission|spurious_retransmission"})"#;
const WIRE_KINDS: [&str; 3] = ["retransmission", "fast_retransmission", "spurious_retransmission"];

/// Percent-encodes a query string value.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus server, killed when dropped (also when the test panics).
struct Prometheus {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts one that scrapes `target` every second, and waits until it is ready.
    fn start(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: tcpviz\n    \
                 static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(dir.path().join("prometheus.log")).unwrap()))
            .spawn()
            .expect("prometheus (Debian package `prometheus`; `cargo xtask setup` installs it)");
        let p = Prometheus { child, addr, _dir: dir };
        let start = Instant::now();
        while http_get(&p.addr, "/-/ready").is_none() {
            assert!(start.elapsed() < Duration::from_secs(60), "prometheus not ready: {}", p.log());
            std::thread::sleep(Duration::from_millis(200));
        }
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The instant vector of `query`: (sample time in seconds, value) of each series.
    fn query(&self, query: &str) -> Vec<(f64, f64)> {
        let body = http_get(&self.addr, &format!("/api/v1/query?query={}", encode(query))).expect("query answered");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "{body}");
        v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["value"][0].as_f64().unwrap(), r["value"][1].as_str().unwrap().parse().unwrap()))
            .collect()
    }

    /// The single value of `query`, None while it has none.
    fn value(&self, query: &str) -> Option<f64> {
        self.query(query).first().map(|s| s.1)
    }

    /// The samples of `metric` stored over the last `secs` seconds, oldest first.
    fn samples(&self, metric: &str, secs: u32) -> Vec<f64> {
        let body = http_get(&self.addr, &format!("/api/v1/query?query={}", encode(&format!("{metric}[{secs}s]"))))
            .expect("query answered");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["data"]["result"][0]["values"]
            .as_array()
            .map(|a| a.iter().map(|s| s[1].as_str().unwrap().parse().unwrap()).collect())
            .unwrap_or_default()
    }

    /// Waits for a scrape that started after now, and returns the agent's series then.
    fn next_scrape(&self) -> f64 {
        let after = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        let start = Instant::now();
        loop {
            if let Some(ts) = self.value(r#"timestamp(up{job="tcpviz"})"#)
                && ts > after
            {
                return ts;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "no scrape after {after}: {}", self.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The value of one sample line of the agent's text output, summed over `kinds`.
fn agent_value(metrics: &str, kinds: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| kinds.iter().any(|k| l.starts_with(&format!("tcpviz_events_total{{kind=\"{k}\"}} "))))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

fn promtool_check(metrics: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package `prometheus`)");
    child.stdin.take().unwrap().write_all(metrics.as_bytes()).unwrap();
    let o = child.wait_with_output().unwrap();
    (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

fn summary_count(session: &Path, kinds: &[&str]) -> f64 {
    let s = summary(session);
    kinds.iter().map(|k| s["totals"]["events"][k].as_u64().unwrap_or(0) as f64).sum()
}

#[test]
fn prometheus_stores_what_the_agent_counts() {
    if !privileged() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let session = work.path().join("session");
    let lab = Lab::new();
    lab.offloads_off();
    lab.loss(0.02, PORT);
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let agent = start_tcpviz(lab.live_args(&["--out", session.to_str().unwrap(), "--metrics-addr", &metrics_addr]));
    let prom = Prometheus::start(&metrics_addr);
    prom.next_scrape();
    assert_eq!(prom.value(r#"up{job="tcpviz"}"#), Some(1.0), "the agent is not scraped: {}", prom.log());

    let server = lab.server(SERVER_V4, PORT);
    lab.send(SERVER_V4, PORT, 8_000_000);
    let _ = server.wait_with_output();
    // The agent updates its metrics once a second; let its counts settle.
    std::thread::sleep(Duration::from_secs(2));
    let before = http_get(&metrics_addr, "/metrics").expect("agent /metrics");
    prom.next_scrape();
    let after = http_get(&metrics_addr, "/metrics").expect("agent /metrics");

    // What Prometheus stored lies between the agent's counts just before and just after.
    let stored_kernel = prom.value(KERNEL).expect("kernel retransmissions stored");
    let stored_wire = prom.value(WIRE).expect("wire retransmissions stored");
    let (kernel_before, kernel_after) =
        (agent_value(&before, &["kernel_retransmit"]), agent_value(&after, &["kernel_retransmit"]));
    let (wire_before, wire_after) = (agent_value(&before, &WIRE_KINDS), agent_value(&after, &WIRE_KINDS));
    assert!(stored_kernel > 0.0 && stored_wire > 0.0, "a 2% loss gave no retransmissions: {after}");
    assert!((kernel_before..=kernel_after).contains(&stored_kernel), "{kernel_before} {stored_kernel} {kernel_after}");
    assert!((wire_before..=wire_after).contains(&stored_wire), "{wire_before} {stored_wire} {wire_after}");
    // One scrape's difference: how much the counter moved between the last two scrapes.
    let kernel_series = prom.samples(KERNEL, 5);
    let step = match kernel_series.as_slice() {
        [.., a, b] => b - a,
        _ => panic!("fewer than two scrapes stored: {kernel_series:?}"),
    };

    eprintln!("stored: kernel {stored_kernel}, wire {stored_wire}; one scrape's step {step}");
    let (promtool_ok, promtool_out) = promtool_check(&after);
    let (code, _, stderr) = agent.interrupt();
    assert_eq!(code, Some(0), "tcpviz live failed: {stderr}");
    drop(prom);
    assert!(promtool_ok, "promtool check metrics: {promtool_out}\n{after}");

    // The agent's own summary agrees with what Prometheus stored.
    let summary_kernel = summary_count(&session, &["kernel_retransmit"]);
    let summary_wire = summary_count(&session, &WIRE_KINDS);
    assert!(
        (summary_kernel - stored_kernel).abs() <= step.max(0.0),
        "summary {summary_kernel}, stored {stored_kernel}, one scrape's step {step}"
    );
    assert!(
        (summary_wire - stored_wire).abs() <= step.max(0.0).max(wire_after - wire_before),
        "summary {summary_wire}, stored {stored_wire}"
    );
    // The families an operator's dashboards use are there, and bounded.
    for name in [
        "tcpviz_packets_total ",
        "tcpviz_lost_events_total{",
        "tcpviz_alerts_total ",
        "tcpviz_flows_active ",
        "tcpviz_interface_packets_total{",
        "tcpviz_hooks{",
        "tcpviz_kernel_tcp_ext_total{",
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
    ] {
        assert!(after.contains(&format!("\n{name}")), "{name} missing:\n{after}");
    }
    // The namespace's own count of fast retransmissions grew under the loss.
    let fast = after
        .lines()
        .find_map(|l| l.strip_prefix("tcpviz_kernel_tcp_ext_total{counter=\"TCPFastRetrans\"} "))
        .expect("TCPFastRetrans among the TcpExt counters");
    assert!(fast.parse::<f64>().unwrap() > 0.0, "{after}");
    // Segments, not packet records: the sending stack may still hand TC large GSO packets.
    let iface_line = format!("tcpviz_interface_tcp_segments_total{{iface=\"{}\"}} ", lab.veth_a);
    let iface_segments = after.lines().find_map(|l| l.strip_prefix(&iface_line)).expect("the interface's segments");
    assert!(iface_segments.parse::<f64>().unwrap() > 1000.0, "{after}");
    assert!(after.contains(&format!("\ntcpviz_interface_packets_total{{iface=\"{}\"}} ", lab.veth_a)));
    for ring in ["packets", "kernel_events"] {
        let line = format!("tcpviz_ring_fill_ratio{{ring=\"{ring}\"}} ");
        let fill: f64 = after.lines().find_map(|l| l.strip_prefix(&line)).expect("ring fill").parse().unwrap();
        assert!((0.0..=1.0).contains(&fill), "{ring} fill {fill}");
    }
    let flow_series = after.lines().filter(|l| l.starts_with("tcpviz_flow_events_total{")).count();
    assert!(flow_series <= 20 * 25, "{flow_series} per-flow series");
}
