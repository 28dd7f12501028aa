//! Why is this connection slow: what limited each direction's sending, over time.
//!
//! From its second data segment on, a direction's time is cut at every packet of the
//! connection, and each interval goes to what held the sender back at its start:
//!
//! 1. **loss recovery**: from a loss signal (a retransmission, or the third duplicate ACK
//!    from the receiver) until the receiver's ACK passes the highest byte sent at that
//!    signal (RFC 6582's recovery point);
//! 2. **receiver window**: the receiver advertises zero, or what is in flight plus one
//!    segment does not fit in its window;
//! 3. **application**: nothing in flight with the window open, or the last segment sent was
//!    short (the application wrote less than a segment). A time with nothing in flight is
//!    the application's only when it lasts: at a receiver's capture point every ACK leaves
//!    nothing in flight until the sender's next segment arrives, an RTT later. So such a
//!    pause is decided when it ends: ended by a new segment within two handshake RTTs (at
//!    least 1 ms), the sender was waiting for that ACK (congestion window); longer, or
//!    ended otherwise, it was the application;
//! 4. **congestion window**: data in flight, the receiver's window open and no loss to
//!    repair, and the sender waits for ACKs because its congestion window is full: in flight
//!    plus a segment does not fit in the kernel's own cwnd (live sessions: `tcp_probe`'s
//!    `snd_cwnd` × the socket's `mss_cache`), or, the estimate where the kernel does not say
//!    so, the last segment sent was full-sized (an application that stops short of a
//!    segment is 3.). A sender with room in its cwnd that sends full segments is paced by
//!    its host (TSQ, pacing, CPU): counted here too, as the network side of the sender.
//!
//! The clock starts at the second data segment so that the many connections that send one
//! segment a side (requests, answers that fit a segment) pay nothing for it.

use serde::{Deserialize, Serialize};

use crate::flow::seq::seq_lt;
use crate::time::TimestampNs;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Limit {
    ReceiverWindow,
    CongestionWindow,
    LossRecovery,
    #[default]
    Application,
}

impl Limit {
    pub const ALL: [Limit; 4] =
        [Limit::ReceiverWindow, Limit::CongestionWindow, Limit::LossRecovery, Limit::Application];

    /// What it means, as the report's legend says it.
    pub fn name(self) -> &'static str {
        match self {
            Limit::ReceiverWindow => "receiver window",
            Limit::CongestionWindow => "congestion window",
            Limit::LossRecovery => "loss recovery",
            Limit::Application => "application",
        }
    }

    /// Short name, as the table shows it.
    pub fn short(self) -> &'static str {
        match self {
            Limit::ReceiverWindow => "rwnd",
            Limit::CongestionWindow => "cwnd",
            Limit::LossRecovery => "loss",
            Limit::Application => "app",
        }
    }
}

/// The limit clock of one sending direction.
#[derive(Debug, Clone, Default)]
pub struct LimitClock {
    since: TimestampNs,
    current: Limit,
    ns: [i64; 4],
    /// In loss recovery until the receiver acknowledges this sequence number.
    recovery_until: Option<u32>,
    largest_segment: u32,
    last_segment: u32,
    /// The kernel's congestion window and segment size (live; 0 when unknown).
    kernel_cwnd: u32,
    kernel_mss: u32,
    syn_mss: u16,
    /// Nothing in flight since the last packet: the time is held in `idle_ns` until the
    /// pause ends (see above); `sent` marks a new segment in the current packet.
    idle: bool,
    idle_ns: i64,
    sent: bool,
    /// Two handshake RTTs, at least 1 ms: a longer pause is the application's.
    ack_clock_ns: i64,
}

/// The shortest pause that is the application's, whatever the RTT.
const MIN_APPLICATION_PAUSE: TimestampNs = 1_000_000;

/// What the sender's situation is after a packet, as the clock needs it.
#[derive(Debug, Clone, Copy)]
pub struct SenderView {
    /// The sender's highest sequence number sent (its `nextseq`).
    pub nextseq: u32,
    /// The receiver's highest ACK (0: none yet).
    pub acked: u32,
    /// The receiver's advertised window, scaled, when known.
    pub window: Option<u64>,
    /// The smaller MSS option of the SYNs (0: unknown).
    pub syn_mss: u16,
    /// The handshake RTT (0: unknown).
    pub rtt: TimestampNs,
}

impl LimitClock {
    pub fn new(ts: TimestampNs) -> LimitClock {
        LimitClock { since: ts, ..Default::default() }
    }

    /// The kernel's congestion window, in segments of `mss` bytes (`tcp_probe`).
    pub fn set_kernel_cwnd(&mut self, cwnd: u32, mss: u32) {
        self.kernel_cwnd = cwnd;
        self.kernel_mss = mss;
    }

    /// What holds the sender back now.
    pub fn current(&self) -> Limit {
        self.current
    }

    /// Gives the time since the last packet to the limit that held then.
    pub fn advance(&mut self, ts: TimestampNs) {
        if ts > self.since {
            if self.idle {
                self.idle_ns += ts - self.since;
            } else {
                self.ns[self.current as usize] += ts - self.since;
            }
            self.since = ts;
        }
    }

    /// A data segment of this direction of `len` bytes; `retransmission`: the rules flagged it.
    pub fn on_data(&mut self, len: u32, retransmission: bool, view: SenderView) {
        self.largest_segment = self.largest_segment.max(len);
        self.syn_mss = view.syn_mss;
        self.ack_clock_ns = (2 * view.rtt).max(MIN_APPLICATION_PAUSE);
        if !retransmission {
            self.last_segment = len;
            self.sent = true;
        }
        if retransmission {
            self.enter_recovery(view);
        }
    }

    /// The receiver's third (or later) duplicate ACK: a loss signal.
    pub fn on_duplicate_acks(&mut self, view: SenderView) {
        self.enter_recovery(view);
    }

    fn enter_recovery(&mut self, view: SenderView) {
        let point = match self.recovery_until {
            Some(p) if seq_lt(view.nextseq, p) => p,
            _ => view.nextseq,
        };
        self.recovery_until = Some(point);
    }

    /// Decides what holds the sender back from now on.
    pub fn update(&mut self, view: SenderView) {
        if let Some(p) = self.recovery_until
            && view.acked != 0
            && !seq_lt(view.acked, p)
        {
            self.recovery_until = None;
        }
        let in_flight = if view.acked == 0 || seq_lt(view.nextseq, view.acked) {
            0
        } else {
            view.nextseq.wrapping_sub(view.acked) as u64
        };
        let segment = self.segment_size() as u64;
        self.current = if self.recovery_until.is_some() {
            Limit::LossRecovery
        } else if view.window.is_some_and(|w| w == 0 || in_flight + segment > w) {
            Limit::ReceiverWindow
        } else if in_flight == 0 {
            Limit::Application
        } else if self.kernel_cwnd > 0
            && self.kernel_mss > 0
            && in_flight + self.kernel_mss as u64 > self.kernel_cwnd as u64 * self.kernel_mss as u64
        {
            // The kernel says its window is full, whatever the last write was.
            Limit::CongestionWindow
        } else if self.short_write() {
            Limit::Application
        } else {
            Limit::CongestionWindow
        };
        let idle = self.current == Limit::Application && in_flight == 0;
        if self.idle && (!idle || self.sent) {
            // The pause ended: by the sender's next segment soon enough, it waited for
            // the ACK; else the application had nothing to send.
            let to = if self.sent && self.idle_ns <= self.ack_clock_ns {
                Limit::CongestionWindow
            } else {
                Limit::Application
            };
            self.ns[to as usize] += std::mem::take(&mut self.idle_ns);
        }
        self.idle = idle;
        self.sent = false;
    }

    /// The size of a full segment: the kernel's MSS, else the SYNs' option, else the
    /// largest segment seen.
    fn segment_size(&self) -> u32 {
        if self.kernel_mss > 0 {
            self.kernel_mss
        } else if self.syn_mss > 0 {
            self.syn_mss as u32
        } else {
            self.largest_segment
        }
    }

    /// The last segment sent was less than a full one: the application wrote less. A
    /// capture shows GSO super-packets of several segments, so "full" is the socket's MSS
    /// (the kernel's; else the SYNs' option less up to 40 bytes of TCP options), and only
    /// without either the largest segment seen.
    fn short_write(&self) -> bool {
        let last = self.last_segment;
        if self.kernel_mss > 0 {
            last < self.kernel_mss
        } else if self.syn_mss > 40 {
            last + 40 < self.syn_mss as u32
        } else {
            last < self.largest_segment
        }
    }

    pub fn limited_by(&self) -> LimitedBy {
        // A pause still going on at the end is the application's.
        let mut ns = self.ns;
        ns[Limit::Application as usize] += self.idle_ns;
        let total: i64 = ns.iter().sum();
        let share = |l: Limit| if total > 0 { ns[l as usize] as f64 / total as f64 } else { 0.0 };
        LimitedBy {
            seconds: total as f64 / 1e9,
            receiver_window: share(Limit::ReceiverWindow),
            congestion_window: share(Limit::CongestionWindow),
            loss_recovery: share(Limit::LossRecovery),
            application: share(Limit::Application),
        }
    }
}

/// What limited a direction's sending, as fractions of `seconds` (from its second data
/// segment to the end of the flow).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LimitedBy {
    pub seconds: f64,
    pub receiver_window: f64,
    pub congestion_window: f64,
    pub loss_recovery: f64,
    pub application: f64,
}

impl LimitedBy {
    pub fn share(&self, l: Limit) -> f64 {
        match l {
            Limit::ReceiverWindow => self.receiver_window,
            Limit::CongestionWindow => self.congestion_window,
            Limit::LossRecovery => self.loss_recovery,
            Limit::Application => self.application,
        }
    }

    /// The limit that held longest.
    pub fn dominant(&self) -> Limit {
        Limit::ALL.into_iter().max_by(|a, b| self.share(*a).total_cmp(&self.share(*b))).unwrap_or_default()
    }

    /// Every share in words: `receiver window 75 %, congestion window 25 %, …`.
    pub fn shares_text(&self) -> String {
        let words: Vec<String> =
            Limit::ALL.iter().map(|l| format!("{} {:.0} %", l.name(), self.share(*l) * 100.0)).collect();
        words.join(", ")
    }

    /// `rwnd 82%`: the dominant limit and its share.
    pub fn label(&self) -> String {
        let d = self.dominant();
        format!("{} {:.0}%", d.short(), self.share(d) * 100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;

    fn view(nextseq: u32, acked: u32, window: u64) -> SenderView {
        SenderView { nextseq, acked, window: Some(window), syn_mss: 0, rtt: 0 }
    }

    /// Drives a clock through (time ms, event) steps and returns its fractions.
    #[test]
    fn each_limit_gets_the_time_it_held() {
        let mut c = LimitClock::new(0);
        // 0-10 ms: two full segments in flight, window open: congestion window.
        c.on_data(1000, false, view(2000, 0, 65535));
        c.update(view(2000, 1, 65535));
        c.advance(10 * MS);
        // 10-30 ms: the receiver's window is full.
        c.update(view(2000, 1, 1500));
        c.advance(30 * MS);
        // 30-40 ms: a retransmission: loss recovery until 2000 is acknowledged.
        c.on_data(1000, true, view(2000, 1, 65535));
        c.update(view(2000, 1, 65535));
        c.advance(40 * MS);
        // 40-80 ms: all acknowledged, nothing to send: application.
        c.update(view(2000, 2000, 65535));
        c.advance(80 * MS);
        let l = c.limited_by();
        assert_eq!(l.seconds, 0.08);
        assert_eq!((l.congestion_window, l.receiver_window, l.loss_recovery, l.application), (0.125, 0.25, 0.125, 0.5));
        assert_eq!((l.dominant(), l.label()), (Limit::Application, "app 50%".to_string()));
    }

    #[test]
    fn a_zero_window_and_duplicate_acks_and_short_writes() {
        let mut c = LimitClock::new(0);
        c.on_data(1448, false, view(1448, 0, 0));
        c.update(view(1448, 1, 0));
        assert_eq!(c.current, Limit::ReceiverWindow);
        // Duplicate ACKs: recovery until the highest sent (5000) is acknowledged.
        c.on_duplicate_acks(view(5000, 1, 65535));
        c.update(view(5000, 1, 65535));
        assert_eq!(c.current, Limit::LossRecovery);
        c.update(view(5000, 4999, 65535));
        assert_eq!(c.current, Limit::LossRecovery);
        c.update(view(5000, 5000, 65535));
        assert_eq!(c.current, Limit::Application);
        // A short write in flight: the application, not the congestion window.
        c.on_data(100, false, view(5100, 5000, 65535));
        c.update(view(5100, 5000, 65535));
        assert_eq!(c.current, Limit::Application);
        c.on_data(1448, false, view(6548, 5000, 65535));
        c.update(view(6548, 5000, 65535));
        assert_eq!(c.current, Limit::CongestionWindow);
        // With the kernel's cwnd (live): a short write while 1,548 bytes are in flight is
        // the congestion window's doing when 2 x 1448 is all it allows.
        c.on_data(100, false, view(6648, 5000, 65535));
        c.update(view(6648, 5000, 65535));
        assert_eq!(c.current, Limit::Application);
        c.set_kernel_cwnd(2, 1448);
        c.update(view(6648, 5000, 65535));
        assert_eq!(c.current, Limit::CongestionWindow);
    }

    /// At a receiver's capture point every ACK leaves nothing in flight until the sender's
    /// next segment arrives: that wait is the ACK clock (congestion window) when it is short,
    /// the application when it lasts.
    #[test]
    fn pauses_are_decided_when_they_end() {
        const US: i64 = 1_000;
        let v = |nextseq: u32, acked: u32| SenderView {
            nextseq,
            acked,
            window: Some(1 << 20),
            syn_mss: 1460,
            rtt: 50 * US,
        };
        let mut c = LimitClock::new(0);
        let mut t = 0;
        let mut seq = 1;
        // 100 segments, each acknowledged 10 us after it arrives, the next 40 us later.
        for _ in 0..100 {
            c.advance(t);
            c.on_data(1448, false, v(seq + 1448, seq));
            c.update(v(seq + 1448, seq));
            seq += 1448;
            t += 10 * US;
            c.advance(t);
            c.update(v(seq, seq));
            t += 40 * US;
        }
        // Then the application pauses 50 ms and sends once more.
        t += 50_000 * US;
        c.advance(t);
        c.on_data(1448, false, v(seq + 1448, seq));
        c.update(v(seq + 1448, seq));
        let l = c.limited_by();
        assert!((l.congestion_window - 5.0 / 55.0).abs() < 0.01, "{l:?}");
        assert!((l.application - 50.0 / 55.0).abs() < 0.01, "{l:?}");
    }

    /// A capture of a GSO sender shows super-packets of several segments: a smaller one is
    /// still full segments, not a short write, by the SYNs' MSS.
    #[test]
    fn gso_packets_of_full_segments_are_not_short_writes() {
        let gso = |nextseq: u32| SenderView { nextseq, acked: 1, window: Some(1 << 20), syn_mss: 1460, rtt: 0 };
        let mut c = LimitClock::new(0);
        c.on_data(20 * 1448, false, gso(20 * 1448));
        c.on_data(3 * 1448, false, gso(23 * 1448));
        c.update(gso(23 * 1448));
        assert_eq!(c.current, Limit::CongestionWindow);
        c.on_data(500, false, gso(23 * 1448 + 500));
        c.update(gso(23 * 1448 + 500));
        assert_eq!(c.current, Limit::Application);
    }
}
