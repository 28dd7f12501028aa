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

/// Bound of the owners of open sockets: past it the table is emptied and starts again
/// (counted in `resets`), so memory stays bounded even if closes are missed.
pub const MAX_OWNERS: usize = 262_144;
/// Owners of closed sockets kept, for their connections' late events and the summary made
/// at the end of the run: the most recently closed, the eldest let go first (counted).
pub const MAX_CLOSED_OWNERS: usize = 262_144;

/// The owners the agent learned, by socket. Looked up per event and per alert, never per
/// packet. A socket's owner moves from the open table to the closed one when the socket
/// closes, so a host that opens connections without end keeps only its open sockets and
/// the latest closed ones.
#[derive(Debug, Default)]
pub struct Owners {
    open: HashMap<SocketKey, Arc<Process>>,
    closed: HashMap<SocketKey, Arc<Process>>,
    /// The keys of `closed`, eldest first (each once).
    closed_order: std::collections::VecDeque<SocketKey>,
    /// Times the open table was full and emptied.
    pub resets: u64,
    /// Closed sockets' owners let go to stay within [`MAX_CLOSED_OWNERS`].
    pub forgotten: u64,
}

impl Owners {
    pub fn is_empty(&self) -> bool {
        self.open.is_empty() && self.closed.is_empty()
    }

    /// Owners known, of open and closed sockets.
    pub fn len(&self) -> usize {
        self.open.len() + self.closed.len()
    }

    pub fn insert(&mut self, socket: SocketKey, owner: Arc<Process>) {
        if self.open.len() >= MAX_OWNERS && !self.open.contains_key(&socket) {
            self.open.clear();
            self.resets += 1;
        }
        self.open.insert(socket, owner);
    }

    /// The socket closed: its owner is kept with the recently closed ones.
    pub fn close(&mut self, socket: SocketKey) {
        let Some(owner) = self.open.remove(&socket) else { return };
        if self.closed.insert(socket, owner).is_some() {
            // Closed before (a reused pair of ports): it keeps its place in the order.
            return;
        }
        self.closed_order.push_back(socket);
        while self.closed.len() > MAX_CLOSED_OWNERS {
            let Some(eldest) = self.closed_order.pop_front() else { break };
            self.closed.remove(&eldest);
            self.forgotten += 1;
        }
    }

    /// The owner of the socket at `local` talking to `remote` (an open socket's first).
    pub fn get(&self, local: (IpAddr, u16), remote: (IpAddr, u16)) -> Option<&Arc<Process>> {
        let key = (local.0, local.1, remote.0, remote.1);
        self.open.get(&key).or_else(|| self.closed.get(&key))
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

/// Services with a label of their own in the per-service counts; the others are summed
/// under `other`.
pub const MAX_SERVICES: usize = 10;
/// The label of trouble on a connection whose sockets have no known owner.
pub const UNATTRIBUTED: &str = "unattributed";
/// The label of the services without one of their own.
pub const OTHER: &str = "other";
/// Services whose recent trouble is remembered, to rank them; past it the least troubled go.
const MAX_RANKED: usize = 4_096;
/// Recent trouble halves in this time: the labels go to the services suffering now, not to
/// those that suffered once (a pod restarted on Kubernetes is a new cgroup, a new service).
const HALF_LIFE_SECS: f64 = 300.0;
/// A service without a label takes that of the least troubled labelled one only with this
/// many times its recent trouble (labels do not flap between services at the boundary).
const TAKE_OVER: f64 = 2.0;
/// Recent trouble below this is forgotten.
const FORGOTTEN: f64 = 0.01;

/// Retransmissions and alerts per service, for `/metrics`: the top [`MAX_SERVICES`] by
/// recent trouble (decaying with a half-life of [`HALF_LIFE_SECS`]) have a label of their
/// own, the rest count under [`OTHER`], connections with no known owner under
/// [`UNATTRIBUTED`].
///
/// Each label's counts only go up: a service's series counts from when it got its label,
/// and when it gives the label up its series ends (the counts go, Prometheus marks it stale)
/// and its trouble counts under `other` from then on. So `rate()` of every series, and their
/// sum, is right at all times; `other` never jumps.
#[derive(Debug, Default, Clone)]
pub struct ServiceCounts {
    /// label -> (retransmissions, alerts) since the label was given.
    pub by_label: std::collections::BTreeMap<String, (u64, u64)>,
    /// Recent trouble of each service ranked, labelled or not.
    recent: HashMap<String, f64>,
    /// Times labels were taken from one service and given to another.
    pub relabelled: u64,
}

impl ServiceCounts {
    fn labelled(&self) -> usize {
        self.by_label.keys().filter(|k| *k != OTHER && *k != UNATTRIBUTED).count()
    }

    fn slot(&mut self, service: Option<&str>) -> &mut (u64, u64) {
        let Some(name) = service else {
            return self.by_label.entry(UNATTRIBUTED.to_string()).or_default();
        };
        let room = self.recent.len() < MAX_RANKED;
        match self.recent.get_mut(name) {
            Some(r) => *r += 1.0,
            None if room => {
                self.recent.insert(name.to_string(), 1.0);
            }
            // Full: the next rerank makes room.
            None => {}
        }
        // A free label is given at once; a taken one only at a rerank.
        let key = if self.by_label.contains_key(name) || self.labelled() < MAX_SERVICES { name } else { OTHER };
        self.by_label.entry(key.to_string()).or_default()
    }

    /// A retransmission event: counted for the sender's service.
    pub fn retransmission(&mut self, sender: Option<&Process>) {
        self.slot(sender.map(Process::service)).0 += 1;
    }

    pub fn alert(&mut self, service: Option<&str>) {
        self.slot(service).1 += 1;
    }

    /// Decays recent trouble by `elapsed_secs` and hands the labels to the most troubled
    /// services now (called about once a second, before the metrics are read).
    pub fn rerank(&mut self, elapsed_secs: f64) {
        let keep = 0.5f64.powf(elapsed_secs.max(0.0) / HALF_LIFE_SECS);
        for r in self.recent.values_mut() {
            *r *= keep;
        }
        let by_label = &self.by_label;
        self.recent.retain(|name, r| *r >= FORGOTTEN || by_label.contains_key(name));
        if self.recent.len() > MAX_RANKED * 3 / 4 {
            let mut scores: Vec<f64> = self.recent.values().copied().collect();
            let cut = scores.len() - MAX_RANKED / 2;
            let (_, &mut floor, _) = scores.select_nth_unstable_by(cut, f64::total_cmp);
            self.recent.retain(|name, r| *r > floor || by_label.contains_key(name));
        }
        loop {
            let recent = |name: &str| self.recent.get(name).copied().unwrap_or(0.0);
            let weakest = (self.by_label.keys())
                .filter(|k| *k != OTHER && *k != UNATTRIBUTED)
                .min_by(|a, b| recent(a).total_cmp(&recent(b)).then_with(|| a.cmp(b)))
                .cloned();
            let strongest = (self.recent.iter())
                .filter(|(name, _)| !self.by_label.contains_key(*name))
                .max_by(|a, b| a.1.total_cmp(b.1).then_with(|| b.0.cmp(a.0)))
                .map(|(name, r)| (name.clone(), *r));
            let Some((name, r)) = strongest else { break };
            match weakest {
                Some(_) if self.labelled() < MAX_SERVICES => {}
                None => {}
                Some(w) if r > TAKE_OVER * recent(&w) => {
                    self.by_label.remove(&w);
                    self.relabelled += 1;
                }
                Some(_) => break,
            }
            self.by_label.insert(name, (0, 0));
        }
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

    fn service(i: usize) -> Process {
        Process {
            pid: i as u32,
            comm: "x".into(),
            cgroup: Some(format!("svc{i}.service")),
            cgroup_id: i as u64,
            hook: HOOK_CONNECT.into(),
        }
    }

    #[test]
    fn closed_sockets_keep_their_owners_within_a_bound() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let p = Arc::new(service(1));
        let mut owners = Owners::default();
        let key = |port: usize| (a, (port % 60_000) as u16 + 1, b, (port / 60_000) as u16 + 80);
        // A host that opens and closes connections without end: the open ones stay, the
        // latest closed ones too, the eldest closed are let go (counted), nothing is reset.
        owners.insert((a, 9, b, 9), p.clone());
        for port in 0..MAX_CLOSED_OWNERS + 10 {
            owners.insert(key(port), p.clone());
            owners.close(key(port));
        }
        assert_eq!((owners.resets, owners.forgotten), (0, 10));
        assert_eq!(owners.len(), MAX_CLOSED_OWNERS + 1);
        assert!(owners.get((a, 9), (b, 9)).is_some(), "an open socket is never let go");
        let (eldest, latest) = (key(0), key(MAX_CLOSED_OWNERS + 9));
        assert!(owners.get((eldest.0, eldest.1), (eldest.2, eldest.3)).is_none());
        assert!(owners.get((latest.0, latest.1), (latest.2, latest.3)).is_some());
        // A pair of ports reused: the new owner, then closed again, counted once.
        let other = Arc::new(service(2));
        owners.insert(latest, other.clone());
        assert_eq!(owners.get((latest.0, latest.1), (latest.2, latest.3)), Some(&other));
        owners.close(latest);
        assert_eq!(owners.len(), MAX_CLOSED_OWNERS + 1);
        assert_eq!(owners.get((latest.0, latest.1), (latest.2, latest.3)), Some(&other));
    }

    #[test]
    fn service_labels_are_bounded_and_sum_to_the_total() {
        let mut c = ServiceCounts::default();
        for i in 0..25 {
            c.retransmission(Some(&service(i)));
            c.retransmission(Some(&service(0)));
        }
        c.retransmission(None);
        c.alert(Some("svc3.service"));
        assert_eq!(c.by_label.len(), MAX_SERVICES + 2, "{:?}", c.by_label);
        assert_eq!(c.by_label["svc0.service"], (26, 0));
        assert_eq!(c.by_label["svc3.service"], (1, 1));
        assert_eq!(c.by_label[OTHER].0, 15);
        assert_eq!(c.by_label[UNATTRIBUTED].0, 1);
        assert_eq!(c.by_label.values().map(|v| v.0).sum::<u64>(), 51);
        // Nobody is more troubled than the labelled ones by far: the labels stay.
        c.rerank(1.0);
        assert_eq!(c.by_label.len(), MAX_SERVICES + 2);
        assert_eq!(c.relabelled, 0);
    }

    #[test]
    fn the_labels_go_to_the_services_suffering_now() {
        let mut c = ServiceCounts::default();
        // Ten services suffer, then stop; an hour later a new one (a restarted pod) does.
        for i in 0..MAX_SERVICES {
            for _ in 0..100 {
                c.retransmission(Some(&service(i)));
            }
        }
        c.rerank(3_600.0);
        for _ in 0..50 {
            c.retransmission(Some(&service(99)));
        }
        // Until the rerank it counts under `other`; then it has a label of its own, counting
        // from there, and the least troubled of the old ones gave its label up.
        assert_eq!(c.by_label[OTHER].0, 50);
        c.rerank(1.0);
        assert_eq!(c.relabelled, 1);
        assert_eq!(c.by_label["svc99.service"], (0, 0));
        assert_eq!(c.labelled(), MAX_SERVICES);
        c.retransmission(Some(&service(99)));
        assert_eq!(c.by_label["svc99.service"].0, 1);
        assert_eq!(c.by_label[OTHER].0, 50, "other only goes up, and only by unlabelled trouble");
        // Labels do not flap at the boundary: with every labelled service suffering as much
        // as now, a newcomer needs twice the least one's recent trouble to take its label.
        let mut d = ServiceCounts::default();
        for i in 0..MAX_SERVICES {
            for _ in 0..100 {
                d.retransmission(Some(&service(i)));
            }
        }
        for _ in 0..150 {
            d.retransmission(Some(&service(50)));
        }
        d.rerank(1.0);
        assert!(!d.by_label.contains_key("svc50.service"));
        for _ in 0..100 {
            d.retransmission(Some(&service(50)));
        }
        d.rerank(1.0);
        assert!(d.by_label.contains_key("svc50.service"));
        assert_eq!((d.relabelled, d.labelled()), (1, MAX_SERVICES));
        // Services that stopped long ago are forgotten; what is remembered stays bounded.
        for i in 1000..1000 + MAX_RANKED + 10 {
            c.alert(Some(&format!("burst{i}.service")));
        }
        c.rerank(1.0);
        assert!(c.recent.len() <= MAX_RANKED);
        c.rerank(100_000.0);
        assert!(c.recent.len() <= MAX_SERVICES, "{}", c.recent.len());
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
