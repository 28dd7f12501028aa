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
    /// Write timeline.html: anomalies over time, one row per flow.
    Plot(PageArgs),
    /// Write report.html: overview, and graphs of the worst flows.
    Report(PageArgs),
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
        progress: !args.quiet,
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
