//! The flow table: connections by canonical key, with bounded memory.
//!
//! Bounds (all counted when they act): at most `max_flows` connections (the least recently
//! active are evicted first), idle connections retired after `idle_timeout` of packet time
//! (`closed_timeout` once reset or closed by FINs both ways), and at most
//! `MAX_UNACKED_SEGMENTS` tracked segments per direction. A quiet flow costs a few hundred
//! bytes (the state a busy direction needs is allocated when it is first needed), plus 40
//! bytes per tracked segment.
//!
//! The sweeps that retire flows read a copy of each flow's last packet time kept beside it
//! in the table, not the flow itself: with hundreds of thousands of flows, following every
//! flow's pointer on each sweep was a third of the run time of a SYN scan.

use rustc_hash::FxHashMap;

use crate::capture::decode::Segment;
use crate::time::{NS_PER_SEC, TimestampNs};

use super::key::FlowKey;
use super::state::Flow;

#[derive(Debug, Clone, Copy)]
pub struct FlowLimits {
    pub max_flows: usize,
    pub idle_timeout: TimestampNs,
    pub closed_timeout: TimestampNs,
}

impl Default for FlowLimits {
    fn default() -> Self {
        FlowLimits {
            max_flows: 262_144,
            // Longer than the 2 h default TCP keep-alive interval, so keep-alives are seen
            // as such rather than as the start of a new connection.
            idle_timeout: 7_500 * NS_PER_SEC,
            closed_timeout: 120 * NS_PER_SEC,
        }
    }
}

/// Why a flow left the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retirement {
    /// Idle past its timeout.
    Idle,
    /// Evicted because the table was full.
    Capacity,
    /// A new connection reused its ports.
    Reused,
    /// End of input.
    End,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct EvictionCounts {
    pub idle: u64,
    pub capacity: u64,
}

/// A flow in the table, with a copy of its activity time for the sweeps.
struct Entry {
    /// A lower bound of `flow.last_ts` (equal to it unless the flow was reached through
    /// [`FlowTable::get_mut`], which sets it to `UNKNOWN`: the sweeps then read the flow).
    last_ts: TimestampNs,
    /// Boxed: the table moves its entries when it grows and when flows leave it; moving a
    /// pointer is cheap, moving the flow is not.
    flow: Box<Flow>,
}

/// `Entry::last_ts` of a flow whose time may have moved without the table seeing it.
const UNKNOWN: TimestampNs = TimestampNs::MIN;

pub struct FlowTable {
    flows: FxHashMap<FlowKey, Entry>,
    next_id: u64,
    limits: FlowLimits,
    last_sweep: TimestampNs,
    now: TimestampNs,
    pub evicted: EvictionCounts,
}

impl FlowTable {
    pub fn new(limits: FlowLimits) -> FlowTable {
        FlowTable {
            flows: FxHashMap::default(),
            next_id: 0,
            limits,
            last_sweep: TimestampNs::MIN,
            now: TimestampNs::MIN,
            evicted: EvictionCounts::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Flow ids handed out so far.
    pub fn flows_created(&self) -> u64 {
        self.next_id
    }

    /// Advances packet time and retires idle flows (at most once per second of packet
    /// time), or the least recently active ones when the table is full.
    pub fn advance(&mut self, ts: TimestampNs, retire: &mut impl FnMut(Box<Flow>, Retirement)) {
        if ts > self.now {
            self.now = ts;
        }
        let full = self.flows.len() >= self.limits.max_flows;
        if !full && self.now.saturating_sub(self.last_sweep) < NS_PER_SEC {
            return;
        }
        self.last_sweep = self.now;
        let now = self.now;
        let limits = self.limits;
        // Only a flow quiet for the shorter of the two timeouts can be idle; only those
        // (and those of unknown time) are read.
        let shortest = limits.closed_timeout.min(limits.idle_timeout);
        let mut idle: Vec<(u64, FlowKey)> = Vec::new();
        for (k, e) in self.flows.iter_mut() {
            if now.saturating_sub(e.last_ts) <= shortest {
                continue;
            }
            let f = &e.flow;
            e.last_ts = f.last_ts;
            let timeout = if f.is_closed() { limits.closed_timeout } else { limits.idle_timeout };
            if now.saturating_sub(f.last_ts) > timeout {
                idle.push((f.id, *k));
            }
        }
        // In creation order, so the events of a sweep come out the same on every run.
        idle.sort_unstable();
        for (_, k) in idle {
            if let Some(e) = self.flows.remove(&k) {
                self.evicted.idle += 1;
                retire(e.flow, Retirement::Idle);
            }
        }
        if self.flows.len() >= limits.max_flows {
            // Evict the least recently active tenth, so this scan stays rare.
            let target = limits.max_flows - limits.max_flows / 10 - 1;
            let mut by_age: Vec<(TimestampNs, u64, FlowKey)> =
                self.flows.iter().map(|(k, e)| (e.last_ts, e.flow.id, *k)).collect();
            let excess = by_age.len() - target;
            by_age.select_nth_unstable(excess - 1);
            let oldest = &mut by_age[..excess];
            oldest.sort_unstable_by_key(|(_, id, _)| *id);
            for (_, _, k) in oldest.iter() {
                if let Some(e) = self.flows.remove(k) {
                    self.evicted.capacity += 1;
                    retire(e.flow, Retirement::Capacity);
                }
            }
        }
    }

    /// The flow of `seg`, created if new. Returns the flow and the packet's direction.
    pub fn get_or_create(&mut self, seg: &Segment) -> (&mut Flow, usize) {
        let key = FlowKey::new(seg.src, seg.sport, seg.dst, seg.dport);
        let next_id = &mut self.next_id;
        let e = self.flows.entry(key).or_insert_with(|| {
            let id = *next_id;
            *next_id += 1;
            Entry { last_ts: seg.ts, flow: Box::new(Flow::new(id, (seg.src, seg.sport), (seg.dst, seg.dport), seg.ts)) }
        });
        // The analyzer moves `flow.last_ts` to this packet's time (when later) too.
        if seg.ts > e.last_ts {
            e.last_ts = seg.ts;
        }
        let dir = e.flow.direction_of((seg.src, seg.sport));
        (&mut e.flow, dir)
    }

    /// Replaces the flow of `seg` by a new connection (ports reused), returning the old one.
    pub fn restart(&mut self, seg: &Segment) -> Option<Box<Flow>> {
        let key = FlowKey::new(seg.src, seg.sport, seg.dst, seg.dport);
        let old = self.flows.remove(&key).map(|e| e.flow);
        let id = self.next_id;
        self.next_id += 1;
        let flow = Box::new(Flow::new(id, (seg.src, seg.sport), (seg.dst, seg.dport), seg.ts));
        self.flows.insert(key, Entry { last_ts: seg.ts, flow });
        old
    }

    /// Every flow still in the table, for the end of input.
    pub fn drain(&mut self) -> impl Iterator<Item = Box<Flow>> + '_ {
        self.flows.drain().map(|(_, e)| e.flow)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Flow> {
        self.flows.values().map(|e| &*e.flow)
    }

    /// Every flow, to update what it holds besides its activity time (`last_ts` must not
    /// be moved through this: the sweeps would not see it).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Flow> {
        self.flows.values_mut().map(|e| &mut *e.flow)
    }

    pub fn get(&self, key: &FlowKey) -> Option<&Flow> {
        self.flows.get(key).map(|e| &*e.flow)
    }

    /// The flow of `key`; its activity time may be moved (the sweeps will read it).
    pub fn get_mut(&mut self, key: &FlowKey) -> Option<&mut Flow> {
        self.flows.get_mut(key).map(|e| {
            e.last_ts = UNKNOWN;
            &mut *e.flow
        })
    }
}
