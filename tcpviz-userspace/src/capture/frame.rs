//! The unit every source produces: one captured packet, as bytes plus metadata.

/// Nanoseconds since the Unix epoch. Event time everywhere in the analysis.
pub type TimestampNs = i64;

pub const NS_PER_SEC: i64 = 1_000_000_000;

/// Seconds since the epoch as a float, the `ts` of the JSON events.
pub fn ts_to_secs(ts: TimestampNs) -> f64 {
    ts.div_euclid(NS_PER_SEC) as f64 + ts.rem_euclid(NS_PER_SEC) as f64 / NS_PER_SEC as f64
}

/// A LINKTYPE_* value as stored in pcap and pcapng files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinkType(pub u32);

impl LinkType {
    pub const NULL: LinkType = LinkType(0);
    pub const ETHERNET: LinkType = LinkType(1);
    /// DLT_RAW as written by some BSDs.
    pub const RAW_BSD12: LinkType = LinkType(12);
    pub const RAW_BSD14: LinkType = LinkType(14);
    pub const RAW: LinkType = LinkType(101);
    pub const LOOP: LinkType = LinkType(108);
    pub const LINUX_SLL: LinkType = LinkType(113);
    pub const IPV4: LinkType = LinkType(228);
    pub const IPV6: LinkType = LinkType(229);
    pub const LINUX_SLL2: LinkType = LinkType(276);

    pub fn name(self) -> &'static str {
        match self {
            Self::NULL => "null",
            Self::ETHERNET => "ethernet",
            Self::RAW | Self::RAW_BSD12 | Self::RAW_BSD14 => "raw",
            Self::LOOP => "loop",
            Self::LINUX_SLL => "linux-sll",
            Self::IPV4 => "ipv4",
            Self::IPV6 => "ipv6",
            Self::LINUX_SLL2 => "linux-sll2",
            _ => "other",
        }
    }
}

/// Direction of a packet relative to the capturing host, when the source knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

/// One captured packet. `data` may be shorter than `orig_len` (snap length).
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub ts: TimestampNs,
    pub link_type: LinkType,
    pub data: &'a [u8],
    pub orig_len: u32,
    /// Index of the capture interface, unique across the sections of one file.
    pub interface: u32,
    /// 1-based packet number within its file, counted as tshark counts frames.
    pub number: u64,
    pub direction: Option<Direction>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_conversion_handles_negative_and_fraction() {
        assert_eq!(ts_to_secs(1_500_000_000), 1.5);
        assert_eq!(ts_to_secs(-500_000_000), -0.5);
        let t = 1_700_000_000_123_456_789;
        assert!((ts_to_secs(t) - 1_700_000_000.123_456_7).abs() < 1e-6);
    }
}
