//! Network namespaces: the agent stays in its own namespace (so tracefs stays visible; `ip
//! netns exec` would remount /sys and hide it) and enters the target one only on a helper
//! thread, for what is namespace-bound: interface lookups and TC attach/detach.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

#[derive(Debug)]
pub struct Netns {
    pub name: String,
    file: File,
    /// Inode number of the namespace: what the kernel side compares sockets against.
    pub inum: u64,
}

impl Netns {
    /// `name` as `ip netns` names it (`/run/netns/NAME`), or a path (`/proc/PID/ns/net`).
    pub fn open(name: &str) -> std::io::Result<Netns> {
        let path = if name.contains('/') { PathBuf::from(name) } else { PathBuf::from("/run/netns").join(name) };
        let file = File::open(&path)?;
        let inum = file.metadata()?.ino();
        Ok(Netns { name: name.to_string(), file, inum })
    }
}

/// Runs `f` inside `ns` (on a helper thread), or right here when `ns` is None.
pub fn in_netns<T: Send>(ns: Option<&Netns>, f: impl FnOnce() -> T + Send) -> std::io::Result<T> {
    let Some(ns) = ns else { return Ok(f()) };
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on this thread only, with a namespace file descriptor.
            if unsafe { libc::setns(ns.file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                let e = std::io::Error::last_os_error();
                // Said here, where it is known: the caller only sees an I/O error.
                let why = if e.kind() == std::io::ErrorKind::PermissionDenied {
                    " (entering another network namespace needs CAP_SYS_ADMIN as well: run as root, or add it to the capabilities)"
                } else {
                    ""
                };
                return Err(std::io::Error::new(e.kind(), format!("cannot enter the network namespace: {e}{why}")));
            }
            Ok(f())
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("namespace helper thread panicked")))
    })
}

/// Index and ARP hardware type of an interface in the current namespace.
pub fn interface(name: &str) -> std::io::Result<(u32, u16)> {
    let cname = std::ffi::CString::new(name).map_err(std::io::Error::other)?;
    // SAFETY: valid NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if index == 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: plain socket for the ioctl, closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: ifreq is plain data; the name fits (checked by if_nametoindex: < IFNAMSIZ).
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR fills ifr_hwaddr.
    let r = unsafe { libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut ifr) };
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    let hw_type = if r == 0 {
        // SAFETY: the union member SIOCGIFHWADDR wrote.
        unsafe { ifr.ifr_ifru.ifru_hwaddr.sa_family }
    } else {
        1
    };
    Ok((index, hw_type))
}
