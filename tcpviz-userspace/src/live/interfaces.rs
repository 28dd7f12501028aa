//! The interfaces the TC programs watch: `--iface NAME` (repeatable) or `--iface all`, which
//! also covers interfaces created while the agent runs (container veths) and lets go of
//! those that go away. Holds each one's attachment, its id in `capture.pcapng` and its
//! counts, and detaches everything when dropped, however the agent ends.

use std::collections::BTreeMap;

use aya::Ebpf;

use super::attach::{self, TcAttached, TcTarget};
use super::config::LinkHeader;
use super::leftovers::OurTags;
use super::link_events::{LinkChange, LinkEvents};
use super::netns::{self, Netns, in_netns};
use super::stop::StopSignals;
use super::{LiveError, TcMode, rtnl};
use crate::output::sections::InterfaceSection;
use crate::time::{TimestampNs, now_ns};

/// Which interfaces get the TC programs (`--iface`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Interfaces {
    /// None: the kernel's tracepoints only (or the wire from a file, `--pcap-path`).
    #[default]
    None,
    Named(Vec<String>),
    /// Every interface of the namespace, including those created later.
    All,
}

impl Interfaces {
    pub fn any(&self) -> bool {
        !matches!(self, Interfaces::None) && *self != Interfaces::Named(Vec::new())
    }

    /// How the session names them: `all`, or the names joined by commas.
    pub fn label(&self) -> Option<String> {
        match self {
            Interfaces::None => None,
            Interfaces::Named(names) if names.is_empty() => None,
            Interfaces::Named(names) => Some(names.join(",")),
            Interfaces::All => Some("all".into()),
        }
    }
}

/// One interface the agent attached to, or tried to.
pub struct WatchedInterface {
    pub name: String,
    pub ifindex: u32,
    pub header: Option<LinkHeader>,
    /// Its id in `capture.pcapng`, once the agent described it there.
    pub capture_id: Option<u32>,
    /// Packet records received from it.
    pub packets: u64,
    /// The TCP segments among them (a GSO packet as its segments).
    pub tcp_segments: u64,
    state: String,
    attached_at: Option<TimestampNs>,
    gone_at: Option<TimestampNs>,
    attached: Option<TcAttached>,
}

impl WatchedInterface {
    /// Its part of the session's `live` section.
    pub fn section(&self) -> InterfaceSection {
        InterfaceSection {
            name: self.name.clone(),
            ifindex: self.ifindex,
            link_header: self.header.map(|h| h.name().to_string()),
            hook: self.state.clone(),
            attached_at: self.attached_at,
            gone_at: self.gone_at,
            packets: self.packets,
            tcp_segments: self.tcp_segments,
        }
    }

    pub fn is_attached(&self) -> bool {
        self.attached.is_some()
    }
}

/// The interfaces the TC programs are attached to, by index (in the target namespace).
pub struct TcInterfaces {
    netns: Option<Netns>,
    ns_label: String,
    mode: TcMode,
    ours: OurTags,
    follow_new: bool,
    by_index: BTreeMap<u32, WatchedInterface>,
    /// Interfaces that went away and whose index a new one took since: kept for the session.
    replaced: Vec<WatchedInterface>,
}

impl TcInterfaces {
    /// Loads the TC programs and attaches them to the chosen interfaces; with `All`, also
    /// returns the notifications of interfaces that come and go (subscribed before the
    /// interfaces are listed, so that none falls between the two).
    pub(super) fn start(
        ebpf: &mut Ebpf,
        selection: &Interfaces,
        netns: Option<Netns>,
        mode: TcMode,
        stop: &StopSignals,
    ) -> Result<(TcInterfaces, Option<LinkEvents>), LiveError> {
        let ns_label = netns.as_ref().map(|n| format!(" (network namespace {})", n.name)).unwrap_or_default();
        let mut this = TcInterfaces {
            netns,
            ns_label,
            mode,
            ours: Vec::new(),
            follow_new: *selection == Interfaces::All,
            by_index: BTreeMap::new(),
            replaced: Vec::new(),
        };
        if !selection.any() {
            return Ok((this, None));
        }
        this.ours = attach::load_tc_programs(ebpf)?;
        let netns_name = this.netns.as_ref().map(|n| n.name.clone());
        let (events, present) = in_netns(this.netns.as_ref(), || -> Result<_, LiveError> {
            let events = match selection {
                Interfaces::All => Some(LinkEvents::open().map_err(|source| LiveError::Leftovers {
                    iface: "the interfaces (link notifications)".into(),
                    source,
                })?),
                _ => None,
            };
            let names = match selection {
                Interfaces::Named(names) => names.clone(),
                _ => rtnl::interfaces()
                    .map_err(|source| LiveError::Leftovers { iface: "the interfaces".into(), source })?
                    .into_iter()
                    .map(|(_, name)| name)
                    .collect(),
            };
            let mut present = Vec::new();
            for name in names {
                match netns::interface(&name) {
                    Ok((index, arphrd)) => present.push((index, name, arphrd)),
                    // Gone between the listing and now: its notification says so.
                    Err(_) if events.is_some() => {}
                    Err(source) => {
                        return Err(LiveError::NoInterface { iface: name, netns: netns_name.clone(), source });
                    }
                }
            }
            Ok((events, present))
        })??;
        // A stop signal from here on attaches nothing more; `attach_tc` records that.
        for (index, name, arphrd) in present {
            let header = LinkHeader::of(arphrd);
            if header.is_none() && !this.follow_new {
                return Err(LiveError::Attach {
                    what: format!("{name}{}", this.ns_label),
                    detail: format!("its link type (ARPHRD {arphrd}) carries neither Ethernet nor bare IP"),
                });
            }
            this.attach(ebpf, index, name, header, stop, !this.follow_new)?;
        }
        Ok((this, events))
    }

    /// Attaches to one interface. A failure is an error when `fatal`; otherwise it is said,
    /// recorded in the session, and the agent goes on.
    fn attach(
        &mut self,
        ebpf: &mut Ebpf,
        index: u32,
        name: String,
        header: Option<LinkHeader>,
        stop: &StopSignals,
        fatal: bool,
    ) -> Result<(), LiveError> {
        let mut watched = WatchedInterface {
            name,
            ifindex: index,
            header,
            capture_id: None,
            packets: 0,
            tcp_segments: 0,
            state: String::new(),
            attached_at: None,
            gone_at: None,
            attached: None,
        };
        let result = match header {
            Some(header) => {
                let target = TcTarget {
                    iface: &watched.name,
                    ifindex: index,
                    programs: header.programs(),
                    mode: self.mode,
                    ns_label: &self.ns_label,
                };
                let ours = &self.ours;
                in_netns(self.netns.as_ref(), || attach::attach_tc(ebpf, &target, ours, stop))?
            }
            None => Err(LiveError::Attach {
                what: watched.name.clone(),
                detail: "its link type carries neither Ethernet nor bare IP".into(),
            }),
        };
        match result {
            Ok(attached) => {
                watched.state = attached.state.clone();
                watched.attached_at = Some(now_ns());
                watched.attached = Some(attached);
            }
            Err(e) if !fatal => {
                crate::errln!("note: {}{} is not watched: {e}", watched.name, self.ns_label);
                watched.state = format!("not attached: {e}");
            }
            Err(e) => return Err(e),
        }
        if let Some(old) = self.by_index.insert(index, watched) {
            self.replaced.push(old);
        }
        Ok(())
    }

    /// Follows a link notification: a new interface is attached (with `--iface all`), one
    /// that went away is let go. Returns the index of an interface newly attached.
    pub(super) fn follow(&mut self, ebpf: &mut Ebpf, change: LinkChange, stop: &StopSignals) -> Option<u32> {
        match change {
            LinkChange::Present { index, name, arphrd } => {
                if let Some(known) = self.by_index.get_mut(&index).filter(|w| w.gone_at.is_none()) {
                    // A change of an interface already watched; only a rename matters.
                    known.name = name;
                    return None;
                }
                if !self.follow_new || stop.requested() {
                    return None;
                }
                let _ = self.attach(ebpf, index, name, LinkHeader::of(arphrd), stop, false);
                self.by_index.get(&index).filter(|w| w.is_attached()).map(|_| index)
            }
            LinkChange::Gone { index } => {
                self.let_go(index);
                None
            }
            LinkChange::Overflow => {
                crate::errln!("warning: link notifications were lost; listing the interfaces again");
                self.resync(ebpf, stop)
            }
        }
    }

    /// After lost notifications: lets go of interfaces that are no more, attaches the new
    /// ones (the first of them is returned; the others are attached too, and the agent finds
    /// them by their records).
    fn resync(&mut self, ebpf: &mut Ebpf, stop: &StopSignals) -> Option<u32> {
        let present = in_netns(self.netns.as_ref(), || {
            rtnl::interfaces().map(|list| {
                list.into_iter()
                    .filter_map(|(index, name)| netns::interface(&name).ok().map(|(_, arphrd)| (index, name, arphrd)))
                    .collect::<Vec<_>>()
            })
        });
        let Ok(Ok(present)) = present else { return None };
        let gone: Vec<u32> = self
            .by_index
            .iter()
            .filter(|(index, w)| w.gone_at.is_none() && !present.iter().any(|(i, ..)| i == *index))
            .map(|(index, _)| *index)
            .collect();
        for index in gone {
            self.let_go(index);
        }
        let mut first = None;
        for (index, name, arphrd) in present {
            if let Some(new) = self.follow(ebpf, LinkChange::Present { index, name, arphrd }, stop) {
                first.get_or_insert(new);
            }
        }
        first
    }

    /// The interface went away: its programs went with it; what tcpviz holds of them is
    /// dropped (in the namespace, where netlink detaches live).
    fn let_go(&mut self, index: u32) {
        let Some(w) = self.by_index.get_mut(&index).filter(|w| w.gone_at.is_none()) else { return };
        w.gone_at = Some(now_ns());
        if let Some(attached) = w.attached.take() {
            w.state = format!("{} (until the interface went away)", w.state);
            let _ = in_netns(self.netns.as_ref(), move || drop_attached(attached, index, ""));
        }
        tracing::info!("{} went away; let go", w.name);
    }

    pub fn get_mut(&mut self, ifindex: u32) -> Option<&mut WatchedInterface> {
        self.by_index.get_mut(&ifindex)
    }

    pub fn get(&self, ifindex: u32) -> Option<&WatchedInterface> {
        self.by_index.get(&ifindex)
    }

    /// Every interface of the session, those that went away included.
    pub fn iter(&self) -> impl Iterator<Item = &WatchedInterface> {
        self.replaced.iter().chain(self.by_index.values())
    }

    /// The TC mode of the attachments: `tcx`, `clsact`, `tcx+clsact`, or `none`.
    pub fn mode(&self) -> String {
        let mut modes: Vec<&str> = self.by_index.values().filter_map(|w| w.attached.as_ref().map(|a| a.mode)).collect();
        modes.sort_unstable();
        modes.dedup();
        if modes.is_empty() { "none".into() } else { modes.join("+") }
    }

    /// The hook state of each interface, for the session's `hooks`.
    pub fn hooks(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.iter().map(|w| (format!("tc:{}", w.name), w.state.clone()))
    }

    /// Whether a packet can be seen at two points of this host: several interfaces (a
    /// forwarded packet crosses two), or loopback (a packet leaves and comes back on it).
    pub fn sees_packets_twice(&self) -> bool {
        self.follow_new || self.by_index.len() > 1 || self.by_index.values().any(|w| w.name == "lo")
    }
}

/// Drops one interface's attachments (call in its namespace); removes the clsact qdisc this
/// agent added, unless the interface is gone and took it along.
fn drop_attached(attached: TcAttached, ifindex: u32, iface: &str) {
    let TcAttached { links, added_clsact, .. } = attached;
    drop(links);
    if let Some(marker) = added_clsact {
        if !iface.is_empty() {
            attach::remove_clsact_if_unused(ifindex, iface);
        }
        marker.remove();
    }
}

impl Drop for TcInterfaces {
    fn drop(&mut self) {
        let attached: Vec<(TcAttached, u32, String)> = self
            .by_index
            .values_mut()
            .filter_map(|w| w.attached.take().map(|a| (a, w.ifindex, w.name.clone())))
            .collect();
        if attached.is_empty() {
            return;
        }
        // Netlink (clsact) links detach through a netlink socket of the namespace they live
        // in: drop them there.
        let r = in_netns(self.netns.as_ref(), move || {
            for (a, ifindex, name) in attached {
                drop_attached(a, ifindex, &name);
            }
        });
        if let Err(e) = r {
            tracing::warn!("detaching{}: {e}", self.ns_label);
        }
    }
}
