//! `events.jsonl`: one event per line, written as events are found.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::event::Event;

pub struct JsonlWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl JsonlWriter {
    pub fn create(path: &Path) -> io::Result<JsonlWriter> {
        let file = File::create(path)?;
        Ok(JsonlWriter { path: path.to_path_buf(), out: BufWriter::with_capacity(256 * 1024, file) })
    }

    pub fn write<T: serde::Serialize>(&mut self, item: &T) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, item).map_err(io::Error::other)?;
        self.out.write_all(b"\n")?;
        Ok(())
    }

    pub fn write_events(&mut self, events: &[Event]) -> io::Result<()> {
        for e in events {
            self.write(e)?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads an events file back (for `summary`, `report`, tests). Lines that do not parse are
/// counted and skipped, not fatal.
pub fn read_events(path: &Path) -> io::Result<(Vec<Event>, u64)> {
    use io::BufRead;
    let file = File::open(path)?;
    let mut events = Vec::new();
    let mut bad = 0;
    for line in io::BufReader::new(file).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Event>(&line) {
            Ok(e) => events.push(e),
            Err(_) => bad += 1,
        }
    }
    Ok((events, bad))
}
