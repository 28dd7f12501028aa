//! The kernel's own TCP counters (`TcpExt` in `/proc/net/netstat`) of the watched
//! namespace, read at the start and the end of a live run: their changes tell tail loss
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

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "TcpExt: SyncookiesSent TCPLossProbes TCPTimeouts TCPFastRetrans\n\
                          TcpExt: 0 4 2 10\n\
                          IpExt: InNoRoutes InTruncatedPkts\n\
                          IpExt: 0 0\n";

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
