//! The session folder every run writes: its file names, where it is, how its JSON files
//! are written, how its summary is read back, and how a run ends it.

use std::io;
use std::path::{Path, PathBuf};

use crate::output::benchmark::RunFigures;
use crate::output::rotation::RotationSettings;
use crate::output::summary::Summary;

pub const EVENTS_FILE: &str = "events.jsonl";
pub const ALERTS_FILE: &str = "alerts.jsonl";
pub const SUMMARY_FILE: &str = "summary.json";
pub const BENCHMARK_FILE: &str = "benchmark.log";
pub const KERNEL_SAMPLES_FILE: &str = "kernel_samples.jsonl";
/// The TC snapshots of a live session.
pub const CAPTURE_FILE: &str = "capture.pcapng";
pub const TIMELINE_FILE: &str = "timeline.html";
pub const SUMMARY_PAGE_FILE: &str = "summary.html";
pub const REPORT_FILE: &str = "report.html";

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot create the session folder {path}")]
    Create { path: PathBuf, source: io::Error },
    /// A file of the session (always its full path) could not be written.
    #[error("cannot write {path}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot read {path}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is not a tcpviz summary")]
    Summary { path: PathBuf, source: serde_json::Error },
    #[error(
        "{path} line {line}: a summary of schema version {found}, where this tcpviz reads version {}: use the tcpviz that wrote it, or analyse the captures again",
        crate::event::SCHEMA_VERSION
    )]
    SummaryVersion { path: PathBuf, line: usize, found: String },
}

/// A session folder: the one place that knows its files.
#[derive(Debug, Clone)]
pub struct Session {
    dir: PathBuf,
    /// The folders this run made for it (none when it existed), outermost first.
    made: Vec<PathBuf>,
    /// How its growing files (capture, JSON lines) are cut into parts.
    rotation: RotationSettings,
}

impl Session {
    /// `DIR` when given, else a new `artifacts/session_YYYYmmdd_HHMMSS/` (with a suffix if
    /// that name is taken). Creates it.
    pub fn create(out: Option<&Path>) -> Result<Session, SessionError> {
        create_session_dir(out)
    }

    /// A session folder that exists (to read, or to add to).
    pub fn at(dir: &Path) -> Session {
        Session { dir: dir.to_path_buf(), made: Vec::new(), rotation: RotationSettings::default() }
    }

    /// The session's growing files are written as parts ([`rotation`](crate::output::rotation)).
    pub fn with_rotation(mut self, rotation: RotationSettings) -> Session {
        self.rotation = rotation;
        self
    }

    pub fn rotation(&self) -> RotationSettings {
        self.rotation
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The full path of one of the session's files (`EVENTS_FILE`, ...).
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// Turns a failed write of `file` into the error naming its full path. The path is made
    /// only if the write failed: this is called per packet, where joining it first was a
    /// sixth of the live agent's time.
    pub fn write_error<'a>(&'a self, file: &'a str) -> impl FnOnce(io::Error) -> SessionError + 'a {
        move |source| SessionError::Write { path: self.path(file), source }
    }

    /// Removes the folders this run made when it left them empty (a run that failed
    /// before writing anything leaves no empty `artifacts/session_*` behind).
    pub fn remove_if_unused(&self) {
        for dir in self.made.iter().rev() {
            let empty = std::fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(false);
            if !empty || std::fs::remove_dir(dir).is_err() {
                break;
            }
        }
    }

    /// Writes `file` of the session as pretty JSON, whole or not at all.
    pub fn write_json<T: serde::Serialize>(&self, file: &str, value: &T) -> Result<PathBuf, SessionError> {
        let path = self.path(file);
        match write_json(&path, value) {
            Ok(()) => Ok(path),
            Err(source) => Err(SessionError::Write { path, source }),
        }
    }

    /// Ends a run over files: summary.json, then benchmark.log. The first file that cannot
    /// be written is the error.
    pub fn finish(&self, summary: &Summary, figures: &RunFigures) -> Result<Vec<PathBuf>, SessionError> {
        let summary_path = self.write_json(SUMMARY_FILE, summary)?;
        let bench_path = self.path(BENCHMARK_FILE);
        figures.write(&bench_path).map_err(self.write_error(BENCHMARK_FILE))?;
        Ok(vec![summary_path, bench_path])
    }

    /// Ends a long-running session: summary.json and benchmark.log. A file that cannot be
    /// written is said once on standard error and added to the summary's errors, so the
    /// table on the terminal still gives the results (and the exit status is 1). Returns
    /// the files written, and whether summary.json is one of them (the dashboards need it).
    pub fn finish_lasting(&self, summary: &mut Summary, figures: &RunFigures) -> (Vec<PathBuf>, bool) {
        let mut written = Vec::new();
        let failed = |summary: &mut Summary, e: SessionError| {
            let text = crate::error::chain(&e);
            crate::errln!("error: {text}");
            summary.errors.push(text);
        };
        let summary_written = match self.write_json(SUMMARY_FILE, summary) {
            Ok(path) => {
                written.push(path);
                true
            }
            Err(e) => {
                failed(summary, e);
                false
            }
        };
        let bench_path = self.path(BENCHMARK_FILE);
        match figures.write(&bench_path) {
            Ok(()) => written.push(bench_path),
            Err(e) => failed(summary, self.write_error(BENCHMARK_FILE)(e)),
        }
        (written, summary_written)
    }

    /// The session's summary, or None when it has none (an events file on its own, or a
    /// session still being written).
    pub fn load_summary(&self) -> Result<Option<Summary>, SessionError> {
        let path = self.path(SUMMARY_FILE);
        // Bytes, not a string: a file that is not UTF-8 is "not a summary", not unreadable.
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(SessionError::Read { path, source }),
        };
        // The version first: a summary of another version may fail to parse for reasons
        // that would only confuse.
        #[derive(serde::Deserialize)]
        struct Version {
            schema_version: Option<serde_json::Value>,
        }
        let version: Version =
            serde_json::from_slice(&bytes).map_err(|source| SessionError::Summary { path: path.clone(), source })?;
        if let Some(v) = version.schema_version
            && v != crate::event::SCHEMA_VERSION
        {
            let text = String::from_utf8_lossy(&bytes);
            let line = text.lines().position(|l| l.contains("\"schema_version\"")).map_or(1, |i| i + 1);
            return Err(SessionError::SummaryVersion { path, line, found: v.to_string() });
        }
        serde_json::from_slice(&bytes).map(Some).map_err(|source| SessionError::Summary { path, source })
    }
}

/// Writes pretty JSON whole or not at all (a temporary file and a rename).
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> io::Result<()> {
    crate::output::record_file::write_whole_with(path, |out| {
        // `From` keeps an I/O error as it was (a full disk stays `StorageFull`).
        serde_json::to_writer_pretty(&mut *out, value).map_err(io::Error::from)?;
        out.write_all(b"\n")
    })
}

/// `dir` and those of its ancestors that do not exist, outermost first.
fn missing_folders(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        dir.ancestors().take_while(|a| !a.as_os_str().is_empty() && !a.exists()).map(Path::to_path_buf).collect();
    v.reverse();
    v
}

fn create_session_dir(out: Option<&Path>) -> Result<Session, SessionError> {
    if let Some(dir) = out {
        let err = |source| SessionError::Create { path: dir.to_path_buf(), source };
        if dir.is_dir() {
            return Ok(Session { dir: dir.to_path_buf(), made: Vec::new(), rotation: RotationSettings::default() });
        }
        if dir.exists() {
            return Err(err(io::Error::new(io::ErrorKind::AlreadyExists, "a file of that name is in the way")));
        }
        let made = missing_folders(dir);
        std::fs::create_dir_all(dir).map_err(err)?;
        return Ok(Session { dir: dir.to_path_buf(), made, rotation: RotationSettings::default() });
    }
    let stamp = chrono::Local::now().format("session_%Y%m%d_%H%M%S").to_string();
    let base = Path::new("artifacts");
    let mut made = missing_folders(base);
    std::fs::create_dir_all(base).map_err(|source| SessionError::Create { path: base.join(&stamp), source })?;
    for n in 1.. {
        let name = if n == 1 { stamp.clone() } else { format!("{stamp}_{n}") };
        let dir = base.join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                made.push(dir.clone());
                return Ok(Session { dir, made, rotation: RotationSettings::default() });
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(source) => return Err(SessionError::Create { path: dir, source }),
        }
    }
    unreachable!()
}

/// A file given where a session folder is expected must at least look like an events file
/// (JSON lines, or empty): a capture or any other file gets a clear error instead of a page
/// of unreadable lines written beside it.
fn check_events_file(path: &Path) -> io::Result<()> {
    use std::io::Read;
    let mut head = [0u8; 4096];
    let mut file = std::fs::File::open(path)?;
    let n = file.read(&mut head)?;
    let head = &head[..n];
    let not_events = |why: &str| {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a session folder or an events file: {why}", path.display()),
        ))
    };
    let is_capture = head.len() >= 4
        && [
            [0xa1, 0xb2, 0xc3, 0xd4],
            [0xd4, 0xc3, 0xb2, 0xa1],
            [0xa1, 0xb2, 0x3c, 0x4d],
            [0x4d, 0x3c, 0xb2, 0xa1],
            [0x0a, 0x0d, 0x0d, 0x0a],
        ]
        .iter()
        .any(|m| head[..4] == *m);
    if is_capture {
        return not_events("it is a capture (analyse it with tcpviz parse-pcap first)");
    }
    match head.iter().find(|b| !b.is_ascii_whitespace()) {
        None | Some(b'{') => Ok(()),
        Some(_) => not_events("it does not start with a JSON object"),
    }
}

/// Resolves `--in PATH` of the reading commands: a session folder, or an events file.
pub fn resolve_events_path(path: &Path) -> io::Result<(PathBuf, PathBuf)> {
    if path.is_dir() {
        let events = path.join(EVENTS_FILE);
        // A rotated session has the parts of its events file instead.
        if !crate::output::rotation::exists(&events) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} has no {EVENTS_FILE}: is it a tcpviz session folder?", path.display()),
            ));
        }
        Ok((path.to_path_buf(), events))
    } else if path.is_file() {
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
        let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
        if path.file_name().is_some_and(|n| n == SUMMARY_FILE) {
            // The session's summary named instead of its folder.
            return resolve_events_path(&dir);
        }
        check_events_file(path)?;
        Ok((dir, path.to_path_buf()))
    } else {
        Err(io::Error::new(io::ErrorKind::NotFound, format!("{}: no such file or folder", path.display())))
    }
}
