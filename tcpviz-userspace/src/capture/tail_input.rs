//! What the follow mode reads a growing file through: the file itself, or, for a file
//! compressed with gzip or zstd (told by its first bytes), its decompressor.
//!
//! A compressed file may be seen while its compressor is still writing it (`tcpdump -z
//! gzip` compresses each ring file after it rotates). A decompressor that meets the end of
//! a stream cut short fails, and cannot go on once more is written, so the input answers
//! "nothing more yet" instead, and once the file has grown the next read starts a new
//! decompressor from the file's start (through the same descriptor) and skips what was
//! already handed out. The capture reader above sees a file that
//! grew, as it does for a plain file.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};

use super::files::{Compression, compression_of};

/// Bytes enough to tell a compressed file from a capture.
const MAGIC_BYTES: usize = 4;

pub enum TailInput {
    /// Too short yet to tell what it is: nothing is handed out before it is known.
    Undecided(Option<File>),
    Plain(File),
    Compressed(CompressedInput),
}

pub struct CompressedInput {
    file: File,
    kind: Compression,
    decoder: Option<Box<dyn Read + Send>>,
    /// The file's length when the current decompressor started: one that reached its end
    /// is started again only once the file has grown past it.
    len_at_start: u64,
    /// The last decompressor reached its end (or failed); the file had `len_at_start` bytes.
    ended: bool,
    /// Decompressed bytes handed out so far.
    delivered: u64,
    /// Why the last decompressor stopped before the end of its stream (a file still being
    /// written, or a damaged one: the follower tells them apart by whether it grows).
    pub stopped_early: Option<String>,
}

impl TailInput {
    pub fn new(file: File) -> TailInput {
        TailInput::Undecided(Some(file))
    }

    pub fn compression(&self) -> Option<Compression> {
        match self {
            TailInput::Compressed(c) => Some(c.kind),
            _ => None,
        }
    }

    /// Why decompression stopped before the end of the stream, if it did.
    pub fn stopped_early(&self) -> Option<&str> {
        match self {
            TailInput::Compressed(c) => c.stopped_early.as_deref(),
            _ => None,
        }
    }

    /// Decides, once the first bytes are there, what the file is.
    fn decide(&mut self) -> io::Result<bool> {
        let TailInput::Undecided(slot) = self else { return Ok(true) };
        let Some(file) = slot.as_ref() else { return Ok(false) };
        let mut head = [0u8; MAGIC_BYTES];
        if super::tail::read_at_most(file, &mut head, 0)? < MAGIC_BYTES {
            return Ok(false);
        }
        let file = slot.take().expect("checked above");
        *self = match compression_of(&head) {
            Some(kind) => TailInput::Compressed(CompressedInput {
                file,
                kind,
                decoder: None,
                len_at_start: 0,
                ended: false,
                delivered: 0,
                stopped_early: None,
            }),
            None => TailInput::Plain(file),
        };
        Ok(true)
    }
}

impl Read for TailInput {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.decide()? {
            return Ok(0);
        }
        match self {
            TailInput::Plain(f) => f.read(buf),
            TailInput::Compressed(c) => c.read(buf),
            TailInput::Undecided(_) => Ok(0),
        }
    }
}

impl CompressedInput {
    /// A new decompressor from the file's start, past what was already handed out; `None`
    /// when the file does not hold that much yet.
    fn restart(&mut self) -> io::Result<Option<Box<dyn Read + Send>>> {
        // Before any byte is read: bytes written later make the file longer than this.
        self.len_at_start = self.file.metadata()?.len();
        (&self.file).seek(SeekFrom::Start(0))?;
        let file = BufReader::with_capacity(1 << 16, self.file.try_clone()?);
        let mut decoder: Box<dyn Read + Send> = match self.kind {
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(file)),
            Compression::Zstd => match ruzstd::decoding::StreamingDecoder::new(file) {
                Ok(d) => Box::new(d),
                Err(e) => {
                    self.stopped_early = Some(e.to_string());
                    return Ok(None);
                }
            },
        };
        let mut skip = self.delivered;
        let mut scratch = vec![0u8; 1 << 16];
        while skip > 0 {
            let want = scratch.len().min(usize::try_from(skip).unwrap_or(usize::MAX));
            match decoder.read(&mut scratch[..want]) {
                Ok(0) => return Ok(None),
                Ok(n) => skip -= n as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.stopped_early = Some(e.to_string());
                    return Ok(None);
                }
            }
        }
        Ok(Some(decoder))
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.decoder.is_none() {
            if self.ended && self.file.metadata()?.len() == self.len_at_start {
                return Ok(0);
            }
            self.ended = false;
            self.decoder = self.restart()?;
            if self.decoder.is_none() {
                self.ended = true;
                return Ok(0);
            }
        }
        let decoder = self.decoder.as_mut().expect("started above");
        match decoder.read(buf) {
            Ok(0) => {
                // The end of the stream, or of what is written of it: a decompressor cannot
                // be trusted to go on after either, so a new one starts if the file grows.
                self.decoder = None;
                self.ended = true;
                Ok(0)
            }
            Ok(n) => {
                self.delivered += n as u64;
                self.stopped_early = None;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                // Cut short (still being written) or damaged: start again if it grows.
                self.stopped_early = Some(e.to_string());
                self.decoder = None;
                self.ended = true;
                Ok(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    /// A gzip file written a few bytes at a time is read whole, once, in order.
    #[test]
    fn a_compressed_file_read_while_it_is_written_gives_every_byte_once() {
        let data: Vec<u8> = (0..200_000u32).flat_map(|i| (i.wrapping_mul(2654435761)).to_le_bytes()).collect();
        let packed = gzip(&data);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ring_1.pcap.gz");
        let mut writer = File::create(&path).unwrap();
        let mut input = TailInput::new(File::open(&path).unwrap());
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        for chunk in packed.chunks(3_001) {
            writer.write_all(chunk).unwrap();
            writer.flush().unwrap();
            loop {
                let n = input.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
        }
        assert_eq!(input.compression(), Some(Compression::Gzip));
        assert_eq!(out.len(), data.len());
        assert!(out == data);
        assert_eq!(input.stopped_early(), None);
    }

    #[test]
    fn a_plain_file_is_read_as_it_is_once_its_first_bytes_are_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.pcap");
        let mut writer = File::create(&path).unwrap();
        let mut input = TailInput::new(File::open(&path).unwrap());
        let mut buf = [0u8; 16];
        writer.write_all(&[0xd4, 0xc3]).unwrap();
        assert_eq!(input.read(&mut buf).unwrap(), 0, "two bytes do not tell what it is");
        writer.write_all(&[0xb2, 0xa1, 7]).unwrap();
        assert_eq!(input.read(&mut buf).unwrap(), 5);
        assert_eq!(&buf[..5], &[0xd4, 0xc3, 0xb2, 0xa1, 7]);
        assert_eq!(input.compression(), None);
    }

    #[test]
    fn a_damaged_compressed_file_says_why_it_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.pcap.gz");
        let mut packed = gzip(&[7u8; 10_000]);
        let mid = packed.len() / 2;
        packed[mid..].iter_mut().for_each(|b| *b = !*b);
        std::fs::write(&path, &packed).unwrap();
        let mut input = TailInput::new(File::open(&path).unwrap());
        let mut sink = Vec::new();
        let _ = input.read_to_end(&mut sink).unwrap();
        assert!(input.stopped_early().is_some());
    }
}
