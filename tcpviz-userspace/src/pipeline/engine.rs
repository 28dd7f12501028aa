//! One analyzer on the reading thread, or connections sharded across threads
//! ([`super::sharded`]): what the modes that read captures (`parse-pcap`, `follow`) drive.

use std::io;

use super::sharded::ShardedPipeline;
use super::{Counters, EventSink, FrameOutcome, Pipeline, PipelineOptions};
use crate::analysis::kernel::KernelEvent;
use crate::capture::frame::Frame;
use crate::output::benchmark::RunFigures;
use crate::output::summary::Summary;

/// What a capture's frames are fed to: the follower ([`super::follower`]) feeds either.
pub trait FrameAnalysis {
    /// Registers the next input file (its index is the number of files before it). Events
    /// of earlier files are written before the file is named.
    fn add_file(&mut self, name: &str, sink: &mut dyn EventSink) -> io::Result<()>;

    fn process_frame(
        &mut self,
        frame: &Frame<'_>,
        file_index: u32,
        sink: &mut dyn EventSink,
    ) -> io::Result<FrameOutcome>;
}

impl FrameAnalysis for Pipeline {
    fn add_file(&mut self, name: &str, _sink: &mut dyn EventSink) -> io::Result<()> {
        Pipeline::add_file(self, name);
        Ok(())
    }

    fn process_frame(
        &mut self,
        frame: &Frame<'_>,
        file_index: u32,
        sink: &mut dyn EventSink,
    ) -> io::Result<FrameOutcome> {
        Pipeline::process_frame(self, frame, file_index, sink)
    }
}

pub enum Engine {
    One(Pipeline),
    Sharded(ShardedPipeline),
}

impl Engine {
    /// Sharded across `threads` workers if that gives more than one (see
    /// [`ShardedPipeline::workers`]) and no kernel reports are joined (one analyzer joins
    /// them); else one analyzer. `files`: the input names known before the first frame.
    pub fn new(opts: PipelineOptions, threads: usize, files: &[String]) -> io::Result<Engine> {
        if ShardedPipeline::workers(threads, opts.limits) > 1 && !opts.kernel_mode {
            return Ok(Engine::Sharded(ShardedPipeline::new(opts, threads, files)?));
        }
        let mut p = Pipeline::with_options(opts);
        for f in files {
            p.add_file(f);
        }
        Ok(Engine::One(p))
    }

    /// Analysis threads (1: the reading thread's).
    pub fn threads(&self) -> usize {
        match self {
            Engine::One(_) => 1,
            Engine::Sharded(p) => p.threads(),
        }
    }

    /// The analyzer, when there is one (the terminal view reads its flows).
    pub fn one(&self) -> Option<&Pipeline> {
        match self {
            Engine::One(p) => Some(p),
            Engine::Sharded(_) => None,
        }
    }

    /// Only an engine of one analyzer is given kernel events.
    pub fn process_kernel(&mut self, k: &KernelEvent, sink: &mut dyn EventSink) -> io::Result<()> {
        match self {
            Engine::One(p) => p.process_kernel(k, sink),
            Engine::Sharded(_) => Ok(()),
        }
    }

    /// Writes the events of every frame given so far (a sharded engine holds batches of
    /// them): a follow calls it when it has read what the capture holds.
    pub fn flush(&mut self, sink: &mut dyn EventSink) -> io::Result<()> {
        match self {
            Engine::One(_) => Ok(()),
            Engine::Sharded(p) => p.flush(sink),
        }
    }

    pub fn counters(&self) -> &Counters {
        match self {
            Engine::One(p) => &p.counters,
            Engine::Sharded(p) => &p.counters,
        }
    }

    pub fn finish(&mut self, sink: &mut dyn EventSink) -> io::Result<()> {
        match self {
            Engine::One(p) => p.finish(sink),
            Engine::Sharded(p) => p.finish(sink),
        }
    }

    pub fn figures(&self, sources: Vec<String>, bytes: u64, wall_seconds: f64) -> RunFigures {
        match self {
            Engine::One(p) => p.figures(sources, bytes, wall_seconds),
            Engine::Sharded(p) => p.figures(sources, bytes, wall_seconds),
        }
    }

    pub fn summary(self, sources: Vec<String>, errors: Vec<String>, bytes: u64) -> Summary {
        match self {
            Engine::One(p) => p.summary(sources, errors, bytes),
            Engine::Sharded(p) => p.summary(sources, errors, bytes),
        }
    }
}

impl FrameAnalysis for Engine {
    fn add_file(&mut self, name: &str, sink: &mut dyn EventSink) -> io::Result<()> {
        match self {
            Engine::One(p) => FrameAnalysis::add_file(p, name, sink),
            Engine::Sharded(p) => p.add_file(name, sink),
        }
    }

    fn process_frame(
        &mut self,
        frame: &Frame<'_>,
        file_index: u32,
        sink: &mut dyn EventSink,
    ) -> io::Result<FrameOutcome> {
        match self {
            Engine::One(p) => p.process_frame(frame, file_index, sink),
            Engine::Sharded(p) => p.process_frame(frame, file_index, sink),
        }
    }
}
