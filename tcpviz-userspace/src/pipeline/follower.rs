//! Following a capture that is being written: the [`Tailer`]'s files read into a pipeline
//! ([`FrameAnalysis`]: one analyzer, or connections sharded across threads) as they grow.
//! The follow mode and the live agent's `--pcap-path` both drive one [`Follower`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::capture::reader::{CaptureError, Next};
use crate::capture::tail::{AfterEnd, TailError, TailLosses, Tailer};
use crate::output::sections::FollowSection;
use crate::output::session::{EVENTS_FILE, Session, SessionError};
use crate::pipeline::EventSink;
use crate::pipeline::engine::FrameAnalysis;

#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error(transparent)]
    Tail(#[from] TailError),
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// A followed capture, and what following it met so far.
pub struct Follower {
    tailer: Tailer,
    /// The files opened, in the order the tailer numbered them.
    sources: Vec<String>,
    /// Files given up on, as text for the summary.
    errors: Vec<String>,
    /// "waiting for the capture to appear" was said.
    waiting_notice: bool,
    /// Bytes read of each file (decompressed, for a compressed one), by file number.
    read: Vec<u64>,
    /// Set when the run must end (Ctrl-C), and when it must end by (`--duration`): a pass
    /// over a large file ends early for them instead of reading the file to its end.
    stop: Option<(Arc<AtomicBool>, Option<Instant>)>,
    /// The longest a pass may take before it gives the caller its turn; the next pass goes
    /// on where it stopped (the live agent: its rings must be drained meanwhile).
    pass_budget: Option<Duration>,
}

/// Frames between two looks at the stop flag and the clock.
const STOP_CHECK_EVERY: u32 = 4096;

impl Follower {
    /// `path`: a file, a symlink, or a glob of ring files.
    pub fn new(path: &str) -> Result<Follower, TailError> {
        Ok(Follower {
            tailer: Tailer::new(path)?,
            sources: Vec::new(),
            errors: Vec::new(),
            waiting_notice: false,
            read: Vec::new(),
            stop: None,
            pass_budget: None,
        })
    }

    pub fn tailer(&self) -> &Tailer {
        &self.tailer
    }

    /// Files opened so far, in order.
    pub fn sources(&self) -> &[String] {
        &self.sources
    }

    /// Ends a pass early once `flag` is set or `until` has passed.
    pub fn stop_when(&mut self, flag: Arc<AtomicBool>, until: Option<Instant>) {
        self.stop = Some((flag, until));
    }

    /// Passes end after about `budget` (None: a pass reads all the capture holds).
    pub fn set_pass_budget(&mut self, budget: Option<Duration>) {
        self.pass_budget = budget;
    }

    fn must_stop(&self) -> bool {
        self.stop
            .as_ref()
            .is_some_and(|(flag, until)| flag.load(Ordering::SeqCst) || until.is_some_and(|t| Instant::now() >= t))
    }

    /// Capture bytes read so far, over every file (the `bytes` of the benchmark log).
    pub fn bytes_read(&self) -> u64 {
        self.read.iter().sum()
    }

    /// The files opened and the errors met, for the summary.
    pub fn into_sources_and_errors(self) -> (Vec<String>, Vec<String>) {
        (self.sources, self.errors)
    }

    /// What was read and lost so far.
    pub fn section(&self) -> FollowSection {
        // Destructured: a new kind of loss must be added here too.
        let TailLosses {
            files_unreadable,
            files_missed,
            bytes_cut_at_file_ends,
            bytes_added_after_finish,
            rewrites,
            compressed_files_cut_short,
        } = self.tailer.losses;
        FollowSection {
            bytes_added_after_finish,
            bytes_cut_at_file_ends,
            compressed_files_cut_short,
            files_missed,
            files_read: self.tailer.files_opened(),
            files_unreadable,
            rewrites,
        }
    }

    /// Reads everything the followed capture holds now into `pipeline` (or what the pass
    /// budget allows: the next pass goes on from there); events go to `sink`, which writes
    /// the session's events file. Returns whether any packet was read.
    pub fn pass(
        &mut self,
        session: &Session,
        pipeline: &mut impl FrameAnalysis,
        sink: &mut dyn EventSink,
    ) -> Result<bool, FollowError> {
        let mut progressed = false;
        let mut frames = 0u32;
        let until = self.pass_budget.map(|b| Instant::now() + b);
        loop {
            frames = frames.wrapping_add(1);
            if frames.is_multiple_of(STOP_CHECK_EVERY)
                && (self.must_stop() || until.is_some_and(|t| Instant::now() >= t))
            {
                break;
            }
            // Said as it happens, in order with the errors below.
            for n in self.tailer.take_notices() {
                crate::errln!("{n}");
            }
            let open = self.tailer.ensure_open()?;
            self.register_opened(pipeline, sink).map_err(session.write_error(EVENTS_FILE))?;
            if !open {
                if !self.waiting_notice {
                    crate::errln!("waiting for the capture to appear");
                    self.waiting_notice = true;
                }
                break;
            }
            let cur = self.tailer.current().expect("ensure_open opened one");
            let file_index = cur.file_index;
            let pending = match cur.reader.next_frame() {
                Ok(Next::Frame(frame)) => {
                    pipeline.process_frame(&frame, file_index, sink).map_err(session.write_error(EVENTS_FILE))?;
                    let i = file_index as usize;
                    if self.read.len() <= i {
                        self.read.resize(i + 1, 0);
                    }
                    self.read[i] = cur.reader.offset();
                    progressed = true;
                    continue;
                }
                Ok(Next::End { pending }) => pending,
                // A capture tool creates its file before it writes the file header (tcpdump
                // without -U only once its first buffer is full): an empty file is still
                // being written, not a bad one.
                Err(CaptureError::Empty { .. }) => 0,
                Err(e) => {
                    // A damaged file, or not a capture: report it, and go on with the next file.
                    let text = crate::error::chain(&e);
                    crate::errln!("error: {text}; skipping this file");
                    self.errors.push(text);
                    self.tailer.abandon_current();
                    continue;
                }
            };
            let next = self.tailer.caught_up(pending)?;
            self.register_opened(pipeline, sink).map_err(session.write_error(EVENTS_FILE))?;
            if next == AfterEnd::Wait {
                break;
            }
        }
        for n in self.tailer.take_notices() {
            crate::errln!("{n}");
        }
        Ok(progressed)
    }

    /// Names newly opened files in the pipeline, in the order the tailer numbered them.
    fn register_opened(&mut self, pipeline: &mut impl FrameAnalysis, sink: &mut dyn EventSink) -> std::io::Result<()> {
        for p in self.tailer.take_opened() {
            let name = p.display().to_string();
            pipeline.add_file(&name, sink)?;
            self.sources.push(name);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The section lists every loss of the tailer under its own name, plus the files read.
    #[test]
    fn the_follow_section_names_every_loss() {
        let losses = TailLosses {
            files_unreadable: 1,
            files_missed: 2,
            bytes_cut_at_file_ends: 3,
            bytes_added_after_finish: 4,
            rewrites: 5,
            compressed_files_cut_short: 6,
        };
        let mut follower = Follower::new("/nonexistent/capture.pcap").unwrap();
        follower.tailer.losses = losses.clone();
        let section = serde_json::to_value(follower.section()).unwrap();
        let mut want = serde_json::to_value(&losses).unwrap();
        want.as_object_mut().unwrap().insert("files_read".into(), 0.into());
        assert_eq!(section, want);
    }

    /// A pass with a budget stops after a slice and the next goes on from there: the passes
    /// together read the capture once, all of it, as one unbounded pass does.
    #[test]
    fn passes_with_a_budget_read_the_capture_a_slice_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.pcap");
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        bytes.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        bytes.extend_from_slice(&65535u32.to_le_bytes());
        bytes.extend_from_slice(&1u32.to_le_bytes());
        let mut frame = [0u8; 54];
        frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        frame[14] = 0x45;
        frame[16..18].copy_from_slice(&40u16.to_be_bytes());
        frame[23] = 6;
        frame[46] = 5 << 4;
        frame[47] = 0x10;
        const FRAMES: u32 = 3 * STOP_CHECK_EVERY + 5;
        for i in 0..FRAMES {
            frame[34..36].copy_from_slice(&((i % 1000) as u16 + 1024).to_be_bytes());
            for w in [1_700_000_000 + i / 1000, i % 1000, 54, 54] {
                bytes.extend_from_slice(&w.to_le_bytes());
            }
            bytes.extend_from_slice(&frame);
        }
        std::fs::write(&path, &bytes).unwrap();
        let session = Session::create(Some(&dir.path().join("s"))).unwrap();
        let mut pipeline = crate::pipeline::Pipeline::new(crate::flow::table::FlowLimits::default());
        let mut sink: Vec<crate::event::Event> = Vec::new();
        let mut follower = Follower::new(path.to_str().unwrap()).unwrap();
        follower.set_pass_budget(Some(Duration::ZERO));
        let mut passes = 0;
        while follower.pass(&session, &mut pipeline, &mut sink).unwrap() {
            passes += 1;
        }
        assert_eq!(passes, 4, "a slice of {STOP_CHECK_EVERY} frames a pass");
        assert_eq!(pipeline.counters.packets, FRAMES as u64);
        assert_eq!(follower.bytes_read(), bytes.len() as u64);
    }
}
