//! `events.jsonl` and the other JSON-lines files: one record per line, written as found,
//! never half a line (see [`RecordFile`]).

use std::io;
use std::path::Path;

use crate::event::Event;
use crate::output::record_file::{OnFailure, RecordFile};
use crate::output::session::Session;

/// Lines are written in batches of this many bytes (and on flush).
const BATCH_BYTES: usize = 256 * 1024;

pub struct JsonlWriter {
    file: RecordFile,
}

impl JsonlWriter {
    /// For a one-shot run: a write that fails is an error.
    pub fn create(path: &Path) -> io::Result<JsonlWriter> {
        Ok(JsonlWriter { file: RecordFile::create(path, OnFailure::Stop, BATCH_BYTES)? })
    }

    /// For the long-running modes: `file` of the session, written as parts when the session
    /// rotates its files; lines that cannot be written are counted, and writing goes on
    /// when it can.
    pub fn create_lasting(session: &Session, file: &str) -> io::Result<JsonlWriter> {
        Ok(JsonlWriter {
            file: RecordFile::create_rotating(&session.path(file), OnFailure::Count, BATCH_BYTES, session.rotation())?,
        })
    }

    pub fn write<T: serde::Serialize>(&mut self, item: &T) -> io::Result<()> {
        self.file.push(|buf| {
            serde_json::to_writer(&mut *buf, item).map_err(io::Error::other)?;
            buf.push(b'\n');
            Ok(())
        })
    }

    pub fn write_events(&mut self, events: &[Event]) -> io::Result<()> {
        for e in events {
            self.file.push(|buf| {
                crate::output::event_json::write_event(buf, e)?;
                buf.push(b'\n');
                Ok(())
            })?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }

    pub fn file(&self) -> &RecordFile {
        &self.file
    }
}

/// Reads an events file back (`parse-pcap --kernel-events`), or its parts in order when it
/// was rotated. A line that is not an event is an error naming the file and the line; a
/// last line cut short (a session still being written) is left out.
pub fn read_events(path: &Path) -> io::Result<Vec<Event>> {
    let files = crate::output::rotation::files_of(path);
    if files.is_empty() {
        return Err(io::Error::new(io::ErrorKind::NotFound, format!("{}: no such file", path.display())));
    }
    let mut events = Vec::new();
    for file in files {
        read_events_of_file(&file, &mut events)?;
    }
    Ok(events)
}

fn read_events_of_file(path: &Path, events: &mut Vec<Event>) -> io::Result<()> {
    use io::BufRead;
    let mut reader = io::BufReader::new(std::fs::File::open(path)?);
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        number += 1;
        if line.trim_ascii().is_empty() {
            continue;
        }
        match serde_json::from_slice::<Event>(&line) {
            Ok(e) => events.push(e),
            Err(_) if line.last() != Some(&b'\n') => break,
            Err(e) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} line {number}: {}", path.display(), line_error(&e, "an event")),
                ));
            }
        }
    }
    Ok(())
}

/// Why a line is not a `what` (an event, an alert, ...): not UTF-8, not JSON, or JSON of
/// another schema. Without serde's position (the line is named by the caller) and without
/// its list of every known name.
pub(crate) fn line_error(e: &serde_json::Error, what: &str) -> String {
    let mut msg = e.to_string();
    if let Some(i) = msg.rfind(" at line ") {
        msg.truncate(i);
    }
    if let Some(i) = msg.find(", expected one of") {
        msg.truncate(i);
    }
    match e.classify() {
        serde_json::error::Category::Data => {
            format!("not {what} of tcpviz schema version {} ({msg})", crate::event::SCHEMA_VERSION)
        }
        _ => format!("not JSON ({msg}, at column {})", e.column()),
    }
}
