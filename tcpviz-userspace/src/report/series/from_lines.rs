//! The series the session's JSON-lines files give: the kernel's samples of live sessions,
//! and the events' own fields, the fallback when the capture files are gone.

use std::path::Path;

use super::{
    AckPoint, FlowSeries, FlowTarget, KernelByFlow, KernelPoint, KernelSeries, MAX_SERIES_POINTS, Mark, MarkSet,
    SSTHRESH_UNSET, SeqUnwrap, SeriesOrigin, mark_hover,
};
use crate::event::{Event, KernelSample};
use crate::report::sampling::Decimator;
use crate::report::{LineCounts, ReportError, read_json_lines};

/// The series the events of the target flows give (only their flagged packets): the
/// fallback when the captures are gone.
pub fn series_from_events(
    events_path: &Path,
    targets: &[FlowTarget],
    kernel: &KernelByFlow,
) -> Result<(Vec<FlowSeries>, Option<LineCounts>), ReportError> {
    struct Partial {
        seq: SeqUnwrap,
        ack: SeqUnwrap,
        acks: Decimator<AckPoint>,
        srtt: Decimator<(f64, f64)>,
        in_flight: Decimator<(f64, u32)>,
        marks: MarkSet,
    }
    let mut partial: Vec<Partial> = targets
        .iter()
        .map(|_| Partial {
            seq: SeqUnwrap::default(),
            ack: SeqUnwrap::default(),
            acks: Decimator::new(MAX_SERIES_POINTS),
            srtt: Decimator::new(MAX_SERIES_POINTS),
            in_flight: Decimator::new(MAX_SERIES_POINTS),
            marks: MarkSet::new(),
        })
        .collect();
    let counts = read_json_lines::<Event>(events_path, "an event", |e| {
        let Some(i) = targets.iter().position(|t| t.flow_id == e.flow_id) else { return };
        let target = &targets[i];
        let p = &mut partial[i];
        let t = target.t(e.ts);
        let data = (e.src, e.sport) == target.data_src;
        let y = if data {
            e.extra.rel_seq.map(|s| p.seq.unwrap(s))
        } else {
            e.extra.rel_ack.map(|a| {
                let ack = p.ack.unwrap(a);
                p.acks.push(AckPoint { t, ack, window_edge: e.extra.window.map(|w| ack + w) });
                ack
            })
        };
        if data && let Some(b) = e.extra.bytes_in_flight {
            p.in_flight.push((t, b));
        }
        if let Some(srtt) = e.extra.srtt_ms {
            p.srtt.push((t, srtt));
        }
        p.marks.push(Mark { t, y: y.unwrap_or(0), kind: e.event, text: mark_hover(&e, t, e.file.as_deref()) });
    })?;
    let series = targets
        .iter()
        .zip(partial)
        .map(|(target, p)| {
            let k = kernel.get(&target.flow_id).cloned().unwrap_or_default();
            let decimated = !(p.acks.is_complete() && p.srtt.is_complete() && p.marks.is_complete()) || k.decimated;
            FlowSeries {
                target: target.clone(),
                origin: SeriesOrigin::Events,
                packets: 0,
                segments: Vec::new(),
                acks: p.acks.into_points(),
                rtt_data: p.srtt.into_points(),
                rtt_reverse: Vec::new(),
                rtt_timestamps: Vec::new(),
                in_flight: p.in_flight.into_points(),
                marks_total: p.marks.seen(),
                marks: p.marks.into_points(),
                kernel: k.points,
                limits: Vec::new(),
                decimated,
            }
        })
        .collect();
    Ok((series, counts))
}

/// The kernel's samples (`kernel_samples.jsonl`) of each target flow: by flow id when the
/// sample names one, else by the socket's addresses (either way round) within the flow's
/// time. Decimated to [`MAX_SERIES_POINTS`]; the flag says whether any were dropped.
pub fn kernel_series(path: &Path, targets: &[FlowTarget]) -> Result<(KernelByFlow, Option<LineCounts>), ReportError> {
    let mut per: Vec<Decimator<KernelPoint>> = targets.iter().map(|_| Decimator::new(MAX_SERIES_POINTS)).collect();
    let counts = read_json_lines::<KernelSample>(path, "a kernel sample", |k| {
        let which = targets.iter().position(|t| match k.flow_id {
            Some(id) => id == t.flow_id,
            None => t.direction_of((k.src, k.sport), (k.dst, k.dport), k.ts).is_some(),
        });
        if let Some(i) = which {
            per[i].push(KernelPoint {
                t: targets[i].t(k.ts),
                cwnd: k.snd_cwnd,
                ssthresh: (k.ssthresh < SSTHRESH_UNSET).then_some(k.ssthresh),
                // 0: the kernel has no RTT sample yet; drawn, it would read as an RTT of 0.
                srtt_ms: (k.srtt_us > 0).then(|| k.srtt_us as f64 / 1e3),
            });
        }
    })?;
    let map = targets
        .iter()
        .zip(per)
        .filter(|(_, d)| d.seen() > 0)
        .map(|(t, d)| {
            let decimated = !d.is_complete();
            (t.flow_id, KernelSeries { points: d.into_points(), decimated })
        })
        .collect();
    Ok((map, counts))
}
