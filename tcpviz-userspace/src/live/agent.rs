//! The agent's loop: drain both rings, handle their records in time order, follow the
//! capture being written (if any), and once a second report losses and flush; at the end,
//! the session files (`finish`).

mod finish;
mod rings;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use aya::Ebpf;
use tcpviz_common::decode::Record;
use tcpviz_common::{
    COUNTER_MARKS_FAILED, COUNTER_MARKS_SACK_SENT, COUNTER_MARKS_TRACEPOINT, COUNTER_MARKS_ZERO_WINDOW_SENT,
    COUNTER_TRACE_FILTERED, COUNTER_TRACE_SEEN, COUNTER_WATCH_LOST, COUNTERS, PacketRecord, SNAP_LEN, TP_COUNT,
    TRACEPOINTS, TraceRecord, WatchRecord,
};
use tokio::io::unix::AsyncFd;

use self::finish::finish;
use self::rings::Rings;

use super::attribution::{Attribution, CgroupPaths};
use super::clock::{self, BootClock};
use super::config::LinkHeader;
use super::diagnostics::KernelLog;
use super::interfaces::TcInterfaces;
use super::link_events::LinkEvents;
use super::losses::KernelLosses;
use super::records::{Decoded, decode_trace, decode_watch};
use super::stop::StopSignals;
use super::tracefs::Format;
use super::vantage::VantagePoints;
use super::{CapturePolicy, LiveError, LiveOptions, LiveResult, metrics};
use crate::capture::frame::{Direction, Frame, LinkType};
use crate::event::KernelSample;
use crate::output::alerting::AlertingSink;
use crate::output::jsonl::JsonlWriter;
use crate::output::pcapng::PcapngWriter;
use crate::output::record_file::{OnFailure, RecordFile, report_losses};
use crate::output::sections::{AlertsSection, KernelEventsLost, LiveSection, LostByCause, PacketsLost, TroubleMarks};
use crate::output::session::{ALERTS_FILE, CAPTURE_FILE, EVENTS_FILE, KERNEL_SAMPLES_FILE, Session};
use crate::pipeline::follower::Follower;
use crate::pipeline::{FrameOutcome, Pipeline, PipelineOptions};
use crate::time::TimestampNs;

/// What the start-up decided, for the loop and the session.
pub(super) struct AgentInputs<'a> {
    pub opts: &'a LiveOptions,
    pub formats: [Option<Format>; TP_COUNT],
    /// The tracepoints' state (the interfaces' is theirs).
    pub hooks: BTreeMap<String, String>,
    pub stop: &'a StopSignals,
    /// The namespace whose TcpExt counters are read (None: the agent's own), and their
    /// values at the start.
    pub counters_ns: Option<super::netns::Netns>,
    pub tcp_ext_before: BTreeMap<String, u64>,
}

fn out_err<'a>(session: &'a Session, file: &'a str) -> impl FnOnce(std::io::Error) -> LiveError + 'a {
    move |source| LiveError::Session(session.write_error(file)(source))
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

/// The session's record files: events and alerts, then kernel samples and the capture.
fn session_files<'b>(
    sink: &'b AlertingSink,
    samples: &'b SampleWriter,
    capture: Option<&'b PcapngWriter>,
) -> Vec<&'b RecordFile> {
    let mut files = vec![sink.events.file(), sink.alerts.file(), samples.out.file()];
    files.extend(capture.map(PcapngWriter::file));
    files
}

/// Counts of the run.
#[derive(Default)]
struct Tally {
    /// Packet records received.
    frames: u64,
    /// TCP packets as a capture tool sees them: a GSO super-packet counts its segments.
    segments: u64,
    /// Bytes of the packets the TC programs copied (their whole length, not the snapshot).
    wire_bytes: u64,
    bad_records: u64,
    /// Tracepoint records whose fields could not be copied.
    unreadable: u64,
    /// Losses already reported to the operator.
    lost_reported: u64,
    /// Watch start records received.
    watch_starts: u64,
    /// The growth of the namespace's TcpExt counters at the last reading for the metrics,
    /// and when that was.
    tcp_ext_growth: BTreeMap<String, u64>,
    tcp_ext_read_at: Option<std::time::Instant>,
    /// When the services were last ranked for their labels on /metrics.
    services_ranked_at: Option<std::time::Instant>,
    /// The readings during the run that showed growth, for the summary and the report.
    tcp_ext_timeline: super::netstat::TcpExtTimeline,
}

/// The longest one read of the `--pcap-path` capture holds up the loop: past it, the rings
/// are drained and the read goes on at the next turn (a capture of millions of packets read
/// in one go left the rings full).
const FOLLOW_PASS_BUDGET: Duration = Duration::from_millis(200);

/// How often the metrics read the namespace's TcpExt counters (a read of
/// /proc/net/netstat from a thread that enters the namespace).
const TCP_EXT_EVERY: Duration = Duration::from_secs(2);

/// The agent's state between two wake-ups.
struct Agent<'a> {
    inputs: AgentInputs<'a>,
    clock: BootClock,
    metrics: metrics::Metrics,
    sink: AlertingSink,
    pipeline: Pipeline,
    capture: Option<PcapngWriter>,
    /// The interfaces the TC programs watch.
    tc: &'a mut TcInterfaces,
    /// Where each direction of a connection is analysed, when a packet can be seen twice.
    vantage: Option<VantagePoints>,
    samples: SampleWriter,
    follower: Option<Follower>,
    /// Socket owners learned from connect and accept hooks (into `sink.owners`).
    attribution: Attribution,
    /// The count of connections watched, for `/metrics` (capture policy `troubled`).
    watched: Option<super::watched::WatchedCount>,
    tally: Tally,
    /// TCPVIZ_TEST_PANIC_AFTER_PACKETS: a panic at this packet, to test the crash path.
    #[cfg(feature = "test-hooks")]
    panic_after: Option<u64>,
}

impl<'a> Agent<'a> {
    /// Opens what the session writes; first what can fail on the command line, so that a
    /// failure there leaves no files behind.
    async fn start(inputs: AgentInputs<'a>, tc: &'a mut TcInterfaces) -> Result<Agent<'a>, LiveError> {
        let opts = inputs.opts;
        let session = &opts.session;
        let metrics = metrics::Metrics::default();
        if let Some(addr) = opts.metrics_addr {
            metrics::serve(addr, metrics.clone()).await.map_err(|source| LiveError::Metrics { addr, source })?;
            crate::errln!("metrics on http://{addr}/metrics");
        }
        let clock = BootClock::measure();
        let mut sink = AlertingSink::create(session, opts.alerts.clone()).map_err(out_err(session, EVENTS_FILE))?;
        sink.attributing = true;
        if let Some(slot) = &opts.view {
            let source = match (&opts.pcap_path, &opts.ifaces) {
                (Some(path), _) => path.clone(),
                (None, super::Interfaces::Named(names)) => names.join(","),
                (None, super::Interfaces::All) => "all interfaces".into(),
                (None, super::Interfaces::None) => "kernel hooks only".into(),
            };
            let mode = crate::tui::snapshot::ViewMode::Live;
            sink.view = Some(crate::tui::feed::ViewFeed::new(slot.clone(), mode, source));
        }
        // Interfaces are described in it as their first packet comes.
        let capture = if opts.ifaces.any() {
            Some(
                PcapngWriter::create(
                    &session.path(CAPTURE_FILE),
                    SNAP_LEN as u32,
                    OnFailure::Count,
                    session.rotation(),
                )
                .map_err(out_err(session, CAPTURE_FILE))?,
            )
        } else {
            None
        };
        let vantage = tc.sees_packets_twice().then(|| VantagePoints::new(opts.limits.max_flows.saturating_mul(2)));
        let samples = SampleWriter {
            out: JsonlWriter::create_lasting(session, KERNEL_SAMPLES_FILE)
                .map_err(out_err(session, KERNEL_SAMPLES_FILE))?,
            last: Default::default(),
            written: 0,
        };
        let follower = match &opts.pcap_path {
            Some(p) => {
                let mut f = Follower::new(p)?;
                // A large capture is read a slice at a time, the rings drained between.
                f.set_pass_budget(Some(FOLLOW_PASS_BUDGET));
                Some(f)
            }
            None => None,
        };
        let mut pipeline = Pipeline::with_options(PipelineOptions {
            limits: opts.limits,
            summary_flows: opts.summary_flows,
            kernel_mode: true,
            always_name_files: follower.as_ref().is_some_and(|f| f.tailer().may_span_files()),
            partial_wire_view: opts.pcap_path.is_none() && opts.capture == CapturePolicy::Troubled,
            read_ahead: false,
        });
        if opts.pcap_path.is_none() {
            pipeline.add_file(&session.path(CAPTURE_FILE).display().to_string());
        }
        #[cfg(feature = "test-hooks")]
        let panic_after = std::env::var("TCPVIZ_TEST_PANIC_AFTER_PACKETS").ok().and_then(|v| v.parse().ok());
        let tcp_ext_timeline = super::netstat::TcpExtTimeline::new(&inputs.tcp_ext_before);
        Ok(Agent {
            inputs,
            clock,
            metrics,
            sink,
            pipeline,
            capture,
            tc,
            vantage,
            samples,
            follower,
            attribution: Attribution::new(CgroupPaths::system()),
            watched: None,
            tally: Tally { tcp_ext_timeline, ..Default::default() },
            #[cfg(feature = "test-hooks")]
            panic_after,
        })
    }

    /// The reader of the kernel's watched connections, when something scrapes them.
    fn count_watched(&self, ebpf: &Ebpf) -> Option<super::watched::WatchedCount> {
        let opts = self.inputs.opts;
        if opts.metrics_addr.is_none() || opts.capture != CapturePolicy::Troubled || !opts.ifaces.any() {
            return None;
        }
        let Some(aya::maps::Map::LruHashMap(map)) = ebpf.map("WATCHED") else { return None };
        let watch_ns = opts.watch.as_nanos().min(u64::MAX as u128) as u64;
        super::watched::WatchedCount::new(map.fd(), watch_ns)
            .inspect_err(|e| tracing::warn!("cannot count the watched connections: {e}"))
            .ok()
    }

    fn session(&self) -> &'a Session {
        &self.inputs.opts.session
    }

    /// The view's header, once the hooks are attached: what is watched and how.
    fn view_source(&self) -> String {
        let opts = self.inputs.opts;
        let attached = self.inputs.hooks.values().filter(|state| *state == "attached").count();
        let mut parts = Vec::new();
        if let Some(i) = opts.ifaces.label() {
            parts.push(format!("{i}: TC {}, capture {}", self.tc.mode(), opts.capture.name()));
        }
        parts.push(format!("{attached} of {} tracepoints", self.inputs.hooks.len()));
        if let Some(p) = &opts.pcap_path {
            parts.push(format!("wire from {p}"));
        }
        parts.join("  ·  ")
    }

    fn announce(&mut self) {
        let source = self.view_source();
        if let Some(view) = self.sink.view.as_mut() {
            view.set_source(source);
        }
        let opts = self.inputs.opts;
        if self.inputs.stop.requested() {
            crate::errln!("tcpviz live: a stop signal arrived during start-up; ending");
        } else {
            crate::errln!(
                "tcpviz live: {}{}{} (Ctrl-C to stop)",
                opts.ifaces
                    .label()
                    .map(|i| format!("TC {} on {i}, capture {}", self.tc.mode(), opts.capture.name()))
                    .unwrap_or_else(|| "kernel tracepoints".into()),
                opts.netns.as_deref().map(|n| format!(" in {n}")).unwrap_or_default(),
                opts.pcap_path.as_deref().map(|p| format!(", wire packets from {p}")).unwrap_or_default()
            );
            // Type=notify: systemd counts the agent as started once its hooks are attached.
            crate::sd_notify::ready("hooks attached; watching");
        }
    }

    /// One record, in time order with the others.
    fn handle(&mut self, rec: Record) -> Result<(), LiveError> {
        match rec {
            Record::Packet(p) => self.handle_packet(&p),
            Record::Trace(t) if t.raw_len == 0 => {
                self.tally.unreadable += 1;
                Ok(())
            }
            Record::Trace(t) => {
                self.attribution.on_trace(&t, &self.inputs.formats, &mut self.sink.owners);
                self.handle_trace(&t)
            }
            Record::Watch(w) => {
                self.handle_watch(&w);
                Ok(())
            }
        }
    }

    fn handle_trace(&mut self, t: &TraceRecord) -> Result<(), LiveError> {
        let session = self.session();
        match decode_trace(t, &self.inputs.formats, self.clock.to_wall(t.ts_boot_ns)) {
            Decoded::Event(k) => {
                self.pipeline.process_kernel(&k, &mut self.sink).map_err(out_err(session, EVENTS_FILE))
            }
            Decoded::Sample(s) => self.handle_sample(s),
            Decoded::Skip => Ok(()),
        }
    }

    /// A connection became watched: its flow's wire view begins here.
    fn handle_watch(&mut self, w: &WatchRecord) {
        self.tally.watch_starts += 1;
        let lasts = self.inputs.opts.watch.as_nanos().min(i64::MAX as u128) as i64;
        if let Some(start) = decode_watch(w, self.clock.to_wall(w.ts_boot_ns), lasts) {
            self.pipeline.process_watch(&start);
        }
    }

    fn handle_sample(&mut self, mut s: KernelSample) -> Result<(), LiveError> {
        s.flow_id = self.pipeline.analyzer_mut().note_kernel_sample(&s);
        if let Some(view) = self.sink.view.as_mut() {
            view.note_kernel_sample(&s);
        }
        self.samples.write(&s).map_err(out_err(self.session(), KERNEL_SAMPLES_FILE))
    }

    /// A TC snapshot: written to the capture and, unless the wire comes from a file,
    /// analysed (where its connection's direction was first seen, when it can be seen twice).
    fn handle_packet(&mut self, p: &PacketRecord) -> Result<(), LiveError> {
        let session = self.session();
        self.tally.frames += 1;
        let Some(iface) = self.tc.get_mut(p.ifindex) else {
            // Only attached interfaces run the programs; kept apart from the analysis.
            self.tally.bad_records += 1;
            tracing::debug!("a packet record of interface {}, which the agent does not know", p.ifindex);
            return Ok(());
        };
        iface.packets += 1;
        self.tally.wire_bytes += p.orig_len as u64;
        let ts = self.clock.to_wall(p.ts_boot_ns);
        let data = &p.data[..p.snap_len as usize];
        let direction =
            Some(if p.direction == tcpviz_common::DIR_EGRESS { Direction::Egress } else { Direction::Ingress });
        let link_type = iface.header.map_or(LinkType::ETHERNET, LinkHeader::link_type);
        if let Some(c) = self.capture.as_mut() {
            if iface.capture_id.is_none() {
                match c.add_interface(link_type, &iface.name) {
                    Ok(id) => iface.capture_id = Some(id),
                    // Tried again with its next packet; this one is not recorded.
                    Err(e) => tracing::warn!("cannot describe {} in {CAPTURE_FILE}: {e}", iface.name),
                }
            }
            if let Some(id) = iface.capture_id {
                c.write_packet(id, ts, data, p.orig_len, direction).map_err(out_err(session, CAPTURE_FILE))?;
            }
        }
        let number = self.tally.frames;
        let interface = iface.capture_id.unwrap_or(0);
        let frame = Frame { ts, link_type, data, orig_len: p.orig_len, interface, number, direction };
        // What a capture tool would count: TCP packets, a GSO packet as its segments.
        let is_tcp = if self.inputs.opts.pcap_path.is_none() {
            let vantage = &mut self.vantage;
            let (ifindex, dir) = (p.ifindex, p.direction);
            let analyse = |seg: &crate::capture::decode::Segment| {
                vantage.as_mut().is_none_or(|v| v.at_vantage(seg, ifindex, dir))
            };
            let outcome = self
                .pipeline
                .process_frame_where(&frame, 0, &mut self.sink, analyse)
                .map_err(out_err(session, EVENTS_FILE))?;
            matches!(outcome, FrameOutcome::Tcp | FrameOutcome::LeftOut)
        } else {
            crate::capture::decode_frame(&frame).is_ok()
        };
        if is_tcp {
            let segments = p.gso_segs.max(1) as u64;
            self.tally.segments += segments;
            iface.tcp_segments += segments;
        }
        #[cfg(feature = "test-hooks")]
        if self.panic_after.is_some_and(|n| number >= n) {
            panic!("TCPVIZ_TEST_PANIC_AFTER_PACKETS reached (a test of the crash path)");
        }
        Ok(())
    }

    /// Interfaces that came or went (`--iface all`).
    fn follow_links(&mut self, ebpf: &mut Ebpf, events: &LinkEvents) -> Result<(), LiveError> {
        for change in events.read()? {
            if let Some(index) = self.tc.follow(ebpf, change, self.inputs.stop)
                && let Some(w) = self.tc.get(index)
            {
                crate::errln!("note: {} appeared; watching it ({})", w.name, w.section().hook);
            }
        }
        Ok(())
    }

    /// What follows each batch: the capture being written (at the stop, all it holds), the
    /// alerts' clock, the events.
    fn after_batch(&mut self, stop: bool) -> Result<(), LiveError> {
        let session = self.session();
        if let Some(f) = self.follower.as_mut() {
            if stop {
                f.set_pass_budget(None);
            }
            f.pass(session, &mut self.pipeline, &mut self.sink)?;
        }
        if let Some(last) = self.pipeline.counters.last_ts {
            let now = self.clock.to_wall(clock::boot_now());
            self.sink.tick(last.max(now)).map_err(out_err(session, ALERTS_FILE))?;
        }
        self.sink.flush().map_err(out_err(session, EVENTS_FILE))
    }

    /// Once a second (and at the stop): losses reported, metrics updated, files flushed.
    fn every_second(&mut self, rings: &Rings) -> Result<(), LiveError> {
        let session = self.session();
        let (counters, losses) = rings.losses(self.tally.unreadable);
        if losses.total() > self.tally.lost_reported {
            crate::errln!("warning: {} so far; the agent goes on", losses.describe());
            self.tally.lost_reported = losses.total();
        }
        // With one interface watched, the header names it, and a column would only take
        // the connection's width.
        let (tc, vantage) = (&self.tc, &self.vantage);
        let interface_of = |a: (std::net::IpAddr, u16), b: (std::net::IpAddr, u16)| -> Option<String> {
            let ifindex = vantage.as_ref()?.interface_of(a, b)?;
            tc.get(ifindex).map(|w| w.name.clone())
        };
        self.sink.publish_view(&self.pipeline, &interface_of, losses.total());
        use std::os::fd::AsFd;
        if self.tally.tcp_ext_read_at.is_none_or(|at| at.elapsed() >= TCP_EXT_EVERY) {
            self.tally.tcp_ext_read_at = Some(std::time::Instant::now());
            let now = super::netns::in_netns(self.inputs.counters_ns.as_ref(), super::netstat::read_tcp_ext);
            // A namespace that cannot be entered now keeps the last reading.
            if let Ok(now) = now {
                self.tally.tcp_ext_growth = super::netstat::growth(&self.inputs.tcp_ext_before, &now);
                let ts = self.clock.to_wall(clock::boot_now());
                self.tally.tcp_ext_timeline.read(crate::time::ts_to_secs(ts), now);
            }
        }
        // Nobody scrapes without --metrics-addr: no reason to map the rings.
        if self.inputs.opts.metrics_addr.is_some() {
            let now = std::time::Instant::now();
            let elapsed = self.tally.services_ranked_at.map_or(0.0, |at| (now - at).as_secs_f64());
            self.tally.services_ranked_at = Some(now);
            self.sink.services.rerank(elapsed);
            let watched = self.watched.as_mut().and_then(|w| {
                w.read().inspect_err(|e| tracing::debug!("cannot read the watched connections: {e}")).ok()
            });
            let files = session_files(&self.sink, &self.samples, self.capture.as_ref());
            self.metrics.update(&metrics::Snapshot {
                files: &files,
                watched,
                pipeline: &self.pipeline,
                sink: &self.sink,
                losses: &losses,
                counters: &counters,
                tc: self.tc,
                hooks: &self.inputs.hooks,
                tcp_ext: &self.tally.tcp_ext_growth,
                rings: [
                    ("packets", rings.packets.get_ref().as_fd()),
                    ("kernel_events", rings.traces.get_ref().as_fd()),
                ],
            });
        }
        if let Some(cap) = self.capture.as_mut() {
            cap.flush().map_err(out_err(session, CAPTURE_FILE))?;
        }
        self.samples.out.flush().map_err(out_err(session, KERNEL_SAMPLES_FILE))
    }
}

pub(super) async fn agent_loop(
    inputs: AgentInputs<'_>,
    ebpf: &mut Ebpf,
    tc: &mut TcInterfaces,
    link_events: Option<LinkEvents>,
) -> Result<LiveResult, LiveError> {
    let mut agent = Agent::start(inputs, tc).await?;
    agent.watched = agent.count_watched(ebpf);
    let mut rings = Rings::take(ebpf)?;
    let link_events = match link_events {
        // SAFETY: the LinkEvents owns its descriptor, which stays open as long as the AsyncFd
        // that wraps it.
        Some(l) => Some(unsafe { AsyncFd::register(l) }.map_err(|e| LiveError::Load(format!("{e}")))?),
        None => None,
    };
    let mut kernel_log = KernelLog::start(ebpf);
    let stop_signals = agent.inputs.stop;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    let deadline = agent.inputs.opts.duration.map(|d| tokio::time::Instant::now() + d);
    let mut last_second = Instant::now();
    let mut batch: Vec<Record> = Vec::new();
    agent.announce();

    loop {
        let stop = tokio::select! {
            r = rings.packets.readable_mut() => { r?.clear_ready(); false }
            r = rings.traces.readable_mut() => { r?.clear_ready(); false }
            r = async {
                match &link_events {
                    Some(fd) => fd.readable().await.map(|mut g| g.clear_ready()),
                    None => std::future::pending().await,
                }
            } => { r?; false }
            r = kernel_log.log_when_readable() => { r?; false }
            _ = tick.tick() => false,
            _ = sigint.recv() => true,
            _ = sigterm.recv() => true,
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => true,
        } || stop_signals.requested();
        // Interfaces first: records of one just attached may already be in the ring.
        if let Some(events) = &link_events
            && !stop
        {
            agent.follow_links(ebpf, events.get_ref())?;
        }
        rings.drain(&mut batch, &mut agent.tally.bad_records);
        // Nobody reads the alerts any more (`tcpviz live | head`): end as on Ctrl-C.
        let stop = stop || crate::output::stdio::stdout_closed();
        for rec in batch.drain(..) {
            agent.handle(rec)?;
        }
        agent.after_batch(stop)?;
        if last_second.elapsed() >= Duration::from_secs(1) || stop {
            last_second = Instant::now();
            agent.every_second(&rings)?;
        }
        if stop {
            kernel_log.flush();
            break;
        }
    }
    // Signals from here on only hurry the end (see `write_dashboards`).
    let signals_at_end = stop_signals.received();
    finish(agent, &rings, started, signals_at_end)
}
