//! pcapng blocks: section headers (each may switch byte order), interface descriptions
//! (link type, timestamp resolution and offset) and the packet blocks.

use super::*;

impl<R: Read> CaptureReader<R> {
    pub(super) fn next_pcapng(&mut self) -> Result<Next<'_>, CaptureError> {
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

/// Length of a pcapng section header from its first bytes: its byte order is that of the
/// byte-order magic at bytes 8..12; with fewer bytes, the one reading that is a plausible
/// length.
pub(super) fn section_header_len(head: &[u8]) -> Option<usize> {
    let len = head.get(4..8)?;
    let big_endian = match head.get(8..12).map(|b| read_u32(b, false)) {
        Some(PCAPNG_BOM) => false,
        Some(0x4d3c_2b1a) => true,
        Some(_) => return None,
        None => {
            let plausible = |l: u32| (28..=MAX_BLOCK_LEN).contains(&l) && l.is_multiple_of(4);
            match (plausible(read_u32(len, false)), plausible(read_u32(len, true))) {
                (true, false) => false,
                (false, true) => true,
                _ => return None,
            }
        }
    };
    Some(read_u32(len, big_endian) as usize)
}

pub(super) fn block_name(block_type: u32) -> String {
    match block_type {
        PCAPNG_IDB => "interface description block".into(),
        0x0000_0004 => "name resolution block".into(),
        0x0000_0005 => "interface statistics block".into(),
        0x0000_000a => "decryption secrets block".into(),
        0x0000_0bad | 0x4000_0bad => "custom block".into(),
        t => format!("block of type {t:#x}"),
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

#[cfg(test)]
mod tests {
    use super::super::tests::{collect, epb, idb, shb};
    use super::*;

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
}
