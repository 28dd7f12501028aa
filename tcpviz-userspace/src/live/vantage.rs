//! One vantage point per direction of a connection. With several interfaces watched, a
//! forwarded packet is seen where it enters the host and again where it leaves; on loopback
//! a packet leaves and comes back on the same interface. The copies after the first would
//! read as retransmissions, so each direction of a connection is analysed where it was
//! first seen (interface and TC direction), and its packets seen elsewhere are counted.

use std::net::IpAddr;

use rustc_hash::FxHashMap;

use crate::capture::segment::Segment;

type DirectionKey = (IpAddr, u16, IpAddr, u16);

/// Where each direction of each connection was first seen: (interface index, TC direction).
pub struct VantagePoints {
    first_seen: FxHashMap<DirectionKey, (u32, u8)>,
    capacity: usize,
    /// Packets seen again at another point, left out of the analysis.
    pub seen_again: u64,
}

impl VantagePoints {
    /// At most `capacity` directions are remembered. A full table starts again: every packet
    /// crosses the points of this host in the same order, so the point a direction is seen
    /// at first again is the one it had.
    pub fn new(capacity: usize) -> VantagePoints {
        VantagePoints { first_seen: FxHashMap::default(), capacity: capacity.max(1), seen_again: 0 }
    }

    /// The interface a connection was first seen on: that of its direction from `a`, else
    /// from `b`.
    pub fn interface_of(&self, a: (IpAddr, u16), b: (IpAddr, u16)) -> Option<u32> {
        let point = self.first_seen.get(&(a.0, a.1, b.0, b.1)).or_else(|| self.first_seen.get(&(b.0, b.1, a.0, a.1)));
        point.map(|&(ifindex, _)| ifindex)
    }

    /// Is this packet, seen on interface `ifindex` in TC direction `direction`, at its
    /// direction's vantage point? The first packet of a direction sets it.
    pub fn at_vantage(&mut self, seg: &Segment, ifindex: u32, direction: u8) -> bool {
        let key = (seg.src, seg.sport, seg.dst, seg.dport);
        if let Some(&point) = self.first_seen.get(&key) {
            if point == (ifindex, direction) {
                return true;
            }
            self.seen_again += 1;
            return false;
        }
        if self.first_seen.len() >= self.capacity {
            self.first_seen.clear();
        }
        self.first_seen.insert(key, (ifindex, direction));
        true
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn seg(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Segment {
        Segment {
            ts: 0,
            src: IpAddr::V4(Ipv4Addr::from(src)),
            dst: IpAddr::V4(Ipv4Addr::from(dst)),
            sport,
            dport,
            seq: 0,
            ack: 0,
            flags: Default::default(),
            window: 0,
            payload_len: 0,
            options: Default::default(),
            truncated: false,
        }
    }

    const INGRESS: u8 = 0;
    const EGRESS: u8 = 1;

    #[test]
    fn a_forwarded_packet_counts_where_it_entered() {
        let mut v = VantagePoints::new(16);
        let out = seg([10, 0, 0, 2], 40000, [192, 0, 2, 1], 443);
        let back = seg([192, 0, 2, 1], 443, [10, 0, 0, 2], 40000);
        // A container's packet enters on its veth (3) and leaves on eth0 (2).
        assert!(v.at_vantage(&out, 3, INGRESS));
        assert!(!v.at_vantage(&out, 2, EGRESS));
        // The answer enters on eth0 and leaves on the veth.
        assert!(v.at_vantage(&back, 2, INGRESS));
        assert!(!v.at_vantage(&back, 3, EGRESS));
        assert!(v.at_vantage(&out, 3, INGRESS));
        assert_eq!(v.seen_again, 2);
        // A connection is shown where the direction of the end named first came in.
        let (container, remote) = ((out.src, out.sport), (out.dst, out.dport));
        assert_eq!((v.interface_of(container, remote), v.interface_of(remote, container)), (Some(3), Some(2)));
        let unknown = (IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9)), 1);
        assert_eq!(v.interface_of(unknown, remote), None);
    }

    #[test]
    fn loopback_is_one_interface_seen_both_ways() {
        let mut v = VantagePoints::new(16);
        let p = seg([127, 0, 0, 1], 5000, [127, 0, 0, 1], 6000);
        assert!(v.at_vantage(&p, 1, EGRESS));
        assert!(!v.at_vantage(&p, 1, INGRESS));
        assert_eq!(v.seen_again, 1);
    }

    #[test]
    fn a_full_table_starts_again_with_the_same_points() {
        let mut v = VantagePoints::new(2);
        for port in 0..10u16 {
            let p = seg([10, 0, 0, 1], port, [10, 0, 0, 2], 80);
            assert!(v.at_vantage(&p, 3, INGRESS));
            assert!(!v.at_vantage(&p, 2, EGRESS));
        }
        assert!(v.first_seen.len() <= 2);
        assert_eq!(v.seen_again, 10);
    }
}
