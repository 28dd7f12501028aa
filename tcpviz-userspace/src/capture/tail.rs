//! Follows a capture that is still being written: one growing file, a symlink that a
//! capture tool re-points, or a glob of ring files (`dumpcap -b files:N`, `tcpdump -C -W`).
//!
//! Only new bytes are read (the reader keeps its position and its partial record); a file
//! that is still empty, or holds only part of its file header or of a record, is waited for;
//! when a newer file appears (or the symlink moves), the old file is drained to its end
//! first, then the next one is opened, so no packet is read twice or skipped. A file that
//! shrinks, or whose first bytes change, was rewritten (tcpdump reusing a ring slot, or a
//! test truncating it): it is read again from the start, with a notice.
//!
//! A finished file is remembered by its path, inode, size and modification time. The path
//! matters: file systems reuse a deleted file's inode at once, and every `dumpcap` ring file
//! starts with the same bytes, so inode and first bytes alone take a new ring file for an
//! old one. Size and time matter because `tcpdump -W` rewrites its ring slots in place,
//! under the same name and inode.
//!
//! Files that cannot be read, ring files a capture tool removed before they were read (seen
//! as gaps in dumpcap's file numbers), and bytes a writer added to a file after it was
//! finished are counted and reported, never passed over in silence.

use std::fs::{File, Metadata};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::reader::CaptureReader;
use super::tail_input::TailInput;

/// How much of a file's start identifies its contents (the file header and first records).
const SIGNATURE_BYTES: usize = 256;

/// How often the ring folder is listed at most while packets stream in.
const RELIST: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error("invalid pattern {pattern}")]
    Pattern { pattern: String, source: glob::PatternError },
    #[error("{path}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// What `PATH` names.
#[derive(Debug, Clone)]
enum Spec {
    /// A file that grows (or a symlink to one, which may be re-pointed).
    Path(PathBuf),
    /// Ring files matching a glob.
    Glob(String),
}

/// What a file looked like at one moment: enough to tell whether it changed since.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stat {
    dev: u64,
    ino: u64,
    len: u64,
    modified: Option<SystemTime>,
}

impl Stat {
    fn of(meta: &Metadata) -> Stat {
        let (dev, ino) = file_id(meta);
        Stat { dev, ino, len: meta.len(), modified: meta.modified().ok() }
    }

    fn same_inode(&self, other: &Stat) -> bool {
        self.dev == other.dev && self.ino == other.ino
    }
}

#[cfg(unix)]
fn file_id(meta: &Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

/// Stable Rust has no file identity on other systems: files are then told apart by name,
/// size, time and first bytes only.
#[cfg(not(unix))]
fn file_id(_: &Metadata) -> (u64, u64) {
    (0, 0)
}

/// A file read to its end (or given up on).
#[derive(Debug, Clone)]
struct Finished {
    /// Canonical path.
    path: PathBuf,
    stat: Stat,
    signature: Vec<u8>,
}

/// The first bytes of an open file (fewer when it is shorter), read without moving its
/// position.
fn read_signature(f: &File) -> std::io::Result<Vec<u8>> {
    let mut signature = vec![0; SIGNATURE_BYTES];
    let n = read_at_most(f, &mut signature, 0)?;
    signature.truncate(n);
    Ok(signature)
}

/// Reads from `at` until `buf` is full or the file ends, without moving its position.
pub(super) fn read_at_most(f: &File, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let r = read_at(f, &mut buf[n..], at + n as u64)?;
        if r == 0 {
            break;
        }
        n += r;
    }
    Ok(n)
}

#[cfg(unix)]
fn read_at(f: &File, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(f, buf, at)
}

/// Elsewhere a positioned read may move the file's position: it is put back.
#[cfg(not(unix))]
fn read_at(mut f: &File, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    let was = f.stream_position()?;
    f.seek(SeekFrom::Start(at))?;
    let r = f.read(buf);
    f.seek(SeekFrom::Start(was))?;
    r
}

/// Does the file at `path` still start with `signature`?
fn starts_with(path: &Path, signature: &[u8]) -> std::io::Result<bool> {
    let mut f = File::open(path)?;
    let mut buf = vec![0; signature.len()];
    f.seek(SeekFrom::Start(0))?;
    f.read_exact(&mut buf).map(|_| buf == signature).or(Ok(false))
}

/// The file number in a dumpcap ring file name, `PREFIX_NNNNN_YYYYmmddHHMMSS.EXT`: dumpcap
/// numbers its files from 1 and never reuses a number, so a gap means a lost file.
pub fn dumpcap_file_number(path: &Path) -> Option<(String, u64)> {
    let name = path.file_name()?.to_str()?;
    // The name without its extensions (`.pcapng`, `.pcapng.gz`); the prefix may hold dots.
    let mut stems =
        std::iter::once(name).chain(name.char_indices().filter(|&(_, c)| c == '.').map(|(i, _)| &name[..i]));
    stems.find_map(parse_dumpcap_stem)
}

fn parse_dumpcap_stem(stem: &str) -> Option<(String, u64)> {
    let (rest, stamp) = stem.rsplit_once('_')?;
    let (prefix, number) = rest.rsplit_once('_')?;
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if stamp.len() != 14 || !all_digits(stamp) || number.len() < 5 || !all_digits(number) {
        return None;
    }
    Some((prefix.to_string(), number.parse().ok()?))
}

/// The file being read.
pub struct Current {
    pub path: PathBuf,
    pub reader: CaptureReader<TailInput>,
    /// Index given by the caller for this file (for events' `file`).
    pub file_index: u32,
    stat: Stat,
    signature: Vec<u8>,
    /// A newer file was seen: drain this one once more, then switch.
    rotation_seen: bool,
}

/// What `caught_up` decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterEnd {
    /// Read again now: another file (or the same one from its start) is current.
    ReadAgain,
    /// Nothing more for now: wait for the file to grow.
    Wait,
}

/// What the follower could not read, by cause (for the summary and the benchmark log).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TailLosses {
    /// Files given up on because they are damaged or not captures.
    pub files_unreadable: u64,
    /// Ring files the capture tool removed before they could be read.
    pub files_missed: u64,
    /// Bytes left at the end of a file that ended inside a packet.
    pub bytes_cut_at_file_ends: u64,
    /// Bytes a writer added to a file after it had been finished.
    pub bytes_added_after_finish: u64,
    /// Files rewritten in place before they were read to their end.
    pub rewrites: u64,
    /// Compressed files whose decompression stopped before the end of their stream.
    pub compressed_files_cut_short: u64,
}

pub struct Tailer {
    spec: Spec,
    current: Option<Current>,
    /// Files read to their end (or given up on) that still exist.
    finished: Vec<Finished>,
    /// Messages for the user (rotations, rewrites, skips).
    notices: Vec<String>,
    /// Files opened since the last `take_opened`, in order (file index = position overall).
    opened: Vec<PathBuf>,
    files_opened: u64,
    /// The last dumpcap file number opened, per file-name prefix, to notice missed files.
    last_dumpcap_number: Option<(String, u64)>,
    /// The last listing of unread files, and when it was made: a capture tool writing packet
    /// by packet wakes the follower for every write, and listing a ring of many files each
    /// time would cost more than reading the packets.
    listing: Option<(Instant, Vec<PathBuf>)>,
    /// The latest files opened (at most `REMEMBERED_NAMES`), to know a compressed copy of
    /// one (`tcpdump -z gzip` compresses each ring file once it rotates).
    read_names: std::collections::VecDeque<PathBuf>,
    /// Compressed copies of files read, passed over (while they exist).
    compressed_copies: Vec<PathBuf>,
    pub losses: TailLosses,
}

/// Bound of [`Tailer::read_names`]: more than any ring's file count.
const REMEMBERED_NAMES: usize = 4096;

/// `NAME` for `NAME.gz`, `NAME.zst` or `NAME.zstd`.
fn uncompressed_name(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    let stem = [".gz", ".zst", ".zstd"].iter().find_map(|ext| name.strip_suffix(ext))?;
    Some(path.with_file_name(stem))
}

impl Tailer {
    pub fn new(path: &str) -> Result<Tailer, TailError> {
        let spec = if path.contains(['*', '?', '[']) {
            glob::Pattern::new(path).map_err(|source| TailError::Pattern { pattern: path.into(), source })?;
            Spec::Glob(path.to_string())
        } else {
            Spec::Path(PathBuf::from(path))
        };
        Ok(Tailer {
            spec,
            current: None,
            finished: Vec::new(),
            notices: Vec::new(),
            opened: Vec::new(),
            files_opened: 0,
            last_dumpcap_number: None,
            listing: None,
            read_names: Default::default(),
            compressed_copies: Vec::new(),
            losses: TailLosses::default(),
        })
    }

    /// Folders to watch for changes.
    pub fn watch_dirs(&self) -> Vec<PathBuf> {
        let p = match &self.spec {
            Spec::Path(p) => p.clone(),
            Spec::Glob(g) => PathBuf::from(g),
        };
        let mut dirs = Vec::new();
        let mut dir = p.parent().map(Path::to_path_buf).unwrap_or_default();
        // For a glob, the deepest folder without wildcards.
        while dir.to_string_lossy().contains(['*', '?', '[']) {
            dir = dir.parent().map(Path::to_path_buf).unwrap_or_default();
        }
        if dir.as_os_str().is_empty() {
            dir = PathBuf::from(".");
        }
        dirs.push(dir);
        if let Spec::Path(p) = &self.spec
            && let Ok(target) = std::fs::canonicalize(p)
            && let Some(parent) = target.parent()
            && !dirs.iter().any(|d| d == parent)
        {
            dirs.push(parent.to_path_buf());
        }
        dirs
    }

    /// Files opened since the last call; the first file ever opened has index 0.
    pub fn take_opened(&mut self) -> Vec<PathBuf> {
        std::mem::take(&mut self.opened)
    }

    /// True when more than one file may be read (a glob, or a symlink that may move).
    pub fn may_span_files(&self) -> bool {
        match &self.spec {
            Spec::Glob(_) => true,
            Spec::Path(p) => p.is_symlink(),
        }
    }

    pub fn take_notices(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notices)
    }

    pub fn current(&mut self) -> Option<&mut Current> {
        self.current.as_mut()
    }

    pub fn files_opened(&self) -> u64 {
        self.files_opened
    }

    /// Is this file one already read? A finished file that grew while keeping its first
    /// bytes was appended to after we left it: those bytes are reported once, and the file
    /// is not read again (its packets would come out of order).
    fn already_read(&mut self, path: &Path, stat: &Stat) -> bool {
        let Some(i) = self.finished.iter().position(|f| f.path == path) else { return false };
        let f = &self.finished[i];
        if !f.stat.same_inode(stat) {
            // Another file under the old name.
            self.finished.swap_remove(i);
            return false;
        }
        if f.stat == *stat {
            return true;
        }
        if stat.len >= f.stat.len && starts_with(path, &f.signature).unwrap_or(false) {
            let added = stat.len - f.stat.len;
            if added > 0 {
                self.losses.bytes_added_after_finish += added;
                self.notices.push(format!(
                    "{} grew by {added} bytes after it was finished and a newer file was being read: those bytes are skipped",
                    path.display()
                ));
            }
            self.finished[i].stat = stat.clone();
            return true;
        }
        // Same name and inode, other contents: a ring slot rewritten in place.
        self.finished.swap_remove(i);
        false
    }

    /// Files not read yet, oldest first. Forgets finished files that no longer exist, so the
    /// list stays as short as the ring.
    fn candidates(&mut self) -> Vec<PathBuf> {
        let paths: Vec<PathBuf> = match &self.spec {
            Spec::Path(p) => std::fs::canonicalize(p).map(|t| vec![t]).unwrap_or_default(),
            Spec::Glob(g) => glob::glob(g)
                .map(|it| it.filter_map(Result::ok).filter_map(|p| std::fs::canonicalize(p).ok()).collect())
                .unwrap_or_default(),
        };
        let mut listed: Vec<(PathBuf, Stat)> = paths
            .into_iter()
            .filter_map(|p| std::fs::metadata(&p).ok().filter(Metadata::is_file).map(|m| (p, Stat::of(&m))))
            .collect();
        self.finished.retain(|f| listed.iter().any(|(p, _)| *p == f.path));
        self.compressed_copies.retain(|c| listed.iter().any(|(p, _)| p == c));
        listed.retain(|(p, _)| !self.is_compressed_copy(p));
        let current = self.current.as_ref().map(|c| (c.path.clone(), c.stat.clone()));
        listed.retain(|(p, stat)| {
            let is_current = current.as_ref().is_some_and(|(cp, cs)| cp == p && cs.same_inode(stat));
            !is_current && !self.already_read(p, stat)
        });
        // dumpcap's file numbers give the order exactly; otherwise the writer's order is
        // the order of last modification (a ring file is not written once the next exists).
        let numbers: Option<Vec<u64>> = listed.iter().map(|(p, _)| dumpcap_file_number(p).map(|(_, n)| n)).collect();
        match numbers {
            Some(numbers) => {
                let mut keyed: Vec<(u64, PathBuf)> =
                    numbers.into_iter().zip(listed).map(|(n, (p, _))| (n, p)).collect();
                keyed.sort();
                keyed.into_iter().map(|(_, p)| p).collect()
            }
            None => {
                listed.sort_by(|(pa, a), (pb, b)| a.modified.cmp(&b.modified).then_with(|| pa.cmp(pb)));
                listed.into_iter().map(|(p, _)| p).collect()
            }
        }
    }

    /// A compressed copy of a file already read (or being read): its packets are those of
    /// that file, so it is passed over, and said once.
    fn is_compressed_copy(&mut self, path: &Path) -> bool {
        if self.compressed_copies.iter().any(|c| c == path) {
            return true;
        }
        let Some(original) = uncompressed_name(path) else { return false };
        if !self.read_names.contains(&original) {
            return false;
        }
        self.notices.push(format!(
            "{} is {} compressed after it was read: passed over (its packets were read from the original)",
            path.display(),
            original.display()
        ));
        self.compressed_copies.push(path.to_path_buf());
        true
    }

    /// `candidates`, listed again at most every `RELIST` (and at once after a switch).
    fn recent_candidates(&mut self) -> Vec<PathBuf> {
        if let Some((when, list)) = &self.listing
            && when.elapsed() < RELIST
        {
            return list.clone();
        }
        let list = self.candidates();
        self.listing = Some((Instant::now(), list.clone()));
        list
    }

    /// Opens the oldest unread file if none is open.
    pub fn ensure_open(&mut self) -> Result<bool, TailError> {
        if self.current.is_some() {
            return Ok(true);
        }
        let Some(path) = self.candidates().into_iter().next() else { return Ok(false) };
        self.open(path)?;
        Ok(true)
    }

    fn open(&mut self, path: PathBuf) -> Result<(), TailError> {
        let io = |source| TailError::Io { path: path.clone(), source };
        let file = File::open(&path).map_err(io)?;
        let stat = Stat::of(&file.metadata().map_err(io)?);
        // From the descriptor the reader will use: the name may be given to a new file.
        let signature = read_signature(&file).map_err(io)?;
        self.note_missed_dumpcap_files(&path);
        // Files are numbered in the order they are opened; `take_opened` lists them so the
        // caller can name them in the same order.
        let file_index = self.files_opened as u32;
        let reader = CaptureReader::new(TailInput::new(file), path.display().to_string());
        self.files_opened += 1;
        self.opened.push(path.clone());
        if self.read_names.len() == REMEMBERED_NAMES {
            self.read_names.pop_front();
        }
        self.read_names.push_back(path.clone());
        tracing::debug!(path = %path.display(), "following");
        self.current = Some(Current { path, reader, file_index, stat, signature, rotation_seen: false });
        Ok(())
    }

    fn note_missed_dumpcap_files(&mut self, path: &Path) {
        let Some((prefix, number)) = dumpcap_file_number(path) else { return };
        if let Some((last_prefix, last)) = &self.last_dumpcap_number
            && *last_prefix == prefix
            && number > last + 1
        {
            let missed = number - last - 1;
            self.losses.files_missed += missed;
            self.notices.push(format!(
                "ring files {}..{} of {prefix} were removed by the capture tool before they could be read: their packets are missing (a larger ring, -b files:N, gives the follower more time)",
                last + 1,
                number - 1
            ));
        }
        self.last_dumpcap_number = Some((prefix, number));
    }

    /// Remembers the current file as read, as it is now.
    fn finish_current(&mut self) -> Option<Current> {
        let cur = self.current.take()?;
        let stat = std::fs::metadata(&cur.path).map(|m| Stat::of(&m)).unwrap_or_else(|_| cur.stat.clone());
        if stat.same_inode(&cur.stat) {
            self.finished.push(Finished { path: cur.path.clone(), stat, signature: cur.signature.clone() });
        }
        self.listing = None;
        Some(cur)
    }

    /// Called when the current file has nothing complete left (`pending` bytes of a record
    /// or of the file header are buffered). Decides between waiting and moving on.
    pub fn caught_up(&mut self, pending: usize) -> Result<AfterEnd, TailError> {
        let Some(cur) = self.current.as_mut() else {
            return Ok(if self.ensure_open()? { AfterEnd::ReadAgain } else { AfterEnd::Wait });
        };
        // Rewritten in place (shorter than what we read, or different first bytes)?
        let meta = std::fs::metadata(&cur.path).ok();
        let consumed = cur.reader.offset() + pending as u64;
        let rewritten = match &meta {
            None => false,
            Some(m) if !Stat::of(m).same_inode(&cur.stat) => false,
            // A compressed file's offsets are in decompressed bytes: only its start tells.
            Some(m) if cur.reader.source().compression().is_none() && m.len() < consumed => true,
            Some(_) => !starts_with(&cur.path, &cur.signature).unwrap_or(true),
        };
        if let Some(m) = &meta
            && !rewritten
            && Stat::of(m).same_inode(&cur.stat)
        {
            cur.stat = Stat::of(m);
            if cur.signature.len() < SIGNATURE_BYTES
                && let Ok(signature) = File::open(&cur.path).and_then(|f| read_signature(&f))
                && signature.starts_with(&cur.signature)
            {
                // It grew: remember more of its start, so that a later rewrite is recognised.
                cur.signature = signature;
            }
        }
        if rewritten {
            self.losses.rewrites += 1;
            self.notices.push(format!(
                "{} was truncated or rewritten (now {} bytes, {} had been read): reading it again from the start as a new capture",
                cur.path.display(),
                meta.map_or(0, |m| m.len()),
                consumed
            ));
            let path = cur.path.clone();
            self.current = None;
            self.open(path)?;
            return Ok(AfterEnd::ReadAgain);
        }
        let newer = self.recent_candidates();
        let cur = self.current.as_mut().expect("current checked above");
        if newer.is_empty() {
            return Ok(AfterEnd::Wait);
        }
        if !cur.rotation_seen {
            // The writer may have added its last bytes just before it opened the new file.
            cur.rotation_seen = true;
            return Ok(AfterEnd::ReadAgain);
        }
        if let Some(why) = cur.reader.source().stopped_early() {
            self.losses.compressed_files_cut_short += 1;
            self.notices.push(format!(
                "{}: decompression stopped before the end of the stream ({why}): the rest of the file is skipped",
                cur.path.display()
            ));
        }
        if pending > 0 {
            self.losses.bytes_cut_at_file_ends += pending as u64;
            self.notices.push(format!(
                "{} ends inside a packet ({pending} bytes after the last whole one): the writer stopped mid-packet; those bytes are skipped",
                cur.path.display()
            ));
        }
        self.notices.push(format!("{} finished; following {}", cur.path.display(), newer[0].display()));
        self.finish_current();
        self.open(newer[0].clone())?;
        Ok(AfterEnd::ReadAgain)
    }

    /// The current file cannot be read further (damaged, or not a capture): it is counted,
    /// and the next file is read when there is one. The file is read again if it is
    /// rewritten.
    pub fn abandon_current(&mut self) {
        if self.finish_current().is_some() {
            self.losses.files_unreadable += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_names_give_their_original() {
        let u = |s: &str| uncompressed_name(Path::new(s));
        assert_eq!(u("/r/cap0.gz"), Some(PathBuf::from("/r/cap0")));
        assert_eq!(u("/r/a.pcap.zst"), Some(PathBuf::from("/r/a.pcap")));
        assert_eq!(u("/r/a.pcap"), None);
    }

    #[test]
    fn dumpcap_ring_names_carry_their_number() {
        let n = |s: &str| dumpcap_file_number(Path::new(s));
        assert_eq!(n("/r/cap_00012_20261201003400.pcapng"), Some(("cap".into(), 12)));
        assert_eq!(n("my_cap_123456_20261201003400.pcap"), Some(("my_cap".into(), 123456)));
        assert_eq!(n("cap_00012_20261201003400.pcapng.gz"), Some(("cap".into(), 12)));
        assert_eq!(n("/r/my.ring_00007_20261201003400.pcapng"), Some(("my.ring".into(), 7)));
        assert_eq!(n("ring.pcap3"), None);
        assert_eq!(n("cap_12_20261201003400.pcap"), None);
        assert_eq!(n("cap_00012_2026120100340.pcap"), None);
    }
}
