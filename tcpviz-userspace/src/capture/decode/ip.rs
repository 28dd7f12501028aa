//! The IP layer of a frame: where its payload is, what the header says of its length, and
//! the protocol it carries.

use std::net::IpAddr;

use etherparse::{IpNumber, LaxIpSlice, LenSource};

use super::SkipReason;

/// An IP packet's payload and what the layer above needs of its header.
#[derive(Debug, PartialEq)]
pub(super) struct IpPayload<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: IpNumber,
    /// Where the payload starts, from the start of the IP header.
    pub payload_off: usize,
    /// The captured bytes of the payload.
    pub payload: &'a [u8],
    /// Length of the payload as the IP header states it (Wireshark's "reported length").
    pub reported_payload_len: usize,
}

/// The common case, parsed here: an unfragmented IPv4 packet whose header was captured
/// whole and whose total length covers its header. Anything else (`None`) goes to
/// etherparse's slicer, which gives the same answer on these packets; its result, moved
/// through the stack, was an eighth of the decoding time.
#[inline]
pub(super) fn plain_ipv4(ip: &[u8], uncaptured: usize) -> Option<IpPayload<'_>> {
    let fixed: &[u8; 20] = ip.get(..20)?.try_into().ok()?;
    if fixed[0] >> 4 != 4 {
        return None;
    }
    let header_len = (fixed[0] & 0x0f) as usize * 4;
    let total_len = u16::from_be_bytes([fixed[2], fixed[3]]) as usize;
    let fragmented = u16::from_be_bytes([fixed[6], fixed[7]]) & 0x3fff != 0;
    if header_len < 20 || ip.len() < header_len || total_len < header_len || fragmented {
        return None;
    }
    let (payload, reported_payload_len) = match ip.get(header_len..total_len) {
        Some(whole) => (whole, whole.len()),
        // Cut short: the length field is right, but the packet cannot extend past the
        // original frame (a length field larger than the frame is bogus, and Wireshark then
        // trusts the frame, as we do).
        None => (&ip[header_len..], total_len.min(ip.len() + uncaptured) - header_len),
    };
    let addr = |at: usize| IpAddr::from([fixed[at], fixed[at + 1], fixed[at + 2], fixed[at + 3]]);
    Some(IpPayload {
        src: addr(12),
        dst: addr(16),
        protocol: IpNumber(fixed[9]),
        payload_off: header_len,
        payload,
        reported_payload_len,
    })
}

/// Any IP packet, through etherparse's lax slicer (IPv6 and its extension headers,
/// fragments, length fields unset or bogus).
pub(super) fn lax_ip(ip_bytes: &[u8], uncaptured: usize) -> Result<IpPayload<'_>, SkipReason> {
    let (ip, _ext_err) = match LaxIpSlice::from_slice(ip_bytes) {
        Ok(v) => v,
        Err(etherparse::err::ip::LaxHeaderSliceError::Len(_)) => return Err(SkipReason::TruncatedHeader),
        Err(etherparse::err::ip::LaxHeaderSliceError::Content(_)) => {
            return Err(if ip_bytes.first().is_some_and(|b| b >> 4 != 4 && b >> 4 != 6) {
                SkipReason::NotIp
            } else {
                SkipReason::Malformed
            });
        }
    };
    let payload = ip.payload();
    if payload.fragmented {
        return Err(SkipReason::IpFragment);
    }
    let payload_off = payload.payload.as_ptr() as usize - ip_bytes.as_ptr() as usize;
    let reported_payload_len = match (payload.len_source, payload.incomplete) {
        // Cut short: as in `plain_ipv4`.
        (_, true) => {
            let declared_ip_len = match &ip {
                LaxIpSlice::Ipv4(v4) => v4.header().total_len() as usize,
                LaxIpSlice::Ipv6(v6) => 40 + v6.header().payload_length() as usize,
            };
            declared_ip_len.min(ip_bytes.len() + uncaptured).saturating_sub(payload_off)
        }
        // The length field was unset (0, as with TSO captures) or too small: use the
        // packet's original length.
        (LenSource::Slice, false) => payload.payload.len() + uncaptured,
        _ => payload.payload.len(),
    };
    Ok(IpPayload {
        src: ip.source_addr(),
        dst: ip.destination_addr(),
        protocol: payload.ip_number,
        payload_off,
        payload: payload.payload,
        reported_payload_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The IPv4 fast path answers exactly as etherparse's slicer on every packet it takes:
    /// header lengths, options, total lengths below, at and past the captured bytes, zero,
    /// fragment bits, headers cut short, and uncaptured tails.
    #[test]
    fn plain_ipv4_agrees_with_the_lax_slicer() {
        let mut taken = 0;
        for header_words in [5u8, 6, 15] {
            let header_len = header_words as usize * 4;
            for total_len in [0, 19, 20, header_len - 1, header_len, header_len + 1, header_len + 30, 1500] {
                for frag in [0u16, 0x4000, 0x2000, 0x0001, 0x6001] {
                    for protocol in [6u8, 17, 4, 41] {
                        let mut pkt = vec![0u8; header_len + 40];
                        pkt[0] = 0x40 | header_words;
                        pkt[2..4].copy_from_slice(&(total_len as u16).to_be_bytes());
                        pkt[6..8].copy_from_slice(&frag.to_be_bytes());
                        (pkt[8], pkt[9]) = (64, protocol);
                        pkt[12..20].copy_from_slice(&[10, 0, 0, 1, 192, 168, 7, 9]);
                        for cut in [12, 20, header_len - 1, header_len, header_len + 10, pkt.len()] {
                            for uncaptured in [0, 7, 2000] {
                                let bytes = &pkt[..cut.min(pkt.len())];
                                if let Some(fast) = plain_ipv4(bytes, uncaptured) {
                                    taken += 1;
                                    assert_eq!(
                                        Ok(fast),
                                        lax_ip(bytes, uncaptured),
                                        "header {header_len} total {total_len} frag {frag:#x} cut {cut} uncaptured {uncaptured}"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
        assert!(taken > 500, "the fast path took only {taken} packets");
    }
}
