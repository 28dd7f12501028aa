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

use super::frame::{Frame, LinkType, NS_PER_SEC, TimestampNs};

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
    #[error("{source_name}: {source}")]
    Io { source_name: String, source: io::Error },
    #[error("{source_name}: the file is empty")]
    Empty { source_name: String },
    #[error("{source_name}: not a pcap or pcapng capture ({detail})")]
    NotACapture { source_name: String, detail: String },
    #[error("{source_name}: unsupported capture file: {detail}")]
    Unsupported { source_name: String, detail: String },
    #[error("{source_name}: damaged at packet {packet} (byte offset {offset}): {detail}")]
    Damaged { source_name: String, packet: u64, offset: u64, detail: String },
    #[error(
        "{source_name}: cut short in the middle of packet {packet} (byte offset {offset}: {missing} more bytes were expected)"
    )]
    CutShort { source_name: String, packet: u64, offset: u64, missing: usize },
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
    /// Wraps `source`; nothing is read until the first call to [`next`](Self::next).
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

    pub fn source_name(&self) -> &str {
        &self.source_name
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

    /// Error for an input that ended inside a record (offline reading only: a follower
    /// waits instead).
    pub fn cut_short(&self, pending: usize) -> CaptureError {
        let missing = self.pending_record_len().map_or(1, |len| len.saturating_sub(pending).max(1));
        CaptureError::CutShort {
            source_name: self.source_name.clone(),
            packet: self.frames + 1,
            offset: self.offset,
            missing,
        }
    }

    /// Length of the record that starts at `start`, when its header is buffered.
    fn pending_record_len(&self) -> Option<usize> {
        let data = &self.buf[self.start..self.end];
        match self.format? {
            CaptureFormat::Pcap { big_endian, .. } => {
                let caplen = read_u32(data.get(8..12)?, big_endian);
                Some(16 + caplen as usize)
            }
            CaptureFormat::PcapNg => {
                let len = read_u32(data.get(4..8)?, self.pcapng_big_endian);
                Some(len as usize)
            }
        }
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
                    detail: describe_magic(&self.buf[self.start..self.end]),
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

    fn next_pcap(&mut self, big_endian: bool, nanosecond: bool, modified: bool) -> Result<Next<'_>, CaptureError> {
        let header_len = if modified { 24 } else { 16 };
        if !self.fill(header_len)? {
            return Ok(Next::End { pending: self.end - self.start });
        }
        let caplen = read_u32(&self.buf[self.start + 8..self.start + 12], big_endian);
        if caplen > MAX_PACKET_LEN {
            return Err(self.damaged(format!(
                "the record header claims a {caplen}-byte packet, more than the {MAX_PACKET_LEN}-byte maximum"
            )));
        }
        let record_len = header_len + caplen as usize;
        if !self.fill(record_len)? {
            return Ok(Next::End { pending: self.end - self.start });
        }
        let record = &self.buf[self.start..self.start + record_len];
        let parsed = if modified {
            pcap_parser::pcap::parse_pcap_frame_modified(record)
        } else if big_endian {
            parse_pcap_frame_be(record)
        } else {
            parse_pcap_frame(record)
        };
        let block = match parsed {
            Ok((_, b)) => b,
            Err(e) => {
                let detail = format!("unreadable packet record ({})", nom_detail(&e));
                return Err(self.damaged(detail));
            }
        };
        let frac_ns = if nanosecond { block.ts_usec as i64 } else { block.ts_usec as i64 * 1000 };
        let ts = block.ts_sec as i64 * NS_PER_SEC + frac_ns;
        let (data_ptr, data_len, orig_len) = (block.data.as_ptr(), block.data.len(), block.origlen);
        self.frames += 1;
        self.last_ts = ts;
        let number = self.frames;
        self.consume(record_len);
        let data_off = data_ptr as usize - self.buf.as_ptr() as usize;
        Ok(Next::Frame(Frame {
            ts,
            link_type: self.interfaces[0].link_type,
            data: &self.buf[data_off..data_off + data_len],
            orig_len,
            interface: 0,
            number,
            direction: None,
        }))
    }

    fn next_pcapng(&mut self) -> Result<Next<'_>, CaptureError> {
        loop {
            if !self.fill(12)? {
                return Ok(Next::End { pending: self.end - self.start });
            }
            let head = &self.buf[self.start..self.start + 12];
            let block_type = read_u32(&head[0..4], self.pcapng_big_endian);
            if block_type == PCAPNG_SHB {
                // A new section may switch byte order: the byte-order magic says which.
                let bom_le = read_u32(&head[8..12], false);
                self.pcapng_big_endian = match bom_le {
                    PCAPNG_BOM => false,
                    0x4d3c_2b1a => true,
                    _ => return Err(self.damaged("section header with an unknown byte-order magic")),
                };
            }
            let block_len = read_u32(&self.buf[self.start + 4..self.start + 8], self.pcapng_big_endian);
            if block_len < 12 || !block_len.is_multiple_of(4) || block_len > MAX_BLOCK_LEN {
                return Err(self.damaged(format!("block of type {block_type:#x} has an invalid length {block_len}")));
            }
            let block_len = block_len as usize;
            if !self.fill(block_len)? {
                return Ok(Next::End { pending: self.end - self.start });
            }
            match block_type {
                PCAPNG_SHB => {
                    self.read_section_header(block_len)?;
                    self.consume(block_len);
                }
                PCAPNG_IDB => {
                    self.read_interface(block_len)?;
                    self.consume(block_len);
                }
                PCAPNG_EPB | PCAPNG_SPB | PCAPNG_OBSOLETE_PACKET => {
                    if self.sections == 0 {
                        return Err(self.damaged("packet block before any section header"));
                    }
                    return self.read_packet_block(block_type, block_len);
                }
                _ => self.consume(block_len),
            }
        }
    }

    fn parse_block(&self, block_len: usize) -> Result<Block<'_>, CaptureError> {
        let bytes = &self.buf[self.start..self.start + block_len];
        let parsed = if self.pcapng_big_endian {
            pcap_parser::pcapng::parse_block_be(bytes)
        } else {
            pcap_parser::pcapng::parse_block_le(bytes)
        };
        parsed.map(|(_, b)| b).map_err(|e| {
            let detail = format!("unreadable pcapng block ({})", nom_detail(&e));
            self.damaged(detail)
        })
    }

    fn read_section_header(&mut self, block_len: usize) -> Result<(), CaptureError> {
        let (major, minor) = match self.parse_block(block_len)? {
            Block::SectionHeader(shb) => (shb.major_version, shb.minor_version),
            _ => return Err(self.damaged("expected a section header block")),
        };
        // pcapng 1.0 is what every writer produces; 1.2 only appeared in old drafts.
        if major != 1 || minor > 2 {
            return Err(CaptureError::Unsupported {
                source_name: self.source_name.clone(),
                detail: format!("pcapng section version {major}.{minor} (only 1.x is defined)"),
            });
        }
        self.sections += 1;
        self.section_interfaces.clear();
        Ok(())
    }

    fn read_interface(&mut self, block_len: usize) -> Result<(), CaptureError> {
        let info = match self.parse_block(block_len)? {
            Block::InterfaceDescription(idb) => {
                let units = ts_units_per_sec(idb.if_tsresol)
                    .ok_or_else(|| self.damaged(format!("interface with invalid if_tsresol {}", idb.if_tsresol)))?;
                InterfaceInfo {
                    link_type: LinkType(idb.linktype.0 as u32 & 0xffff),
                    name: idb.if_name().and_then(|r| r.ok()).map(str::to_owned),
                    snaplen: idb.snaplen,
                    ts_units_per_sec: units,
                    ts_offset_secs: idb.if_tsoffset,
                }
            }
            _ => return Err(self.damaged("expected an interface description block")),
        };
        if self.sections == 0 {
            return Err(self.damaged("interface description before any section header"));
        }
        self.section_interfaces.push(self.interfaces.len() as u32);
        self.interfaces.push(info);
        Ok(())
    }

    fn read_packet_block(&mut self, block_type: u32, block_len: usize) -> Result<Next<'_>, CaptureError> {
        let (if_id, ticks, data_ptr, data_len, orig_len) = match self.parse_block(block_len)? {
            Block::EnhancedPacket(epb) => (
                epb.if_id,
                Some(((epb.ts_high as u64) << 32) | epb.ts_low as u64),
                epb.data.as_ptr(),
                epb.caplen.min(epb.data.len() as u32) as usize,
                epb.origlen,
            ),
            Block::SimplePacket(spb) => (0, None, spb.data.as_ptr(), spb.data.len(), spb.origlen),
            _ if block_type == PCAPNG_OBSOLETE_PACKET => {
                // Obsolete Packet Block: if_id u16, drops u16, ts high, ts low, caplen, len.
                let b = &self.buf[self.start..self.start + block_len];
                let be = self.pcapng_big_endian;
                if block_len < 32 {
                    return Err(self.damaged("packet block too short"));
                }
                let if_id = if be { u16::from_be_bytes([b[8], b[9]]) } else { u16::from_le_bytes([b[8], b[9]]) };
                let ticks = ((read_u32(&b[12..16], be) as u64) << 32) | read_u32(&b[16..20], be) as u64;
                let caplen = (read_u32(&b[20..24], be) as usize).min(block_len - 32);
                (if_id as u32, Some(ticks), b[28..].as_ptr(), caplen, read_u32(&b[24..28], be))
            }
            _ => return Err(self.damaged("expected a packet block")),
        };
        let Some(&iface_index) = self.section_interfaces.get(if_id as usize) else {
            return Err(self.damaged(format!("packet on interface {if_id}, which the section never described")));
        };
        let iface = &self.interfaces[iface_index as usize];
        let ts = match ticks {
            Some(ticks) => ticks_to_ns(ticks, iface.ts_units_per_sec, iface.ts_offset_secs),
            // Simple Packet Blocks carry no time: keep the previous packet's.
            None => self.last_ts,
        };
        let link_type = iface.link_type;
        self.frames += 1;
        self.last_ts = ts;
        let number = self.frames;
        self.consume(block_len);
        let data_off = data_ptr as usize - self.buf.as_ptr() as usize;
        Ok(Next::Frame(Frame {
            ts,
            link_type,
            data: &self.buf[data_off..data_off + data_len],
            orig_len,
            interface: iface_index,
            number,
            direction: None,
        }))
    }
}

/// Decodes `if_tsresol`: 10^-n seconds, or 2^-n when the top bit is set.
/// (pcap-parser's helper rejects every power-of-two resolution.)
fn ts_units_per_sec(if_tsresol: u8) -> Option<u64> {
    let n = (if_tsresol & 0x7f) as u32;
    if if_tsresol & 0x80 == 0 { 10u64.checked_pow(n) } else { 1u64.checked_shl(n).filter(|_| n < 64) }
}

fn ticks_to_ns(ticks: u64, units_per_sec: u64, offset_secs: i64) -> TimestampNs {
    let ns = (ticks as i128 * NS_PER_SEC as i128) / units_per_sec as i128;
    (ns + offset_secs as i128 * NS_PER_SEC as i128) as i64
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

/// A helpful guess at what a non-capture file is.
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
        _ if head.iter().take(64).all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace()) => "looks like text",
        _ => "unknown format",
    };
    format!("starts with {}: {what}", hex.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pcap_header(magic: u32, linktype: u32) -> Vec<u8> {
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

    fn pcap_record(sec: u32, frac: u32, data: &[u8], orig: u32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&sec.to_le_bytes());
        v.extend_from_slice(&frac.to_le_bytes());
        v.extend_from_slice(&(data.len() as u32).to_le_bytes());
        v.extend_from_slice(&orig.to_le_bytes());
        v.extend_from_slice(data);
        v
    }

    type Collected = (Vec<(i64, Vec<u8>, u64)>, Result<usize, CaptureError>);

    fn collect(bytes: &[u8]) -> Collected {
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

    #[test]
    fn reads_microsecond_and_nanosecond_pcap() {
        let mut f = pcap_header(PCAP_MAGIC_US, 1);
        f.extend(pcap_record(10, 5, b"abc", 3));
        let (frames, end) = collect(&f);
        assert_eq!(end.unwrap(), 0);
        assert_eq!(frames, vec![(10_000_005_000, b"abc".to_vec(), 1)]);

        let mut f = pcap_header(PCAP_MAGIC_NS, 1);
        f.extend(pcap_record(10, 5, b"abc", 3));
        f.extend(pcap_record(11, 7, b"de", 60));
        let (frames, _) = collect(&f);
        assert_eq!(frames[0].0, 10_000_000_005);
        assert_eq!(frames[1].2, 2);
    }

    #[test]
    fn reads_big_endian_pcap() {
        let mut f = Vec::new();
        f.extend_from_slice(&PCAP_MAGIC_US.to_be_bytes());
        f.extend_from_slice(&2u16.to_be_bytes());
        f.extend_from_slice(&4u16.to_be_bytes());
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&65535u32.to_be_bytes());
        f.extend_from_slice(&1u32.to_be_bytes());
        for x in [3u32, 250_000, 2, 2] {
            f.extend_from_slice(&x.to_be_bytes());
        }
        f.extend_from_slice(b"hi");
        let (frames, end) = collect(&f);
        assert_eq!(end.unwrap(), 0);
        assert_eq!(frames, vec![(3_250_000_000, b"hi".to_vec(), 1)]);
    }

    #[test]
    fn cut_short_record_is_pending_then_error_names_the_packet() {
        let mut f = pcap_header(PCAP_MAGIC_US, 1);
        f.extend(pcap_record(1, 0, b"full", 4));
        let rec = pcap_record(2, 0, b"half-packet", 11);
        f.extend_from_slice(&rec[..rec.len() - 4]);
        let mut r = CaptureReader::new(&f[..], "cut.pcap");
        assert!(matches!(r.next_frame().unwrap(), Next::Frame(_)));
        let pending = match r.next_frame().unwrap() {
            Next::End { pending } => pending,
            Next::Frame(_) => panic!("no second frame expected"),
        };
        assert_eq!(pending, rec.len() - 4);
        let err = r.cut_short(pending).to_string();
        assert!(err.contains("cut.pcap") && err.contains("packet 2") && err.contains("4 more bytes"), "{err}");
    }

    #[test]
    fn absurd_record_length_is_damage_not_allocation() {
        let mut f = pcap_header(PCAP_MAGIC_US, 1);
        let mut rec = pcap_record(1, 0, b"x", 1);
        rec[8..12].copy_from_slice(&4_325_376u32.to_le_bytes());
        f.extend(rec);
        let (_, end) = collect(&f);
        let err = end.unwrap_err().to_string();
        assert!(err.contains("damaged at packet 1") && err.contains("4325376"), "{err}");
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

    fn ng_block(block_type: u32, body: &[u8]) -> Vec<u8> {
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

    fn shb(major: u16, minor: u16) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&PCAPNG_BOM.to_le_bytes());
        body.extend_from_slice(&major.to_le_bytes());
        body.extend_from_slice(&minor.to_le_bytes());
        body.extend_from_slice(&(-1i64).to_le_bytes());
        ng_block(PCAPNG_SHB, &body)
    }

    fn idb(linktype: u16, tsresol: Option<u8>) -> Vec<u8> {
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

    fn epb(if_id: u32, ticks: u64, data: &[u8]) -> Vec<u8> {
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
    fn pcapng_sections_and_interface_resolutions() {
        let mut f = shb(1, 0);
        f.extend(idb(1, None)); // microseconds
        f.extend(idb(113, Some(9))); // nanoseconds
        f.extend(epb(1, 1_000_000_123, b"ns"));
        f.extend(epb(0, 2_000_001, b"us"));
        // A second section restarts interface numbering.
        f.extend(shb(1, 0));
        f.extend(idb(101, Some(0x80 | 10))); // 2^-10 s
        f.extend(epb(0, 3 * 1024 + 512, b"b2"));
        let mut r = CaptureReader::new(&f[..], "ng");
        let mut got = Vec::new();
        while let Next::Frame(fr) = r.next_frame().unwrap() {
            got.push((fr.ts, fr.link_type, fr.interface, fr.number));
        }
        assert_eq!(
            got,
            vec![
                (1_000_000_123, LinkType(113), 1, 1),
                (2_000_001_000, LinkType(1), 0, 2),
                (3_500_000_000, LinkType(101), 2, 3),
            ]
        );
        assert_eq!(r.sections(), 2);
    }

    #[test]
    fn pcapng_unsupported_version_is_rejected() {
        let mut f = shb(0, 1);
        f.extend(idb(1, None));
        let (_, end) = collect(&f);
        let msg = end.unwrap_err().to_string();
        assert!(msg.contains("version 0.1"), "{msg}");
    }

    #[test]
    fn pcapng_packet_on_unknown_interface_is_damage() {
        let mut f = shb(1, 0);
        f.extend(idb(1, None));
        f.extend(epb(3, 0, b"x"));
        let (_, end) = collect(&f);
        assert!(end.unwrap_err().to_string().contains("interface 3"));
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
