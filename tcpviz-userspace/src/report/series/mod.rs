//! Per-packet series of a few flows — sequence numbers, ACKs, the receive window, bytes in
//! flight, RTT samples, the kernel's cwnd and ssthresh for live sessions — for the graphs of
//! [`super::flow_plots`].
//!
//! The events only name flagged packets, so the series come from the session's capture
//! files, read again with the one packet parser ([`decode_frame`]) and a fresh
//! [`Analyzer`] per flow fed that flow's packets only (its 5-tuple, within its first and
//! last packet times). When the captures are gone the series fall back to what the events
//! of the flow carry, and the page says so.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::page::{escape_plot_text, truncate_chars};
use super::sampling::Decimator;
use crate::analysis::rules::{self, PacketAnalysis};
use crate::analysis::{Analyzer, PacketRef};
use crate::capture::decode::decode_frame;
use crate::capture::files::read_files;
use crate::event::{Event, EventKind};
use crate::flow::Flow;
pub use crate::flow::limits::Limit;
use crate::flow::table::FlowLimits;
use crate::output::summary::{FlowSummary, endpoint};
use crate::time::{NS_PER_SEC, TimestampNs};

mod from_lines;
mod limit_bins;
pub use from_lines::{kernel_series, series_from_events};
use limit_bins::LimitBins;
pub use limit_bins::{LIMIT_BINS, LimitSpan};

/// Flows the report draws in detail (the worst by trouble score).
pub const MAX_DETAIL_FLOWS: usize = 5;
/// Points per trace at most (a flow's series are decimated evenly beyond).
pub const MAX_SERIES_POINTS: usize = 5_000;
/// Marked packets per flow at most, for retransmissions and losses, and again for the other
/// kinds (every one up to this many, evenly thinned beyond).
pub const MAX_MARKS: usize = 1_000;
/// ssthresh at or above this is the kernel's "not set yet" (it starts at 0x7fffffff).
const SSTHRESH_UNSET: u32 = 1 << 30;

/// A flow to draw: which packets are its, and which direction carries the data.
#[derive(Debug, Clone)]
pub struct FlowTarget {
    pub flow_id: u64,
    /// Sender and receiver of the data direction.
    pub data_src: (IpAddr, u16),
    pub data_dst: (IpAddr, u16),
    pub first_ns: TimestampNs,
    pub last_ns: TimestampNs,
}

impl FlowTarget {
    pub fn from_summary(f: &FlowSummary) -> FlowTarget {
        let d = &f.directions[f.data_direction()];
        FlowTarget {
            flow_id: f.flow_id,
            data_src: (d.src, d.sport),
            data_dst: (d.dst, d.dport),
            first_ns: secs_to_ns(f.first_ts),
            last_ns: secs_to_ns(f.last_ts),
        }
    }

    /// Whether a packet from `src` to `dst` at `ts` is this flow's; Some(true) for the data
    /// direction. The summary's times are float seconds: a microsecond of slack.
    fn direction_of(&self, src: (IpAddr, u16), dst: (IpAddr, u16), ts: TimestampNs) -> Option<bool> {
        const SLACK: TimestampNs = 1_000;
        if ts < self.first_ns - SLACK || ts > self.last_ns + SLACK {
            return None;
        }
        if src == self.data_src && dst == self.data_dst {
            Some(true)
        } else if src == self.data_dst && dst == self.data_src {
            Some(false)
        } else {
            None
        }
    }

    pub fn data_label(&self) -> String {
        format!("{} → {}", endpoint(self.data_src.0, self.data_src.1), endpoint(self.data_dst.0, self.data_dst.1))
    }

    /// Seconds since the flow's first packet: the x of every plot of the flow.
    pub fn t(&self, ts: TimestampNs) -> f64 {
        (ts - self.first_ns) as f64 / NS_PER_SEC as f64
    }
}

fn secs_to_ns(secs: f64) -> TimestampNs {
    (secs * 1e9).round() as TimestampNs
}

/// 32-bit sequence numbers made monotonic across wraps (flows of more than 4 GiB).
#[derive(Debug, Clone, Copy, Default)]
struct SeqUnwrap {
    last: Option<u64>,
}

impl SeqUnwrap {
    fn unwrap(&mut self, rel: u32) -> u64 {
        let value = match self.last {
            None => rel as u64,
            Some(prev) => {
                let base = prev & !0xffff_ffff;
                [base.wrapping_sub(1 << 32), base, base + (1 << 32)]
                    .into_iter()
                    .map(|b| b.wrapping_add(rel as u64))
                    .filter(|v| *v < 1 << 62)
                    .min_by_key(|v| v.abs_diff(prev))
                    .unwrap_or(rel as u64)
            }
        };
        self.last = Some(value);
        value
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SegmentPoint {
    pub t: f64,
    pub seq: u64,
    pub len: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AckPoint {
    pub t: f64,
    pub ack: u64,
    /// ACK plus the advertised (scaled) window: the most the sender may have sent.
    pub window_edge: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    pub t: f64,
    /// Sequence number for data-direction events, ACK number for the other direction's.
    pub y: u64,
    pub kind: EventKind,
    pub text: String,
}

/// The kernel's samples of one flow; `decimated` when some were dropped to the bound.
#[derive(Debug, Clone, Default)]
pub struct KernelSeries {
    pub points: Vec<KernelPoint>,
    pub decimated: bool,
}

/// Kernel samples by flow id.
pub type KernelByFlow = BTreeMap<u64, KernelSeries>;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KernelPoint {
    pub t: f64,
    pub cwnd: u32,
    pub ssthresh: Option<u32>,
    pub srtt_ms: Option<f64>,
}

/// Marked packets of a flow, in two bounded sets so that a flood of duplicate ACKs or
/// window updates never thins out the retransmissions and losses: each set keeps every
/// mark up to [`MAX_MARKS`], then thins evenly.
#[derive(Debug, Clone)]
struct MarkSet {
    losses: Decimator<Mark>,
    others: Decimator<Mark>,
}

impl MarkSet {
    fn new() -> MarkSet {
        MarkSet { losses: Decimator::new(MAX_MARKS), others: Decimator::new(MAX_MARKS) }
    }

    fn push(&mut self, mark: Mark) {
        let k = mark.kind;
        if k.is_retransmission() || matches!(k, EventKind::LostSegment | EventKind::LossInfer) {
            self.losses.push(mark);
        } else {
            self.others.push(mark);
        }
    }

    fn seen(&self) -> u64 {
        self.losses.seen() + self.others.seen()
    }

    fn is_complete(&self) -> bool {
        self.losses.is_complete() && self.others.is_complete()
    }

    fn into_points(self) -> Vec<Mark> {
        let mut marks = self.losses.into_points();
        marks.extend(self.others.into_points());
        marks
    }
}

/// Where a flow's series came from.
#[derive(Debug, Clone, PartialEq)]
pub enum SeriesOrigin {
    /// Every packet of the flow, from the capture files.
    Captures,
    /// Only the flagged packets, from events.jsonl.
    Events,
}

/// The series of one flow, each bounded to [`MAX_SERIES_POINTS`] (marks to [`MAX_MARKS`]).
#[derive(Debug, Clone)]
pub struct FlowSeries {
    pub target: FlowTarget,
    pub origin: SeriesOrigin,
    pub packets: u64,
    pub segments: Vec<SegmentPoint>,
    pub acks: Vec<AckPoint>,
    /// (t, ms): RTT of the data direction's segments, and of the other direction's.
    pub rtt_data: Vec<(f64, f64)>,
    pub rtt_reverse: Vec<(f64, f64)>,
    /// (t, ms): RTT of the data direction's segments from TCP timestamp echoes.
    pub rtt_timestamps: Vec<(f64, f64)>,
    /// (t, bytes) of the data direction.
    pub in_flight: Vec<(f64, u32)>,
    pub marks: Vec<Mark>,
    pub marks_total: u64,
    pub kernel: Vec<KernelPoint>,
    /// What limited the data direction's sender, as spans of time (`flow::limits`): the
    /// limit that held longest in each of `LIMIT_BINS` slices of the flow, neighbours with
    /// the same limit joined. Empty without the packets.
    pub limits: Vec<LimitSpan>,
    /// Some series hold fewer points than there were.
    pub decimated: bool,
}

/// Collects one flow's series while its packets are analysed.
struct Collector {
    target: FlowTarget,
    analyzer: Analyzer,
    packets: u64,
    seq_unwrap: SeqUnwrap,
    ack_unwrap: SeqUnwrap,
    segments: Decimator<SegmentPoint>,
    acks: Decimator<AckPoint>,
    rtt_data: Decimator<(f64, f64)>,
    rtt_reverse: Decimator<(f64, f64)>,
    rtt_timestamps: Decimator<(f64, f64)>,
    in_flight: Decimator<(f64, u32)>,
    marks: MarkSet,
    events: Vec<Event>,
    limits: LimitBins,
}

impl Collector {
    fn new(target: FlowTarget) -> Collector {
        Collector {
            analyzer: Analyzer::new(FlowLimits::default()),
            packets: 0,
            seq_unwrap: SeqUnwrap::default(),
            ack_unwrap: SeqUnwrap::default(),
            segments: Decimator::new(MAX_SERIES_POINTS),
            acks: Decimator::new(MAX_SERIES_POINTS),
            rtt_data: Decimator::new(MAX_SERIES_POINTS),
            rtt_reverse: Decimator::new(MAX_SERIES_POINTS),
            rtt_timestamps: Decimator::new(MAX_SERIES_POINTS),
            in_flight: Decimator::new(MAX_SERIES_POINTS),
            marks: MarkSet::new(),
            events: Vec::new(),
            limits: LimitBins::new(target.t(target.last_ns)),
            target,
        }
    }

    fn process(&mut self, seg: &crate::capture::decode::Segment, at: PacketRef, data: bool, file: &str) {
        self.packets += 1;
        let t = self.target.t(seg.ts);
        let Collector {
            analyzer,
            seq_unwrap,
            ack_unwrap,
            segments,
            acks,
            rtt_data,
            rtt_reverse,
            rtt_timestamps,
            in_flight,
            marks,
            events,
            limits,
            ..
        } = self;
        events.clear();
        let mut flagged_y = None;
        analyzer.process_observed(seg, at, events, |flow: &Flow, dir: usize, pa: &PacketAnalysis| {
            let data_dir = if data { dir } else { 1 - dir };
            limits.note(t, flow.dirs[data_dir].limits().map(|c| c.current()));
            // The analyzer's direction 0 is whoever sent first: `data` says which this is.
            if data {
                let seq = seq_unwrap.unwrap(rules::relative(seg.seq, &flow.dirs[dir]));
                if seg.payload_len > 0 {
                    segments.push(SegmentPoint { t, seq, len: seg.payload_len });
                }
                if let Some(b) = pa.bytes_in_flight {
                    in_flight.push((t, b));
                }
                // An ACK in this packet timed the other direction's data.
                if let Some(rtt) = pa.rtt_sample {
                    rtt_reverse.push((t, rtt as f64 / 1e6));
                }
                flagged_y = Some(seq);
            } else {
                if seg.flags.ack() {
                    let ack = ack_unwrap.unwrap(rules::relative(seg.ack, &flow.dirs[1 - dir]));
                    let window_edge = flow.dirs[dir].scaled_window().map(|w| ack + w);
                    acks.push(AckPoint { t, ack, window_edge });
                    flagged_y = Some(ack);
                }
                if let Some(rtt) = pa.rtt_sample {
                    rtt_data.push((t, rtt as f64 / 1e6));
                }
                if let Some(rtt) = pa.ts_rtt_sample {
                    rtt_timestamps.push((t, rtt as f64 / 1e6));
                }
            }
        });
        for e in events.iter() {
            marks.push(Mark { t, y: flagged_y.unwrap_or(0), kind: e.event, text: mark_hover(e, t, Some(file)) });
        }
    }

    fn finish(self, kernel: Vec<KernelPoint>, kernel_decimated: bool) -> FlowSeries {
        let decimated = !(self.segments.is_complete()
            && self.acks.is_complete()
            && self.rtt_data.is_complete()
            && self.rtt_reverse.is_complete()
            && self.rtt_timestamps.is_complete()
            && self.in_flight.is_complete()
            && self.marks.is_complete())
            || kernel_decimated;
        FlowSeries {
            target: self.target,
            origin: SeriesOrigin::Captures,
            packets: self.packets,
            marks_total: self.marks.seen(),
            segments: self.segments.into_points(),
            acks: self.acks.into_points(),
            rtt_data: self.rtt_data.into_points(),
            rtt_reverse: self.rtt_reverse.into_points(),
            rtt_timestamps: self.rtt_timestamps.into_points(),
            in_flight: self.in_flight.into_points(),
            marks: self.marks.into_points(),
            kernel,
            limits: self.limits.into_spans(),
            decimated,
        }
    }
}

fn mark_hover(e: &Event, t: f64, file: Option<&str>) -> String {
    let mut s = format!("<b>{}</b> · {}<br>t = {t:.6} s", e.event, e.severity.as_str());
    if let Some(frame) = e.frame {
        let _ = write!(s, ", frame {frame}");
        if let Some(file) = file.filter(|f| !f.is_empty()) {
            let _ = write!(s, " of {}", escape_plot_text(&truncate_chars(file, 120)));
        }
    }
    let _ = write!(
        s,
        "<br>{} → {}<br>seq {} ack {} len {} flags {}",
        endpoint(e.src, e.sport),
        endpoint(e.dst, e.dport),
        e.extra.rel_seq.map_or(e.seq.to_string(), |r| format!("{r} (rel)")),
        e.extra.rel_ack.map_or(e.ack.to_string(), |r| format!("{r} (rel)")),
        e.len,
        escape_plot_text(&truncate_chars(&e.flags, 16))
    );
    let x = &e.extra;
    if let Some(r) = x.reason {
        let _ = write!(
            s,
            "<br>reason: {}",
            serde_json::to_value(r).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
        );
    }
    if let Some(v) = x.rto_ms {
        let _ = write!(s, "<br>{v:.3} ms after the original (frame {})", x.rto_frame.unwrap_or(0));
    }
    if let Some(n) = x.dupack_num {
        let _ = write!(s, "<br>duplicate ACK #{n} of frame {}", x.dupack_frame.unwrap_or(0));
    }
    if let Some(b) = x.bytes_in_flight {
        let _ = write!(s, "<br>bytes in flight {b}");
    }
    if let Some(v) = x.stall_ms {
        let _ = write!(s, "<br>no ACK progress for {v:.1} ms");
    }
    if let Some(d) = &x.detail {
        let _ = write!(s, "<br>{}", escape_plot_text(&truncate_chars(d, 160)));
    }
    s
}

/// Capture files of a session: a live session's `capture.pcapng` (or its parts) when
/// there, else the summary's sources (as given, then relative to the session folder, then
/// by file name in it). Returns the files found and the sources not found.
pub fn locate_captures(session_dir: &Path, sources: &[String]) -> (Vec<PathBuf>, Vec<String>) {
    // Its parts in order, when rotated.
    let live = crate::output::rotation::files_of(&session_dir.join(crate::output::session::CAPTURE_FILE));
    if !live.is_empty() {
        return (live, Vec::new());
    }
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for s in sources {
        let p = Path::new(s);
        let candidates = [
            Some(p.to_path_buf()),
            (!p.is_absolute()).then(|| session_dir.join(p)),
            p.file_name().map(|n| session_dir.join(n)),
        ];
        match candidates.into_iter().flatten().find(|c| c.is_file()) {
            Some(c) => found.push(c),
            None => missing.push(s.clone()),
        }
    }
    (found, missing)
}

/// What reading the captures again met.
#[derive(Debug, Clone, Default)]
pub struct RereadNotes {
    pub packets: u64,
    pub errors: Vec<String>,
}

/// Reads the capture files in order (as one stream, as the analysis did) and collects the
/// series of the target flows.
pub fn series_from_captures(
    captures: &[PathBuf],
    targets: &[FlowTarget],
    kernel: &KernelByFlow,
) -> (Vec<FlowSeries>, RereadNotes) {
    let mut collectors: Vec<Collector> = targets.iter().cloned().map(Collector::new).collect();
    let (earliest, latest) = targets
        .iter()
        .fold((TimestampNs::MAX, TimestampNs::MIN), |(a, b), t| (a.min(t.first_ns - 1_000), b.max(t.last_ns + 1_000)));
    let names: Vec<String> = captures.iter().map(|p| p.display().to_string()).collect();
    let read = read_files(captures, |frame, at| {
        if frame.ts < earliest || frame.ts > latest {
            return Ok(());
        }
        let Ok(seg) = decode_frame(frame) else { return Ok(()) };
        let packet = PacketRef { frame: frame.number, file_index: at.file_index };
        let file = if captures.len() > 1 { names[at.file_index as usize].as_str() } else { "" };
        for c in collectors.iter_mut() {
            if let Some(data) = c.target.direction_of((seg.src, seg.sport), (seg.dst, seg.dport), seg.ts) {
                c.process(&seg, packet, data, file);
                break;
            }
        }
        Ok::<(), Infallible>(())
    });
    let Ok(read) = read;
    let notes =
        RereadNotes { packets: read.frames, errors: read.errors.iter().map(|e| crate::error::chain(e)).collect() };
    let series = collectors
        .into_iter()
        .map(|c| {
            let k = kernel.get(&c.target.flow_id).cloned().unwrap_or_default();
            c.finish(k.points, k.decimated)
        })
        .collect();
    (series, notes)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_unwrap_across_the_32_bit_boundary() {
        let mut u = SeqUnwrap::default();
        assert_eq!(u.unwrap(1), 1);
        assert_eq!(u.unwrap(u32::MAX - 10), (u32::MAX - 10) as u64, "a first jump back is not a wrap");
        let mut u = SeqUnwrap::default();
        let mut v = 0u64;
        for step in 0..100u64 {
            let rel = (step * 100_000_000) as u32;
            v = u.unwrap(rel);
            assert_eq!(v, step * 100_000_000);
        }
        // A retransmission just before the wrap point after wrapping stays below it.
        assert!(u.unwrap(((v - 50_000_000) & 0xffff_ffff) as u32) == v - 50_000_000);
    }

    pub(crate) fn target() -> FlowTarget {
        FlowTarget {
            flow_id: 4,
            data_src: ("10.0.0.1".parse().unwrap(), 5000),
            data_dst: ("10.0.0.2".parse().unwrap(), 80),
            first_ns: 100 * NS_PER_SEC,
            last_ns: 110 * NS_PER_SEC,
        }
    }

    #[test]
    fn packets_match_by_addresses_and_time() {
        let t = target();
        let a = ("10.0.0.1".parse().unwrap(), 5000);
        let b = ("10.0.0.2".parse().unwrap(), 80);
        assert_eq!(t.direction_of(a, b, 105 * NS_PER_SEC), Some(true));
        assert_eq!(t.direction_of(b, a, 105 * NS_PER_SEC), Some(false));
        assert_eq!(t.direction_of(a, b, 111 * NS_PER_SEC), None, "a later connection on the same ports");
        assert_eq!(t.direction_of(a, ("10.0.0.3".parse().unwrap(), 80), 105 * NS_PER_SEC), None);
    }
}
