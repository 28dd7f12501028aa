//! Analysing capture files (`tcpviz parse-pcap`): every file read in order as one stream
//! into a session.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::capture::files::{open_capture, read_sources};
use crate::capture::reader::CaptureError;
use crate::cross_check::FlagRecorder;
use crate::flow::table::FlowLimits;
use crate::output::benchmark::RunFigures;
use crate::output::jsonl::JsonlWriter;
use crate::output::session::{EVENTS_FILE, Session, SessionError};
use crate::output::summary::Summary;
use crate::pipeline::PipelineOptions;
use crate::pipeline::engine::{Engine, FrameAnalysis};

#[derive(Debug, Clone)]
pub struct AnalyseOptions {
    pub inputs: Vec<PathBuf>,
    pub session: Session,
    pub limits: FlowLimits,
    /// Flows listed individually in the summary.
    pub summary_flows: usize,
    /// Show a progress bar (only on a terminal).
    pub progress: bool,
    /// Kernel events of a live session of the same period, joined to the wire flows.
    pub kernel_events: Vec<crate::analysis::kernel::KernelEvent>,
    /// Run tshark on the same files and compare its flags with the events.
    pub cross_check: bool,
    /// Analysis threads (see [`crate::pipeline::sharded`]); 1 analyses on the reading
    /// thread, as does a run that joins kernel events.
    pub threads: usize,
}

/// Kernel events recorded by a live session (its folder or its events file), in time order.
pub fn load_kernel_events(path: &Path) -> std::io::Result<Vec<crate::analysis::kernel::KernelEvent>> {
    let (_, events_path) = crate::output::session::resolve_events_path(path)?;
    let events = crate::output::jsonl::read_events(&events_path)?;
    let mut out: Vec<_> = events
        .iter()
        .filter(|e| e.origin == crate::event::Origin::Kernel)
        .filter_map(crate::analysis::kernel::KernelEvent::from_event)
        .collect();
    out.sort_by_key(|k| k.ts);
    Ok(out)
}

/// What a run produced.
pub struct AnalyseResult {
    pub summary: Summary,
    pub figures: RunFigures,
    pub written: Vec<PathBuf>,
    /// Errors that stopped the reading of a file (the others were still read).
    pub errors: Vec<CaptureError>,
}

/// Opens the inputs (before anything is written: a missing file is an error of the
/// command, not of its session).
/// Compressed files (gzip, zstd) are read through their decompressor.
pub fn open_inputs(paths: &[PathBuf]) -> Result<Vec<Box<dyn Read>>, CaptureError> {
    paths
        .iter()
        .map(|p| open_capture(p).map_err(|source| CaptureError::Io { source_name: p.display().to_string(), source }))
        .collect()
}

/// Reads every input in order as one stream (flow state carries across files, as for the
/// files of a ring buffer), writing the session files. A damaged file ends its own reading
/// after every event before the damage is written; the error is returned with the result.
/// `files` are the inputs opened by [`open_inputs`], in the order of `opts.inputs`.
pub fn run(opts: &AnalyseOptions, files: Vec<Box<dyn Read>>) -> Result<AnalyseResult, SessionError> {
    let session = &opts.session;
    let events_path = session.path(EVENTS_FILE);
    let out_err = || session.write_error(EVENTS_FILE);
    let mut writer = JsonlWriter::create(&events_path).map_err(out_err())?;
    let pipeline_opts = PipelineOptions {
        limits: opts.limits,
        summary_flows: opts.summary_flows,
        kernel_mode: !opts.kernel_events.is_empty(),
        always_name_files: false,
        partial_wire_view: false,
        read_ahead: true,
    };
    let names: Vec<String> = opts.inputs.iter().map(|p| p.display().to_string()).collect();
    // Every file is registered first: events name their file as soon as there are several.
    let mut pipeline = Engine::new(pipeline_opts, opts.threads, &names).map_err(out_err())?;
    let mut kernel = opts.kernel_events.iter().peekable();
    // The events' flags, per file, for the cross-check (nothing is kept without it).
    let mut sink = FlagRecorder::new(&mut writer, if opts.cross_check { names } else { Vec::new() });
    let total_bytes: u64 = opts.inputs.iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum();
    let bar = (opts.progress && std::io::stderr().is_terminal()).then(|| progress_bar(total_bytes));
    let started = Instant::now();
    let indexes: Vec<u32> = (0..opts.inputs.len() as u32).collect();
    let sources = opts.inputs.iter().zip(files).map(|(path, file)| (path.display().to_string(), Ok(file)));
    let read = read_sources(sources, |frame, at| {
        // Kernel events join in time order.
        while let Some(k) = kernel.next_if(|k| k.ts <= frame.ts) {
            pipeline.process_kernel(k, &mut sink)?;
        }
        pipeline.process_frame(frame, indexes[at.file_index as usize], &mut sink)?;
        let packets = pipeline.counters().packets;
        if let Some(bar) = &bar
            && packets.is_multiple_of(16_384)
        {
            bar.set_position(at.bytes_before);
            let rate = packets as f64 / started.elapsed().as_secs_f64().max(1e-6);
            bar.set_message(format!("{packets} packets, {:.0} k packets/s", rate / 1e3));
        }
        Ok(())
    })
    .map_err(out_err())?;
    let (bytes, errors) = (read.bytes, read.errors);
    for k in kernel {
        pipeline.process_kernel(k, &mut sink).map_err(out_err())?;
    }
    pipeline.finish(&mut sink).map_err(out_err())?;
    let flagged = sink.into_flagged();
    writer.flush().map_err(out_err())?;
    let wall = started.elapsed().as_secs_f64();
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }

    let sources: Vec<String> = opts.inputs.iter().map(|p| p.display().to_string()).collect();
    let error_texts: Vec<String> = errors.iter().map(|e| crate::error::chain(e)).collect();
    let mut figures = pipeline.figures(sources.clone(), bytes, wall);
    let mut summary = pipeline.summary(sources, error_texts.clone(), bytes);
    if opts.cross_check {
        let check = crate::cross_check::cross_check(&opts.inputs, &flagged);
        figures.extra.extend(check.figures());
        summary.sections.cross_check = Some(check);
    }
    for (i, e) in error_texts.iter().enumerate() {
        figures.extra.insert(format!("error.{i}"), e.clone());
    }
    let mut written = vec![events_path];
    written.extend(session.finish(&summary, &figures)?);
    Ok(AnalyseResult { summary, figures, written, errors })
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
