//! The kernel programs' diagnostics (aya-log): why a connection became watched, a watch
//! that could not be stored, a ring that was full, a copy that failed. Forwarded into
//! `tracing` under the target `tcpviz::kernel`.
//!
//! They are off unless `tracing` shows TRACE records of that target, which is what `-vv`
//! gives (or `TCPVIZ_LOG=tcpviz::kernel=trace`): the loader then leaves aya-log's level gate
//! (`AYA_LOG_LEVEL`, a read-only global of the object) open, else sets it to 0, and the
//! verifier removes the logging code of the programs.

use aya::Ebpf;
use aya_log::EbpfLogger;
use tokio::io::unix::AsyncFd;

/// aya-log's level gate, for `EbpfLoader::override_global` (`aya_log::LEVEL`): every level,
/// or none. A reference to a static, as the loader keeps it until it loads.
pub fn kernel_log_level() -> &'static u8 {
    static ALL: u8 = aya_log::Level::Trace as u8;
    static NONE: u8 = 0;
    if on() { &ALL } else { &NONE }
}

/// Whether the kernel side logs: `tracing` would show its most detailed records.
fn on() -> bool {
    tracing::enabled!(target: "tcpviz::kernel", tracing::Level::TRACE)
}

/// The reader of the kernel side's log ring, when its diagnostics are on.
pub struct KernelLog {
    reader: Option<AsyncFd<EbpfLogger<&'static dyn log::Log>>>,
}

impl KernelLog {
    /// Starts reading the log ring of `ebpf` (loaded with [`kernel_log_level`]). aya-log
    /// hands each record to the `log` crate's logger, which the `tracing` subscriber's
    /// `LogTracer` turns into a `tracing` event.
    pub fn start(ebpf: &mut Ebpf) -> KernelLog {
        if !on() {
            return KernelLog { reader: None };
        }
        let reader = EbpfLogger::init(ebpf).map_err(|e| e.to_string()).and_then(|logger| {
            // SAFETY: the logger owns its ring's file descriptor, which stays open as long as
            // the AsyncFd that wraps it.
            unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) }.map_err(|e| e.to_string())
        });
        match reader {
            Ok(r) => KernelLog { reader: Some(r) },
            Err(e) => {
                crate::errln!("note: cannot read the kernel programs' log: {e}; their diagnostics are not shown");
                KernelLog { reader: None }
            }
        }
    }

    /// Waits until the ring holds records and logs them; never ends when diagnostics are off.
    pub async fn log_when_readable(&mut self) -> std::io::Result<()> {
        let Some(reader) = self.reader.as_mut() else { return std::future::pending().await };
        let mut guard = reader.readable_mut().await?;
        guard.get_inner_mut().flush();
        guard.clear_ready();
        Ok(())
    }

    /// Logs what the ring holds (at the end of the run).
    pub fn flush(&mut self) {
        if let Some(reader) = self.reader.as_mut() {
            reader.get_mut().flush();
        }
    }
}
