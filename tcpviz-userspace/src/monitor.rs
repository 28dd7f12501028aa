//! Follow mode (`tcpviz monitor`): tails a capture that is being written, analyses new
//! packets as they arrive, raises sliding-window alerts, and writes the session as it goes.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::alert::{Alert, AlertConfig, AlertEngine};
use crate::capture::reader::Next;
use crate::capture::tail::{AfterEnd, TailError, Tailer};
use crate::event::Event;
use crate::flow::table::FlowLimits;
use crate::offline::write_json;
use crate::output::console::Console;
use crate::output::jsonl::JsonlWriter;
use crate::output::session::{ALERTS_FILE, BENCHMARK_FILE, EVENTS_FILE, SUMMARY_FILE};
use crate::output::summary::Summary;
use crate::pipeline::{EventSink, Pipeline};

#[derive(Debug, Clone)]
pub struct MonitorOptions {
    pub pcap_path: String,
    pub session_dir: PathBuf,
    pub limits: FlowLimits,
    /// Flows listed individually in the summary.
    pub summary_flows: usize,
    pub alerts: AlertConfig,
    pub poll_interval: Duration,
    /// Stop by itself after this long (wall time).
    pub duration: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error(transparent)]
    Tail(#[from] TailError),
    #[error("cannot write {path}: {source}")]
    Output { path: PathBuf, source: std::io::Error },
}

/// Events to the file and the alert engine; alerts to the file and the terminal.
pub struct AlertingSink {
    pub events: JsonlWriter,
    pub alerts: JsonlWriter,
    pub engine: AlertEngine,
    pub console: Console,
    fresh: Vec<Alert>,
}

impl AlertingSink {
    pub fn create(dir: &Path, config: AlertConfig) -> std::io::Result<AlertingSink> {
        Ok(AlertingSink {
            events: JsonlWriter::create(&dir.join(EVENTS_FILE))?,
            alerts: JsonlWriter::create(&dir.join(ALERTS_FILE))?,
            engine: AlertEngine::new(config),
            console: Console::default(),
            fresh: Vec::new(),
        })
    }

    fn publish(&mut self) -> std::io::Result<()> {
        if self.fresh.is_empty() {
            return Ok(());
        }
        for a in &self.fresh {
            self.alerts.write(a)?;
        }
        // An alert is news: make it and the events behind it visible at once.
        self.alerts.flush()?;
        self.events.flush()?;
        self.console.print(&self.fresh);
        self.fresh.clear();
        Ok(())
    }

    /// Lets alert levels decay while no packets arrive.
    pub fn tick(&mut self, now: crate::capture::frame::TimestampNs) -> std::io::Result<()> {
        self.engine.tick(now, &mut self.fresh);
        self.publish()
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.events.flush()?;
        self.alerts.flush()
    }
}

impl EventSink for AlertingSink {
    fn on_events(&mut self, events: &[Event]) -> std::io::Result<()> {
        self.events.write_events(events)?;
        for e in events {
            self.engine.on_event(e, &mut self.fresh);
        }
        self.publish()
    }
}

enum Wake {
    Changed,
    Stop,
}

/// Runs until Ctrl-C, SIGTERM or the end of `duration`; then finishes the analysis and
/// writes the summary.
pub fn run(opts: &MonitorOptions) -> Result<(Summary, Vec<PathBuf>), MonitorError> {
    let dir = &opts.session_dir;
    let out_err = |path: PathBuf| move |source| MonitorError::Output { path, source };
    let mut sink = AlertingSink::create(dir, opts.alerts.clone()).map_err(out_err(dir.join(EVENTS_FILE)))?;
    let mut pipeline = Pipeline::new(opts.limits);
    pipeline.set_summary_limit(opts.summary_flows);
    let mut tailer = Tailer::new(&opts.pcap_path)?;
    pipeline.set_always_name_files(tailer.may_span_files());

    let (tx, rx) = mpsc::channel::<Wake>();
    let stop_tx = tx.clone();
    if let Err(e) = ctrlc::set_handler(move || {
        let _ = stop_tx.send(Wake::Stop);
    }) {
        tracing::warn!("cannot catch Ctrl-C ({e}); stop with --duration");
    }
    // File-change notifications wake the loop at once; polling every interval is the
    // fallback (and what catches everything on file systems without inotify).
    let _watcher = watch(&tailer, tx.clone());

    let started = Instant::now();
    let mut last_packet_wall = Instant::now();
    let mut sources: Vec<String> = Vec::new();
    let mut waiting_notice = false;
    let mut errors: Vec<String> = Vec::new();
    eprintln!("following {} (Ctrl-C to stop)", opts.pcap_path);
    loop {
        let progressed =
            follow_pass(&mut tailer, &mut pipeline, &mut sink, &mut sources, &mut errors, &mut waiting_notice)?;
        if progressed {
            last_packet_wall = Instant::now();
        } else if let Some(last) = pipeline.counters.last_ts {
            // Event time moves on with the wall clock while the capture is quiet.
            let quiet = last_packet_wall.elapsed().as_nanos() as i64;
            sink.tick(last + quiet).map_err(out_err(dir.join(ALERTS_FILE)))?;
        }
        sink.flush().map_err(out_err(dir.join(EVENTS_FILE)))?;

        let mut timeout = opts.poll_interval;
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
                return finish(opts, pipeline, sink, &tailer, sources, errors, started);
            }
        }
    }
    // Read what arrived since the last pass before stopping.
    follow_pass(&mut tailer, &mut pipeline, &mut sink, &mut sources, &mut errors, &mut waiting_notice)?;
    finish(opts, pipeline, sink, &tailer, sources, errors, started)
}

/// Reads everything the followed capture holds now. Returns whether any packet was read.
pub(crate) fn follow_pass(
    tailer: &mut Tailer,
    pipeline: &mut Pipeline,
    sink: &mut dyn EventSink,
    sources: &mut Vec<String>,
    errors: &mut Vec<String>,
    waiting_notice: &mut bool,
) -> Result<bool, MonitorError> {
    let mut progressed = false;
    loop {
        let open = tailer.ensure_open()?;
        register_opened(tailer, pipeline, sources);
        if !open {
            if !*waiting_notice {
                eprintln!("waiting for the capture to appear");
                *waiting_notice = true;
            }
            break;
        }
        let cur = tailer.current().expect("ensure_open opened one");
        let file_index = cur.file_index;
        match cur.reader.next_frame() {
            Ok(Next::Frame(frame)) => {
                pipeline
                    .process_frame(&frame, file_index, sink)
                    .map_err(|source| MonitorError::Output { path: PathBuf::from(EVENTS_FILE), source })?;
                progressed = true;
            }
            Ok(Next::End { pending }) => {
                let next = tailer.caught_up(pending)?;
                register_opened(tailer, pipeline, sources);
                if next == AfterEnd::Wait {
                    break;
                }
            }
            Err(e) => {
                // A damaged file: report it, and go on with the next file.
                eprintln!("error: {e}");
                errors.push(e.to_string());
                tailer.abandon_current();
            }
        }
    }
    for n in tailer.take_notices() {
        eprintln!("{n}");
    }
    Ok(progressed)
}

/// Names newly opened files in the pipeline, in the order the tailer numbered them.
fn register_opened(tailer: &mut Tailer, pipeline: &mut Pipeline, sources: &mut Vec<String>) {
    for p in tailer.take_opened() {
        let name = p.display().to_string();
        pipeline.add_file(&name);
        sources.push(name);
    }
}

fn finish(
    opts: &MonitorOptions,
    mut pipeline: Pipeline,
    mut sink: AlertingSink,
    tailer: &Tailer,
    sources: Vec<String>,
    errors: Vec<String>,
    started: Instant,
) -> Result<(Summary, Vec<PathBuf>), MonitorError> {
    let dir = &opts.session_dir;
    let out_err = |path: PathBuf| move |source| MonitorError::Output { path, source };
    pipeline.finish(&mut sink).map_err(out_err(dir.join(EVENTS_FILE)))?;
    sink.flush().map_err(out_err(dir.join(EVENTS_FILE)))?;
    let source_names = if sources.is_empty() { vec![opts.pcap_path.clone()] } else { sources.clone() };
    let mut figures = pipeline.figures(source_names, 0, started.elapsed().as_secs_f64());
    let alerts_raised = sink.engine.raised;
    let active = sink.engine.snapshot();
    let mut summary = pipeline.summary(sources, errors, 0);
    summary.sections.insert(
        "alerts".into(),
        serde_json::json!({
            "raised": alerts_raised,
            "active_at_end": active.iter().map(|(f, k, l, n)| serde_json::json!({"flow_id": f, "kind": k, "level": l, "count": n})).collect::<Vec<_>>(),
            "window_s": opts.alerts.window as f64 / 1e9,
        }),
    );
    summary.sections.insert(
        "follow".into(),
        serde_json::json!({
            "files_read": tailer.files_opened(),
            "rewrites": tailer.rewrites,
            "bytes_cut_at_file_ends": tailer.cut_tails,
        }),
    );
    let summary_path = dir.join(SUMMARY_FILE);
    write_json(&summary_path, &summary).map_err(out_err(summary_path.clone()))?;
    figures.extra.insert("alerts_raised".into(), alerts_raised.to_string());
    figures.extra.insert("files_read".into(), tailer.files_opened().to_string());
    let bench_path = dir.join(BENCHMARK_FILE);
    figures.write(&bench_path).map_err(out_err(bench_path.clone()))?;
    let mut written = vec![dir.join(EVENTS_FILE), dir.join(ALERTS_FILE), summary_path, bench_path];
    written.extend(write_dashboards(dir));
    Ok((summary, written))
}

/// The dashboards of a finished session; a failure is reported, the session stays valid.
pub(crate) fn write_dashboards(dir: &Path) -> Vec<PathBuf> {
    match crate::report::write_all(dir) {
        Ok(pages) => pages,
        Err(e) => {
            eprintln!("warning: dashboards not written: {e}");
            Vec::new()
        }
    }
}

fn watch(tailer: &Tailer, tx: mpsc::Sender<Wake>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok() {
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
