//! `/metrics` in the Prometheus text format (`--metrics-addr`): counters of events by kind,
//! packets, lost events and alerts, and per-flow event counters for at most `TOP_FLOWS`
//! flows (the most troubled active ones), so the series count stays bounded.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::KernelLosses;
use crate::event::EventKind;
use crate::output::alerting::AlertingSink;
use crate::output::summary::endpoint;
use crate::pipeline::Pipeline;

pub const TOP_FLOWS: usize = 20;

#[derive(Clone, Default)]
pub struct Metrics {
    text: Arc<Mutex<String>>,
}

impl Metrics {
    /// Renders the current counters (called about once a second).
    pub fn update(&self, pipeline: &Pipeline, sink: &AlertingSink, losses: &KernelLosses) {
        let c = &pipeline.counters;
        let mut s = String::new();
        let _ = writeln!(s, "# HELP tcpviz_packets_total Packets analysed.\n# TYPE tcpviz_packets_total counter");
        let _ = writeln!(s, "tcpviz_packets_total {}", c.packets);
        let _ = writeln!(s, "# HELP tcpviz_events_total Events found, by kind.\n# TYPE tcpviz_events_total counter");
        for k in EventKind::ALL {
            let _ = writeln!(s, "tcpviz_events_total{{kind=\"{k}\"}} {}", c.events[k.index()]);
        }
        let _ = writeln!(
            s,
            "# HELP tcpviz_lost_events_total Records the kernel side lost, by stream and cause: ring_full (the ring \
             buffer was full), recursion (the kernel skipped the program: another BPF program was running on that \
             CPU), unreadable (a tracepoint record that could not be copied)."
        );
        let _ = writeln!(s, "# TYPE tcpviz_lost_events_total counter");
        for (ring, cause, n) in [
            ("packets", "ring_full", losses.packets_ring_full),
            ("packets", "recursion", losses.packets_recursion),
            ("kernel_events", "ring_full", losses.events_ring_full),
            ("kernel_events", "recursion", losses.events_recursion),
            ("kernel_events", "unreadable", losses.events_unreadable),
        ] {
            let _ = writeln!(s, "tcpviz_lost_events_total{{ring=\"{ring}\",cause=\"{cause}\"}} {n}");
        }
        let _ = writeln!(
            s,
            "# HELP tcpviz_program_recursion_misses_total Runs of each tcpviz program the kernel skipped \
             (bpftool's recursion_misses).\n# TYPE tcpviz_program_recursion_misses_total counter"
        );
        for (program, n) in &losses.recursion_by_program {
            let _ = writeln!(s, "tcpviz_program_recursion_misses_total{{program=\"{program}\"}} {n}");
        }
        let _ =
            writeln!(s, "# HELP tcpviz_alerts_total Alert level changes raised.\n# TYPE tcpviz_alerts_total counter");
        let _ = writeln!(s, "tcpviz_alerts_total {}", sink.engine.raised);
        let _ = writeln!(
            s,
            "# HELP tcpviz_alerts_active Flows and kinds at WARN or CRITICAL.\n# TYPE tcpviz_alerts_active gauge"
        );
        let _ = writeln!(s, "tcpviz_alerts_active {}", sink.engine.active());
        let _ = writeln!(s, "# HELP tcpviz_flows_active Connections tracked.\n# TYPE tcpviz_flows_active gauge");
        let _ = writeln!(s, "tcpviz_flows_active {}", pipeline.analyzer().flows_active());
        let mut flows: Vec<_> = pipeline.analyzer().active_flows().filter(|f| f.trouble_score() > 0).collect();
        flows.sort_by_key(|f| std::cmp::Reverse(f.trouble_score()));
        let _ = writeln!(
            s,
            "# HELP tcpviz_flow_events_total Events of the {TOP_FLOWS} most troubled active flows, by kind.\n# TYPE tcpviz_flow_events_total counter"
        );
        for f in flows.into_iter().take(TOP_FLOWS) {
            let label = format!(
                "{} -> {}",
                endpoint(f.endpoints[0].0, f.endpoints[0].1),
                endpoint(f.endpoints[1].0, f.endpoints[1].1)
            );
            for k in EventKind::ALL {
                let n: u32 = f.dirs.iter().map(|d| d.stats.events.get(k)).sum();
                if n > 0 {
                    let _ = writeln!(
                        s,
                        "tcpviz_flow_events_total{{flow_id=\"{}\",flow=\"{label}\",kind=\"{k}\"}} {n}",
                        f.id
                    );
                }
            }
        }
        if let Ok(mut t) = self.text.lock() {
            *t = s;
        }
    }

    pub fn render(&self) -> String {
        self.text.lock().map(|t| t.clone()).unwrap_or_default()
    }
}

/// Serves the metrics until the runtime ends.
pub async fn serve(addr: SocketAddr, metrics: Metrics) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else { continue };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let n = conn.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]);
                let path = request.split_whitespace().nth(1).unwrap_or("");
                let response = if path == "/metrics" {
                    let body = metrics.render();
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
                };
                let _ = conn.write_all(response.as_bytes()).await;
            });
        }
    });
    Ok(())
}
