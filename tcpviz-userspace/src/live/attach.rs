//! Loading the programs, attaching the tracepoints and the TC classifiers (with the clsact
//! marker and the leftovers of agents that could not detach), and the guard that detaches
//! it all.

use std::collections::BTreeMap;
use std::os::fd::AsFd;

use aya::maps::Array;
use aya::programs::tc::{NlOptions, SchedClassifierLink, TcAttachOptions};
use aya::programs::{LinkOrder, SchedClassifier, TcAttachType, TracePoint};
use aya::{Ebpf, EbpfLoader};
use tcpviz_common::{AgentConfig, TP_COUNT, TRACEPOINTS, TraceConfig};

use super::config::trace_config;
use super::leftovers::{self, ClsactMarker};
use super::netns::{self, Netns, in_netns};
use super::stop::{self, StopSignals};
use super::tracefs::Format;
use super::{LiveError, TcMode, bpf_info, rtnl};

pub(super) fn raise_memlock_limit() {
    let rlim = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: valid rlimit struct. Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        tracing::debug!("cannot raise RLIMIT_MEMLOCK");
    }
}

fn load_err(e: impl std::fmt::Display) -> LiveError {
    LiveError::Load(e.to_string())
}

/// Loads the object (maps created, programs not yet loaded) and fills the config maps; a
/// tracepoint without a format keeps an empty config, which disables its program.
pub(super) fn load(
    object: &[u8],
    packet_ring_bytes: Option<u32>,
    watched_entries: u32,
    cfg: AgentConfig,
    formats: &[Option<Format>; TP_COUNT],
) -> Result<Ebpf, LiveError> {
    raise_memlock_limit();
    let mut loader = EbpfLoader::new();
    if let Some(bytes) = packet_ring_bytes {
        loader.map_max_entries("PACKETS", bytes);
    }
    loader.map_max_entries("WATCHED", watched_entries.max(2));
    loader.override_global(aya_log::LEVEL, super::diagnostics::kernel_log_level(), true);
    let mut ebpf = loader.load(object).map_err(load_err)?;
    let mut config: Array<_, AgentConfig> =
        Array::try_from(ebpf.map_mut("CONFIG").expect("CONFIG map")).map_err(load_err)?;
    config.set(0, cfg, 0).map_err(load_err)?;
    let mut tcfg: Array<_, TraceConfig> =
        Array::try_from(ebpf.map_mut("TRACE_CONFIG").expect("TRACE_CONFIG map")).map_err(load_err)?;
    for (i, f) in formats.iter().enumerate() {
        let Some(f) = f else { continue };
        tcfg.set(i as u32, trace_config(i as u32, f), 0).map_err(load_err)?;
    }
    Ok(ebpf)
}

/// Attaches the tracepoints (global, not namespace-bound) that exist on this kernel. Each
/// attachment lives in the program's link list, so dropping `ebpf` detaches them. Returns
/// the state of each hook for the session.
pub(super) fn attach_tracepoints(
    ebpf: &mut Ebpf,
    formats: &[Option<Format>; TP_COUNT],
    stop: &StopSignals,
) -> Result<BTreeMap<String, String>, LiveError> {
    let mut hooks: BTreeMap<String, String> = BTreeMap::new();
    for (tp, format) in TRACEPOINTS.iter().zip(formats) {
        let label = format!("{}:{}", tp.category, tp.name);
        if format.is_none() {
            hooks.insert(label, "missing".into());
            continue;
        }
        if stop.requested() {
            hooks.insert(label, "not attached: stopped during start-up".into());
            continue;
        }
        let prog: &mut TracePoint =
            ebpf.program_mut(tp.program).expect("program in the object").try_into().map_err(load_err)?;
        prog.load().map_err(|e| LiveError::Load(format!("{}: {e}", tp.program)))?;
        match prog.attach(tp.category, tp.name) {
            Ok(_) => {
                hooks.insert(label, "attached".into());
            }
            Err(e) => {
                crate::errln!("note: cannot attach {label}: {e}; skipped");
                hooks.insert(label, format!("failed: {e}"));
            }
        }
    }
    stop::test_pause("attach-tracepoints");
    Ok(hooks)
}

/// Removes the clsact qdisc tcpviz added (in the calling thread's namespace), unless someone
/// else attached filters to it meanwhile: deleting the qdisc would delete theirs.
pub(super) fn remove_clsact_if_unused(ifindex: u32, iface: &str) {
    let r = rtnl::Rtnl::open().and_then(|mut nl| {
        let mut others = nl.filters(ifindex, rtnl::CLSACT_INGRESS)?;
        others.extend(nl.filters(ifindex, rtnl::CLSACT_EGRESS)?);
        if others.is_empty() {
            nl.delete_clsact(ifindex)?;
        }
        Ok(others.len())
    });
    match r {
        Ok(0) => {}
        // The interface went away, and its qdiscs with it.
        Err(e) if rtnl::errno(&e) == Some(libc::ENODEV) => {}
        Ok(n) => crate::errln!("note: kept the clsact qdisc tcpviz added on {iface}: other filters use it now ({n})"),
        Err(e) => crate::errln!(
            "warning: could not remove the clsact qdisc tcpviz added on {iface} ({e}): run `tc qdisc del dev {iface} clsact`"
        ),
    }
}

fn attach_err(what: &str) -> impl Fn(aya::programs::ProgramError) -> LiveError + '_ {
    move |e| LiveError::Attach { what: what.to_string(), detail: format!("{e}") }
}

/// Loads the TC programs; returns their tags, to tell our own leftovers from others'.
pub(super) fn load_tc_programs(ebpf: &mut Ebpf) -> Result<leftovers::OurTags, LiveError> {
    let mut ours: leftovers::OurTags = Vec::new();
    for name in leftovers::TC_PROGRAMS {
        let prog: &mut SchedClassifier =
            ebpf.program_mut(name).expect("program in the object").try_into().map_err(load_err)?;
        prog.load().map_err(|e| LiveError::Load(format!("{name}: {e}")))?;
        let fd = prog.fd().map_err(|e| LiveError::Load(format!("{name}: {e}")))?;
        let info = bpf_info::prog_info(fd.as_fd()).map_err(|e| LiveError::Load(format!("{name}: {e}")))?;
        ours.push((name.to_string(), info.tag));
    }
    Ok(ours)
}

/// The tags of this build's TC programs (loaded, never attached), to tell leftovers of this
/// very build from those of another one. Empty when they cannot be loaded.
fn tc_program_tags() -> leftovers::OurTags {
    let Some(object) = crate::ebpf::object() else { return Vec::new() };
    raise_memlock_limit();
    let mut loader = EbpfLoader::new();
    loader.map_max_entries("PACKETS", 4096);
    let mut ebpf = match loader.load(object) {
        Ok(e) => e,
        Err(e) => {
            tracing::debug!("cannot load the programs for their tags: {e}");
            return Vec::new();
        }
    };
    let mut tags = Vec::new();
    for name in leftovers::TC_PROGRAMS {
        let Some(Ok(prog)) = ebpf.program_mut(name).map(<&mut SchedClassifier>::try_from) else { continue };
        if prog.load().is_err() {
            continue;
        }
        if let Ok(info) = prog
            .fd()
            .map_err(|e| e.to_string())
            .and_then(|fd| bpf_info::prog_info(fd.as_fd()).map_err(|e| e.to_string()))
        {
            tags.push((name.to_string(), info.tag));
        }
    }
    tags
}

/// `tcpviz live --cleanup`: removes what agents that could not detach left on one interface
/// (`Some(name)`) or on every interface of the namespace (`None`), without starting.
/// Returns what it found and did, one line each.
pub fn cleanup(iface: Option<&str>, netns_name: Option<&str>) -> Result<Vec<String>, LiveError> {
    // Once begun, a cleanup finishes: a signal must not leave it half-done.
    let _stop = StopSignals::install()?;
    if !super::privileged() {
        return Err(LiveError::NotPrivileged);
    }
    let netns = match netns_name {
        Some(name) => Some(Netns::open(name).map_err(|source| LiveError::Netns { name: name.to_string(), source })?),
        None => None,
    };
    let ours = tc_program_tags();
    let ns_label = netns_name.map(|n| format!(" (network namespace {n})")).unwrap_or_default();
    let cleanup_err = |source| LiveError::Leftovers { iface: format!("the interfaces{ns_label}"), source };
    in_netns(netns.as_ref(), || {
        let interfaces = match iface {
            Some(name) => {
                let (index, _) = netns::interface(name).map_err(|source| LiveError::NoInterface {
                    iface: name.to_string(),
                    netns: netns_name.map(str::to_string),
                    source,
                })?;
                vec![(index, name.to_string())]
            }
            None => rtnl::interfaces().map_err(cleanup_err)?,
        };
        let mut nl = rtnl::Rtnl::open().map_err(cleanup_err)?;
        let with_clsact = nl.clsact_interfaces().map_err(cleanup_err)?;
        let mut lines = Vec::new();
        for (index, name) in &interfaces {
            let report = leftovers::clean_interface(&mut nl, *index, name, with_clsact.contains(index), &ours)
                .map_err(|source| LiveError::Leftovers { iface: format!("{name}{ns_label}"), source })?;
            lines.extend(report.lines(&ns_label));
        }
        if lines.is_empty() {
            let which = match iface {
                Some(name) => format!("on {name}"),
                None => format!("on any of the {} interfaces", interfaces.len()),
            };
            lines.push(format!("no leftovers of tcpviz {which}{ns_label}"));
        }
        Ok(lines)
    })?
}

/// The TC programs attached to one interface.
pub(super) struct TcAttached {
    pub links: Vec<SchedClassifierLink>,
    /// The clsact qdisc this agent added (and the marker that records it).
    pub added_clsact: Option<ClsactMarker>,
    pub mode: &'static str,
    /// What the session records for the hook.
    pub state: String,
}

impl TcAttached {
    fn stopped(mut self) -> TcAttached {
        self.state = format!("{}: stopped during start-up", self.mode);
        self
    }
}

/// Where and how one interface gets its TC programs.
pub(super) struct TcTarget<'a> {
    pub iface: &'a str,
    pub ifindex: u32,
    /// The (ingress, egress) programs for its link header.
    pub programs: [&'static str; 2],
    pub mode: TcMode,
    /// " (network namespace NAME)" or empty, for messages.
    pub ns_label: &'a str,
}

/// Attaches a pair of TC programs (call in the interface's namespace), after removing what
/// an agent that could not detach left there. Stops early, with what it attached so far,
/// when a stop signal arrives.
pub(super) fn attach_tc(
    ebpf: &mut Ebpf,
    target: &TcTarget<'_>,
    ours: &leftovers::OurTags,
    stop: &StopSignals,
) -> Result<TcAttached, LiveError> {
    let TcTarget { iface, ifindex, programs, mode, ns_label } = *target;
    let leftover_err = |source| LiveError::Leftovers { iface: format!("{iface}{ns_label}"), source };
    let mut nl = rtnl::Rtnl::open().map_err(leftover_err)?;
    let has_clsact = nl.clsact_interfaces().map_err(leftover_err)?.contains(&ifindex);
    let report = leftovers::clean_interface(&mut nl, ifindex, iface, has_clsact, ours).map_err(leftover_err)?;
    for line in report.lines(ns_label) {
        crate::errln!("note: {line}");
    }
    let mut out = TcAttached { links: Vec::new(), added_clsact: None, mode: "none", state: String::new() };
    if stop.requested() {
        return Ok(out.stopped());
    }
    if mode != TcMode::Clsact {
        out.mode = "tcx";
        let tcx_error = match attach_tcx(ebpf, iface, programs, stop, &mut out)? {
            TcxOutcome::Attached => {
                out.state = "tcx".into();
                return Ok(out);
            }
            TcxOutcome::Stopped => return Ok(out.stopped()),
            TcxOutcome::Unavailable(e) => e,
        };
        out.links.clear();
        if mode == TcMode::Tcx {
            return Err(LiveError::Attach { what: format!("TCX on {iface}"), detail: tcx_error });
        }
        crate::errln!("note: TCX unavailable ({tcx_error}); using a clsact qdisc");
    }
    out.mode = "clsact";
    attach_clsact(ebpf, (iface, ifindex), programs, stop, out)
}

enum TcxOutcome {
    Attached,
    Stopped,
    /// The kernel refused TCX (older than 6.6): why.
    Unavailable(String),
}

/// Attaches both programs with TCX links, pushing them to `out.links`.
fn attach_tcx(
    ebpf: &mut Ebpf,
    iface: &str,
    programs: [&str; 2],
    stop: &StopSignals,
    out: &mut TcAttached,
) -> Result<TcxOutcome, LiveError> {
    for (name, at) in programs.into_iter().zip([TcAttachType::Ingress, TcAttachType::Egress]) {
        let prog: &mut SchedClassifier = ebpf.program_mut(name).expect("program").try_into().expect("classifier");
        match prog.attach_with_options(iface, at, TcAttachOptions::TcxOrder(LinkOrder::default())) {
            Ok(id) => out.links.push(prog.take_link(id).map_err(attach_err(name))?),
            Err(e) => return Ok(TcxOutcome::Unavailable(e.to_string())),
        }
        if at == TcAttachType::Ingress {
            stop::test_pause("attach-ingress");
        }
        if stop.requested() {
            return Ok(TcxOutcome::Stopped);
        }
    }
    Ok(TcxOutcome::Attached)
}

/// Attaches both programs as clsact filters, adding the qdisc if the interface has none
/// (recorded by a marker, so that what a killed agent added can be told from others').
fn attach_clsact(
    ebpf: &mut Ebpf,
    (iface, ifindex): (&str, u32),
    programs: [&str; 2],
    stop: &StopSignals,
    mut out: TcAttached,
) -> Result<TcAttached, LiveError> {
    // Recorded before the qdisc exists, so that a kill right after adding it still leaves
    // the proof that tcpviz added it.
    let marker = ClsactMarker {
        iface: iface.to_string(),
        ifindex,
        netns_inum: leftovers::thread_netns_inum().unwrap_or(0),
        programs: tc_program_ids(ebpf),
        pid: std::process::id(),
    };
    marker.write();
    match aya::programs::tc::qdisc_add_clsact(iface) {
        Ok(()) => out.added_clsact = Some(marker),
        Err(aya::programs::tc::TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {
            // Someone else's qdisc (ours, left by a crash, went with the leftovers): used,
            // and left in place at the end.
            marker.remove();
        }
        Err(e) => {
            marker.remove();
            return Err(LiveError::Attach { what: format!("a clsact qdisc on {iface}"), detail: e.to_string() });
        }
    }
    stop::test_pause("attach-qdisc");
    for (name, at) in programs.into_iter().zip([TcAttachType::Ingress, TcAttachType::Egress]) {
        if stop.requested() {
            return Ok(out.stopped());
        }
        let prog: &mut SchedClassifier = ebpf.program_mut(name).expect("program").try_into().expect("classifier");
        let attached = prog
            .attach_with_options(iface, at, TcAttachOptions::Netlink(NlOptions::default()))
            .and_then(|id| prog.take_link(id));
        match attached {
            Ok(link) => out.links.push(link),
            Err(e) => {
                // Leave the interface as it was: what was attached goes, and the qdisc too.
                out.links.clear();
                if let Some(marker) = out.added_clsact.take() {
                    remove_clsact_if_unused(ifindex, iface);
                    marker.remove();
                }
                return Err(attach_err(name)(e));
            }
        }
        if at == TcAttachType::Ingress {
            stop::test_pause("attach-ingress");
        }
    }
    out.state = if out.added_clsact.is_some() { "clsact".into() } else { "clsact (an existing qdisc)".into() };
    Ok(out)
}

/// The kernel ids of the (loaded) TC programs.
fn tc_program_ids(ebpf: &mut Ebpf) -> Vec<u32> {
    let mut prog_ids = Vec::new();
    for name in leftovers::TC_PROGRAMS {
        let prog: &mut SchedClassifier = ebpf.program_mut(name).expect("program").try_into().expect("classifier");
        if let Ok(info) = prog
            .fd()
            .map_err(|e| e.to_string())
            .and_then(|fd| bpf_info::prog_info(fd.as_fd()).map_err(|e| e.to_string()))
        {
            prog_ids.push(info.id);
        }
    }
    prog_ids
}

// Without its programs (AYA_BUILD_SKIP) there is nothing to compare.
#[cfg(all(test, not(tcpviz_ebpf_skipped)))]
mod tests {
    use aya_obj::{Object, ProgramSection};

    use super::*;

    /// The kernel programs are named by hand in tcpviz-ebpf: they must be those of the table.
    #[test]
    fn the_tracepoint_programs_are_those_of_the_table() {
        let object = Object::parse(crate::ebpf::object().expect("built with its programs")).expect("the object parses");
        let mut in_object: Vec<&str> = object
            .programs
            .iter()
            .filter(|(_, p)| matches!(p.section, ProgramSection::TracePoint))
            .map(|(name, _)| name.as_str())
            .collect();
        in_object.sort_unstable();
        let mut in_table: Vec<&str> = TRACEPOINTS.iter().map(|tp| tp.program).collect();
        in_table.sort_unstable();
        assert_eq!(in_object, in_table);
        for name in leftovers::TC_PROGRAMS {
            assert!(matches!(object.programs[name].section, ProgramSection::SchedClassifier), "{name}");
        }
    }
}
