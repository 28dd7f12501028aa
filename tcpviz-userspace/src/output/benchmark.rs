//! `benchmark.log`: what a run read, how fast, and what it skipped, as `key: value` lines.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// Figures of one run.
#[derive(Debug, Clone, Default)]
pub struct RunFigures {
    pub sources: Vec<String>,
    pub packets: u64,
    pub tcp_segments: u64,
    pub bytes: u64,
    pub wall_seconds: f64,
    pub skipped: BTreeMap<String, u64>,
    pub events: BTreeMap<String, u64>,
    pub flows: u64,
    /// Further lines (lost events, per-hook counts, ...).
    pub extra: BTreeMap<String, String>,
}

impl RunFigures {
    pub fn render(&self) -> String {
        let mut s = String::new();
        let secs = self.wall_seconds.max(1e-9);
        let _ = writeln!(s, "tool: tcpviz {}", env!("CARGO_PKG_VERSION"));
        let _ = writeln!(s, "source: {}", self.sources.join(", "));
        let _ = writeln!(s, "packets: {}", self.packets);
        let _ = writeln!(s, "tcp_segments: {}", self.tcp_segments);
        let _ = writeln!(s, "bytes: {}", self.bytes);
        let _ = writeln!(s, "wall_seconds: {:.6}", self.wall_seconds);
        let _ = writeln!(s, "packets_per_second: {:.0}", self.packets as f64 / secs);
        let _ = writeln!(s, "mb_per_second: {:.1}", self.bytes as f64 / 1e6 / secs);
        if let Some(rss) = peak_rss_bytes() {
            let _ = writeln!(s, "peak_rss_mib: {:.1}", rss as f64 / (1024.0 * 1024.0));
        }
        let _ = writeln!(s, "flows: {}", self.flows);
        let _ = writeln!(s, "skipped_total: {}", self.skipped.values().sum::<u64>());
        for (k, v) in &self.skipped {
            let _ = writeln!(s, "skipped.{k}: {v}");
        }
        let _ = writeln!(s, "events_total: {}", self.events.values().sum::<u64>());
        for (k, v) in &self.events {
            let _ = writeln!(s, "events.{k}: {v}");
        }
        for (k, v) in &self.extra {
            let _ = writeln!(s, "{k}: {v}");
        }
        s
    }

    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        crate::output::record_file::write_whole(path, self.render().as_bytes())
    }
}

/// Peak resident memory of this process (Linux `VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
