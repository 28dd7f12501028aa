//! `/metrics` for Prometheus (`--metrics-addr`), through the `prometheus-client` crate.
//!
//! Every series has a bounded label set, so an agent left running for weeks on a busy host
//! does not grow its scrape: event kinds and causes are fixed lists, interfaces are capped
//! at [`MAX_IFACES`] labels (the rest are summed under `other`), hooks are counted by type
//! and state rather than named, and per-flow series exist for at most [`TOP_FLOWS`] flows
//! (the most troubled active ones).
//!
//! Counters are set from the agent's own totals by adding the difference, so they only go
//! up even when a source is reset or an interface goes away. The registry is rebuilt by
//! nobody: one lock covers an update and an encoding, so a scrape never sees half an update.

mod agent_usage;
mod http;

use std::collections::BTreeMap;
use std::os::fd::BorrowedFd;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use tcpviz_common::{
    COUNTER_MARKS_FAILED, COUNTER_MARKS_SACK_SENT, COUNTER_MARKS_TRACEPOINT, COUNTER_MARKS_ZERO_WINDOW_SENT,
    COUNTER_TRACE_SEEN, COUNTERS, TRACEPOINTS,
};

use self::agent_usage::{RingView, process_usage};
pub use self::http::serve;
use super::KernelLosses;
use super::interfaces::TcInterfaces;
use crate::event::EventKind;
use crate::output::alerting::AlertingSink;
use crate::output::summary::endpoint;
use crate::pipeline::Pipeline;

pub const TOP_FLOWS: usize = 20;
/// Interfaces with a label of their own; later ones count under `iface="other"`
/// (`--iface all` on a host whose containers come and go would otherwise grow forever).
pub const MAX_IFACES: usize = 32;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabel {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LostLabels {
    ring: &'static str,
    cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProgramLabel {
    program: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TracepointLabel {
    tracepoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IfaceLabel {
    iface: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabels {
    r#type: &'static str,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabel {
    cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TcpExtLabel {
    counter: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FileLabel {
    file: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RingLabel {
    ring: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FlowLabels {
    flow_id: String,
    flow: String,
    kind: String,
}

type FloatCounter = Counter<f64, AtomicU64>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// The hook states a label can take (a hook's recorded state is free text).
const HOOK_STATES: [&str; 4] = ["attached", "failed", "missing", "detached"];

/// The metrics' handles; the registry encodes them.
struct Handles {
    packets: Counter,
    events: Family<KindLabel, Counter>,
    lost: Family<LostLabels, Counter>,
    recursion: Family<ProgramLabel, Counter>,
    tracepoint_records: Family<TracepointLabel, Counter>,
    iface_packets: Family<IfaceLabel, Counter>,
    iface_segments: Family<IfaceLabel, Counter>,
    alerts: Counter,
    alerts_active: Gauge,
    flows_active: Gauge,
    watched: Gauge,
    flow_events: Family<FlowLabels, Counter>,
    service_retransmissions: Family<ServiceLabel, Counter>,
    service_alerts: Family<ServiceLabel, Counter>,
    hooks: Family<HookLabels, Gauge>,
    watch_marks: Family<CauseLabel, Counter>,
    ring_fill: Family<RingLabel, FloatGauge>,
    not_written: Family<FileLabel, Counter>,
    rotated_away: Family<FileLabel, Counter>,
    tcp_ext: Family<TcpExtLabel, Counter>,
    cpu: FloatCounter,
    rss: Gauge,
}

impl Handles {
    fn register(r: &mut Registry) -> Handles {
        let h = Handles {
            packets: Counter::default(),
            events: Family::default(),
            lost: Family::default(),
            recursion: Family::default(),
            tracepoint_records: Family::default(),
            iface_packets: Family::default(),
            iface_segments: Family::default(),
            alerts: Counter::default(),
            alerts_active: Gauge::default(),
            flows_active: Gauge::default(),
            watched: Gauge::default(),
            flow_events: Family::default(),
            service_retransmissions: Family::default(),
            service_alerts: Family::default(),
            hooks: Family::default(),
            watch_marks: Family::default(),
            ring_fill: Family::default(),
            not_written: Family::default(),
            rotated_away: Family::default(),
            tcp_ext: Family::default(),
            cpu: FloatCounter::default(),
            rss: Gauge::default(),
        };
        // prometheus-client adds `_total` to counters and a full stop to each help.
        r.register("tcpviz_packets", "Packets analysed", h.packets.clone());
        r.register("tcpviz_events", "Events found, by kind", h.events.clone());
        r.register(
            "tcpviz_lost_events",
            "Records the kernel side lost, by stream and cause: ring_full (the ring buffer was full), recursion \
             (the kernel skipped the program: another BPF program was running on that CPU), unreadable (a \
             tracepoint record that could not be copied)",
            h.lost.clone(),
        );
        r.register(
            "tcpviz_program_recursion_misses",
            "Runs of each tcpviz program the kernel skipped (bpftool's recursion_misses)",
            h.recursion.clone(),
        );
        r.register(
            "tcpviz_tracepoint_records",
            "Records each kernel tracepoint hook saw in the watched namespace",
            h.tracepoint_records.clone(),
        );
        r.register(
            "tcpviz_interface_packets",
            "Packet records the TC programs sent from each interface (interfaces past the first 32 as other)",
            h.iface_packets.clone(),
        );
        r.register(
            "tcpviz_interface_tcp_segments",
            "TCP segments among them (a GSO packet as its segments)",
            h.iface_segments.clone(),
        );
        r.register(
            "tcpviz_kernel_tcp_ext",
            "Growth since the agent started of the watched namespace's TcpExt counters (/proc/net/netstat) that \
             explain retransmissions (TCPLossProbes, TCPTimeouts, TCPFastRetrans, ...), read every 2 s",
            h.tcp_ext.clone(),
        );
        r.register("tcpviz_alerts", "Alert level changes raised", h.alerts.clone());
        r.register("tcpviz_alerts_active", "Flows and kinds at WARN or CRITICAL", h.alerts_active.clone());
        r.register("tcpviz_flows_active", "Connections tracked", h.flows_active.clone());
        r.register(
            "tcpviz_watched_connections",
            "Connections the kernel side watches now, within --watch of their last trouble (capture policy \
             troubled; 0 otherwise)",
            h.watched.clone(),
        );
        r.register(
            "tcpviz_flow_events",
            format!("Events of the {TOP_FLOWS} most troubled active flows, by kind"),
            h.flow_events.clone(),
        );
        let services = crate::attribution::MAX_SERVICES;
        r.register(
            "tcpviz_service_retransmissions",
            format!(
                "Kernel retransmissions by the sending service (cgroup, else command): the {services} most troubled \
                 lately, each counting from when it became one; the rest as other"
            ),
            h.service_retransmissions.clone(),
        );
        r.register(
            "tcpviz_service_alerts",
            format!("Alerts by the service owning the connection (the {services} most troubled lately, then other)"),
            h.service_alerts.clone(),
        );
        r.register(
            "tcpviz_hooks",
            "Kernel hooks by type (tracepoint, tc) and state (attached, failed, missing, detached)",
            h.hooks.clone(),
        );
        r.register(
            "tcpviz_watch_marks",
            "Times the kernel side put a connection on watch (capture policy troubled), by cause",
            h.watch_marks.clone(),
        );
        r.register(
            "tcpviz_ring_fill_ratio",
            "Share of each ring buffer holding records not yet read, at the scrape",
            h.ring_fill.clone(),
        );
        r.register(
            "tcpviz_records_not_written",
            "Records each session file could not take (a full disk, a failing write): events, alerts and samples \
             as lines, the capture as packets; the agent goes on analysing and writes again once it can",
            h.not_written.clone(),
        );
        r.register(
            "tcpviz_records_rotated_away",
            "Records in the rotated parts of each session file deleted to keep --keep parts",
            h.rotated_away.clone(),
        );
        r.register_with_unit("process_cpu", "User and system CPU time the agent spent", Unit::Seconds, h.cpu.clone());
        r.register_with_unit("process_resident_memory", "Resident memory of the agent", Unit::Bytes, h.rss.clone());
        h
    }
}

/// Raises a counter to `total` (never lowers it).
fn raise(c: &Counter, total: u64) {
    c.inc_by(total.saturating_sub(c.get()));
}

/// Where an interface's counts go, and what of them is already counted.
struct IfaceSeen {
    label: String,
    packets: u64,
    segments: u64,
}

struct Inner {
    registry: Registry,
    h: Handles,
    /// By interface index.
    ifaces: BTreeMap<u32, IfaceSeen>,
    own_labels: usize,
    rings: Vec<RingView>,
    /// The service labels that have series.
    services: std::collections::BTreeSet<String>,
}

/// What one update reads.
pub struct Snapshot<'a> {
    pub pipeline: &'a Pipeline,
    pub sink: &'a AlertingSink,
    pub losses: &'a KernelLosses,
    pub counters: &'a [u64; COUNTERS],
    pub tc: &'a TcInterfaces,
    /// The tracepoints' hook states.
    pub hooks: &'a BTreeMap<String, String>,
    /// The ring buffers, by name, for their fill.
    pub rings: [(&'static str, BorrowedFd<'a>); 2],
    /// The session's files, for what they could not write and what rotation deleted.
    pub files: &'a [&'a crate::output::record_file::RecordFile],
    /// Connections watched now (capture policy `troubled`), when it could be read.
    pub watched: Option<u64>,
    /// Growth of the namespace's TcpExt counters since the start (the latest reading).
    pub tcp_ext: &'a BTreeMap<String, u64>,
}

#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Mutex<Inner>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let h = Handles::register(&mut registry);
        let inner = Inner {
            registry,
            h,
            ifaces: BTreeMap::new(),
            own_labels: 0,
            rings: Vec::new(),
            services: Default::default(),
        };
        Metrics { inner: Arc::new(Mutex::new(inner)) }
    }
}

/// A hook's recorded state, as one of [`HOOK_STATES`].
fn hook_state(state: &str) -> &'static str {
    if state.starts_with("failed") {
        "failed"
    } else if state.starts_with("missing") {
        "missing"
    } else if state.starts_with("not attached") || state.contains("stopped") || state.contains("went away") {
        "detached"
    } else {
        "attached"
    }
}

impl Metrics {
    /// Brings the metrics up to date (called about once a second).
    pub fn update(&self, s: &Snapshot<'_>) {
        let Ok(mut inner) = self.inner.lock() else { return };
        let inner = &mut *inner;
        let h = &inner.h;
        let c = &s.pipeline.counters;
        raise(&h.packets, c.packets);
        for k in EventKind::ALL {
            raise(&h.events.get_or_create(&KindLabel { kind: k.to_string() }), c.events[k.index()]);
        }
        let l = s.losses;
        for (ring, cause, n) in [
            ("packets", "ring_full", l.packets_ring_full),
            ("packets", "recursion", l.packets_recursion),
            ("kernel_events", "ring_full", l.events_ring_full),
            ("kernel_events", "recursion", l.events_recursion),
            ("kernel_events", "unreadable", l.events_unreadable),
        ] {
            raise(&h.lost.get_or_create(&LostLabels { ring, cause }), n);
        }
        for (program, n) in &l.recursion_by_program {
            raise(&h.recursion.get_or_create(&ProgramLabel { program: program.clone() }), *n);
        }
        for tp in &TRACEPOINTS {
            let seen = s.counters[COUNTER_TRACE_SEEN as usize + tp.index as usize];
            raise(
                &h.tracepoint_records
                    .get_or_create(&TracepointLabel { tracepoint: format!("{}:{}", tp.category, tp.name) }),
                seen,
            );
        }
        for (cause, i) in [
            ("tracepoint", COUNTER_MARKS_TRACEPOINT),
            ("sack_sent", COUNTER_MARKS_SACK_SENT),
            ("zero_window_sent", COUNTER_MARKS_ZERO_WINDOW_SENT),
            ("failed", COUNTER_MARKS_FAILED),
        ] {
            raise(&h.watch_marks.get_or_create(&CauseLabel { cause }), s.counters[i as usize]);
        }
        for (counter, grown) in s.tcp_ext {
            raise(&h.tcp_ext.get_or_create(&TcpExtLabel { counter: counter.clone() }), *grown);
        }
        raise(&h.alerts, s.sink.engine.raised);
        update_services(h, &mut inner.services, &s.sink.services);
        for f in s.files {
            let label = FileLabel { file: f.file_name() };
            raise(&h.not_written.get_or_create(&label), f.lost());
            if let Some(r) = f.rotation() {
                raise(&h.rotated_away.get_or_create(&label), r.deleted_records());
            }
        }
        h.alerts_active.set(s.sink.engine.active() as i64);
        h.flows_active.set(s.pipeline.analyzer().flows_active() as i64);
        if let Some(n) = s.watched {
            h.watched.set(n as i64);
        }
        inner.update_interfaces(s.tc);
        let h = &inner.h;
        let mut hooks = [[0i64; HOOK_STATES.len()]; 2];
        let tc_hooks = s.tc.hooks().map(|(_, st)| (1, st));
        for (t, state) in s.hooks.values().map(|st| (0, st.clone())).chain(tc_hooks) {
            let i = HOOK_STATES.iter().position(|x| *x == hook_state(&state)).unwrap_or(0);
            hooks[t][i] += 1;
        }
        for (t, r#type) in ["tracepoint", "tc"].into_iter().enumerate() {
            for (i, state) in HOOK_STATES.into_iter().enumerate() {
                h.hooks.get_or_create(&HookLabels { r#type, state }).set(hooks[t][i]);
            }
        }
        update_top_flows(&h.flow_events, s.pipeline);
        if inner.rings.is_empty() {
            inner.rings = s.rings.iter().filter_map(|(name, fd)| RingView::map(name, *fd)).collect();
        }
        if let Some((cpu, rss)) = process_usage() {
            let c = &inner.h.cpu;
            c.inc_by((cpu - c.get()).max(0.0));
            inner.h.rss.set(rss as i64);
        }
    }

    /// The Prometheus text format (0.0.4), or OpenMetrics when the scraper asks for it.
    pub fn render(&self, openmetrics: bool) -> String {
        let mut out = String::new();
        if let Ok(inner) = self.inner.lock() {
            // Read at the scrape, not at the update: the update follows a drain of the rings,
            // when they are nearly empty by construction.
            for ring in &inner.rings {
                inner.h.ring_fill.get_or_create(&RingLabel { ring: ring.name }).set(ring.fill());
            }
            let r = if openmetrics {
                prometheus_client::encoding::text::encode(&mut out, &inner.registry)
            } else {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &inner.registry)
            };
            if let Err(e) = r {
                tracing::warn!("cannot encode the metrics: {e}");
            }
        }
        out
    }
}

impl Inner {
    /// Adds what each interface sent since the last update to its label's counters.
    fn update_interfaces(&mut self, tc: &TcInterfaces) {
        for w in tc.iter() {
            let seen = self.ifaces.entry(w.ifindex).or_insert_with(|| {
                let label = if self.own_labels < MAX_IFACES {
                    self.own_labels += 1;
                    w.name.clone()
                } else {
                    "other".into()
                };
                IfaceSeen { label, packets: 0, segments: 0 }
            });
            let label = IfaceLabel { iface: seen.label.clone() };
            self.h.iface_packets.get_or_create(&label).inc_by(w.packets.saturating_sub(seen.packets));
            self.h.iface_segments.get_or_create(&label).inc_by(w.tcp_segments.saturating_sub(seen.segments));
            seen.packets = seen.packets.max(w.packets);
            seen.segments = seen.segments.max(w.tcp_segments);
        }
    }
}

/// Per-service series for the labels [`crate::attribution::ServiceCounts`] gives now; a
/// service that gave its label up loses its series (Prometheus marks them stale).
fn update_services(
    h: &Handles,
    published: &mut std::collections::BTreeSet<String>,
    services: &crate::attribution::ServiceCounts,
) {
    let labels = &services.by_label;
    published.retain(|service| {
        let keep = labels.contains_key(service);
        if !keep {
            let label = ServiceLabel { service: service.clone() };
            h.service_retransmissions.remove(&label);
            h.service_alerts.remove(&label);
        }
        keep
    });
    for (service, (retx, alerts)) in labels {
        let label = ServiceLabel { service: service.clone() };
        raise(&h.service_retransmissions.get_or_create(&label), *retx);
        raise(&h.service_alerts.get_or_create(&label), *alerts);
        published.insert(service.clone());
    }
}

/// Per-flow series for the most troubled active flows only; flows that left the top go
/// (Prometheus marks their series stale).
fn update_top_flows(family: &Family<FlowLabels, Counter>, pipeline: &Pipeline) {
    family.clear();
    let mut flows: Vec<_> = pipeline.analyzer().active_flows().filter(|f| f.trouble_score() > 0).collect();
    flows.sort_by_key(|f| std::cmp::Reverse(f.trouble_score()));
    for f in flows.into_iter().take(TOP_FLOWS) {
        let flow = format!(
            "{} -> {}",
            endpoint(f.endpoints[0].0, f.endpoints[0].1),
            endpoint(f.endpoints[1].0, f.endpoints[1].1)
        );
        for k in EventKind::ALL {
            let n: u32 = f.dirs.iter().map(|d| d.stats.events.get(k)).sum();
            if n > 0 {
                let labels = FlowLabels { flow_id: f.id.to_string(), flow: flow.clone(), kind: k.to_string() };
                family.get_or_create(&labels).inc_by(n as u64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_states_map_to_few_labels() {
        assert_eq!(hook_state("attached"), "attached");
        assert_eq!(hook_state("tcx"), "attached");
        assert_eq!(hook_state("clsact (an existing qdisc)"), "attached");
        assert_eq!(hook_state("failed: EPERM"), "failed");
        assert_eq!(hook_state("missing"), "missing");
        assert_eq!(hook_state("not attached: stopped during start-up"), "detached");
        assert_eq!(hook_state("tcx (until the interface went away)"), "detached");
    }

    #[test]
    fn counters_only_go_up() {
        let c = Counter::default();
        raise(&c, 5);
        raise(&c, 3);
        assert_eq!(c.get(), 5);
    }

    #[test]
    fn a_service_that_gives_its_label_up_loses_its_series() {
        let m = Metrics::default();
        let mut services = crate::attribution::ServiceCounts::default();
        let retransmit = |services: &mut crate::attribution::ServiceCounts, name: &str, n: usize| {
            for _ in 0..n {
                services.alert(Some(name));
            }
        };
        for i in 0..crate::attribution::MAX_SERVICES {
            retransmit(&mut services, &format!("old{i}.service"), 10);
        }
        let render = |services: &crate::attribution::ServiceCounts| {
            {
                let mut guard = m.inner.lock().unwrap();
                let inner = &mut *guard;
                update_services(&inner.h, &mut inner.services, services);
            }
            m.render(false)
        };
        let text = render(&services);
        assert!(text.contains("tcpviz_service_alerts_total{service=\"old0.service\"} 10"), "{text}");
        services.rerank(3_600.0);
        retransmit(&mut services, "new.service", 5);
        services.rerank(1.0);
        let text = render(&services);
        let series = text.lines().filter(|l| l.starts_with("tcpviz_service_alerts_total{")).count();
        assert_eq!(series, crate::attribution::MAX_SERVICES + 1, "ten services and other:\n{text}");
        assert!(!text.contains("service=\"old0.service\""), "{text}");
        assert!(text.contains("tcpviz_service_alerts_total{service=\"other\"} 5"), "{text}");
    }

    #[test]
    fn both_formats_keep_the_dashboard_names() {
        let m = Metrics::default();
        for openmetrics in [false, true] {
            let text = m.render(openmetrics);
            for name in
                ["tcpviz_packets_total", "tcpviz_alerts_total", "tcpviz_flows_active", "process_cpu_seconds_total"]
            {
                assert!(text.contains(&format!("\n{name} ")), "{name} in {text}");
            }
        }
    }
}
