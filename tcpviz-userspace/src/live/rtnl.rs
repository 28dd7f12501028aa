//! The few rtnetlink requests aya does not offer: list the TC filters of an interface with
//! the programs they run, delete one filter, find and delete a clsact qdisc.
//!
//! Netlink sockets belong to the network namespace of the thread that opens them: call these
//! inside [`super::netns::in_netns`].

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

pub(super) const NLMSG_HDRLEN: usize = 16;
const TCMSG_LEN: usize = 20;
const NLA_HDRLEN: usize = 4;

const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_CHAIN: u16 = 11;
const TCA_BPF_NAME: u16 = 7;
const TCA_BPF_TAG: u16 = 10;
const TCA_BPF_ID: u16 = 11;
const NLMSGERR_ATTR_MSG: u16 = 1;
const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;

/// `TC_H_CLSACT`: the parent (and major handle) of the clsact qdisc.
pub const TC_H_CLSACT: u32 = 0xFFFF_FFF1;
/// Parents of clsact's two hooks.
pub const CLSACT_INGRESS: u32 = 0xFFFF_FFF2;
pub const CLSACT_EGRESS: u32 = 0xFFFF_FFF3;

pub(super) fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// A TC filter on a clsact hook, as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcFilter {
    /// `CLSACT_INGRESS` or `CLSACT_EGRESS`.
    pub parent: u32,
    /// Priority (high 16 bits) and protocol (low 16, network order), as `tcm_info` has them.
    pub info: u32,
    pub handle: u32,
    pub chain: Option<u32>,
    /// The classifier: `bpf`, `u32`, `flower`, …
    pub kind: String,
    /// For `bpf` filters: the program's id, the name the attacher gave the filter, and the
    /// program's tag.
    pub prog_id: Option<u32>,
    pub name: Option<String>,
    pub tag: Option<[u8; 8]>,
}

impl TcFilter {
    pub fn hook(&self) -> &'static str {
        if self.parent == CLSACT_EGRESS { "egress" } else { "ingress" }
    }
}

/// A netlink route socket of the calling thread's namespace.
pub struct Rtnl {
    fd: OwnedFd,
    seq: u32,
}

impl Rtnl {
    pub fn open() -> io::Result<Rtnl> {
        // SAFETY: plain socket call; the descriptor is owned below.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // Ask for the kernel's error text (extended ack); older kernels ignore it.
        let one: libc::c_int = 1;
        // SAFETY: valid option value and length.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_NETLINK,
                libc::NETLINK_EXT_ACK,
                &one as *const _ as *const libc::c_void,
                size_of::<libc::c_int>() as u32,
            );
        }
        Ok(Rtnl { fd, seq: 1 })
    }

    /// The bpf and other filters on one clsact hook (`CLSACT_INGRESS` or `CLSACT_EGRESS`) of
    /// an interface. No clsact qdisc: an empty list.
    pub fn filters(&mut self, ifindex: u32, parent: u32) -> io::Result<Vec<TcFilter>> {
        let msg = self.request(libc::RTM_GETTFILTER, libc::NLM_F_DUMP as u16, tcmsg(ifindex, 0, parent, 0), &[]);
        let mut out = Vec::new();
        let r = self.exchange(&msg, true, |ty, payload| {
            if ty != libc::RTM_NEWTFILTER || payload.len() < TCMSG_LEN {
                return;
            }
            let handle = u32::from_ne_bytes(payload[8..12].try_into().unwrap());
            let parent = u32::from_ne_bytes(payload[12..16].try_into().unwrap());
            let info = u32::from_ne_bytes(payload[16..20].try_into().unwrap());
            let mut f = TcFilter {
                parent,
                info,
                handle,
                chain: None,
                kind: String::new(),
                prog_id: None,
                name: None,
                tag: None,
            };
            for (t, v) in attrs(&payload[TCMSG_LEN..]) {
                match t {
                    TCA_KIND => f.kind = c_string(v),
                    TCA_CHAIN if v.len() >= 4 => f.chain = Some(u32::from_ne_bytes(v[..4].try_into().unwrap())),
                    TCA_OPTIONS => {
                        for (t, v) in attrs(v) {
                            match t {
                                TCA_BPF_ID if v.len() >= 4 => {
                                    f.prog_id = Some(u32::from_ne_bytes(v[..4].try_into().unwrap()))
                                }
                                TCA_BPF_NAME => f.name = Some(c_string(v)),
                                TCA_BPF_TAG if v.len() >= 8 => f.tag = Some(v[..8].try_into().unwrap()),
                                _ => {}
                            }
                        }
                    }
                    _ => {}
                }
            }
            // The kernel also lists each (priority, protocol) chain head with handle 0: not a filter.
            if handle != 0 {
                out.push(f);
            }
        });
        match r {
            Ok(()) => Ok(out),
            // No clsact qdisc (or no such hook): nothing attached there.
            Err(e) if matches!(errno(&e), Some(libc::EINVAL) | Some(libc::ENOENT)) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Deletes one filter (as listed by [`Rtnl::filters`]).
    pub fn delete_filter(&mut self, ifindex: u32, f: &TcFilter) -> io::Result<()> {
        let mut extra = attr(TCA_KIND, &nul_terminated(&f.kind));
        if let Some(chain) = f.chain {
            extra.extend(attr(TCA_CHAIN, &chain.to_ne_bytes()));
        }
        let msg = self.request(libc::RTM_DELTFILTER, 0, tcmsg(ifindex, f.handle, f.parent, f.info), &extra);
        self.exchange(&msg, false, |_, _| {})
    }

    /// The interfaces that have a clsact qdisc (one dump of the namespace's qdiscs: a plain
    /// get of one qdisc only answers with NLM_F_ECHO on some kernels).
    pub fn clsact_interfaces(&mut self) -> io::Result<Vec<u32>> {
        let msg = self.request(libc::RTM_GETQDISC, libc::NLM_F_DUMP as u16, tcmsg(0, 0, 0, 0), &[]);
        let mut found = Vec::new();
        self.exchange(&msg, true, |ty, payload| {
            if ty != libc::RTM_NEWQDISC || payload.len() < TCMSG_LEN {
                return;
            }
            let index = i32::from_ne_bytes(payload[4..8].try_into().unwrap());
            let parent = u32::from_ne_bytes(payload[12..16].try_into().unwrap());
            let kind = attrs(&payload[TCMSG_LEN..]).find(|(t, _)| *t == TCA_KIND).map(|(_, v)| c_string(v));
            if parent == TC_H_CLSACT && kind.as_deref() == Some("clsact") {
                found.push(index as u32);
            }
        })?;
        Ok(found)
    }

    /// Deletes the clsact qdisc of an interface, and with it every filter on it.
    pub fn delete_clsact(&mut self, ifindex: u32) -> io::Result<()> {
        let extra = attr(TCA_KIND, b"clsact\0");
        let msg =
            self.request(libc::RTM_DELQDISC, 0, tcmsg(ifindex, TC_H_CLSACT & 0xFFFF_0000, TC_H_CLSACT, 0), &extra);
        self.exchange(&msg, false, |_, _| {})
    }

    fn request(&mut self, ty: u16, flags: u16, tc: [u8; TCMSG_LEN], extra: &[u8]) -> Vec<u8> {
        self.seq = self.seq.wrapping_add(1);
        let len = NLMSG_HDRLEN + TCMSG_LEN + extra.len();
        let mut m = Vec::with_capacity(len);
        m.extend((len as u32).to_ne_bytes());
        m.extend(ty.to_ne_bytes());
        m.extend((flags | libc::NLM_F_REQUEST as u16 | libc::NLM_F_ACK as u16).to_ne_bytes());
        m.extend(self.seq.to_ne_bytes());
        m.extend(0u32.to_ne_bytes());
        m.extend(tc);
        m.extend(extra);
        m
    }

    /// Sends a request and reads the answers until the dump ends (`dump`) or the request is
    /// acknowledged; `each` sees every answer message (type, payload).
    fn exchange(&mut self, msg: &[u8], dump: bool, mut each: impl FnMut(u16, &[u8])) -> io::Result<()> {
        // SAFETY: a valid buffer of msg.len() bytes.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr() as *const _, msg.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: the buffer is writable for its length.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr() as *mut _, buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let mut rest = &buf[..n as usize];
            while rest.len() >= NLMSG_HDRLEN {
                let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
                let ty = u16::from_ne_bytes(rest[4..6].try_into().unwrap());
                let flags = u16::from_ne_bytes(rest[6..8].try_into().unwrap());
                let seq = u32::from_ne_bytes(rest[8..12].try_into().unwrap());
                if len < NLMSG_HDRLEN || len > rest.len() {
                    return Err(io::Error::other("malformed netlink answer"));
                }
                let payload = &rest[NLMSG_HDRLEN..len];
                rest = &rest[align4(len).min(rest.len())..];
                if seq != self.seq {
                    continue;
                }
                match ty as libc::c_int {
                    libc::NLMSG_DONE => return Ok(()),
                    libc::NLMSG_ERROR => {
                        let code = payload.get(0..4).map(|b| i32::from_ne_bytes(b.try_into().unwrap())).unwrap_or(0);
                        if code == 0 {
                            if dump {
                                continue;
                            }
                            return Ok(());
                        }
                        return Err(netlink_error(-code, payload, flags));
                    }
                    _ => each(ty, payload),
                }
            }
        }
    }
}

/// The error code with the kernel's explanation, when it gave one.
fn netlink_error(errno: i32, payload: &[u8], flags: u16) -> io::Error {
    let os = io::Error::from_raw_os_error(errno);
    if flags & NLM_F_ACK_TLVS == 0 || payload.len() < 4 + NLMSG_HDRLEN {
        return os;
    }
    // After the error code comes the request's header, and its body unless capped.
    let mut off = 4 + NLMSG_HDRLEN;
    if flags & NLM_F_CAPPED == 0 {
        let req_len = u32::from_ne_bytes(payload[4..8].try_into().unwrap()) as usize;
        off = 4 + align4(req_len);
    }
    let text = payload.get(off..).and_then(|tlvs| attrs(tlvs).find(|(t, _)| *t == NLMSGERR_ATTR_MSG));
    match text {
        Some((_, v)) => io::Error::new(os.kind(), KernelSaid { errno, text: c_string(v) }),
        None => os,
    }
}

/// An error code with the kernel's explanation (extended ack).
#[derive(Debug)]
struct KernelSaid {
    errno: i32,
    text: String,
}

impl std::fmt::Display for KernelSaid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.text, io::Error::from_raw_os_error(self.errno))
    }
}

impl std::error::Error for KernelSaid {}

/// The error code of a netlink error, with or without the kernel's text.
pub fn errno(e: &io::Error) -> Option<i32> {
    e.raw_os_error().or_else(|| e.get_ref().and_then(|inner| inner.downcast_ref::<KernelSaid>()).map(|k| k.errno))
}

fn tcmsg(ifindex: u32, handle: u32, parent: u32, info: u32) -> [u8; TCMSG_LEN] {
    let mut m = [0u8; TCMSG_LEN];
    m[0] = libc::AF_UNSPEC as u8;
    m[4..8].copy_from_slice(&(ifindex as i32).to_ne_bytes());
    m[8..12].copy_from_slice(&handle.to_ne_bytes());
    m[12..16].copy_from_slice(&parent.to_ne_bytes());
    m[16..20].copy_from_slice(&info.to_ne_bytes());
    m
}

fn attr(ty: u16, value: &[u8]) -> Vec<u8> {
    let len = NLA_HDRLEN + value.len();
    let mut a = Vec::with_capacity(align4(len));
    a.extend((len as u16).to_ne_bytes());
    a.extend(ty.to_ne_bytes());
    a.extend(value);
    a.resize(align4(len), 0);
    a
}

fn nul_terminated(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

pub(super) fn c_string(v: &[u8]) -> String {
    let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

/// The attributes of a netlink payload: (type without flags, value).
pub(super) fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < NLA_HDRLEN {
            return None;
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let ty = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3FFF;
        if len < NLA_HDRLEN || len > buf.len() {
            return None;
        }
        let value = &buf[NLA_HDRLEN..len];
        buf = &buf[align4(len).min(buf.len())..];
        Some((ty, value))
    })
}

/// The interfaces of the calling thread's namespace: (index, name).
pub fn interfaces() -> io::Result<Vec<(u32, String)>> {
    // SAFETY: if_nameindex returns an array ended by a zero entry, freed below.
    let list = unsafe { libc::if_nameindex() };
    if list.is_null() {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut p = list;
    // SAFETY: walking the array up to its terminating entry.
    unsafe {
        while (*p).if_index != 0 {
            let name = std::ffi::CStr::from_ptr((*p).if_name).to_string_lossy().into_owned();
            out.push(((*p).if_index, name));
            p = p.add(1);
        }
        libc::if_freenameindex(list);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip_with_padding() {
        let mut buf = attr(TCA_KIND, b"bpf\0");
        buf.extend(attr(TCA_BPF_ID, &77u32.to_ne_bytes()));
        buf.extend(attr(TCA_BPF_NAME, b"tcpviz_ingress\0"));
        let got: Vec<(u16, Vec<u8>)> = attrs(&buf).map(|(t, v)| (t, v.to_vec())).collect();
        assert_eq!(got.len(), 3);
        assert_eq!(c_string(&got[0].1), "bpf");
        assert_eq!(u32::from_ne_bytes(got[1].1[..4].try_into().unwrap()), 77);
        assert_eq!(c_string(&got[2].1), "tcpviz_ingress");
    }

    #[test]
    fn a_truncated_attribute_ends_the_list() {
        let mut buf = attr(TCA_KIND, b"bpf\0");
        buf.extend([40, 0, 1, 0, b'x']);
        assert_eq!(attrs(&buf).count(), 1);
    }

    #[test]
    fn the_error_code_survives_the_kernels_text() {
        let e = io::Error::new(io::ErrorKind::NotFound, KernelSaid { errno: libc::ENOENT, text: "no qdisc".into() });
        assert_eq!(errno(&e), Some(libc::ENOENT));
        assert!(e.to_string().starts_with("no qdisc ("), "{e}");
        assert_eq!(errno(&io::Error::from_raw_os_error(libc::ENODEV)), Some(libc::ENODEV));
    }
}
