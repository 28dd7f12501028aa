//! What limited a flow's sender over its time (`flow::limits`), as the band of the flow
//! graphs draws it: the limit that held longest in each of [`LIMIT_BINS`] slices, joined
//! into spans.

use crate::flow::limits::Limit;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimitSpan {
    pub start: f64,
    pub end: f64,
    pub limit: Limit,
}

/// Slices of a flow's time for the limit band: fine enough to see phases, few enough that
/// a flow of millions of packets draws as fast as a short one.
pub const LIMIT_BINS: usize = 240;

/// Time of each limit in each slice of the flow.
pub(super) struct LimitBins {
    duration: f64,
    bins: Vec<[f64; 4]>,
    /// Since when which limit has held.
    last: Option<(f64, Limit)>,
}

impl LimitBins {
    pub(super) fn new(duration: f64) -> LimitBins {
        LimitBins { duration: duration.max(1e-9), bins: vec![[0.0; 4]; LIMIT_BINS], last: None }
    }

    /// The limit after a packet at `t` (None: the data direction's clock has not started).
    pub(super) fn note(&mut self, t: f64, now: Option<Limit>) {
        if let Some((since, limit)) = self.last {
            self.add(since, t, limit);
        }
        self.last = now.map(|l| (t, l));
    }

    fn add(&mut self, from: f64, to: f64, limit: Limit) {
        let width = self.duration / LIMIT_BINS as f64;
        let bin_of = |t: f64| ((t / width).floor().max(0.0) as usize).min(LIMIT_BINS - 1);
        for b in bin_of(from)..=bin_of(to) {
            let (lo, hi) = (b as f64 * width, (b + 1) as f64 * width);
            let overlap = to.min(hi) - from.max(lo);
            if overlap > 0.0 {
                self.bins[b][limit as usize] += overlap;
            }
        }
    }

    pub(super) fn into_spans(self) -> Vec<LimitSpan> {
        let width = self.duration / LIMIT_BINS as f64;
        let mut spans: Vec<LimitSpan> = Vec::new();
        for (b, times) in self.bins.iter().enumerate() {
            let Some(limit) = Limit::ALL
                .into_iter()
                .filter(|l| times[*l as usize] > 0.0)
                .max_by(|a, b| times[*a as usize].total_cmp(&times[*b as usize]))
            else {
                continue;
            };
            let (start, end) = (b as f64 * width, (b + 1) as f64 * width);
            match spans.last_mut() {
                Some(s) if s.limit == limit && (s.end - start).abs() < width * 1e-6 => s.end = end,
                _ => spans.push(LimitSpan { start, end, limit }),
            }
        }
        spans
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The band's slices take the limit that held longest in each; neighbours with the same
    /// limit are one span, and time before the clock started is no span.
    #[test]
    fn limit_slices_join_into_spans() {
        let mut b = LimitBins::new(2.4);
        let w = 2.4 / LIMIT_BINS as f64;
        b.note(0.0, None);
        b.note(0.5 * w, Some(Limit::CongestionWindow));
        b.note(100.0 * w, Some(Limit::LossRecovery));
        // A short application moment inside recovery does not split it.
        b.note(150.0 * w, Some(Limit::Application));
        b.note(150.1 * w, Some(Limit::LossRecovery));
        b.note(200.0 * w, Some(Limit::CongestionWindow));
        b.note(2.4, None);
        let spans: Vec<(usize, usize, Limit)> = b
            .into_spans()
            .iter()
            .map(|s| ((s.start / w).round() as usize, (s.end / w).round() as usize, s.limit))
            .collect();
        assert_eq!(
            spans,
            [(0, 100, Limit::CongestionWindow), (100, 200, Limit::LossRecovery), (200, 240, Limit::CongestionWindow)]
        );
    }
}
