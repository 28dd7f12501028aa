//! What an agent that could not detach (SIGKILL, power cut of the process, OOM killer)
//! leaves on an interface, and how the next agent, or `tcpviz live --cleanup`, removes it.
//!
//! - TCX links and tracepoint attachments belong to the process's file descriptors: the
//!   kernel removes them with the process. tcpviz pins nothing in bpffs.
//! - clsact filters stay: the kernel keeps them, and their programs, until someone deletes
//!   them. A leftover is a `bpf` filter on a clsact hook whose program the kernel names
//!   `tcpviz_ingress` or `tcpviz_egress` and that no process holds any more (a running
//!   agent holds its programs open; see [`bpf_info::holders`]). Other filters are never
//!   touched.
//! - The clsact qdisc stays too. An agent that adds one records it in a marker file
//!   (`/run/tcpviz/`) with the ids of the programs it attaches; the qdisc is removed as a
//!   leftover only when that marker names programs that were still attached to it (so it is
//!   the very qdisc that agent added: deleting a qdisc deletes its filters) and no other
//!   filter uses it. A qdisc tcpviz cannot prove it added is left in place, and said so.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use aya::programs::{SchedClassifier, TcAttachType};

use super::bpf_info::{self, ProgInfo};
use super::rtnl::{CLSACT_EGRESS, CLSACT_INGRESS, Rtnl, TcFilter};

/// The kernel names of tcpviz's TC programs: for interfaces with an Ethernet header, and for
/// L3 devices (names of at most 15 bytes: the kernel keeps no more).
pub const TC_PROGRAMS: [&str; 4] = ["tcpviz_ingress", "tcpviz_egress", "tcpviz_ingr_l3", "tcpviz_egr_l3"];

/// Where agents record the clsact qdiscs they added.
const MARKER_DIR: &str = "/run/tcpviz";

/// Tags of the TC programs this tcpviz loads (by name), to tell "the same program" from "a
/// tcpviz program of another build".
pub type OurTags = Vec<(String, [u8; 8])>;

/// A filter removed as a leftover.
#[derive(Debug, Clone)]
pub struct RemovedFilter {
    pub hook: &'static str,
    pub prog: ProgInfo,
    /// Its tag equals that of the program this tcpviz loads.
    pub same_build: bool,
}

/// What was found (and done) on one interface.
#[derive(Debug, Default)]
pub struct InterfaceReport {
    pub iface: String,
    pub removed: Vec<RemovedFilter>,
    /// tcpviz filters a running process still holds (another agent): left alone.
    /// (hook, program id, pid, command)
    pub running: Vec<(&'static str, u32, u32, String)>,
    /// tcpviz programs attached by TCX. Held ones belong to a running agent; unheld ones can
    /// only be kept by a pinned link.
    pub tcx: Vec<TcxProgram>,
    pub qdisc: QdiscOutcome,
    /// Filters of others found on the clsact hooks (left alone).
    pub foreign_filters: usize,
}

/// A tcpviz program attached by TCX, and the processes that hold it: (pid, command).
#[derive(Debug, Clone)]
pub struct TcxProgram {
    pub hook: &'static str,
    pub id: u32,
    pub holders: Vec<(u32, String)>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum QdiscOutcome {
    /// No clsact qdisc, or one tcpviz had no part in.
    #[default]
    Untouched,
    /// The clsact qdisc a killed agent added: removed.
    Removed,
    /// A clsact qdisc remains with nothing on it, and no marker says tcpviz added it.
    KeptUnproven,
    /// A killed agent added it, but other filters use it now: kept.
    KeptInUse,
}

impl InterfaceReport {
    /// Lines for the operator, saying what was found and done.
    pub fn lines(&self, ns: &str) -> Vec<String> {
        let mut out = Vec::new();
        let on = format!("{}{ns}", self.iface);
        if !self.removed.is_empty() {
            let what: Vec<String> = self
                .removed
                .iter()
                .map(|r| {
                    format!(
                        "{} on {} (program id {}, tag {}: {})",
                        r.prog.name,
                        r.hook,
                        r.prog.id,
                        r.prog.tag_hex(),
                        if r.same_build {
                            "the same program as this tcpviz"
                        } else {
                            "a tcpviz program of another build"
                        }
                    )
                })
                .collect();
            out.push(format!(
                "removed the TC filters a tcpviz that did not stop cleanly left on {on}, which no process holds: {}",
                what.join(", ")
            ));
        }
        match self.qdisc {
            QdiscOutcome::Removed => out.push(format!("removed the clsact qdisc that tcpviz had added on {on}")),
            QdiscOutcome::KeptInUse => out.push(format!(
                "kept the clsact qdisc tcpviz had added on {on}: other filters use it ({})",
                self.foreign_filters + self.running.len()
            )),
            QdiscOutcome::KeptUnproven => out.push(format!(
                "kept the empty clsact qdisc on {on}: tcpviz cannot tell that it added it (remove it with `tc qdisc del dev {} clsact` if nothing needs it)",
                self.iface
            )),
            QdiscOutcome::Untouched => {}
        }
        for (hook, id, pid, comm) in &self.running {
            out.push(format!(
                "left alone: a tcpviz filter on {on} {hook} (program id {id}) that a running process holds ({comm}, pid {pid})"
            ));
        }
        for TcxProgram { hook, id, holders } in &self.tcx {
            if holders.is_empty() {
                out.push(format!(
                    "left alone: a tcpviz program attached by TCX on {on} {hook} (program id {id}) that no process holds: a pinned link (tcpviz pins none); remove its pin in /sys/fs/bpf"
                ));
            } else {
                let who: Vec<String> = holders.iter().map(|(pid, comm)| format!("{comm}, pid {pid}")).collect();
                out.push(format!(
                    "left alone: a tcpviz program attached by TCX on {on} {hook} (program id {id}) of a running process ({})",
                    who.join("; ")
                ));
            }
        }
        out
    }
}

/// The marker an agent writes when it adds a clsact qdisc.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClsactMarker {
    pub iface: String,
    pub ifindex: u32,
    pub netns_inum: u64,
    /// Ids of the programs the agent attaches on it.
    pub programs: Vec<u32>,
    pub pid: u32,
}

/// The network namespace of the calling thread.
pub fn thread_netns_inum() -> io::Result<u64> {
    Ok(std::fs::metadata("/proc/thread-self/ns/net")?.ino())
}

fn marker_path(netns_inum: u64, ifindex: u32) -> PathBuf {
    PathBuf::from(MARKER_DIR).join(format!("clsact-{netns_inum}-{ifindex}.json"))
}

impl ClsactMarker {
    /// Records it (call in the interface's namespace); a failure only costs the proof after
    /// a crash, so it is logged, not fatal.
    pub fn write(&self) {
        let path = marker_path(self.netns_inum, self.ifindex);
        let r = std::fs::create_dir_all(MARKER_DIR).and_then(|()| {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, serde_json::to_vec(self).unwrap_or_default())?;
            std::fs::rename(&tmp, &path)
        });
        if let Err(e) = r {
            tracing::warn!("cannot record the clsact qdisc in {}: {e}", path.display());
        }
    }

    pub fn remove(&self) {
        let _ = std::fs::remove_file(marker_path(self.netns_inum, self.ifindex));
    }

    fn read(netns_inum: u64, ifindex: u32) -> Option<ClsactMarker> {
        let text = std::fs::read(marker_path(netns_inum, ifindex)).ok()?;
        serde_json::from_slice(&text).ok()
    }
}

/// Looks for leftovers on one interface (in the calling thread's namespace) and removes
/// them. `has_clsact`: whether the interface has a clsact qdisc
/// ([`Rtnl::clsact_interfaces`]).
pub fn clean_interface(
    rtnl: &mut Rtnl,
    ifindex: u32,
    iface: &str,
    has_clsact: bool,
    ours: &OurTags,
) -> io::Result<InterfaceReport> {
    let mut report = InterfaceReport { iface: iface.to_string(), ..Default::default() };
    let netns_inum = thread_netns_inum()?;
    let marker = ClsactMarker::read(netns_inum, ifindex);
    if has_clsact {
        let mut ours_attached: Vec<(TcFilter, ProgInfo)> = Vec::new();
        for parent in [CLSACT_INGRESS, CLSACT_EGRESS] {
            for f in rtnl.filters(ifindex, parent)? {
                let info = f.prog_id.filter(|_| f.kind == "bpf").and_then(|id| bpf_info::prog_info_by_id(id).ok());
                match info {
                    Some(info) if TC_PROGRAMS.contains(&info.name.as_str()) => ours_attached.push((f, info)),
                    _ => report.foreign_filters += 1,
                }
            }
        }
        let ids: Vec<u32> = ours_attached.iter().map(|(_, p)| p.id).collect();
        let held = bpf_info::holders(&ids);
        for (f, prog) in ours_attached {
            if let Some((_, pid, comm)) = held.iter().find(|(id, _, _)| *id == prog.id) {
                report.running.push((f.hook(), prog.id, *pid, comm.clone()));
                continue;
            }
            rtnl.delete_filter(ifindex, &f)?;
            let same_build = ours.iter().any(|(name, tag)| *name == prog.name && *tag == prog.tag);
            report.removed.push(RemovedFilter { hook: f.hook(), prog, same_build });
        }
        if let Some(m) = &marker {
            let removed_its_programs = report.removed.iter().any(|r| m.programs.contains(&r.prog.id));
            if removed_its_programs {
                if report.foreign_filters == 0 && report.running.is_empty() {
                    rtnl.delete_clsact(ifindex)?;
                    report.qdisc = QdiscOutcome::Removed;
                } else {
                    report.qdisc = QdiscOutcome::KeptInUse;
                }
            }
        }
        // An empty qdisc after leftovers, or where an agent was about to attach when it was
        // killed: likely tcpviz's, but not proven.
        if report.qdisc == QdiscOutcome::Untouched
            && (!report.removed.is_empty() || marker.is_some())
            && report.foreign_filters == 0
            && report.running.is_empty()
        {
            report.qdisc = QdiscOutcome::KeptUnproven;
        }
    }
    // The marker proves something only while its programs are attached (its agent runs):
    // otherwise it is spent (its qdisc was just handled) or stale (the qdisc went away).
    if let Some(m) = &marker
        && !report.running.iter().any(|(_, id, _, _)| m.programs.contains(id))
    {
        m.remove();
    }
    // TCX: the kernel drops a link with its last descriptor, so only a running agent or a
    // pinned link can hold one of ours.
    for (hook, at) in [("ingress", TcAttachType::Ingress), ("egress", TcAttachType::Egress)] {
        let Ok((_, progs)) = SchedClassifier::query_tcx(iface, at) else { continue };
        for p in progs {
            if !p.name_as_str().is_some_and(|n| TC_PROGRAMS.contains(&n)) {
                continue;
            }
            let holders = bpf_info::holders(&[p.id()]).into_iter().map(|(_, pid, comm)| (pid, comm)).collect();
            report.tcx.push(TcxProgram { hook, id: p.id(), holders });
        }
    }
    Ok(report)
}
