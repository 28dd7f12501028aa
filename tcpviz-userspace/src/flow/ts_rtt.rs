//! RTT from TCP timestamp echoes (RFC 7323), a second estimator beside the sequence/ACK one.
//!
//! The sequence/ACK estimator (Wireshark's `tcp.analysis.ack_rtt`) follows Karn's rule: an
//! ACK that covers a retransmitted segment gives no sample, so a long recovery gives few.
//! With timestamps, every segment carries the sender's clock (TSval) and every ACK echoes
//! one (TSecr), so the time from the first segment sent with a TSval to the first ACK that
//! echoes it is an RTT sample whatever was retransmitted: a retransmission carries a fresh
//! TSval, and a receiver echoes the TSval of the segment that last advanced its window.
//!
//! A sender's clock ticks slower than it sends (1 ms on Linux), so many segments share a
//! TSval: only the first send of each value is timed. Echoes of a value below the oldest
//! timed one (duplicate ACKs during recovery echo the last in-order segment's) give nothing.

use std::collections::VecDeque;

use super::seq::seq_lt;
use super::state::LazyRtt;
use crate::time::TimestampNs;

/// TSvals waiting for their echo, at most. Every new value is timed, so the samples come at
/// the sender's clock rate whatever the RTT: timing only a few at once would give many
/// samples when the RTT is short and few when a queue makes it long, and pull the median
/// down (measured: 6.0 ms against the kernel's 8.2 ms through a 20 Mbit/s queue, with 4).
/// At a 1 ms clock this covers RTTs up to 128 ms while sending without pause; beyond, new
/// values wait for an echo to free a place.
const MAX_TIMED: usize = 128;

/// One direction's timed TSvals and the RTT samples their echoes gave.
#[derive(Debug, Clone, Default)]
pub struct TsRtt {
    /// (TSval, time it was first sent), oldest first.
    timed: VecDeque<(u32, TimestampNs)>,
    /// Last TSval this direction sent, timed or not: a value is timed only when it is new.
    last_sent: Option<u32>,
    pub rtt: LazyRtt,
}

impl TsRtt {
    /// Lets go of the TSvals waiting for their echo (a retired flow keeps its samples only).
    pub fn forget_pending(&mut self) {
        self.timed = VecDeque::new();
    }

    /// A segment of this direction that an ACK will answer (data or FIN) left with `tsval`.
    pub fn on_send(&mut self, tsval: u32, ts: TimestampNs) {
        let new = self.last_sent.is_none_or(|last| seq_lt(last, tsval));
        if !new {
            return;
        }
        self.last_sent = Some(tsval);
        if self.timed.len() < MAX_TIMED {
            self.timed.push_back((tsval, ts));
        }
    }

    /// The other direction echoed `tsecr` at `ts`: the RTT sample, if it echoes a timed value.
    pub fn on_echo(&mut self, tsecr: u32, ts: TimestampNs) -> Option<TimestampNs> {
        let mut sample = None;
        while let Some(&(tsval, sent)) = self.timed.front() {
            if seq_lt(tsval, tsecr) {
                // Echoes jumped past it: its segment was lost or its ACK folded into a later
                // one; its send time no longer matches any echo.
                self.timed.pop_front();
                continue;
            }
            if tsval == tsecr && ts >= sent {
                sample = Some(ts - sent);
                self.timed.pop_front();
            }
            break;
        }
        if self.timed.is_empty() && self.timed.capacity() > 8 {
            // A pause in sending: a quiet connection gives its buffer back.
            self.timed = VecDeque::new();
        }
        if let Some(rtt) = sample {
            self.rtt.add(rtt);
        }
        sample
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: TimestampNs = 1_000_000;

    #[test]
    fn first_send_of_each_value_to_its_first_echo() {
        let mut t = TsRtt::default();
        t.on_send(100, 0);
        t.on_send(100, 2 * MS); // same tick: not timed again
        t.on_send(101, 3 * MS);
        assert_eq!(t.on_echo(100, 40 * MS), Some(40 * MS));
        assert_eq!(t.on_echo(100, 41 * MS), None, "a repeated echo is no new sample");
        assert_eq!(t.on_echo(101, 45 * MS), Some(42 * MS));
        assert_eq!((t.rtt.count, t.rtt.median_ns()), (2, Some(41 * MS)));
    }

    #[test]
    fn samples_continue_through_recovery() {
        // 200 and 201 sent; 201's segment is lost. Duplicate ACKs echo 200 (the last in
        // order); the retransmission carries 205 and the ACK that fills the hole echoes it.
        let mut t = TsRtt::default();
        t.on_send(200, 0);
        t.on_send(201, MS);
        assert_eq!(t.on_echo(200, 20 * MS), Some(20 * MS));
        assert_eq!(t.on_echo(200, 21 * MS), None);
        assert_eq!(t.on_echo(200, 22 * MS), None);
        t.on_send(205, 25 * MS);
        assert_eq!(t.on_echo(205, 46 * MS), Some(21 * MS), "201 is passed over, 205 timed");
        assert!(t.timed.is_empty());
    }

    #[test]
    fn every_value_is_timed_until_the_cap_then_only_new_ones_after_an_echo() {
        let mut t = TsRtt::default();
        let n = MAX_TIMED as u32 + 10;
        for v in 0..n {
            t.on_send(1000 + v, v as TimestampNs * MS);
        }
        assert_eq!(t.timed.len(), MAX_TIMED);
        assert_eq!(t.on_echo(1000, 300 * MS), Some(300 * MS));
        // The last value was sent before the place was free: its first send is not known, so
        // only a later value is timed.
        t.on_send(1000 + n - 1, 301 * MS);
        t.on_send(1000 + n, 302 * MS);
        assert_eq!(t.timed.back(), Some(&(1000 + n, 302 * MS)));
        // Samples come from every value, so a long RTT gives as many as a short one.
        for v in 1..10 {
            assert_eq!(t.on_echo(1000 + v, (300 + v as TimestampNs) * MS), Some(300 * MS));
        }
    }

    #[test]
    fn clocks_wrap_and_backward_values_are_ignored() {
        let mut t = TsRtt::default();
        t.on_send(u32::MAX, 0);
        t.on_send(2, MS); // wrapped: newer
        t.on_send(1, 2 * MS); // older than the last: not timed
        assert_eq!(t.timed.len(), 2);
        assert_eq!(t.on_echo(2, 10 * MS), Some(9 * MS), "u32::MAX is passed over");
    }
}
