//! The command line: what each command takes (clap).

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, Parser, Subcommand};
use tcpviz::flow::table::FlowLimits;

#[derive(Parser, Debug)]
#[command(
    name = "tcpviz",
    version,
    about = "Find TCP trouble: retransmissions, loss, reordering, stalls, zero windows"
)]
pub struct Cli {
    /// More logging (-v debug, -vv trace, which with `live` also turns on the kernel
    /// programs' diagnostics: why a connection became watched, full rings, failed copies).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Log lines as text, or as JSON objects (one a line) for a log shipper or journald.
    #[arg(long, value_enum, default_value = "text", global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Analyse pcap/pcapng files and write a session folder.
    ParsePcap(ParsePcapArgs),
    /// Print the per-flow table of a session, sorted by trouble, and write summary.html.
    Summary(SummaryArgs),
    /// Follow a capture that is being written (a growing file, a symlink a capture tool
    /// re-points, or a glob of ring files), with sliding-window alerts.
    #[command(visible_alias = "monitor")]
    Follow(FollowArgs),
    /// Live agent (root): eBPF on an interface's traffic (TC) and the kernel's TCP
    /// tracepoints, with sliding-window alerts; writes a session with capture.pcapng.
    /// Linux only.
    #[cfg(target_os = "linux")]
    Live(LiveArgs),
    /// Write timeline.html: anomalies over time, one row per flow.
    Plot(PageArgs),
    /// Write report.html: overview, and graphs of the worst flows.
    Report(PageArgs),
    /// Write all three pages of a session: report.html, timeline.html and summary.html.
    Dashboards(PageArgs),
    /// Write the manual pages and the bash, zsh and fish completions into a folder (for
    /// packagers: `cargo xtask package` runs it).
    #[command(hide = true)]
    GenerateAssets {
        /// Folder to write `man/` and `completions/` into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[cfg(target_os = "linux")]
#[derive(Args, Debug)]
pub struct LiveArgs {
    /// Read the settings from this TOML file (e.g. /etc/tcpviz/agent.toml): keys are the
    /// long flag names (`iface = ["eth0"]`, `metrics-addr = "127.0.0.1:9464"`); flags and
    /// TCPVIZ_* variables override the file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Interface whose TCP packets are analysed (TC ingress and egress); repeat the flag for
    /// several, or give `all` for every interface of the namespace, including those created
    /// while the agent runs.
    #[arg(long, value_name = "IF")]
    pub iface: Vec<String>,
    /// Network namespace of the interface (as `ip netns` names it); kernel events are then
    /// limited to sockets of that namespace.
    #[arg(long, value_name = "NAME")]
    pub netns: Option<String>,
    /// Stop after this many seconds (default: until Ctrl-C or SIGTERM).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Session folder to write (default: a new artifacts/session_YYYYmmdd_HHMMSS/).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub alerts: AlertArgs,
    #[command(flatten)]
    pub rotation: RotationArgs,
    /// `-`: the events and alerts also as JSON lines on standard output (one object a
    /// line, `"record": "event"` or `"alert"`), for Vector, Fluent Bit or journald; the
    /// alert lines and the final table then go to standard error. The session's files are
    /// written as always.
    #[arg(long, value_name = "-", value_parser = ["-"])]
    pub events: Option<String>,
    /// A full-screen terminal view instead of the alert lines: connections worst first,
    /// alerts, a detail per connection (keys: q quit, / filter, s sort, Enter detail, p pause).
    #[arg(long)]
    pub tui: bool,
    /// Take the wire packets from a capture that dumpcap or tcpdump is writing (as
    /// `follow` follows it) instead of the TC snapshots.
    #[arg(long, value_name = "PATH")]
    pub pcap_path: Option<String>,
    /// How to attach to the interface: tcx (Linux 6.6+), clsact, or auto (tcx, else clsact).
    #[arg(long, value_enum, default_value = "auto")]
    pub tc_mode: TcModeArg,
    /// Keep only packets to or from these TCP ports (up to 8; repeat the flag).
    #[arg(long = "port", value_name = "PORT")]
    pub ports: Vec<u16>,
    /// Keep only packets to or from these IPv4 addresses (up to 8).
    #[arg(long = "addr", value_name = "IPV4")]
    pub addrs: Vec<std::net::Ipv4Addr>,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Which packets the TC programs copy: troubled (only connections the kernel showed
    /// trouble on: a retransmission, Recovery or Loss, a reset, SACK blocks or a zero window
    /// this host sends; the cheapest way to keep it running), all (every TCP packet), or
    /// kernel (no TC program, the kernel's TCP events only).
    #[arg(long, value_enum, default_value = "troubled")]
    pub capture: CaptureArg,
    /// With --capture troubled: seconds a connection stays watched after its last trouble.
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    pub watch_secs: f64,
    /// With --capture troubled: most connections watched at once (the least recently
    /// troubled give way).
    #[arg(long, default_value_t = 65536, value_name = "N")]
    pub max_watched: u32,
    /// Size of the packet ring buffer in MiB (a power of two).
    #[arg(long, default_value_t = 8)]
    pub ring_mb: u32,
    /// Size of the packet ring buffer in bytes (overrides --ring-mb; for tests).
    #[cfg(feature = "test-hooks")]
    #[arg(long, hide = true)]
    pub ring_bytes: Option<u32>,
    /// Remove what a tcpviz that could not detach (killed with SIGKILL) left attached, then
    /// exit: on --iface IF, or on every interface of the namespace (--iface all, the default).
    #[arg(long)]
    pub cleanup: bool,
    #[command(flatten)]
    pub limits: LimitArgs,
}

#[cfg(target_os = "linux")]
#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum CaptureArg {
    Troubled,
    All,
    Kernel,
}

#[cfg(target_os = "linux")]
#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum TcModeArg {
    Auto,
    Tcx,
    Clsact,
}

#[derive(Args, Debug)]
pub struct FollowArgs {
    /// The capture: a file, a symlink, or a quoted glob of ring files ('/var/cap/ring_*').
    #[arg(long, value_name = "PATH")]
    pub pcap_path: String,
    #[command(flatten)]
    pub alerts: AlertArgs,
    #[command(flatten)]
    pub rotation: RotationArgs,
    /// Seconds between checks when no file-change notification arrives.
    #[arg(long, env = "TCPVIZ_POLL_INTERVAL", default_value_t = 2.0)]
    pub poll_interval: f64,
    /// `-`: the events and alerts also as JSON lines on standard output (one object a
    /// line, `"record": "event"` or `"alert"`), for Vector, Fluent Bit or journald; the
    /// alert lines and the final table then go to standard error. The session's files are
    /// written as always.
    #[arg(long, value_name = "-", value_parser = ["-"])]
    pub events: Option<String>,
    /// A full-screen terminal view instead of the alert lines: connections worst first,
    /// alerts, a detail per connection (keys: q quit, / filter, s sort, Enter detail, p pause).
    #[arg(long)]
    pub tui: bool,
    /// Stop after this many seconds (default: until Ctrl-C or SIGTERM).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Session folder to write (default: a new artifacts/session_YYYYmmdd_HHMMSS/).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Analysis threads, as for parse-pcap: the output is the same whatever the number,
    /// and what a pass over the capture read is written at its end. Default: the available
    /// cores. With --tui, 1.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub threads: Option<u16>,
}

/// Rotation of the session's growing files (capture.pcapng, events.jsonl, alerts.jsonl,
/// kernel_samples.jsonl), as `dumpcap -b` does: parts named
/// `STEM_NNNNN_YYYYmmddHHMMSS.EXT`, each a whole file on its own.
#[derive(Args, Debug, Clone)]
pub struct RotationArgs {
    /// Start a new part before a file's part would pass this many MB (1 MB = 1,000,000
    /// bytes; fractions allowed, at least 0.004096).
    #[arg(long, value_name = "MB")]
    pub rotate_mb: Option<f64>,
    /// Start a new part at the first write once a part has been open this many seconds.
    #[arg(long, value_name = "SECS")]
    pub rotate_secs: Option<f64>,
    /// Keep at most N parts of each file (the one being written included): the oldest are
    /// deleted, and the summary counts what was deleted.
    #[arg(long, value_name = "N")]
    pub keep: Option<usize>,
}

impl RotationArgs {
    pub fn settings(&self) -> Result<tcpviz::output::rotation::RotationSettings> {
        tcpviz::output::rotation::RotationSettings::from_flags(self.rotate_mb, self.rotate_secs, self.keep)
            .map_err(anyhow::Error::msg)
    }
}

/// Alert settings: flags, then TCPVIZ_* environment variables, then defaults.
#[derive(Args, Debug, Clone)]
pub struct AlertArgs {
    /// Sliding window of the alerts, in seconds of event time.
    #[arg(long, env = "TCPVIZ_WINDOW", default_value_t = 60.0)]
    pub window: f64,
    /// Events of one kind in one flow within the window that raise WARN.
    #[arg(long, env = "TCPVIZ_THRESHOLD", default_value_t = 10)]
    pub threshold: u64,
    /// ... that raise CRITICAL.
    #[arg(long, env = "TCPVIZ_CRITICAL", default_value_t = 50)]
    pub critical: u64,
    /// WARN threshold for loss (retransmissions, lost segments, inferred loss); CRITICAL at 5x.
    #[arg(long, env = "TCPVIZ_LOSS_THRESHOLD")]
    pub loss_threshold: Option<u64>,
    /// WARN threshold for out-of-order segments; CRITICAL at 5x.
    #[arg(long, env = "TCPVIZ_OOO_THRESHOLD")]
    pub ooo_threshold: Option<u64>,
}

impl AlertArgs {
    pub fn config(&self) -> Result<tcpviz::alert::AlertConfig> {
        if !(self.window > 0.0 && self.window.is_finite()) {
            bail!("--window must be a positive number of seconds");
        }
        if self.threshold == 0 || self.critical < self.threshold {
            bail!("need 0 < --threshold <= --critical");
        }
        let mut c = tcpviz::alert::AlertConfig {
            window: (self.window * 1e9) as i64,
            default: tcpviz::alert::Thresholds { warn: self.threshold, critical: self.critical },
            ..Default::default()
        };
        if let Some(t) = self.loss_threshold {
            c.set_loss_threshold(t.max(1));
        }
        if let Some(t) = self.ooo_threshold {
            c.set_ooo_threshold(t.max(1));
        }
        Ok(c)
    }
}

#[derive(Args, Debug)]
pub struct ParsePcapArgs {
    /// Capture files (pcap or pcapng, any name), read in order as one stream.
    #[arg(long = "in", value_name = "FILE")]
    pub inputs: Vec<PathBuf>,
    /// Capture files given without --in.
    #[arg(value_name = "FILE")]
    pub positional: Vec<PathBuf>,
    /// Session folder to write (default: a new artifacts/session_YYYYmmdd_HHMMSS/).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Join the kernel events of a `tcpviz live` session (its folder) recorded over the same
    /// period: kernel retransmissions are matched to the capture's.
    #[arg(long, value_name = "SESSION")]
    pub kernel_events: Option<PathBuf>,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Also write the dashboards (timeline.html, summary.html, report.html) at the end.
    #[arg(long)]
    pub report: bool,
    /// Run tshark (if installed) on the same files and report, flag by flag, where its
    /// analysis and tcpviz's agree: in summary.json, benchmark.log and report.html.
    #[arg(long)]
    pub cross_check: bool,
    /// Analysis threads, each with its share of the connections (besides the thread that
    /// reads and writes); the output is byte for byte the same whatever the number. At most
    /// one per 1,024 of --max-flows, and 16. Default: the available cores. 1 analyses on the
    /// reading thread, as does a run with --kernel-events.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub threads: Option<u16>,
}

#[derive(Args, Debug, Clone)]
pub struct LimitArgs {
    /// Most connections tracked at once (the least recently active are evicted beyond).
    #[arg(long, default_value_t = FlowLimits::default().max_flows)]
    pub max_flows: usize,
    /// Seconds of packet time after which an idle connection is retired.
    #[arg(long, default_value_t = (FlowLimits::default().idle_timeout / 1_000_000_000) as u64)]
    pub idle_timeout: u64,
    /// Flows listed individually in summary.json (the most troubled; the rest are counted).
    /// Default: 10000 (the rest are summed in `totals.folded`).
    #[arg(long)]
    pub summary_flows: Option<usize>,
}

impl LimitArgs {
    pub fn limits(&self) -> FlowLimits {
        FlowLimits {
            max_flows: self.max_flows.max(16),
            idle_timeout: self.idle_timeout as i64 * 1_000_000_000,
            ..FlowLimits::default()
        }
    }
}

#[derive(Args, Debug)]
pub struct SummaryArgs {
    /// A session folder, or an events file.
    #[arg(long = "in", value_name = "PATH")]
    pub input: PathBuf,
    /// How many flows to list.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// table: the readable table (and summary.html is written); json: the totals and the
    /// listed flows as one JSON object; csv: one row per flow. json and csv print only the
    /// data on standard output and write no page.
    #[arg(long, value_enum, default_value = "table")]
    pub format: SummaryFormat,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SummaryFormat {
    Table,
    Json,
    Csv,
}

#[derive(Args, Debug)]
pub struct PageArgs {
    /// A session folder, or an events file (the page is written beside it).
    #[arg(long = "in", value_name = "PATH")]
    pub input: PathBuf,
}
