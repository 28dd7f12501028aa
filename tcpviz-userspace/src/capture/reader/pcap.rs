//! Legacy pcap records: a 16-byte header (24 in the modified format) and the packet.

use super::*;

impl<R: Read> CaptureReader<R> {
    pub(super) fn next_pcap(
        &mut self,
        big_endian: bool,
        nanosecond: bool,
        modified: bool,
    ) -> Result<Next<'_>, CaptureError> {
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
}

#[cfg(test)]
mod tests {
    use super::super::tests::{collect, pcap_header, pcap_record};
    use super::*;

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
}
