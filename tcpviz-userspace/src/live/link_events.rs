//! Interfaces that come and go while the agent runs (`--iface all`): a netlink socket of the
//! namespace subscribed to link notifications (RTMGRP_LINK). The kernel sends RTM_NEWLINK
//! for a new interface (and for every change of an existing one) and RTM_DELLINK for one
//! that goes, also when it moves to another namespace.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::rtnl::{NLMSG_HDRLEN, align4, attrs, c_string};

/// `struct ifinfomsg`: family, pad, type (ARPHRD), index, flags, change.
const IFINFOMSG_LEN: usize = 16;
const IFLA_IFNAME: u16 = 3;
const RTMGRP_LINK: u32 = 1;

/// What a notification says about an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkChange {
    /// An interface exists (new, or changed: the listener tells them apart by index).
    Present {
        index: u32,
        name: String,
        arphrd: u16,
    },
    Gone {
        index: u32,
    },
    /// Notifications were lost (the socket's buffer overflowed): list the interfaces again.
    Overflow,
}

/// A non-blocking netlink socket that receives link notifications of the namespace of the
/// thread that opened it; it keeps that namespace whichever thread reads it.
pub struct LinkEvents {
    fd: OwnedFd,
}

impl LinkEvents {
    pub fn open() -> io::Result<LinkEvents> {
        // SAFETY: plain socket call; the descriptor is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain data; zeroed is a valid value.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        addr.nl_groups = RTMGRP_LINK;
        // SAFETY: a valid sockaddr_nl of its own size.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(LinkEvents { fd })
    }

    /// Every notification queued now (none: an empty list).
    pub fn read(&self) -> io::Result<Vec<LinkChange>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            // SAFETY: the buffer is writable for its length.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr() as *mut _, buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => return Ok(out),
                    Some(libc::EINTR) => continue,
                    Some(libc::ENOBUFS) => {
                        out.push(LinkChange::Overflow);
                        continue;
                    }
                    _ => return Err(e),
                }
            }
            out.extend(parse(&buf[..n as usize]));
        }
    }
}

impl AsFd for LinkEvents {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for LinkEvents {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

/// The link changes of one datagram of netlink messages; anything else, or a message cut
/// short, is left out.
pub fn parse(mut buf: &[u8]) -> Vec<LinkChange> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(buf[0..4].try_into().unwrap()) as usize;
        let ty = u16::from_ne_bytes(buf[4..6].try_into().unwrap());
        if len < NLMSG_HDRLEN || len > buf.len() {
            break;
        }
        let payload = &buf[NLMSG_HDRLEN..len];
        buf = &buf[align4(len).min(buf.len())..];
        if payload.len() < IFINFOMSG_LEN {
            continue;
        }
        let arphrd = u16::from_ne_bytes(payload[2..4].try_into().unwrap());
        let index = i32::from_ne_bytes(payload[4..8].try_into().unwrap());
        if index <= 0 {
            continue;
        }
        let index = index as u32;
        match ty {
            libc::RTM_NEWLINK => {
                let name = attrs(&payload[IFINFOMSG_LEN..]).find(|(t, _)| *t == IFLA_IFNAME).map(|(_, v)| c_string(v));
                if let Some(name) = name.filter(|n| !n.is_empty()) {
                    out.push(LinkChange::Present { index, name, arphrd });
                }
            }
            libc::RTM_DELLINK => out.push(LinkChange::Gone { index }),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(ty: u16, index: i32, arphrd: u16, name: Option<&str>) -> Vec<u8> {
        let mut body = vec![0u8, 0];
        body.extend(arphrd.to_ne_bytes());
        body.extend(index.to_ne_bytes());
        body.extend([0u8; 8]);
        if let Some(n) = name {
            let value = [n.as_bytes(), &[0]].concat();
            body.extend(((4 + value.len()) as u16).to_ne_bytes());
            body.extend(IFLA_IFNAME.to_ne_bytes());
            body.extend(&value);
            while body.len() % 4 != 0 {
                body.push(0);
            }
        }
        let mut m = ((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes().to_vec();
        m.extend(ty.to_ne_bytes());
        m.extend([0u8; 10]);
        m.extend(body);
        m
    }

    #[test]
    fn new_and_removed_links_in_one_datagram() {
        let mut buf = message(libc::RTM_NEWLINK, 7, 1, Some("veth-c1"));
        buf.extend(message(libc::RTM_DELLINK, 5, 1, Some("old")));
        buf.extend(message(libc::RTM_NEWLINK, 8, 65534, Some("wg0")));
        assert_eq!(
            parse(&buf),
            [
                LinkChange::Present { index: 7, name: "veth-c1".into(), arphrd: 1 },
                LinkChange::Gone { index: 5 },
                LinkChange::Present { index: 8, name: "wg0".into(), arphrd: 65534 },
            ]
        );
    }

    #[test]
    fn cut_short_or_nameless_messages_are_left_out() {
        let whole = message(libc::RTM_NEWLINK, 7, 1, Some("eth1"));
        assert!(parse(&whole[..whole.len() - 3]).is_empty());
        assert!(parse(&message(libc::RTM_NEWLINK, 7, 1, None)).is_empty());
        assert!(parse(&message(libc::RTM_NEWLINK, 0, 1, Some("x"))).is_empty());
        assert!(parse(&[1, 2, 3]).is_empty());
    }
}
