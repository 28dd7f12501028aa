//! Command-line interface: the binary's own modules. `main.rs` only calls [`run`].

mod args;
mod assets;

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use tcpviz::analyse_captures::{self, AnalyseOptions};
use tcpviz::output::session::Session;
use tcpviz::output::summary::render_table;
use tcpviz::report;

#[cfg(target_os = "linux")]
use self::args::{CaptureArg, LiveArgs, TcModeArg};
use self::args::{Cli, Command, FollowArgs, LogFormat, ParsePcapArgs, SummaryArgs, SummaryFormat};

/// Exit status: 0 when all went well, 1 on an error (damaged input, a file that could not
/// be written, standard output that failed other than by its reader going away), 2 for a
/// command line clap rejects.
pub fn run() -> ExitCode {
    let cli = match parse_command_line() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    init_logging(cli.verbose, cli.log_format);
    let code = match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            tcpviz::errln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    if tcpviz::output::stdio::stdout_failure().is_some() { ExitCode::FAILURE } else { code }
}

/// The command line, with the settings of a `--config` file it names that it does not give
/// itself. A command line clap rejects exits with 2 (clap's message); so does a
/// configuration file that cannot be used, so that a service manager does not restart an
/// agent that can only fail the same way (`RestartPreventExitStatus=2` in the unit).
fn parse_command_line() -> Result<Cli, ExitCode> {
    use clap::{CommandFactory, FromArgMatches};
    let matches = match tcpviz::config_file::matches_with_config(&Cli::command(), std::env::args_os().collect()) {
        Ok(m) => m,
        Err(tcpviz::config_file::Error::Clap(e)) => e.exit(),
        Err(tcpviz::config_file::Error::File(e)) => {
            tcpviz::errln!("error: {}", tcpviz::error::Chain(&e));
            return Err(ExitCode::from(2));
        }
    };
    Cli::from_arg_matches(&matches).map_err(|e| e.exit())
}

fn init_logging(verbose: u8, format: LogFormat) {
    let default = match verbose {
        0 => "warn",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TCPVIZ_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only on a terminal: a log file or journald would keep the escape codes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(|| tcpviz::output::stdio::QuietStderr);
    let _ = match format {
        LogFormat::Text => logs.try_init(),
        // One JSON object a line, its fields apart (for journald or a log shipper).
        LogFormat::Json => logs.json().flatten_event(true).with_current_span(false).try_init(),
    };
}

fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::ParsePcap(args) => parse_pcap(args),
        Command::Summary(args) => summary(args),
        Command::Follow(args) => follow(args),
        #[cfg(target_os = "linux")]
        Command::Live(args) => live(args),
        Command::Plot(args) => Ok(exit_code(print_written(&report::write_timeline(&args.input)?))),
        Command::Report(args) => Ok(exit_code(print_written(&report::write_report(&args.input)?))),
        Command::Dashboards(args) => {
            // Each page is written whole or not at all; damage one page meets is said and
            // the others are still written.
            let mut failed = false;
            for write in [report::write_report, report::write_timeline, report::write_summary_page] {
                failed |= print_written(&write(&args.input)?);
            }
            Ok(exit_code(failed))
        }
        Command::GenerateAssets { out } => assets::generate(&out).map(|()| ExitCode::SUCCESS),
    }
}

/// Prints the path of a page written, and what it met on the way (on standard error).
/// Returns whether that was damage (an error).
fn print_written(w: &report::Written) -> bool {
    tcpviz::outln!("{}", w.path.display());
    for p in &w.problems {
        tcpviz::errln!("{p}");
    }
    w.problems.iter().any(|p| p.error)
}

fn exit_code(failed: bool) -> ExitCode {
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

fn parse_pcap(args: ParsePcapArgs) -> Result<ExitCode> {
    let mut inputs = args.inputs;
    inputs.extend(args.positional);
    if inputs.is_empty() {
        bail!("no capture given: tcpviz parse-pcap --in FILE [--in FILE ...]");
    }
    // What can be wrong with the command's inputs fails before the session folder exists.
    let files = analyse_captures::open_inputs(&inputs)?;
    let kernel_events = match &args.kernel_events {
        Some(p) => analyse_captures::load_kernel_events(p)
            .with_context(|| format!("cannot read the kernel events of {}", p.display()))?,
        None => Vec::new(),
    };
    let session = Session::create(args.out.as_deref())?;
    let opts = AnalyseOptions {
        inputs,
        session: session.clone(),
        limits: args.limits.limits(),
        summary_flows: args.limits.summary_flows.unwrap_or(tcpviz::output::summary::MAX_LISTED_FLOWS),
        progress: !args.quiet,
        kernel_events,
        cross_check: args.cross_check,
        threads: threads_or_cores(args.threads),
    };
    let result = analyse_captures::run(&opts, files).inspect_err(|_| session.remove_if_unused())?;
    for e in &result.errors {
        tcpviz::errln!("error: {}", tcpviz::error::Chain(e));
    }
    let t = &result.summary.totals;
    tcpviz::errln!(
        "{} packets, {} TCP segments, {} flows, {} events in {:.2} s",
        t.packets,
        t.tcp_segments,
        t.flows,
        t.events.values().sum::<u64>(),
        result.figures.wall_seconds
    );
    if let Some(check) = &result.summary.sections.cross_check {
        tcpviz::errln!("{}", tcpviz::cross_check::describe(check));
    }
    for p in &result.written {
        tcpviz::outln!("{}", p.display());
    }
    let mut failed = !result.errors.is_empty();
    if args.report {
        // The session's files are all written: a failing page is an error of its own, after
        // the analysis results are safe.
        for w in report::write_all(session.dir()).context("cannot write the dashboards")? {
            failed |= print_written(&w);
        }
    }
    Ok(exit_code(failed))
}

/// `summary` reads summary.json only (events.jsonl may be gigabytes; `plot` reads it).
fn summary(args: SummaryArgs) -> Result<ExitCode> {
    let files = report::SessionFiles::resolve(&args.input)?;
    let summary = files.require_summary("summary")?;
    match args.format {
        SummaryFormat::Table => {
            tcpviz::out!("{}", render_table(&summary, args.top));
            Ok(exit_code(print_written(&report::write_summary_page(&args.input)?)))
        }
        SummaryFormat::Json => {
            let listed = serde_json::json!({
                "totals": summary.totals,
                "flows_listed": summary.flows.len().min(args.top),
                "flows_in_summary": summary.flows.len(),
                "flows": &summary.flows[..summary.flows.len().min(args.top)],
                "errors": summary.errors,
            });
            tcpviz::outln!("{}", serde_json::to_string_pretty(&listed)?);
            Ok(ExitCode::SUCCESS)
        }
        SummaryFormat::Csv => {
            tcpviz::out!("{}", tcpviz::output::flow_csv::render_csv(&summary, args.top));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn follow(args: FollowArgs) -> Result<ExitCode> {
    if !(args.poll_interval > 0.0 && args.poll_interval.is_finite()) {
        bail!("--poll-interval must be a positive number of seconds");
    }
    let alerts = args.alerts.config()?;
    let rotation = args.rotation.settings()?;
    if args.events.is_some() {
        tcpviz::output::json_stream::enable();
    }
    let view = start_view(args.tui, args.events.is_some())?;
    let session = Session::create(args.out.as_deref())?.with_rotation(rotation);
    let opts = tcpviz::follow::FollowOptions {
        summary_flows: args.limits.summary_flows.unwrap_or(10_000),
        pcap_path: args.pcap_path,
        session: session.clone(),
        limits: args.limits.limits(),
        alerts,
        poll_interval: std::time::Duration::from_secs_f64(args.poll_interval),
        duration: args.duration.map(std::time::Duration::from_secs_f64),
        view: view.as_ref().map(|v| v.slot()),
        threads: threads_or_cores(args.threads),
    };
    let result = tcpviz::follow::run(&opts);
    let view_failed = finish_view(view);
    let (summary, written) = result.inspect_err(|_| session.remove_if_unused())?;
    results_out(format_args!("{}", render_table(&summary, 20)));
    // Files of a folder deleted while running are not there to show.
    for p in written.iter().filter(|p| p.exists()) {
        results_out(format_args!("{}\n", p.display()));
    }
    Ok(if summary.errors.is_empty() && !view_failed { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// `--tui`: the terminal is taken before the session folder is made, so that a missing
/// terminal leaves nothing behind.
fn start_view(wanted: bool, events_on_stdout: bool) -> Result<Option<tcpviz::tui::Tui>> {
    if !wanted {
        return Ok(None);
    }
    if events_on_stdout {
        bail!("--tui and --events - both want standard output: give one of them");
    }
    Ok(Some(tcpviz::tui::Tui::start()?))
}

/// Ends the view (the terminal restored, messages held meanwhile printed); true if it
/// failed, which is said.
fn finish_view(view: Option<tcpviz::tui::Tui>) -> bool {
    match view.map(tcpviz::tui::Tui::finish) {
        Some(Err(e)) => {
            tcpviz::errln!("error: {}", tcpviz::error::Chain(&e));
            true
        }
        _ => false,
    }
}

/// What a long-running mode prints at its end (the table, the files written): on standard
/// output, unless that is the JSON-lines stream of `--events -`.
fn results_out(text: std::fmt::Arguments<'_>) {
    if tcpviz::output::json_stream::enabled() {
        tcpviz::output::stdio::write_err(text);
    } else {
        tcpviz::output::stdio::write_out(text);
    }
}

/// `--watch-secs`: a positive number of seconds.
#[cfg(target_os = "linux")]
fn watch_duration(secs: f64) -> Result<std::time::Duration> {
    if !(secs.is_finite() && secs > 0.0 && secs <= 365.0 * 86400.0) {
        bail!("--watch-secs must be a positive number of seconds (at most a year), not {secs}");
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

/// `--iface` as given: none, names (each once), or `all` alone.
#[cfg(target_os = "linux")]
fn interfaces(given: &[String]) -> Result<tcpviz::live::Interfaces> {
    use tcpviz::live::Interfaces;
    if given.iter().any(|i| i == "all") {
        if given.len() > 1 {
            bail!("--iface all already covers every interface: give it alone");
        }
        return Ok(Interfaces::All);
    }
    if given.is_empty() {
        return Ok(Interfaces::None);
    }
    let mut names: Vec<String> = Vec::new();
    for name in given {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    Ok(Interfaces::Named(names))
}

#[cfg(target_os = "linux")]
fn live(args: LiveArgs) -> Result<ExitCode> {
    use tcpviz::live::{LiveOptions, TcMode};
    let ifaces = interfaces(&args.iface)?;
    if args.cleanup {
        let names = match &ifaces {
            tcpviz::live::Interfaces::Named(names) => names.iter().map(|n| Some(n.as_str())).collect(),
            _ => vec![None],
        };
        for iface in names {
            for line in tcpviz::live::cleanup(iface, args.netns.as_deref())? {
                tcpviz::outln!("{line}");
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    // Before the ring size: the default agent.toml test gets past these with a bad ring.
    let rotation = args.rotation.settings()?;
    if args.ports.len() > tcpviz_common::FILTER_SLOTS || args.addrs.len() > tcpviz_common::FILTER_SLOTS {
        bail!("at most {} --port and {} --addr", tcpviz_common::FILTER_SLOTS, tcpviz_common::FILTER_SLOTS);
    }
    let ring = args.ring_mb.saturating_mul(1024 * 1024);
    #[cfg(feature = "test-hooks")]
    let ring = args.ring_bytes.unwrap_or(ring);
    if !ring.is_power_of_two() || ring < 4096 {
        bail!("the ring buffer size must be a power of two of at least 4096 bytes");
    }
    let alerts = args.alerts.config()?;
    if args.events.is_some() {
        tcpviz::output::json_stream::enable();
    }
    let view = start_view(args.tui, args.events.is_some())?;
    let session = Session::create(args.out.as_deref())?.with_rotation(rotation);
    let opts = LiveOptions {
        ifaces,
        netns: args.netns,
        duration: args.duration.map(std::time::Duration::from_secs_f64),
        session: session.clone(),
        limits: args.limits.limits(),
        summary_flows: args.limits.summary_flows.unwrap_or(10_000),
        alerts,
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
        capture: match args.capture {
            CaptureArg::Troubled => tcpviz::live::CapturePolicy::Troubled,
            CaptureArg::All => tcpviz::live::CapturePolicy::All,
            CaptureArg::Kernel => tcpviz::live::CapturePolicy::Kernel,
        },
        watch: watch_duration(args.watch_secs)?,
        max_watched: args.max_watched.max(1),
        view: view.as_ref().map(|v| v.slot()),
    };
    let result = tcpviz::live::run(&opts);
    let view_failed = finish_view(view);
    let result = result.inspect_err(|_| session.remove_if_unused())?;
    results_out(format_args!("{}", render_table(&result.summary, 20)));
    if result.losses.total() > 0 {
        let hint = if result.losses.ring_full() > 0 { "; raise --ring-mb" } else { "" };
        tcpviz::errln!("warning: {}{hint}", result.losses.describe());
    }
    for p in result.written.iter().filter(|p| p.exists()) {
        results_out(format_args!("{}\n", p.display()));
    }
    Ok(exit_code(!result.summary.errors.is_empty() || view_failed))
}

/// `--threads`, or the available cores.
fn threads_or_cores(threads: Option<u16>) -> usize {
    match threads {
        Some(n) => n.into(),
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}
