//! The flow table: connections by canonical key, with bounded memory.
//!
//! Bounds (all counted when they act): at most `max_flows` connections (closed ones are
//! evicted first, then the least recently active, into a smaller store from which a
//! connection seen again comes back, see [`super::resume`]), idle connections retired after `idle_timeout` of packet time
//! (`closed_timeout` once reset or closed by FINs both ways), and at most
//! `MAX_UNACKED_SEGMENTS` tracked segments per direction. A quiet flow costs a few hundred
//! bytes (the state a busy direction needs is allocated when it is first needed), plus 40
//! bytes per tracked segment.
//!
//! The table is cut into partitions by a hash of the key (up to 16, of at least 1,024
//! connections each; the number depends on `max_flows` only). A partition fills, sweeps
//! out its idle flows and evicts on its own, at its own packets: so what happens to a
//! connection does not depend on which thread holds its partition, and a sharded pipeline
//! (`pipeline::sharded`, each thread holding some of the partitions) writes what one
//! table writes, evictions included.
//!
//! Flows live in a slab of slots (id, a copy of the last packet time, the boxed flow); the
//! index ([`super::slot_index`]) holds slot numbers and a digest of each key's hash (8
//! bytes each; the key is in the slot). The sweeps that retire flows read the slots, a dense
//! array, not the flows: with hundreds of thousands of flows, following every flow's
//! pointer (or walking a sparse hash table of large entries) on each sweep was a third of
//! the run time of a SYN scan.

use std::hash::BuildHasher;

use rustc_hash::FxBuildHasher;

use crate::capture::decode::Segment;
use crate::time::TimestampNs;

pub use super::bounds::{EvictionCounts, FlowLimits, Retirement, SweepClock};
use super::key::FlowKey;
use super::resume::EvictedFlows;
use super::slot_index::SlotIndex;
use super::state::Flow;

/// A flow in the table, with copies of what the sweeps read.
struct Slot {
    key: FlowKey,
    /// A lower bound of `flow.last_ts` (equal to it unless the flow was reached through
    /// [`FlowTable::get_mut`], which sets it to `UNKNOWN`: the sweeps then read the flow).
    last_ts: TimestampNs,
    /// `flow.id`, to order evictions without reading the flow.
    id: u64,
    /// A copy of `flow.is_closed()` as of its last packet ([`FlowTable::set_closed`]):
    /// when the table is full, closed connections go first.
    closed: bool,
    /// Boxed: retiring a flow hands the box on without moving the flow. `None`: a free slot.
    flow: Option<Box<Flow>>,
}

/// `Slot::last_ts` of a flow whose time may have moved without the table seeing it.
const UNKNOWN: TimestampNs = TimestampNs::MIN;

/// A flow's place in the table, valid until the next [`FlowTable::advance`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotId {
    part: u32,
    slot: u32,
}

pub struct FlowTable {
    parts: Vec<Partition>,
    next_id: u64,
    limits: FlowLimits,
    sweeps: SweepClock,
    /// The idle sweeps are called for from outside ([`FlowTable::sweep`]): a shard of a
    /// sharded pipeline sweeps when the whole stream's clock says so, not its own share's.
    external_sweeps: bool,
    now: TimestampNs,
}

/// One partition: its flows, at most `capacity` of them, and the store of those it evicted.
struct Partition {
    /// Slot numbers, by the hash of their slot's key.
    index: SlotIndex,
    slots: Vec<Slot>,
    /// Free slots, reused last-freed first (deterministic).
    free: Vec<u32>,
    capacity: usize,
    evicted: EvictionCounts,
    /// Evicted connections, to come back if they are seen again.
    resume: EvictedFlows,
    /// A lower bound of every slot's `last_ts`: while no flow can be idle by it, a full
    /// partition evicts without scanning its slots for idle ones first (on a SYN scan, a
    /// scan per eviction batch was a third of the slot reads).
    activity_floor: TimestampNs,
}

/// Where a segment's connection lives: its key, the key's hash and its partition.
#[derive(Debug, Clone, Copy)]
pub struct Placed {
    key: FlowKey,
    hash: u64,
    part: u32,
}

/// How far ahead of its removal an evicted flow's index entry is fetched.
const EVICTION_READ_AHEAD: usize = 8;

/// Partitions of a table of `max_flows` connections: 1,024 connections or more each, at
/// most 16. (More partitions would allow more analysis threads, but one thread reads and
/// merges for all of them, and small partitions evict in small, frequent batches.)
pub fn partitions(max_flows: usize) -> usize {
    (max_flows / 1_024).clamp(1, 16)
}

/// The partition of a key's hash, out of `parts`: a mix of the hash, so that a partition's
/// keys do not fall into a fraction of its own index's buckets.
fn partition_of(hash: u64, parts: usize) -> usize {
    let mut h = hash ^ (hash >> 33);
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    ((h as u128 * parts as u128) >> 64) as usize
}

/// The partition of a connection, out of [`partitions`]`(max_flows)`.
pub fn partition_of_key(key: &FlowKey, max_flows: usize) -> usize {
    partition_of(hash(key), partitions(max_flows))
}

/// Evicted connections kept, per tracked connection: a sixty-fourth (at least 1,024). A
/// connection evicted while alive is seldom quiet for long, and a late packet follows its
/// connection's close closely.
fn resume_capacity(max_flows: usize) -> usize {
    (max_flows / 64).max(1_024)
}

#[inline]
fn hash(key: &FlowKey) -> u64 {
    FxBuildHasher.hash_one(key)
}

impl FlowTable {
    pub fn new(limits: FlowLimits) -> FlowTable {
        let parts = partitions(limits.max_flows);
        let capacity = limits.max_flows.div_ceil(parts).max(1);
        let resume = resume_capacity(limits.max_flows).div_ceil(parts);
        FlowTable {
            parts: (0..parts).map(|_| Partition::new(capacity, resume)).collect(),
            next_id: 0,
            limits,
            sweeps: SweepClock::default(),
            external_sweeps: false,
            now: TimestampNs::MIN,
        }
    }

    pub fn evictions(&self) -> EvictionCounts {
        let mut sum = EvictionCounts::default();
        for p in &self.parts {
            sum.add(&p.evictions());
        }
        sum
    }

    /// Records whether the connection in `at` is closed, after its latest packet.
    pub fn set_closed(&mut self, at: SlotId, closed: bool) {
        self.parts[at.part as usize].slots[at.slot as usize].closed = closed;
    }

    pub fn len(&self) -> usize {
        self.parts.iter().map(|p| p.index.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Flow ids handed out so far.
    pub fn flows_created(&self) -> u64 {
        self.next_id
    }

    /// Where `seg`'s connection lives (hashing its key once).
    #[inline]
    pub fn place(&self, seg: &Segment) -> Placed {
        let key = FlowKey::new(seg.src, seg.sport, seg.dst, seg.dport);
        let hash = hash(&key);
        Placed { key, hash, part: partition_of(hash, self.parts.len()) as u32 }
    }

    /// Asks for the index bucket of `seg`'s connection to be brought into the cache: a
    /// caller that knows the segments to come calls it a few segments ahead, so that the
    /// lookup does not wait for memory (on many short connections it nearly always did).
    #[inline]
    pub fn prefetch(&self, seg: &Segment) {
        let at = self.place(seg);
        self.parts[at.part as usize].index.prefetch(at.hash);
    }

    /// Idle sweeps are called for with [`sweep`](Self::sweep) only (a full partition still
    /// evicts at its own packets).
    pub fn set_external_sweeps(&mut self, on: bool) {
        self.external_sweeps = on;
    }

    /// Advances packet time to that of a packet of `at`'s connection: idle flows are
    /// retired (at most once per second of packet time), then, if `at`'s partition is
    /// full, the least recently active of it are evicted.
    pub fn advance(&mut self, ts: TimestampNs, at: &Placed, retire: &mut impl FnMut(Box<Flow>, Retirement)) {
        if ts > self.now {
            self.now = ts;
        }
        if !self.external_sweeps && self.sweeps.due(self.now) {
            self.sweep_all(retire);
        }
        let (now, limits) = (self.now, self.limits);
        let part = &mut self.parts[at.part as usize];
        if part.index.len() >= part.capacity {
            // Its idle flows first: a table with room would have retired them by now.
            let mut gone = part.take_idle(now, limits);
            gone.sort_unstable_by_key(|f| f.id);
            retire_all(gone, Retirement::Idle, retire);
            part.evict_excess(retire);
        }
    }

    /// Retires idle flows as of `now`.
    pub fn sweep(&mut self, now: TimestampNs, retire: &mut impl FnMut(Box<Flow>, Retirement)) {
        if now > self.now {
            self.now = now;
        }
        self.sweep_all(retire);
    }

    fn sweep_all(&mut self, retire: &mut impl FnMut(Box<Flow>, Retirement)) {
        let (now, limits) = (self.now, self.limits);
        let mut gone: Vec<Box<Flow>> = Vec::new();
        for part in &mut self.parts {
            gone.append(&mut part.take_idle(now, limits));
        }
        // In creation order, so the events of a sweep come out the same on every run.
        gone.sort_unstable_by_key(|f| f.id);
        retire_all(gone, Retirement::Idle, retire);
    }

    /// The slot of the connection placed at `at` (see [`place`](Self::place)), created if
    /// new.
    pub fn find_or_create(&mut self, at: &Placed, seg: &Segment) -> SlotId {
        let slot = self.parts[at.part as usize].find_or_create(at, seg, &mut self.next_id);
        SlotId { part: at.part, slot }
    }

    /// The flow in slot `at` (its activity time must only move to that of a packet the
    /// table saw through [`find_or_create`](Self::find_or_create)).
    pub fn at_mut(&mut self, at: SlotId) -> &mut Flow {
        self.parts[at.part as usize].slots[at.slot as usize].flow.as_deref_mut().expect("occupied slot")
    }

    /// The flow of `seg`, created if new. Returns the flow and the packet's direction.
    pub fn get_or_create(&mut self, seg: &Segment) -> (&mut Flow, usize) {
        let placed = self.place(seg);
        let at = self.find_or_create(&placed, seg);
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
        let part = &mut self.parts[at.part as usize];
        part.activity_floor = part.activity_floor.min(seg.ts);
        let s = &mut part.slots[at.slot as usize];
        s.last_ts = seg.ts;
        s.id = id;
        s.closed = false;
        s.flow.replace(flow).expect("occupied slot")
    }

    /// Every flow still in the table or in the store of evicted ones, in creation order, for
    /// the end of input.
    pub fn drain(&mut self) -> impl Iterator<Item = Box<Flow>> + '_ {
        let mut flows: Vec<Box<Flow>> = self.parts.iter_mut().flat_map(Partition::drain).collect();
        flows.sort_unstable_by_key(|f| f.id);
        flows.into_iter()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Flow> {
        self.parts.iter().flat_map(|p| p.slots.iter().filter_map(|s| s.flow.as_deref()))
    }

    /// Every flow, evicted ones in the store too, to update what it holds besides its
    /// activity time (`last_ts` must not be moved through this: the sweeps would not see it).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Flow> {
        self.parts
            .iter_mut()
            .flat_map(|p| p.slots.iter_mut().filter_map(|s| s.flow.as_deref_mut()).chain(p.resume.iter_mut()))
    }

    fn part_of(&self, key: &FlowKey) -> (u64, usize) {
        let h = hash(key);
        (h, partition_of(h, self.parts.len()))
    }

    /// The flow of `key`, in the table or evicted in the store (which a lookup leaves it in).
    pub fn get(&self, key: &FlowKey) -> Option<&Flow> {
        let (h, p) = self.part_of(key);
        let part = &self.parts[p];
        match part.find(h, key) {
            Some(i) => part.slots[i as usize].flow.as_deref(),
            None => part.resume.get(key),
        }
    }

    /// The flow of `key`, as `get`, for a change that leaves its activity time alone (the
    /// kernel side's expiry of reports: the slot's copy of the time stays exact).
    pub fn get_mut_same_activity(&mut self, key: &FlowKey) -> Option<&mut Flow> {
        let (h, p) = self.part_of(key);
        let part = &mut self.parts[p];
        match part.find(h, key) {
            Some(i) => part.slots[i as usize].flow.as_deref_mut(),
            None => part.resume.get_mut(key),
        }
    }

    /// The flow of `key`, as `get`; its activity time may be moved (the sweeps will read it).
    pub fn get_mut(&mut self, key: &FlowKey) -> Option<&mut Flow> {
        let (h, p) = self.part_of(key);
        let part = &mut self.parts[p];
        let Some(i) = part.find(h, key) else { return part.resume.get_mut(key) };
        part.activity_floor = UNKNOWN;
        let s = &mut part.slots[i as usize];
        s.last_ts = UNKNOWN;
        s.flow.as_deref_mut()
    }
}

/// Retires flows in the order given.
#[allow(clippy::vec_box)]
fn retire_all(gone: Vec<Box<Flow>>, why: Retirement, retire: &mut impl FnMut(Box<Flow>, Retirement)) {
    let mut gone = gone.into_iter();
    while let Some(flow) = gone.next() {
        crate::flow::prefetch::prefetch_ahead(gone.as_slice(), |f| f);
        retire(flow, why);
    }
}

impl Partition {
    fn new(capacity: usize, resume: usize) -> Partition {
        Partition {
            index: SlotIndex::new(),
            slots: Vec::new(),
            free: Vec::new(),
            capacity,
            evicted: EvictionCounts::default(),
            resume: EvictedFlows::new(resume),
            activity_floor: TimestampNs::MAX,
        }
    }

    fn evictions(&self) -> EvictionCounts {
        EvictionCounts { resumed: self.resume.resumed, forgotten: self.resume.forgotten, ..self.evicted }
    }

    /// Takes the flow out of slot `i` and frees the slot.
    fn remove_slot(&mut self, i: u32) -> Box<Flow> {
        let hash = hash(&self.slots[i as usize].key);
        self.remove_hashed(i, hash)
    }

    /// [`remove_slot`](Self::remove_slot), given the hash of the slot's key.
    fn remove_hashed(&mut self, i: u32, hash: u64) -> Box<Flow> {
        let flow = self.slots[i as usize].flow.take().expect("occupied slot");
        self.index.remove(hash, i);
        self.free.push(i);
        flow
    }

    /// Takes out the flows idle as of `now` (counted), the evicted ones in the store too.
    // Boxed: flows go on to be retired by pointer, never moved.
    #[allow(clippy::vec_box)]
    fn take_idle(&mut self, now: TimestampNs, limits: FlowLimits) -> Vec<Box<Flow>> {
        // Only a flow quiet for the shorter of the two timeouts can be idle; only those
        // (and those of unknown time) are read.
        let shortest = limits.closed_timeout.min(limits.idle_timeout);
        let timeout = |f: &Flow| if f.is_closed() { limits.closed_timeout } else { limits.idle_timeout };
        let mut idle: Vec<u32> = Vec::new();
        if now.saturating_sub(self.activity_floor) > shortest {
            let mut floor = TimestampNs::MAX;
            for (i, s) in self.slots.iter_mut().enumerate() {
                if s.flow.is_none() {
                    continue;
                }
                if now.saturating_sub(s.last_ts) > shortest {
                    let f = s.flow.as_deref().expect("occupied slot");
                    s.last_ts = f.last_ts;
                    if now.saturating_sub(f.last_ts) > timeout(f) {
                        idle.push(i as u32);
                        continue;
                    }
                }
                floor = floor.min(s.last_ts);
            }
            self.activity_floor = floor;
        }
        let mut gone: Vec<Box<Flow>> = idle.into_iter().map(|i| self.remove_slot(i)).collect();
        // Evicted ones too: a table with room would have retired them now, and a packet
        // after that starts a new connection, not the old one resumed.
        gone.extend(self.resume.take_idle(now, timeout));
        self.evicted.idle += gone.len() as u64;
        gone
    }

    /// Evicts a tenth of a full partition, so that its scan stays rare.
    fn evict_excess(&mut self, retire: &mut impl FnMut(Box<Flow>, Retirement)) {
        if self.index.len() < self.capacity {
            return;
        }
        let target = self.capacity - self.capacity / 10 - 1;
        let excess = self.index.len() - target;
        // Closed connections first: they are over, and a late packet of theirs finds them
        // in the store. Then the least recently active open ones.
        let (closed, open) = self.least_recent(excess);
        self.evicted.closed += closed.len() as u64;
        self.evicted.capacity += open.len() as u64;
        // Retired after the batch, in the order let go: nothing else happens in between, and
        // the batch can be read ahead.
        let victims: Vec<(u32, u64)> =
            (closed.into_iter().chain(open)).map(|(_, i)| (i, hash(&self.slots[i as usize].key))).collect();
        let mut evicted: Vec<(FlowKey, Box<Flow>)> = Vec::with_capacity(victims.len());
        for (n, &(i, hash)) in victims.iter().enumerate() {
            // Their index entries are scattered over the index: each is asked for ahead.
            if let Some(&(_, ahead)) = victims.get(n + EVICTION_READ_AHEAD) {
                self.index.prefetch(ahead);
            }
            let key = self.slots[i as usize].key;
            evicted.push((key, self.remove_hashed(i, hash)));
        }
        // Into the store of evicted connections; those it lets go to make room are retired.
        let let_go = self.resume.keep_all(evicted);
        retire_all(let_go, Retirement::Capacity, retire);
    }

    /// The `count` flows to evict, closed ones first, each kind the least recently active,
    /// ties to the eldest; as (closed, open) lists of (id, slot) in creation order. One pass
    /// over the slots (a dense array, but megabytes of it), then a selection on each kind.
    #[allow(clippy::type_complexity)]
    fn least_recent(&self, count: usize) -> (Vec<(u64, u32)>, Vec<(u64, u32)>) {
        let (mut closed, mut open): (Vec<(TimestampNs, u64, u32)>, Vec<(TimestampNs, u64, u32)>) =
            (Vec::new(), Vec::with_capacity(self.index.len()));
        for (i, s) in self.slots.iter().enumerate() {
            if s.flow.is_some() {
                let kind = if s.closed { &mut closed } else { &mut open };
                kind.push((s.last_ts, s.id, i as u32));
            }
        }
        let closed = Self::first_by_activity(closed, count);
        let open = Self::first_by_activity(open, count - closed.len());
        (closed, open)
    }

    /// The `count` least recently active of `candidates` (time, id, slot), ties to the
    /// lowest id, as (id, slot) by id.
    fn first_by_activity(mut candidates: Vec<(TimestampNs, u64, u32)>, count: usize) -> Vec<(u64, u32)> {
        let count = count.min(candidates.len());
        if count == 0 {
            return Vec::new();
        }
        if count < candidates.len() {
            candidates.select_nth_unstable(count - 1);
        }
        let mut chosen: Vec<(u64, u32)> = candidates[..count].iter().map(|&(_, id, slot)| (id, slot)).collect();
        chosen.sort_unstable();
        chosen
    }

    /// The slot of the connection placed at `at`, created (with the id `next_id` hands
    /// out) if new.
    fn find_or_create(&mut self, at: &Placed, seg: &Segment, next_id: &mut u64) -> u32 {
        let Partition { index, slots, free, resume, activity_floor, .. } = self;
        let key = at.key;
        match index.find(at.hash, |j| slots[j as usize].key == key) {
            Some(i) => {
                let s = &mut slots[i as usize];
                // The analyzer moves `flow.last_ts` to this packet's time (when later) too.
                if seg.ts > s.last_ts {
                    s.last_ts = seg.ts;
                }
                i
            }
            None => {
                let evicted = match resume.is_empty() {
                    true => None,
                    false => resume.take(&key),
                };
                let (flow, id, closed) = match evicted {
                    // An evicted connection seen again goes on where it stopped.
                    Some(flow) => {
                        let (id, closed) = (flow.id, flow.is_closed());
                        (flow, id, closed)
                    }
                    None => {
                        let id = *next_id;
                        *next_id += 1;
                        // Not read back: the new flow's lines are still on their way in.
                        (Box::new(Flow::new(id, (seg.src, seg.sport), (seg.dst, seg.dport), seg.ts)), id, false)
                    }
                };
                *activity_floor = (*activity_floor).min(seg.ts);
                let slot = Slot { key, last_ts: seg.ts, id, closed, flow: Some(flow) };
                let i = match free.pop() {
                    Some(i) => {
                        // A free slot holds no flow: written over, not read and dropped
                        // first (it was last touched when its flow left, long ago).
                        let free_slot = &mut slots[i as usize];
                        debug_assert!(free_slot.flow.is_none());
                        // SAFETY: the slot is initialised, and what it holds needs no drop
                        // (a free slot's `flow` is `None`, and the rest is `Copy`).
                        unsafe { std::ptr::write(free_slot, slot) };
                        i
                    }
                    None => {
                        slots.push(slot);
                        (slots.len() - 1) as u32
                    }
                };
                index.insert(at.hash, i);
                // The slot the next new connection will take: written then, so fetched now
                // (it has been cold since its flow left).
                if let Some(&next) = free.last() {
                    crate::flow::prefetch::prefetch_line(&slots[next as usize]);
                }
                i
            }
        }
    }

    fn find(&self, hash: u64, key: &FlowKey) -> Option<u32> {
        self.index.find(hash, |j| self.slots[j as usize].key == *key)
    }

    #[allow(clippy::vec_box)]
    fn drain(&mut self) -> Vec<Box<Flow>> {
        // The arrays go too (not only their contents): the summary is made next, and a full
        // table's slots and index are tens of megabytes.
        let mut flows: Vec<Box<Flow>> = std::mem::take(&mut self.slots).into_iter().filter_map(|s| s.flow).collect();
        flows.extend(self.resume.drain());
        self.index = SlotIndex::new();
        self.free = Vec::new();
        flows
    }
}
