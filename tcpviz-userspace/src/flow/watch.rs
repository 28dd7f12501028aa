//! When the live agent's kernel side began watching a connection (capture policy
//! `troubled`): the wire view of that connection begins there, its earlier packets are not
//! in it. The kernel tells each watch that starts (the connection was not watched, or its
//! watch had expired); the flow it names carries the start into the summary.

use std::net::IpAddr;

use crate::flow::key::FlowKey;
use crate::time::TimestampNs;

/// A watch that started, as the agent decoded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchStart {
    pub ts: TimestampNs,
    pub src: (IpAddr, u16),
    pub dst: (IpAddr, u16),
    /// What started it: a tracepoint's name (`tcp_retransmit_skb`, …), `sack_sent`,
    /// `zero_window_sent`.
    pub reason: &'static str,
    /// How long a watch lasts at least (`--watch-secs`): when too many starts wait for their
    /// flow, those older than this go first.
    pub lasts: TimestampNs,
}

impl WatchStart {
    pub fn key(&self) -> FlowKey {
        FlowKey::new(self.src.0, self.src.1, self.dst.0, self.dst.1)
    }
}

/// The watch of one flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowWatch {
    /// Start of the watch its wire view begins with.
    pub since: TimestampNs,
    pub reason: &'static str,
    /// Watches of the connection that started from then on (a watch ends `--watch-secs`
    /// after the last trouble; trouble after that starts another, after a gap in the view).
    pub starts: u64,
}

impl FlowWatch {
    /// The flow's record of another watch start of its connection.
    pub fn add(watch: &mut Option<FlowWatch>, w: &WatchStart) {
        match watch {
            Some(f) => f.starts += 1,
            // The flow's first packets can be read before the start that let them through
            // (the start is told after the mark, from another CPU): it still comes first.
            None => *watch = Some(FlowWatch { since: w.ts, reason: w.reason, starts: 1 }),
        }
    }
}

/// Bound of the starts waiting for their flow's first packet.
const MAX_PENDING: usize = 65_536;

/// Watch starts of connections the wire has not shown yet: the latest per connection. The
/// packet that showed the trouble usually passed before the mark, so the first packet of the
/// view may come much later (after a retransmission timeout; trouble meanwhile keeps the
/// watch on without starting another). A watch that ended before any packet was copied is
/// followed by another start, which replaces it here.
#[derive(Debug, Default)]
pub struct PendingWatches {
    by_key: rustc_hash::FxHashMap<FlowKey, WatchStart>,
}

impl PendingWatches {
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Keeps `w` for its flow; a start of the same connection before it did not let a packet
    /// through, so this one replaces it.
    pub fn add(&mut self, w: WatchStart) {
        if self.by_key.len() >= MAX_PENDING {
            self.by_key.retain(|_, p| w.ts.saturating_sub(p.ts) <= p.lasts);
            if self.by_key.len() >= MAX_PENDING {
                tracing::debug!("too many watch starts without a packet; one is dropped");
                return;
            }
        }
        self.by_key.insert(w.key(), w);
    }

    /// The watch of a flow the wire shows for the first time, if one started for it.
    pub fn take(&mut self, key: &FlowKey) -> Option<FlowWatch> {
        let w = self.by_key.remove(key)?;
        Some(FlowWatch { since: w.ts, reason: w.reason, starts: 1 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(ts: TimestampNs, sport: u16, reason: &'static str) -> WatchStart {
        WatchStart {
            ts,
            src: ("10.0.0.1".parse().unwrap(), sport),
            dst: ("10.0.0.2".parse().unwrap(), 5201),
            reason,
            lasts: 30_000_000_000,
        }
    }

    #[test]
    fn a_flow_takes_the_latest_start() {
        let mut p = PendingWatches::default();
        p.add(start(1_000, 40000, "tcp_retransmit_skb"));
        p.add(start(2_000, 40000, "sack_sent"));
        p.add(start(3_000, 40001, "zero_window_sent"));
        // Either direction names the connection.
        let key = FlowKey::new("10.0.0.2".parse().unwrap(), 5201, "10.0.0.1".parse().unwrap(), 40000);
        assert_eq!(p.take(&key), Some(FlowWatch { since: 2_000, reason: "sack_sent", starts: 1 }));
        assert_eq!(p.take(&key), None, "taken once");
        assert!(!p.is_empty());
        assert!(p.take(&start(0, 40001, "").key()).is_some());
        assert!(p.is_empty());
    }

    #[test]
    fn a_full_table_makes_room_with_starts_whose_watch_ended() {
        let mut p = PendingWatches::default();
        for i in 0..MAX_PENDING {
            p.add(start(i as TimestampNs, 1, "sack_sent").with_port(i as u16).with_addr(i));
        }
        // 30 s after the first ones: every start older than that goes.
        let late = start(30_000_000_000 + 1000, 2, "sack_sent").with_addr(usize::MAX);
        p.add(late);
        assert_eq!(p.by_key.len(), MAX_PENDING - 1000 + 1);
        assert!(p.take(&late.key()).is_some());
    }

    impl WatchStart {
        fn with_port(mut self, port: u16) -> WatchStart {
            self.src.1 = port;
            self
        }

        fn with_addr(mut self, i: usize) -> WatchStart {
            self.dst.0 = std::net::Ipv4Addr::from((i as u32).wrapping_add(1 << 24)).into();
            self
        }
    }

    #[test]
    fn later_starts_are_counted_and_the_first_kept() {
        let mut w = None;
        FlowWatch::add(&mut w, &start(7, 1, "sack_sent"));
        FlowWatch::add(&mut w, &start(9, 1, "tcp_cong_state_set"));
        assert_eq!(w, Some(FlowWatch { since: 7, reason: "sack_sent", starts: 2 }));
    }
}
