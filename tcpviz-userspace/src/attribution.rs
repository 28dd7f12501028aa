//! Who owns a connection's socket: the process and its cgroup, as the live agent learns it
//! from the hooks that run in the owner's process context (connect, accept). Events and the
//! summary carry it per direction: the process that sends that direction's packets.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::event::Event;

/// The hook an attribution came from.
pub const HOOK_CONNECT: &str = "sock:inet_sock_set_state";
pub const HOOK_ACCEPT4: &str = "syscalls:sys_exit_accept4";
pub const HOOK_ACCEPT: &str = "syscalls:sys_exit_accept";

/// The owner of one endpoint's socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    /// Process id (tgid) of the task that opened the connection.
    pub pid: u32,
    /// Its command name (at most 15 bytes, as the kernel keeps it).
    pub comm: String,
    /// Its cgroup as a path under the cgroup2 mount (`system.slice/nginx.service`; `/` for
    /// the root), or None when the id was not found there (the cgroup was already removed).
    pub cgroup: Option<String>,
    /// The cgroup2 id the kernel gave (the inode of the cgroup's directory).
    pub cgroup_id: u64,
    /// How it was learned: `sock:inet_sock_set_state` (connect) or
    /// `syscalls:sys_exit_accept4` / `syscalls:sys_exit_accept` (accept).
    pub hook: String,
}

impl Process {
    /// `comm[pid] cgroup`, for tables and alert lines.
    pub fn label(&self) -> String {
        match &self.cgroup {
            Some(c) => format!("{}[{}] {c}", self.comm, self.pid),
            None => format!("{}[{}]", self.comm, self.pid),
        }
    }

    /// The name a service goes by: its cgroup when it has one below the root, else its
    /// command name.
    pub fn service(&self) -> &str {
        match self.cgroup.as_deref() {
            Some(c) if c != "/" => c,
            _ => &self.comm,
        }
    }
}

/// A socket as its owner sees it: local address and port, then the peer's.
pub type SocketKey = (IpAddr, u16, IpAddr, u16);

/// Bound of the owners table: past it the table is emptied and starts again (counted), so
/// memory stays bounded on a host that opens connections without end.
pub const MAX_OWNERS: usize = 262_144;

/// The owners the agent learned, by socket. Looked up per event and per alert, never per
/// packet.
#[derive(Debug, Default)]
pub struct Owners {
    by_socket: HashMap<SocketKey, Arc<Process>>,
    /// Times the table was full and emptied.
    pub resets: u64,
}

impl Owners {
    pub fn is_empty(&self) -> bool {
        self.by_socket.is_empty()
    }

    pub fn len(&self) -> usize {
        self.by_socket.len()
    }

    pub fn insert(&mut self, socket: SocketKey, owner: Arc<Process>) {
        if self.by_socket.len() >= MAX_OWNERS && !self.by_socket.contains_key(&socket) {
            self.by_socket.clear();
            self.resets += 1;
        }
        self.by_socket.insert(socket, owner);
    }

    /// The owner of the socket at `local` talking to `remote`.
    pub fn get(&self, local: (IpAddr, u16), remote: (IpAddr, u16)) -> Option<&Arc<Process>> {
        self.by_socket.get(&(local.0, local.1, remote.0, remote.1))
    }

    /// Fills an event's `src_process` and `dst_process`.
    pub fn annotate(&self, e: &mut Event) {
        e.extra.src_process = self.get((e.src, e.sport), (e.dst, e.dport)).cloned();
        e.extra.dst_process = self.get((e.dst, e.dport), (e.src, e.sport)).cloned();
    }

    /// The owner of either end of a connection, the sending end first.
    pub fn either(&self, src: (IpAddr, u16), dst: (IpAddr, u16)) -> Option<&Arc<Process>> {
        self.get(src, dst).or_else(|| self.get(dst, src))
    }
}

/// Services with a label of their own in the per-service counts; later ones are summed
/// under `other`.
pub const MAX_SERVICES: usize = 10;
/// The label of trouble on a connection whose sockets have no known owner.
pub const UNATTRIBUTED: &str = "unattributed";

/// Retransmissions and alerts per service, for `/metrics`. A label, once given, stays (so
/// every counter only goes up and the labels sum to the total); the first `MAX_SERVICES`
/// services that show trouble get one, the rest count under `other`.
#[derive(Debug, Default, Clone)]
pub struct ServiceCounts {
    /// service -> (retransmissions, alerts).
    pub by_service: std::collections::BTreeMap<String, (u64, u64)>,
}

impl ServiceCounts {
    fn slot(&mut self, service: Option<&str>) -> &mut (u64, u64) {
        let name = service.unwrap_or(UNATTRIBUTED);
        let named = self.by_service.keys().filter(|k| *k != "other" && *k != UNATTRIBUTED).count();
        let key = if self.by_service.contains_key(name) || name == UNATTRIBUTED || named < MAX_SERVICES {
            name
        } else {
            "other"
        };
        self.by_service.entry(key.to_string()).or_default()
    }

    /// A retransmission event: counted for the sender's service.
    pub fn retransmission(&mut self, sender: Option<&Process>) {
        self.slot(sender.map(Process::service)).0 += 1;
    }

    pub fn alert(&mut self, service: Option<&str>) {
        self.slot(service).1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> Event {
        Event {
            ts: 0,
            event: crate::event::EventKind::Retransmission,
            flow_id: 1,
            src,
            dst,
            sport,
            dport,
            seq: 0,
            ack: 0,
            len: 0,
            flags: String::new(),
            severity: crate::event::Severity::Warning,
            extra: Default::default(),
            origin: crate::event::Origin::Wire,
            frame: None,
            file: None,
        }
    }

    #[test]
    fn events_get_the_owner_of_each_end() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let client =
            Arc::new(Process { pid: 1, comm: "curl".into(), cgroup: None, cgroup_id: 1, hook: HOOK_CONNECT.into() });
        let mut owners = Owners::default();
        owners.insert((a, 40000, b, 80), client.clone());
        let mut e = event(a, 40000, b, 80);
        owners.annotate(&mut e);
        assert_eq!(e.extra.src_process.as_deref(), Some(&*client));
        assert_eq!(e.extra.dst_process, None);
        // The reverse direction: the client is the receiver.
        let mut back = event(b, 80, a, 40000);
        owners.annotate(&mut back);
        assert_eq!((back.extra.src_process.is_none(), back.extra.dst_process.is_some()), (true, true));
        // Another connection of the same hosts is not this one.
        assert!(owners.either((a, 40001), (b, 80)).is_none());
        assert!(owners.either((b, 80), (a, 40000)).is_some());
    }

    #[test]
    fn service_labels_are_bounded_and_sum_to_the_total() {
        let mut c = ServiceCounts::default();
        let p = |i: usize| Process {
            pid: i as u32,
            comm: "x".into(),
            cgroup: Some(format!("svc{i}.service")),
            cgroup_id: i as u64,
            hook: HOOK_CONNECT.into(),
        };
        for i in 0..25 {
            c.retransmission(Some(&p(i)));
            c.retransmission(Some(&p(0)));
        }
        c.retransmission(None);
        c.alert(Some("svc3.service"));
        assert_eq!(c.by_service.len(), MAX_SERVICES + 2, "{:?}", c.by_service);
        assert_eq!(c.by_service["svc0.service"], (26, 0));
        assert_eq!(c.by_service["svc3.service"], (1, 1));
        assert_eq!(c.by_service["other"].0, 15);
        assert_eq!(c.by_service[UNATTRIBUTED].0, 1);
        assert_eq!(c.by_service.values().map(|v| v.0).sum::<u64>(), 51);
    }

    #[test]
    fn labels_name_the_cgroup_when_known() {
        let mut p = Process {
            pid: 42,
            comm: "nginx".into(),
            cgroup: Some("system.slice/nginx.service".into()),
            cgroup_id: 7,
            hook: HOOK_ACCEPT4.into(),
        };
        assert_eq!(p.label(), "nginx[42] system.slice/nginx.service");
        assert_eq!(p.service(), "system.slice/nginx.service");
        p.cgroup = Some("/".into());
        assert_eq!(p.service(), "nginx");
        p.cgroup = None;
        assert_eq!(p.label(), "nginx[42]");
    }
}
