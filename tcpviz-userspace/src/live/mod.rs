//! The live agent (`tcpviz live`): eBPF hooks in the kernel feed the same pipeline as the
//! files do.
//!
//! TC snapshots of the chosen interface go through `decode_frame` and the wire analysis
//! (events with `origin: "wire"`) and into `capture.pcapng`; tracepoint records become
//! kernel events (`origin: "kernel"`, joined to the wire flows) and kernel samples (cwnd,
//! ssthresh, srtt). Alerts, summary, benchmark log and dashboards are those of the other
//! modes. Everything attached is detached at the end, also when the agent panics.

pub mod btf;
pub mod clock;
pub mod metrics;
pub mod netns;
pub mod records;
pub mod tracefs;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aya::maps::{Array, MapData, PerCpuArray, RingBuf};
use aya::programs::tc::{NlOptions, SchedClassifierLink, TcAttachOptions};
use aya::programs::{LinkOrder, SchedClassifier, TcAttachType, TracePoint};
use aya::{Ebpf, EbpfLoader};
use tcpviz_common::{
    AgentConfig, COUNTER_PACKETS_LOST, COUNTER_TRACE_FILTERED, COUNTER_TRACE_LOST, COUNTER_TRACE_SEEN, COUNTERS,
    FILTER_SLOTS, NO_FIELD, PacketRecord, SNAP_LEN, TP_COUNT, TP_RETRANSMIT_SKB, TRACE_RAW_LEN, TRACEPOINTS,
    TraceConfig, TraceRecord,
};
use tokio::io::unix::AsyncFd;

use self::clock::BootClock;
use self::netns::{Netns, in_netns};
use self::records::{Decoded, decode_trace};
use self::tracefs::Format;
use crate::alert::AlertConfig;
use crate::capture::frame::{Direction, Frame, LinkType, TimestampNs};
use crate::capture::tail::Tailer;
use crate::event::KernelSample;
use crate::flow::table::FlowLimits;
use crate::monitor::{AlertingSink, follow_pass};
use crate::offline::write_json;
use crate::output::jsonl::JsonlWriter;
use crate::output::pcapng::PcapngWriter;
use crate::output::session::{ALERTS_FILE, BENCHMARK_FILE, EVENTS_FILE, KERNEL_SAMPLES_FILE, SUMMARY_FILE};
use crate::output::summary::Summary;
use crate::pipeline::Pipeline;

pub const CAPTURE_FILE: &str = "capture.pcapng";

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
    /// Interface for the TC snapshots (None: kernel hooks only, e.g. with `pcap_path`).
    pub iface: Option<String>,
    pub netns: Option<String>,
    pub duration: Option<Duration>,
    pub session_dir: PathBuf,
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
}

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("tcpviz live needs root, or the CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN capabilities: run it with sudo")]
    NotPrivileged,
    #[error("this tcpviz was built without its eBPF programs (AYA_BUILD_SKIP): rebuild without it")]
    NoPrograms,
    #[error("network namespace {name}: {source} (list them with `ip netns list`)")]
    Netns { name: String, source: std::io::Error },
    #[error("no interface {iface}{}: {source} (list them with `ip link`{})", in_ns(.netns), ns_hint(.netns))]
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
    #[error("cannot write {path}: {source}")]
    Output { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Follow(#[from] crate::monitor::MonitorError),
    #[error(transparent)]
    Tail(#[from] crate::capture::tail::TailError),
    #[error("nothing to watch: give --iface (TC snapshots) or --pcap-path (a capture being written)")]
    NothingToWatch,
    #[error("{0}")]
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
    pub lost_events: u64,
}

fn privileged() -> bool {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    // Effective capabilities: CAP_NET_ADMIN (12), CAP_PERFMON (38), CAP_BPF (39).
    let caps = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("CapEff:").map(|v| v.trim().to_string())))
        .and_then(|v| u64::from_str_radix(&v, 16).ok())
        .unwrap_or(0);
    caps & (1 << 12) != 0 && caps & (1 << 38) != 0 && caps & (1 << 39) != 0
}

/// Attachments that must go when the agent ends, however it ends.
struct Attachments {
    netns: Option<Netns>,
    iface: String,
    tc_links: Vec<SchedClassifierLink>,
    added_clsact: bool,
}

impl Drop for Attachments {
    fn drop(&mut self) {
        let links = std::mem::take(&mut self.tc_links);
        let (iface, added) = (self.iface.clone(), self.added_clsact);
        // Netlink (clsact) links detach through a netlink socket of the namespace they live
        // in: drop them there.
        let r = in_netns(self.netns.as_ref(), move || {
            drop(links);
            if added {
                remove_clsact(&iface);
            }
        });
        if let Err(e) = r {
            tracing::warn!("detaching from {}: {e}", self.iface);
        }
    }
}

/// Removes the clsact qdisc tcpviz added (in the calling thread's namespace).
fn remove_clsact(iface: &str) {
    let st = std::process::Command::new("tc").args(["qdisc", "del", "dev", iface, "clsact"]).status();
    if !st.is_ok_and(|s| s.success()) {
        eprintln!(
            "warning: could not remove the clsact qdisc tcpviz added on {iface}: run `tc qdisc del dev {iface} clsact`"
        );
    }
}

fn attach_err(what: &str) -> impl Fn(aya::programs::ProgramError) -> LiveError + '_ {
    move |e| LiveError::Attach { what: what.to_string(), detail: format!("{e}") }
}

/// Runs the agent until Ctrl-C, SIGTERM or the end of `duration`.
pub fn run(opts: &LiveOptions) -> Result<LiveResult, LiveError> {
    if !privileged() {
        return Err(LiveError::NotPrivileged);
    }
    if opts.iface.is_none() && opts.pcap_path.is_none() {
        return Err(LiveError::NothingToWatch);
    }
    let object = crate::ebpf::object().ok_or(LiveError::NoPrograms)?;
    let netns = match &opts.netns {
        Some(name) => Some(Netns::open(name).map_err(|source| LiveError::Netns { name: name.clone(), source })?),
        None => None,
    };
    // The interface must exist (in its namespace) before anything is loaded.
    let iface_info = match &opts.iface {
        Some(iface) => {
            let info = in_netns(netns.as_ref(), || netns::interface(iface))?
                .map_err(|source| LiveError::NoInterface { iface: iface.clone(), netns: opts.netns.clone(), source })?;
            Some(info)
        }
        None => None,
    };
    let btf = btf::Btf::from_kernel()?;
    let root = tracefs::tracefs_root()?;
    let mut formats: [Option<Format>; TP_COUNT] = Default::default();
    for (i, (cat, name)) in TRACEPOINTS.iter().enumerate() {
        formats[i] = tracefs::read_format(&root, cat, name)?;
        if formats[i].is_none() {
            eprintln!("note: tracepoint {cat}:{name} does not exist on this kernel; skipped");
        }
    }

    raise_memlock_limit();
    let mut loader = EbpfLoader::new();
    if let Some(bytes) = opts.packet_ring_bytes {
        loader.map_max_entries("PACKETS", bytes);
    }
    let mut ebpf = loader.load(object).map_err(|e| LiveError::Load(e.to_string()))?;

    // Configuration for the kernel side.
    let (l2_len, link_type) = match iface_info {
        // ARPHRD_NONE (tun, wireguard) and other L3 devices carry no link header.
        Some((_, 65534)) | Some((_, 778)) => (0, LinkType::RAW),
        _ => (14, LinkType::ETHERNET),
    };
    let mut cfg = AgentConfig {
        netns_inum: netns.as_ref().map(|n| n.inum as u32).unwrap_or(0),
        sk_net_off: btf.offset_of("sock.__sk_common.skc_net.net")?,
        net_inum_off: btf.offset_of("net.ns.inum")?,
        skb_cb_off: btf.offset_of("sk_buff.cb")?,
        l2_len,
        wakeup_bytes: opts.wakeup_bytes,
        ..Default::default()
    };
    for (i, p) in opts.ports.iter().take(FILTER_SLOTS).enumerate() {
        cfg.ports[i] = *p;
        cfg.port_count = i as u32 + 1;
    }
    for (i, a) in opts.addrs.iter().take(FILTER_SLOTS).enumerate() {
        cfg.addr4[i] = u32::from_ne_bytes(a.octets());
        cfg.addr4_count = i as u32 + 1;
    }
    {
        let mut config: Array<_, AgentConfig> =
            Array::try_from(ebpf.map_mut("CONFIG").expect("CONFIG map")).map_err(|e| LiveError::Load(e.to_string()))?;
        config.set(0, cfg, 0).map_err(|e| LiveError::Load(e.to_string()))?;
        let mut tcfg: Array<_, TraceConfig> = Array::try_from(ebpf.map_mut("TRACE_CONFIG").expect("TRACE_CONFIG map"))
            .map_err(|e| LiveError::Load(e.to_string()))?;
        for (i, f) in formats.iter().enumerate() {
            let Some(f) = f else { continue };
            let off = |name: &str| f.field(name).map(|x| x.offset as u16).unwrap_or(NO_FIELD);
            let c = TraceConfig {
                raw_len: f.record_len().min(TRACE_RAW_LEN) as u16,
                skaddr_off: off("skaddr"),
                skbaddr_off: if i as u32 == TP_RETRANSMIT_SKB { off("skbaddr") } else { NO_FIELD },
                _pad: 0,
            };
            tcfg.set(i as u32, c, 0).map_err(|e| LiveError::Load(e.to_string()))?;
        }
    }

    // Tracepoints (global, not namespace-bound).
    let mut hooks: BTreeMap<String, String> = BTreeMap::new();
    const PROGRAMS: [&str; TP_COUNT] = [
        "tcpviz_retransmit_skb",
        "tcpviz_retransmit_synack",
        "tcpviz_probe",
        "tcpviz_cong_state_set",
        "tcpviz_inet_sock_set_state",
        "tcpviz_send_reset",
        "tcpviz_receive_reset",
    ];
    for (i, prog_name) in PROGRAMS.iter().enumerate() {
        let (cat, name) = TRACEPOINTS[i];
        let label = format!("{cat}:{name}");
        if formats[i].is_none() {
            hooks.insert(label, "missing".into());
            continue;
        }
        let prog: &mut TracePoint = ebpf
            .program_mut(prog_name)
            .expect("program in the object")
            .try_into()
            .map_err(|e| LiveError::Load(format!("{e}")))?;
        prog.load().map_err(|e| LiveError::Load(format!("{prog_name}: {e}")))?;
        match prog.attach(cat, name) {
            Ok(_) => {
                hooks.insert(label, "attached".into());
            }
            Err(e) => {
                eprintln!("note: cannot attach {label}: {e}; skipped");
                hooks.insert(label, format!("failed: {e}"));
            }
        }
    }

    // TC classifier on the interface, inside its namespace.
    let mut attachments =
        Attachments { netns, iface: opts.iface.clone().unwrap_or_default(), tc_links: Vec::new(), added_clsact: false };
    let mut tc_mode_used = "none";
    if let Some(iface) = &opts.iface {
        for name in ["tcpviz_ingress", "tcpviz_egress"] {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(name)
                .expect("program in the object")
                .try_into()
                .map_err(|e| LiveError::Load(format!("{e}")))?;
            prog.load().map_err(|e| LiveError::Load(format!("{name}: {e}")))?;
        }
        let mode = opts.tc_mode;
        let result = in_netns(attachments.netns.as_ref(), || attach_tc(&mut ebpf, iface, mode))?;
        let (links, added, used) = result?;
        attachments.tc_links = links;
        attachments.added_clsact = added;
        tc_mode_used = used;
        hooks.insert(format!("tc:{iface}"), used.to_string());
    }

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let result = runtime.block_on(agent_loop(opts, &mut ebpf, formats, link_type, &hooks, tc_mode_used));
    drop(attachments);
    drop(ebpf);
    // Detached first: drawing the pages takes a moment and needs no hooks.
    let mut result = result?;
    result.written.extend(crate::monitor::write_dashboards(&opts.session_dir));
    Ok(result)
}

type TcAttached = (Vec<SchedClassifierLink>, bool, &'static str);

fn attach_tc(ebpf: &mut Ebpf, iface: &str, mode: TcMode) -> Result<TcAttached, LiveError> {
    let mut links = Vec::new();
    let try_tcx = mode != TcMode::Clsact;
    let mut tcx_error = None;
    if try_tcx {
        let mut ok = true;
        for (name, at) in [("tcpviz_ingress", TcAttachType::Ingress), ("tcpviz_egress", TcAttachType::Egress)] {
            let prog: &mut SchedClassifier = ebpf.program_mut(name).expect("program").try_into().expect("classifier");
            match prog.attach_with_options(iface, at, TcAttachOptions::TcxOrder(LinkOrder::default())) {
                Ok(id) => links.push(prog.take_link(id).map_err(attach_err(name))?),
                Err(e) => {
                    tcx_error = Some(e.to_string());
                    ok = false;
                    break;
                }
            }
        }
        if ok {
            return Ok((links, false, "tcx"));
        }
        links.clear();
        if mode == TcMode::Tcx {
            return Err(LiveError::Attach { what: format!("TCX on {iface}"), detail: tcx_error.unwrap_or_default() });
        }
        eprintln!("note: TCX unavailable ({}); using a clsact qdisc", tcx_error.unwrap_or_default());
    }
    let added = match aya::programs::tc::qdisc_add_clsact(iface) {
        Ok(()) => true,
        Err(e) if e.to_string().contains("exists") => false,
        Err(e) => return Err(LiveError::Attach { what: format!("a clsact qdisc on {iface}"), detail: e.to_string() }),
    };
    for (name, at) in [("tcpviz_ingress", TcAttachType::Ingress), ("tcpviz_egress", TcAttachType::Egress)] {
        let prog: &mut SchedClassifier = ebpf.program_mut(name).expect("program").try_into().expect("classifier");
        let attached = prog
            .attach_with_options(iface, at, TcAttachOptions::Netlink(NlOptions::default()))
            .and_then(|id| prog.take_link(id));
        match attached {
            Ok(link) => links.push(link),
            Err(e) => {
                // Leave the interface as it was: what was attached goes, and the qdisc too.
                drop(links);
                if added {
                    remove_clsact(iface);
                }
                return Err(attach_err(name)(e));
            }
        }
    }
    Ok((links, added, "clsact"))
}

fn raise_memlock_limit() {
    let rlim = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: valid rlimit struct. Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        tracing::debug!("cannot raise RLIMIT_MEMLOCK");
    }
}

/// A record from either ring, for ordering by time.
enum Rec {
    Packet(PacketRecord),
    Trace(TraceRecord),
}

impl Rec {
    fn ts(&self) -> u64 {
        match self {
            Rec::Packet(p) => p.ts_boot_ns,
            Rec::Trace(t) => t.ts_boot_ns,
        }
    }
}

/// Per-CPU counters of the kernel side, summed.
fn read_counters(map: &PerCpuArray<MapData, u64>) -> [u64; COUNTERS] {
    let mut out = [0u64; COUNTERS];
    for (i, slot) in out.iter_mut().enumerate() {
        if let Ok(values) = map.get(&(i as u32), 0) {
            *slot = values.iter().sum();
        }
    }
    out
}

type SocketKey = (IpAddr, u16, IpAddr, u16);

/// Writes kernel samples, at most one per socket per 100 ms unless cwnd or ssthresh change.
struct SampleWriter {
    out: JsonlWriter,
    /// Last sample written per socket: time, cwnd, ssthresh.
    last: rustc_hash::FxHashMap<SocketKey, (TimestampNs, u32, u32)>,
    written: u64,
}

impl SampleWriter {
    fn write(&mut self, s: &KernelSample) -> std::io::Result<()> {
        let key = (s.src, s.sport, s.dst, s.dport);
        if let Some(&(ts, cwnd, ssthresh)) = self.last.get(&key)
            && s.ts - ts < 100_000_000
            && cwnd == s.snd_cwnd
            && ssthresh == s.ssthresh
        {
            return Ok(());
        }
        if self.last.len() >= 65_536 {
            self.last.clear();
        }
        self.last.insert(key, (s.ts, s.snd_cwnd, s.ssthresh));
        self.written += 1;
        self.out.write(s)
    }
}

async fn agent_loop(
    opts: &LiveOptions,
    ebpf: &mut Ebpf,
    formats: [Option<Format>; TP_COUNT],
    link_type: LinkType,
    hooks: &BTreeMap<String, String>,
    tc_mode: &str,
) -> Result<LiveResult, LiveError> {
    let dir = &opts.session_dir;
    let out_err = |p: &str| {
        let path = dir.join(p);
        move |source| LiveError::Output { path, source }
    };
    let clock = BootClock::measure();
    let mut sink = AlertingSink::create(dir, opts.alerts.clone()).map_err(out_err(EVENTS_FILE))?;
    let mut pipeline = Pipeline::new(opts.limits);
    pipeline.set_summary_limit(opts.summary_flows);
    pipeline.set_kernel_mode(true);
    let use_tc_for_wire = opts.pcap_path.is_none();
    let mut capture = match &opts.iface {
        Some(iface) => Some(
            PcapngWriter::create(&dir.join(CAPTURE_FILE), link_type, iface, SNAP_LEN as u32)
                .map_err(out_err(CAPTURE_FILE))?,
        ),
        None => None,
    };
    if use_tc_for_wire {
        pipeline.add_file(&dir.join(CAPTURE_FILE).display().to_string());
    }
    let mut samples = SampleWriter {
        out: JsonlWriter::create(&dir.join(KERNEL_SAMPLES_FILE)).map_err(out_err(KERNEL_SAMPLES_FILE))?,
        last: Default::default(),
        written: 0,
    };
    let mut tailer = match &opts.pcap_path {
        Some(p) => Some(Tailer::new(p)?),
        None => None,
    };
    if let Some(t) = &tailer {
        pipeline.set_always_name_files(t.may_span_files());
    }
    let (mut sources, mut follow_errors, mut waiting) = (Vec::new(), Vec::new(), false);

    let packets = RingBuf::try_from(ebpf.take_map("PACKETS").expect("PACKETS map"))
        .map_err(|e| LiveError::Load(e.to_string()))?;
    let traces =
        RingBuf::try_from(ebpf.take_map("TRACES").expect("TRACES map")).map_err(|e| LiveError::Load(e.to_string()))?;
    let counters: PerCpuArray<MapData, u64> = PerCpuArray::try_from(ebpf.take_map("COUNTS").expect("COUNTS map"))
        .map_err(|e| LiveError::Load(e.to_string()))?;
    // SAFETY: each ring buffer owns its map's file descriptor, which stays open as long as
    // the AsyncFd that wraps it.
    let mut packets = unsafe { AsyncFd::register(packets) }.map_err(|e| LiveError::Load(format!("{e}")))?;
    let mut traces = unsafe { AsyncFd::register(traces) }.map_err(|e| LiveError::Load(format!("{e}")))?;

    let metrics = metrics::Metrics::default();
    if let Some(addr) = opts.metrics_addr {
        metrics::serve(addr, metrics.clone()).await?;
        eprintln!("metrics on http://{addr}/metrics");
    }

    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
    let mut frame_no = 0u64;
    // TCP packets as a capture tool sees them: a GSO super-packet counts its segments.
    let mut segments_seen = 0u64;
    let mut bad_records = 0u64;
    let mut lost_reported = 0u64;
    let mut last_counters = Instant::now();
    let mut batch: Vec<Rec> = Vec::new();
    let panic_after: Option<u64> = std::env::var("TCPVIZ_TEST_PANIC_AFTER_PACKETS").ok().and_then(|v| v.parse().ok());
    eprintln!(
        "tcpviz live: {}{}{} (Ctrl-C to stop)",
        opts.iface.as_deref().map(|i| format!("TC {tc_mode} on {i}")).unwrap_or_default(),
        opts.netns.as_deref().map(|n| format!(" in {n}")).unwrap_or_default(),
        opts.pcap_path.as_deref().map(|p| format!(", wire packets from {p}")).unwrap_or_default()
    );

    loop {
        let stop = tokio::select! {
            r = packets.readable_mut() => { r?.clear_ready(); false }
            r = traces.readable_mut() => { r?.clear_ready(); false }
            _ = tick.tick() => false,
            _ = sigint.recv() => true,
            _ = sigterm.recv() => true,
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => true,
        };
        // Drain both rings, then handle the records in time order.
        batch.clear();
        for ring in [packets.get_mut(), traces.get_mut()] {
            while let Some(item) = ring.next() {
                match tcpviz_common::decode::record(&item) {
                    Ok(tcpviz_common::decode::Record::Packet(p)) => batch.push(Rec::Packet(p)),
                    Ok(tcpviz_common::decode::Record::Trace(t)) => batch.push(Rec::Trace(t)),
                    Err(e) => {
                        bad_records += 1;
                        tracing::debug!("bad ring record: {e:?}");
                    }
                }
            }
        }
        batch.sort_by_key(Rec::ts);
        for rec in batch.drain(..) {
            match rec {
                Rec::Packet(p) => {
                    frame_no += 1;
                    let ts = clock.to_wall(p.ts_boot_ns);
                    let data = &p.data[..p.snap_len as usize];
                    let direction = Some(if p.direction == tcpviz_common::DIR_EGRESS {
                        Direction::Egress
                    } else {
                        Direction::Ingress
                    });
                    if let Some(c) = capture.as_mut() {
                        c.write_packet(ts, data, p.orig_len, direction).map_err(out_err(CAPTURE_FILE))?;
                    }
                    let frame =
                        Frame { ts, link_type, data, orig_len: p.orig_len, interface: 0, number: frame_no, direction };
                    // What a capture tool would count: TCP packets, a GSO packet as its segments.
                    let is_tcp = if use_tc_for_wire {
                        let before = pipeline.counters.tcp_segments;
                        pipeline.process_frame(&frame, 0, &mut sink).map_err(out_err(EVENTS_FILE))?;
                        pipeline.counters.tcp_segments > before
                    } else {
                        crate::capture::decode_frame(&frame).is_ok()
                    };
                    if is_tcp {
                        segments_seen += p.gso_segs.max(1) as u64;
                    }
                    if panic_after.is_some_and(|n| frame_no >= n) {
                        panic!("TCPVIZ_TEST_PANIC_AFTER_PACKETS reached (a test of the crash path)");
                    }
                }
                Rec::Trace(t) => match decode_trace(&t, &formats, clock.to_wall(t.ts_boot_ns)) {
                    Decoded::Event(k) => pipeline.process_kernel(&k, &mut sink).map_err(out_err(EVENTS_FILE))?,
                    Decoded::Sample(mut s) => {
                        s.flow_id = pipeline.analyzer().flow_id_of(s.src, s.sport, s.dst, s.dport);
                        samples.write(&s).map_err(out_err(KERNEL_SAMPLES_FILE))?;
                    }
                    Decoded::Skip => {}
                },
            }
        }
        if let Some(t) = tailer.as_mut() {
            follow_pass(t, &mut pipeline, &mut sink, &mut sources, &mut follow_errors, &mut waiting)?;
        }
        if let Some(last) = pipeline.counters.last_ts {
            sink.tick(last.max(clock.to_wall(clock::boot_now()))).map_err(out_err(ALERTS_FILE))?;
        }
        sink.flush().map_err(out_err(EVENTS_FILE))?;
        if last_counters.elapsed() >= Duration::from_secs(1) || stop {
            last_counters = Instant::now();
            let c = read_counters(&counters);
            let lost = c[COUNTER_PACKETS_LOST as usize] + c[COUNTER_TRACE_LOST as usize];
            if lost > lost_reported {
                eprintln!(
                    "warning: {} records lost so far (ring buffer full: {} packets, {} kernel events); the agent goes on",
                    lost, c[COUNTER_PACKETS_LOST as usize], c[COUNTER_TRACE_LOST as usize]
                );
                lost_reported = lost;
            }
            metrics.update(&pipeline, &sink, &c);
            if let Some(cap) = capture.as_mut() {
                cap.flush().map_err(out_err(CAPTURE_FILE))?;
            }
            samples.out.flush().map_err(out_err(KERNEL_SAMPLES_FILE))?;
        }
        if stop {
            break;
        }
    }

    // Finish: flows end, files are flushed, the summary is written.
    pipeline.finish(&mut sink).map_err(out_err(EVENTS_FILE))?;
    sink.flush().map_err(out_err(EVENTS_FILE))?;
    if let Some(c) = capture.as_mut() {
        c.flush().map_err(out_err(CAPTURE_FILE))?;
    }
    samples.out.flush().map_err(out_err(KERNEL_SAMPLES_FILE))?;
    let c = read_counters(&counters);
    let lost = c[COUNTER_PACKETS_LOST as usize] + c[COUNTER_TRACE_LOST as usize];
    let alerts_raised = sink.engine.raised;
    let mut src_names = vec![opts.iface.as_deref().map(|i| format!("live:{i}")).unwrap_or_default()];
    src_names.extend(sources);
    src_names.retain(|s| !s.is_empty());
    let mut figures = pipeline.figures(src_names.clone(), 0, started.elapsed().as_secs_f64());
    let mut summary = pipeline.summary(src_names.clone(), follow_errors, 0);
    let mut per_tp = serde_json::Map::new();
    for (i, (cat, name)) in TRACEPOINTS.iter().enumerate() {
        per_tp.insert(format!("{cat}:{name}"), c[COUNTER_TRACE_SEEN as usize + i].into());
    }
    summary.sections.insert(
        "live".into(),
        serde_json::json!({
            "interface": opts.iface,
            "netns": opts.netns,
            "tc_mode": tc_mode,
            "hooks": hooks,
            "packets_seen_by_tc": frame_no + c[COUNTER_PACKETS_LOST as usize],
            "tcp_segments_seen_by_tc": segments_seen,
            "packets_lost": c[COUNTER_PACKETS_LOST as usize],
            "kernel_events_lost": c[COUNTER_TRACE_LOST as usize],
            "kernel_events_filtered_by_netns": c[COUNTER_TRACE_FILTERED as usize],
            "kernel_events_by_tracepoint": per_tp,
            "lost_events": lost,
            "bad_records": bad_records,
            "packets_written": capture.as_ref().map(|c| c.packets()),
            "kernel_samples_written": samples.written,
            "clock_offset_ns": clock.offset_ns,
            "clock_error_ns": clock.error_ns,
        }),
    );
    summary.sections.insert("alerts".into(), serde_json::json!({ "raised": alerts_raised }));
    write_json(&dir.join(SUMMARY_FILE), &summary).map_err(out_err(SUMMARY_FILE))?;
    figures.extra.insert("lost_events".into(), lost.to_string());
    figures.extra.insert("lost.packets".into(), c[COUNTER_PACKETS_LOST as usize].to_string());
    figures.extra.insert("lost.kernel_events".into(), c[COUNTER_TRACE_LOST as usize].to_string());
    figures.extra.insert("hook.tc.packets".into(), (frame_no + c[COUNTER_PACKETS_LOST as usize]).to_string());
    figures.extra.insert("hook.tc.tcp_segments".into(), segments_seen.to_string());
    for (i, (cat, name)) in TRACEPOINTS.iter().enumerate() {
        figures.extra.insert(format!("hook.{cat}:{name}"), c[COUNTER_TRACE_SEEN as usize + i].to_string());
    }
    figures.extra.insert("alerts_raised".into(), alerts_raised.to_string());
    figures.write(&dir.join(BENCHMARK_FILE)).map_err(out_err(BENCHMARK_FILE))?;
    let mut written =
        vec![dir.join(EVENTS_FILE), dir.join(ALERTS_FILE), dir.join(SUMMARY_FILE), dir.join(BENCHMARK_FILE)];
    if capture.is_some() {
        written.push(dir.join(CAPTURE_FILE));
    }
    written.push(dir.join(KERNEL_SAMPLES_FILE));
    Ok(LiveResult { summary, written, lost_events: lost })
}
