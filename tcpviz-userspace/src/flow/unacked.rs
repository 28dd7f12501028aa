//! The segments one direction has sent and not yet had acknowledged, in sequence order, as
//! Wireshark's `tcp_unacked_t` list: what the retransmission, RTT and ACK rules look up.

use std::collections::VecDeque;

use crate::time::TimestampNs;

use super::seq::{seq_le, seq_lt};

/// Wireshark's `TCP_MAX_UNACKED_SEGMENTS`: beyond this many, new segments are not tracked.
pub const MAX_UNACKED_SEGMENTS: usize = 10_000;

/// Room for segments that an emptied list keeps (512 bytes), if it ever needed more than one.
const KEPT_WHEN_EMPTY: usize = 16;

/// A segment sent and not yet acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unacked {
    pub seq: u32,
    /// Sequence number after the segment (SYN and FIN count one).
    pub nextseq: u32,
    pub ts: TimestampNs,
    pub frame: u64,
    /// Sent more than once: an ACK for it gives no RTT sample (Karn's rule).
    pub retransmitted: bool,
}

/// Unacknowledged segments of one direction, ordered by `nextseq` (wrap-safe), so that an
/// ACK removes a prefix. Ties keep insertion order, so the first of equals is the eldest.
#[derive(Debug, Default, Clone)]
pub struct UnackedList {
    items: VecDeque<Unacked>,
}

/// What a cumulative ACK did to the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AckOutcome {
    /// The eldest segment whose end the ACK names exactly (Wireshark's `frame_acked`).
    pub exact: Option<Unacked>,
    /// True if any segment ending exactly at the ACK was sent more than once.
    pub exact_retransmitted: bool,
    pub removed: usize,
}

impl UnackedList {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn insert(&mut self, u: Unacked) {
        if self.items.capacity() == 0 {
            // Most connections never have more than one segment outstanding (a SYN, a
            // request): room for one, not the four a first push would reserve.
            self.items.reserve_exact(1);
        }
        let at = match self.items.back() {
            Some(last) if seq_lt(u.nextseq, last.nextseq) => self.insert_position(u.nextseq),
            _ => self.items.len(),
        };
        self.items.insert(at, u);
    }

    /// Removes every segment that `ack` covers (nextseq <= ack), as Wireshark does.
    pub fn ack(&mut self, ack: u32) -> AckOutcome {
        let mut out = AckOutcome::default();
        while let Some(front) = self.items.front() {
            if !seq_le(front.nextseq, ack) {
                break;
            }
            if front.nextseq == ack {
                if out.exact.is_none() {
                    out.exact = Some(*front);
                }
                out.exact_retransmitted |= front.retransmitted;
            }
            self.items.pop_front();
            out.removed += 1;
        }
        if out.removed > 0 && self.items.is_empty() && !(2..=KEPT_WHEN_EMPTY).contains(&self.items.capacity()) {
            // Most connections are quiet with nothing outstanding, or have one segment out at
            // a time: they hold no buffer. A sender with a few segments in flight keeps its
            // small one, or it would be allocated again at each of its next segments.
            self.items = VecDeque::new();
        }
        out
    }

    /// Binary search by logical index, not `VecDeque::partition_point`: that one picks the
    /// front or the back slice first, so on a list that sequence-number wrap or wild jumps
    /// left unsorted, its answer would depend on where the ring buffer wraps in memory.
    fn insert_position(&self, nextseq: u32) -> usize {
        let (mut lo, mut hi) = (0, self.items.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if seq_le(self.items[mid].nextseq, nextseq) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Marks the segments that overlap `[seq, end)` as retransmitted; true if one of them
    /// had been already.
    pub fn mark_retransmitted(&mut self, seq: u32, end: u32) -> bool {
        let mut again = false;
        for u in self.items.iter_mut() {
            if seq_lt(u.seq, end) && seq_lt(seq, u.nextseq) {
                again |= u.retransmitted;
                u.retransmitted = true;
            }
        }
        again
    }

    /// The segment sent first (lowest frame number) of those still unacknowledged.
    pub fn eldest(&self) -> Option<&Unacked> {
        self.items.iter().min_by_key(|u| u.frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(seq: u32, len: u32, frame: u64) -> Unacked {
        Unacked { seq, nextseq: seq.wrapping_add(len), ts: frame as i64 * 10, frame, retransmitted: false }
    }

    #[test]
    fn ack_removes_covered_prefix_and_reports_exact_match() {
        let mut l = UnackedList::default();
        for (i, s) in [100u32, 200, 300, 400].iter().enumerate() {
            l.insert(u(*s, 100, i as u64 + 1));
        }
        let out = l.ack(300);
        assert_eq!(out.removed, 2);
        assert_eq!(out.exact.map(|x| x.frame), Some(2));
        assert_eq!(l.len(), 2);
        // A retransmission of 300..400 sorts before the 400..500 original.
        let mut r = u(300, 100, 9);
        r.retransmitted = true;
        l.insert(r);
        l.mark_retransmitted(300, 400);
        let out = l.ack(400);
        assert_eq!(out.exact.map(|x| x.frame), Some(3), "the eldest of equals is reported");
        assert!(out.exact_retransmitted);
        assert_eq!(l.eldest().map(|x| x.frame), Some(4));
    }

    #[test]
    fn ordering_is_wrap_safe() {
        let mut l = UnackedList::default();
        l.insert(u(u32::MAX - 150, 100, 1));
        l.insert(u(u32::MAX - 50, 100, 2)); // wraps past zero
        l.insert(u(49, 100, 3));
        assert_eq!(l.ack(49).removed, 2);
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn insert_position_does_not_depend_on_the_ring_layout() {
        // Wild jumps leave the list unsorted; the same contents must give the same answer
        // however the ring buffer holds them.
        let seqs = [10u32, 1_500_000_000, 20, 1_600_000_000, 22, 30];
        let mut answers = Vec::new();
        for rotate in 0..8 {
            let mut l = UnackedList { items: VecDeque::with_capacity(8) };
            for i in 0..rotate {
                l.items.push_back(u(i, 1, 0));
            }
            for _ in 0..rotate {
                l.items.pop_front();
            }
            for (i, s) in seqs.iter().enumerate() {
                l.items.push_back(u(*s, 1, i as u64));
            }
            l.insert(u(25, 1, 9));
            answers.push(l.items.iter().map(|x| x.frame).collect::<Vec<_>>());
        }
        assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
    }
}
