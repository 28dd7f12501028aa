//! `decode_frame`: the one place that parses packet headers.
//!
//! Link layers are unwrapped here (Ethernet with VLAN/QinQ, PPPoE session and MPLS, Linux
//! cooked SLL and SLL2, raw IP, BSD loopback/NULL), IP with etherparse's lax slicer (it
//! accepts packets cut short by a small snap length and IPv6 extension headers), and the
//! TCP header by hand, so that a header whose options were not all captured still yields
//! its sequence numbers. The segment length always comes from the IP length fields, never
//! from the captured bytes, so truncated captures are analysed like full ones.

use etherparse::IpNumber;

mod ip;
mod tcp;

use self::ip::{lax_ip, plain_ipv4};
use self::tcp::decode_tcp;
use super::frame::{Frame, LinkType};
pub use super::segment::{SackBlocks, Segment, SkipReason, TcpFlags, TcpOptions};
use super::wlan;

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const ETH_VLAN: u16 = 0x8100;
const ETH_QINQ: u16 = 0x88a8;
const ETH_QINQ_OLD1: u16 = 0x9100;
const ETH_QINQ_OLD2: u16 = 0x9200;
const ETH_PPPOE_SESSION: u16 = 0x8864;
const ETH_MPLS: u16 = 0x8847;
const ETH_MPLS_MC: u16 = 0x8848;
const ETH_TEB: u16 = 0x6558;
const ETH_ETHERNET_LEN: usize = 14;
const CAPWAP_DATA_PORT: u16 = 5247;
/// How many encapsulation layers are unwrapped before giving up.
const MAX_LAYERS: usize = 8;

/// Decodes one frame into a TCP segment, or says why not.
pub fn decode_frame(frame: &Frame<'_>) -> Result<Segment, SkipReason> {
    let data = frame.data;
    // Bytes of the packet that were not captured: added back to the IP lengths' view.
    let uncaptured = (frame.orig_len as usize).saturating_sub(data.len());
    let ip_start = match frame.link_type {
        LinkType::ETHERNET => return decode_ether(data, 0, frame, uncaptured, 0),
        LinkType::RAW | LinkType::RAW_BSD12 | LinkType::RAW_BSD14 | LinkType::IPV4 | LinkType::IPV6 => 0,
        LinkType::LINUX_SLL => {
            let proto = be16(data, 14).ok_or(SkipReason::TruncatedHeader)?;
            return decode_ethertype(proto, data, 16, frame, uncaptured, 0);
        }
        LinkType::LINUX_SLL2 => {
            let proto = be16(data, 0).ok_or(SkipReason::TruncatedHeader)?;
            return decode_ethertype(proto, data, 20, frame, uncaptured, 0);
        }
        LinkType::NULL | LinkType::LOOP => {
            if data.len() < 4 {
                return Err(SkipReason::TruncatedHeader);
            }
            // The family is in the byte order of the capturing host for NULL, network order
            // for LOOP; the values fit in one byte, so look at whichever end is non-zero.
            let fam = if data[0] == 0 && data[1] == 0 { data[3] } else { data[0] };
            match fam {
                2 | 24 | 28 | 30 => 4,
                _ => return Err(SkipReason::NotIp),
            }
        }
        LinkType::IEEE802_11 => {
            let inner = wlan::Inner { start: 0, trailer: 0, padded: false };
            return decode_ieee80211(data, inner, frame, uncaptured, 0);
        }
        LinkType::IEEE802_11_RADIOTAP => return decode_ieee80211(data, wlan::radiotap(data)?, frame, uncaptured, 0),
        LinkType::IEEE802_11_PRISM | LinkType::IEEE802_11_AVS => {
            let inner = wlan::Inner { start: wlan::prism_or_avs(data)?, trailer: 0, padded: false };
            return decode_ieee80211(data, inner, frame, uncaptured, 0);
        }
        LinkType::PPI => {
            return match wlan::ppi(data)? {
                (inner, 105) => decode_ieee80211(data, inner, frame, uncaptured, 0),
                (inner, 1) => decode_ether(data, inner.start, frame, uncaptured, 0),
                _ => Err(SkipReason::UnsupportedLinkType),
            };
        }
        _ => return Err(SkipReason::UnsupportedLinkType),
    };
    decode_ip(data, ip_start, frame, uncaptured, 0)
}

/// An 802.11 frame: its LLC/SNAP header names the protocol inside.
fn decode_ieee80211(
    mut data: &[u8],
    inner: wlan::Inner,
    frame: &Frame<'_>,
    mut uncaptured: usize,
    depth: usize,
) -> Result<Segment, SkipReason> {
    // A frame check sequence ends the frame; it may not have been captured.
    let captured_trailer = inner.trailer.saturating_sub(uncaptured);
    uncaptured -= inner.trailer - captured_trailer;
    data = &data[..data.len().saturating_sub(captured_trailer)];
    let llc = wlan::ieee80211_payload(data, inner.start, inner.padded)?;
    let (ethertype, at) = wlan::llc_snap(data, llc)?;
    decode_ethertype(ethertype, data, at, frame, uncaptured, depth)
}

fn be16(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*d.get(at)?, *d.get(at + 1)?]))
}

fn be32(d: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]])
}

fn decode_ether(
    data: &[u8],
    at: usize,
    frame: &Frame<'_>,
    uncaptured: usize,
    depth: usize,
) -> Result<Segment, SkipReason> {
    let ethertype = be16(data, at + 12).ok_or(SkipReason::TruncatedHeader)?;
    decode_ethertype(ethertype, data, at + ETH_ETHERNET_LEN, frame, uncaptured, depth)
}

fn decode_ethertype(
    mut ethertype: u16,
    mut data: &[u8],
    mut at: usize,
    frame: &Frame<'_>,
    mut uncaptured: usize,
    depth: usize,
) -> Result<Segment, SkipReason> {
    for _ in 0..MAX_LAYERS {
        match ethertype {
            ETH_IPV4 | ETH_IPV6 => return decode_ip(data, at, frame, uncaptured, depth),
            ETH_VLAN | ETH_QINQ | ETH_QINQ_OLD1 | ETH_QINQ_OLD2 => {
                ethertype = be16(data, at + 2).ok_or(SkipReason::TruncatedHeader)?;
                at += 4;
            }
            ETH_PPPOE_SESSION => {
                // 6-byte PPPoE header, then the 2-byte PPP protocol. The PPPoE length ends
                // the payload: what follows is Ethernet padding, even if the IP length field
                // claims it (Wireshark trusts the PPPoE length too).
                let ppp = be16(data, at + 6).ok_or(SkipReason::TruncatedHeader)?;
                let pppoe_len = be16(data, at + 4).ok_or(SkipReason::TruncatedHeader)? as usize;
                let end = at + 6 + pppoe_len;
                if end <= data.len() {
                    data = &data[..end];
                    uncaptured = 0;
                } else {
                    uncaptured = uncaptured.min(end - data.len());
                }
                at += 8;
                ethertype = match ppp {
                    0x0021 => ETH_IPV4,
                    0x0057 => ETH_IPV6,
                    _ => return Err(SkipReason::NotIp),
                };
            }
            ETH_MPLS | ETH_MPLS_MC => {
                // Label stack entries until the bottom-of-stack bit, then guess IPv4/IPv6
                // from the version nibble, as Wireshark does.
                loop {
                    let entry = data.get(at..at + 4).ok_or(SkipReason::TruncatedHeader)?;
                    at += 4;
                    if entry[2] & 1 == 1 {
                        break;
                    }
                }
                ethertype = match data.get(at).map(|b| b >> 4) {
                    Some(4) => ETH_IPV4,
                    Some(6) => ETH_IPV6,
                    Some(_) => return Err(SkipReason::NotIp),
                    None => return Err(SkipReason::TruncatedHeader),
                };
            }
            // Ethernet in Ethernet: bounded like every other layer, or a crafted frame of
            // nested headers would recurse as deep as it is long.
            ETH_TEB if depth < MAX_LAYERS => return decode_ether(data, at, frame, uncaptured, depth + 1),
            ETH_TEB => return Err(SkipReason::Malformed),
            _ => return Err(SkipReason::NotIp),
        }
    }
    Err(SkipReason::Malformed)
}

fn decode_ip(
    data: &[u8],
    at: usize,
    frame: &Frame<'_>,
    uncaptured: usize,
    depth: usize,
) -> Result<Segment, SkipReason> {
    let ip_bytes = data.get(at..).ok_or(SkipReason::TruncatedHeader)?;
    let ip = match plain_ipv4(ip_bytes, uncaptured) {
        Some(ip) => ip,
        None => lax_ip(ip_bytes, uncaptured)?,
    };
    match ip.protocol {
        IpNumber::TCP => {}
        IpNumber::IPV4 | IpNumber::IPV6 if depth < MAX_LAYERS => {
            return decode_ip(data, at + ip.payload_off, frame, uncaptured, depth + 1);
        }
        IpNumber::GRE if depth < MAX_LAYERS => {
            return decode_gre(data, at + ip.payload_off, frame, uncaptured, depth + 1);
        }
        IpNumber::UDP if depth < MAX_LAYERS => {
            return decode_udp_tunnel(data, at + ip.payload_off, frame, uncaptured, depth + 1);
        }
        _ => return Err(SkipReason::NotTcp),
    }
    decode_tcp(ip.payload, ip.reported_payload_len, ip.src, ip.dst, frame)
}

/// UDP tunnels Wireshark decodes by default, by destination port: VXLAN (4789), Geneve
/// (6081), GTP-U (2152); and CAPWAP data (5247, either way: controller to access point and
/// back). Anything else on UDP is not TCP.
fn decode_udp_tunnel(
    data: &[u8],
    at: usize,
    frame: &Frame<'_>,
    uncaptured: usize,
    depth: usize,
) -> Result<Segment, SkipReason> {
    let sport = be16(data, at).ok_or(SkipReason::NotTcp)?;
    let dport = be16(data, at + 2).ok_or(SkipReason::NotTcp)?;
    let inner = at + 8;
    if sport == CAPWAP_DATA_PORT || dport == CAPWAP_DATA_PORT {
        return match wlan::capwap_data(data, inner)? {
            wlan::CapwapPayload::Ieee80211(start) => {
                let inner = wlan::Inner { start, trailer: 0, padded: false };
                decode_ieee80211(data, inner, frame, uncaptured, depth)
            }
            wlan::CapwapPayload::Ethernet(start) => decode_ether(data, start, frame, uncaptured, depth),
        };
    }
    match dport {
        4789 => {
            // VXLAN: 8-byte header with the I flag, then Ethernet.
            if data.get(inner).is_none_or(|f| f & 0x08 == 0) {
                return Err(SkipReason::NotTcp);
            }
            decode_ether(data, inner + 8, frame, uncaptured, depth)
        }
        6081 => {
            // Geneve: 8 bytes plus options (length in 4-byte words), protocol type inside.
            let opt_words = (*data.get(inner).ok_or(SkipReason::TruncatedHeader)? & 0x3f) as usize;
            let proto = be16(data, inner + 2).ok_or(SkipReason::TruncatedHeader)?;
            decode_ethertype(proto, data, inner + 8 + opt_words * 4, frame, uncaptured, depth)
        }
        2152 => {
            // GTP-U version 1, G-PDU (type 255): 8 bytes, 4 more when E, S or PN is set.
            let flags = *data.get(inner).ok_or(SkipReason::TruncatedHeader)?;
            let msg = *data.get(inner + 1).ok_or(SkipReason::TruncatedHeader)?;
            if flags >> 5 != 1 || msg != 255 {
                return Err(SkipReason::NotTcp);
            }
            let mut off = inner + 8;
            if flags & 0x07 != 0 {
                off += 4;
                // Extension headers: length in 4-byte units, next type in the last byte.
                let mut next = *data.get(off - 1).ok_or(SkipReason::TruncatedHeader)?;
                while next != 0 {
                    let words = *data.get(off).ok_or(SkipReason::TruncatedHeader)? as usize;
                    if words == 0 {
                        return Err(SkipReason::Malformed);
                    }
                    off += words * 4;
                    next = *data.get(off - 1).ok_or(SkipReason::TruncatedHeader)?;
                }
            }
            decode_ip(data, off, frame, uncaptured, depth)
        }
        _ => Err(SkipReason::NotTcp),
    }
}

fn decode_gre(
    data: &[u8],
    at: usize,
    frame: &Frame<'_>,
    uncaptured: usize,
    depth: usize,
) -> Result<Segment, SkipReason> {
    let flags = be16(data, at).ok_or(SkipReason::TruncatedHeader)?;
    let proto = be16(data, at + 2).ok_or(SkipReason::TruncatedHeader)?;
    if flags & 0x0007 != 0 {
        // GRE versions other than 0 (PPTP's enhanced GRE) carry PPP, not IP.
        return Err(SkipReason::NotTcp);
    }
    let mut len = 4;
    for bit in [0x8000u16, 0x2000, 0x1000] {
        // checksum(+reserved), key, sequence number: 4 bytes each when present.
        if flags & bit != 0 {
            len += 4;
        }
    }
    match proto {
        // ERSPAN type II (8-byte header) and III (12, plus 8 with the platform flag), then
        // the mirrored Ethernet frame.
        0x88be => decode_ether(data, at + len + 8, frame, uncaptured, depth),
        0x22eb => {
            let o = *data.get(at + len + 11).ok_or(SkipReason::TruncatedHeader)?;
            decode_ether(data, at + len + 12 + if o & 1 != 0 { 8 } else { 0 }, frame, uncaptured, depth)
        }
        // An Aruba WLAN controller tunnels each 802.11 frame as it is.
        p if wlan::is_aruba_gre(p) => {
            let inner = wlan::Inner { start: at + len, trailer: 0, padded: false };
            decode_ieee80211(data, inner, frame, uncaptured, depth)
        }
        _ => decode_ethertype(proto, data, at + len, frame, uncaptured, depth),
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    /// Seen in the fuzzing review: Ethernet-in-Ethernet (0x6558) was unwrapped without the
    /// layer bound, so a 256 KiB frame of nested headers recursed about 18,000 deep.
    #[test]
    fn nested_ethernet_is_bounded() {
        let mut data = Vec::new();
        for _ in 0..20_000 {
            data.extend_from_slice(&[0; 12]);
            data.extend_from_slice(&ETH_TEB.to_be_bytes());
        }
        assert_eq!(decode_frame(&frame(LinkType::ETHERNET, &data, data.len() as u32)), Err(SkipReason::Malformed));
    }

    use etherparse::PacketBuilder;

    fn frame(link: LinkType, data: &[u8], orig_len: u32) -> Frame<'_> {
        Frame { ts: 7, link_type: link, data, orig_len, interface: 0, number: 1, direction: None }
    }

    fn tcp_packet_v4(payload: &[u8]) -> Vec<u8> {
        let builder = PacketBuilder::ethernet2([1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(40000, 80, 1000, 64240)
            .syn()
            .ack(55)
            .options(&[
                etherparse::TcpOptionElement::MaximumSegmentSize(1460),
                etherparse::TcpOptionElement::WindowScale(7),
                etherparse::TcpOptionElement::SelectiveAcknowledgementPermitted,
                etherparse::TcpOptionElement::Timestamp(11, 22),
            ])
            .unwrap();
        let mut out = Vec::new();
        builder.write(&mut out, payload).unwrap();
        out
    }

    #[test]
    fn ethernet_ipv4_tcp_with_options() {
        let pkt = tcp_packet_v4(b"hello");
        let seg = decode_frame(&frame(LinkType::ETHERNET, &pkt, pkt.len() as u32)).unwrap();
        assert_eq!(seg.src, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!((seg.sport, seg.dport, seg.seq, seg.ack), (40000, 80, 1000, 55));
        assert_eq!(seg.flags.letters(), "SA");
        assert_eq!(seg.payload_len, 5);
        assert_eq!(seg.options.mss, Some(1460));
        assert_eq!(seg.options.window_scale, Some(7));
        assert!(seg.options.sack_permitted);
        assert_eq!(seg.options.timestamp, Some((11, 22)));
        assert!(!seg.truncated);
    }

    #[test]
    fn truncated_capture_uses_ip_length() {
        let pkt = tcp_packet_v4(&[0u8; 1000]);
        // Cut inside the TCP options, as a 68-byte snap length would.
        let snap = &pkt[..60];
        let seg = decode_frame(&frame(LinkType::ETHERNET, snap, pkt.len() as u32)).unwrap();
        assert_eq!(seg.payload_len, 1000);
        assert!(seg.truncated);
        // Cut inside the fixed TCP header: nothing to analyse.
        let snap = &pkt[..40];
        assert_eq!(decode_frame(&frame(LinkType::ETHERNET, snap, pkt.len() as u32)), Err(SkipReason::TruncatedHeader));
    }

    #[test]
    fn vlan_qinq_and_pppoe_are_unwrapped() {
        let pkt = tcp_packet_v4(b"x");
        let ip = &pkt[14..];
        // QinQ: 88a8 tag, 8100 tag, then IPv4.
        let mut q = pkt[..12].to_vec();
        q.extend_from_slice(&[0x88, 0xa8, 0, 10, 0x81, 0x00, 0, 20, 0x08, 0x00]);
        q.extend_from_slice(ip);
        let seg = decode_frame(&frame(LinkType::ETHERNET, &q, q.len() as u32)).unwrap();
        assert_eq!(seg.payload_len, 1);
        // PPPoE session inside a VLAN tag.
        let mut p = pkt[..12].to_vec();
        p.extend_from_slice(&[0x81, 0x00, 0, 5, 0x88, 0x64, 0x11, 0x00, 0x00, 0x01]);
        p.extend_from_slice(&((ip.len() + 2) as u16).to_be_bytes());
        p.extend_from_slice(&[0x00, 0x21]);
        p.extend_from_slice(ip);
        let seg = decode_frame(&frame(LinkType::ETHERNET, &p, p.len() as u32)).unwrap();
        assert_eq!(seg.dport, 80);
    }

    #[test]
    fn cooked_loopback_and_raw_link_types() {
        let pkt = tcp_packet_v4(b"abc");
        let ip = &pkt[14..];
        let mut sll = vec![0u8; 14];
        sll.extend_from_slice(&[0x08, 0x00]);
        sll.extend_from_slice(ip);
        assert_eq!(decode_frame(&frame(LinkType::LINUX_SLL, &sll, sll.len() as u32)).unwrap().payload_len, 3);
        let mut sll2 = vec![0x08, 0x00];
        sll2.extend_from_slice(&[0u8; 18]);
        sll2.extend_from_slice(ip);
        assert_eq!(decode_frame(&frame(LinkType::LINUX_SLL2, &sll2, sll2.len() as u32)).unwrap().payload_len, 3);
        let mut null = 2u32.to_le_bytes().to_vec();
        null.extend_from_slice(ip);
        assert_eq!(decode_frame(&frame(LinkType::NULL, &null, null.len() as u32)).unwrap().payload_len, 3);
        let mut lo = 30u32.to_be_bytes().to_vec();
        lo.extend_from_slice(ip);
        // Family 30 (IPv6 on some BSDs) but an IPv4 packet: the IP version nibble decides.
        assert!(decode_frame(&frame(LinkType::LOOP, &lo, lo.len() as u32)).is_ok());
        assert_eq!(decode_frame(&frame(LinkType::RAW, ip, ip.len() as u32)).unwrap().sport, 40000);
        assert_eq!(decode_frame(&frame(LinkType(147), ip, ip.len() as u32)), Err(SkipReason::UnsupportedLinkType));
    }

    #[test]
    fn ipv6_with_extension_header() {
        let builder = PacketBuilder::ipv6([0xfd; 16], [0xfe; 16], 64).tcp(1, 2, 3, 4).ack(9);
        let mut plain = Vec::new();
        builder.write(&mut plain, b"data").unwrap();
        // Insert an 8-byte hop-by-hop header between IPv6 and TCP.
        let mut v6 = plain[..40].to_vec();
        v6[6] = 0; // next header: hop-by-hop
        let plen = u16::from_be_bytes([v6[4], v6[5]]) + 8;
        v6[4..6].copy_from_slice(&plen.to_be_bytes());
        v6.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]);
        v6.extend_from_slice(&plain[40..]);
        let seg = decode_frame(&frame(LinkType::IPV6, &v6, v6.len() as u32)).unwrap();
        assert_eq!((seg.payload_len, seg.ack), (4, 9));
        assert!(seg.src.is_ipv6());
    }

    #[test]
    fn non_tcp_and_garbage_are_counted_not_panicking() {
        let builder = PacketBuilder::ethernet2([0; 6], [0; 6]).ipv4([1, 1, 1, 1], [2, 2, 2, 2], 1).udp(1, 2);
        let mut udp = Vec::new();
        builder.write(&mut udp, b"x").unwrap();
        assert_eq!(decode_frame(&frame(LinkType::ETHERNET, &udp, udp.len() as u32)), Err(SkipReason::NotTcp));
        let arp = [0u8; 12].iter().copied().chain([0x08, 0x06]).chain([0; 28]).collect::<Vec<_>>();
        assert_eq!(decode_frame(&frame(LinkType::ETHERNET, &arp, 42)), Err(SkipReason::NotIp));
        for len in 0..80 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            for lt in [LinkType::ETHERNET, LinkType::RAW, LinkType::LINUX_SLL, LinkType::LINUX_SLL2, LinkType::NULL] {
                let _ = decode_frame(&frame(lt, &junk, 1500));
            }
        }
    }

    #[test]
    fn tunnels_vxlan_gtp_and_erspan_reach_the_inner_tcp() {
        let inner = tcp_packet_v4(b"inner!");
        let udp = |dport: u16, header: &[u8], payload: &[u8]| {
            let builder =
                PacketBuilder::ethernet2([0; 6], [0; 6]).ipv4([9, 9, 9, 9], [8, 8, 8, 8], 64).udp(5555, dport);
            let mut body = header.to_vec();
            body.extend_from_slice(payload);
            let mut out = Vec::new();
            builder.write(&mut out, &body).unwrap();
            out
        };
        let vx = udp(4789, &[0x08, 0, 0, 0, 0, 0, 1, 0], &inner);
        let seg = decode_frame(&frame(LinkType::ETHERNET, &vx, vx.len() as u32)).unwrap();
        assert_eq!((seg.src, seg.payload_len), ("10.0.0.1".parse().unwrap(), 6));
        let gtp = udp(2152, &[0x30, 0xff, 0, 0, 0, 0, 0, 1], &inner[14..]);
        assert_eq!(decode_frame(&frame(LinkType::ETHERNET, &gtp, gtp.len() as u32)).unwrap().sport, 40000);
        let dns = udp(53, &[0; 8], b"not a tunnel");
        assert_eq!(decode_frame(&frame(LinkType::ETHERNET, &dns, dns.len() as u32)), Err(SkipReason::NotTcp));
        // ERSPAN II: GRE with the sequence flag, protocol 0x88be, 8-byte ERSPAN header.
        let mut gre = vec![0x10, 0x00, 0x88, 0xbe, 0, 0, 0, 1];
        gre.extend_from_slice(&[0x10, 0, 0, 1, 0, 0, 0, 0]);
        gre.extend_from_slice(&inner);
        let outer = PacketBuilder::ethernet2([0; 6], [0; 6]).ipv4([1, 1, 1, 1], [2, 2, 2, 2], 64);
        let mut pkt = Vec::new();
        outer.write(&mut pkt, etherparse::IpNumber::GRE, &gre).unwrap();
        assert_eq!(decode_frame(&frame(LinkType::ETHERNET, &pkt, pkt.len() as u32)).unwrap().payload_len, 6);
    }

    #[test]
    fn tso_zero_total_length_falls_back_to_frame_length() {
        let mut pkt = tcp_packet_v4(&[1u8; 100]);
        pkt[16] = 0;
        pkt[17] = 0;
        let seg = decode_frame(&frame(LinkType::ETHERNET, &pkt, pkt.len() as u32)).unwrap();
        assert_eq!(seg.payload_len, 100);
    }
}
