//! Offline analysis of capture files (`tcpviz parse-pcap`).

use std::fs::File;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::capture::reader::{CaptureError, CaptureReader, Next};
use crate::flow::table::FlowLimits;
use crate::output::benchmark::RunFigures;
use crate::output::jsonl::JsonlWriter;
use crate::output::session::{BENCHMARK_FILE, EVENTS_FILE, SUMMARY_FILE};
use crate::output::summary::Summary;
use crate::pipeline::Pipeline;

#[derive(Debug, Clone)]
pub struct OfflineOptions {
    pub inputs: Vec<PathBuf>,
    pub session_dir: PathBuf,
    pub limits: FlowLimits,
    /// Flows listed individually in the summary.
    pub summary_flows: usize,
    /// Show a progress bar (only on a terminal).
    pub progress: bool,
    /// Kernel events of a live session of the same period, joined to the wire flows.
    pub kernel_events: Vec<crate::analysis::kernel::KernelEvent>,
}

/// Kernel events recorded by a live session (its folder or its events file), in time order.
pub fn load_kernel_events(path: &Path) -> std::io::Result<Vec<crate::analysis::kernel::KernelEvent>> {
    let (_, events_path) = crate::output::session::resolve_events_path(path)?;
    let (events, _bad) = crate::output::jsonl::read_events(&events_path)?;
    let mut out: Vec<_> = events
        .iter()
        .filter(|e| e.origin == crate::event::Origin::Kernel)
        .filter_map(crate::analysis::kernel::KernelEvent::from_event)
        .collect();
    out.sort_by_key(|k| k.ts);
    Ok(out)
}

/// What a run produced.
pub struct OfflineResult {
    pub summary: Summary,
    pub figures: RunFigures,
    pub written: Vec<PathBuf>,
    /// Errors that stopped the reading of a file (the others were still read).
    pub errors: Vec<CaptureError>,
}

#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error("cannot write {path}: {source}")]
    Output { path: PathBuf, source: std::io::Error },
}

/// Reads every input in order as one stream (flow state carries across files, as for the
/// files of a ring buffer), writing the session files. A damaged file ends its own reading
/// after every event before the damage is written; the error is returned with the result.
pub fn run(opts: &OfflineOptions) -> Result<OfflineResult, OfflineError> {
    let events_path = opts.session_dir.join(EVENTS_FILE);
    let out_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| OfflineError::Output { path, source }
    };
    let mut writer = JsonlWriter::create(&events_path).map_err(out_err(&events_path))?;
    let mut pipeline = Pipeline::new(opts.limits);
    pipeline.set_summary_limit(opts.summary_flows);
    let mut kernel = opts.kernel_events.iter().peekable();
    pipeline.set_kernel_mode(!opts.kernel_events.is_empty());
    let mut errors = Vec::new();
    let mut bytes = 0u64;
    let total_bytes: u64 = opts.inputs.iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum();
    let bar = (opts.progress && std::io::stderr().is_terminal()).then(|| progress_bar(total_bytes));
    let started = Instant::now();
    // Register every file first: events name their file as soon as there are several.
    let indexes: Vec<u32> = opts.inputs.iter().map(|p| pipeline.add_file(&p.display().to_string())).collect();
    for (path, &file_index) in opts.inputs.iter().zip(&indexes) {
        let name = path.display().to_string();
        let file = match File::open(path) {
            Ok(f) => f,
            Err(source) => {
                errors.push(CaptureError::Io { source_name: name, source });
                continue;
            }
        };
        let mut reader = CaptureReader::new(file, name);
        let mut last_offset = 0u64;
        loop {
            match reader.next_frame() {
                Ok(Next::Frame(frame)) => {
                    // Kernel events join in time order.
                    while let Some(k) = kernel.next_if(|k| k.ts <= frame.ts) {
                        pipeline.process_kernel(k, &mut writer).map_err(out_err(&events_path))?;
                    }
                    pipeline.process_frame(&frame, file_index, &mut writer).map_err(out_err(&events_path))?;
                    if let Some(bar) = &bar
                        && pipeline.counters.packets.is_multiple_of(16_384)
                    {
                        bar.set_position(bytes + reader.offset());
                        let rate = pipeline.counters.packets as f64 / started.elapsed().as_secs_f64().max(1e-6);
                        bar.set_message(format!(
                            "{} packets, {:.0} k packets/s",
                            pipeline.counters.packets,
                            rate / 1e3
                        ));
                    }
                }
                Ok(Next::End { pending: 0 }) => break,
                Ok(Next::End { pending }) => {
                    errors.push(reader.cut_short(pending));
                    break;
                }
                Err(e) => {
                    errors.push(e);
                    break;
                }
            }
            last_offset = reader.offset();
        }
        bytes += last_offset.max(reader.offset());
    }
    for k in kernel {
        pipeline.process_kernel(k, &mut writer).map_err(out_err(&events_path))?;
    }
    pipeline.finish(&mut writer).map_err(out_err(&events_path))?;
    writer.flush().map_err(out_err(&events_path))?;
    let wall = started.elapsed().as_secs_f64();
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }

    let sources: Vec<String> = opts.inputs.iter().map(|p| p.display().to_string()).collect();
    let error_texts: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    let mut figures = pipeline.figures(sources.clone(), bytes, wall);
    let summary = pipeline.summary(sources, error_texts.clone(), bytes);
    let summary_path = opts.session_dir.join(SUMMARY_FILE);
    write_json(&summary_path, &summary).map_err(out_err(&summary_path))?;

    for (i, e) in error_texts.iter().enumerate() {
        figures.extra.insert(format!("error.{i}"), e.clone());
    }
    let bench_path = opts.session_dir.join(BENCHMARK_FILE);
    figures.write(&bench_path).map_err(out_err(&bench_path))?;
    Ok(OfflineResult { summary, figures, written: vec![events_path, summary_path, bench_path], errors })
}

pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let file = File::create(path)?;
    let mut w = std::io::BufWriter::new(file);
    serde_json::to_writer_pretty(&mut w, value).map_err(std::io::Error::other)?;
    use std::io::Write;
    w.write_all(b"\n")?;
    w.flush()
}

fn progress_bar(total: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}
