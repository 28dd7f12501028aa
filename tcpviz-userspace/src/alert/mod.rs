//! Sliding-window alerts in event time.
//!
//! Events are counted per (flow, kind) over a window of `window` seconds of *event* time
//! (packet timestamps, so offline, follow and live runs agree). A count reaching the kind's
//! warning threshold raises WARNING, reaching its critical threshold raises CRITICAL; an
//! alert is emitted only when the level changes. Levels go down with hysteresis: only once
//! the count falls below half of the threshold of the current level (and to OK when the
//! window holds nothing). Memory is bounded: counts live in 60 buckets per key, and at most
//! `max_keys` keys are tracked (the stalest are dropped first, counted).

use std::collections::BTreeMap;
use std::net::IpAddr;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::event::{Event, EventKind};
use crate::time::{NS_PER_SEC, TimestampNs};

/// Alert level of a (flow, kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    Ok,
    Warn,
    Critical,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "OK",
            Level::Warn => "WARN",
            Level::Critical => "CRITICAL",
        }
    }
}

/// One line of `alerts.jsonl`: a change of level.
/// An alert still raised: events of one kind in one flow within the window. Fields in the
/// order summary.json lists them (sorted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveAlert {
    pub count: u64,
    pub flow_id: u64,
    pub kind: EventKind,
    pub level: Level,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Event time of the change, seconds since the epoch.
    #[serde(with = "crate::event::ts_secs")]
    pub ts: TimestampNs,
    pub flow_id: u64,
    pub kind: EventKind,
    pub level: Level,
    pub previous: Level,
    /// Events of this kind in the window when the level changed.
    pub count: u64,
    pub window_s: f64,
    /// The threshold that was crossed (the warning threshold when going back to OK).
    pub threshold: u64,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub message: String,
    /// Live sessions: the service (cgroup, else command) owning one end of the connection.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub service: Option<String>,
}

/// Thresholds of one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub warn: u64,
    pub critical: u64,
}

#[derive(Debug, Clone)]
pub struct AlertConfig {
    pub window: TimestampNs,
    pub default: Thresholds,
    /// Per-kind thresholds; kinds not listed use `default`.
    pub per_kind: BTreeMap<EventKind, Thresholds>,
    /// Kinds that raise alerts at all (informational ones such as window updates do not).
    pub kinds: Vec<EventKind>,
    pub max_keys: usize,
}

/// Kinds that can alert by default: the ones that mean trouble.
pub const ALERT_KINDS: [EventKind; 12] = [
    EventKind::Retransmission,
    EventKind::FastRetransmission,
    EventKind::SpuriousRetransmission,
    EventKind::OutOfOrder,
    EventKind::LostSegment,
    EventKind::AckLostSegment,
    EventKind::DuplicateAck,
    EventKind::ZeroWindow,
    EventKind::LossInfer,
    EventKind::HandshakeAnomaly,
    EventKind::TeardownAnomaly,
    EventKind::ReusedPorts,
];

impl Default for AlertConfig {
    fn default() -> Self {
        AlertConfig {
            window: 60 * NS_PER_SEC,
            default: Thresholds { warn: 10, critical: 50 },
            per_kind: BTreeMap::new(),
            kinds: ALERT_KINDS.to_vec(),
            max_keys: 100_000,
        }
    }
}

impl AlertConfig {
    /// Thresholds for loss-like kinds (`TCPVIZ_LOSS_THRESHOLD`) and reordering
    /// (`TCPVIZ_OOO_THRESHOLD`): the warning level, with critical at 5x as by default.
    pub fn set_loss_threshold(&mut self, warn: u64) {
        for k in
            [EventKind::Retransmission, EventKind::FastRetransmission, EventKind::LostSegment, EventKind::LossInfer]
        {
            self.per_kind.insert(k, Thresholds { warn, critical: self.default.critical.max(warn * 5) });
        }
    }

    pub fn set_ooo_threshold(&mut self, warn: u64) {
        self.per_kind.insert(EventKind::OutOfOrder, Thresholds { warn, critical: self.default.critical.max(warn * 5) });
    }

    pub fn thresholds(&self, kind: EventKind) -> Thresholds {
        self.per_kind.get(&kind).copied().unwrap_or(self.default)
    }
}

const BUCKETS: usize = 60;

struct KeyState {
    /// Event counts per bucket; `head` is the bucket of `head_time`.
    counts: [u32; BUCKETS],
    head: usize,
    head_time: i64,
    total: u64,
    level: Level,
    last_ts: TimestampNs,
    endpoints: (IpAddr, u16, IpAddr, u16),
}

pub struct AlertEngine {
    config: AlertConfig,
    bucket_ns: i64,
    keys: FxHashMap<(u64, EventKind), KeyState>,
    alertable: [bool; EventKind::COUNT],
    now: TimestampNs,
    last_sweep: TimestampNs,
    pub dropped_keys: u64,
    pub raised: u64,
}

impl AlertEngine {
    pub fn new(config: AlertConfig) -> AlertEngine {
        let mut alertable = [false; EventKind::COUNT];
        for k in &config.kinds {
            alertable[k.index()] = true;
        }
        let bucket_ns = (config.window / BUCKETS as i64).max(1);
        AlertEngine {
            config,
            bucket_ns,
            keys: FxHashMap::default(),
            alertable,
            now: TimestampNs::MIN,
            last_sweep: TimestampNs::MIN,
            dropped_keys: 0,
            raised: 0,
        }
    }

    /// Alerts currently above OK.
    pub fn active(&self) -> usize {
        self.keys.values().filter(|k| k.level != Level::Ok).count()
    }

    /// Counts one event; returns the alert if its (flow, kind) changed level.
    pub fn on_event(&mut self, e: &Event, out: &mut Vec<Alert>) {
        if e.ts > self.now {
            self.now = e.ts;
        }
        if self.alertable[e.event.index()] {
            if self.keys.len() >= self.config.max_keys && !self.keys.contains_key(&(e.flow_id, e.event)) {
                self.evict_stalest();
            }
            let bucket_ns = self.bucket_ns;
            let key = self.keys.entry((e.flow_id, e.event)).or_insert_with(|| KeyState {
                counts: [0; BUCKETS],
                head: 0,
                head_time: e.ts.div_euclid(bucket_ns),
                total: 0,
                level: Level::Ok,
                last_ts: e.ts,
                endpoints: (e.src, e.sport, e.dst, e.dport),
            });
            advance(key, e.ts.div_euclid(bucket_ns));
            // An event older than the window (timestamps going backwards) still counts, in
            // the oldest bucket.
            key.counts[key.head] += 1;
            key.total += 1;
            key.last_ts = key.last_ts.max(e.ts);
            if let Some(a) = evaluate(&self.config, e.flow_id, e.event, key, e.ts) {
                self.raised += 1;
                out.push(a);
            }
        }
        self.sweep(out);
    }

    /// Advances event time without an event (a quiet live capture): levels decay.
    pub fn tick(&mut self, now: TimestampNs, out: &mut Vec<Alert>) {
        if now > self.now {
            self.now = now;
        }
        self.sweep(out);
    }

    /// Decays every key to the current time, at most once per bucket of event time.
    fn sweep(&mut self, out: &mut Vec<Alert>) {
        if self.now.saturating_sub(self.last_sweep) < self.bucket_ns {
            return;
        }
        self.last_sweep = self.now;
        let now_bucket = self.now.div_euclid(self.bucket_ns);
        let mut gone = Vec::new();
        for (&(flow, kind), key) in self.keys.iter_mut() {
            advance(key, now_bucket);
            if let Some(a) = evaluate(&self.config, flow, kind, key, self.now) {
                self.raised += 1;
                out.push(a);
            }
            if key.total == 0 && key.level == Level::Ok {
                gone.push((flow, kind));
            }
        }
        for k in gone {
            self.keys.remove(&k);
        }
    }

    /// Drops the stalest tenth of the keys (ties to the lowest flow and kind). A tenth at
    /// once, not one: a scan of every key for each new one made each event cost the whole
    /// map once it was full (500,000 connections with one warning each took minutes).
    fn evict_stalest(&mut self) {
        let n = (self.keys.len() / 10).max(1);
        let mut stalest: Vec<(TimestampNs, u64, usize)> =
            self.keys.iter().map(|(&(flow, kind), v)| (v.last_ts, flow, kind.index())).collect();
        if n < stalest.len() {
            stalest.select_nth_unstable(n - 1);
            stalest.truncate(n);
        }
        for (_, flow, kind) in stalest {
            self.keys.remove(&(flow, EventKind::ALL[kind]));
            self.dropped_keys += 1;
        }
    }

    /// Every tracked (flow, kind): events in the window (as of the last event or tick) and
    /// level. A walk over the keys for a live view once a second; no work per event.
    pub fn window_counts(&self) -> impl Iterator<Item = (u64, EventKind, u64, Level)> + '_ {
        self.keys.iter().map(|(&(flow, kind), s)| (flow, kind, s.total, s.level))
    }

    /// Active alerts at the end of a run, worst first (level, then count, then flow).
    pub fn snapshot(&self) -> Vec<ActiveAlert> {
        let mut v: Vec<_> = self
            .keys
            .iter()
            .filter(|(_, s)| s.level != Level::Ok)
            .map(|(&(flow_id, kind), s)| ActiveAlert { count: s.total, flow_id, kind, level: s.level })
            .collect();
        v.sort_by(|a, b| b.level.cmp(&a.level).then(b.count.cmp(&a.count)).then(a.flow_id.cmp(&b.flow_id)));
        v
    }
}

/// Moves the window so that its newest bucket is `bucket`, dropping what falls out.
fn advance(key: &mut KeyState, bucket: i64) {
    let steps = bucket - key.head_time;
    if steps <= 0 {
        return;
    }
    let steps = steps.min(BUCKETS as i64) as usize;
    for _ in 0..steps {
        key.head = (key.head + 1) % BUCKETS;
        key.total -= key.counts[key.head] as u64;
        key.counts[key.head] = 0;
    }
    key.head_time = bucket;
}

fn evaluate(config: &AlertConfig, flow: u64, kind: EventKind, key: &mut KeyState, ts: TimestampNs) -> Option<Alert> {
    let th = config.thresholds(kind);
    let n = key.total;
    let target = match key.level {
        Level::Ok if n >= th.critical => Level::Critical,
        Level::Ok if n >= th.warn => Level::Warn,
        Level::Ok => Level::Ok,
        Level::Warn if n >= th.critical => Level::Critical,
        Level::Warn if n == 0 || n < th.warn.div_ceil(2) => Level::Ok,
        Level::Warn => Level::Warn,
        Level::Critical if n == 0 => Level::Ok,
        Level::Critical if n < th.critical.div_ceil(2) => {
            if n >= th.warn {
                Level::Warn
            } else if n < th.warn.div_ceil(2) {
                Level::Ok
            } else {
                Level::Warn
            }
        }
        Level::Critical => Level::Critical,
    };
    if target == key.level {
        return None;
    }
    let previous = key.level;
    key.level = target;
    let threshold = match target {
        Level::Critical => th.critical,
        _ => th.warn,
    };
    let window_s = config.window as f64 / 1e9;
    let (src, sport, dst, dport) = key.endpoints;
    let message = match target {
        Level::Ok => format!("{kind}: back to normal ({n} in {window_s:.0} s)"),
        _ => format!("{kind}: {n} in the last {window_s:.0} s (threshold {threshold})"),
    };
    Some(Alert {
        ts,
        flow_id: flow,
        kind,
        level: target,
        previous,
        count: n,
        window_s,
        threshold,
        src,
        dst,
        sport,
        dport,
        message,
        service: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Extra, Origin, Severity};

    fn ev(t_s: f64, flow: u64, kind: EventKind) -> Event {
        Event {
            ts: (t_s * 1e9) as i64,
            event: kind,
            flow_id: flow,
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.0.0.2".parse().unwrap(),
            sport: 1,
            dport: 2,
            seq: 0,
            ack: 0,
            len: 0,
            flags: "A".into(),
            severity: Severity::Info,
            extra: Extra::default(),
            origin: Origin::Wire,
            frame: None,
            file: None,
        }
    }

    #[test]
    fn window_counts_follow_the_window() {
        let mut a = AlertEngine::new(AlertConfig::default());
        let mut out = Vec::new();
        for i in 0..3 {
            a.on_event(&ev(100.0 + i as f64, 4, EventKind::OutOfOrder), &mut out);
        }
        let counts: Vec<_> = a.window_counts().collect();
        assert_eq!(counts, vec![(4, EventKind::OutOfOrder, 3, Level::Ok)]);
        a.tick((200.0 * 1e9) as i64, &mut out);
        assert_eq!(a.window_counts().count(), 0, "an emptied window is dropped");
    }

    #[test]
    fn warn_then_critical_then_back_to_ok_in_event_time() {
        let mut a = AlertEngine::new(AlertConfig::default());
        let mut out = Vec::new();
        for i in 0..9 {
            a.on_event(&ev(100.0 + i as f64 * 0.1, 1, EventKind::Retransmission), &mut out);
        }
        assert!(out.is_empty());
        a.on_event(&ev(101.0, 1, EventKind::Retransmission), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].level, out[0].count, out[0].previous), (Level::Warn, 10, Level::Ok));
        out.clear();
        for i in 0..40 {
            a.on_event(&ev(102.0 + i as f64 * 0.01, 1, EventKind::Retransmission), &mut out);
        }
        assert_eq!(out.iter().map(|x| x.level).collect::<Vec<_>>(), vec![Level::Critical]);
        out.clear();
        // Other flows and informational kinds do not disturb it.
        a.on_event(&ev(103.0, 2, EventKind::WindowUpdate), &mut out);
        assert!(out.is_empty());
        // A minute later (event time) the window is empty: back to OK.
        a.tick((170.0 * 1e9) as i64, &mut out);
        assert_eq!(out.iter().map(|x| x.level).collect::<Vec<_>>(), vec![Level::Ok]);
        assert_eq!(a.active(), 0);
    }

    #[test]
    fn hysteresis_keeps_the_level_near_the_threshold() {
        let mut a = AlertEngine::new(AlertConfig::default());
        let mut out = Vec::new();
        // 10 events in the first second: WARN. Then one event per 6 s keeps ~10 in 60 s.
        for i in 0..10 {
            a.on_event(&ev(i as f64 * 0.05, 7, EventKind::LossInfer), &mut out);
        }
        for i in 1..30 {
            a.on_event(&ev(i as f64 * 6.0, 7, EventKind::LossInfer), &mut out);
        }
        let levels: Vec<Level> = out.iter().map(|x| x.level).collect();
        assert_eq!(levels, vec![Level::Warn], "no flapping around the threshold");
    }

    #[test]
    fn per_kind_thresholds_and_key_bound() {
        let mut cfg = AlertConfig::default();
        cfg.set_ooo_threshold(2);
        cfg.max_keys = 10;
        let mut a = AlertEngine::new(cfg);
        let mut out = Vec::new();
        a.on_event(&ev(1.0, 1, EventKind::OutOfOrder), &mut out);
        a.on_event(&ev(1.1, 1, EventKind::OutOfOrder), &mut out);
        assert_eq!(out.len(), 1);
        for f in 0..100 {
            a.on_event(&ev(2.0 + f as f64 * 0.001, 100 + f, EventKind::LostSegment), &mut out);
        }
        assert!(a.keys.len() <= 10);
        assert!(a.dropped_keys >= 90);
        // The stalest went: the latest flow is still tracked, the first one is not.
        assert!(a.keys.contains_key(&(199, EventKind::LostSegment)));
        assert!(!a.keys.contains_key(&(1, EventKind::OutOfOrder)));
    }
}
