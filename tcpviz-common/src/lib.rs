//! Records that cross the kernel/userspace boundary.
//!
//! Every type here is `#[repr(C)]`, made only of primitives, with explicit padding so that
//! the layout is the same for the BPF target and the host, and a compile-time size check
//! pins it. Userspace decodes records with [`decode`] (feature `user`), which checks the
//! length instead of trusting it.
#![no_std]

/// Bytes of each packet the TC program copies: Ethernet + 2 VLAN tags (22) + IPv6 (40)
/// + TCP with the largest options (60) = 122, rounded up.
pub const SNAP_LEN: usize = 128;

/// Direction of a packet seen by the TC program.
pub const DIR_INGRESS: u8 = 0;
pub const DIR_EGRESS: u8 = 1;

/// Record kinds, the first byte of every ring-buffer record.
pub const RECORD_PACKET: u8 = 1;

/// A packet header snapshot taken by the TC classifier.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PacketRecord {
    /// `RECORD_PACKET`.
    pub kind: u8,
    /// `DIR_INGRESS` or `DIR_EGRESS`.
    pub direction: u8,
    /// Number of valid bytes in `data`.
    pub snap_len: u16,
    /// Interface index the packet was seen on.
    pub ifindex: u32,
    /// `bpf_ktime_get_boot_ns()` when the program ran.
    pub ts_boot_ns: u64,
    /// Length of the whole packet (skb->len).
    pub orig_len: u32,
    pub _pad: u32,
    pub data: [u8; SNAP_LEN],
}

const _: () = assert!(core::mem::size_of::<PacketRecord>() == 24 + SNAP_LEN);

#[cfg(feature = "user")]
pub mod decode {
    //! Size-checked decoding of ring-buffer records.
    use super::PacketRecord;

    /// Why a record could not be decoded.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum DecodeError {
        /// The record is shorter than its type.
        TooShort { kind: u8, len: usize, want: usize },
        /// The first byte names no known record.
        UnknownKind(u8),
        /// The record is empty.
        Empty,
    }

    /// Reads a `T` from the start of `bytes` if there are enough of them.
    ///
    /// # Safety
    /// `T` must be a `#[repr(C)]` type made of integers and integer arrays (every bit
    /// pattern is a valid value), as all the records of this crate are.
    unsafe fn read_record<T: Copy>(bytes: &[u8]) -> Option<T> {
        if bytes.len() < core::mem::size_of::<T>() {
            return None;
        }
        // SAFETY: length checked above; read_unaligned has no alignment requirement.
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
    }

    /// Decodes a TC packet snapshot.
    pub fn packet(bytes: &[u8]) -> Result<PacketRecord, DecodeError> {
        match bytes.first() {
            None => Err(DecodeError::Empty),
            Some(&super::RECORD_PACKET) => {
                // SAFETY: PacketRecord is plain integers.
                let rec = unsafe { read_record::<PacketRecord>(bytes) }.ok_or(DecodeError::TooShort {
                    kind: super::RECORD_PACKET,
                    len: bytes.len(),
                    want: core::mem::size_of::<PacketRecord>(),
                })?;
                Ok(rec)
            }
            Some(&other) => Err(DecodeError::UnknownKind(other)),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn short_record_is_rejected() {
            let bytes = [super::super::RECORD_PACKET, 0, 0];
            assert!(matches!(packet(&bytes), Err(DecodeError::TooShort { .. })));
            assert_eq!(packet(&[]).unwrap_err(), DecodeError::Empty);
            assert_eq!(packet(&[99]).unwrap_err(), DecodeError::UnknownKind(99));
        }
    }
}
