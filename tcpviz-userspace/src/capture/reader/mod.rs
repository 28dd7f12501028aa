//! Streaming reader for pcap and pcapng files.
//!
//! Reads through a fixed buffer (never the whole file), hands out one [`Frame`] at a time
//! borrowed from that buffer, and knows the byte offset of everything it consumed, so that
//! the follow mode can wait at a packet cut in half at the end of a growing file and carry
//! on when the rest arrives. Record framing and length checks are done here, before the
//! pcap-parser block parsers run, so that a damaged length field becomes a clear error
//! instead of a request for gigabytes of input.

use std::io::{self, Read};

use pcap_parser::nom;
use pcap_parser::pcapng::Block;
use pcap_parser::{PcapError, parse_pcap_frame, parse_pcap_frame_be, parse_pcap_header};

use super::frame::{Frame, LinkType};
use crate::time::{NS_PER_SEC, TimestampNs};

mod pcap;
mod pcapng;

use pcapng::{block_name, section_header_len};

/// Largest packet a legacy pcap record may carry (Wireshark's WTAP_MAX_PACKET_SIZE_STANDARD).
pub const MAX_PACKET_LEN: u32 = 262_144;
/// Largest pcapng block accepted (Wireshark uses the same 16 MiB bound plus headers).
pub const MAX_BLOCK_LEN: u32 = 16 * 1024 * 1024 + 1024;

const INITIAL_BUFFER: usize = 1 << 20;

const PCAP_MAGIC_US: u32 = 0xa1b2_c3d4;
const PCAP_MAGIC_NS: u32 = 0xa1b2_3c4d;
const PCAP_MAGIC_MODIFIED: u32 = 0xa1b2_cd34;
const PCAPNG_SHB: u32 = 0x0a0d_0d0a;
const PCAPNG_BOM: u32 = 0x1a2b_3c4d;
const PCAPNG_EPB: u32 = 0x0000_0006;
const PCAPNG_SPB: u32 = 0x0000_0003;
const PCAPNG_IDB: u32 = 0x0000_0001;
const PCAPNG_OBSOLETE_PACKET: u32 = 0x0000_0002;

/// Why a capture could not be read (further).
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("cannot read {source_name}")]
    Io { source_name: String, source: io::Error },
    #[error("{source_name}: the file is empty")]
    Empty { source_name: String },
    #[error("{source_name}: not a pcap or pcapng capture ({detail})")]
    NotACapture { source_name: String, detail: String },
    #[error("{source_name}: unsupported capture file: {detail}")]
    Unsupported { source_name: String, detail: String },
    #[error("{source_name}: damaged at packet {packet} (byte offset {offset}): {detail}")]
    Damaged { source_name: String, packet: u64, offset: u64, detail: String },
    /// The input ended inside a record or header; `place` says where, with the counts.
    #[error("{source_name}: cut short {place}")]
    CutShort { source_name: String, place: String },
}

/// The file formats the reader understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureFormat {
    Pcap { big_endian: bool, nanosecond: bool, modified: bool },
    PcapNg,
}

/// One capture interface (the single one of a pcap file, or a pcapng IDB).
#[derive(Debug, Clone)]
pub struct InterfaceInfo {
    pub link_type: LinkType,
    pub name: Option<String>,
    pub snaplen: u32,
    /// Timestamp units per second (10^6 by default, 10^9 for nanosecond pcap).
    ts_units_per_sec: u64,
    ts_offset_secs: i64,
}

/// What the reader has next.
pub enum Next<'a> {
    Frame(Frame<'a>),
    /// No complete record is available. `pending` bytes of an incomplete record (or header)
    /// are buffered: 0 means the input ended cleanly on a record boundary.
    End {
        pending: usize,
    },
}

/// Streaming pcap/pcapng reader over any `Read` (usually a `File`).
pub struct CaptureReader<R> {
    source: R,
    source_name: String,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// File offset of `buf[start]`.
    offset: u64,
    format: Option<CaptureFormat>,
    pcapng_big_endian: bool,
    interfaces: Vec<InterfaceInfo>,
    /// Maps the interface ids of the current pcapng section to indexes of `interfaces`.
    section_interfaces: Vec<u32>,
    sections: u32,
    frames: u64,
    last_ts: TimestampNs,
}

impl<R: Read> CaptureReader<R> {
    /// Wraps `source`; nothing is read until the first call to [`next_frame`](Self::next_frame).
    pub fn new(source: R, source_name: impl Into<String>) -> Self {
        CaptureReader {
            source,
            source_name: source_name.into(),
            buf: vec![0; INITIAL_BUFFER],
            start: 0,
            end: 0,
            offset: 0,
            format: None,
            pcapng_big_endian: false,
            interfaces: Vec::new(),
            section_interfaces: Vec::new(),
            sections: 0,
            frames: 0,
            last_ts: 0,
        }
    }

    /// What it reads from.
    pub fn source(&self) -> &R {
        &self.source
    }

    /// Bytes consumed so far: the file offset of the next record.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn interfaces(&self) -> &[InterfaceInfo] {
        &self.interfaces
    }

    pub fn sections(&self) -> u32 {
        self.sections
    }

    /// Makes sure `n` bytes are buffered from `start`. Returns false when the source has
    /// no more data for now (end of file, or of what a growing file holds so far).
    fn fill(&mut self, n: usize) -> Result<bool, CaptureError> {
        while self.end - self.start < n {
            if self.buf.len() - self.start < n {
                // Move what is left to the front, and grow if one record is bigger than
                // the buffer (bounded by the length checks of the callers).
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
                if self.buf.len() < n {
                    self.buf.resize(n.next_power_of_two(), 0);
                }
            }
            let read = loop {
                match self.source.read(&mut self.buf[self.end..]) {
                    Ok(r) => break r,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(source) => {
                        return Err(CaptureError::Io { source_name: self.source_name.clone(), source });
                    }
                }
            };
            if read == 0 {
                return Ok(false);
            }
            self.end += read;
        }
        Ok(true)
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        self.offset += n as u64;
    }

    fn damaged(&self, detail: impl Into<String>) -> CaptureError {
        CaptureError::Damaged {
            source_name: self.source_name.clone(),
            packet: self.frames + 1,
            offset: self.offset,
            detail: detail.into(),
        }
    }

    /// Error for an input that ended inside a record or header, `pending` bytes into it
    /// (offline reading only: a follower waits instead). Says which header or packet was
    /// cut, and how many of its bytes are there.
    pub fn cut_short(&self, pending: usize) -> CaptureError {
        let data = &self.buf[self.start..self.start + pending.min(self.end - self.start)];
        let have = data.len();
        let offset = self.offset;
        let packet = self.frames + 1;
        let place = match self.format {
            None if have < 4 => format!(
                "in its file header: {have} {}, where a pcap file header has 24 and a pcapng section header at least 28",
                if have == 1 { "byte" } else { "bytes" }
            ),
            // The magic number was read: a pcap file header (the format is set once all 24
            // bytes are there).
            None => format!("in its pcap file header ({have} of its 24 bytes)"),
            Some(CaptureFormat::Pcap { big_endian, modified, .. }) => {
                let header_len = if modified { 24 } else { 16 };
                match data.get(8..12) {
                    Some(caplen) if have >= header_len => {
                        let len = header_len + read_u32(caplen, big_endian) as usize;
                        format!(
                            "in the middle of packet {packet} (byte offset {offset}: {} more bytes were expected)",
                            len.saturating_sub(have).max(1)
                        )
                    }
                    _ => format!(
                        "in the record header of packet {packet} (byte offset {offset}: {have} of its {header_len} bytes)"
                    ),
                }
            }
            Some(CaptureFormat::PcapNg) => {
                let block_type = data.get(0..4).map(|b| read_u32(b, self.pcapng_big_endian));
                let block_len = match block_type {
                    Some(PCAPNG_SHB) => section_header_len(data),
                    _ => data.get(4..8).map(|b| read_u32(b, self.pcapng_big_endian) as usize),
                };
                let counts = match block_len {
                    Some(len) => format!("{have} of its {len} bytes"),
                    None if block_type == Some(PCAPNG_SHB) => format!("{have} of its 28 or more bytes"),
                    None => format!("{have} of the 8 bytes that give its type and length"),
                };
                match block_type {
                    Some(PCAPNG_SHB) if offset == 0 => format!("in its pcapng section header ({counts})"),
                    Some(PCAPNG_SHB) => format!("in a pcapng section header at byte offset {offset} ({counts})"),
                    Some(PCAPNG_EPB | PCAPNG_SPB | PCAPNG_OBSOLETE_PACKET) => match block_len {
                        Some(len) if have >= 8 => format!(
                            "in the middle of packet {packet} (byte offset {offset}: {} more bytes were expected)",
                            len.saturating_sub(have).max(1)
                        ),
                        _ => format!("in the block header of packet {packet} (byte offset {offset}: {counts})"),
                    },
                    Some(t) => format!("in a pcapng {} at byte offset {offset} ({counts})", block_name(t)),
                    None => format!("in a pcapng block header at byte offset {offset} ({counts})"),
                }
            }
        };
        CaptureError::CutShort { source_name: self.source_name.clone(), place }
    }

    fn read_file_header(&mut self) -> Result<bool, CaptureError> {
        if !self.fill(4)? {
            if self.end == self.start && self.offset == 0 {
                return Err(CaptureError::Empty { source_name: self.source_name.clone() });
            }
            return Ok(false);
        }
        let magic_le = read_u32(&self.buf[self.start..self.start + 4], false);
        let magic_be = read_u32(&self.buf[self.start..self.start + 4], true);
        if magic_le == PCAPNG_SHB {
            self.format = Some(CaptureFormat::PcapNg);
            return Ok(true);
        }
        let (big_endian, magic) = match (magic_le, magic_be) {
            (m @ (PCAP_MAGIC_US | PCAP_MAGIC_NS | PCAP_MAGIC_MODIFIED), _) => (false, m),
            (_, m @ (PCAP_MAGIC_US | PCAP_MAGIC_NS | PCAP_MAGIC_MODIFIED)) => (true, m),
            _ => {
                return Err(CaptureError::NotACapture {
                    source_name: self.source_name.clone(),
                    // Only the magic: how much more happens to be buffered depends on how
                    // the file was read (a followed file may hold just these bytes so far).
                    detail: describe_magic(&self.buf[self.start..self.start + 4]),
                });
            }
        };
        if !self.fill(24)? {
            return Ok(false);
        }
        let header = match parse_pcap_header(&self.buf[self.start..self.start + 24]) {
            Ok((_, h)) => h,
            Err(_) => {
                return Err(CaptureError::NotACapture {
                    source_name: self.source_name.clone(),
                    detail: "unreadable pcap file header".into(),
                });
            }
        };
        if header.version_major != 2 {
            return Err(CaptureError::Unsupported {
                source_name: self.source_name.clone(),
                detail: format!("pcap version {}.{}", header.version_major, header.version_minor),
            });
        }
        let nanosecond = magic == PCAP_MAGIC_NS;
        self.format = Some(CaptureFormat::Pcap { big_endian, nanosecond, modified: magic == PCAP_MAGIC_MODIFIED });
        // The upper bits of the link-type field carry FCS information.
        let link_type = LinkType((header.network.0 as u32) & 0x03ff_ffff);
        self.interfaces.push(InterfaceInfo {
            link_type,
            name: None,
            snaplen: header.snaplen,
            ts_units_per_sec: if nanosecond { 1_000_000_000 } else { 1_000_000 },
            ts_offset_secs: 0,
        });
        self.sections = 1;
        self.consume(24);
        Ok(true)
    }

    /// Reads the next packet. Non-packet pcapng blocks are consumed silently.
    pub fn next_frame(&mut self) -> Result<Next<'_>, CaptureError> {
        if self.format.is_none() && !self.read_file_header()? {
            return Ok(Next::End { pending: self.end - self.start });
        }
        match self.format {
            Some(CaptureFormat::Pcap { big_endian, nanosecond, modified }) => {
                self.next_pcap(big_endian, nanosecond, modified)
            }
            Some(CaptureFormat::PcapNg) => self.next_pcapng(),
            None => unreachable!("format is set by read_file_header"),
        }
    }
}

fn read_u32(b: &[u8], big_endian: bool) -> u32 {
    let a = [b[0], b[1], b[2], b[3]];
    if big_endian { u32::from_be_bytes(a) } else { u32::from_le_bytes(a) }
}

fn nom_detail<I>(e: &nom::Err<PcapError<I>>) -> String {
    match e {
        nom::Err::Incomplete(_) => "record shorter than its contents".into(),
        nom::Err::Error(pe) | nom::Err::Failure(pe) => match pe {
            PcapError::NomError(_, kind) | PcapError::OwnedNomError(_, kind) => format!("{kind:?}"),
            other => format!("{:?}", std::mem::discriminant(other)),
        },
    }
}

/// A helpful guess at what a non-capture file is, from its first four bytes.
fn describe_magic(head: &[u8]) -> String {
    let hex: Vec<String> = head.iter().take(4).map(|b| format!("{b:02x}")).collect();
    let what = match head {
        [0x1f, 0x8b, ..] => "gzip-compressed: decompress it first",
        [0x28, 0xb5, 0x2f, 0xfd, ..] => "zstd-compressed: decompress it first",
        [0xfd, b'7', b'z', b'X', ..] => "xz-compressed: decompress it first",
        [b'B', b'Z', b'h', ..] => "bzip2-compressed: decompress it first",
        [b'P', b'K', 3, 4, ..] => "a zip archive",
        [0x7f, b'E', b'L', b'F', ..] => "an ELF executable",
        [b'{', ..] | [b'[', ..] => "looks like JSON text",
        _ if head.iter().all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace()) => "looks like text",
        _ => "unknown format",
    };
    format!("starts with {}: {what}", hex.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn pcap_header(magic: u32, linktype: u32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&magic.to_le_bytes());
        v.extend_from_slice(&2u16.to_le_bytes());
        v.extend_from_slice(&4u16.to_le_bytes());
        v.extend_from_slice(&0i32.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(&65535u32.to_le_bytes());
        v.extend_from_slice(&linktype.to_le_bytes());
        v
    }

    pub(super) fn pcap_record(sec: u32, frac: u32, data: &[u8], orig: u32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&sec.to_le_bytes());
        v.extend_from_slice(&frac.to_le_bytes());
        v.extend_from_slice(&(data.len() as u32).to_le_bytes());
        v.extend_from_slice(&orig.to_le_bytes());
        v.extend_from_slice(data);
        v
    }

    pub(super) type Collected = (Vec<(i64, Vec<u8>, u64)>, Result<usize, CaptureError>);

    pub(super) fn collect(bytes: &[u8]) -> Collected {
        let mut r = CaptureReader::new(bytes, "test");
        let mut out = Vec::new();
        loop {
            match r.next_frame() {
                Ok(Next::Frame(f)) => out.push((f.ts, f.data.to_vec(), f.number)),
                Ok(Next::End { pending }) => return (out, Ok(pending)),
                Err(e) => return (out, Err(e)),
            }
        }
    }

    /// The error of a file cut after `len` bytes.
    fn cut_error(file: &[u8], len: usize) -> String {
        let mut r = CaptureReader::new(&file[..len], "f");
        loop {
            match r.next_frame() {
                Ok(Next::Frame(_)) => {}
                Ok(Next::End { pending }) => {
                    assert!(pending > 0, "cut at {len}: ended cleanly");
                    return r.cut_short(pending).to_string();
                }
                Err(e) => panic!("cut at {len}: {e}"),
            }
        }
    }

    pub(super) fn ng_block(block_type: u32, body: &[u8]) -> Vec<u8> {
        let mut body = body.to_vec();
        while !body.len().is_multiple_of(4) {
            body.push(0);
        }
        let len = (12 + body.len()) as u32;
        let mut v = Vec::new();
        v.extend_from_slice(&block_type.to_le_bytes());
        v.extend_from_slice(&len.to_le_bytes());
        v.extend_from_slice(&body);
        v.extend_from_slice(&len.to_le_bytes());
        v
    }

    pub(super) fn shb(major: u16, minor: u16) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&PCAPNG_BOM.to_le_bytes());
        body.extend_from_slice(&major.to_le_bytes());
        body.extend_from_slice(&minor.to_le_bytes());
        body.extend_from_slice(&(-1i64).to_le_bytes());
        ng_block(PCAPNG_SHB, &body)
    }

    pub(super) fn idb(linktype: u16, tsresol: Option<u8>) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&linktype.to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes());
        body.extend_from_slice(&0u32.to_le_bytes());
        if let Some(r) = tsresol {
            body.extend_from_slice(&9u16.to_le_bytes());
            body.extend_from_slice(&1u16.to_le_bytes());
            body.extend_from_slice(&[r, 0, 0, 0]);
            body.extend_from_slice(&[0; 4]);
        }
        ng_block(PCAPNG_IDB, &body)
    }

    pub(super) fn epb(if_id: u32, ticks: u64, data: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&if_id.to_le_bytes());
        body.extend_from_slice(&((ticks >> 32) as u32).to_le_bytes());
        body.extend_from_slice(&(ticks as u32).to_le_bytes());
        body.extend_from_slice(&(data.len() as u32).to_le_bytes());
        body.extend_from_slice(&(data.len() as u32).to_le_bytes());
        body.extend_from_slice(data);
        ng_block(PCAPNG_EPB, &body)
    }

    #[test]
    fn a_cut_in_a_file_header_says_so_with_the_right_counts() {
        let mut pcap = pcap_header(PCAP_MAGIC_US, 1);
        pcap.extend(pcap_record(1, 0, b"0123456789", 10));
        let want = [
            (1, "f: cut short in its file header: 1 byte, where a pcap file header has 24"),
            (3, "f: cut short in its file header: 3 bytes, where a pcap file header has 24"),
            (10, "f: cut short in its pcap file header (10 of its 24 bytes)"),
            (23, "f: cut short in its pcap file header (23 of its 24 bytes)"),
            (30, "f: cut short in the record header of packet 1 (byte offset 24: 6 of its 16 bytes)"),
            (45, "f: cut short in the middle of packet 1 (byte offset 24: 5 more bytes were expected)"),
        ];
        for (len, msg) in want {
            let got = cut_error(&pcap, len);
            assert!(got.starts_with(msg), "{len}: {got}");
        }

        let mut ng = shb(1, 0);
        assert_eq!(ng.len(), 28);
        ng.extend(idb(1, None));
        ng.extend(epb(0, 5, b"0123456789"));
        let want = [
            (3, "f: cut short in its file header: 3 bytes"),
            (7, "f: cut short in its pcapng section header (7 of its 28 or more bytes)"),
            (10, "f: cut short in its pcapng section header (10 of its 28 bytes)"),
            (23, "f: cut short in its pcapng section header (23 of its 28 bytes)"),
            (
                30,
                "f: cut short in a pcapng block header at byte offset 28 (2 of the 8 bytes that give its type and length)",
            ),
            (40, "f: cut short in a pcapng interface description block at byte offset 28 (12 of its 20 bytes)"),
            (52, "f: cut short in the block header of packet 1 (byte offset 48: 4 of the 8 bytes"),
            (60, "f: cut short in the middle of packet 1 (byte offset 48: 32 more bytes were expected)"),
        ];
        for (len, msg) in want {
            let got = cut_error(&ng, len);
            assert!(got.starts_with(msg), "{len}: {got}");
        }
        // A big-endian section header cut before its byte-order magic.
        let mut be = Vec::new();
        be.extend_from_slice(&PCAPNG_SHB.to_be_bytes());
        be.extend_from_slice(&28u32.to_be_bytes());
        be.extend_from_slice(&[0x1a, 0x2b, 0x3c, 0x4d]);
        assert!(cut_error(&be, 9).ends_with("(9 of its 28 bytes)"), "{}", cut_error(&be, 9));
    }

    #[test]
    fn non_captures_get_a_one_line_reason() {
        let (_, end) = collect(b"");
        assert!(matches!(end, Err(CaptureError::Empty { .. })));
        let (_, end) = collect(b"\x1f\x8b\x08\x00 not really");
        let msg = end.unwrap_err().to_string();
        assert!(msg.contains("gzip") && !msg.contains('\n'), "{msg}");
        let (_, end) = collect(b"hello world, this is text\n");
        assert!(end.unwrap_err().to_string().contains("text"));
    }

    /// Found by the `capture_reader` fuzz target: the guess looked at whatever was buffered,
    /// so the same file got "looks like text" when followed (4 bytes read so far) and
    /// "unknown format" when read in one go.
    #[test]
    fn the_guess_at_a_non_capture_does_not_depend_on_how_much_was_read() {
        let whole = b"\n\rLix64v3\x00\x01\x02\xff binary after the first bytes";
        let (_, one_go) = collect(whole);
        let (_, first_four) = collect(&whole[..4]);
        let one_go = one_go.unwrap_err().to_string();
        assert_eq!(one_go, first_four.unwrap_err().to_string());
        assert!(one_go.contains("looks like text"), "{one_go}");
    }

    #[test]
    fn growing_input_resumes_after_a_half_record() {
        use std::{cell::RefCell, rc::Rc};
        // A source that returns what has been "written" so far, like a file being written.
        struct Growing(Rc<RefCell<Vec<u8>>>);
        impl Read for Growing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let mut data = self.0.borrow_mut();
                let n = buf.len().min(data.len());
                buf[..n].copy_from_slice(&data[..n]);
                data.drain(..n);
                Ok(n)
            }
        }
        let written = Rc::new(RefCell::new(pcap_header(PCAP_MAGIC_US, 1)));
        let rec = pcap_record(1, 0, b"0123456789", 10);
        written.borrow_mut().extend_from_slice(&rec[..20]);
        let mut r = CaptureReader::new(Growing(written.clone()), "grow");
        assert!(matches!(r.next_frame().unwrap(), Next::End { pending: 20 }));
        assert_eq!(r.offset(), 24);
        written.borrow_mut().extend_from_slice(&rec[20..]);
        match r.next_frame().unwrap() {
            Next::Frame(fr) => assert_eq!((fr.data, fr.number), (&b"0123456789"[..], 1)),
            Next::End { .. } => panic!("frame expected after the rest arrived"),
        }
        assert_eq!(r.offset(), 24 + rec.len() as u64);
    }
}
