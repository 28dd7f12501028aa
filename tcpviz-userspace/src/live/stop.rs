//! Stop requests (SIGINT, SIGTERM, SIGHUP), caught from the first moment of a run.
//!
//! The agent installs these handlers before it loads or attaches anything, so a signal
//! during start-up, during the run, while the session is finished or while the dashboards
//! are drawn never ends the process half-way: the agent stops attaching, detaches what it
//! attached, and writes its files. Every signal after the first one only hurries the end:
//! the dashboards not yet written are skipped (`tcpviz report` and `tcpviz plot` write them
//! later).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Clone)]
pub struct StopSignals {
    count: Arc<AtomicUsize>,
}

impl StopSignals {
    /// Installs the handlers. SIGHUP is caught only when it is not ignored (under `nohup`
    /// a closed terminal must not stop the agent).
    pub fn install() -> std::io::Result<StopSignals> {
        let count = Arc::new(AtomicUsize::new(0));
        let mut signals = vec![libc::SIGINT, libc::SIGTERM];
        if !ignored(libc::SIGHUP) {
            signals.push(libc::SIGHUP);
        }
        for sig in signals {
            let c = Arc::clone(&count);
            // SAFETY: the action only increments an atomic, which is async-signal-safe.
            unsafe { signal_hook_registry::register(sig, move || _ = c.fetch_add(1, Ordering::SeqCst)) }?;
        }
        Ok(StopSignals { count })
    }

    /// Signals received so far.
    pub fn received(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    pub fn requested(&self) -> bool {
        self.received() > 0
    }
}

fn ignored(sig: libc::c_int) -> bool {
    // SAFETY: a query only (no new action); `old` is plain data the call fills in.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}

/// A pause at a named point, for tests that must signal the agent at an exact moment:
/// `TCPVIZ_TEST_PAUSE_AT=<point>` makes the agent print `test pause: <point>` and wait 1.5 s
/// there (or `<point>:<ms>`). Only with the `test-hooks` feature.
#[cfg(feature = "test-hooks")]
pub fn test_pause(point: &str) {
    let Ok(spec) = std::env::var("TCPVIZ_TEST_PAUSE_AT") else { return };
    let (name, ms) = match spec.split_once(':') {
        Some((n, ms)) => (n.to_string(), ms.parse().unwrap_or(1500)),
        None => (spec, 1500),
    };
    if name == point {
        crate::errln!("test pause: {point}");
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

#[cfg(not(feature = "test-hooks"))]
pub fn test_pause(_point: &str) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_is_counted_and_does_not_end_the_process() {
        let stop = StopSignals::install().unwrap();
        let before = stop.received();
        // SAFETY: signals this very process, whose handler was installed above.
        unsafe { libc::raise(libc::SIGTERM) };
        assert_eq!(stop.received(), before + 1);
        // SAFETY: as above.
        unsafe { libc::raise(libc::SIGINT) };
        assert_eq!(stop.received(), before + 2);
    }
}
