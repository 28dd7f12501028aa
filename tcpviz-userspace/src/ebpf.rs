//! The kernel programs, compiled by build.rs and embedded in the binary.

/// The eBPF object file (ELF), or `None` when the build skipped it (`AYA_BUILD_SKIP=1`).
#[cfg(not(tcpviz_ebpf_skipped))]
pub fn object() -> Option<&'static [u8]> {
    Some(aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tcpviz")))
}

#[cfg(tcpviz_ebpf_skipped)]
pub fn object() -> Option<&'static [u8]> {
    None
}
