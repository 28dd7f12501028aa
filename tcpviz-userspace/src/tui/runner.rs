//! The drawing thread and the terminal it owns.

use std::io::{self, IsTerminal};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, Event};
use ratatui::crossterm::{cursor, execute, terminal};

use super::TuiError;
use super::keys::{Action, ViewState};
use super::snapshot::{SnapshotSlot, visible_rows};

/// Frames per second: a snapshot comes once a second, so this is for keys and resizes.
const FRAME: Duration = Duration::from_millis(100);

/// How long the end of a session waits for the drawing thread.
const STOP_WAIT: Duration = Duration::from_secs(2);

/// The terminal is in raw mode on the alternate screen (restored at most once).
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Leaves raw mode and the alternate screen, shows the cursor. Safe to call from a panic
/// hook and more than once.
fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = terminal::disable_raw_mode();
        let _ = execute!(io::stdout(), terminal::LeaveAlternateScreen, cursor::Show);
    }
}

fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // The message must land on a normal screen, not the alternate one.
            restore();
            crate::output::stdio::stop_holding();
            previous(info);
        }));
    });
}

/// Ends the session exactly as Ctrl-C does: the signal handlers of `follow` and `live`
/// finish it (files flushed, summary and dashboards written).
fn request_stop() {
    // SAFETY: kill(2) on our own pid with a signal whose handler the session installed.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGINT);
    }
}

/// The running view. [`finish`](Tui::finish) it after the session ended; dropping it
/// restores the terminal too (an early return on an error).
pub struct Tui {
    slot: SnapshotSlot,
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl Tui {
    /// Takes the terminal. Fails with a clear error when standard input or output is not a
    /// terminal.
    pub fn start() -> Result<Tui, TuiError> {
        if !io::stdout().is_terminal() {
            return Err(TuiError::NoTerminal("output"));
        }
        if !io::stdin().is_terminal() {
            return Err(TuiError::NoTerminal("input"));
        }
        install_panic_hook();
        terminal::enable_raw_mode().map_err(TuiError::Setup)?;
        ACTIVE.store(true, Ordering::SeqCst);
        if let Err(e) = execute!(io::stdout(), terminal::EnterAlternateScreen, cursor::Hide) {
            restore();
            return Err(TuiError::Setup(e));
        }
        crate::output::stdio::hold_output();
        let slot = SnapshotSlot::default();
        let done = Arc::new(AtomicBool::new(false));
        let thread = {
            let (slot, done) = (slot.clone(), Arc::clone(&done));
            std::thread::Builder::new()
                .name("tcpviz-tui".into())
                .spawn(move || {
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&slot, &done)));
                    let r = match r {
                        Ok(r) => r.map_err(|e| e.to_string()),
                        Err(_) => Err("it panicked (the message is above)".to_string()),
                    };
                    if r.is_err() {
                        // The screen is gone: the session ends as on Ctrl-C, its files written.
                        restore();
                        request_stop();
                    }
                    r
                })
                .map_err(|e| {
                    restore();
                    crate::output::stdio::release_output();
                    TuiError::Setup(e)
                })?
        };
        Ok(Tui { slot, done, thread: Some(thread) })
    }

    /// Where the analysis publishes its snapshots.
    pub fn slot(&self) -> SnapshotSlot {
        self.slot.clone()
    }

    /// Stops drawing, restores the terminal and prints what was held back meanwhile.
    pub fn finish(mut self) -> Result<(), TuiError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), TuiError> {
        self.done.store(true, Ordering::SeqCst);
        // The drawing thread stops within a frame. Should it hang in the terminal all the
        // same, the session (already finished) must still end: it is left behind.
        let deadline = Instant::now() + STOP_WAIT;
        let r = match self.thread.take() {
            Some(t) => {
                while !t.is_finished() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                match t.is_finished().then(|| t.join()) {
                    Some(Ok(Err(e))) => Err(TuiError::Failed(e)),
                    Some(Err(_)) => Err(TuiError::Failed("it panicked".into())),
                    Some(Ok(Ok(()))) => Ok(()),
                    None => Err(TuiError::Failed(format!("it did not stop within {STOP_WAIT:?}"))),
                }
            }
            None => Ok(()),
        };
        restore();
        crate::output::stdio::release_output();
        r
    }
}

impl Drop for Tui {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.stop();
        }
    }
}

/// Waits up to `timeout` for input on the terminal (standard input: `start` checked it is
/// one). An error once the terminal hung up (its window closed, its ssh connection
/// dropped): crossterm 0.28 then reads the terminal's end of file over and over inside its
/// own poll, a core spinning and the view never stopping, so it must not be asked.
fn terminal_input(timeout: Duration) -> io::Result<bool> {
    let mut fd = libc::pollfd { fd: libc::STDIN_FILENO, events: libc::POLLIN, revents: 0 };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd, alive for the call.
    let n = unsafe { libc::poll(&mut fd, 1, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted { Ok(false) } else { Err(e) };
    }
    if fd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
        return Err(io::Error::new(io::ErrorKind::BrokenPipe, "the terminal hung up"));
    }
    Ok(n > 0)
}

fn run(slot: &SnapshotSlot, done: &AtomicBool) -> io::Result<()> {
    let mut term = Terminal::new(CrosstermBackend::new(io::stdout()))?;
    term.clear()?;
    let mut state = ViewState::default();
    #[cfg(feature = "test-hooks")]
    let mut frames: u64 = 0;
    #[cfg(feature = "test-hooks")]
    let panic_at: Option<u64> = std::env::var("TCPVIZ_TEST_PANIC_IN_DRAW").ok().and_then(|v| v.parse().ok());
    // A panic elsewhere restored the terminal: nothing more is drawn over the message.
    while !done.load(Ordering::SeqCst) && ACTIVE.load(Ordering::SeqCst) {
        let snap = state.shown(slot.load());
        let rows = visible_rows(&snap.rows, &state.filter, state.sort, state.reversed);
        state.selected = state.selected.min(rows.len().saturating_sub(1));
        #[cfg(feature = "test-hooks")]
        {
            frames += 1;
            if panic_at.is_some_and(|n| frames >= n) {
                panic!("test hook TCPVIZ_TEST_PANIC_IN_DRAW: a panic in the drawing code at frame {frames}");
            }
        }
        term.draw(|f| super::draw::draw(f, &snap, &rows, &state))?;
        // Keys until the next frame; a resize is drawn at once. A hung-up terminal is seen
        // before crossterm is asked (see `terminal_input`).
        let next = Instant::now() + FRAME;
        loop {
            let left = next.saturating_duration_since(Instant::now());
            terminal_input(Duration::ZERO)?;
            if !event::poll(Duration::ZERO)? {
                if left.is_zero() || !terminal_input(left)? {
                    break;
                }
                // Part of a key sequence, or nothing crossterm reports.
                if !event::poll(Duration::ZERO)? {
                    continue;
                }
            }
            match event::read()? {
                Event::Key(k) => {
                    if state.on_key(k, &rows, &snap) == Action::Quit {
                        request_stop();
                    }
                    break;
                }
                Event::Resize(..) => break,
                _ => {}
            }
        }
    }
    Ok(())
}
