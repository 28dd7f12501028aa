//! A pcapng writer for the packet snapshots of a live session (`capture.pcapng`), so the
//! session can be analysed again offline. Nanosecond timestamps; the direction of each
//! packet in the EPB flags option. Blocks are written whole or not at all
//! ([`RecordFile`]), so a full disk leaves a capture that reads to its end.

use std::io;
use std::path::Path;

use crate::capture::frame::{Direction, LinkType};
use crate::output::record_file::{OnFailure, RecordFile};
use crate::output::rotation::RotationSettings;
use crate::time::TimestampNs;

pub struct PcapngWriter {
    out: RecordFile,
    snaplen: u32,
    /// Interface description blocks written (interface ids 0..interfaces).
    interfaces: u32,
}

/// Appends an option, its value padded to 32 bits.
fn option(buf: &mut Vec<u8>, code: u16, value: &[u8]) {
    buf.extend_from_slice(&code.to_le_bytes());
    buf.extend_from_slice(&(value.len() as u16).to_le_bytes());
    buf.extend_from_slice(value);
    pad32(buf, value.len());
}

/// Zeros after `len` bytes, up to the next multiple of 4.
fn pad32(buf: &mut Vec<u8>, len: usize) {
    buf.resize(buf.len() + (4 - len % 4) % 4, 0);
}

/// Appends a block: its type and total length around the body that `body` appends (a whole
/// number of 32-bit words).
fn append_block(out: &mut Vec<u8>, block_type: u32, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&block_type.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    body(out);
    let len = ((out.len() - start) + 4) as u32;
    out[start + 4..start + 8].copy_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
}

fn block(block_type: u32, body: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(12 + body.len());
    append_block(&mut b, block_type, |b| b.extend_from_slice(body));
    b
}

impl PcapngWriter {
    /// Creates the file with a section header; interfaces are added with
    /// [`add_interface`](Self::add_interface) before their first packet. With active
    /// `rotation`, the file is written as parts, each starting with the section header and
    /// the interfaces described so far (so each part reads on its own, with the same
    /// interface ids).
    pub fn create(
        path: &Path,
        snaplen: u32,
        on_failure: OnFailure,
        rotation: RotationSettings,
    ) -> io::Result<PcapngWriter> {
        let mut out = RecordFile::create_rotating(path, on_failure, 1 << 20, rotation)?;
        let mut shb = Vec::new();
        shb.extend_from_slice(&0x1a2b_3c4du32.to_le_bytes());
        shb.extend_from_slice(&1u16.to_le_bytes());
        shb.extend_from_slice(&0u16.to_le_bytes());
        shb.extend_from_slice(&(-1i64).to_le_bytes());
        option(&mut shb, 4, format!("tcpviz {}", env!("CARGO_PKG_VERSION")).as_bytes()); // shb_userappl
        option(&mut shb, 0, &[]);
        // Written at once, and its failure is an error whatever `on_failure` says: packets
        // after a lost header would make the file unreadable.
        out.add_to_header(&block(0x0a0d_0d0a, &shb))?;
        Ok(PcapngWriter { out, snaplen, interfaces: 0 })
    }

    /// Describes one more interface; returns its id for [`write_packet`](Self::write_packet).
    /// Written at once and never dropped: packets that name an interface the file does not
    /// describe would make it unreadable. On an error, the file holds no trace of it (and
    /// the packets queued before it are written, or counted as lost).
    pub fn add_interface(&mut self, link_type: LinkType, if_name: &str) -> io::Result<u32> {
        let mut idb = Vec::new();
        idb.extend_from_slice(&(link_type.0 as u16).to_le_bytes());
        idb.extend_from_slice(&0u16.to_le_bytes());
        idb.extend_from_slice(&self.snaplen.to_le_bytes());
        option(&mut idb, 2, if_name.as_bytes()); // if_name
        option(&mut idb, 9, &[9]); // if_tsresol: nanoseconds
        option(&mut idb, 0, &[]);
        self.out.add_to_header(&block(1, &idb))?;
        self.interfaces += 1;
        Ok(self.interfaces - 1)
    }

    /// One packet of interface `interface` (an id [`add_interface`](Self::add_interface)
    /// gave).
    pub fn write_packet(
        &mut self,
        interface: u32,
        ts: TimestampNs,
        data: &[u8],
        orig_len: u32,
        dir: Option<Direction>,
    ) -> io::Result<()> {
        debug_assert!(interface < self.interfaces, "packet of an undescribed interface");
        let ticks = ts.max(0) as u64;
        // Built in place in the file's batch: a packet is one copy, not three.
        self.out.push(|b| {
            append_block(b, 6, |epb| {
                epb.extend_from_slice(&interface.to_le_bytes());
                epb.extend_from_slice(&((ticks >> 32) as u32).to_le_bytes());
                epb.extend_from_slice(&(ticks as u32).to_le_bytes());
                epb.extend_from_slice(&(data.len() as u32).to_le_bytes());
                epb.extend_from_slice(&orig_len.max(data.len() as u32).to_le_bytes());
                epb.extend_from_slice(data);
                pad32(epb, data.len());
                if let Some(d) = dir {
                    // epb_flags: bits 0-1 are the direction (1 inbound, 2 outbound).
                    let flags: u32 = match d {
                        Direction::Ingress => 1,
                        Direction::Egress => 2,
                    };
                    option(epb, 2, &flags.to_le_bytes());
                    option(epb, 0, &[]);
                }
            });
            Ok(())
        })
    }

    /// Packets written (over all parts, when rotated).
    pub fn packets(&self) -> u64 {
        self.out.written()
    }

    pub fn file(&self) -> &RecordFile {
        &self.out
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;

    use super::*;
    use crate::capture::reader::{CaptureReader, Next};

    #[test]
    fn written_packets_read_back_with_nanosecond_times_and_their_interfaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.pcapng");
        let mut w = PcapngWriter::create(&path, 128, OnFailure::Stop, RotationSettings::default()).unwrap();
        let veth = w.add_interface(LinkType::ETHERNET, "veth0").unwrap();
        w.write_packet(veth, 1_700_000_000_123_456_789, b"abcde", 1500, Some(Direction::Egress)).unwrap();
        // An interface that appears later, with another link type.
        let wg = w.add_interface(LinkType::RAW, "wg0").unwrap();
        w.write_packet(wg, 1_700_000_001_000_000_001, b"xyz", 3, None).unwrap();
        w.write_packet(veth, 1_700_000_002_000_000_000, b"q", 1, Some(Direction::Ingress)).unwrap();
        w.flush().unwrap();
        assert_eq!((veth, wg, w.packets()), (0, 1, 3));
        let mut r = CaptureReader::new(File::open(&path).unwrap(), "c");
        let mut got = Vec::new();
        while let Next::Frame(f) = r.next_frame().unwrap() {
            got.push((f.ts, f.data.to_vec(), f.orig_len, f.link_type, f.interface));
        }
        assert_eq!(
            got,
            vec![
                (1_700_000_000_123_456_789, b"abcde".to_vec(), 1500, LinkType::ETHERNET, 0),
                (1_700_000_001_000_000_001, b"xyz".to_vec(), 3, LinkType::RAW, 1),
                (1_700_000_002_000_000_000, b"q".to_vec(), 1, LinkType::ETHERNET, 0),
            ]
        );
        let names: Vec<_> = r.interfaces().iter().map(|i| i.name.as_deref()).collect();
        assert_eq!(names, [Some("veth0"), Some("wg0")]);
    }

    /// Each part is a capture on its own: section header, the interfaces (same ids), and
    /// its packets; read in order, the parts give every packet once.
    #[test]
    fn rotated_parts_each_read_on_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("capture.pcapng");
        let rotation = RotationSettings { max_bytes: Some(4096), ..Default::default() };
        let mut w = PcapngWriter::create(&path, 256, OnFailure::Stop, rotation).unwrap();
        let veth = w.add_interface(LinkType::ETHERNET, "veth0").unwrap();
        let mut sent = Vec::new();
        for n in 0..100u32 {
            if n == 30 {
                assert_eq!(w.add_interface(LinkType::RAW, "wg0").unwrap(), 1);
            }
            let iface = if n >= 30 && n % 2 == 0 { 1 } else { veth };
            let data = vec![n as u8; 100];
            let ts = 1_700_000_000_000_000_000 + i64::from(n) * 1000;
            w.write_packet(iface, ts, &data, 100, None).unwrap();
            sent.push((ts, iface));
        }
        w.flush().unwrap();
        assert_eq!(w.packets(), 100);
        let parts = crate::output::rotation::parts_of(&path);
        assert!(parts.len() >= 3, "{parts:?}");
        let mut got = Vec::new();
        for p in &parts {
            assert!(std::fs::metadata(p).unwrap().len() <= 4096);
            let mut r = CaptureReader::new(File::open(p).unwrap(), "part");
            while let Next::Frame(f) = r.next_frame().unwrap() {
                assert_eq!(f.data.len(), 100);
                got.push((f.ts, f.interface));
            }
            assert_eq!(r.interfaces()[0].name.as_deref(), Some("veth0"));
        }
        assert_eq!(got, sent);
    }
}
