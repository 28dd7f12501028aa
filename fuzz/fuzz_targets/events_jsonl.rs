//! The readers of a session folder that `summary`, `plot` and `report` use: events.jsonl
//! (with summary.json, alerts.jsonl and kernel_samples.jsonl beside it) into the three
//! dashboards, and `read_events`/`load_kernel_events`. Any file content gives a page or a
//! clear error, never a panic: the pages name bad lines as problems and are still drawn;
//! `read_events` stops at the first bad line with an error naming it, and leaves out only a
//! last line cut short.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tcpviz::output::jsonl::read_events;
use tcpviz::report::{SessionFiles, report_page, summary_page, timeline};

const FILES: [&str; 4] = ["events.jsonl", "summary.json", "alerts.jsonl", "kernel_samples.jsonl"];

fn session_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::Builder::new().prefix("tcpviz-fuzz-session").tempdir().expect("temp dir")).path()
}

// Input: the four files in the order of FILES, separated by NUL bytes; missing ones are absent.
fuzz_target!(|input: &[u8]| {
    let dir = session_dir();
    let mut parts = input.split(|&b| b == 0);
    let mut contents: Vec<Option<&[u8]>> = Vec::new();
    for name in FILES {
        let part = parts.next();
        let path = dir.join(name);
        match part {
            Some(bytes) => std::fs::write(&path, bytes).expect("write session file"),
            None => {
                let _ = std::fs::remove_file(&path);
            }
        }
        contents.push(part);
    }
    let events = contents[0].unwrap_or_default();

    let files = SessionFiles::resolve(dir).expect("the folder has an events file");
    // The page must come out whatever the lines hold: unreadable ones are named as problems.
    let summary_error = |e: &tcpviz::report::ReportError| {
        use tcpviz::output::session::SessionError;
        matches!(
            e,
            tcpviz::report::ReportError::Session(SessionError::Summary { .. } | SessionError::SummaryVersion { .. })
        )
    };
    if let Err(e) = timeline::render(&files, &mut Vec::new()) {
        assert!(summary_error(&e), "timeline of a readable session failed: {e}");
    }
    if let Ok(Some(mut summary)) = files.summary() {
        // Captures named by the input are not read: they could be any file of this machine.
        summary.sources.clear();
        let _ = summary_page::render(&files, &summary);
        if let Err(e) = report_page::render(&files, &summary, &mut Vec::new()) {
            panic!("report of a readable session failed: {e}");
        }
    }

    let pieces: Vec<&[u8]> = events.split(|&b| b == b'\n').collect();
    let blank = |l: &[u8]| l.trim_ascii().is_empty();
    // Every piece but the last ends with a newline: those are the whole lines.
    let whole = pieces[..pieces.len() - 1].iter().filter(|l| !blank(l)).count();
    let cut_last = !blank(pieces[pieces.len() - 1]);
    match read_events(&files.events) {
        Ok(read) => assert!(
            read.len() == whole || (cut_last && read.len() == whole + 1),
            "{} events read from {whole} whole lines",
            read.len()
        ),
        Err(e) => {
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
            assert!(e.to_string().contains(" line "), "the error names the line: {e}");
        }
    }
    let _ = tcpviz::analyse_captures::load_kernel_events(dir);
});
