//! Sources: turn bytes from somewhere into [`Frame`]s, and frames into [`Segment`]s.
pub mod decode;
pub mod files;
pub mod frame;
pub mod reader;
pub mod segment;
pub mod tail;
pub mod tail_input;
pub mod wlan;

pub use decode::{Segment, SkipReason, TcpFlags, decode_frame};
pub use files::{FilesRead, FrameAt, read_files, read_sources};
pub use frame::{Direction, Frame, LinkType};
pub use reader::{CaptureError, CaptureReader, Next};
