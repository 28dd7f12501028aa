//! The canonical key of a connection: both directions map to the same key.
//!
//! Addresses are packed into integers: the table hashes and compares a key per packet, and
//! integers hash and compare faster than `IpAddr`s (an enum, hashed byte by byte).

use std::hash::{Hash, Hasher};
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FlowKey {
    /// Addresses as 32-bit words: a `u128` would align the key, and the table's slots, to
    /// 16 bytes.
    lo: [u32; 4],
    hi: [u32; 4],
    /// `lo`'s port in the high half, `hi`'s in the low half.
    ports: u32,
    /// IPv6 (an IPv4 address and its IPv4-mapped IPv6 form are different endpoints).
    v6: bool,
}

#[inline]
fn pack(ip: IpAddr) -> ([u32; 4], bool) {
    match ip {
        IpAddr::V4(a) => ([0, 0, 0, u32::from(a)], false),
        IpAddr::V6(a) => {
            let x = u128::from(a);
            ([(x >> 96) as u32, (x >> 64) as u32, (x >> 32) as u32, x as u32], true)
        }
    }
}

impl FlowKey {
    /// The key of the connection `src:sport <-> dst:dport`, whichever way the packet goes.
    #[inline]
    pub fn new(src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> FlowKey {
        let ((a, a6), (b, b6)) = (pack(src), pack(dst));
        // A packet between an IPv4 and an IPv6 address does not decode; if one did, its
        // key would still be the same both ways.
        let v6 = a6 | b6;
        if (a, sport) <= (b, dport) {
            FlowKey { lo: a, hi: b, ports: (sport as u32) << 16 | dport as u32, v6 }
        } else {
            FlowKey { lo: b, hi: a, ports: (dport as u32) << 16 | sport as u32, v6 }
        }
    }
}

/// Five words, not the derived hash's byte slices with their length prefixes: the key is
/// hashed in registers as it is made, once per packet.
impl Hash for FlowKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        let words = |a: &[u32; 4]| ((a[0] as u64) << 32 | a[1] as u64, (a[2] as u64) << 32 | a[3] as u64);
        let (lo, hi) = (words(&self.lo), words(&self.hi));
        state.write_u64(lo.0);
        state.write_u64(lo.1);
        state.write_u64(hi.0);
        state.write_u64(hi.1);
        state.write_u64((self.ports as u64) << 1 | self.v6 as u64);
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
        // An IPv4 address and its IPv4-mapped IPv6 form are different endpoints.
        let (m, n): (IpAddr, IpAddr) = ("::ffff:10.0.0.1".parse().unwrap(), "::ffff:10.0.0.2".parse().unwrap());
        assert_ne!(FlowKey::new(a, 1000, b, 80), FlowKey::new(m, 1000, n, 80));
    }
}
