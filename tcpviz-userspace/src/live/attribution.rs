//! Attribution: which process and cgroup own a connection's socket, learned from the hooks
//! that run in the owner's process context, and joined to connections by socket address in
//! userspace (never a lookup per packet).
//!
//! - Active opens: `sock:inet_sock_set_state` CLOSE -> SYN_SENT runs inside connect(), so
//!   the current task is the owner. The local port is often not chosen yet at that moment,
//!   so the owner is kept by the socket's kernel address (`skaddr`) until a later state
//!   change of the same socket (SYN_SENT -> ESTABLISHED, in softirq) names both ends.
//! - Passive opens: the exits of accept4()/accept() run in the accepting process and return
//!   the new descriptor. The eBPF program follows it to the socket's kernel address
//!   (`TraceRecord::accepted_sk`, through the task's descriptor table), which is the
//!   `skaddr` of that socket's SYN_RECV -> ESTABLISHED state change, kept here with both
//!   ends until the accept comes (it comes after: the connection is established before
//!   accept() can return it). Where that fails (a kernel whose BTF lacks the path, a
//!   connection established before the agent started, a socket of a namespace other than
//!   the watched one, whose state changes are filtered out in the kernel; accept exits are
//!   kept from every namespace), the socket is looked up in /proc:
//!   the descriptor's `socket:[inode]` link, then that inode in the process's
//!   /proc/PID/net/tcp and tcp6. That needs the process's /proc entries to be readable
//!   (root or CAP_SYS_PTRACE for another user's), and the descriptor still open when the
//!   agent reads the record; an accept neither way resolves is counted
//!   (`accepts_unresolved`).
//!
//! DESIGN.md names the socket cookie as the join key; the tracepoints used here do not carry
//! it, so the join is by socket address (connect) and by the 4-tuple (both).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tcpviz_common::{
    TP_COUNT, TP_INET_SOCK_SET_STATE, TP_SYS_EXIT_ACCEPT, TP_SYS_EXIT_ACCEPT4, TaskOwner, TraceRecord,
};

use super::records::endpoints;
use super::tracefs::Format;
use crate::attribution::{HOOK_ACCEPT, HOOK_ACCEPT4, HOOK_CONNECT, Owners, Process, SocketKey};

const TCP_ESTABLISHED: i64 = 1;
const TCP_SYN_SENT: i64 = 2;
const TCP_SYN_RECV: i64 = 3;
const TCP_CLOSE: i64 = 7;
const IPPROTO_TCP: u64 = 6;
/// Connects waiting for their ports: past this many the oldest are forgotten (counted).
const MAX_PENDING_CONNECTS: usize = 65_536;
/// Passively opened sockets waiting for their accept(): past this many they are forgotten
/// (their accepts then go to /proc).
const MAX_WAITING_ACCEPTS: usize = 65_536;
/// Cgroup paths kept: past this many the cache is emptied.
const MAX_CGROUPS: usize = 16_384;

/// Counts for the summary's `live.attribution` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AttributionCounts {
    /// Connections attributed from connect() and from accept().
    pub connects: u64,
    pub accepts: u64,
    /// Of `accepts`, those resolved in /proc rather than by the socket's kernel address.
    #[serde(default)]
    pub accepts_from_proc: u64,
    /// Of `accepts`, those whose ends the kernel side read from the accepted socket: a
    /// socket of another namespace, whose state changes are filtered out in the kernel.
    #[serde(default)]
    pub accepts_from_socket: u64,
    /// Accepts resolved neither way: the socket unknown to the kernel side, and gone from
    /// /proc (closed, or the process ended) or not readable there.
    pub accepts_unresolved: u64,
    /// Connects forgotten before their ports were known (the pending table was full).
    pub connects_forgotten: u64,
    /// Cgroup ids not found under the cgroup2 mount.
    pub cgroups_unknown: u64,
}

/// Cgroup2 id -> path, read from the cgroup2 mount and cached.
#[derive(Debug)]
pub struct CgroupPaths {
    root: Option<PathBuf>,
    cache: HashMap<u64, Option<String>>,
}

impl CgroupPaths {
    /// The cgroup2 mount: `/sys/fs/cgroup/unified` on a hybrid hierarchy, else
    /// `/sys/fs/cgroup` when it is cgroup2.
    pub fn system() -> CgroupPaths {
        let root = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.join("cgroup.controllers").exists());
        if root.is_none() {
            tracing::info!("no cgroup2 mount found: cgroups are shown by id only");
        }
        CgroupPaths::at(root)
    }

    pub fn at(root: Option<PathBuf>) -> CgroupPaths {
        CgroupPaths { root, cache: HashMap::new() }
    }

    /// The path of cgroup `id` below the mount (`/` for the root). A miss walks the
    /// hierarchy once and caches every cgroup in it.
    pub fn path(&mut self, id: u64) -> Option<String> {
        if let Some(p) = self.cache.get(&id) {
            return p.clone();
        }
        let root = self.root.clone()?;
        if self.cache.len() >= MAX_CGROUPS {
            self.cache.clear();
        }
        walk(&root, &root, &mut self.cache);
        // A miss is remembered too: a cgroup removed before its id was read stays unknown.
        self.cache.entry(id).or_insert(None).clone()
    }
}

fn walk(root: &Path, dir: &Path, out: &mut HashMap<u64, Option<String>>) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(dir) else { return };
    let rel = dir.strip_prefix(root).ok().map(|r| r.to_string_lossy().into_owned()).unwrap_or_default();
    out.insert(meta.ino(), Some(if rel.is_empty() { "/".into() } else { rel }));
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            walk(root, &e.path(), out);
        }
    }
}

/// Learns owners from tracepoint records into an `Owners` table (kept by the event sink,
/// which annotates events and alerts with it).
#[derive(Debug)]
pub struct Attribution {
    pub counts: AttributionCounts,
    cgroups: CgroupPaths,
    /// Sockets seen entering SYN_SENT, by kernel address, until their ports are known.
    pending: HashMap<u64, Arc<Process>>,
    /// Passively opened sockets, by kernel address, with both ends, until accepted.
    established: HashMap<u64, SocketKey>,
    proc_root: PathBuf,
}

impl Attribution {
    pub fn new(cgroups: CgroupPaths) -> Attribution {
        Attribution {
            counts: AttributionCounts::default(),
            cgroups,
            pending: HashMap::new(),
            established: HashMap::new(),
            proc_root: PathBuf::from("/proc"),
        }
    }

    fn process(&mut self, o: &TaskOwner, hook: &str) -> Arc<Process> {
        let end = o.comm.iter().position(|&b| b == 0).unwrap_or(o.comm.len());
        let cgroup = self.cgroups.path(o.cgroup_id);
        if cgroup.is_none() {
            self.counts.cgroups_unknown += 1;
        }
        Arc::new(Process {
            pid: o.tgid,
            comm: String::from_utf8_lossy(&o.comm[..end]).into_owned(),
            cgroup,
            cgroup_id: o.cgroup_id,
            hook: hook.into(),
        })
    }

    /// Reads what a tracepoint record says about ownership (most say nothing).
    pub fn on_trace(&mut self, rec: &TraceRecord, formats: &[Option<Format>; TP_COUNT], owners: &mut Owners) {
        let tp = rec.tracepoint as u32;
        let Some(Some(f)) = formats.get(tp as usize) else { return };
        let raw = &rec.raw[..(rec.raw_len as usize).min(rec.raw.len())];
        match tp {
            TP_INET_SOCK_SET_STATE => self.on_state_change(rec, f, raw, owners),
            TP_SYS_EXIT_ACCEPT4 | TP_SYS_EXIT_ACCEPT => {
                let Some(fd) = f.int(raw, "ret").filter(|&fd| fd >= 0) else { return };
                let hook = if tp == TP_SYS_EXIT_ACCEPT4 { HOOK_ACCEPT4 } else { HOOK_ACCEPT };
                let by_address = match rec.accepted_sk {
                    0 => None,
                    sk => self.established.remove(&sk),
                };
                let (key, how) = match by_address {
                    Some(key) => (Some(key), Resolved::ByAddress),
                    None => match rec.accepted_ends().and_then(|e| socket_key(&e)) {
                        Some(key) => (Some(key), Resolved::FromSocket),
                        None => (socket_of(&self.proc_root, rec.owner.tgid, fd), Resolved::FromProc),
                    },
                };
                match key {
                    Some(key) => {
                        let p = self.process(&rec.owner, hook);
                        owners.insert(key, p);
                        self.counts.accepts += 1;
                        self.counts.accepts_from_socket += (how == Resolved::FromSocket) as u64;
                        self.counts.accepts_from_proc += (how == Resolved::FromProc) as u64;
                    }
                    None => self.counts.accepts_unresolved += 1,
                }
            }
            _ => {}
        }
    }

    fn on_state_change(&mut self, rec: &TraceRecord, f: &Format, raw: &[u8], owners: &mut Owners) {
        if f.uint(raw, "protocol").is_some_and(|p| p != IPPROTO_TCP) {
            return;
        }
        let Some(sk) = f.uint(raw, "skaddr") else { return };
        let old = f.int(raw, "oldstate").unwrap_or(0);
        let new = f.int(raw, "newstate").unwrap_or(0);
        let ends = endpoints(f, raw).filter(|&(_, sport, _, dport)| sport != 0 && dport != 0);
        if old == TCP_CLOSE && new == TCP_SYN_SENT {
            // In connect(): the current task owns the socket.
            let p = self.process(&rec.owner, HOOK_CONNECT);
            match ends {
                Some(key) => self.bind(owners, key, p),
                None => {
                    if self.pending.len() >= MAX_PENDING_CONNECTS {
                        self.counts.connects_forgotten += self.pending.len() as u64;
                        self.pending.clear();
                    }
                    self.pending.insert(sk, p);
                }
            }
        } else if let Some(key) = ends
            && let Some(p) = self.pending.remove(&sk)
        {
            self.bind(owners, key, p);
        } else if old == TCP_SYN_RECV
            && new == TCP_ESTABLISHED
            && let Some(key) = ends
        {
            // A passive open, to be accepted.
            if self.established.len() >= MAX_WAITING_ACCEPTS {
                self.established.clear();
            }
            self.established.insert(sk, key);
        } else if new == TCP_CLOSE {
            self.pending.remove(&sk);
            self.established.remove(&sk);
        }
        if new == TCP_CLOSE
            && let Some(key) = ends
        {
            owners.close(key);
        }
    }

    fn bind(&mut self, owners: &mut Owners, key: SocketKey, p: Arc<Process>) {
        owners.insert(key, p);
        self.counts.connects += 1;
    }
}

/// How an accept found its socket's ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Resolved {
    /// The socket's own state change, by its kernel address.
    ByAddress,
    /// The ends the kernel side read from the socket (a socket of another namespace).
    FromSocket,
    /// The process's /proc tables.
    FromProc,
}

/// Local end first, as the owners table keys a socket.
fn socket_key(e: &tcpviz_common::SocketEnds) -> Option<SocketKey> {
    let (local, remote): (IpAddr, IpAddr) = match e.family {
        2 => {
            let v4 = |a: &[u8; 16]| IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]));
            (v4(&e.local_addr), v4(&e.remote_addr))
        }
        10 => (IpAddr::V6(Ipv6Addr::from(e.local_addr)), IpAddr::V6(Ipv6Addr::from(e.remote_addr))),
        _ => return None,
    };
    let remote_port = u16::from_be(e.remote_port_be);
    (e.local_port != 0 && remote_port != 0).then_some((local, e.local_port, remote, remote_port))
}

/// Both ends of the TCP socket behind descriptor `fd` of process `pid`, from /proc.
fn socket_of(proc_root: &Path, pid: u32, fd: i64) -> Option<SocketKey> {
    let pid_dir = proc_root.join(pid.to_string());
    let link = std::fs::read_link(pid_dir.join("fd").join(fd.to_string())).ok()?;
    let inode: u64 = link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()?;
    ["net/tcp", "net/tcp6"]
        .iter()
        .find_map(|t| std::fs::read_to_string(pid_dir.join(t)).ok().and_then(|text| find_inode(&text, inode)))
}

/// The line of `inode` in a /proc/net/tcp(6) table: local and remote ends.
fn find_inode(table: &str, inode: u64) -> Option<SocketKey> {
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.get(9)?.parse::<u64>().ok()? != inode {
            return None;
        }
        let (la, lp) = proc_endpoint(cols.get(1)?)?;
        let (ra, rp) = proc_endpoint(cols.get(2)?)?;
        Some((la, lp, ra, rp))
    })
}

/// `0100007F:1F90`: the address as the kernel's 32-bit words printed in hex (memory order
/// within each word), then the port in hex.
fn proc_endpoint(s: &str) -> Option<(IpAddr, u16)> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok().map(u32::to_ne_bytes);
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            let v6 = Ipv6Addr::from(b);
            v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6))
        }
        _ => return None,
    };
    Some((ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tracepoint record as the eBPF program writes it, with `fields` of format `f` set.
    fn trace_record(f: &Format, tp: u32, owner: TaskOwner, accepted_sk: u64, fields: &[(&str, &[u8])]) -> TraceRecord {
        let mut r = TraceRecord {
            kind: tcpviz_common::RECORD_TRACE,
            tracepoint: tp as u8,
            raw_len: f.record_len() as u16,
            netns: 0,
            ts_boot_ns: 0,
            skb_seq: 0,
            skb_end_seq: 0,
            skb_gso_segs: 0,
            skb_gso_size: 0,
            sk_mss: 0,
            owner,
            accepted_sk,
            raw: [0; tcpviz_common::TRACE_RAW_LEN],
        };
        for (name, bytes) in fields {
            let off = f.field(name).unwrap().offset;
            r.raw[off..off + bytes.len()].copy_from_slice(bytes);
        }
        r
    }

    /// A connect as the kernel reports it: SYN_SENT before the port is chosen, then
    /// ESTABLISHED (in softirq, another task current) with both ends.
    #[test]
    fn a_connect_is_joined_to_its_ports_by_socket_address() {
        // The layout of this machine's kernel (6.18).
        let f = super::super::tracefs::parse_format("sock", "inet_sock_set_state", SET_STATE_FORMAT).unwrap();
        let mut formats: [Option<Format>; TP_COUNT] = Default::default();
        formats[TP_INET_SOCK_SET_STATE as usize] = Some(f.clone());
        let rec = |old: i32, new: i32, sport: u16, owner: TaskOwner| {
            let fields: [(&str, &[u8]); 9] = [
                ("skaddr", &0xffff_8880_1234_5678u64.to_ne_bytes()),
                ("oldstate", &old.to_ne_bytes()),
                ("newstate", &new.to_ne_bytes()),
                ("sport", &sport.to_ne_bytes()),
                ("dport", &80u16.to_ne_bytes()),
                ("family", &2u16.to_ne_bytes()),
                ("protocol", &6u16.to_ne_bytes()),
                ("saddr", &[10, 0, 0, 1]),
                ("daddr", &[10, 0, 0, 2]),
            ];
            trace_record(&f, TP_INET_SOCK_SET_STATE, owner, 0, &fields)
        };
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"curl");
        let curl = TaskOwner { tgid: 4242, tid: 4243, cgroup_id: u64::MAX, comm };
        let softirq = TaskOwner { tgid: 0, tid: 0, cgroup_id: 1, comm: [0; 16] };
        let mut a = Attribution::new(CgroupPaths::at(None));
        let mut owners = Owners::default();
        a.on_trace(&rec(7, 2, 0, curl), &formats, &mut owners);
        assert!(owners.is_empty(), "no ports yet");
        a.on_trace(&rec(2, 1, 40000, softirq), &formats, &mut owners);
        let (c, s) = (("10.0.0.1".parse().unwrap(), 40000), ("10.0.0.2".parse().unwrap(), 80));
        let p = owners.get(c, s).expect("joined by socket address");
        assert_eq!((p.pid, p.comm.as_str(), p.cgroup.as_deref(), p.hook.as_str()), (4242, "curl", None, HOOK_CONNECT));
        assert_eq!((a.counts.connects, a.counts.cgroups_unknown), (1, 1));
        // A later state change of a socket the agent did not see connect names nobody.
        a.on_trace(&rec(1, 4, 40001, softirq), &formats, &mut owners);
        assert_eq!(owners.len(), 1);
    }

    /// An accept as the kernel reports it: the child socket's SYN_RECV -> ESTABLISHED (in
    /// softirq), then the accept exit in the server, naming that socket's address. The
    /// descriptor is not in this process's /proc: the join is by address alone.
    #[test]
    fn an_accept_is_joined_to_its_socket_by_kernel_address() {
        let set_state = super::super::tracefs::parse_format("sock", "inet_sock_set_state", SET_STATE_FORMAT).unwrap();
        let exit = super::super::tracefs::parse_format("syscalls", "sys_exit_accept4", ACCEPT_EXIT_FORMAT).unwrap();
        let mut formats: [Option<Format>; TP_COUNT] = Default::default();
        formats[TP_INET_SOCK_SET_STATE as usize] = Some(set_state.clone());
        formats[TP_SYS_EXIT_ACCEPT4 as usize] = Some(exit.clone());
        let sk = 0xffff_8880_dead_beefu64;
        let established = |sk: u64, sport: u16| {
            let (sk, sport) = (sk.to_ne_bytes(), sport.to_ne_bytes());
            let fields: [(&str, &[u8]); 9] = [
                ("skaddr", &sk),
                ("oldstate", &3i32.to_ne_bytes()),
                ("newstate", &1i32.to_ne_bytes()),
                ("sport", &sport),
                ("dport", &40000u16.to_ne_bytes()),
                ("family", &2u16.to_ne_bytes()),
                ("protocol", &6u16.to_ne_bytes()),
                ("saddr", &[10, 0, 0, 2]),
                ("daddr", &[10, 0, 0, 1]),
            ];
            trace_record(&set_state, TP_INET_SOCK_SET_STATE, TaskOwner::default(), 0, &fields)
        };
        let mut comm = [0u8; 16];
        comm[..5].copy_from_slice(b"nginx");
        let nginx = TaskOwner { tgid: 4_000_000, tid: 4_000_000, cgroup_id: u64::MAX, comm };
        let accepted = |sk: u64| trace_record(&exit, TP_SYS_EXIT_ACCEPT4, nginx, sk, &[("ret", &7i64.to_ne_bytes())]);
        let mut a = Attribution::new(CgroupPaths::at(None));
        a.proc_root = PathBuf::from("/nonexistent");
        let mut owners = Owners::default();
        a.on_trace(&established(sk, 8080), &formats, &mut owners);
        assert!(owners.is_empty(), "not accepted yet");
        a.on_trace(&accepted(sk), &formats, &mut owners);
        let (server, client) = (("10.0.0.2".parse().unwrap(), 8080), ("10.0.0.1".parse().unwrap(), 40000));
        let p = owners.get(server, client).expect("joined by the socket's address");
        assert_eq!((p.pid, p.comm.as_str(), p.hook.as_str()), (4_000_000, "nginx", HOOK_ACCEPT4));
        assert_eq!((a.counts.accepts, a.counts.accepts_from_proc, a.counts.accepts_unresolved), (1, 0, 0));
        // Another socket's accept, and an accept the kernel side could not follow: neither
        // is in /proc here, so both are counted, not guessed.
        a.on_trace(&established(sk + 64, 8081), &formats, &mut owners);
        a.on_trace(&accepted(sk + 128), &formats, &mut owners);
        a.on_trace(&accepted(0), &formats, &mut owners);
        assert_eq!((a.counts.accepts, owners.len(), a.counts.accepts_unresolved), (1, 1, 2));
    }

    /// An accept of a socket whose state changes the kernel side filtered out (another
    /// namespace): its ends come with the accept, read from the socket, and /proc is not
    /// read (there is none here). IPv4 and IPv6; ends the kernel side could not read leave
    /// the accept unresolved.
    #[test]
    fn an_accept_of_another_namespace_is_joined_by_the_ends_read_from_its_socket() {
        use tcpviz_common::SocketEnds;
        let exit = super::super::tracefs::parse_format("syscalls", "sys_exit_accept4", ACCEPT_EXIT_FORMAT).unwrap();
        let mut formats: [Option<Format>; TP_COUNT] = Default::default();
        formats[TP_SYS_EXIT_ACCEPT4 as usize] = Some(exit.clone());
        let server =
            TaskOwner { tgid: 4_000_001, tid: 4_000_001, cgroup_id: u64::MAX, comm: *b"envoy\0\0\0\0\0\0\0\0\0\0\0" };
        let accepted = |ends: SocketEnds| {
            let mut rec = trace_record(
                &exit,
                TP_SYS_EXIT_ACCEPT4,
                server,
                0xffff_8880_0000_1000,
                &[("ret", &9i64.to_ne_bytes())],
            );
            rec.set_accepted_ends(ends);
            rec
        };
        let mut v4 =
            SocketEnds { family: 2, local_port: 8443, remote_port_be: 40_123u16.to_be(), ..Default::default() };
        v4.local_addr[..4].copy_from_slice(&[10, 0, 0, 2]);
        v4.remote_addr[..4].copy_from_slice(&[10, 0, 0, 1]);
        let v6 = SocketEnds {
            family: 10,
            local_port: 443,
            remote_port_be: 50_000u16.to_be(),
            local_addr: "fd00::2".parse::<Ipv6Addr>().unwrap().octets(),
            remote_addr: "fd00::1".parse::<Ipv6Addr>().unwrap().octets(),
            ..Default::default()
        };
        let mut a = Attribution::new(CgroupPaths::at(None));
        a.proc_root = PathBuf::from("/nonexistent");
        let mut owners = Owners::default();
        for ends in [v4, v6, SocketEnds { family: 0, ..v4 }] {
            a.on_trace(&accepted(ends), &formats, &mut owners);
        }
        for (local, remote) in [
            (("10.0.0.2".parse().unwrap(), 8443), ("10.0.0.1".parse().unwrap(), 40_123)),
            (("fd00::2".parse().unwrap(), 443), ("fd00::1".parse().unwrap(), 50_000)),
        ] {
            let p = owners.get(local, remote).unwrap_or_else(|| panic!("{local:?} not named"));
            assert_eq!((p.pid, p.comm.as_str(), p.hook.as_str()), (4_000_001, "envoy", HOOK_ACCEPT4));
        }
        let c = &a.counts;
        assert_eq!((c.accepts, c.accepts_from_socket, c.accepts_from_proc, c.accepts_unresolved), (2, 2, 0, 1));
    }

    const ACCEPT_EXIT_FORMAT: &str = "name: sys_exit_accept4\nID: 2\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n\
\tfield:long ret;\toffset:16;\tsize:8;\tsigned:1;\n";

    const SET_STATE_FORMAT: &str = "name: inet_sock_set_state\nID: 1\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;\n\
\tfield:int oldstate;\toffset:16;\tsize:4;\tsigned:1;\n\
\tfield:int newstate;\toffset:20;\tsize:4;\tsigned:1;\n\
\tfield:__u16 sport;\toffset:24;\tsize:2;\tsigned:0;\n\
\tfield:__u16 dport;\toffset:26;\tsize:2;\tsigned:0;\n\
\tfield:__u16 family;\toffset:28;\tsize:2;\tsigned:0;\n\
\tfield:__u16 protocol;\toffset:30;\tsize:2;\tsigned:0;\n\
\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;\n\
\tfield:__u8 daddr[4];\toffset:36;\tsize:4;\tsigned:0;\n\
\tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;\n\
\tfield:__u8 daddr_v6[16];\toffset:56;\tsize:16;\tsigned:0;\n";

    #[test]
    fn proc_tables_give_both_ends_of_an_inode() {
        // Lines as a little-endian kernel writes them (10.0.0.2:8080 <- 10.0.0.1:40000).
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0200000A:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0\n   1: 0200000A:1F90 0100000A:9C40 01 00000000:00000000 00:00000000 00000000     0        0 222 1 0\n";
        if cfg!(target_endian = "little") {
            let a: IpAddr = "10.0.0.2".parse().unwrap();
            let b: IpAddr = "10.0.0.1".parse().unwrap();
            assert_eq!(find_inode(table, 222), Some((a, 8080, b, 40000)));
        }
        assert_eq!(find_inode(table, 333), None);
        let v6 = proc_endpoint("0000000000000000FFFF00000100007F:0050").unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(v6, ("127.0.0.1".parse().unwrap(), 80));
        }
        assert_eq!(proc_endpoint("zz:1"), None);
    }

    #[test]
    fn cgroup_ids_resolve_to_paths_below_the_mount() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("system.slice/nginx.service")).unwrap();
        let ino = std::fs::metadata(dir.path().join("system.slice/nginx.service")).unwrap().ino();
        let root_ino = std::fs::metadata(dir.path()).unwrap().ino();
        let mut c = CgroupPaths::at(Some(dir.path().to_path_buf()));
        assert_eq!(c.path(ino).as_deref(), Some("system.slice/nginx.service"));
        assert_eq!(c.path(root_ino).as_deref(), Some("/"));
        assert_eq!(c.path(u64::MAX), None);
        assert_eq!(CgroupPaths::at(None).path(ino), None);
    }
}
