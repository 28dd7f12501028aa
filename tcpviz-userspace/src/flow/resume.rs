//! Connections that a full flow table evicted, kept whole in a smaller store so that a
//! connection seen again goes on where its analysis stopped.
//!
//! Without it, a connection seen again would start blind in its middle: its first segment
//! after the eviction would set where its sequence space starts, so the next segment sent
//! before the eviction would look like a gap ("previous segment not captured"), the other
//! side's ACK of it like an ACK of unseen data, windows would lose their scale, the timers'
//! thresholds their RTT, and a handshake cut in two would look unanswered. A tool with
//! unlimited memory raises none of these, and neither does this one while the connection is
//! in the store (the corpus test `evicted_connections_seen_again_raise_nothing_new` holds
//! it to that).
//!
//! A flow moves into the store and back without a copy. The store is bounded (the eldest
//! let go first, and counted): a flow let go is retired to the summary then, and if its
//! connection is seen again after that it starts a new flow, as in a capture that begins
//! in its middle.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use super::key::FlowKey;
use super::state::Flow;
use crate::time::TimestampNs;

/// Evicted flows, at most `capacity`, the eldest let go first.
pub struct EvictedFlows {
    kept: FxHashMap<FlowKey, (u64, Box<Flow>)>,
    /// Keys in the order they were kept, with the generation they were kept at: a key taken
    /// back and kept again later leaves a stale entry behind, skipped when it comes up.
    order: VecDeque<(FlowKey, u64)>,
    generation: u64,
    capacity: usize,
    /// Flows let go to stay within `capacity`.
    pub forgotten: u64,
    /// Flows taken back (their connection was seen again).
    pub resumed: u64,
}

impl EvictedFlows {
    pub fn new(capacity: usize) -> EvictedFlows {
        EvictedFlows {
            kept: FxHashMap::default(),
            order: VecDeque::new(),
            generation: 0,
            capacity: capacity.max(1),
            forgotten: 0,
            resumed: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    pub fn len(&self) -> usize {
        self.kept.len()
    }

    /// Keeps an evicted flow. Returns the eldest kept flow if it had to be let go to make
    /// room.
    pub fn keep(&mut self, key: FlowKey, flow: Box<Flow>) -> Option<Box<Flow>> {
        let mut let_go = None;
        while self.kept.len() >= self.capacity {
            let Some(eldest) = self.let_go_eldest() else { break };
            let_go = Some(eldest);
        }
        self.insert(key, flow);
        let_go
    }

    /// Keeps evicted flows, as [`keep`](Self::keep) would one by one: returns the flows let
    /// go to make room, in the order it would have. A table's eviction batch is often larger
    /// than the store: its first flows would be let go as soon as they were kept, so they
    /// are handed back without going through the map.
    pub fn keep_all(&mut self, flows: Vec<(FlowKey, Box<Flow>)>) -> Vec<Box<Flow>> {
        // Kept one by one, the store would let go this many: the eldest kept first, then
        // the first of `flows`.
        let excess = (self.kept.len() + flows.len()).saturating_sub(self.capacity);
        let mut let_go = Vec::with_capacity(excess);
        while let_go.len() < excess {
            let Some(eldest) = self.let_go_eldest() else { break };
            let_go.push(eldest);
        }
        let mut flows = flows.into_iter();
        for (_, flow) in flows.by_ref().take(excess - let_go.len()) {
            self.forgotten += 1;
            let_go.push(flow);
        }
        for (key, flow) in flows {
            self.insert(key, flow);
        }
        let_go
    }

    /// Lets go of the eldest kept flow (None: none was found in the order queue).
    fn let_go_eldest(&mut self) -> Option<Box<Flow>> {
        while let Some((old, generation)) = self.order.pop_front() {
            // A stale entry: its key was taken back (and maybe kept again, later).
            if self.kept.get(&old).is_some_and(|(g, _)| *g == generation) {
                self.forgotten += 1;
                return self.kept.remove(&old).map(|(_, f)| f);
            }
        }
        None
    }

    fn insert(&mut self, key: FlowKey, flow: Box<Flow>) {
        self.generation += 1;
        self.kept.insert(key, (self.generation, flow));
        self.order.push_back((key, self.generation));
        // Stale entries (keys taken back) must not let the queue outgrow the store.
        if self.order.len() > 2 * self.capacity.max(16) {
            let kept = &self.kept;
            self.order.retain(|(k, g)| kept.get(k).is_some_and(|(kg, _)| kg == g));
        }
    }

    /// The evicted flow of `key`, if it is still kept.
    pub fn take(&mut self, key: &FlowKey) -> Option<Box<Flow>> {
        let (_, flow) = self.kept.remove(key)?;
        self.resumed += 1;
        Some(flow)
    }

    /// The evicted flow of `key`, left in the store (a kernel report of it, a lookup): only
    /// a packet takes a flow back.
    pub fn get(&self, key: &FlowKey) -> Option<&Flow> {
        self.kept.get(key).map(|(_, f)| &**f)
    }

    pub fn get_mut(&mut self, key: &FlowKey) -> Option<&mut Flow> {
        self.kept.get_mut(key).map(|(_, f)| &mut **f)
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Flow> {
        self.kept.values_mut().map(|(_, f)| &mut **f)
    }

    /// The kept flows quiet for longer than `timeout` gives for them at `now` (they are
    /// retired as idle, as from a table with room), in no particular order.
    pub fn take_idle(&mut self, now: TimestampNs, timeout: impl Fn(&Flow) -> TimestampNs) -> Vec<Box<Flow>> {
        if self.kept.is_empty() {
            return Vec::new();
        }
        let idle: Vec<FlowKey> = (self.kept.iter())
            .filter(|(_, (_, f))| now.saturating_sub(f.last_ts) > timeout(f))
            .map(|(k, _)| *k)
            .collect();
        idle.iter().filter_map(|k| self.kept.remove(k)).map(|(_, f)| f).collect()
    }

    /// Every kept flow (at the end of input), in no particular order.
    pub fn drain(&mut self) -> impl Iterator<Item = Box<Flow>> + '_ {
        self.order.clear();
        self.kept.drain().map(|(_, (_, f))| f)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;

    fn flow(port: u16) -> (FlowKey, Box<Flow>) {
        let (a, b) = ((IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), port), (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 80));
        let mut flow = Flow::new(port as u64, a, b, 1);
        flow.dirs[0].nextseq = 1000 + port as u32;
        (FlowKey::new(a.0, a.1, b.0, b.1), Box::new(flow))
    }

    #[test]
    fn keeps_flows_whole_and_lets_the_eldest_go() {
        let mut m = EvictedFlows::new(2);
        let let_go: Vec<Option<u64>> = (1..=3)
            .map(|port| {
                let (k, f) = flow(port);
                m.keep(k, f).map(|f| f.id)
            })
            .collect();
        assert_eq!(let_go, [None, None, Some(1)]);
        assert_eq!((m.len(), m.forgotten), (2, 1));
        assert!(m.take(&flow(1).0).is_none(), "the eldest was let go");
        let back = m.take(&flow(3).0).expect("kept");
        assert_eq!((back.id, back.dirs[0].nextseq), (3, 1003));
        assert_eq!((m.len(), m.resumed), (1, 1));
        assert_eq!(m.drain().map(|f| f.id).collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn a_key_kept_again_is_not_let_go_for_its_stale_entry() {
        let mut m = EvictedFlows::new(2);
        let (k1, f1) = flow(1);
        m.keep(k1, f1);
        let f1 = m.take(&k1).unwrap();
        let (k2, f2) = flow(2);
        m.keep(k2, f2);
        m.keep(k1, f1);
        // Full: the next keep lets go of the eldest kept flow (port 2), not of port 1 for
        // its stale entry.
        let (k3, f3) = flow(3);
        assert_eq!(m.keep(k3, f3).map(|f| f.id), Some(2));
        assert!(m.take(&k1).is_some());
    }

    #[test]
    fn quiet_kept_flows_are_given_back_as_idle() {
        let mut m = EvictedFlows::new(8);
        for port in [1, 2, 3] {
            let (k, mut f) = flow(port);
            f.last_ts = port as i64 * 100;
            m.keep(k, f);
        }
        let mut idle: Vec<u64> = m.take_idle(350, |_| 150).iter().map(|f| f.id).collect();
        idle.sort_unstable();
        assert_eq!(idle, [1]);
        assert_eq!(m.len(), 2);
        assert!(m.take(&flow(1).0).is_none() && m.take(&flow(2).0).is_some());
    }

    #[test]
    fn keeping_a_batch_lets_go_what_keeping_one_by_one_lets_go() {
        // Two stores go through the same steps: batches of evictions (kept one by one in
        // one store, all at once in the other) and connections seen again (taken back, which
        // leaves stale entries in the order queue).
        let (mut one_by_one, mut batched) = (EvictedFlows::new(16), EvictedFlows::new(16));
        let mut next_port = 1u16;
        let mut state = 5u64;
        let mut draw = |n: u64| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) % n
        };
        for round in 0..400 {
            let size = draw(40) as u16;
            let batch: Vec<u16> = (next_port..next_port + size).collect();
            next_port += size;
            let expected: Vec<u64> =
                batch.iter().filter_map(|&p| one_by_one.keep(flow(p).0, flow(p).1)).map(|f| f.id).collect();
            let got: Vec<u64> =
                batched.keep_all(batch.iter().map(|&p| flow(p)).collect()).iter().map(|f| f.id).collect();
            assert_eq!(got, expected, "round {round}");
            for _ in 0..draw(6) {
                let port = next_port.saturating_sub(1 + draw(30) as u16).max(1);
                let (a, b) = (one_by_one.take(&flow(port).0), batched.take(&flow(port).0));
                assert_eq!(a.map(|f| f.id), b.map(|f| f.id), "round {round}: port {port}");
            }
            assert_eq!((batched.len(), batched.forgotten), (one_by_one.len(), one_by_one.forgotten));
        }
        assert!(
            one_by_one.forgotten > 1_000 && one_by_one.resumed > 100,
            "{} {}",
            one_by_one.forgotten,
            one_by_one.resumed
        );
    }

    #[test]
    fn the_queue_stays_bounded_when_flows_are_taken_back() {
        let mut m = EvictedFlows::new(4);
        let (k, mut f) = flow(1);
        for _ in 0..1000 {
            m.keep(k, f);
            f = m.take(&k).unwrap();
        }
        assert!(m.order.len() <= 32, "{}", m.order.len());
        assert_eq!(m.forgotten, 0);
    }
}
