//! The unit every source produces: one captured packet, as bytes plus metadata.

use crate::time::TimestampNs;

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
    pub const IEEE802_11: LinkType = LinkType(105);
    pub const IEEE802_11_PRISM: LinkType = LinkType(119);
    pub const IEEE802_11_RADIOTAP: LinkType = LinkType(127);
    pub const IEEE802_11_AVS: LinkType = LinkType(163);
    pub const PPI: LinkType = LinkType(192);
    pub const IPV4: LinkType = LinkType(228);
    pub const IPV6: LinkType = LinkType(229);
    pub const LINUX_SLL2: LinkType = LinkType(276);
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
