//! The canonical key of a connection: both directions map to the same key.

use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    lo: (IpAddr, u16),
    hi: (IpAddr, u16),
}

impl FlowKey {
    /// The key of the connection `src:sport <-> dst:dport`, whichever way the packet goes.
    pub fn new(src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> FlowKey {
        let a = (src, sport);
        let b = (dst, dport);
        if a <= b { FlowKey { lo: a, hi: b } } else { FlowKey { lo: b, hi: a } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_directions_share_a_key() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(FlowKey::new(a, 1000, b, 80), FlowKey::new(b, 80, a, 1000));
        assert_ne!(FlowKey::new(a, 1000, b, 80), FlowKey::new(a, 1001, b, 80));
        // Same address both ways (loopback): the ports tell the directions apart.
        assert_eq!(FlowKey::new(a, 1, a, 2), FlowKey::new(a, 2, a, 1));
    }
}
