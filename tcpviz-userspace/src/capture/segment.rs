//! What `decode_frame` makes of a frame: a TCP [`Segment`] with its flags and options, or
//! the [`SkipReason`] it was not one.

use std::net::IpAddr;

use crate::time::TimestampNs;

/// TCP header flags (the low 9 bits of the offset/flags word, as Wireshark keeps them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct TcpFlags(pub u16);

impl TcpFlags {
    pub const FIN: u16 = 0x001;
    pub const SYN: u16 = 0x002;
    pub const RST: u16 = 0x004;
    pub const PSH: u16 = 0x008;
    pub const ACK: u16 = 0x010;
    pub const URG: u16 = 0x020;
    pub const ECE: u16 = 0x040;
    pub const CWR: u16 = 0x080;
    pub const AE: u16 = 0x100;

    pub fn has(self, bits: u16) -> bool {
        self.0 & bits != 0
    }
    pub fn syn(self) -> bool {
        self.has(Self::SYN)
    }
    pub fn ack(self) -> bool {
        self.has(Self::ACK)
    }
    pub fn fin(self) -> bool {
        self.has(Self::FIN)
    }
    pub fn rst(self) -> bool {
        self.has(Self::RST)
    }

    /// Compact letters in a fixed order: `S`YN, `F`IN, `R`ST, `P`SH, `A`CK, `U`RG, `E`CE,
    /// `C`WR, `N` (AE, ex-NS). A pure ACK is `"A"`, a SYN-ACK `"SA"`.
    pub fn letters(self) -> String {
        const ORDER: [(u16, char); 9] = [
            (TcpFlags::SYN, 'S'),
            (TcpFlags::FIN, 'F'),
            (TcpFlags::RST, 'R'),
            (TcpFlags::PSH, 'P'),
            (TcpFlags::ACK, 'A'),
            (TcpFlags::URG, 'U'),
            (TcpFlags::ECE, 'E'),
            (TcpFlags::CWR, 'C'),
            (TcpFlags::AE, 'N'),
        ];
        ORDER.iter().filter(|(b, _)| self.has(*b)).map(|(_, c)| *c).collect()
    }
}

/// Up to four SACK blocks, as (left edge, right edge).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SackBlocks {
    pub len: u8,
    pub blocks: [(u32, u32); 4],
}

impl SackBlocks {
    pub fn iter(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.blocks[..self.len as usize].iter().copied()
    }
}

/// The TCP options the analysis uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpOptions {
    pub mss: Option<u16>,
    /// Window scale shift, capped at 14 as RFC 7323 says.
    pub window_scale: Option<u8>,
    pub sack_permitted: bool,
    pub sack: SackBlocks,
    pub timestamp: Option<(u32, u32)>,
}

/// One TCP segment, the input of the flow analysis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub ts: TimestampNs,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: TcpFlags,
    /// Raw (unscaled) window field.
    pub window: u16,
    /// TCP payload bytes, from the IP length fields (not from what was captured).
    pub payload_len: u32,
    pub options: TcpOptions,
    /// True when the frame was captured shorter than the packet.
    pub truncated: bool,
}

/// Why a frame yielded no TCP segment. Each is counted.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    strum::VariantArray,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum SkipReason {
    /// A link layer tcpviz does not decode.
    UnsupportedLinkType,
    /// Not IP (ARP, LLDP, STP, ...).
    NotIp,
    /// IP, but not TCP (UDP, ICMP, ...).
    NotTcp,
    /// A non-first IP fragment, or a fragmented TCP segment (its length is unknown).
    IpFragment,
    /// Too few bytes captured to read the IP or TCP header.
    TruncatedHeader,
    /// Header fields that contradict each other (bad lengths, bad versions).
    Malformed,
    /// The IP length says the segment is shorter than its own TCP header.
    ShortSegment,
    /// A protected (encrypted) 802.11 frame, or an encrypted CAPWAP packet.
    Encrypted,
    /// A link-layer fragment (802.11, CAPWAP): tcpviz does not reassemble them.
    LinkFragment,
}

impl SkipReason {
    /// Every reason, in the order of the declaration (`reason as usize` indexes counters).
    pub const ALL: &'static [SkipReason] = <SkipReason as strum::VariantArray>::VARIANTS;
    pub const COUNT: usize = Self::ALL.len();

    /// The name in summaries and the benchmark log (serde's and strum's agree; a test checks).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_reason_names_are_serdes_and_position_indexes() {
        for (i, r) in SkipReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
            assert_eq!(serde_json::to_string(r).unwrap(), format!("\"{}\"", r.as_str()));
        }
    }
}
