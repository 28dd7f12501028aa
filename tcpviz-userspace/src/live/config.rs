//! What the options and the kernel decide for the kernel side: the `CONFIG` and
//! `TRACE_CONFIG` map contents and the link type of the TC snapshots. Pure: the kernel's
//! answers (BTF offsets, tracefs formats, the interface's ARPHRD type) come in as values.

use std::net::Ipv4Addr;

use tcpviz_common::{
    AgentConfig, CAPTURE_ALL, CAPTURE_TROUBLED, FILTER_SLOTS, NO_FIELD, TP_CONG_STATE_SET, TP_PROBE, TP_RECEIVE_RESET,
    TP_RETRANSMIT_SKB, TP_RETRANSMIT_SYNACK, TP_SYS_EXIT_ACCEPT, TP_SYS_EXIT_ACCEPT4, TRACE_RAW_LEN, TraceConfig,
};

use super::tracefs::Format;
use crate::capture::frame::LinkType;

/// ARPHRD types (linux/if_arp.h) whose packets carry an Ethernet header at TC.
const ARPHRD_ETHER: u16 = 1;
const ARPHRD_LOOPBACK: u16 = 772;
/// ARPHRD types whose packets start with the IP header at TC: PPP, raw IP (cellular modems),
/// IPIP, IP6IP6, SIT, GRE, IP6GRE, and NONE (tun, wireguard).
const ARPHRD_L3: [u16; 8] = [512, 519, 768, 769, 776, 778, 823, 65534];

/// The link header an interface's packets carry at TC: it picks the pair of TC programs and
/// the link type of the snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkHeader {
    Ethernet,
    /// None: IP starts the packet.
    None,
}

impl LinkHeader {
    /// The header of an interface of this ARPHRD type; `None` for types tcpviz cannot
    /// decode (InfiniBand, CAN, …).
    pub fn of(arphrd: u16) -> Option<LinkHeader> {
        match arphrd {
            ARPHRD_ETHER | ARPHRD_LOOPBACK => Some(LinkHeader::Ethernet),
            t if ARPHRD_L3.contains(&t) => Some(LinkHeader::None),
            _ => None,
        }
    }

    pub fn link_type(self) -> LinkType {
        match self {
            LinkHeader::Ethernet => LinkType::ETHERNET,
            LinkHeader::None => LinkType::RAW,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            LinkHeader::Ethernet => "ethernet",
            LinkHeader::None => "none",
        }
    }

    /// The (ingress, egress) TC programs for this header.
    pub fn programs(self) -> [&'static str; 2] {
        match self {
            LinkHeader::Ethernet => ["tcpviz_ingress", "tcpviz_egress"],
            LinkHeader::None => ["tcpviz_ingr_l3", "tcpviz_egr_l3"],
        }
    }
}

/// Offsets into kernel structures, from the kernel's BTF.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `offsetof(struct sock, __sk_common.skc_net.net)`.
    pub sk_net: u32,
    /// `offsetof(struct net, ns.inum)`.
    pub net_inum: u32,
    /// `offsetof(struct sk_buff, cb)`.
    pub skb_cb: u32,
    /// `offsetof(struct tcp_skb_cb, tcp_gso_segs)` when `tcp_gso_size` follows it, else 0.
    pub skb_gso: u32,
    /// `offsetof(struct tcp_sock, mss_cache)`, else 0.
    pub mss_cache: u32,
    /// From a task to the socket behind a descriptor (see `AgentConfig::fd_path`), else 0s.
    pub fd_path: [u32; 6],
    /// A socket's ends in `struct sock` (see `AgentConfig::sock_ends_off`), when all known.
    pub sock_ends: Option<[u32; 7]>,
}

/// Which packets the TC programs copy (`--capture`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CapturePolicy {
    /// Only packets of connections the kernel showed trouble on, while they are watched.
    #[default]
    Troubled,
    /// Every TCP packet.
    All,
    /// No TC program: the kernel's TCP tracepoints only.
    Kernel,
}

impl CapturePolicy {
    pub fn name(self) -> &'static str {
        match self {
            CapturePolicy::Troubled => "troubled",
            CapturePolicy::All => "all",
            CapturePolicy::Kernel => "kernel",
        }
    }
}

/// What the options decide for the kernel side.
#[derive(Debug, Clone, Copy, Default)]
pub struct AgentSettings<'a> {
    /// Inode number of the network namespace to watch (0: every namespace).
    pub netns_inum: u64,
    pub wakeup_bytes: u32,
    pub ports: &'a [u16],
    pub addrs: &'a [Ipv4Addr],
    pub capture: CapturePolicy,
    /// How long a connection stays watched after its last trouble (policy `troubled`).
    pub watch_ns: u64,
}

/// The agent-wide config; filters beyond `FILTER_SLOTS` entries are dropped.
pub fn agent_config(s: &AgentSettings<'_>, offsets: KernelOffsets) -> AgentConfig {
    let mut cfg = AgentConfig {
        netns_inum: s.netns_inum as u32,
        sk_net_off: offsets.sk_net,
        net_inum_off: offsets.net_inum,
        skb_cb_off: offsets.skb_cb,
        skb_gso_off: offsets.skb_gso,
        mss_cache_off: offsets.mss_cache,
        fd_path: offsets.fd_path,
        sock_ends_off: offsets.sock_ends.unwrap_or_default(),
        sock_ends_known: offsets.sock_ends.is_some() as u32,
        wakeup_bytes: s.wakeup_bytes,
        capture: if s.capture == CapturePolicy::Troubled { CAPTURE_TROUBLED } else { CAPTURE_ALL },
        watch_ns: s.watch_ns,
        ..Default::default()
    };
    for (i, p) in s.ports.iter().take(FILTER_SLOTS).enumerate() {
        cfg.ports[i] = *p;
        cfg.port_count = i as u32 + 1;
    }
    for (i, a) in s.addrs.iter().take(FILTER_SLOTS).enumerate() {
        cfg.addr4[i] = u32::from_ne_bytes(a.octets());
        cfg.addr4_count = i as u32 + 1;
    }
    cfg
}

/// The config of tracepoint `tp` (a `TP_*` index) from its tracefs format.
pub fn trace_config(tp: u32, format: &Format) -> TraceConfig {
    let off = |name: &str| format.field(name).map(|x| x.offset as u16).unwrap_or(NO_FIELD);
    // Trouble that starts watching a connection: a retransmission (data or SYN-ACK), a move
    // to Recovery (3) or Loss (4), a reset received. A reset sent ends the connection: its
    // packets after that are few, and its record names the peer by sockaddr, not by field.
    let marks_trouble = matches!(tp, TP_RETRANSMIT_SKB | TP_RETRANSMIT_SYNACK | TP_CONG_STATE_SET | TP_RECEIVE_RESET);
    let (state_off, trouble_states) =
        if tp == TP_CONG_STATE_SET { (off("cong_state"), (1 << 3) | (1 << 4)) } else { (NO_FIELD, 0) };
    TraceConfig {
        raw_len: format.record_len().min(TRACE_RAW_LEN) as u16,
        skaddr_off: off("skaddr"),
        skbaddr_off: if tp == TP_RETRANSMIT_SKB { off("skbaddr") } else { NO_FIELD },
        marks_trouble: marks_trouble as u16,
        family_off: off("family"),
        sport_off: off("sport"),
        dport_off: off("dport"),
        saddr_off: off("saddr"),
        daddr_off: off("daddr"),
        saddr6_off: off("saddr_v6"),
        daddr6_off: off("daddr_v6"),
        state_off,
        trouble_states,
        cwnd_off: if tp == TP_PROBE { off("snd_cwnd") } else { NO_FIELD },
        ssthresh_off: if tp == TP_PROBE { off("ssthresh") } else { NO_FIELD },
        ret_off: if matches!(tp, TP_SYS_EXIT_ACCEPT4 | TP_SYS_EXIT_ACCEPT) { off("ret") } else { NO_FIELD },
    }
}

#[cfg(test)]
mod tests {
    use tcpviz_common::TP_PROBE;

    use super::*;
    use crate::live::tracefs::Field;

    #[test]
    fn l3_devices_have_no_link_header_and_their_own_programs() {
        let wireguard = LinkHeader::of(65534).unwrap();
        assert_eq!((wireguard, wireguard.link_type()), (LinkHeader::None, LinkType::RAW));
        assert_eq!(LinkHeader::of(778), Some(LinkHeader::None), "GRE");
        assert_eq!(LinkHeader::of(1).map(LinkHeader::link_type), Some(LinkType::ETHERNET));
        assert_eq!(LinkHeader::of(772), Some(LinkHeader::Ethernet), "loopback");
        assert_eq!(LinkHeader::of(32), None, "InfiniBand");
        assert_ne!(LinkHeader::Ethernet.programs(), LinkHeader::None.programs());
    }

    #[test]
    fn filters_fill_at_most_their_slots() {
        let ports: Vec<u16> = (1..=10).collect();
        let addrs = [Ipv4Addr::new(10, 0, 0, 1)];
        let s = AgentSettings {
            netns_inum: 4026531840,
            wakeup_bytes: 4096,
            ports: &ports,
            addrs: &addrs,
            ..Default::default()
        };
        let offsets = KernelOffsets {
            sk_net: 48,
            net_inum: 200,
            skb_cb: 40,
            skb_gso: 8,
            mss_cache: 1500,
            fd_path: [0; 6],
            sock_ends: None,
        };
        let cfg = agent_config(&s, offsets);
        assert_eq!(cfg.port_count, FILTER_SLOTS as u32);
        assert_eq!(cfg.ports, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(cfg.addr4_count, 1);
        assert_eq!(cfg.addr4[0], u32::from_ne_bytes([10, 0, 0, 1]));
        assert_eq!((cfg.sk_net_off, cfg.net_inum_off, cfg.skb_cb_off), (48, 200, 40));
        assert_eq!((cfg.netns_inum, cfg.wakeup_bytes), (4026531840, 4096));
        let none = agent_config(&AgentSettings::default(), offsets);
        assert_eq!((none.port_count, none.addr4_count, none.netns_inum), (0, 0, 0));
    }

    fn format(fields: &[(&str, usize, usize)]) -> Format {
        Format {
            category: "tcp".into(),
            name: "x".into(),
            fields: fields
                .iter()
                .map(|&(name, offset, size)| Field { name: name.into(), offset, size, signed: false })
                .collect(),
        }
    }

    #[test]
    fn trace_config_reads_offsets_and_caps_the_length() {
        let f = format(&[("skbaddr", 8, 8), ("skaddr", 16, 8), ("big", 24, 400)]);
        let c = trace_config(TP_RETRANSMIT_SKB, &f);
        assert_eq!((c.raw_len as usize, c.skaddr_off, c.skbaddr_off), (TRACE_RAW_LEN, 16, 8));
        // Only tcp_retransmit_skb needs the skb.
        assert_eq!(trace_config(TP_PROBE, &f).skbaddr_off, NO_FIELD);
        let small = trace_config(TP_PROBE, &format(&[("saddr", 8, 4)]));
        assert_eq!((small.raw_len, small.skaddr_off), (12, NO_FIELD));
    }

    /// `tcp_cong_state_set` as Linux 6.18 lays it out.
    #[test]
    fn trouble_is_a_move_to_recovery_or_loss_and_names_its_socket() {
        let f = format(&[
            ("skaddr", 8, 8),
            ("sport", 16, 2),
            ("dport", 18, 2),
            ("family", 20, 2),
            ("saddr", 22, 4),
            ("daddr", 26, 4),
            ("saddr_v6", 30, 16),
            ("daddr_v6", 46, 16),
            ("cong_state", 62, 1),
        ]);
        let c = trace_config(TP_CONG_STATE_SET, &f);
        assert_eq!(c.marks_trouble, 1);
        assert_eq!((c.family_off, c.sport_off, c.dport_off, c.saddr_off, c.daddr_off), (20, 16, 18, 22, 26));
        assert_eq!((c.saddr6_off, c.daddr6_off, c.state_off), (30, 46, 62));
        let counted: Vec<u16> = (0..5).filter(|s| c.trouble_states >> s & 1 == 1).collect();
        assert_eq!(counted, [3, 4], "Recovery and Loss; Open, Disorder and CWR are routine");
        // Every hit of a retransmission counts; a state change or a probe never does.
        let r = trace_config(TP_RETRANSMIT_SKB, &f);
        assert_eq!((r.marks_trouble, r.state_off), (1, NO_FIELD));
        assert_eq!(trace_config(TP_PROBE, &f).marks_trouble, 0);
        // Only tcp_probe is sampled in the kernel, by its cwnd and ssthresh.
        let probe = format(&[("snd_cwnd", 88, 4), ("ssthresh", 92, 4)]);
        let p = trace_config(TP_PROBE, &probe);
        assert_eq!((p.cwnd_off, p.ssthresh_off), (88, 92));
        assert_eq!(trace_config(TP_RETRANSMIT_SKB, &probe).cwnd_off, NO_FIELD);
        assert_eq!(trace_config(tcpviz_common::TP_INET_SOCK_SET_STATE, &f).marks_trouble, 0);
    }

    #[test]
    fn the_policy_reaches_the_kernel_config() {
        let offsets = KernelOffsets::default();
        let troubled =
            AgentSettings { capture: CapturePolicy::Troubled, watch_ns: 30_000_000_000, ..Default::default() };
        let cfg = agent_config(&troubled, offsets);
        assert_eq!((cfg.capture, cfg.watch_ns), (CAPTURE_TROUBLED, 30_000_000_000));
        let all = agent_config(&AgentSettings { capture: CapturePolicy::All, ..Default::default() }, offsets);
        assert_eq!(all.capture, CAPTURE_ALL);
    }
}
