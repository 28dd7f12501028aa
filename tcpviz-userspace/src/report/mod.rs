//! HTML dashboards of a session: `timeline.html` (anomalies over time, one row per flow),
//! `summary.html` (per-flow counts and a sortable table) and `report.html` (overview and,
//! for the worst flows, time–sequence, RTT and bytes-in-flight graphs).
//!
//! Made with the `plotly` crate; plotly.js is embedded once per page and a
//! Content-Security-Policy forbids network requests, so a page opens with no network.
//! Text from captures and inputs is escaped ([`page`]).
//!
//! Page size is bounded: plotly.js (4.7 MB) plus at most about 8 MB of data per page,
//! whatever the session's size: the timeline draws at most [`timeline::MAX_MARKERS`]
//! sampled events (plus 200 time buckets counting all of them) on at most
//! [`timeline::MAX_ROWS`] + 1 rows and [`timeline::MAX_ALERT_BANDS`] alert bands; the flow
//! table lists at most [`summary_page::MAX_TABLE_FLOWS`] flows; the report draws
//! [`series::MAX_DETAIL_FLOWS`] flows with at most [`series::MAX_SERIES_POINTS`]
//! points per trace. Hover text and table cells cut free text at a few hundred characters.
//! Reading is streaming: memory grows with the number of flows that have events (about
//! 100 bytes each), not with the number of events.

pub mod flow_plots;
mod overview;
pub mod page;
pub mod report_page;
pub mod sampling;
pub mod series;
pub mod style;
pub mod summary_page;
pub mod timeline;
pub mod timeline_data;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::output::jsonl::line_error;
use crate::output::session::{self, ALERTS_FILE, KERNEL_SAMPLES_FILE, SUMMARY_FILE, Session, SessionError};
pub use crate::output::session::{REPORT_FILE, SUMMARY_PAGE_FILE, TIMELINE_FILE};
use crate::output::summary::Summary;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The session folder or events file named does not exist or is not a session.
    #[error("{0}")]
    Input(std::io::Error),
    #[error("cannot read {path}")]
    Read { path: PathBuf, source: std::io::Error },
    /// The summary cannot be read, or a page cannot be written.
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(
        "{path} is missing: tcpviz {page} needs the session summary, which a run writes when it ends (parse-pcap; follow and live on Ctrl-C)"
    )]
    MissingSummary { path: PathBuf, page: &'static str },
}

/// The files of a session the dashboards read.
#[derive(Debug, Clone)]
pub struct SessionFiles {
    /// Where the pages are written: the folder of the events file.
    pub dir: PathBuf,
    pub events: PathBuf,
}

impl SessionFiles {
    /// `path` is a session folder or an events file (as for `tcpviz summary --in`).
    pub fn resolve(path: &Path) -> Result<SessionFiles, ReportError> {
        let (dir, events) = session::resolve_events_path(path).map_err(ReportError::Input)?;
        Ok(SessionFiles { dir, events })
    }

    pub fn summary_path(&self) -> PathBuf {
        self.dir.join(SUMMARY_FILE)
    }

    pub fn alerts_path(&self) -> PathBuf {
        self.dir.join(ALERTS_FILE)
    }

    pub fn kernel_samples_path(&self) -> PathBuf {
        self.dir.join(KERNEL_SAMPLES_FILE)
    }

    /// The session's summary, or None when it has none (an events file on its own).
    pub fn summary(&self) -> Result<Option<Summary>, ReportError> {
        Ok(Session::at(&self.dir).load_summary()?)
    }

    /// The session's summary; its absence is an error naming the command that needs it.
    pub fn require_summary(&self, page: &'static str) -> Result<Summary, ReportError> {
        self.summary()?.ok_or_else(|| ReportError::MissingSummary { path: self.summary_path(), page })
    }
}

/// Something a page met in the session and drew around: an error (damage: the command
/// exits 1) or a warning (a session still being written, captures that moved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub error: bool,
    pub text: String,
}

impl Problem {
    pub fn error(text: String) -> Problem {
        Problem { error: true, text }
    }

    pub fn warning(text: String) -> Problem {
        Problem { error: false, text }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", if self.error { "error" } else { "warning" }, self.text)
    }
}

/// A page written, and what it met on the way.
#[derive(Debug, Clone)]
pub struct Written {
    pub path: PathBuf,
    pub problems: Vec<Problem>,
}

/// Writes the three pages next to the session's events.
pub fn write_all(path: &Path) -> Result<Vec<Written>, ReportError> {
    DASHBOARDS.iter().map(|page| (page.write)(path)).collect()
}

/// Writes `timeline.html`. Works from an events file alone; the summary, when there, ranks
/// the flows, and `alerts.jsonl`, when there, adds the alert bands.
pub fn write_timeline(path: &Path) -> Result<Written, ReportError> {
    let files = SessionFiles::resolve(path)?;
    let mut problems = Vec::new();
    let html = timeline::render(&files, &mut problems)?;
    Ok(Written { path: write_page(&files.dir.join(TIMELINE_FILE), &html)?, problems })
}

/// Writes `summary.html` (needs `summary.json`, and reads nothing else).
pub fn write_summary_page(path: &Path) -> Result<Written, ReportError> {
    let files = SessionFiles::resolve(path)?;
    let summary = files.require_summary("summary")?;
    let html = summary_page::render(&files, &summary);
    Ok(Written { path: write_page(&files.dir.join(SUMMARY_PAGE_FILE), &html)?, problems: Vec::new() })
}

/// Writes `report.html` (needs `summary.json`; re-reads the session's captures for the
/// worst flows' graphs when they are still there, else draws them from `events.jsonl`).
pub fn write_report(path: &Path) -> Result<Written, ReportError> {
    let files = SessionFiles::resolve(path)?;
    let summary = files.require_summary("report")?;
    let mut problems = Vec::new();
    let html = report_page::render(&files, &summary, &mut problems)?;
    Ok(Written { path: write_page(&files.dir.join(REPORT_FILE), &html)?, problems })
}

/// A page of the dashboards: the command that writes it alone, and how.
pub struct Dashboard {
    pub command: &'static str,
    pub write: fn(&Path) -> Result<Written, ReportError>,
}

/// The dashboards, in the order they are written.
pub const DASHBOARDS: [Dashboard; 3] = [
    Dashboard { command: "tcpviz plot", write: write_timeline },
    Dashboard { command: "tcpviz summary", write: write_summary_page },
    Dashboard { command: "tcpviz report", write: write_report },
];

/// The dashboards of a finished session, one page after the other, for the modes that
/// write them by themselves: what a page met is said on standard error, and a page that
/// fails is a warning that ends the pages (the session stays valid). `go_on(i)` is asked
/// before page `i` of [`DASHBOARDS`]; false stops there. Returns the pages written.
pub fn write_dashboards(dir: &Path, mut go_on: impl FnMut(usize) -> bool) -> Vec<PathBuf> {
    let mut written = Vec::new();
    for (i, page) in DASHBOARDS.iter().enumerate() {
        if !go_on(i) {
            break;
        }
        match (page.write)(dir) {
            Ok(page) => {
                for p in &page.problems {
                    crate::errln!("{p}");
                }
                written.push(page.path);
            }
            Err(e) => {
                crate::errln!("warning: dashboards not written: {}", crate::error::Chain(&e));
                break;
            }
        }
    }
    written
}

/// Writes through a temporary file and a rename, so that a browser (or the follow mode
/// rewriting the pages) never sees half a page.
fn write_page(path: &Path, html: &str) -> Result<PathBuf, ReportError> {
    crate::output::record_file::write_whole(path, html.as_bytes())
        .map_err(|source| SessionError::Write { path: path.to_path_buf(), source })?;
    tracing::debug!(path = %path.display(), bytes = html.len(), "page written");
    Ok(path.to_path_buf())
}

/// A line of a JSON-lines file that could not be read, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// The part it is in, when the file was read as parts (rotated).
    pub part: Option<PathBuf>,
    /// 1-based, counting every line of the file (of the part).
    pub line: u64,
    pub reason: String,
}

/// Counts of a JSON-lines file read line by line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineCounts {
    /// Lines read (not counting empty ones, nor an incomplete last line).
    pub lines: u64,
    /// Lines that did not parse (not JSON, or a record of another schema): skipped, counted
    /// and said on the page and by the command.
    pub unreadable: u64,
    /// The first of them.
    pub first_bad: Option<BadLine>,
    /// The number of the last line when the file ends inside it (no end of line) and it
    /// does not parse: a line still being written, or cut by a writer that stopped.
    pub incomplete_last: Option<u64>,
    /// The part that ends inside a line, when the file was read as parts.
    pub incomplete_part: Option<PathBuf>,
}

impl LineCounts {
    /// What the lines of `path` tell the user. An incomplete last line is an error in a
    /// finished session (tcpviz writes whole lines, so it is damage) and a warning in one
    /// that is still being written (no summary.json yet: a running follow or live agent,
    /// or one that was killed), where the line is simply not there yet.
    pub fn problems(&self, path: &Path, finished: bool) -> Vec<Problem> {
        let mut out = Vec::new();
        if let Some(b) = &self.first_bad {
            let more = match self.unreadable {
                0 | 1 => String::new(),
                2 => " (and 1 more unreadable line)".into(),
                n => format!(" (and {} more unreadable lines)", n - 1),
            };
            let path = b.part.as_deref().unwrap_or(path);
            out.push(Problem::error(format!("{} line {}: {}{more}", path.display(), b.line, b.reason)));
        }
        if let Some(n) = self.incomplete_last {
            let path = self.incomplete_part.as_deref().unwrap_or(path);
            let text = format!("{} line {n}: cut short (the file ends inside it)", path.display());
            out.push(if finished {
                Problem::error(text)
            } else {
                Problem::warning(format!(
                    "{text}; skipped: the session has no summary.json yet, so it is still being written (or its writer was stopped)"
                ))
            });
        }
        out
    }
}

/// Calls `f` with each non-empty line of a JSON-lines file (or of its parts in order, when
/// it was rotated); `f` says why a line it could not read is unreadable. A missing file is
/// `Ok(None)`.
fn for_each_line(
    path: &Path,
    mut f: impl FnMut(&str) -> Result<(), String>,
) -> Result<Option<LineCounts>, ReportError> {
    let files = crate::output::rotation::files_of(path);
    let rotated = files.first().is_some_and(|p| p != path);
    let mut total: Option<LineCounts> = None;
    for file in &files {
        let Some(counts) = lines_of_file(file, &mut f)? else {
            // A part `--keep` deleted since the folder was listed.
            continue;
        };
        let part = rotated.then(|| file.clone());
        let t = total.get_or_insert_with(LineCounts::default);
        t.lines += counts.lines;
        t.unreadable += counts.unreadable;
        if t.first_bad.is_none() {
            t.first_bad = counts.first_bad.map(|b| BadLine { part: part.clone(), ..b });
        }
        if counts.incomplete_last.is_some() {
            t.incomplete_last = counts.incomplete_last;
            t.incomplete_part = part;
        }
    }
    Ok(total)
}

/// [`for_each_line`] over one file.
fn lines_of_file(
    path: &Path,
    f: &mut impl FnMut(&str) -> Result<(), String>,
) -> Result<Option<LineCounts>, ReportError> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ReportError::Read { path: path.to_path_buf(), source }),
    };
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut line = Vec::new();
    let mut counts = LineCounts::default();
    let mut number = 0u64;
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(source) => return Err(ReportError::Read { path: path.to_path_buf(), source }),
        }
        number += 1;
        let complete = line.last() == Some(&b'\n');
        let result = match std::str::from_utf8(&line) {
            Ok(text) if text.trim().is_empty() => continue,
            Ok(text) => f(text.trim()),
            Err(e) => Err(format!("not UTF-8 text (byte {} of the line)", e.valid_up_to() + 1)),
        };
        match result {
            Ok(()) => counts.lines += 1,
            // The file ends inside this line.
            Err(_) if !complete => counts.incomplete_last = Some(number),
            Err(reason) => {
                counts.lines += 1;
                counts.unreadable += 1;
                counts.first_bad.get_or_insert(BadLine { part: None, line: number, reason });
            }
        }
    }
    if counts.unreadable > 0 || counts.incomplete_last.is_some() {
        tracing::debug!(path = %path.display(), unreadable = counts.unreadable, "lines skipped");
    }
    Ok(Some(counts))
}

/// Reads every line of a JSON-lines file as `T` (`what` names it in messages: "an
/// event"), skipping (and counting) lines that do not parse. A missing file is `Ok(None)`.
fn read_json_lines<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &str,
    mut f: impl FnMut(T),
) -> Result<Option<LineCounts>, ReportError> {
    for_each_line(path, |line| match serde_json::from_str::<T>(line) {
        Ok(v) => {
            f(v);
            Ok(())
        }
        Err(e) => Err(line_error(&e, what)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `events_jsonl` fuzz target: one byte that is not UTF-8 made the whole
    /// events file unreadable ("stream did not contain valid UTF-8"), so `plot` and `report`
    /// failed instead of skipping that line.
    #[test]
    fn a_line_that_is_not_utf8_is_counted_not_fatal() {
        let good = include_str!("../../../samples/golden/handshake_failures.pcap.events.jsonl").lines().next().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut bytes = format!("{good}\n").into_bytes();
        bytes.extend_from_slice(b"{\"ts\":1.0,\"file\":\"caf\xc3\n\n");
        bytes.extend_from_slice(format!("{good}\n").as_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let mut events = 0;
        let counts = read_json_lines::<crate::event::Event>(&path, "an event", |_| events += 1).unwrap().unwrap();
        assert_eq!(events, 2);
        assert_eq!((counts.lines, counts.unreadable), (3, 1));
        assert_eq!(counts.first_bad.map(|b| b.line), Some(2));
    }

    /// Found by the `events_jsonl` fuzz target: a summary.json that is not UTF-8 was
    /// reported as a file that cannot be read (an I/O error) rather than as not a summary.
    #[test]
    fn a_summary_that_is_not_utf8_is_not_a_summary() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("events.jsonl"), b"").unwrap();
        std::fs::write(dir.path().join(SUMMARY_FILE), b"{\"tool\":\"\xff\"}").unwrap();
        let files = SessionFiles::resolve(dir.path()).unwrap();
        let err = files.summary().unwrap_err();
        assert!(matches!(err, ReportError::Session(SessionError::Summary { .. })), "{err}");
    }
}
