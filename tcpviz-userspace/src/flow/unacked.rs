//! The segments one direction has sent and not yet had acknowledged, in sequence order, as
//! Wireshark's `tcp_unacked_t` list: what the retransmission, RTT and ACK rules look up.

use std::collections::VecDeque;

use crate::time::TimestampNs;

use super::seq::{seq_le, seq_lt};

/// Wireshark's `TCP_MAX_UNACKED_SEGMENTS`: beyond this many, new segments are not tracked.
pub const MAX_UNACKED_SEGMENTS: usize = 10_000;

/// Room for segments that an emptied list keeps (512 bytes).
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
    items: Items,
}

/// Most connections never have more than one segment outstanding at a time (a SYN, a
/// request): that one is held in place, and a list is allocated only for a second. The
/// list is boxed so that all three fit in the 32 bytes a bare `VecDeque` took (the flow
/// stays in its malloc size class).
#[derive(Debug, Default, Clone)]
enum Items {
    #[default]
    None,
    One(Unacked),
    #[allow(clippy::box_collection)]
    Many(Box<VecDeque<Unacked>>),
}

const _: () = assert!(std::mem::size_of::<Items>() == 32);

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
        match &self.items {
            Items::None => 0,
            Items::One(_) => 1,
            Items::Many(list) => list.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn insert(&mut self, u: Unacked) {
        let list = match &mut self.items {
            Items::None => {
                self.items = Items::One(u);
                return;
            }
            Items::One(first) => {
                let mut list = VecDeque::with_capacity(4);
                list.push_back(*first);
                self.items = Items::Many(Box::new(list));
                let Items::Many(list) = &mut self.items else { unreachable!() };
                list
            }
            Items::Many(list) => list,
        };
        let at = match list.back() {
            Some(last) if seq_lt(u.nextseq, last.nextseq) => insert_position(list, u.nextseq),
            _ => list.len(),
        };
        list.insert(at, u);
    }

    /// Removes every segment that `ack` covers (nextseq <= ack), as Wireshark does.
    pub fn ack(&mut self, ack: u32) -> AckOutcome {
        let mut out = AckOutcome::default();
        match &mut self.items {
            Items::None => {}
            Items::One(only) => {
                if seq_le(only.nextseq, ack) {
                    if only.nextseq == ack {
                        out.exact = Some(*only);
                        out.exact_retransmitted = only.retransmitted;
                    }
                    out.removed = 1;
                    self.items = Items::None;
                }
            }
            Items::Many(list) => {
                while let Some(front) = list.front() {
                    if !seq_le(front.nextseq, ack) {
                        break;
                    }
                    if front.nextseq == ack {
                        if out.exact.is_none() {
                            out.exact = Some(*front);
                        }
                        out.exact_retransmitted |= front.retransmitted;
                    }
                    list.pop_front();
                    out.removed += 1;
                }
                if out.removed > 0 && list.is_empty() && list.capacity() > KEPT_WHEN_EMPTY {
                    // A quiet connection holds no large buffer; a sender with a few
                    // segments in flight keeps its small one, or it would be allocated again
                    // at each of its next segments.
                    self.items = Items::None;
                }
            }
        }
        out
    }

    /// Marks the segments that overlap `[seq, end)` as retransmitted; true if one of them
    /// had been already.
    pub fn mark_retransmitted(&mut self, seq: u32, end: u32) -> bool {
        let mut again = false;
        let items: &mut dyn Iterator<Item = &mut Unacked> = match &mut self.items {
            Items::None => return false,
            Items::One(only) => &mut std::iter::once(only),
            Items::Many(list) => &mut list.iter_mut(),
        };
        for u in items {
            if seq_lt(u.seq, end) && seq_lt(seq, u.nextseq) {
                again |= u.retransmitted;
                u.retransmitted = true;
            }
        }
        again
    }

    /// The segment sent first (lowest frame number) of those still unacknowledged.
    pub fn eldest(&self) -> Option<&Unacked> {
        match &self.items {
            Items::None => None,
            Items::One(only) => Some(only),
            Items::Many(list) => list.iter().min_by_key(|u| u.frame),
        }
    }
}

/// Binary search by logical index, not `VecDeque::partition_point`: that one picks the
/// front or the back slice first, so on a list that sequence-number wrap or wild jumps left
/// unsorted, its answer would depend on where the ring buffer wraps in memory.
fn insert_position(list: &VecDeque<Unacked>, nextseq: u32) -> usize {
    let (mut lo, mut hi) = (0, list.len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if seq_le(list[mid].nextseq, nextseq) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
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
            let mut list = VecDeque::with_capacity(8);
            for i in 0..rotate {
                list.push_back(u(i, 1, 0));
            }
            for _ in 0..rotate {
                list.pop_front();
            }
            for (i, s) in seqs.iter().enumerate() {
                list.push_back(u(*s, 1, i as u64));
            }
            let mut l = UnackedList { items: Items::Many(Box::new(list)) };
            l.insert(u(25, 1, 9));
            let Items::Many(list) = &l.items else { panic!("a list of several") };
            answers.push(list.iter().map(|x| x.frame).collect::<Vec<_>>());
        }
        assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
    }
}
