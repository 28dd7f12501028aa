//! Rotation of a session's growing files (`--rotate-mb`, `--rotate-secs`, `--keep`), in the
//! style of `dumpcap -b`.
//!
//! A rotated file is written as parts named `STEM_NNNNN_YYYYmmddHHMMSS.EXT`: the name of the
//! file it stands for (`events.jsonl` → `events_00001_20261202000000.jsonl`), a sequence
//! number from 1 (five digits or more, never reused in a run) and the UTC wall-clock time
//! the part was opened. It is dumpcap's own scheme, so `tcpviz follow` orders the parts of
//! a live session's capture by their number, as it does a dumpcap ring.
//!
//! A part is closed at a record boundary ([`RecordFile`](super::record_file::RecordFile)
//! decides when): before a record would take it past `--rotate-mb` (a single record larger
//! than that gets a part of its own), or at the first write once it has been open
//! `--rotate-secs` (a file nothing is written to is not cut into empty parts). Every part
//! starts with the file's header (pcapng: section header and interface descriptions), so
//! each part is a whole file on its own. `--keep N` deletes the oldest parts beyond N (the
//! part being written counts); what was deleted is counted in the summary.
//!
//! The readers take the file, or when it is absent its parts in order ([`files_of`]), so a
//! rotated session reads as one.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Bytes in one `--rotate-mb` (as dumpcap's `filesize` counts kB: 1000).
pub const BYTES_PER_MB: f64 = 1_000_000.0;
/// The smallest part size accepted: below it, the pcapng header alone could fill a part.
pub const MIN_PART_BYTES: u64 = 4096;

/// When to start a new part, and how many to keep.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RotationSettings {
    pub max_bytes: Option<u64>,
    pub max_age: Option<Duration>,
    pub keep: Option<usize>,
}

impl RotationSettings {
    /// From the flags; `None` when none is given (the files are not rotated).
    pub fn from_flags(
        rotate_mb: Option<f64>,
        rotate_secs: Option<f64>,
        keep: Option<usize>,
    ) -> Result<RotationSettings, String> {
        let max_bytes = match rotate_mb {
            None => None,
            Some(mb) if mb.is_finite() && mb * BYTES_PER_MB >= MIN_PART_BYTES as f64 && mb <= 1e7 => {
                Some((mb * BYTES_PER_MB) as u64)
            }
            Some(mb) => return Err(format!("--rotate-mb must be between 0.004096 and 10000000 (MB), not {mb}")),
        };
        let max_age = match rotate_secs {
            None => None,
            Some(s) if (1.0..=365.0 * 86400.0).contains(&s) => Some(Duration::from_secs_f64(s)),
            Some(s) => return Err(format!("--rotate-secs must be between 1 and a year of seconds, not {s}")),
        };
        if keep == Some(0) {
            return Err("--keep must be at least 1 (the part being written)".into());
        }
        if keep.is_some() && max_bytes.is_none() && max_age.is_none() {
            return Err("--keep needs --rotate-mb or --rotate-secs (without them there is one file)".into());
        }
        Ok(RotationSettings { max_bytes, max_age, keep })
    }

    pub fn is_active(&self) -> bool {
        self.max_bytes.is_some() || self.max_age.is_some()
    }
}

/// Part `number` of `file` (a name such as `events.jsonl`), opened at `opened`.
pub fn part_name(file: &str, number: u64, opened: chrono::DateTime<chrono::Utc>) -> String {
    let (stem, ext) = split_name(file);
    let stamp = opened.format("%Y%m%d%H%M%S");
    match ext {
        Some(ext) => format!("{stem}_{number:05}_{stamp}.{ext}"),
        None => format!("{stem}_{number:05}_{stamp}"),
    }
}

/// `capture.pcapng` → (`capture`, `pcapng`): the stem ends at the first dot.
fn split_name(file: &str) -> (&str, Option<&str>) {
    match file.split_once('.') {
        Some((stem, ext)) => (stem, Some(ext)),
        None => (file, None),
    }
}

/// The part number of `name` when it is a part of `file`.
pub fn part_number(file: &str, name: &str) -> Option<u64> {
    let (stem, ext) = split_name(file);
    let rest = match ext {
        Some(ext) => name.strip_suffix(ext)?.strip_suffix('.')?,
        None => name,
    };
    let (prefix, number) = crate::capture::tail::dumpcap_file_number(Path::new(rest))?;
    (prefix == stem).then_some(number)
}

/// The parts of `path` (a file of a session, such as `DIR/events.jsonl`) in its folder,
/// in order. Empty when it has none.
pub fn parts_of(path: &Path) -> Vec<PathBuf> {
    let Some(file) = path.file_name().and_then(|n| n.to_str()) else { return Vec::new() };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut parts: Vec<(u64, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name();
            let number = part_number(file, name.to_str()?)?;
            e.file_type().ok()?.is_file().then(|| (number, e.path()))
        })
        .collect();
    parts.sort();
    parts.into_iter().map(|(_, p)| p).collect()
}

/// What to read for `path`: the file itself when it exists, else its parts in order.
pub fn files_of(path: &Path) -> Vec<PathBuf> {
    if path.exists() { vec![path.to_path_buf()] } else { parts_of(path) }
}

/// True when `path` or parts of it exist.
pub fn exists(path: &Path) -> bool {
    !files_of(path).is_empty()
}

/// One part written.
#[derive(Debug, Clone)]
struct Part {
    path: PathBuf,
    records: u64,
    bytes: u64,
}

/// The parts of one rotated file: which is written, which are kept, what was deleted.
#[derive(Debug)]
pub struct Rotation {
    settings: RotationSettings,
    /// The file the parts stand for (`DIR/events.jsonl`).
    file: PathBuf,
    next_number: u64,
    /// Parts still on disk, oldest first; the last is the one being written.
    parts: VecDeque<Part>,
    opened: Instant,
    deleted: DeletedParts,
    delete_failure: Option<String>,
}

/// Parts `--keep` deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedParts {
    pub parts: u64,
    /// Records they held (lines; packets for a capture).
    pub records: u64,
    pub bytes: u64,
}

impl Rotation {
    pub fn new(file: &Path, settings: RotationSettings) -> Rotation {
        Rotation {
            settings,
            file: file.to_path_buf(),
            next_number: 1,
            parts: VecDeque::new(),
            opened: Instant::now(),
            deleted: DeletedParts::default(),
            delete_failure: None,
        }
    }

    pub fn settings(&self) -> &RotationSettings {
        &self.settings
    }

    /// The file the parts stand for.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The name of the next part (nothing is created).
    pub fn next_path(&self) -> PathBuf {
        let name = self.file.file_name().and_then(|n| n.to_str()).unwrap_or("part");
        self.file.with_file_name(part_name(name, self.next_number, chrono::Utc::now()))
    }

    /// The next part, whose file was just created, is now the one written; the current one
    /// ends with `records` and `bytes`. Deletes the oldest parts beyond `--keep`.
    pub fn opened(&mut self, path: PathBuf, records_of_current: u64, bytes_of_current: u64) {
        self.set_current(records_of_current, bytes_of_current);
        self.parts.push_back(Part { path, records: 0, bytes: 0 });
        self.next_number += 1;
        self.opened = Instant::now();
        self.prune();
    }

    /// What the part being written holds so far.
    pub fn set_current(&mut self, records: u64, bytes: u64) {
        if let Some(p) = self.parts.back_mut() {
            p.records = records;
            p.bytes = bytes;
        }
    }

    /// Whether the part being written is due to close before `more` bytes are added to
    /// its `len` (it holds records; an empty part takes any record).
    pub fn is_due(&self, len: u64, more: u64, has_records: bool) -> bool {
        has_records
            && (self.settings.max_bytes.is_some_and(|max| len + more > max)
                || self.settings.max_age.is_some_and(|age| self.opened.elapsed() >= age))
    }

    /// Bytes left in the part being written (of `--rotate-mb`), when bounded.
    pub fn room(&self, len: u64) -> Option<u64> {
        self.settings.max_bytes.map(|max| max.saturating_sub(len))
    }

    fn prune(&mut self) {
        let Some(keep) = self.settings.keep else { return };
        while self.parts.len() > keep {
            let Some(old) = self.parts.pop_front() else { break };
            match std::fs::remove_file(&old.path) {
                Ok(()) => {}
                // Already gone (removed by hand): its records are gone all the same.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    let text = format!("cannot delete the old part {}: {e}", old.path.display());
                    if self.delete_failure.is_none() {
                        crate::errln!("warning: {text} (--keep)");
                        self.delete_failure = Some(text);
                    }
                    continue;
                }
            }
            self.deleted.parts += 1;
            self.deleted.records += old.records;
            self.deleted.bytes += old.bytes;
        }
    }

    /// The file's entry in the summary's `rotation` section.
    pub fn section(&self, records_written: u64) -> RotatedFile {
        RotatedFile {
            parts: self
                .parts
                .iter()
                .map(|p| p.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())
                .collect(),
            parts_opened: self.next_number - 1,
            records_written,
            deleted: self.deleted,
            delete_failure: self.delete_failure.clone(),
        }
    }

    /// Records in the parts deleted so far (`--keep`).
    pub fn deleted_records(&self) -> u64 {
        self.deleted.records
    }

    /// The parts on disk, oldest first.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.parts.iter().map(|p| p.path.clone()).collect()
    }
}

/// The summary's `rotation` section: the settings, and the parts of each rotated file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RotationSection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_mb: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_secs: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<usize>,
    /// By the name of the file the parts stand for (`events.jsonl`).
    pub files: BTreeMap<String, RotatedFile>,
}

impl RotationSection {
    pub fn new(settings: &RotationSettings) -> RotationSection {
        RotationSection {
            rotate_mb: settings.max_bytes.map(|b| b as f64 / BYTES_PER_MB),
            rotate_secs: settings.max_age.map(|d| d.as_secs_f64()),
            keep: settings.keep,
            files: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RotatedFile {
    /// The parts on disk at the end, oldest first.
    pub parts: Vec<String>,
    /// Parts this run opened (numbered 1..=parts_opened).
    pub parts_opened: u64,
    /// Records written over all parts (lines; packets for a capture), deleted ones included.
    pub records_written: u64,
    /// What `--keep` deleted.
    pub deleted: DeletedParts,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_failure: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_names_carry_number_and_time_and_read_back() {
        let t = chrono::DateTime::parse_from_rfc3339("2026-12-02T00:00:00Z").unwrap().with_timezone(&chrono::Utc);
        assert_eq!(part_name("events.jsonl", 1, t), "events_00001_20261202000000.jsonl");
        assert_eq!(part_name("kernel_samples.jsonl", 123456, t), "kernel_samples_123456_20261202000000.jsonl");
        assert_eq!(part_name("capture.pcapng", 7, t), "capture_00007_20261202000000.pcapng");
        assert_eq!(part_number("events.jsonl", "events_00001_20261202000000.jsonl"), Some(1));
        assert_eq!(part_number("kernel_samples.jsonl", "kernel_samples_123456_20261202000000.jsonl"), Some(123456));
        // Another file's parts, or not a part.
        assert_eq!(part_number("events.jsonl", "kernel_samples_00001_20261202000000.jsonl"), None);
        assert_eq!(part_number("samples.jsonl", "kernel_samples_00001_20261202000000.jsonl"), None);
        assert_eq!(part_number("events.jsonl", "events_00001_20261202000000.pcapng"), None);
        assert_eq!(part_number("events.jsonl", "events_1_20261202000000.jsonl"), None);
        assert_eq!(part_number("events.jsonl", "events.jsonl"), None);
    }

    #[test]
    fn parts_are_listed_by_number_not_by_name() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "events_100000_20261202000000.jsonl",
            "events_00002_20261202000000.jsonl",
            "events_99999_20261201000000.jsonl",
            "alerts_00001_20261202000000.jsonl",
            "events.jsonl.tmp",
        ] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        let events = dir.path().join("events.jsonl");
        let names: Vec<String> =
            files_of(&events).iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(
            names,
            [
                "events_00002_20261202000000.jsonl",
                "events_99999_20261201000000.jsonl",
                "events_100000_20261202000000.jsonl"
            ]
        );
        // The file itself, when there, is what is read.
        std::fs::write(&events, b"").unwrap();
        assert_eq!(files_of(&events), vec![events.clone()]);
        assert!(!exists(&dir.path().join("kernel_samples.jsonl")));
    }

    #[test]
    fn keep_deletes_the_oldest_parts_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let settings = RotationSettings { max_bytes: Some(100), max_age: None, keep: Some(2) };
        let mut r = Rotation::new(&dir.path().join("events.jsonl"), settings);
        let mut opened = Vec::new();
        for n in 0..5u64 {
            let p = r.next_path();
            std::fs::write(&p, b"x").unwrap();
            // The part before held n records of 10 bytes each.
            r.opened(p.clone(), n, n * 10);
            opened.push(p);
        }
        // Parts 1..=3 deleted (holding 1, 2 and 3 records), 4 and 5 kept.
        let s = r.section(99);
        assert_eq!(s.parts_opened, 5);
        assert_eq!(s.deleted, DeletedParts { parts: 3, records: 6, bytes: 60 });
        assert_eq!(r.paths(), &opened[3..]);
        assert!(opened[..3].iter().all(|p| !p.exists()) && opened[3..].iter().all(|p| p.exists()));
        assert_eq!(s.parts.len(), 2);
    }

    #[test]
    fn due_by_size_or_age_only_when_the_part_holds_records() {
        let dir = tempfile::tempdir().unwrap();
        let by_size = RotationSettings { max_bytes: Some(100), ..Default::default() };
        let r = Rotation::new(&dir.path().join("e.jsonl"), by_size);
        assert!(!r.is_due(90, 10, true));
        assert!(r.is_due(91, 10, true));
        assert!(!r.is_due(91, 10, false), "an empty part takes a record larger than the limit");
        let by_age = RotationSettings { max_age: Some(Duration::from_millis(1)), ..Default::default() };
        let r = Rotation::new(&dir.path().join("e.jsonl"), by_age);
        std::thread::sleep(Duration::from_millis(5));
        assert!(r.is_due(0, 1, true) && !r.is_due(0, 1, false));
    }

    #[test]
    fn flags_are_checked() {
        assert_eq!(RotationSettings::from_flags(None, None, None).unwrap(), RotationSettings::default());
        let s = RotationSettings::from_flags(Some(1.0), Some(60.0), Some(3)).unwrap();
        assert_eq!(s.max_bytes, Some(1_000_000));
        assert_eq!(s.max_age, Some(Duration::from_secs(60)));
        assert!(RotationSettings::from_flags(Some(0.001), None, None).is_err());
        assert!(RotationSettings::from_flags(Some(1.0), None, Some(0)).is_err());
        assert!(RotationSettings::from_flags(None, None, Some(3)).unwrap_err().contains("needs --rotate-mb"));
        assert!(RotationSettings::from_flags(None, Some(0.5), None).is_err());
    }
}
