//! The one loop that reads capture files to their end, frame by frame, for every reader of
//! finished files (`parse-pcap`, the report's second reading, the tests). The caller is a
//! sink handed each frame; a file that cannot be opened, is damaged or is cut short ends
//! its own reading the same way for every caller: an error in [`FilesRead::errors`], which
//! the caller decides about. The follow mode reads growing files another way
//! ([`super::tail`]).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use super::frame::Frame;
use super::reader::{CaptureError, CaptureReader, Next};

/// Where a frame stands among the files read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameAt {
    /// Index of its file in the list read.
    pub file_index: u32,
    /// Bytes read before it, over all the files (for progress).
    pub bytes_before: u64,
}

/// What reading the files met.
#[derive(Debug, Default)]
pub struct FilesRead {
    /// Frames handed to the sink.
    pub frames: u64,
    /// Bytes read, over all the files (up to the damage in a damaged file).
    pub bytes: u64,
    /// One error per file whose reading stopped early (not opened, damaged, cut short);
    /// the files after it were still read.
    pub errors: Vec<CaptureError>,
}

/// Opens and reads the files in order as one stream. The sink's error stops everything and
/// is returned as is.
pub fn read_files<P: AsRef<Path>, E>(
    paths: &[P],
    sink: impl FnMut(&Frame<'_>, FrameAt) -> Result<(), E>,
) -> Result<FilesRead, E> {
    read_sources(paths.iter().map(|p| (p.as_ref().display().to_string(), open_capture(p.as_ref()))), sink)
}

/// Opens a finished capture file; one compressed with gzip or zstd (told by its first
/// bytes, whatever its name) is read through its decompressor, as tshark reads them.
pub fn open_capture(path: &Path) -> io::Result<Box<dyn Read>> {
    let mut file = BufReader::with_capacity(1 << 16, File::open(path)?);
    match compression_of(file.fill_buf()?) {
        Some(Compression::Gzip) => {
            Ok(Box::new(BufReader::with_capacity(1 << 16, flate2::bufread::MultiGzDecoder::new(file))))
        }
        Some(Compression::Zstd) => {
            let zstd = ruzstd::decoding::StreamingDecoder::new(file)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("not a readable zstd file: {e}")))?;
            Ok(Box::new(BufReader::with_capacity(1 << 16, zstd)))
        }
        None => Ok(Box::new(file)),
    }
}

/// The compressions a capture file is read through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
}

/// A file's compression, told by its first bytes (not its name).
pub fn compression_of(head: &[u8]) -> Option<Compression> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Some(Compression::Gzip)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Compression::Zstd)
    } else {
        None
    }
}

/// [`read_files`] over sources already opened (or that failed to open), each with its name.
pub fn read_sources<R: Read, E>(
    sources: impl IntoIterator<Item = (String, io::Result<R>)>,
    mut sink: impl FnMut(&Frame<'_>, FrameAt) -> Result<(), E>,
) -> Result<FilesRead, E> {
    let mut read = FilesRead::default();
    for (file_index, (name, source)) in sources.into_iter().enumerate() {
        let source = match source {
            Ok(s) => s,
            Err(source) => {
                read.errors.push(CaptureError::Io { source_name: name, source });
                continue;
            }
        };
        let mut reader = CaptureReader::new(source, name);
        // The offset of the last frame's end: a failing read leaves the reader's own offset
        // where it stopped, which may be before it.
        let mut last_offset = 0u64;
        loop {
            let at = FrameAt { file_index: file_index as u32, bytes_before: read.bytes + reader.offset() };
            match reader.next_frame() {
                Ok(Next::Frame(frame)) => {
                    read.frames += 1;
                    sink(&frame, at)?;
                }
                Ok(Next::End { pending: 0 }) => break,
                Ok(Next::End { pending }) => {
                    read.errors.push(reader.cut_short(pending));
                    break;
                }
                Err(e) => {
                    read.errors.push(e);
                    break;
                }
            }
            last_offset = reader.offset();
        }
        read.bytes += last_offset.max(reader.offset());
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A little-endian microsecond pcap file header (Ethernet) and `n` records of 4 bytes.
    fn pcap(n: u32) -> Vec<u8> {
        let mut b = Vec::new();
        for v in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, 1] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for i in 0..n {
            for v in [1_700_000_000u32 + i, 0, 4, 4] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            b.extend_from_slice(&i.to_be_bytes());
        }
        b
    }

    #[test]
    fn files_are_read_in_order_and_a_bad_one_ends_only_its_own_reading() {
        let dir = tempfile::tempdir().unwrap();
        let whole = dir.path().join("a.pcap");
        std::fs::write(&whole, pcap(3)).unwrap();
        let cut = dir.path().join("b.pcap");
        let mut bytes = pcap(2);
        bytes.truncate(bytes.len() - 2);
        std::fs::write(&cut, bytes).unwrap();
        let missing = dir.path().join("none.pcap");
        let later = dir.path().join("c.pcap");
        std::fs::write(&later, pcap(1)).unwrap();

        let mut seen = Vec::new();
        let read = read_files(&[&whole, &cut, &missing, &later], |f, at| {
            seen.push((at.file_index, f.number, at.bytes_before));
            Ok::<(), ()>(())
        })
        .unwrap();
        let record = 16 + 4;
        assert_eq!(
            seen,
            [
                (0, 1, 0),
                (0, 2, 24 + record),
                (0, 3, 24 + 2 * record),
                (1, 1, 24 + 3 * record),
                (3, 1, 2 * 24 + 4 * record),
            ]
        );
        assert_eq!(read.frames, 5);
        assert_eq!(read.bytes, 3 * 24 + 5 * record, "the cut record is not counted");
        let errors: Vec<String> = read.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with(&format!("{}: cut short", cut.display())), "{errors:?}");
        assert_eq!(errors[1], format!("cannot read {}", missing.display()));
    }

    #[test]
    fn the_sink_stops_the_reading() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.pcap");
        std::fs::write(&path, pcap(5)).unwrap();
        let mut frames = 0;
        let stopped = read_files(&[&path], |_, _| {
            frames += 1;
            if frames == 2 { Err("full") } else { Ok(()) }
        });
        assert_eq!((stopped.unwrap_err(), frames), ("full", 2));
    }
}
