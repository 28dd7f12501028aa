//! Connections: canonical keys, per-direction state, wrap-safe sequence arithmetic, and a
//! table with bounded memory.
pub mod bounds;
pub mod kernel_join;
pub mod key;
pub mod limits;
pub mod prefetch;
pub mod resume;
pub mod seq;
pub mod slot_index;
pub mod state;
pub mod table;
pub mod ts_rtt;
pub mod unacked;
pub mod watch;

pub use key::FlowKey;
pub use state::{DirState, Flow};
pub use table::{FlowLimits, FlowTable, Retirement};
