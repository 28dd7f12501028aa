//! Sources: turn bytes from somewhere into [`Frame`]s, and frames into [`Segment`]s.
pub mod decode;
pub mod frame;
pub mod reader;
pub mod tail;

pub use decode::{Segment, SkipReason, TcpFlags, decode_frame};
pub use frame::{Direction, Frame, LinkType, TimestampNs};
pub use reader::{CaptureError, CaptureReader, Next};
