//! Follows a capture that is still being written: one growing file, a symlink that a
//! capture tool re-points, or a glob of ring files (`dumpcap -b files:N`, `tcpdump -C -W`).
//!
//! Only new bytes are read (the reader keeps its position and its partial record); a packet
//! cut in half at the end of a file is waited for; when a newer file appears (or the symlink
//! moves), the old file is drained to its end first, then the next one is opened, so no
//! packet is read twice or skipped. A file that shrinks, or whose first bytes change, was
//! rewritten (tcpdump reusing a ring slot, or a test truncating it): it is read again from
//! the start, with a notice.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::reader::CaptureReader;

/// How much of a file's start identifies it (the file header and the first records).
const SIGNATURE_BYTES: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error("invalid pattern {pattern}: {source}")]
    Pattern { pattern: String, source: glob::PatternError },
    #[error("{path}: {source}")]
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

/// Identity of a file across polls: same inode and same first bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FileId {
    dev: u64,
    ino: u64,
    signature: Vec<u8>,
}

fn file_id(path: &Path) -> std::io::Result<FileId> {
    let mut f = File::open(path)?;
    let meta = f.metadata()?;
    let mut signature = vec![0; SIGNATURE_BYTES];
    let mut n = 0;
    while n < SIGNATURE_BYTES {
        let r = f.read(&mut signature[n..])?;
        if r == 0 {
            break;
        }
        n += r;
    }
    signature.truncate(n);
    Ok(FileId { dev: meta.dev(), ino: meta.ino(), signature })
}

/// Does the file still start with the bytes we saw when we opened it?
fn same_file(path: &Path, id: &FileId) -> std::io::Result<bool> {
    let mut f = File::open(path)?;
    let meta = f.metadata()?;
    if meta.ino() != id.ino || meta.dev() != id.dev {
        return Ok(false);
    }
    let mut buf = vec![0; id.signature.len()];
    f.seek(SeekFrom::Start(0))?;
    f.read_exact(&mut buf).map(|_| buf == id.signature).or(Ok(false))
}

/// The file being read.
pub struct Current {
    pub path: PathBuf,
    pub reader: CaptureReader<File>,
    /// Index given by the caller for this file (for events' `file`).
    pub file_index: u32,
    id: FileId,
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

pub struct Tailer {
    spec: Spec,
    current: Option<Current>,
    /// Files read to their end.
    done: Vec<FileId>,
    /// Messages for the user (rotations, rewrites, tails cut short).
    notices: Vec<String>,
    /// Files opened since the last `take_opened`, in order (file index = position overall).
    opened: Vec<PathBuf>,
    files_opened: u64,
    /// The last listing of unread files, and when it was made: a capture tool writing packet
    /// by packet wakes the follower for every write, and listing a ring of many files each
    /// time would cost more than reading the packets.
    listing: Option<(std::time::Instant, Vec<PathBuf>)>,
    /// Bytes left unread at the end of files that ended inside a packet.
    pub cut_tails: u64,
    pub rewrites: u64,
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
            done: Vec::new(),
            notices: Vec::new(),
            opened: Vec::new(),
            files_opened: 0,
            listing: None,
            cut_tails: 0,
            rewrites: 0,
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

    /// A file read before: same inode, and it still starts with the bytes it had.
    fn is_done(&self, id: &FileId) -> bool {
        self.done.iter().any(|d| d.dev == id.dev && d.ino == id.ino && id.signature.starts_with(&d.signature))
    }

    /// Files not read yet, oldest first (by modification time, then name). Forgets files
    /// that no longer exist, so the list of finished files stays as short as the ring.
    fn candidates(&mut self) -> Vec<PathBuf> {
        let paths: Vec<PathBuf> = match &self.spec {
            Spec::Path(p) => match std::fs::canonicalize(p) {
                Ok(t) => vec![t],
                Err(_) => vec![],
            },
            Spec::Glob(g) => {
                glob::glob(g).map(|it| it.filter_map(Result::ok).filter(|p| p.is_file()).collect()).unwrap_or_default()
            }
        };
        let present: Vec<(u64, u64)> =
            paths.iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| (m.dev(), m.ino())).collect();
        self.done.retain(|d| present.contains(&(d.dev, d.ino)));
        let mut keyed: Vec<(SystemTime, PathBuf)> = paths
            .into_iter()
            .filter(|p| {
                let same_as_current = self.current.as_ref().is_some_and(|c| {
                    std::fs::canonicalize(p).ok().as_deref() == Some(c.path.as_path())
                        && same_file(p, &c.id).unwrap_or(false)
                });
                !same_as_current && file_id(p).map(|id| !self.is_done(&id)).unwrap_or(false)
            })
            .filter_map(|p| std::fs::metadata(&p).and_then(|m| m.modified()).ok().map(|t| (t, p)))
            .collect();
        keyed.sort();
        keyed.into_iter().map(|(_, p)| p).collect()
    }

    /// `candidates`, listed again at most every 250 ms (and at once after a switch).
    fn recent_candidates(&mut self) -> Vec<PathBuf> {
        const RELIST: std::time::Duration = std::time::Duration::from_millis(250);
        if let Some((when, list)) = &self.listing
            && when.elapsed() < RELIST
        {
            return list.clone();
        }
        let list = self.candidates();
        self.listing = Some((std::time::Instant::now(), list.clone()));
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
        let id = file_id(&path).map_err(io)?;
        // Files are numbered in the order they are opened; `take_opened` lists them so the
        // caller can name them in the same order.
        let file_index = self.files_opened as u32;
        let reader = CaptureReader::new(file, path.display().to_string());
        self.files_opened += 1;
        self.opened.push(path.clone());
        tracing::debug!(path = %path.display(), "following");
        self.current = Some(Current { path, reader, file_index, id, rotation_seen: false });
        Ok(())
    }

    /// Called when the current file has nothing complete left (`pending` bytes of a record
    /// are buffered). Decides between waiting and moving on.
    pub fn caught_up(&mut self, pending: usize) -> Result<AfterEnd, TailError> {
        let Some(cur) = self.current.as_mut() else {
            return Ok(if self.ensure_open()? { AfterEnd::ReadAgain } else { AfterEnd::Wait });
        };
        // Rewritten in place (shorter than what we read, or different first bytes)?
        let len = std::fs::metadata(&cur.path).map(|m| m.len()).ok();
        let consumed = cur.reader.offset() + pending as u64;
        let rewritten = match len {
            None => false,
            Some(l) if l < consumed => true,
            Some(_) => !same_file(&cur.path, &cur.id).unwrap_or(true),
        };
        if !rewritten && cur.id.signature.len() < SIGNATURE_BYTES {
            // It grew: remember more of its start, so that a later rewrite is recognised.
            if let Ok(id) = file_id(&cur.path)
                && id.signature.starts_with(&cur.id.signature)
            {
                cur.id = id;
            }
        }
        if rewritten {
            self.rewrites += 1;
            self.notices.push(format!(
                "{} was truncated or rewritten (now {} bytes, {} had been read): reading it again from the start as a new capture",
                cur.path.display(),
                len.unwrap_or(0),
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
        if pending > 0 {
            self.cut_tails += pending as u64;
            self.notices.push(format!(
                "{} ends inside a packet ({pending} bytes after the last whole one): the writer stopped mid-packet; those bytes are skipped",
                cur.path.display()
            ));
        }
        self.listing = None;
        self.notices.push(format!("{} finished; following {}", cur.path.display(), newer[0].display()));
        let finished = self.current.take().expect("current checked above");
        self.done.push(file_id(&finished.path).unwrap_or(finished.id));
        self.open(newer[0].clone())?;
        Ok(AfterEnd::ReadAgain)
    }

    /// The current file cannot be read further (damaged): skip to the next one when there is
    /// one, else keep it (a rewrite will be noticed).
    pub fn abandon_current(&mut self) {
        if let Some(cur) = self.current.take() {
            self.done.push(file_id(&cur.path).unwrap_or(cur.id));
        }
    }
}
