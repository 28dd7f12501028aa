//! The follow mode's `Tailer`, driven the way `monitor::follow_pass` drives it, by a script
//! of file operations taken from the input: append bytes of a real capture, poll, rotate to
//! a new file (a new ring file, or a symlink re-pointed), truncate, rewrite. It must never
//! panic or spin; and when the script only appends and rotates, every file it opened must
//! yield exactly the frames a one-shot `CaptureReader` reads from that file in the end.
#![no_main]

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use libfuzzer_sys::fuzz_target;
use tcpviz::capture::reader::{CaptureError, Next};
use tcpviz::capture::tail::{AfterEnd, Tailer};
use tcpviz_fuzz::{OwnedFrame, owned, read_capture};

/// Captures of this repository (recorded by samples/record.sh): pcap and pcapng.
const SOURCES: [&[u8]; 3] = [
    include_bytes!("../../samples/handshake_failures.pcap"),
    include_bytes!("../../samples/zero_window.pcap"),
    include_bytes!("../../samples/ipv6_loss_receiver.pcapng"),
];
/// Enough of a source for a few dozen packets.
const MAX_SOURCE: usize = 48 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// One file that grows: `cap.pcap`.
    Path,
    /// `live.pcap`, a symlink re-pointed to each new ring file.
    Symlink,
    /// Ring files `ring-NNNN.pcap` matched by a glob.
    Glob,
}

struct Script {
    dir: tempfile::TempDir,
    mode: Mode,
    source: &'static [u8],
    /// Files written, oldest first, and how much of the source each holds.
    files: Vec<(PathBuf, usize)>,
    append_only: bool,
}

impl Script {
    fn current(&self) -> &(PathBuf, usize) {
        self.files.last().expect("a file is always there")
    }

    fn new_file(&mut self) {
        let path = match self.mode {
            Mode::Path => self.dir.path().join("cap.pcap"),
            Mode::Symlink | Mode::Glob => self.dir.path().join(format!("ring-{:04}.pcap", self.files.len())),
        };
        std::fs::write(&path, b"").expect("create");
        if self.mode == Mode::Symlink {
            // Re-pointed atomically, as capture tools do.
            let tmp = self.dir.path().join("live.tmp");
            std::os::unix::fs::symlink(&path, &tmp).expect("symlink");
            std::fs::rename(&tmp, self.dir.path().join("live.pcap")).expect("re-point");
        }
        self.files.push((path, 0));
    }

    fn follow_path(&self) -> String {
        let p = match self.mode {
            Mode::Path => self.dir.path().join("cap.pcap"),
            Mode::Symlink => self.dir.path().join("live.pcap"),
            Mode::Glob => self.dir.path().join("ring-*.pcap"),
        };
        p.display().to_string()
    }

    fn append(&mut self, n: usize) {
        let source = &self.source[..self.source.len().min(MAX_SOURCE)];
        let (path, written) = self.files.last_mut().expect("a file");
        let end = (*written + n).min(source.len());
        let mut f = OpenOptions::new().append(true).open(&*path).expect("open for append");
        f.write_all(&source[*written..end]).expect("append");
        *written = end;
    }

    fn truncate(&mut self, to: usize) {
        let (path, written) = self.files.last_mut().expect("a file");
        let to = to.min(*written);
        OpenOptions::new().write(true).open(&*path).and_then(|f| f.set_len(to as u64)).expect("truncate");
        *written = to;
        self.append_only = false;
    }

    /// Rewrites the file in place with other bytes of the same length (tcpdump reusing a
    /// ring slot): the first bytes differ from what was read.
    fn rewrite(&mut self, flip: u8) {
        let (path, _) = self.current().clone();
        let mut bytes = std::fs::read(&path).expect("read");
        if let Some(b) = bytes.get_mut(24 + flip as usize % 64) {
            *b ^= 0xff;
        }
        std::fs::write(&path, &bytes).expect("rewrite");
        self.append_only = false;
    }
}

/// What the tailer read, by the path of the file it came from.
#[derive(Default)]
struct Followed {
    paths: Vec<PathBuf>,
    frames: BTreeMap<u32, Vec<OwnedFrame>>,
}

/// One pass of the follow loop, as `monitor::follow_pass` runs it.
fn follow_pass(tailer: &mut Tailer, out: &mut Followed) {
    for _ in 0..100_000 {
        let open = tailer.ensure_open().unwrap_or(false);
        out.paths.extend(tailer.take_opened());
        if !open {
            return;
        }
        let cur = tailer.current().expect("ensure_open opened one");
        let index = cur.file_index;
        let pending = match cur.reader.next_frame() {
            Ok(Next::Frame(f)) => {
                out.frames.entry(index).or_default().push(owned(&f));
                continue;
            }
            Ok(Next::End { pending }) => pending,
            // An empty file is still being written.
            Err(CaptureError::Empty { .. }) => 0,
            Err(_) => {
                tailer.abandon_current();
                continue;
            }
        };
        let next = tailer.caught_up(pending);
        out.paths.extend(tailer.take_opened());
        match next {
            Ok(AfterEnd::ReadAgain) => {}
            Ok(AfterEnd::Wait) | Err(_) => return,
        }
    }
    panic!("the follow loop did not come to rest");
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

fuzz_target!(|input: &[u8]| {
    let [setup, ops @ ..] = input else { return };
    let mode = [Mode::Path, Mode::Symlink, Mode::Glob][*setup as usize % 3];
    let source = SOURCES[(*setup as usize / 3) % SOURCES.len()];
    let dir = tempfile::tempdir().expect("temp dir");
    let mut script = Script { dir, mode, source, files: Vec::new(), append_only: true };
    script.new_file();
    let mut tailer = Tailer::new(&script.follow_path()).expect("a valid path");
    let mut followed = Followed::default();

    for op in ops.chunks(3).take(64) {
        let arg = op.get(1..3).map_or(0, |a| u16::from_be_bytes([a[0], a[1]]) as usize);
        match op[0] % 8 {
            0..=2 => script.append(1 + arg % 4096),
            3 | 7 => follow_pass(&mut tailer, &mut followed),
            4 if mode != Mode::Path => script.new_file(),
            5 => script.truncate(arg),
            6 => script.rewrite(op.get(1).copied().unwrap_or(0)),
            _ => {}
        }
    }
    follow_pass(&mut tailer, &mut followed);
    if !script.append_only {
        return;
    }

    // Every file opened is one of the files written, in the order written (the symlink may
    // move past a file before it is read; a glob reads them all, but may not have listed the
    // newest ones yet), and each was read completely, no frame lost or read twice.
    let written: Vec<PathBuf> = script.files.iter().map(|(p, _)| canonical(p)).collect();
    let mut next = 0;
    for (index, path) in followed.paths.iter().enumerate() {
        let at = written[next..].iter().position(|w| w == &canonical(path));
        let Some(at) = at else { panic!("opened {} out of order, or twice: written {written:?}", path.display()) };
        if mode == Mode::Glob {
            assert_eq!(at, 0, "a ring file was skipped before {}", path.display());
        }
        next += at + 1;
        let (expected, _) = read_capture(&std::fs::read(path).expect("read back"));
        let got = followed.frames.get(&(index as u32)).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(got.len(), expected.len(), "{}: frames read while following vs read in one go", path.display());
        assert!(got == expected.as_slice(), "{}: different frames while following", path.display());
    }
    assert!(!followed.paths.is_empty(), "the first file was never opened");
    if mode == Mode::Path || script.files.len() == 1 {
        assert_eq!(followed.paths.len(), 1);
    }
});
