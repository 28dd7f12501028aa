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

use super::seq::seq_lt;
use super::state::LazyRtt;
use crate::time::TimestampNs;

/// TSvals timed at once. More give more samples per round trip at no more accuracy; when
/// all are waiting for their echo, new values are not timed until an echo frees a place.
const TIMED: usize = 4;

/// One direction's timed TSvals and the RTT samples their echoes gave.
#[derive(Debug, Clone, Default)]
pub struct TsRtt {
    /// (TSval, time it was first sent), oldest first.
    timed: [(u32, TimestampNs); TIMED],
    len: u8,
    /// Last TSval this direction sent, timed or not: a value is timed only when it is new.
    last_sent: Option<u32>,
    pub rtt: LazyRtt,
}

impl TsRtt {
    /// A segment of this direction that an ACK will answer (data or FIN) left with `tsval`.
    pub fn on_send(&mut self, tsval: u32, ts: TimestampNs) {
        let new = self.last_sent.is_none_or(|last| seq_lt(last, tsval));
        if !new {
            return;
        }
        self.last_sent = Some(tsval);
        if (self.len as usize) < TIMED {
            self.timed[self.len as usize] = (tsval, ts);
            self.len += 1;
        }
    }

    /// The other direction echoed `tsecr` at `ts`: the RTT sample, if it echoes a timed value.
    pub fn on_echo(&mut self, tsecr: u32, ts: TimestampNs) -> Option<TimestampNs> {
        let mut drop = 0;
        let mut sample = None;
        for &(tsval, sent) in &self.timed[..self.len as usize] {
            if seq_lt(tsval, tsecr) {
                // Echoes jumped past it: its segment was lost or its ACK folded into a later
                // one; its send time no longer matches any echo.
                drop += 1;
            } else {
                if tsval == tsecr && ts >= sent {
                    sample = Some(ts - sent);
                    drop += 1;
                }
                break;
            }
        }
        if drop > 0 {
            self.timed.copy_within(drop..self.len as usize, 0);
            self.len -= drop as u8;
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
        assert_eq!(t.len, 0);
    }

    #[test]
    fn full_timer_waits_for_an_echo_and_times_only_new_values() {
        let mut t = TsRtt::default();
        for (i, v) in (10..20u32).enumerate() {
            t.on_send(v, i as TimestampNs * MS);
        }
        assert_eq!(t.len as usize, TIMED);
        assert_eq!(t.on_echo(10, 30 * MS), Some(30 * MS));
        // 19 was sent before the place was free: its first send is not known, so only a
        // later value is timed.
        t.on_send(19, 31 * MS);
        t.on_send(20, 32 * MS);
        assert_eq!(t.timed[..t.len as usize].last(), Some(&(20, 32 * MS)));
    }

    #[test]
    fn clocks_wrap_and_backward_values_are_ignored() {
        let mut t = TsRtt::default();
        t.on_send(u32::MAX, 0);
        t.on_send(2, MS); // wrapped: newer
        t.on_send(1, 2 * MS); // older than the last: not timed
        assert_eq!(t.len, 2);
        assert_eq!(t.on_echo(2, 10 * MS), Some(9 * MS), "u32::MAX is passed over");
    }
}
