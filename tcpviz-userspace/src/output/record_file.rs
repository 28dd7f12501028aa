//! A file of records (JSON lines, pcapng blocks) that never holds half a record.
//!
//! Records are built in memory and written in batches. When a write fails part way (a
//! full disk), the file is cut back to the end of the last whole record it holds, so a
//! reader never finds half a line. After each batch the file checks that it still has a
//! name: a file deleted while open (its folder removed) takes every write and keeps none.
//!
//! What a failure does depends on the run. A one-shot run (`parse-pcap`) stops with the
//! error ([`OnFailure::Stop`]). A long-running one (`follow`, `live`) goes on analysing
//! ([`OnFailure::Count`]): the records of a batch that could not be written are dropped
//! and counted, the next batch tries again (so writing resumes by itself when there is
//! room again), and the start and the end of each streak of failures are said once on
//! standard error. Memory stays bounded by the batch size either way.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::output::rotation::{Rotation, RotationSettings};

/// What a failed write does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Return the error (after cutting the file back to its last whole record).
    Stop,
    /// Drop the batch's records, count them, say so once, and go on.
    Count,
}

pub struct RecordFile {
    /// The file written now: the file itself, or its current part when rotated.
    path: PathBuf,
    /// The file it stands for (the same as `path` unless rotated).
    file_path: PathBuf,
    file: File,
    on_failure: OnFailure,
    batch: Vec<u8>,
    /// End offset in `batch` of each record it holds.
    ends: Vec<usize>,
    batch_bytes: usize,
    /// Bytes in the file (its header and its whole records).
    len: u64,
    written: u64,
    lost: u64,
    /// The failure of the current streak (said when it began), and the records lost in it.
    failing: Option<(String, u64)>,
    /// The first failure, for the summary.
    first_failure: Option<String>,
    deleted: bool,
    /// Parts, when rotated.
    rotation: Option<Rotation>,
    /// What every part starts with (pcapng: section header, interface descriptions).
    header: Vec<u8>,
    /// The part is new and its header is not written yet (written with its first records).
    needs_header: bool,
    /// Records in the file (the current part).
    part_records: u64,
}

impl RecordFile {
    /// Creates (truncates) the file. Records are written once `batch_bytes` are queued,
    /// and on [`flush`](Self::flush).
    pub fn create(path: &Path, on_failure: OnFailure, batch_bytes: usize) -> io::Result<RecordFile> {
        Self::create_rotating(path, on_failure, batch_bytes, RotationSettings::default())
    }

    /// As [`create`](Self::create); with active `rotation`, the file is written as parts
    /// ([`rotation`](crate::output::rotation)), the first one created now.
    pub fn create_rotating(
        path: &Path,
        on_failure: OnFailure,
        batch_bytes: usize,
        rotation: RotationSettings,
    ) -> io::Result<RecordFile> {
        let mut rotation = rotation.is_active().then(|| Rotation::new(path, rotation));
        let first = rotation.as_ref().map_or_else(|| path.to_path_buf(), Rotation::next_path);
        let file = File::create(&first)?;
        if let Some(r) = rotation.as_mut() {
            r.opened(first.clone(), 0, 0);
        }
        Ok(RecordFile {
            path: first,
            file_path: path.to_path_buf(),
            file,
            on_failure,
            batch: Vec::with_capacity(batch_bytes.min(1 << 20)),
            ends: Vec::new(),
            batch_bytes,
            len: 0,
            written: 0,
            lost: 0,
            failing: None,
            first_failure: None,
            deleted: false,
            rotation,
            header: Vec::new(),
            needs_header: false,
            part_records: 0,
        })
    }

    pub fn set_on_failure(&mut self, on_failure: OnFailure) {
        self.on_failure = on_failure;
    }

    pub fn on_failure(&self) -> OnFailure {
        self.on_failure
    }

    /// The file written now (the current part, when rotated).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file it stands for (`DIR/events.jsonl`, also when written as parts).
    pub fn file_path(&self) -> &Path {
        &self.file_path
    }

    /// The name of the file it stands for (`events.jsonl`), as summaries and metrics give it.
    pub fn file_name(&self) -> String {
        self.file_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    }

    /// The files on disk: the file, or its parts that are kept, oldest first.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.rotation.as_ref().map_or_else(|| vec![self.path.clone()], Rotation::paths)
    }

    /// Its parts, when rotated.
    pub fn rotation(&self) -> Option<&Rotation> {
        self.rotation.as_ref()
    }

    /// Adds `bytes` to the header every part starts with, and writes them to the current
    /// part now, after the records queued (which are written first). Header bytes are not
    /// records: they are written whole or the file is cut back, and a failure is an error
    /// whatever [`OnFailure`] says (records after a lost header would be unreadable).
    pub fn add_to_header(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_batch()?;
        if self.deleted {
            return Err(io::Error::new(io::ErrorKind::NotFound, "the file was deleted while being written"));
        }
        // A full part takes no more header either: the bytes go to the next part's header.
        let more = bytes.len() as u64;
        if self.rotation.as_ref().is_some_and(|r| r.is_due(self.pending_len(), more, self.part_records > 0)) {
            self.next_part()?;
        }
        let start = self.len;
        let result = if self.needs_header {
            let mut all = self.header.clone();
            all.extend_from_slice(bytes);
            write_all_counted(&mut self.file, &all)
        } else {
            write_all_counted(&mut self.file, bytes)
        };
        match result {
            Ok(n) => {
                self.len += n as u64;
                self.needs_header = false;
                self.header.extend_from_slice(bytes);
                if let Some(r) = self.rotation.as_mut() {
                    r.set_current(self.part_records, self.len);
                }
                Ok(())
            }
            Err((done, e)) => {
                if done > 0 {
                    let _ = self.cut_to(start);
                }
                self.first_failure.get_or_insert_with(|| format!("cannot write {}: {e}", self.path.display()));
                Err(e)
            }
        }
    }
    /// Adds one record, which `build` appends to the buffer it is given. A record `build`
    /// fails on is left out whole.
    pub fn push(&mut self, build: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) -> io::Result<()> {
        let start = self.batch.len();
        if let Err(e) = build(&mut self.batch) {
            self.batch.truncate(start);
            return Err(e);
        }
        self.ends.push(self.batch.len());
        if self.batch.len() >= self.batch_bytes { self.write_batch() } else { Ok(()) }
    }

    /// Writes what is queued.
    pub fn flush(&mut self) -> io::Result<()> {
        self.write_batch()
    }

    /// Records written to the file.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Records that could not be written ([`OnFailure::Count`]).
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// The first write failure, as text naming the file.
    pub fn first_failure(&self) -> Option<&str> {
        self.first_failure.as_deref()
    }

    fn write_batch(&mut self) -> io::Result<()> {
        if self.ends.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        let ends = std::mem::take(&mut self.ends);
        let result = self.write_records(&batch, &ends);
        self.batch = batch;
        self.batch.clear();
        self.ends = ends;
        self.ends.clear();
        if let Some(r) = self.rotation.as_mut() {
            r.set_current(self.part_records, self.len);
        }
        result
    }

    /// Writes `batch` (records ending at `ends`), in as many parts as rotation asks.
    fn write_records(&mut self, batch: &[u8], ends: &[usize]) -> io::Result<()> {
        // The first record not written yet, and where it starts.
        let mut first = 0;
        let mut from = 0;
        while first < ends.len() {
            let (count, next_part_failure) = self.records_for_part(ends, first, from);
            let to = ends[first + count - 1];
            let result = match next_part_failure {
                Some(e) => {
                    self.lost += count as u64;
                    self.failed(e, count as u64)
                }
                None => {
                    let chunk_ends: Vec<usize> = ends[first..first + count].iter().map(|e| e - from).collect();
                    self.write_chunk(&batch[from..to], &chunk_ends)
                }
            };
            first += count;
            from = to;
            if let Err(e) = result {
                // Stopped: the records after the failure are not written either.
                self.lost += (ends.len() - first) as u64;
                return Err(e);
            }
        }
        Ok(())
    }

    /// How many records from `first` (starting at `from` in the batch) go into the part
    /// being written, after starting the next part when this one is due. A record larger
    /// than a whole part gets a part of its own. With the failure to start the next part,
    /// every record left is counted (the next batch tries again).
    fn records_for_part(&mut self, ends: &[usize], first: usize, from: usize) -> (usize, Option<io::Error>) {
        let left = ends.len() - first;
        if self.deleted || self.rotation.is_none() {
            return (left, None);
        }
        let first_len = (ends[first] - from) as u64;
        let due =
            self.rotation.as_ref().is_some_and(|r| r.is_due(self.pending_len(), first_len, self.part_records > 0));
        if due && let Err(e) = self.next_part() {
            return (left, Some(e));
        }
        let Some(room) = self.rotation.as_ref().and_then(|r| r.room(self.pending_len())) else {
            return (left, None);
        };
        let fit = ends[first..].iter().take_while(|&&end| (end - from) as u64 <= room).count();
        (fit.max(1), None)
    }

    /// The part's length once its header (when still to be written) is in.
    fn pending_len(&self) -> u64 {
        self.len + if self.needs_header { self.header.len() as u64 } else { 0 }
    }

    /// Closes the part being written and creates the next, which starts with the header.
    fn next_part(&mut self) -> io::Result<()> {
        let Some(rotation) = self.rotation.as_mut() else { return Ok(()) };
        let path = rotation.next_path();
        let file = File::create(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot create its next part {}: {e}", path.display())))?;
        rotation.opened(path.clone(), self.part_records, self.len);
        tracing::debug!(part = %path.display(), "next part");
        self.file = file;
        self.path = path;
        self.len = 0;
        self.part_records = 0;
        self.needs_header = !self.header.is_empty();
        Ok(())
    }

    /// Writes whole records (`bytes`, records ending at `ends`) to the part being written,
    /// after its header when that is still to be written.
    fn write_chunk(&mut self, bytes: &[u8], ends: &[usize]) -> io::Result<()> {
        let records = ends.len() as u64;
        if self.deleted {
            // Said when it was found; nothing written to a file without a name is kept.
            self.lost += records;
            return Ok(());
        }
        if self.needs_header {
            let header = std::mem::take(&mut self.header);
            let result = write_all_counted(&mut self.file, &header);
            let header_len = header.len() as u64;
            self.header = header;
            match result {
                Ok(_) => {
                    self.len += header_len;
                    self.needs_header = false;
                }
                Err((done, e)) => {
                    // Records without the header before them would be unreadable: none.
                    let e = match if done > 0 { self.cut_to(self.len) } else { Ok(()) } {
                        Ok(()) => e,
                        Err(cut_err) => cut_failure(e, cut_err),
                    };
                    self.lost += records;
                    return self.failed(e, records);
                }
            }
        }
        let (done, failure) = match write_all_counted(&mut self.file, bytes) {
            Ok(n) => (n, None),
            Err((n, e)) => (n, Some(e)),
        };
        let mut lost_now = records;
        let failure = match failure {
            None => {
                self.len += done as u64;
                self.written += records;
                self.part_records += records;
                match self.check_still_named() {
                    // What went to a file without a name is not kept.
                    Err(e) => {
                        self.written -= records;
                        self.part_records -= records;
                        self.lost += records;
                        e
                    }
                    Ok(()) => {
                        if let Some((_, lost)) = self.failing.take() {
                            crate::errln!(
                                "note: {} is written again ({lost} {} could not be written meanwhile)",
                                self.path.display(),
                                self.unit()
                            );
                        }
                        return Ok(());
                    }
                }
            }
            Some(e) => {
                // Keep the whole records that made it; cut the rest.
                let whole = ends.iter().take_while(|&&end| end <= done).count();
                let keep = if whole == 0 { 0 } else { ends[whole - 1] };
                let cut = if done > keep { self.cut_to(self.len + keep as u64) } else { Ok(()) };
                self.len += keep as u64;
                self.written += whole as u64;
                self.part_records += whole as u64;
                lost_now = records - whole as u64;
                self.lost += lost_now;
                match cut {
                    Ok(()) => e,
                    Err(cut_err) => cut_failure(e, cut_err),
                }
            }
        };
        self.failed(failure, lost_now)
    }

    /// What its records are called in messages.
    fn unit(&self) -> &'static str {
        match self.path.extension().and_then(|e| e.to_str()) {
            Some("jsonl") => "lines",
            // Its header blocks are written at once or the file fails: what is counted later
            // is packets.
            Some("pcapng") => "packets",
            _ => "records",
        }
    }

    fn cut_to(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.file.seek(SeekFrom::Start(len)).map(|_| ())
    }

    /// A file whose last name is gone (its folder deleted) keeps nothing written to it.
    fn check_still_named(&mut self) -> io::Result<()> {
        match self.file.metadata() {
            Ok(m) if link_count(&m) == 0 => {
                self.deleted = true;
                Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "the file was deleted while being written (was its folder removed?)",
                ))
            }
            _ => Ok(()),
        }
    }

    fn failed(&mut self, e: io::Error, lost: u64) -> io::Result<()> {
        let text = format!("cannot write {}: {e}", self.path.display());
        self.first_failure.get_or_insert_with(|| text.clone());
        match self.on_failure {
            OnFailure::Stop => Err(e),
            OnFailure::Count => {
                match &mut self.failing {
                    Some((_, streak)) => *streak += lost,
                    None => {
                        crate::errln!(
                            "warning: {text}; the analysis goes on, and what cannot be written is counted{}",
                            if self.deleted { "" } else { " (writing resumes when it can)" }
                        );
                        self.failing = Some((text, lost));
                    }
                }
                Ok(())
            }
        }
    }
}

/// Writes all of `bytes`; on a failure, how many were written before it.
fn write_all_counted(file: &mut File, bytes: &[u8]) -> Result<usize, (usize, io::Error)> {
    let mut done = 0;
    while done < bytes.len() {
        match file.write(&bytes[done..]) {
            Ok(0) => return Err((done, io::Error::from(io::ErrorKind::WriteZero))),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err((done, e)),
        }
    }
    Ok(done)
}

fn cut_failure(e: io::Error, cut_err: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{e}; and the half-written record at its end could not be removed: {cut_err}"))
}

#[cfg(unix)]
fn link_count(m: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::nlink(m)
}

/// Elsewhere a deleted file is not told from a named one: it counts as named.
#[cfg(not(unix))]
fn link_count(_: &std::fs::Metadata) -> u64 {
    1
}

/// Adds what the files of a long-running run could not write to its summary (section
/// `not_written`: records per file; an error per file that failed, naming it) and to its
/// benchmark log (`not_written.FILE`); and, for files written as parts, the `rotation`
/// section (settings, parts kept, what `--keep` deleted) and `rotation.FILE.*` figures.
pub fn report_losses(
    files: &[&RecordFile],
    summary: &mut crate::output::summary::Summary,
    figures: &mut crate::output::benchmark::RunFigures,
) {
    let mut section = std::collections::BTreeMap::new();
    for f in files {
        let name = f.file_name();
        section.insert(name.clone(), f.lost());
        if let Some(r) = f.rotation() {
            let rotated = r.section(f.written());
            figures.extra.insert(format!("rotation.{name}.parts_opened"), rotated.parts_opened.to_string());
            figures.extra.insert(format!("rotation.{name}.deleted_parts"), rotated.deleted.parts.to_string());
            figures.extra.insert(format!("rotation.{name}.deleted_records"), rotated.deleted.records.to_string());
            if let Some(failure) = &rotated.delete_failure {
                summary.errors.push(failure.clone());
            }
            summary
                .sections
                .rotation
                .get_or_insert_with(|| crate::output::rotation::RotationSection::new(r.settings()))
                .files
                .insert(name.clone(), rotated);
        }
        figures.extra.insert(format!("not_written.{name}"), f.lost().to_string());
        if let Some(failure) = f.first_failure() {
            summary.errors.push(format!("{failure} ({} {} not written)", f.lost(), f.unit()));
        }
    }
    summary.sections.not_written = Some(section);
}

/// Writes a whole file through a temporary file and a rename: a reader (or a crash, or a
/// full disk) never leaves half of it under its name. The temporary file is removed when
/// the write fails.
pub fn write_whole(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_whole_with(path, |out| out.write_all(bytes))
}

/// [`write_whole`] of what `write` writes (through a buffer): a large file (the summary of
/// ten thousand flows) is not held in memory whole first.
pub fn write_whole_with(path: &Path, write: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> io::Result<()> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let written = File::create(&tmp).and_then(|file| {
        let mut out = io::BufWriter::with_capacity(1 << 16, file);
        write(&mut out)?;
        out.into_inner().map_err(io::IntoInnerError::into_error).map(drop)
    });
    let result = written.and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
#[path = "record_file_tests.rs"]
mod tests;
