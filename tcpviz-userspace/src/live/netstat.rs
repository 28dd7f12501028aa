//! The kernel's own TCP counters (`TcpExt` in `/proc/net/netstat`) of the watched
//! namespace, read at the start, every few seconds during, and at the end of a live run
//! (`TcpExtTimeline`): their changes tell tail loss
//! probes, timeouts, fast retransmits and spurious timeouts apart, which the tracepoints
//! alone do not (the kernel's probe points for TLP are kprobes and fentry, absent here).

use std::collections::BTreeMap;

/// The counters kept: those that explain retransmissions and their causes.
pub const EXPLAINING: [&str; 16] = [
    "TCPLossProbes",
    "TCPLossProbeRecovery",
    "TCPTimeouts",
    "TCPSpuriousRTOs",
    "TCPFastRetrans",
    "TCPSlowStartRetrans",
    "TCPLostRetransmit",
    "TCPRetransFail",
    "TCPSACKReorder",
    "TCPTSReorder",
    "TCPRenoReorder",
    "TCPSackRecovery",
    "TCPDSACKRecv",
    "TCPDSACKOldSent",
    "TCPSynRetrans",
    "TCPOFOQueue",
];

/// The `TcpExt` counters of `/proc/net/netstat` text, by name.
pub fn parse_tcp_ext(text: &str) -> BTreeMap<String, u64> {
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else { return BTreeMap::new() };
    names
        .split_whitespace()
        .skip(1)
        .zip(values.split_whitespace().skip(1))
        .filter_map(|(n, v)| Some((n.to_string(), v.parse().ok()?)))
        .collect()
}

/// The counters of the calling thread's namespace (call inside `in_netns`); empty when the
/// file cannot be read.
pub fn read_tcp_ext() -> BTreeMap<String, u64> {
    // /proc/net is the namespace of the reading thread (a link to /proc/thread-self/net).
    std::fs::read_to_string("/proc/thread-self/net/netstat").map(|t| parse_tcp_ext(&t)).unwrap_or_default()
}

/// How much each kept counter grew from `before` to `after` (counters absent from either
/// are left out; a counter that went down, which a namespace's counters never do, gives 0).
pub fn growth(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    EXPLAINING
        .iter()
        .filter_map(|name| {
            let (b, a) = (before.get(*name)?, after.get(*name)?);
            Some((name.to_string(), a.saturating_sub(*b)))
        })
        .collect()
}

pub use crate::output::sections::TcpExtReading;

/// Readings that showed growth, oldest first. Bounded for runs of weeks: when full, each
/// two neighbours are joined into one (the later time, the summed growth), so the timeline
/// keeps covering the whole run at half the resolution.
#[derive(Debug, Clone, Default)]
pub struct TcpExtTimeline {
    last: BTreeMap<String, u64>,
    readings: Vec<TcpExtReading>,
}

/// Readings kept at most.
pub const MAX_READINGS: usize = 1024;

impl TcpExtTimeline {
    pub fn new(before: &BTreeMap<String, u64>) -> TcpExtTimeline {
        TcpExtTimeline { last: before.clone(), readings: Vec::new() }
    }

    /// A reading at `ts`: kept when a counter grew since the last one. An empty reading (the
    /// namespace could not be read) is skipped, so the next one covers its time.
    pub fn read(&mut self, ts: f64, now: BTreeMap<String, u64>) {
        if now.is_empty() {
            return;
        }
        let grown: BTreeMap<String, u64> = growth(&self.last, &now).into_iter().filter(|(_, n)| *n > 0).collect();
        self.last = now;
        if grown.is_empty() {
            return;
        }
        if self.readings.len() == MAX_READINGS {
            let old = std::mem::take(&mut self.readings);
            let mut pairs = old.into_iter();
            while let Some(mut a) = pairs.next() {
                if let Some(b) = pairs.next() {
                    for (k, n) in b.grown {
                        *a.grown.entry(k).or_default() += n;
                    }
                    a.ts = b.ts;
                }
                self.readings.push(a);
            }
        }
        self.readings.push(TcpExtReading { ts, grown });
    }

    pub fn readings(&self) -> &[TcpExtReading] {
        &self.readings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "TcpExt: SyncookiesSent TCPLossProbes TCPTimeouts TCPFastRetrans\n\
                          TcpExt: 0 4 2 10\n\
                          IpExt: InNoRoutes InTruncatedPkts\n\
                          IpExt: 0 0\n";

    #[test]
    fn the_timeline_keeps_growth_and_stays_bounded() {
        let at = |n: u64| BTreeMap::from([("TCPLossProbes".to_string(), n), ("TCPTimeouts".to_string(), 7)]);
        let mut t = TcpExtTimeline::new(&at(0));
        t.read(1.0, at(0));
        t.read(2.0, BTreeMap::new());
        t.read(3.0, at(4));
        assert_eq!(t.readings().len(), 1, "no growth and unreadable readings are not kept");
        assert_eq!(t.readings()[0].grown, BTreeMap::from([("TCPLossProbes".to_string(), 4)]));
        for i in 0..(2 * MAX_READINGS as u64) {
            t.read(4.0 + i as f64, at(5 + i));
        }
        assert!(t.readings().len() <= MAX_READINGS);
        let total: u64 = t.readings().iter().map(|r| r.grown["TCPLossProbes"]).sum();
        assert_eq!(total, 4 + 2 * MAX_READINGS as u64, "joined readings keep every count");
        assert_eq!(t.readings().last().unwrap().ts, 3.0 + 2.0 * MAX_READINGS as f64);
        assert!(t.readings().windows(2).all(|w| w[0].ts < w[1].ts));
    }

    #[test]
    fn tcp_ext_by_name_and_its_growth() {
        let before = parse_tcp_ext(SAMPLE);
        assert_eq!(before["TCPLossProbes"], 4);
        assert!(!before.contains_key("InNoRoutes"), "IpExt is another table");
        let after = parse_tcp_ext(&SAMPLE.replace("0 4 2 10", "0 9 2 15"));
        let g = growth(&before, &after);
        assert_eq!((g["TCPLossProbes"], g["TCPTimeouts"], g["TCPFastRetrans"]), (5, 0, 5));
        assert!(!g.contains_key("SyncookiesSent"), "only the counters that explain retransmissions");
        assert!(!g.contains_key("TCPSpuriousRTOs"), "absent from the kernel's table");
        assert!(parse_tcp_ext("garbage").is_empty());
    }
}
