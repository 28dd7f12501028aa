//! What several fuzz targets share: reading a capture to its end into owned frames, and
//! sources that hand out their bytes in pieces, the way a file being written does.

use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;

use tcpviz::capture::reader::{CaptureError, CaptureReader, Next};

/// A frame, copied out of the reader's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedFrame {
    pub ts: i64,
    pub link_type: u32,
    pub data: Vec<u8>,
    pub orig_len: u32,
    pub interface: u32,
    pub number: u64,
}

/// How reading stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The input ended; `pending` bytes of an incomplete record, and what `cut_short` says
    /// about them.
    End {
        pending: usize,
        offset: u64,
        cut_short: Option<String>,
    },
    /// Nothing at all to read (a follower waits for the file header).
    Empty,
    Error(String),
}

pub fn owned(f: &tcpviz::capture::Frame<'_>) -> OwnedFrame {
    OwnedFrame {
        ts: f.ts,
        link_type: f.link_type.0,
        data: f.data.to_vec(),
        orig_len: f.orig_len,
        interface: f.interface,
        number: f.number,
    }
}

/// Reads until the source has nothing complete left, or an error.
pub fn read_to_end<R: Read>(reader: &mut CaptureReader<R>, frames: &mut Vec<OwnedFrame>) -> Outcome {
    // A record is at least 16 bytes (pcapng: 12), so this bounds any input under 1 MiB.
    for _ in 0..100_000 {
        match reader.next_frame() {
            Ok(Next::Frame(f)) => frames.push(owned(&f)),
            Ok(Next::End { pending }) => {
                let cut_short = (pending > 0).then(|| reader.cut_short(pending).to_string());
                return Outcome::End { pending, offset: reader.offset(), cut_short };
            }
            Err(CaptureError::Empty { .. }) => return Outcome::Empty,
            Err(e) => return Outcome::Error(e.to_string()),
        }
    }
    panic!("the reader returned more frames than its input can hold");
}

/// Reads a whole capture held in memory.
pub fn read_capture(bytes: &[u8]) -> (Vec<OwnedFrame>, Outcome) {
    let mut frames = Vec::new();
    let outcome = read_to_end(&mut CaptureReader::new(bytes, "fuzz"), &mut frames);
    (frames, outcome)
}

/// A small deterministic generator, seeded from the input, for split points.
pub struct Steps(u64);

impl Steps {
    pub fn new(bytes: &[u8]) -> Steps {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in bytes.iter().take(64) {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        Steps(h | 1)
    }

    /// A number in `1..=max`.
    pub fn next(&mut self, max: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        1 + (self.0 % max.max(1) as u64) as usize
    }
}

/// Hands out its bytes in reads of varying size (short reads are legal for any `Read`).
pub struct Chunked<'a> {
    data: &'a [u8],
    steps: Steps,
}

impl<'a> Chunked<'a> {
    pub fn new(data: &'a [u8], steps: Steps) -> Self {
        Chunked { data, steps }
    }
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.steps.next(64).min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// A file being written: reads see only the first `visible` bytes, then end of file, until
/// more become visible.
pub struct Growing<'a> {
    pub data: &'a [u8],
    pub pos: usize,
    pub visible: Rc<Cell<usize>>,
}

impl Read for Growing<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let end = self.visible.get().min(self.data.len());
        let n = buf.len().min(end.saturating_sub(self.pos));
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Reads `bytes` as a file that grows in steps: the reader waits at each end (as the follow
/// mode does) and carries on when more bytes arrive.
pub fn read_growing(bytes: &[u8], steps: &mut Steps) -> (Vec<OwnedFrame>, Outcome) {
    let visible = Rc::new(Cell::new(0));
    let mut reader = CaptureReader::new(Growing { data: bytes, pos: 0, visible: visible.clone() }, "fuzz");
    let mut frames = Vec::new();
    loop {
        visible.set((visible.get() + steps.next(bytes.len() / 4 + 8)).min(bytes.len()));
        let all_visible = visible.get() == bytes.len();
        let outcome = read_to_end(&mut reader, &mut frames);
        if all_visible {
            return (frames, outcome);
        }
        if let Outcome::Error(_) = outcome {
            return (frames, outcome);
        }
    }
}
