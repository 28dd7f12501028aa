//! `decode_frame` on any bytes under every link type it knows: never a panic, the same
//! answer twice, and a segment that agrees with the frame it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tcpviz::capture::{Frame, LinkType, decode_frame};

const LINK_TYPES: [LinkType; 16] = [
    LinkType::ETHERNET,
    LinkType::RAW,
    LinkType::RAW_BSD12,
    LinkType::RAW_BSD14,
    LinkType::IPV4,
    LinkType::IPV6,
    LinkType::LINUX_SLL,
    LinkType::LINUX_SLL2,
    LinkType::NULL,
    LinkType::LOOP,
    LinkType::IEEE802_11,
    LinkType::IEEE802_11_RADIOTAP,
    LinkType::IEEE802_11_PRISM,
    LinkType::IEEE802_11_AVS,
    LinkType::PPI,
    LinkType(147),
];

// Input: link-type selector (1 byte), bytes not captured (2 bytes, big-endian), the frame.
fuzz_target!(|input: &[u8]| {
    let [selector, un_hi, un_lo, data @ ..] = input else { return };
    let link_type = LINK_TYPES[*selector as usize % LINK_TYPES.len()];
    let uncaptured = u16::from_be_bytes([*un_hi, *un_lo]) as u32;
    let frame = Frame {
        ts: 1_700_000_000_123_456_789,
        link_type,
        data,
        orig_len: data.len() as u32 + uncaptured,
        interface: 0,
        number: 1,
        direction: None,
    };
    let first = decode_frame(&frame);
    assert_eq!(first, decode_frame(&frame), "decoding is not deterministic");
    if let Ok(seg) = first {
        assert_eq!(seg.ts, frame.ts);
        // The segment cannot be longer than the packet that carried it.
        assert!(seg.payload_len <= frame.orig_len, "payload {} > packet {}", seg.payload_len, frame.orig_len);
    }
});
