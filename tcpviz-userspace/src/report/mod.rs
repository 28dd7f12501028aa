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
//! [`flow_detail::MAX_DETAIL_FLOWS`] flows with at most [`flow_detail::MAX_SERIES_POINTS`]
//! points per trace. Hover text and table cells cut free text at a few hundred characters.
//! Reading is streaming: memory grows with the number of flows that have events (about
//! 100 bytes each), not with the number of events.

pub mod flow_detail;
pub mod page;
pub mod report_page;
pub mod sampling;
pub mod summary_page;
pub mod timeline;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::output::session::{self, ALERTS_FILE, KERNEL_SAMPLES_FILE, SUMMARY_FILE};
use crate::output::summary::Summary;

pub const TIMELINE_FILE: &str = "timeline.html";
pub const SUMMARY_PAGE_FILE: &str = "summary.html";
pub const REPORT_FILE: &str = "report.html";

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The session folder or events file named does not exist or is not a session.
    #[error("{0}")]
    Input(std::io::Error),
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a tcpviz summary: {source}")]
    Summary { path: PathBuf, source: serde_json::Error },
    #[error("{path} is missing: the {page} page needs the session summary (tcpviz parse-pcap writes it)")]
    MissingSummary { path: PathBuf, page: &'static str },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
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
        let path = self.summary_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(ReportError::Read { path, source }),
        };
        serde_json::from_str(&text).map(Some).map_err(|source| ReportError::Summary { path, source })
    }

    fn require_summary(&self, page: &'static str) -> Result<Summary, ReportError> {
        self.summary()?.ok_or_else(|| ReportError::MissingSummary { path: self.summary_path(), page })
    }
}

/// Writes the three pages next to the session's events; returns their paths.
pub fn write_all(path: &Path) -> Result<Vec<PathBuf>, ReportError> {
    Ok(vec![write_timeline(path)?, write_summary_page(path)?, write_report(path)?])
}

/// Writes `timeline.html`. Works from an events file alone; the summary, when there, ranks
/// the flows, and `alerts.jsonl`, when there, adds the alert bands.
pub fn write_timeline(path: &Path) -> Result<PathBuf, ReportError> {
    let files = SessionFiles::resolve(path)?;
    let html = timeline::render(&files)?;
    write_page(&files.dir.join(TIMELINE_FILE), &html)
}

/// Writes `summary.html` (needs `summary.json`).
pub fn write_summary_page(path: &Path) -> Result<PathBuf, ReportError> {
    let files = SessionFiles::resolve(path)?;
    let summary = files.require_summary("summary")?;
    let html = summary_page::render(&files, &summary);
    write_page(&files.dir.join(SUMMARY_PAGE_FILE), &html)
}

/// Writes `report.html` (needs `summary.json`; re-reads the session's captures for the
/// worst flows' graphs when they are still there).
pub fn write_report(path: &Path) -> Result<PathBuf, ReportError> {
    let files = SessionFiles::resolve(path)?;
    let summary = files.require_summary("report")?;
    let html = report_page::render(&files, &summary)?;
    write_page(&files.dir.join(REPORT_FILE), &html)
}

/// Writes through a temporary file and a rename, so that a browser (or the follow mode
/// rewriting the pages) never sees half a page.
fn write_page(path: &Path, html: &str) -> Result<PathBuf, ReportError> {
    let tmp = path.with_extension("html.tmp");
    let write = |p: &Path| std::fs::write(p, html);
    write(&tmp)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|source| ReportError::Write { path: path.to_path_buf(), source })?;
    tracing::debug!(path = %path.display(), bytes = html.len(), "page written");
    Ok(path.to_path_buf())
}

/// Counts of a JSON-lines file read line by line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineCounts {
    pub lines: u64,
    /// Lines that did not parse (a line cut short by a writer still running, a kind from a
    /// newer schema): skipped, counted and said on the page.
    pub unreadable: u64,
}

/// Calls `f` with each non-empty line of a JSON-lines file; `f` returns false for a line
/// it could not read. A missing file is `Ok(None)`.
fn for_each_line(path: &Path, mut f: impl FnMut(&str) -> bool) -> Result<Option<LineCounts>, ReportError> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ReportError::Read { path: path.to_path_buf(), source }),
    };
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut line = String::new();
    let mut counts = LineCounts::default();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(source) => return Err(ReportError::Read { path: path.to_path_buf(), source }),
        }
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        counts.lines += 1;
        if !f(text) {
            counts.unreadable += 1;
        }
    }
    if counts.unreadable > 0 {
        tracing::warn!(path = %path.display(), unreadable = counts.unreadable, "lines skipped");
    }
    Ok(Some(counts))
}

/// Reads every line of a JSON-lines file as `T`, skipping (and counting) lines that do not
/// parse. A missing file is `Ok(None)`.
fn read_json_lines<T: serde::de::DeserializeOwned>(
    path: &Path,
    mut f: impl FnMut(T),
) -> Result<Option<LineCounts>, ReportError> {
    for_each_line(path, |line| match serde_json::from_str::<T>(line) {
        Ok(v) => {
            f(v);
            true
        }
        Err(_) => false,
    })
}
