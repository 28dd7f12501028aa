//! What bounds the flow table and what it counts when they act: its limits, why a flow
//! left it, the evictions, and the clock of its idle sweeps.

use crate::time::{NS_PER_SEC, TimestampNs};

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
    /// Evicted because the table was full, and let go from the store of evicted
    /// connections (see [`super::resume`]).
    Capacity,
    /// A new connection reused its ports.
    Reused,
    /// End of input.
    End,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct EvictionCounts {
    pub idle: u64,
    /// Open connections evicted because the table was full.
    pub capacity: u64,
    /// Closed (reset, or FINs both ways) connections evicted because the table was full,
    /// before any open one.
    pub closed: u64,
    /// Evicted connections seen again, back in the table from the store of evicted ones.
    pub resumed: u64,
    /// Evicted connections let go from that store (it is bounded too), and retired.
    pub forgotten: u64,
}

/// When the idle sweeps run: once per second of packet time, at the first packet past it.
/// A sharded pipeline's reader keeps one for the whole stream and tells every shard's table
/// when to sweep, so that each sweeps at the packet where one table would.
#[derive(Debug, Clone, Copy)]
pub struct SweepClock {
    last: TimestampNs,
}

impl Default for SweepClock {
    fn default() -> Self {
        SweepClock { last: TimestampNs::MIN }
    }
}

impl SweepClock {
    /// Whether a sweep is due at `now`; if it is, the next period starts.
    pub fn due(&mut self, now: TimestampNs) -> bool {
        if now.saturating_sub(self.last) < NS_PER_SEC {
            return false;
        }
        self.last = now;
        true
    }
}

impl EvictionCounts {
    pub fn add(&mut self, other: &EvictionCounts) {
        self.idle += other.idle;
        self.capacity += other.capacity;
        self.closed += other.closed;
        self.resumed += other.resumed;
        self.forgotten += other.forgotten;
    }
}
