//! The events tcpviz reports: one JSON object per line in `events.jsonl`.
//!
//! Schema version 1 (documented in `docs/events.schema.json`): the original tcpviz fields
//! (`ts`, `event`, `flow_id`, `src`, `dst`, `sport`, `dport`, `seq`, `ack`, `len`, `flags`,
//! `severity`, `extra`) plus `origin`, `frame` and `file`.

use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::time::{TimestampNs, ts_to_secs};

pub const SCHEMA_VERSION: u32 = 1;

/// What an event says. The first fifteen are Wireshark's `tcp.analysis.*` flags, with
/// Wireshark's names; the rest are tcpviz findings and kernel reports.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    strum::VariantArray,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::Display,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum EventKind {
    Retransmission,
    FastRetransmission,
    SpuriousRetransmission,
    OutOfOrder,
    LostSegment,
    AckLostSegment,
    DuplicateAck,
    ZeroWindow,
    ZeroWindowProbe,
    ZeroWindowProbeAck,
    KeepAlive,
    KeepAliveAck,
    WindowFull,
    WindowUpdate,
    ReusedPorts,
    LossInfer,
    HandshakeAnomaly,
    TeardownAnomaly,
    /// The sender's probe timer fired on a silent tail: a segment past a quiet time of
    /// 2 x SRTT with data outstanding and no sign of loss before it (`findings.rs`).
    TailLossProbe,
    /// The kernel retransmitted a segment (`tcp:tcp_retransmit_skb`).
    KernelRetransmit,
    /// The kernel retransmitted a SYN-ACK (`tcp:tcp_retransmit_synack`).
    KernelRetransmitSynack,
    /// The socket entered the Loss state: its retransmission timer fired.
    KernelRto,
    /// The socket entered fast recovery.
    KernelRecovery,
    KernelResetSent,
    KernelResetReceived,
    /// A TCP state change (`sock:inet_sock_set_state`).
    KernelStateChange,
}

impl EventKind {
    pub const COUNT: usize = <EventKind as strum::VariantArray>::VARIANTS.len();
    /// Every kind, in the order of the declaration (and of [`index`](Self::index)): strum's
    /// list, as an array so that per-kind counters can be sized by it.
    pub const ALL: [EventKind; Self::COUNT] = {
        let variants = <EventKind as strum::VariantArray>::VARIANTS;
        let mut all = [EventKind::Retransmission; Self::COUNT];
        let mut i = 0;
        while i < Self::COUNT {
            all[i] = variants[i];
            i += 1;
        }
        all
    };

    pub fn index(self) -> usize {
        self as usize
    }

    /// The name in `events.jsonl` (serde's and strum's `snake_case` agree; a test checks).
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn from_name(name: &str) -> Option<EventKind> {
        name.parse().ok()
    }

    /// How much one event of this kind says about trouble, to sort connections worst first:
    /// losses and timeouts weigh more than reordering; routine events nothing.
    pub fn trouble_weight(self) -> u64 {
        match self {
            EventKind::LossInfer | EventKind::HandshakeAnomaly => 10,
            EventKind::Retransmission
            | EventKind::FastRetransmission
            | EventKind::LostSegment
            | EventKind::ZeroWindow
            | EventKind::TeardownAnomaly => 3,
            EventKind::SpuriousRetransmission
            | EventKind::OutOfOrder
            | EventKind::AckLostSegment
            | EventKind::TailLossProbe => 2,
            EventKind::DuplicateAck | EventKind::WindowFull | EventKind::ZeroWindowProbe => 1,
            _ => 0,
        }
    }

    /// True for the retransmission family as tshark counts `tcp.analysis.retransmission`.
    pub fn is_retransmission(self) -> bool {
        matches!(self, EventKind::Retransmission | EventKind::FastRetransmission | EventKind::SpuriousRetransmission)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "INFO",
            Severity::Warning => "WARNING",
            Severity::Critical => "CRITICAL",
        }
    }
}

/// Where an event was observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// From packets (a capture file or the TC snapshots).
    Wire,
    /// Reported by the kernel's own TCP hooks.
    Kernel,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Wire => "wire",
            Origin::Kernel => "kernel",
        }
    }
}

/// Why a finding (`loss_infer`, `handshake_anomaly`, `teardown_anomaly`) was raised.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    strum::VariantArray,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Reason {
    /// The third duplicate ACK of a run: the receiver is missing the segment at `ack`.
    TripleDuplicateAck,
    /// A retransmission of the oldest unacknowledged data with no duplicate ACKs before
    /// it: the sender's retransmission timer fired (a tail-loss probe is its own event).
    RetransmissionTimeout,
    /// Data in flight and no ACK progress for longer than max(1 s, 4 x SRTT).
    AckStall,
    SynRetransmitted,
    SynAckRetransmitted,
    /// SYN sent, never answered (neither SYN-ACK nor RST) within the capture.
    NoSynAck,
    /// SYN-ACK sent, the client never acknowledged it.
    NoFinalAck,
    /// RST answering a SYN: nothing listens on the port, or a firewall refuses.
    ConnectionRefused,
    /// RST on an established connection with data not yet acknowledged.
    ResetWithDataInFlight,
    /// RST before any FIN, with nothing in flight.
    Reset,
    /// RST after a FIN: an abortive end of a closing connection.
    ResetAfterFin,
    /// `tail_loss_probe`: the probe sent the next new data.
    ProbeNewData,
    /// `tail_loss_probe`: the probe repeated the highest segment sent.
    ProbeLastSegment,
}

impl Reason {
    /// The name in `events.jsonl` (serde's and strum's `snake_case` agree; a test checks).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Details attached to an event. Every field is optional and omitted when absent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Extra {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    /// Sequence number relative to the first one of this direction (as Wireshark shows it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rel_seq: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rel_ack: Option<u32>,
    /// Advertised receive window after scaling, when the scale is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<u64>,
    /// Bytes sent but not yet acknowledged in this direction (the original `cwnd_bytes`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_in_flight: Option<u32>,
    /// Smoothed RTT of the direction that sends data in this flow, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub srtt_ms: Option<f64>,
    /// Handshake RTT (SYN to the ACK of the SYN-ACK), in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub irtt_ms: Option<f64>,
    /// For duplicate ACKs: the number in the run, and the frame of the original ACK.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dupack_num: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dupack_frame: Option<u64>,
    /// For retransmissions: time since the original transmission, and its frame.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rto_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rto_frame: Option<u64>,
    /// For ack stalls: how long the ACKs did not move; for tail-loss probes: the quiet time
    /// before the probe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stall_ms: Option<f64>,
    /// Retries so far (SYN retransmissions, timer retransmissions of the same data).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// Human-readable explanation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Kernel events: the socket's TCP state (e.g. `ESTABLISHED`), or the new state of a
    /// state change and the one before it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_state: Option<String>,
    /// `kernel_retransmit`: the kernel's error code when the retransmission failed (0 = sent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub err: Option<i64>,
    /// `kernel_reset_sent`: the kernel's reset reason (enum sk_rst_reason), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset_reason: Option<i64>,
    /// Kernel retransmissions: the frame of the wire retransmission it matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wire_frame: Option<u64>,
    /// Kernel retransmissions: the retransmitted sequence range's end (`seq` is its start).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_seq: Option<u32>,
    /// Kernel retransmissions: the segments of the skb (`tcp_skb_pcount`, what the kernel
    /// adds to `TcpRetransSegs`) and their size (`tcp_skb_mss`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segments: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mss: Option<u32>,
    /// A wire retransmission the kernel confirmed (live sessions, `--kernel-events`): what
    /// the wire rules alone had called the segment (`out_of_order`). The kernel's verdict
    /// wins; this one is kept for comparison.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wire_verdict: Option<EventKind>,
    /// Live sessions: the process owning the socket that sends from `src`, and the one
    /// that receives at `dst`, when this host holds those sockets and a hook saw them open
    /// (`crate::attribution`). Absent for a connection opened before the agent started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_process: Option<std::sync::Arc<crate::attribution::Process>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_process: Option<std::sync::Arc<crate::attribution::Process>>,
}

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Event time, seconds since the Unix epoch.
    #[serde(serialize_with = "ser_ts", deserialize_with = "de_ts")]
    pub ts: TimestampNs,
    pub event: EventKind,
    pub flow_id: u64,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub len: u32,
    pub flags: String,
    pub severity: Severity,
    pub extra: Extra,
    pub origin: Origin,
    /// 1-based packet number in its file, as tshark counts.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub frame: Option<u64>,
    /// The capture file, when a run read several.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub file: Option<Arc<str>>,
}

/// `#[serde(with = "ts_secs")]`: a nanosecond timestamp as float seconds.
pub mod ts_secs {
    use super::TimestampNs;
    pub fn serialize<S: serde::Serializer>(ts: &TimestampNs, s: S) -> Result<S::Ok, S::Error> {
        super::ser_ts(ts, s)
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<TimestampNs, D::Error> {
        super::de_ts(d)
    }
}

fn ser_ts<S: serde::Serializer>(ts: &TimestampNs, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(ts_to_secs(*ts))
}

fn de_ts<'de, D: serde::Deserializer<'de>>(d: D) -> Result<TimestampNs, D::Error> {
    let secs = f64::deserialize(d)?;
    // Nanoseconds in an i64 reach the years 1677 to 2262: a time beyond is not an event's.
    let out_of_range = || serde::de::Error::custom(format!("time {secs} s is out of range"));
    if !secs.is_finite() || secs.abs() >= 9.2e9 {
        return Err(out_of_range());
    }
    let whole = secs.floor();
    (whole as TimestampNs)
        .checked_mul(1_000_000_000)
        .and_then(|ns| ns.checked_add(((secs - whole) * 1e9).round() as TimestampNs))
        .ok_or_else(out_of_range)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `events_jsonl` fuzz target: an event line with a time past the year
    /// 2262 overflowed the conversion to nanoseconds; it is now an unreadable line.
    #[test]
    fn out_of_range_times_are_a_parse_error() {
        #[derive(serde::Deserialize)]
        struct T {
            #[serde(with = "ts_secs")]
            ts: TimestampNs,
        }
        let parse = |json: &str| serde_json::from_str::<T>(json).map(|t| t.ts);
        assert_eq!(parse(r#"{"ts":1700000000.25}"#).unwrap(), 1_700_000_000_250_000_000);
        assert_eq!(parse(r#"{"ts":-1.5}"#).unwrap(), -1_500_000_000);
        for bad in [r#"{"ts":1e12}"#, r#"{"ts":-1e300}"#, r#"{"ts":9.3e9}"#] {
            assert!(parse(bad).unwrap_err().to_string().contains("out of range"), "{bad}");
        }
    }

    /// strum's list indexes the per-kind counters, and its Display is the name.
    #[test]
    fn kinds_are_listed_in_index_order() {
        for (i, k) in EventKind::ALL.iter().enumerate() {
            assert_eq!(k.index(), i);
            assert_eq!(k.to_string(), k.as_str());
        }
        assert_eq!(EventKind::from_name("no_such_kind"), None);
    }

    #[test]
    fn names_round_trip_and_are_wireshark_names() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::from_name(k.as_str()), Some(k));
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
        }
        assert_eq!(EventKind::ALL.iter().filter(|k| k.is_retransmission()).count(), 3);
    }

    #[test]
    fn event_json_has_the_superset_fields() {
        let e = Event {
            ts: 1_700_000_000_250_000_000,
            event: EventKind::LossInfer,
            flow_id: 3,
            src: "10.0.0.1".parse().unwrap(),
            dst: "fd00::1".parse().unwrap(),
            sport: 1,
            dport: 2,
            seq: 3,
            ack: 4,
            len: 5,
            flags: "A".into(),
            severity: Severity::Warning,
            extra: Extra { reason: Some(Reason::TripleDuplicateAck), ..Default::default() },
            origin: Origin::Wire,
            frame: Some(9),
            file: None,
        };
        let v: serde_json::Value = serde_json::to_value(&e).unwrap();
        assert_eq!(v["ts"], 1_700_000_000.25);
        assert_eq!(v["event"], "loss_infer");
        assert_eq!(v["severity"], "WARNING");
        assert_eq!(v["extra"]["reason"], "triple_duplicate_ack");
        assert_eq!(v["origin"], "wire");
        assert!(v.get("file").is_none());
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }
}

/// One line of `kernel_samples.jsonl` (live sessions): the kernel's own view of a socket,
/// from the `tcp:tcp_probe` tracepoint, for plotting next to what the wire shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelSample {
    #[serde(with = "ts_secs")]
    pub ts: TimestampNs,
    /// The wire flow this socket matched, when it did.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub flow_id: Option<u64>,
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
    /// Congestion window, in segments.
    pub snd_cwnd: u32,
    /// Slow-start threshold, in segments (a huge value means "not set yet").
    pub ssthresh: u32,
    /// Smoothed RTT, microseconds.
    pub srtt_us: u32,
    pub snd_wnd: u32,
    pub rcv_wnd: u32,
    pub snd_una: u32,
    pub snd_nxt: u32,
    /// The socket's segment size (`mss_cache`): cwnd × mss is the congestion window in bytes.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mss: Option<u32>,
}
