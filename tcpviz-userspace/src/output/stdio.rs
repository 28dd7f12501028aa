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
/// Output held while the terminal view owns the screen (`--tui`): printed when it ends.
static HELD: Mutex<Option<Held>> = Mutex::new(None);
static HOLDING: AtomicBool = AtomicBool::new(false);
/// Past this, held output is dropped (and the drop said when released).
const HELD_MAX: usize = 1 << 20;

#[derive(Default)]
struct Held {
    text: Vec<u8>,
    dropped: u64,
}

/// Holds what is printed (standard output, standard error, logs) until
/// [`release_output`]: lines written over a full-screen view would garble it.
pub fn hold_output() {
    if let Ok(mut h) = HELD.lock() {
        h.get_or_insert_with(Held::default);
        HOLDING.store(true, Ordering::SeqCst);
    }
}

/// Prints what was held, in order (all on standard error: it is diagnostics, and the
/// results are printed after it).
pub fn release_output() {
    HOLDING.store(false, Ordering::SeqCst);
    let held = HELD.lock().ok().and_then(|mut h| h.take());
    if let Some(h) = held {
        note_err_result(io::stderr().lock().write_all(&h.text));
        if h.dropped > 0 {
            write_err(format_args!("({} bytes of messages dropped while the terminal view ran)\n", h.dropped));
        }
    }
}

/// Lets output through again without printing what was held (a panic hook: the lock
/// may be held by the panicking thread).
pub fn stop_holding() {
    HOLDING.store(false, Ordering::SeqCst);
}

/// Appends to the held output when holding; false when not.
fn held(bytes: &[u8]) -> bool {
    let Ok(mut guard) = HELD.lock() else { return false };
    let Some(h) = guard.as_mut() else { return false };
    if h.text.len() + bytes.len() <= HELD_MAX {
        h.text.extend_from_slice(bytes);
    } else {
        h.dropped += bytes.len() as u64;
    }
    true
}

/// Writes to standard output; false once it can take no more (its reader is gone).
pub fn write_out(args: fmt::Arguments<'_>) -> bool {
    if HOLDING.load(Ordering::Relaxed) && held(args.to_string().as_bytes()) {
        return true;
    }
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
    if HOLDING.load(Ordering::Relaxed) && held(args.to_string().as_bytes()) {
        return;
    }
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
        if HOLDING.load(Ordering::Relaxed) && held(buf) {
            return Ok(buf.len());
        }
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
