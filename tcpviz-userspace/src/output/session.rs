//! The session folder every run writes.

use std::io;
use std::path::{Path, PathBuf};

pub const EVENTS_FILE: &str = "events.jsonl";
pub const ALERTS_FILE: &str = "alerts.jsonl";
pub const SUMMARY_FILE: &str = "summary.json";
pub const BENCHMARK_FILE: &str = "benchmark.log";
pub const KERNEL_SAMPLES_FILE: &str = "kernel_samples.jsonl";

/// `DIR` when given, else a new `artifacts/session_YYYYmmdd_HHMMSS/` (with a suffix if
/// that name is taken). Creates it.
pub fn create_session_dir(out: Option<&Path>) -> io::Result<PathBuf> {
    if let Some(dir) = out {
        std::fs::create_dir_all(dir)?;
        return Ok(dir.to_path_buf());
    }
    let stamp = chrono::Local::now().format("session_%Y%m%d_%H%M%S").to_string();
    let base = Path::new("artifacts");
    std::fs::create_dir_all(base)?;
    for n in 1.. {
        let name = if n == 1 { stamp.clone() } else { format!("{stamp}_{n}") };
        let dir = base.join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    unreachable!()
}

/// Resolves `--in PATH` of the reading commands: a session folder, or an events file.
pub fn resolve_events_path(path: &Path) -> io::Result<(PathBuf, PathBuf)> {
    if path.is_dir() {
        let events = path.join(EVENTS_FILE);
        if !events.exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} has no {EVENTS_FILE}: is it a tcpviz session folder?", path.display()),
            ));
        }
        Ok((path.to_path_buf(), events))
    } else if path.is_file() {
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
        Ok((dir, path.to_path_buf()))
    } else {
        Err(io::Error::new(io::ErrorKind::NotFound, format!("{}: no such file or folder", path.display())))
    }
}
