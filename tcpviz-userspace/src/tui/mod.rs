//! `--tui`: a full-screen terminal view of a `monitor` or `live` session.
//!
//! The analysis publishes a [`Snapshot`](snapshot::Snapshot) about once a second through
//! a [`ViewFeed`](feed::ViewFeed); a thread of its own draws the latest one at a fixed
//! frame rate and reads the keys, so the analysis never waits on the terminal. `q` (and
//! Ctrl-C, which raw mode turns into a key) sends this process SIGINT: the session ends
//! exactly as on Ctrl-C. The terminal is restored when the view ends, on an error, on a
//! panic in any thread (a panic hook), and after SIGTERM (which finishes the session like
//! SIGINT, then ends the view).

pub mod feed;
pub mod snapshot;

#[cfg(unix)]
mod draw;
#[cfg(unix)]
mod keys;
#[cfg(unix)]
mod runner;

#[cfg(unix)]
pub use runner::Tui;

/// Without a Unix terminal there is no view: `--tui` says so.
#[cfg(not(unix))]
pub struct Tui(std::convert::Infallible);

#[cfg(not(unix))]
impl Tui {
    pub fn start() -> Result<Tui, TuiError> {
        Err(TuiError::Unsupported)
    }

    pub fn slot(&self) -> snapshot::SnapshotSlot {
        match self.0 {}
    }

    pub fn finish(self) -> Result<(), TuiError> {
        match self.0 {}
    }
}

/// Why the terminal view could not run.
#[derive(Debug, thiserror::Error)]
pub enum TuiError {
    #[error(
        "--tui needs a terminal, and standard {0} is not one: run it in a terminal, or leave out --tui for alert lines"
    )]
    NoTerminal(&'static str),
    #[error("--tui is not available on this system (it needs a Unix terminal)")]
    Unsupported,
    #[error("cannot set up the terminal for --tui")]
    Setup(#[source] std::io::Error),
    #[error("the terminal view failed: {0}")]
    Failed(String),
}
