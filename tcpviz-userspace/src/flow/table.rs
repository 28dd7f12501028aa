//! The flow table: connections by canonical key, with bounded memory.
//!
//! Bounds (all counted when they act): at most `max_flows` connections (the least recently
//! active are evicted first), idle connections retired after `idle_timeout` of packet time
//! (`closed_timeout` once reset or closed by FINs both ways), and at most
//! `MAX_UNACKED_SEGMENTS` tracked segments per direction. A quiet flow costs a few hundred
//! bytes (the state a busy direction needs is allocated when it is first needed), plus 40
//! bytes per tracked segment.
//!
//! Flows live in a slab of slots (id, a copy of the last packet time, the boxed flow); the
//! hash index holds only slot numbers (4 bytes each; the key is in the slot). The sweeps that retire flows read the slots, a dense
//! array, not the flows: with hundreds of thousands of flows, following every flow's
//! pointer (or walking a sparse hash table of large entries) on each sweep was a third of
//! the run time of a SYN scan.

use std::hash::BuildHasher;

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

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

/// A flow in the table, with copies of what the sweeps read.
struct Slot {
    key: FlowKey,
    /// A lower bound of `flow.last_ts` (equal to it unless the flow was reached through
    /// [`FlowTable::get_mut`], which sets it to `UNKNOWN`: the sweeps then read the flow).
    last_ts: TimestampNs,
    /// `flow.id`, to order evictions without reading the flow.
    id: u64,
    /// Boxed: retiring a flow hands the box on without moving the flow. `None`: a free slot.
    flow: Option<Box<Flow>>,
}

/// `Slot::last_ts` of a flow whose time may have moved without the table seeing it.
const UNKNOWN: TimestampNs = TimestampNs::MIN;

/// A flow's place in the table, valid until the next [`FlowTable::advance`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotId(u32);

pub struct FlowTable {
    /// Slot numbers, hashed by the key of their slot.
    index: HashTable<u32>,
    slots: Vec<Slot>,
    /// Free slots, reused last-freed first (deterministic).
    free: Vec<u32>,
    next_id: u64,
    limits: FlowLimits,
    last_sweep: TimestampNs,
    now: TimestampNs,
    pub evicted: EvictionCounts,
}

fn hash(key: &FlowKey) -> u64 {
    FxBuildHasher.hash_one(key)
}

impl FlowTable {
    pub fn new(limits: FlowLimits) -> FlowTable {
        FlowTable {
            index: HashTable::new(),
            slots: Vec::new(),
            free: Vec::new(),
            next_id: 0,
            limits,
            last_sweep: TimestampNs::MIN,
            now: TimestampNs::MIN,
            evicted: EvictionCounts::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Flow ids handed out so far.
    pub fn flows_created(&self) -> u64 {
        self.next_id
    }

    /// Takes the flow out of slot `i` and frees the slot.
    fn remove_slot(&mut self, i: u32) -> Box<Flow> {
        let s = &mut self.slots[i as usize];
        let flow = s.flow.take().expect("occupied slot");
        if let Ok(e) = self.index.find_entry(hash(&s.key), |&j| j == i) {
            e.remove();
        }
        self.free.push(i);
        flow
    }

    /// Advances packet time and retires idle flows (at most once per second of packet
    /// time), or the least recently active ones when the table is full.
    pub fn advance(&mut self, ts: TimestampNs, retire: &mut impl FnMut(Box<Flow>, Retirement)) {
        if ts > self.now {
            self.now = ts;
        }
        let full = self.index.len() >= self.limits.max_flows;
        if !full && self.now.saturating_sub(self.last_sweep) < NS_PER_SEC {
            return;
        }
        self.last_sweep = self.now;
        let now = self.now;
        let limits = self.limits;
        // Only a flow quiet for the shorter of the two timeouts can be idle; only those
        // (and those of unknown time) are read.
        let shortest = limits.closed_timeout.min(limits.idle_timeout);
        let mut idle: Vec<(u64, u32)> = Vec::new();
        for (i, s) in self.slots.iter_mut().enumerate() {
            if now.saturating_sub(s.last_ts) <= shortest {
                continue;
            }
            let Some(f) = s.flow.as_deref() else { continue };
            s.last_ts = f.last_ts;
            let timeout = if f.is_closed() { limits.closed_timeout } else { limits.idle_timeout };
            if now.saturating_sub(f.last_ts) > timeout {
                idle.push((f.id, i as u32));
            }
        }
        // In creation order, so the events of a sweep come out the same on every run.
        idle.sort_unstable();
        for (_, i) in idle {
            let flow = self.remove_slot(i);
            self.evicted.idle += 1;
            retire(flow, Retirement::Idle);
        }
        if self.index.len() >= limits.max_flows {
            // Evict the least recently active tenth, so this scan stays rare.
            let target = limits.max_flows - limits.max_flows / 10 - 1;
            let occupied = || self.slots.iter().enumerate().filter(|(_, s)| s.flow.is_some());
            // The `excess` least recently active, ties to the eldest: the time of the last
            // to go (a selection on 8-byte times), every flow before it, and the eldest of
            // those at it.
            let mut times: Vec<TimestampNs> = occupied().map(|(_, s)| s.last_ts).collect();
            let excess = times.len() - target;
            let (_, &mut last, _) = times.select_nth_unstable(excess - 1);
            drop(times);
            let mut oldest: Vec<(u64, u32)> = Vec::with_capacity(excess);
            let mut at_last: Vec<(u64, u32)> = Vec::new();
            for (i, s) in occupied() {
                if s.last_ts < last {
                    oldest.push((s.id, i as u32));
                } else if s.last_ts == last {
                    at_last.push((s.id, i as u32));
                }
            }
            at_last.sort_unstable();
            at_last.truncate(excess - oldest.len());
            oldest.append(&mut at_last);
            oldest.sort_unstable();
            for (_, i) in oldest {
                let flow = self.remove_slot(i);
                self.evicted.capacity += 1;
                retire(flow, Retirement::Capacity);
            }
        }
    }

    /// The slot of `seg`'s flow, created if new (hashing the key once).
    pub fn find_or_create(&mut self, seg: &Segment) -> SlotId {
        let key = FlowKey::new(seg.src, seg.sport, seg.dst, seg.dport);
        let h = hash(&key);
        let FlowTable { index, slots, free, next_id, .. } = self;
        let i = match index.find(h, |&j| slots[j as usize].key == key) {
            Some(&i) => i,
            None => {
                let id = *next_id;
                *next_id += 1;
                let slot = Slot {
                    key,
                    last_ts: seg.ts,
                    id,
                    flow: Some(Box::new(Flow::new(id, (seg.src, seg.sport), (seg.dst, seg.dport), seg.ts))),
                };
                let i = match free.pop() {
                    Some(i) => {
                        slots[i as usize] = slot;
                        i
                    }
                    None => {
                        slots.push(slot);
                        (slots.len() - 1) as u32
                    }
                };
                index.insert_unique(h, i, |&j| hash(&slots[j as usize].key));
                i
            }
        };
        let s = &mut slots[i as usize];
        // The analyzer moves `flow.last_ts` to this packet's time (when later) too.
        if seg.ts > s.last_ts {
            s.last_ts = seg.ts;
        }
        SlotId(i)
    }

    fn find(&self, key: &FlowKey) -> Option<u32> {
        self.index.find(hash(key), |&j| self.slots[j as usize].key == *key).copied()
    }

    /// The flow in slot `at` (its activity time must only move to that of a packet the
    /// table saw through [`find_or_create`](Self::find_or_create)).
    pub fn at_mut(&mut self, at: SlotId) -> &mut Flow {
        self.slots[at.0 as usize].flow.as_deref_mut().expect("occupied slot")
    }

    /// The flow of `seg`, created if new. Returns the flow and the packet's direction.
    pub fn get_or_create(&mut self, seg: &Segment) -> (&mut Flow, usize) {
        let at = self.find_or_create(seg);
        let flow = self.at_mut(at);
        let dir = flow.direction_of((seg.src, seg.sport));
        (flow, dir)
    }

    /// Replaces the flow in slot `at` (that of `seg`) by a new connection (ports reused),
    /// returning the old one.
    pub fn restart_at(&mut self, at: SlotId, seg: &Segment) -> Box<Flow> {
        let id = self.next_id;
        self.next_id += 1;
        let flow = Box::new(Flow::new(id, (seg.src, seg.sport), (seg.dst, seg.dport), seg.ts));
        let s = &mut self.slots[at.0 as usize];
        s.last_ts = seg.ts;
        s.id = id;
        s.flow.replace(flow).expect("occupied slot")
    }

    /// Replaces the flow of `seg` by a new connection (ports reused), returning the old one.
    pub fn restart(&mut self, seg: &Segment) -> Option<Box<Flow>> {
        let key = FlowKey::new(seg.src, seg.sport, seg.dst, seg.dport);
        let old = self.find(&key).map(|i| self.remove_slot(i));
        // A new flow with the next id, as `restart_at` makes.
        self.find_or_create(seg);
        old
    }

    /// Every flow still in the table, in creation order, for the end of input.
    pub fn drain(&mut self) -> impl Iterator<Item = Box<Flow>> + '_ {
        let mut flows: Vec<Box<Flow>> = self.slots.drain(..).filter_map(|s| s.flow).collect();
        flows.sort_unstable_by_key(|f| f.id);
        self.index.clear();
        self.free.clear();
        flows.into_iter()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Flow> {
        self.slots.iter().filter_map(|s| s.flow.as_deref())
    }

    /// Every flow, to update what it holds besides its activity time (`last_ts` must not
    /// be moved through this: the sweeps would not see it).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Flow> {
        self.slots.iter_mut().filter_map(|s| s.flow.as_deref_mut())
    }

    pub fn get(&self, key: &FlowKey) -> Option<&Flow> {
        self.find(key).and_then(|i| self.slots[i as usize].flow.as_deref())
    }

    /// The flow of `key`; its activity time may be moved (the sweeps will read it).
    pub fn get_mut(&mut self, key: &FlowKey) -> Option<&mut Flow> {
        let i = self.find(key)?;
        let s = &mut self.slots[i as usize];
        s.last_ts = UNKNOWN;
        s.flow.as_deref_mut()
    }
}
