//! The live agent (`tcpviz live`): eBPF hooks in the kernel feed the same pipeline as the
//! files do.
//!
//! TC snapshots of the chosen interface go through `decode_frame` and the wire analysis
//! (events with `origin: "wire"`) and into `capture.pcapng`; tracepoint records become
//! kernel events (`origin: "kernel"`, joined to the wire flows) and kernel samples (cwnd,
//! ssthresh, srtt). Alerts, summary, benchmark log and dashboards are those of the other
//! modes. Everything attached is detached at the end, also when the agent panics.

mod agent;
mod attach;
pub mod attribution;
pub mod bpf_info;
pub mod btf;
pub mod clock;
pub mod config;
mod diagnostics;
pub mod interfaces;
pub mod leftovers;
pub mod link_events;
pub mod losses;
pub mod metrics;
pub mod netns;
pub mod netstat;
pub mod records;
pub mod rtnl;
pub mod stop;
pub mod tracefs;
pub mod vantage;
mod watched;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use tcpviz_common::{TP_COUNT, TRACEPOINTS};

pub use self::attach::cleanup;
pub use self::config::CapturePolicy;
use self::config::{AgentSettings, KernelOffsets};
pub use self::interfaces::Interfaces;
pub use self::losses::KernelLosses;
use self::netns::{Netns, in_netns};
use self::tracefs::Format;
use crate::alert::AlertConfig;
use crate::flow::table::FlowLimits;
use crate::output::session::{SUMMARY_FILE, Session, SessionError};
use crate::output::summary::Summary;

/// How TC programs are attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcMode {
    /// TCX where the kernel has it (6.6+), else clsact.
    Auto,
    Tcx,
    Clsact,
}

#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// Interfaces for the TC snapshots (none: kernel hooks only, e.g. with `pcap_path`).
    pub ifaces: Interfaces,
    pub netns: Option<String>,
    pub duration: Option<Duration>,
    pub session: Session,
    pub limits: FlowLimits,
    pub summary_flows: usize,
    pub alerts: AlertConfig,
    /// Wire packets from a capture being written instead of the TC snapshots.
    pub pcap_path: Option<String>,
    pub tc_mode: TcMode,
    pub ports: Vec<u16>,
    pub addrs: Vec<Ipv4Addr>,
    pub metrics_addr: Option<SocketAddr>,
    /// Size of the packet ring buffer in bytes (a power of two, at least a page).
    pub packet_ring_bytes: Option<u32>,
    /// Wake the reader once this many bytes are queued.
    pub wakeup_bytes: u32,
    /// Which packets the TC programs copy.
    pub capture: CapturePolicy,
    /// How long a connection stays watched after its last trouble (policy `troubled`).
    pub watch: Duration,
    /// Most connections watched at once (the LRU map's size; each takes two entries).
    pub max_watched: u32,
    /// Where the terminal view (`--tui`) takes its snapshots from.
    pub view: Option<crate::tui::snapshot::SnapshotSlot>,
}

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("tcpviz live needs root, or the CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN capabilities: run it with sudo")]
    NotPrivileged,
    #[error("this tcpviz was built without its eBPF programs (AYA_BUILD_SKIP): rebuild without it")]
    NoPrograms,
    #[error("cannot enter network namespace {name} (list them with `ip netns list`)")]
    Netns { name: String, source: std::io::Error },
    #[error("no interface {iface}{} (list them with `ip link`{})", in_ns(.netns), ns_hint(.netns))]
    NoInterface { iface: String, netns: Option<String>, source: std::io::Error },
    #[error(transparent)]
    Btf(#[from] btf::BtfError),
    #[error(transparent)]
    Tracefs(#[from] tracefs::TracefsError),
    #[error(
        "cannot create the eBPF maps or load the programs: {0} (ring buffers need Linux 5.8+; a locked-memory limit may also be too low)"
    )]
    Load(String),
    #[error("cannot attach {what}: {detail}")]
    Attach { what: String, detail: String },
    #[error("cannot check {iface} for what a tcpviz that did not stop cleanly left attached")]
    Leftovers { iface: String, source: std::io::Error },
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("cannot serve metrics on {addr} (--metrics-addr)")]
    Metrics { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Follow(#[from] crate::pipeline::follower::FollowError),
    #[error(transparent)]
    Tail(#[from] crate::capture::tail::TailError),
    #[error(
        "nothing to watch: give --iface (TC snapshots; `all` for every interface) or --pcap-path (a capture being written)"
    )]
    NothingToWatch,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

fn in_ns(ns: &Option<String>) -> String {
    ns.as_ref().map(|n| format!(" in network namespace {n}")).unwrap_or_default()
}

fn ns_hint(ns: &Option<String>) -> String {
    ns.as_ref().map(|n| format!(", or `ip -n {n} link`")).unwrap_or_default()
}

/// What a live run produced.
pub struct LiveResult {
    pub summary: Summary,
    pub written: Vec<PathBuf>,
    pub losses: KernelLosses,
    /// Stop signals received when the session was complete.
    signals_at_end: usize,
}

fn privileged() -> bool {
    use tcpviz_common::privilege::{CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON, has_capabilities, is_root};
    is_root() || has_capabilities(&[CAP_NET_ADMIN, CAP_PERFMON, CAP_BPF])
}

/// Runs the agent until Ctrl-C, SIGTERM or the end of `duration`.
///
/// A stop signal that arrives while the agent starts makes it attach nothing more; it then
/// ends at once through the normal path (detach, session files).
pub fn run(opts: &LiveOptions) -> Result<LiveResult, LiveError> {
    // Before anything is attached: a signal must never end the process with hooks in place.
    let stop = stop::StopSignals::install()?;
    if !privileged() {
        return Err(LiveError::NotPrivileged);
    }
    // Policy `kernel` runs no TC program: the interfaces only name the session.
    let tc_opts;
    let opts = if opts.capture == CapturePolicy::Kernel && opts.ifaces.any() {
        tc_opts = LiveOptions { ifaces: Interfaces::None, ..opts.clone() };
        &tc_opts
    } else {
        opts
    };
    if !opts.ifaces.any() && opts.pcap_path.is_none() && opts.capture != CapturePolicy::Kernel {
        return Err(LiveError::NothingToWatch);
    }
    let object = crate::ebpf::object().ok_or(LiveError::NoPrograms)?;
    let netns = match &opts.netns {
        Some(name) => Some(Netns::open(name).map_err(|source| LiveError::Netns { name: name.clone(), source })?),
        None => None,
    };
    // Named interfaces must exist (in their namespace) before anything is loaded.
    if let Interfaces::Named(names) = &opts.ifaces {
        for iface in names {
            in_netns(netns.as_ref(), || netns::interface(iface))?.map_err(|source| LiveError::NoInterface {
                iface: iface.clone(),
                netns: opts.netns.clone(),
                source,
            })?;
        }
    }
    // The kernel's own counters of the namespace, before anything runs (a second handle on
    // it: the interfaces keep theirs).
    let counters_ns = match &opts.netns {
        Some(name) => Some(Netns::open(name).map_err(|source| LiveError::Netns { name: name.clone(), source })?),
        None => None,
    };
    let tcp_ext_before = in_netns(counters_ns.as_ref(), netstat::read_tcp_ext)?;
    let btf = btf::Btf::from_kernel()?;
    let formats = tracepoint_formats()?;
    let offsets = KernelOffsets {
        sk_net: btf.offset_of("sock.__sk_common.skc_net.net")?,
        net_inum: btf.offset_of("net.ns.inum")?,
        skb_cb: btf.offset_of("sk_buff.cb")?,
        skb_gso: match (btf.offset_of("tcp_skb_cb.tcp_gso_segs"), btf.offset_of("tcp_skb_cb.tcp_gso_size")) {
            // Read as two u16 side by side; any other layout leaves the segments unknown.
            (Ok(segs), Ok(size)) if size == segs + 2 && segs > 0 => segs,
            _ => 0,
        },
        mss_cache: btf.offset_of("tcp_sock.mss_cache").unwrap_or(0),
        fd_path: btf::fd_path(&btf),
        sock_ends: btf::sock_ends(&btf),
    };
    let settings = AgentSettings {
        netns_inum: netns.as_ref().map(|n| n.inum).unwrap_or(0),
        wakeup_bytes: opts.wakeup_bytes,
        ports: &opts.ports,
        addrs: &opts.addrs,
        // Without a TC program there is nothing to copy, hence nothing to watch.
        capture: if opts.ifaces.any() { opts.capture } else { CapturePolicy::Kernel },
        watch_ns: opts.watch.as_nanos().min(u64::MAX as u128) as u64,
    };
    let cfg = config::agent_config(&settings, offsets);
    let mut ebpf = attach::load(object, opts.packet_ring_bytes, opts.max_watched.saturating_mul(2), cfg, &formats)?;
    let mut hooks = attach::attach_tracepoints(&mut ebpf, &formats, &stop)?;
    let (mut interfaces, link_events) =
        interfaces::TcInterfaces::start(&mut ebpf, &opts.ifaces, netns, opts.tc_mode, &stop)?;
    hooks.extend(interfaces.hooks());

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let inputs = agent::AgentInputs { opts, formats, hooks, stop: &stop, counters_ns, tcp_ext_before };
    let result = runtime.block_on(agent::agent_loop(inputs, &mut ebpf, &mut interfaces, link_events));
    crate::sd_notify::stopping();
    drop(interfaces);
    drop(ebpf);
    // Detached first: drawing the pages takes a moment and needs no hooks.
    let mut result = result?;
    if result.written.contains(&opts.session.path(SUMMARY_FILE)) {
        result.written.extend(write_dashboards(opts.session.dir(), &stop, result.signals_at_end));
    }
    Ok(result)
}

/// The record layout of every tracepoint; `None` for those this kernel lacks.
fn tracepoint_formats() -> Result<[Option<Format>; TP_COUNT], LiveError> {
    let root = tracefs::tracefs_root()?;
    let mut formats: [Option<Format>; TP_COUNT] = Default::default();
    for (slot, tp) in formats.iter_mut().zip(&TRACEPOINTS) {
        *slot = tracefs::read_format(&root, tp.category, tp.name)?;
        if slot.is_none() {
            crate::errln!("note: tracepoint {}:{} does not exist on this kernel; skipped", tp.category, tp.name);
        }
    }
    Ok(formats)
}

/// The dashboards, one page after the other; a signal received after the agent began to
/// stop skips the pages not yet written (each page is written whole or not at all).
fn write_dashboards(dir: &std::path::Path, stop: &stop::StopSignals, signals_at_end: usize) -> Vec<PathBuf> {
    use crate::report::DASHBOARDS;
    crate::report::write_dashboards(dir, |i| {
        if i == 1 {
            stop::test_pause("dashboards");
        }
        if stop.received() > signals_at_end {
            let rest: Vec<String> =
                DASHBOARDS[i..].iter().map(|d| format!("`{} {}`", d.command, dir.display())).collect();
            crate::errln!("note: stopping at once: dashboards not written; write them later with {}", rest.join(", "));
            return false;
        }
        true
    })
}
