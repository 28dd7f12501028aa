//! Follow mode (`tcpviz follow`, once `tcpviz monitor`): tails a capture that is being written, analyses new
//! packets as they arrive, raises sliding-window alerts, and writes the session as it goes.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use crate::alert::AlertConfig;
use crate::capture::tail::Tailer;
use crate::flow::table::FlowLimits;
use crate::output::alerting::AlertingSink;
use crate::output::record_file::report_losses;
use crate::output::sections::AlertsSection;
use crate::output::session::{ALERTS_FILE, EVENTS_FILE, Session};
use crate::output::summary::Summary;
use crate::pipeline::PipelineOptions;
use crate::pipeline::engine::Engine;
pub use crate::pipeline::follower::FollowError;
use crate::pipeline::follower::Follower;

#[derive(Debug, Clone)]
pub struct FollowOptions {
    pub pcap_path: String,
    pub session: Session,
    pub limits: FlowLimits,
    /// Flows listed individually in the summary.
    pub summary_flows: usize,
    pub alerts: AlertConfig,
    pub poll_interval: Duration,
    /// Stop by itself after this long (wall time).
    pub duration: Option<Duration>,
    /// Where the terminal view (`--tui`) takes its snapshots from.
    pub view: Option<crate::tui::snapshot::SnapshotSlot>,
    /// Analysis threads, as for `parse-pcap` (the terminal view reads the flows of one
    /// analyzer: with it, one).
    pub threads: usize,
}

enum Wake {
    Changed,
    Stop,
}

/// Runs until Ctrl-C, SIGTERM or the end of `duration`; then finishes the analysis and
/// writes the summary.
pub fn run(opts: &FollowOptions) -> Result<(Summary, Vec<PathBuf>), FollowError> {
    let session = &opts.session;
    let mut sink = AlertingSink::create(session, opts.alerts.clone()).map_err(session.write_error(EVENTS_FILE))?;
    let mut follower = Follower::new(&opts.pcap_path)?;
    if let Some(slot) = &opts.view {
        let mode = crate::tui::snapshot::ViewMode::Monitor;
        sink.view = Some(crate::tui::feed::ViewFeed::new(slot.clone(), mode, opts.pcap_path.clone()));
    }
    let pipeline_opts = PipelineOptions {
        limits: opts.limits,
        summary_flows: opts.summary_flows,
        kernel_mode: false,
        always_name_files: follower.tailer().may_span_files(),
        partial_wire_view: false,
        read_ahead: false,
    };
    let threads = if opts.view.is_some() { 1 } else { opts.threads };
    let mut pipeline = Engine::new(pipeline_opts, threads, &[]).map_err(session.write_error(EVENTS_FILE))?;

    let (tx, rx) = mpsc::channel::<Wake>();
    let stop_tx = tx.clone();
    // Seen inside a pass too: the first pass over a large file may take minutes.
    let stop_flag = Arc::new(AtomicBool::new(false));
    let stop_seen = Arc::clone(&stop_flag);
    if let Err(e) = ctrlc::set_handler(move || {
        stop_seen.store(true, Ordering::SeqCst);
        let _ = stop_tx.send(Wake::Stop);
    }) {
        tracing::warn!("cannot catch Ctrl-C ({e}); stop with --duration");
    }
    // File-change notifications wake the loop at once; polling every interval is the
    // fallback (and what catches everything on file systems without inotify).
    let _watcher = watch(follower.tailer(), tx.clone());

    let started = Instant::now();
    follower.stop_when(stop_flag, opts.duration.map(|d| started + d));
    let mut last_packet_wall = Instant::now();
    // Time spent reading and analysing, without the waits for the capture to grow: the
    // speed a follow kept up with, which the wall time of a follow cannot tell.
    let mut busy = Duration::ZERO;
    // Passes over the capture: one per change notified or poll interval, not per read.
    let mut passes: u64 = 0;
    crate::errln!("following {} (Ctrl-C to stop)", opts.pcap_path);
    loop {
        let pass_started = Instant::now();
        let progressed = follower.pass(session, &mut pipeline, &mut sink)?;
        // What the pass read is analysed and written now, not when a batch fills.
        pipeline.flush(&mut sink).map_err(session.write_error(EVENTS_FILE))?;
        busy += pass_started.elapsed();
        passes += 1;
        if progressed {
            last_packet_wall = Instant::now();
        } else if let Some(last) = pipeline.counters().last_ts {
            // Event time moves on with the wall clock while the capture is quiet.
            let quiet = last_packet_wall.elapsed().as_nanos() as i64;
            sink.tick(last + quiet).map_err(session.write_error(ALERTS_FILE))?;
        }
        sink.flush().map_err(session.write_error(EVENTS_FILE))?;
        if let Some(one) = pipeline.one() {
            sink.publish_view(one, &crate::tui::feed::no_interface, files_lost(&follower));
        }
        if crate::output::stdio::stdout_closed() {
            // Nobody reads the alerts any more (`tcpviz follow | head`): end as on Ctrl-C.
            break;
        }

        let mut timeout = opts.poll_interval;
        if opts.view.is_some() {
            // The view gets a snapshot about once a second.
            timeout = timeout.min(crate::tui::feed::PUBLISH_EVERY);
        }
        if let Some(d) = opts.duration {
            let left = d.saturating_sub(started.elapsed());
            if left.is_zero() {
                break;
            }
            timeout = timeout.min(left);
        }
        match rx.recv_timeout(timeout) {
            Ok(Wake::Stop) => break,
            Ok(Wake::Changed) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => std::thread::sleep(timeout),
        }
        // Coalesce a burst of notifications into one pass.
        while let Ok(w) = rx.try_recv() {
            if let Wake::Stop = w {
                return finish(opts, pipeline, sink, follower, started, (busy, passes));
            }
        }
    }
    // Read what arrived since the last pass before stopping.
    let pass_started = Instant::now();
    follower.pass(session, &mut pipeline, &mut sink)?;
    busy += pass_started.elapsed();
    finish(opts, pipeline, sink, follower, started, (busy, passes + 1))
}

/// What the view calls records lost in a follow: files missed, unreadable or cut short.
fn files_lost(follower: &Follower) -> u64 {
    let s = follower.section();
    s.files_missed + s.files_unreadable + s.compressed_files_cut_short
}

fn finish(
    opts: &FollowOptions,
    mut pipeline: Engine,
    mut sink: AlertingSink,
    follower: Follower,
    started: Instant,
    (busy, passes): (Duration, u64),
) -> Result<(Summary, Vec<PathBuf>), FollowError> {
    let session = &opts.session;
    pipeline.finish(&mut sink).map_err(session.write_error(EVENTS_FILE))?;
    sink.flush().map_err(session.write_error(EVENTS_FILE))?;
    let follow_section = follower.section();
    let bytes = follower.bytes_read();
    let (sources, errors) = follower.into_sources_and_errors();
    let source_names = if sources.is_empty() { vec![opts.pcap_path.clone()] } else { sources.clone() };
    let mut figures = pipeline.figures(source_names, bytes, started.elapsed().as_secs_f64());
    let alerts_raised = sink.engine.raised;
    let active = sink.engine.snapshot();
    let mut summary = pipeline.summary(sources, errors, bytes);
    summary.sections.alerts = Some(AlertsSection {
        active_at_end: Some(active),
        raised: alerts_raised,
        window_s: Some(opts.alerts.window as f64 / 1e9),
    });
    figures.extra.insert("alerts_raised".into(), alerts_raised.to_string());
    let busy = busy.as_secs_f64();
    figures.extra.insert("busy_seconds".into(), format!("{busy:.6}"));
    figures.extra.insert("passes".into(), passes.to_string());
    figures.extra.insert("packets_per_busy_second".into(), format!("{:.0}", figures.packets as f64 / busy.max(1e-9)));
    // One list of what the follower read and lost, for the summary and the benchmark log.
    figures.extra.extend(follow_section.figures());
    summary.sections.follow = Some(follow_section);
    report_losses(&[sink.events.file(), sink.alerts.file()], &mut summary, &mut figures);
    let mut written: Vec<PathBuf> = [sink.events.file(), sink.alerts.file()].iter().flat_map(|f| f.paths()).collect();
    let (end, summary_written) = session.finish_lasting(&mut summary, &figures);
    written.extend(end);
    if summary_written {
        written.extend(crate::report::write_dashboards(session.dir(), |_| true));
    }
    Ok((summary, written))
}

/// A notification that the capture may have changed. Not an open or a read: the follower's
/// own opens and reads of the ring's files are notified too, and each woke another pass,
/// which opened the files again (a loop that kept a core busy while following a ring).
fn is_change(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    match kind {
        notify::EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        notify::EventKind::Access(_) => false,
        _ => true,
    }
}

fn watch(tailer: &Tailer, tx: mpsc::Sender<Wake>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok_and(|e| is_change(&e.kind)) {
            let _ = tx.send(Wake::Changed);
        }
    })
    .map_err(|e| tracing::warn!("file notifications unavailable ({e}); polling"))
    .ok()?;
    for dir in tailer.watch_dirs() {
        if let Err(e) = watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
            tracing::debug!("cannot watch {}: {e}; polling it", dir.display());
        }
    }
    Some(watcher)
}
