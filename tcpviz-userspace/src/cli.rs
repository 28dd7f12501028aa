//! Command-line interface. `main.rs` only calls [`run`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use crate::flow::table::FlowLimits;
use crate::offline::{self, OfflineOptions};
use crate::output::session::{self, SUMMARY_FILE};
use crate::output::summary::{Summary, render_table};
use crate::report;

#[derive(Parser, Debug)]
#[command(
    name = "tcpviz",
    version,
    about = "Find TCP trouble: retransmissions, loss, reordering, stalls, zero windows"
)]
pub struct Cli {
    /// More logging (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Analyse pcap/pcapng files and write a session folder.
    ParsePcap(ParsePcapArgs),
    /// Print the per-flow table of a session, sorted by trouble, and write summary.html.
    Summary(SummaryArgs),
    /// Follow a capture that is being written (a growing file, a symlink a capture tool
    /// re-points, or a glob of ring files), with sliding-window alerts.
    Monitor(MonitorArgs),
    /// Live agent (root): eBPF on an interface's traffic (TC) and the kernel's TCP
    /// tracepoints, with sliding-window alerts; writes a session with capture.pcapng.
    Live(LiveArgs),
    /// Write timeline.html: anomalies over time, one row per flow.
    Plot(PageArgs),
    /// Write report.html: overview, and graphs of the worst flows.
    Report(PageArgs),
}

#[derive(Args, Debug)]
pub struct LiveArgs {
    /// Interface whose TCP packets are analysed (TC ingress and egress).
    #[arg(long, value_name = "IF")]
    pub iface: Option<String>,
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
    /// Take the wire packets from a capture that dumpcap or tcpdump is writing (as
    /// `monitor` follows it) instead of the TC snapshots.
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
    /// Size of the packet ring buffer in MiB (a power of two).
    #[arg(long, default_value_t = 8)]
    pub ring_mb: u32,
    /// Size of the packet ring buffer in bytes (overrides --ring-mb; for tests).
    #[arg(long, hide = true)]
    pub ring_bytes: Option<u32>,
    #[command(flatten)]
    pub limits: LimitArgs,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum TcModeArg {
    Auto,
    Tcx,
    Clsact,
}

#[derive(Args, Debug)]
pub struct MonitorArgs {
    /// The capture: a file, a symlink, or a quoted glob of ring files ('/var/cap/ring_*').
    #[arg(long, value_name = "PATH")]
    pub pcap_path: String,
    #[command(flatten)]
    pub alerts: AlertArgs,
    /// Seconds between checks when no file-change notification arrives.
    #[arg(long, env = "TCPVIZ_POLL_INTERVAL", default_value_t = 2.0)]
    pub poll_interval: f64,
    /// Stop after this many seconds (default: until Ctrl-C or SIGTERM).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Session folder to write (default: a new artifacts/session_YYYYmmdd_HHMMSS/).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub limits: LimitArgs,
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
    pub fn config(&self) -> Result<crate::alert::AlertConfig> {
        if !(self.window > 0.0 && self.window.is_finite()) {
            bail!("--window must be a positive number of seconds");
        }
        if self.threshold == 0 || self.critical < self.threshold {
            bail!("need 0 < --threshold <= --critical");
        }
        let mut c = crate::alert::AlertConfig {
            window: (self.window * 1e9) as i64,
            default: crate::alert::Thresholds { warn: self.threshold, critical: self.critical },
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
    /// Default: 100000 for files, 10000 for the long-running modes.
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
}

#[derive(Args, Debug)]
pub struct PageArgs {
    /// A session folder, or an events file (the page is written beside it).
    #[arg(long = "in", value_name = "PATH")]
    pub input: PathBuf,
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TCPVIZ_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::ParsePcap(args) => parse_pcap(args),
        Command::Summary(args) => summary(args),
        Command::Monitor(args) => monitor(args),
        Command::Live(args) => live(args),
        Command::Plot(args) => {
            let path = report::write_timeline(&args.input)?;
            println!("{}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Report(args) => {
            let path = report::write_report(&args.input)?;
            println!("{}", path.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn parse_pcap(args: ParsePcapArgs) -> Result<ExitCode> {
    let mut inputs = args.inputs;
    inputs.extend(args.positional);
    if inputs.is_empty() {
        bail!("no capture given: tcpviz parse-pcap --in FILE [--in FILE ...]");
    }
    let session_dir = session::create_session_dir(args.out.as_deref()).context("cannot create the session folder")?;
    let opts = OfflineOptions {
        inputs,
        session_dir: session_dir.clone(),
        limits: args.limits.limits(),
        summary_flows: args.limits.summary_flows.unwrap_or(crate::output::summary::MAX_LISTED_FLOWS),
        progress: !args.quiet,
        kernel_events: match &args.kernel_events {
            Some(p) => offline::load_kernel_events(p)
                .with_context(|| format!("cannot read the kernel events of {}", p.display()))?,
            None => Vec::new(),
        },
    };
    let result = offline::run(&opts)?;
    for e in &result.errors {
        eprintln!("error: {e}");
    }
    let t = &result.summary.totals;
    eprintln!(
        "{} packets, {} TCP segments, {} flows, {} events in {:.2} s",
        t.packets,
        t.tcp_segments,
        t.flows,
        t.events.values().sum::<u64>(),
        result.figures.wall_seconds
    );
    for p in &result.written {
        println!("{}", p.display());
    }
    if args.report {
        // The session's files are all written: a failing page is an error of its own, after
        // the analysis results are safe.
        for p in report::write_all(&session_dir).context("cannot write the dashboards")? {
            println!("{}", p.display());
        }
    }
    Ok(if result.errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Loads the summary of a session folder or of the folder of an events file.
pub fn load_summary(path: &Path) -> Result<Summary> {
    let (dir, _events) = session::resolve_events_path(path)?;
    let summary_path = dir.join(SUMMARY_FILE);
    let text = std::fs::read_to_string(&summary_path)
        .with_context(|| format!("cannot read {} (run tcpviz parse-pcap first)", summary_path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a tcpviz summary", summary_path.display()))
}

fn summary(args: SummaryArgs) -> Result<ExitCode> {
    let summary = load_summary(&args.input)?;
    print!("{}", render_table(&summary, args.top));
    let page = report::write_summary_page(&args.input)?;
    println!("{}", page.display());
    Ok(ExitCode::SUCCESS)
}

fn monitor(args: MonitorArgs) -> Result<ExitCode> {
    if !(args.poll_interval > 0.0 && args.poll_interval.is_finite()) {
        bail!("--poll-interval must be a positive number of seconds");
    }
    let session_dir = session::create_session_dir(args.out.as_deref()).context("cannot create the session folder")?;
    let opts = crate::monitor::MonitorOptions {
        summary_flows: args.limits.summary_flows.unwrap_or(10_000),
        pcap_path: args.pcap_path,
        session_dir,
        limits: args.limits.limits(),
        alerts: args.alerts.config()?,
        poll_interval: std::time::Duration::from_secs_f64(args.poll_interval),
        duration: args.duration.map(std::time::Duration::from_secs_f64),
    };
    let (summary, written) = crate::monitor::run(&opts)?;
    print!("{}", render_table(&summary, 20));
    for p in &written {
        println!("{}", p.display());
    }
    Ok(if summary.errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn live(args: LiveArgs) -> Result<ExitCode> {
    use crate::live::{LiveOptions, TcMode};
    if args.ports.len() > tcpviz_common::FILTER_SLOTS || args.addrs.len() > tcpviz_common::FILTER_SLOTS {
        bail!("at most {} --port and {} --addr", tcpviz_common::FILTER_SLOTS, tcpviz_common::FILTER_SLOTS);
    }
    let ring = args.ring_bytes.unwrap_or(args.ring_mb.saturating_mul(1024 * 1024));
    if !ring.is_power_of_two() || ring < 4096 {
        bail!("the ring buffer size must be a power of two of at least 4096 bytes");
    }
    let session_dir = session::create_session_dir(args.out.as_deref()).context("cannot create the session folder")?;
    let opts = LiveOptions {
        iface: args.iface,
        netns: args.netns,
        duration: args.duration.map(std::time::Duration::from_secs_f64),
        session_dir,
        limits: args.limits.limits(),
        summary_flows: args.limits.summary_flows.unwrap_or(10_000),
        alerts: args.alerts.config()?,
        pcap_path: args.pcap_path,
        tc_mode: match args.tc_mode {
            TcModeArg::Auto => TcMode::Auto,
            TcModeArg::Tcx => TcMode::Tcx,
            TcModeArg::Clsact => TcMode::Clsact,
        },
        ports: args.ports,
        addrs: args.addrs,
        metrics_addr: args.metrics_addr,
        packet_ring_bytes: Some(ring),
        wakeup_bytes: (ring / 8).clamp(4096, 64 * 1024),
    };
    let result = crate::live::run(&opts)?;
    print!("{}", render_table(&result.summary, 20));
    if result.lost_events > 0 {
        eprintln!("warning: {} records were lost (ring buffer full); raise --ring-mb", result.lost_events);
    }
    for p in &result.written {
        println!("{}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}
