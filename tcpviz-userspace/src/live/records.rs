//! Turns ring-buffer records into what the pipeline takes: packet snapshots into frames,
//! tracepoint records into kernel events and kernel samples, reading the fields at the
//! offsets of the tracefs formats, and watch starts into the flows they name.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tcpviz_common::{
    TP_CONG_STATE_SET, TP_COUNT, TP_INET_SOCK_SET_STATE, TP_PROBE, TP_RECEIVE_RESET, TP_RETRANSMIT_SKB,
    TP_RETRANSMIT_SYNACK, TP_SEND_RESET, TRACEPOINTS, TraceRecord, WATCH_SACK_SENT, WATCH_TRACEPOINT,
    WATCH_ZERO_WINDOW_SENT, WatchKey, WatchRecord,
};

use super::tracefs::Format;
use crate::analysis::kernel::{KernelEvent, KernelKind};
use crate::event::KernelSample;
use crate::flow::watch::WatchStart;
use crate::time::TimestampNs;

const AF_INET: u64 = 2;
const AF_INET6: u64 = 10;
const IPPROTO_TCP: u64 = 6;

/// What a tracepoint record says.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    Event(KernelEvent),
    Sample(KernelSample),
    /// Not about TCP (inet_sock_set_state also reports other protocols), or unreadable.
    Skip,
}

/// Endpoints from `saddr`/`daddr` (IPv4) and `saddr_v6`/`daddr_v6` fields by family.
pub(super) fn endpoints(f: &Format, raw: &[u8]) -> Option<(IpAddr, u16, IpAddr, u16)> {
    let sport = f.uint(raw, "sport")? as u16;
    let dport = f.uint(raw, "dport")? as u16;
    let family = f.uint(raw, "family").unwrap_or(AF_INET);
    let (src, dst) = if family == AF_INET6 {
        let s: [u8; 16] = f.bytes(raw, "saddr_v6")?.try_into().ok()?;
        let d: [u8; 16] = f.bytes(raw, "daddr_v6")?.try_into().ok()?;
        (IpAddr::V6(Ipv6Addr::from(s)), IpAddr::V6(Ipv6Addr::from(d)))
    } else {
        let s: [u8; 4] = f.bytes(raw, "saddr")?.get(..4)?.try_into().ok()?;
        let d: [u8; 4] = f.bytes(raw, "daddr")?.get(..4)?.try_into().ok()?;
        (IpAddr::V4(Ipv4Addr::from(s)), IpAddr::V4(Ipv4Addr::from(d)))
    };
    Some((unmap(src), sport, unmap(dst), dport))
}

/// A `struct sockaddr_in`/`sockaddr_in6` field (tcp_probe, tcp_send_reset): address and
/// port (network order in the structure).
fn sockaddr(bytes: &[u8]) -> Option<(IpAddr, u16)> {
    let family = u16::from_ne_bytes([*bytes.first()?, *bytes.get(1)?]) as u64;
    let port = u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?]);
    match family {
        AF_INET => {
            let a: [u8; 4] = bytes.get(4..8)?.try_into().ok()?;
            Some((IpAddr::V4(Ipv4Addr::from(a)), port))
        }
        AF_INET6 => {
            let a: [u8; 16] = bytes.get(8..24)?.try_into().ok()?;
            Some((unmap(IpAddr::V6(Ipv6Addr::from(a))), port))
        }
        _ => None,
    }
}

/// An IPv4-mapped IPv6 address is the IPv4 address the wire shows.
fn unmap(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(a),
        v4 => v4,
    }
}

fn sockaddr_endpoints(f: &Format, raw: &[u8]) -> Option<(IpAddr, u16, IpAddr, u16)> {
    let (src, sport) = sockaddr(f.bytes(raw, "saddr")?)?;
    let (dst, dport) = sockaddr(f.bytes(raw, "daddr")?)?;
    Some((src, sport, dst, dport))
}

/// Decodes a tracepoint record. `formats[tp]` is None for a tracepoint this kernel lacks.
pub fn decode_trace(rec: &TraceRecord, formats: &[Option<Format>; TP_COUNT], ts: TimestampNs) -> Decoded {
    let tp = rec.tracepoint as u32;
    let Some(Some(f)) = formats.get(tp as usize) else { return Decoded::Skip };
    let raw = &rec.raw[..(rec.raw_len as usize).min(rec.raw.len())];
    let ev = |kind: KernelKind, ep: Option<(IpAddr, u16, IpAddr, u16)>, seq_range: Option<(u32, u32)>| match ep {
        // A socket without ports yet (connect() before the port is bound) names no flow.
        Some((_, 0, _, _)) | Some((_, _, _, 0)) | None => Decoded::Skip,
        Some((src, sport, dst, dport)) => Decoded::Event(KernelEvent { ts, kind, src, sport, dst, dport, seq_range }),
    };
    match tp {
        TP_RETRANSMIT_SKB => {
            let state = f.int(raw, "state").unwrap_or(0);
            let err = f.int(raw, "err").unwrap_or(0);
            let range = (rec.skb_end_seq != 0 || rec.skb_seq != 0).then_some((rec.skb_seq, rec.skb_end_seq));
            let (segs, mss) = (rec.skb_gso_segs, rec.skb_gso_size);
            ev(KernelKind::Retransmit { state, err, segs, mss }, endpoints(f, raw), range)
        }
        TP_RETRANSMIT_SYNACK => ev(KernelKind::RetransmitSynack, endpoints(f, raw), None),
        TP_CONG_STATE_SET => {
            let state = f.uint(raw, "cong_state").unwrap_or(0) as u8;
            ev(KernelKind::CongState(state), endpoints(f, raw), None)
        }
        TP_INET_SOCK_SET_STATE => {
            if f.uint(raw, "protocol").is_some_and(|p| p != IPPROTO_TCP) {
                return Decoded::Skip;
            }
            let old = f.int(raw, "oldstate").unwrap_or(0);
            let new = f.int(raw, "newstate").unwrap_or(0);
            ev(KernelKind::StateChange { old, new }, endpoints(f, raw), None)
        }
        TP_SEND_RESET => {
            let state = f.int(raw, "state").unwrap_or(0);
            let reason = f.int(raw, "reason");
            let ep = if f.field("sport").is_some() { endpoints(f, raw) } else { sockaddr_endpoints(f, raw) };
            ev(KernelKind::ResetSent { state, reason }, ep, None)
        }
        TP_RECEIVE_RESET => ev(KernelKind::ResetReceived, endpoints(f, raw), None),
        TP_PROBE => {
            let ep = if f.field("sport").is_some() && f.field("saddr_v6").is_some() {
                endpoints(f, raw)
            } else {
                sockaddr_endpoints(f, raw)
            };
            let Some((src, sport, dst, dport)) = ep else { return Decoded::Skip };
            let u = |n: &str| f.uint(raw, n).unwrap_or(0) as u32;
            Decoded::Sample(KernelSample {
                ts,
                flow_id: None,
                src,
                sport,
                dst,
                dport,
                snd_cwnd: u("snd_cwnd"),
                ssthresh: u("ssthresh"),
                srtt_us: u("srtt"),
                snd_wnd: u("snd_wnd"),
                rcv_wnd: u("rcv_wnd"),
                snd_una: u("snd_una"),
                snd_nxt: u("snd_nxt"),
                mss: (rec.sk_mss > 0 && rec.sk_mss < 65_536).then_some(rec.sk_mss),
            })
        }
        _ => Decoded::Skip,
    }
}

/// A watch start (`decode::watch` checked its fields); `lasts` is the watch's length.
pub fn decode_watch(rec: &WatchRecord, ts: TimestampNs, lasts: TimestampNs) -> Option<WatchStart> {
    let reason = match rec.reason {
        WATCH_TRACEPOINT => TRACEPOINTS.get(rec.tracepoint as usize)?.name,
        WATCH_SACK_SENT => "sack_sent",
        WATCH_ZERO_WINDOW_SENT => "zero_window_sent",
        _ => return None,
    };
    let (src, dst) = watch_addrs(&rec.key)?;
    Some(WatchStart { ts, src: (src, rec.key.sport), dst: (dst, rec.key.dport), reason, lasts })
}

/// The addresses of a watch key: IPv4 in the first 4 bytes, or IPv6.
fn watch_addrs(k: &WatchKey) -> Option<(IpAddr, IpAddr)> {
    match k.ip_version {
        4 => {
            let a = |b: &[u8; 16]| IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]));
            Some((a(&k.src), a(&k.dst)))
        }
        6 => Some((IpAddr::V6(Ipv6Addr::from(k.src)), IpAddr::V6(Ipv6Addr::from(k.dst)))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::tracefs::parse_format;

    fn formats() -> [Option<Format>; TP_COUNT] {
        let mut f: [Option<Format>; TP_COUNT] = Default::default();
        f[TP_RETRANSMIT_SKB as usize] = Some(
            parse_format(
                "tcp",
                "tcp_retransmit_skb",
                "\tfield:const void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:const void * skaddr;\toffset:16;\tsize:8;\tsigned:0;
\tfield:int state;\toffset:24;\tsize:4;\tsigned:1;
\tfield:__u16 sport;\toffset:28;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:30;\tsize:2;\tsigned:0;
\tfield:__u16 family;\toffset:32;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:34;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:38;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:42;\tsize:16;\tsigned:0;
\tfield:__u8 daddr_v6[16];\toffset:58;\tsize:16;\tsigned:0;
\tfield:int err;\toffset:76;\tsize:4;\tsigned:1;",
            )
            .unwrap(),
        );
        f[TP_PROBE as usize] = Some(
            parse_format(
                "tcp",
                "tcp_probe",
                "\tfield:__u8 saddr[28];\toffset:8;\tsize:28;\tsigned:0;
\tfield:__u8 daddr[28];\toffset:36;\tsize:28;\tsigned:0;
\tfield:__u16 sport;\toffset:64;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:66;\tsize:2;\tsigned:0;
\tfield:__u16 family;\toffset:68;\tsize:2;\tsigned:0;
\tfield:__u32 snd_cwnd;\toffset:88;\tsize:4;\tsigned:0;
\tfield:__u32 ssthresh;\toffset:92;\tsize:4;\tsigned:0;
\tfield:__u32 srtt;\toffset:100;\tsize:4;\tsigned:0;",
            )
            .unwrap(),
        );
        f
    }

    fn record(tp: u32, fill: impl FnOnce(&mut [u8])) -> TraceRecord {
        let mut r = TraceRecord {
            kind: tcpviz_common::RECORD_TRACE,
            tracepoint: tp as u8,
            raw_len: 144,
            netns: 0,
            ts_boot_ns: 0,
            skb_seq: 1000,
            skb_end_seq: 2448,
            skb_gso_segs: 0,
            skb_gso_size: 0,
            sk_mss: 0,
            owner: Default::default(),
            accepted_sk: 0,
            raw: [0; 144],
        };
        fill(&mut r.raw);
        r
    }

    #[test]
    fn retransmit_record_decodes_with_its_range() {
        let r = record(TP_RETRANSMIT_SKB, |raw| {
            raw[24..28].copy_from_slice(&1i32.to_ne_bytes());
            raw[28..30].copy_from_slice(&40000u16.to_ne_bytes());
            raw[30..32].copy_from_slice(&5201u16.to_ne_bytes());
            raw[32..34].copy_from_slice(&2u16.to_ne_bytes());
            raw[34..38].copy_from_slice(&[10, 0, 0, 1]);
            raw[38..42].copy_from_slice(&[10, 0, 0, 2]);
        });
        match decode_trace(&r, &formats(), 7) {
            Decoded::Event(e) => {
                assert_eq!(e.kind, KernelKind::Retransmit { state: 1, err: 0, segs: 0, mss: 0 });
                assert_eq!((e.src, e.sport, e.dport), ("10.0.0.1".parse().unwrap(), 40000, 5201));
                assert_eq!(e.seq_range, Some((1000, 2448)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn probe_record_reads_sockaddr_fields() {
        let r = record(TP_PROBE, |raw| {
            raw[8..10].copy_from_slice(&10u16.to_ne_bytes());
            raw[10..12].copy_from_slice(&443u16.to_be_bytes());
            raw[16..32].copy_from_slice(&"fd20::1".parse::<Ipv6Addr>().unwrap().octets());
            raw[36..38].copy_from_slice(&10u16.to_ne_bytes());
            raw[38..40].copy_from_slice(&5555u16.to_be_bytes());
            raw[44..60].copy_from_slice(&"::ffff:10.1.2.3".parse::<Ipv6Addr>().unwrap().octets());
            raw[88..92].copy_from_slice(&10u32.to_ne_bytes());
            raw[100..104].copy_from_slice(&1234u32.to_ne_bytes());
        });
        match decode_trace(&r, &formats(), 7) {
            Decoded::Sample(s) => {
                assert_eq!((s.src, s.sport), ("fd20::1".parse().unwrap(), 443));
                assert_eq!((s.dst, s.dport), ("10.1.2.3".parse().unwrap(), 5555), "mapped addresses are IPv4");
                assert_eq!((s.snd_cwnd, s.srtt_us), (10, 1234));
            }
            other => panic!("{other:?}"),
        }
        // A tracepoint the kernel lacks decodes to nothing.
        assert_eq!(decode_trace(&record(TP_RECEIVE_RESET, |_| {}), &formats(), 7), Decoded::Skip);
    }

    #[test]
    fn watch_records_name_their_connection_and_reason() {
        let mut key = WatchKey { sport: 40000, dport: 5201, ip_version: 4, ..Default::default() };
        key.src[..4].copy_from_slice(&[10, 201, 1, 1]);
        key.dst[..4].copy_from_slice(&[10, 201, 2, 2]);
        let rec = |reason: u8, tracepoint: u8, key: WatchKey| WatchRecord {
            kind: tcpviz_common::RECORD_WATCH,
            reason,
            tracepoint,
            _pad: [0; 5],
            ts_boot_ns: 0,
            key,
        };
        let w = decode_watch(&rec(WATCH_TRACEPOINT, TP_CONG_STATE_SET as u8, key), 7, 30).unwrap();
        assert_eq!(w.src, ("10.201.1.1".parse().unwrap(), 40000));
        assert_eq!(w.dst, ("10.201.2.2".parse().unwrap(), 5201));
        assert_eq!((w.reason, w.ts, w.lasts), ("tcp_cong_state_set", 7, 30));
        let w = decode_watch(&rec(WATCH_SACK_SENT, 0, key), 7, 30).unwrap();
        assert_eq!(w.reason, "sack_sent");
        let six = WatchKey {
            src: "fd20:1::1".parse::<Ipv6Addr>().unwrap().octets(),
            dst: "fd20:2::2".parse::<Ipv6Addr>().unwrap().octets(),
            ip_version: 6,
            ..key
        };
        let w = decode_watch(&rec(WATCH_ZERO_WINDOW_SENT, 0, six), 7, 30).unwrap();
        assert_eq!(
            (w.src.0, w.dst.0, w.reason),
            ("fd20:1::1".parse().unwrap(), "fd20:2::2".parse().unwrap(), "zero_window_sent")
        );
        // Records the decoder would have refused name nothing here either.
        assert_eq!(decode_watch(&rec(9, 0, key), 7, 30), None);
        assert_eq!(decode_watch(&rec(WATCH_TRACEPOINT, TP_COUNT as u8, key), 7, 30), None);
        assert_eq!(decode_watch(&rec(WATCH_SACK_SENT, 0, WatchKey { ip_version: 5, ..key }), 7, 30), None);
    }
}
