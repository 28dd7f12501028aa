//! The `sections` of summary.json that some sources add: alerts (long-running modes), the
//! follower's reads and losses, the live agent's kernel side, and the lines a long-running
//! mode could not write.
//!
//! The fields of each struct are in sorted order: summary.json has always listed them so
//! (a test checks it). Every field has a default, so that summaries of earlier versions,
//! which lack some of them, still read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::alert::ActiveAlert;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Sections {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<AlertsSection>,
    /// `parse-pcap --cross-check`: agreement with tshark on the same files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross_check: Option<CrossCheckSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow: Option<FollowSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<LiveSection>,
    /// Lines (or packets) not written, by file name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_written: Option<BTreeMap<String, u64>>,
    /// `--rotate-mb`/`--rotate-secs`/`--keep`: the settings and the parts of each file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<crate::output::rotation::RotationSection>,
    /// Sections this version does not know (a summary of another tcpviz), kept as they are.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

impl Sections {
    pub fn is_empty(&self) -> bool {
        *self == Sections::default()
    }

    /// Every section as JSON, by name (for pages that show them as they are).
    pub fn to_json(&self) -> serde_json::Map<String, serde_json::Value> {
        json_object(self)
    }
}

/// How tcpviz and tshark agree on one flag. Fields in name order, as summary.json is
/// written.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct FlagAgreement {
    /// Flagged by tcpviz only.
    pub extra: u64,
    /// The first of them: "frame", or "file:frame" with several files.
    pub extra_frames: Vec<String>,
    pub matches: u64,
    /// Flagged by tshark only.
    pub missing: u64,
    pub missing_frames: Vec<String>,
}

/// The `cross_check` section of summary.json (`parse-pcap --cross-check`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct CrossCheckSection {
    /// Every flag agrees, packet for packet.
    pub agree: bool,
    /// Why there is no comparison (tshark missing or failing).
    pub error: Option<String>,
    pub flags: BTreeMap<String, FlagAgreement>,
    /// `tshark --version`'s first line.
    pub tshark: String,
}

impl CrossCheckSection {
    /// The lines of benchmark.log: per flag, matches/extra/missing.
    pub fn figures(&self) -> Vec<(String, String)> {
        let mut out = vec![("cross_check.tshark".to_string(), self.tshark.clone())];
        if let Some(e) = &self.error {
            out.push(("cross_check.error".into(), e.clone()));
        }
        for (flag, a) in &self.flags {
            out.push((
                format!("cross_check.{flag}"),
                format!("{} matches, {} extra, {} missing", a.matches, a.extra, a.missing),
            ));
        }
        out
    }
}

/// The alerts of a long-running mode.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct AlertsSection {
    /// Alerts still raised at the end, worst first (follow mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_at_end: Option<Vec<ActiveAlert>>,
    pub raised: u64,
    /// The alerts' sliding window, in seconds (follow mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_s: Option<f64>,
}

/// What the follower read and lost.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FollowSection {
    pub bytes_added_after_finish: u64,
    pub bytes_cut_at_file_ends: u64,
    pub compressed_files_cut_short: u64,
    pub files_missed: u64,
    pub files_read: u64,
    pub files_unreadable: u64,
    pub rewrites: u64,
}

impl FollowSection {
    /// The lines of benchmark.log: the files read, and every loss that happened.
    pub fn figures(&self) -> Vec<(String, String)> {
        json_object(self)
            .into_iter()
            .filter(|(name, value)| name == "files_read" || value.as_u64().is_some_and(|n| n > 0))
            .map(|(name, value)| (name, value.to_string()))
            .collect()
    }
}

/// A struct as a JSON object (its fields sorted by name).
fn json_object<T: Serialize>(value: &T) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    }
}

/// The live agent's kernel side.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct LiveSection {
    /// Ring records that could not be decoded.
    pub bad_records: u64,
    /// Which packets the wire view holds: the `--capture` policy of the TC snapshots (with
    /// `troubled`, only those of connections while they were watched, so a flow's wire
    /// counts are partial), `file` for a capture another tool writes (`--pcap-path`), or
    /// `kernel` for none. Absent in summaries of earlier versions, which copied every packet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture: Option<String>,
    pub clock_error_ns: i64,
    pub clock_offset_ns: i64,
    /// What was attached, by hook.
    pub hooks: BTreeMap<String, String>,
    /// `--iface` as given: a name, names joined by commas, or `all`.
    pub interface: Option<String>,
    /// Each interface the TC programs were attached to (or tried to), with its packets.
    /// Absent in summaries of earlier versions, which watched one interface.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<InterfaceSection>,
    pub kernel_events_by_tracepoint: BTreeMap<String, u64>,
    pub kernel_events_filtered_by_netns: u64,
    pub kernel_events_lost: u64,
    /// `tcp_probe` hits the kernel side sampled out (a socket sampled less than 100 ms
    /// before, same cwnd and ssthresh): never copied. Absent in earlier versions.
    pub kernel_samples_left_in_kernel: u64,
    pub kernel_samples_written: u64,
    /// Absent in summaries of earlier versions, which counted ring-buffer losses only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost_by_cause: Option<LostByCause>,
    pub lost_events: u64,
    /// Policy `troubled`: most connections watched at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_watched: Option<u32>,
    pub netns: Option<String>,
    pub packets_lost: u64,
    /// Packets seen again at a second point of this host (forwarded between two watched
    /// interfaces, or on loopback both ways): analysed at the first only, where each
    /// direction of a connection was first seen.
    pub packets_seen_again: u64,
    pub packets_seen_by_tc: u64,
    /// Packets written to capture.pcapng (none without an interface).
    pub packets_written: Option<u64>,
    pub recursion_misses_by_program: BTreeMap<String, u64>,
    pub stopped_by_signal: bool,
    pub tc_mode: String,
    /// How much the namespace's TcpExt counters (/proc/net/netstat) grew during the run:
    /// tail loss probes, timeouts, fast retransmits, spurious timeouts, reordering. Absent in
    /// summaries of earlier versions.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tcp_ext: BTreeMap<String, u64>,
    /// The same counters read every 2 s during the run: each reading that showed growth,
    /// with its time and the growth since the reading before (they add up to `tcp_ext`).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub tcp_ext_during: Vec<TcpExtReading>,
    pub tcp_segments_seen_by_tc: u64,
    /// Policy `troubled`: what started or renewed a watch, counted by the kernel side.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trouble_marks: Option<TroubleMarks>,
    /// Policy `troubled`: how long a connection stays watched after its last trouble.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watch_secs: Option<f64>,
    /// Policy `troubled`: watches that started (a connection that was not watched, or whose
    /// watch had ended, showed trouble). The flows say which (`watched_since`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watch_starts: Option<u64>,
    /// ... of which the kernel side could not tell (the kernel-event ring was full): their
    /// flows lack `watched_since`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watch_starts_lost: Option<u64>,
}

/// One interface of a live session.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct InterfaceSection {
    pub name: String,
    pub ifindex: u32,
    /// `ethernet`, `none` (IP first), or absent for a link type tcpviz cannot decode.
    pub link_header: Option<String>,
    /// How the TC programs were attached (`tcx`, `clsact`, …) or why not.
    pub hook: String,
    /// When the programs were attached, and when the interface went away (wall clock, ns).
    pub attached_at: Option<i64>,
    pub gone_at: Option<i64>,
    /// Packet records from this interface, and the TCP segments among them.
    pub packets: u64,
    pub tcp_segments: u64,
}

/// Where the kernel side saw the trouble that makes a connection watched.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct TroubleMarks {
    /// A watch the LRU map could not store.
    pub failed: u64,
    /// An ACK this host sent with SACK blocks.
    pub sack_sent: u64,
    /// A retransmission, a move to Recovery or Loss, a reset received.
    pub tracepoint: u64,
    /// An ACK this host sent with a zero window.
    pub zero_window_sent: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct LostByCause {
    pub kernel_events: KernelEventsLost,
    pub packets: PacketsLost,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct KernelEventsLost {
    pub recursion: u64,
    pub ring_full: u64,
    /// Tracepoint records whose fields could not be copied.
    pub unreadable: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct PacketsLost {
    pub recursion: u64,
    pub ring_full: u64,
}

/// What the namespace's kept TcpExt counters grew by between two readings during a live
/// run (`live::netstat::TcpExtTimeline`; here, not there, so that every platform reads
/// the summaries of live sessions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TcpExtReading {
    /// When the reading was taken (epoch seconds); the growth is since the reading before.
    pub ts: f64,
    pub grown: BTreeMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Level;
    use crate::event::EventKind;

    /// Written in the order summary.json always had (sorted, as `serde_json::Value` sorts).
    #[test]
    fn sections_are_written_with_sorted_keys() {
        let sections = Sections {
            alerts: Some(AlertsSection {
                active_at_end: Some(vec![ActiveAlert {
                    count: 3,
                    flow_id: 1,
                    kind: EventKind::Retransmission,
                    level: Level::Warn,
                }]),
                raised: 2,
                window_s: Some(60.0),
            }),
            cross_check: Some(CrossCheckSection { tshark: "TShark 4.0".into(), agree: true, ..Default::default() }),
            follow: Some(FollowSection { files_read: 1, ..Default::default() }),
            live: Some(LiveSection {
                lost_by_cause: Some(LostByCause::default()),
                hooks: [("tc".to_string(), "tcx".to_string())].into(),
                ..Default::default()
            }),
            not_written: Some([("events.jsonl".to_string(), 0)].into()),
            rotation: None,
            other: BTreeMap::new(),
        };
        let typed = serde_json::to_string_pretty(&sections).unwrap();
        let sorted = serde_json::to_string_pretty(&serde_json::to_value(&sections).unwrap()).unwrap();
        assert_eq!(typed, sorted);
        let back: Sections = serde_json::from_str(&typed).unwrap();
        assert_eq!(back, sections);
    }

    /// A section this version does not know is kept; a known one of an earlier version
    /// (fewer fields) still reads.
    #[test]
    fn other_and_older_sections_read() {
        let text = r#"{"kernel": {"x": 1}, "live": {"packets_lost": 4, "tc_mode": "clsact"}}"#;
        let s: Sections = serde_json::from_str(text).unwrap();
        assert_eq!(s.other["kernel"], serde_json::json!({"x": 1}));
        let live = s.live.unwrap();
        assert_eq!((live.packets_lost, live.tc_mode.as_str(), live.lost_by_cause), (4, "clsact", None));
    }

    #[test]
    fn follow_figures_are_the_files_read_and_the_losses_seen() {
        let f = FollowSection { files_read: 2, rewrites: 1, ..Default::default() };
        assert_eq!(f.figures(), vec![("files_read".into(), "2".into()), ("rewrites".into(), "1".into())]);
    }
}
