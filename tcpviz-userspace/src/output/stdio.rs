//! Standard output and standard error that end quietly when their reader goes away.
//!
//! Rust ignores SIGPIPE, so a write to a closed pipe fails with `BrokenPipe`, and
//! `println!` panics on that failure (`tcpviz summary | head -1` exited 101). Everything
//! tcpviz prints goes through [`outln!`](crate::outln) and [`errln!`](crate::errln)
//! instead: once a stream's reader is gone, what is written to it is dropped, the work goes
//! on, and the exit status is that of the work, as with ripgrep. The long-running modes
//! check [`stdout_closed`] and stop as they do on Ctrl-C (files flushed, summary written,
//! hooks detached), so `tcpviz follow ... | head -3` ends.
//!
//! A failure that is not a closed pipe (standard output redirected to a full disk) is said
//! once on standard error, and [`stdout_failure`] makes the exit status 1.

use std::fmt;
use std::io::{self, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
static STDERR_CLOSED: AtomicBool = AtomicBool::new(false);
static STDOUT_FAILURE: Mutex<Option<String>> = Mutex::new(None);

/// Writes to standard output; false once it can take no more (its reader is gone).
pub fn write_out(args: fmt::Arguments<'_>) -> bool {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return false;
    }
    let mut out = io::stdout().lock();
    match out.write_fmt(args).and_then(|()| out.flush()) {
        Ok(()) => true,
        Err(e) => {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
            if e.kind() != io::ErrorKind::BrokenPipe {
                write_err(format_args!("error: cannot write to standard output: {e}\n"));
                if let Ok(mut f) = STDOUT_FAILURE.lock() {
                    *f = Some(e.to_string());
                }
            }
            false
        }
    }
}

/// Writes to standard error; dropped once its reader is gone.
pub fn write_err(args: fmt::Arguments<'_>) {
    if STDERR_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    note_err_result(io::stderr().lock().write_fmt(args));
}

fn note_err_result(r: io::Result<()>) {
    if let Err(e) = r
        && e.kind() == io::ErrorKind::BrokenPipe
    {
        STDERR_CLOSED.store(true, Ordering::Relaxed);
    }
}

/// True once a write to standard output found its reader gone (or failed otherwise).
pub fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(Ordering::Relaxed)
}

/// Why standard output failed, when that was not a closed pipe.
pub fn stdout_failure() -> Option<String> {
    STDOUT_FAILURE.lock().ok().and_then(|f| f.clone())
}

/// Standard error for `tracing`: never fails, so the subscriber never reports (and panics
/// on) a closed pipe.
#[derive(Clone, Copy, Default)]
pub struct QuietStderr;

impl Write for QuietStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !STDERR_CLOSED.load(Ordering::Relaxed) {
            note_err_result(io::stderr().lock().write_all(buf));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `println!` that never panics: see the module documentation.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::output::stdio::write_out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::stdio::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` that never panics.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::stdio::write_out(format_args!($($arg)*))
    };
}

/// `eprintln!` that never panics.
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::output::stdio::write_err(format_args!("{}\n", format_args!($($arg)*)))
    };
}
