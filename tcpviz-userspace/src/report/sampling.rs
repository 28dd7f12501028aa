//! Keeping plots bounded: streaming decimation of per-packet series, proportional quotas
//! for sampling events, even picking within a quota, and folding the tail of a ranking.

/// Keeps at most `max` points of a stream, evenly spaced by arrival: every `stride`-th
/// point, the stride doubling (and every other kept point dropped) whenever the buffer
/// overflows. The last point is always kept, so a series reaches the end of its flow.
/// Memory stays at `max` points whatever the stream's length.
#[derive(Debug, Clone)]
pub struct Decimator<T> {
    points: Vec<T>,
    last: Option<T>,
    stride: u64,
    seen: u64,
    max: usize,
}

impl<T: Clone> Decimator<T> {
    pub fn new(max: usize) -> Decimator<T> {
        let max = max.max(2);
        Decimator { points: Vec::new(), last: None, stride: 1, seen: 0, max: max - 1 }
    }

    pub fn push(&mut self, point: T) {
        if self.seen.is_multiple_of(self.stride) {
            self.points.push(point);
            self.last = None;
            if self.points.len() > self.max {
                let mut index = 0usize;
                self.points.retain(|_| {
                    index += 1;
                    index % 2 == 1
                });
                self.stride *= 2;
            }
        } else {
            self.last = Some(point);
        }
        self.seen += 1;
    }

    /// Points pushed so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// True while every point pushed is kept.
    pub fn is_complete(&self) -> bool {
        self.stride == 1
    }

    pub fn into_points(self) -> Vec<T> {
        let mut points = self.points;
        points.extend(self.last);
        points
    }
}

/// Splits `budget` over groups in proportion to their sizes. Every non-empty group keeps
/// at least one (a rare kind of event stays visible beside a flood of another), and no
/// group more than it has; the total is at most `budget` plus the number of groups.
pub fn proportional_quotas(counts: &[u64], budget: u64) -> Vec<u64> {
    let total: u64 = counts.iter().sum();
    if total <= budget {
        return counts.to_vec();
    }
    counts
        .iter()
        .map(|&c| if c == 0 { 0 } else { ((c as u128 * budget as u128 / total as u128) as u64).clamp(1, c) })
        .collect()
}

/// Picks `quota` of `count` items arriving one by one, spread evenly over the sequence
/// (the picks up to item j are round(j × quota / count)).
#[derive(Debug, Clone, Copy)]
pub struct EvenPicker {
    count: u64,
    quota: u64,
    index: u64,
}

impl EvenPicker {
    pub fn new(count: u64, quota: u64) -> EvenPicker {
        EvenPicker { count, quota: quota.min(count), index: 0 }
    }

    fn picked_through(&self, j: u64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        ((2 * j as u128 * self.quota as u128 + self.count as u128) / (2 * self.count as u128)) as u64
    }

    /// Whether to keep the next item.
    pub fn pick(&mut self) -> bool {
        let keep = self.index < self.count && self.picked_through(self.index + 1) > self.picked_through(self.index);
        self.index += 1;
        keep
    }
}

/// The first `max_shown` items (already ranked, best first) and the rest, which a plot
/// folds into one "other" row. Folding a single item would not save a row, so up to
/// `max_shown + 1` items are all shown.
pub fn fold_tail<T>(mut ranked: Vec<T>, max_shown: usize) -> (Vec<T>, Vec<T>) {
    if ranked.len() <= max_shown + 1 {
        return (ranked, Vec::new());
    }
    let rest = ranked.split_off(max_shown);
    (ranked, rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimator_is_bounded_spreads_evenly_and_keeps_the_last_point() {
        let mut d = Decimator::new(100);
        for i in 0..10_000u32 {
            d.push(i);
            assert!(d.points.len() < 100);
        }
        assert!(!d.is_complete());
        assert_eq!(d.seen(), 10_000);
        let points = d.into_points();
        assert!(points.len() <= 100 && points.len() >= 50, "{}", points.len());
        assert_eq!(points[0], 0);
        assert_eq!(*points.last().unwrap(), 9_999);
        // Evenly spaced: one stride between consecutive points (except the appended last).
        let stride = points[1] - points[0];
        assert!(points[..points.len() - 1].windows(2).all(|w| w[1] - w[0] == stride));

        let mut small = Decimator::new(100);
        for i in 0..50u32 {
            small.push(i);
        }
        assert!(small.is_complete());
        assert_eq!(small.into_points(), (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn quotas_are_proportional_with_a_floor_of_one() {
        assert_eq!(proportional_quotas(&[5, 3], 100), vec![5, 3]);
        let q = proportional_quotas(&[990_000, 8_999, 1_000, 1, 0], 20_000);
        assert_eq!(q, vec![19_800, 179, 20, 1, 0]);
        let counts: Vec<u64> = (0..2000).map(|i| 500 + i % 7).collect();
        let total: u64 = proportional_quotas(&counts, 20_000).iter().sum();
        assert!((19_000..=22_000).contains(&total), "{total}");
    }

    #[test]
    fn even_picker_picks_exactly_the_quota_spread_out() {
        for (count, quota) in [(10u64, 3u64), (1_000, 1), (7, 7), (5, 0), (1_000_000, 20_000)] {
            let mut p = EvenPicker::new(count, quota);
            let picks: Vec<u64> = (0..count).filter(|_| p.pick()).collect();
            assert_eq!(picks.len() as u64, quota, "{count} {quota}");
            if quota == 1 {
                assert!(((count - 1) / 2..=count / 2).contains(&picks[0]), "a single pick is in the middle");
            }
            if quota > 1 {
                let gap = count / quota;
                assert!(picks.windows(2).all(|w| w[1] - w[0] >= gap.saturating_sub(1) && w[1] - w[0] <= gap + 1));
            }
        }
        let mut p = EvenPicker::new(2, 1);
        assert_eq!((p.pick(), p.pick(), p.pick()), (true, false, false), "nothing past the count");
    }

    #[test]
    fn folding_keeps_the_top_and_never_folds_a_single_item() {
        let (shown, rest) = fold_tail((0..31).collect::<Vec<_>>(), 30);
        assert_eq!((shown.len(), rest.len()), (31, 0));
        let (shown, rest) = fold_tail((0..2000).collect::<Vec<_>>(), 30);
        assert_eq!(shown, (0..30).collect::<Vec<_>>());
        assert_eq!(rest.len(), 1970);
        assert_eq!(rest[0], 30);
    }
}
