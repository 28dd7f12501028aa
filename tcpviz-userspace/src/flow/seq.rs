//! Wrap-safe comparison of 32-bit TCP sequence numbers (RFC 1982 serial arithmetic, as
//! RFC 7323 uses it): `a` is before `b` when `b - a` is less than 2^31 modulo 2^32.

#[inline]
pub fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

#[inline]
pub fn seq_le(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) <= 0
}

#[inline]
pub fn seq_gt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparisons_survive_wrap() {
        assert!(seq_lt(1, 2));
        assert!(seq_lt(u32::MAX - 10, 5));
        assert!(seq_gt(5, u32::MAX - 10));
        assert!(seq_le(7, 7));
        assert!(!seq_lt(7, 7));
        assert!(seq_lt(0, 0x7fff_ffff));
        assert!(seq_gt(0, 0x8000_0001));
    }
}
