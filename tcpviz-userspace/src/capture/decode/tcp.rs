//! The TCP header, parsed by hand so that a header whose options were not all captured
//! still yields its sequence numbers.

use std::net::IpAddr;

use super::{Frame, Segment, SkipReason, TcpFlags, TcpOptions, be32};

pub(super) fn decode_tcp(
    bytes: &[u8],
    reported_len: usize,
    src: IpAddr,
    dst: IpAddr,
    frame: &Frame<'_>,
) -> Result<Segment, SkipReason> {
    if bytes.len() < 20 {
        return Err(SkipReason::TruncatedHeader);
    }
    let header_len = ((bytes[12] >> 4) as usize) * 4;
    if header_len < 20 {
        return Err(SkipReason::Malformed);
    }
    if reported_len < header_len {
        return Err(SkipReason::ShortSegment);
    }
    let options_end = header_len.min(bytes.len());
    let options = parse_options(&bytes[20..options_end]);
    Ok(Segment {
        ts: frame.ts,
        src,
        dst,
        sport: u16::from_be_bytes([bytes[0], bytes[1]]),
        dport: u16::from_be_bytes([bytes[2], bytes[3]]),
        seq: be32(bytes, 4),
        ack: be32(bytes, 8),
        flags: TcpFlags(u16::from_be_bytes([bytes[12], bytes[13]]) & 0x01ff),
        window: u16::from_be_bytes([bytes[14], bytes[15]]),
        payload_len: (reported_len - header_len) as u32,
        options,
        truncated: frame.data.len() < frame.orig_len as usize,
    })
}

/// Parses the options that were captured; a cut-off option is ignored.
fn parse_options(mut opts: &[u8]) -> TcpOptions {
    let mut out = TcpOptions::default();
    while let Some(&kind) = opts.first() {
        match kind {
            0 => break,
            1 => {
                opts = &opts[1..];
                continue;
            }
            _ => {}
        }
        let Some(&len) = opts.get(1) else { break };
        let len = len as usize;
        if len < 2 || len > opts.len() {
            break;
        }
        let body = &opts[2..len];
        match (kind, body.len()) {
            (2, 2) => out.mss = Some(u16::from_be_bytes([body[0], body[1]])),
            (3, 1) => out.window_scale = Some(body[0].min(14)),
            (4, 0) => out.sack_permitted = true,
            (5, n) if n >= 8 => {
                for chunk in body.chunks_exact(8).take(4) {
                    let i = out.sack.len as usize;
                    out.sack.blocks[i] = (be32(chunk, 0), be32(chunk, 4));
                    out.sack.len += 1;
                }
            }
            (8, 8) => out.timestamp = Some((be32(body, 0), be32(body, 4))),
            _ => {}
        }
        opts = &opts[len..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_sack_option_is_ignored_but_blocks_are_read() {
        let opts = [1, 1, 5, 18, 0, 0, 0, 1, 0, 0, 0, 9, 0, 0, 0, 20, 0, 0, 0, 30, 5, 10, 0, 0];
        let o = parse_options(&opts);
        assert_eq!(o.sack.iter().collect::<Vec<_>>(), vec![(1, 9), (20, 30)]);
    }
}
