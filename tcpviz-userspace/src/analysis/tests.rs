//! Rule-by-rule tests on synthetic connections.

use std::net::IpAddr;

use super::{Analyzer, PacketRef};
use crate::capture::decode::{SackBlocks, Segment, TcpFlags, TcpOptions};
use crate::event::{Event, EventKind, Reason, Severity};
use crate::flow::table::{FlowLimits, Retirement};

const MS: i64 = 1_000_000;
const C: u32 = 1_000; // client ISN
const S: u32 = 5_000; // server ISN

/// Drives an analyzer with a client (10.0.0.1:40000) and a server (10.0.0.2:80).
struct Conv {
    an: Analyzer,
    frame: u64,
    events: Vec<Event>,
    client_isn: u32,
    server_isn: u32,
    cport: u16,
}

#[derive(Clone, Copy)]
enum From {
    Client,
    Server,
}

impl Conv {
    fn new() -> Conv {
        Conv::with(FlowLimits::default(), C, S)
    }

    fn with(limits: FlowLimits, client_isn: u32, server_isn: u32) -> Conv {
        Conv { an: Analyzer::new(limits), frame: 0, events: Vec::new(), client_isn, server_isn, cport: 40000 }
    }

    #[allow(clippy::too_many_arguments)]
    fn send(
        &mut self,
        t_ms: f64,
        from: From,
        rel_seq: u32,
        rel_ack: u32,
        len: u32,
        flags: u16,
        win: u16,
    ) -> Vec<Event> {
        self.send_opts(t_ms, from, rel_seq, rel_ack, len, flags, win, TcpOptions::default())
    }

    #[allow(clippy::too_many_arguments)]
    fn send_opts(
        &mut self,
        t_ms: f64,
        from: From,
        rel_seq: u32,
        rel_ack: u32,
        len: u32,
        flags: u16,
        win: u16,
        options: TcpOptions,
    ) -> Vec<Event> {
        let c: IpAddr = "10.0.0.1".parse().unwrap();
        let s: IpAddr = "10.0.0.2".parse().unwrap();
        let (src, dst, sport, dport, isn, peer) = match from {
            From::Client => (c, s, self.cport, 80, self.client_isn, self.server_isn),
            From::Server => (s, c, 80, self.cport, self.server_isn, self.client_isn),
        };
        self.frame += 1;
        let seg = Segment {
            ts: (t_ms * MS as f64) as i64 + 1_700_000_000_000_000_000,
            src,
            dst,
            sport,
            dport,
            seq: isn.wrapping_add(rel_seq),
            ack: if flags & TcpFlags::ACK != 0 { peer.wrapping_add(rel_ack) } else { 0 },
            flags: TcpFlags(flags),
            window: win,
            payload_len: len,
            options,
            truncated: false,
        };
        let mut out = Vec::new();
        self.an.process(&seg, PacketRef { frame: self.frame, file_index: 0 }, &mut out);
        self.events.extend(out.iter().cloned());
        out
    }

    /// SYN, SYN-ACK (both with window scale 0), ACK; RTT 10 ms.
    fn handshake(&mut self) {
        let ws = TcpOptions { window_scale: Some(0), mss: Some(1000), ..Default::default() };
        self.send_opts(0.0, From::Client, 0, 0, 0, TcpFlags::SYN, 60000, ws);
        self.send_opts(5.0, From::Server, 0, 1, 0, TcpFlags::SYN | TcpFlags::ACK, 60000, ws);
        self.send(10.0, From::Client, 1, 1, 0, TcpFlags::ACK, 60000);
    }

    fn kinds(events: &[Event]) -> Vec<EventKind> {
        events.iter().map(|e| e.event).collect()
    }

    fn finish(&mut self) -> Vec<(Box<crate::flow::state::Flow>, Retirement)> {
        let mut out = Vec::new();
        self.an.finish(&mut out);
        self.events.extend(out);
        self.an.take_retired().collect()
    }

    fn reasons(&self) -> Vec<Reason> {
        self.events.iter().filter_map(|e| e.extra.reason).collect()
    }
}

const A: u16 = TcpFlags::ACK;
const PA: u16 = TcpFlags::ACK | TcpFlags::PSH;

#[test]
fn clean_transfer_has_no_events_and_karn_rtt_samples() {
    let mut c = Conv::new();
    c.handshake();
    for i in 0..10u32 {
        let t = 20.0 + i as f64;
        assert!(c.send(t, From::Client, 1 + i * 1000, 1, 1000, PA, 60000).is_empty());
        assert!(c.send(t + 8.0, From::Server, 1, 1 + (i + 1) * 1000, 0, A, 60000).is_empty());
    }
    let retired = c.finish();
    let flow = &retired[0].0;
    let rtt = &flow.dirs[0].stats.rtt;
    // The SYN, answered by the SYN-ACK after 5 ms, then the ten segments, 8 ms each.
    assert_eq!(rtt.count, 11);
    assert_eq!((rtt.min_ns, rtt.max_ns, rtt.median_ns()), (5 * MS, 8 * MS, Some(8 * MS)));
    assert_eq!(flow.first_rtt, 10 * MS, "handshake RTT: SYN to the third ACK");
    assert_eq!(flow.dirs[0].stats.payload_bytes, 10_000);
    assert!(c.events.is_empty(), "{:?}", Conv::kinds(&c.events));
}

#[test]
fn retransmitted_data_gives_no_rtt_sample() {
    let mut c = Conv::new();
    c.handshake();
    c.send(20.0, From::Client, 1, 1, 1000, PA, 60000);
    let ev = c.send(420.0, From::Client, 1, 1, 1000, PA, 60000);
    assert_eq!(Conv::kinds(&ev)[0], EventKind::Retransmission);
    assert_eq!(ev[0].extra.rto_ms, Some(400.0));
    c.send(430.0, From::Server, 1, 1001, 0, A, 60000);
    let retired = c.finish();
    let rtt = &retired[0].0.dirs[0].stats.rtt;
    assert_eq!((rtt.count, rtt.max_ns), (1, 5 * MS), "only the SYN's sample; the ambiguous ACK gives none (Karn)");
}

#[test]
fn fast_retransmission_after_duplicate_acks_and_triple_dupack_finding() {
    let mut c = Conv::new();
    c.handshake();
    for i in 0..5u32 {
        c.send(20.0 + i as f64 * 0.1, From::Client, 1 + i * 1000, 1, 1000, PA, 60000);
    }
    // Segment 1..1001 is lost: the server repeats the ACK of its SYN-ACK.
    let d1 = c.send(30.1, From::Server, 1, 1, 0, A, 60000);
    let d2 = c.send(30.2, From::Server, 1, 1, 0, A, 60000);
    let d3 = c.send(30.3, From::Server, 1, 1, 0, A, 60000);
    assert_eq!(Conv::kinds(&d1), vec![EventKind::DuplicateAck]);
    assert_eq!(d1[0].extra.dupack_num, Some(1));
    assert_eq!(d2[0].extra.dupack_num, Some(2));
    assert_eq!(Conv::kinds(&d3), vec![EventKind::DuplicateAck, EventKind::LossInfer]);
    assert_eq!(d3[1].extra.reason, Some(Reason::TripleDuplicateAck));
    let fr = c.send(31.0, From::Client, 1, 1, 1000, PA, 60000);
    assert_eq!(Conv::kinds(&fr), vec![EventKind::FastRetransmission]);
    // Not within 20 ms of the last duplicate ACK: a plain retransmission.
    let late = c.send(80.0, From::Client, 1001, 1, 1000, PA, 60000);
    assert_eq!(Conv::kinds(&late)[0], EventKind::Retransmission);
}

#[test]
fn spurious_out_of_order_and_lost_segment() {
    let mut c = Conv::new();
    c.handshake();
    c.send(20.0, From::Client, 1, 1, 1000, PA, 60000);
    c.send(21.0, From::Server, 1, 1001, 0, A, 60000);
    // Already acknowledged: spurious.
    let sp = c.send(22.0, From::Client, 1, 1, 1000, PA, 60000);
    assert_eq!(Conv::kinds(&sp), vec![EventKind::SpuriousRetransmission]);
    // A gap: lost segment; then the missing one within the OOO threshold (the handshake
    // RTT, 10 ms): out of order.
    let gap = c.send(30.0, From::Client, 2001, 1, 1000, PA, 60000);
    assert_eq!(Conv::kinds(&gap), vec![EventKind::LostSegment]);
    let ooo = c.send(31.0, From::Client, 1001, 1, 1000, PA, 60000);
    assert_eq!(Conv::kinds(&ooo), vec![EventKind::OutOfOrder]);
}

#[test]
fn zero_window_probe_keep_alive_and_window_full() {
    let mut c = Conv::new();
    c.handshake();
    // Fills the 60000-byte window exactly.
    let full = c.send(20.0, From::Client, 1, 1, 60000, PA, 60000);
    assert_eq!(Conv::kinds(&full), vec![EventKind::WindowFull]);
    let zw = c.send(21.0, From::Server, 1, 60001, 0, A, 0);
    assert_eq!(Conv::kinds(&zw), vec![EventKind::ZeroWindow]);
    let probe = c.send(221.0, From::Client, 60001, 1, 1, PA, 60000);
    assert_eq!(Conv::kinds(&probe), vec![EventKind::ZeroWindowProbe]);
    let probe_ack = c.send(222.0, From::Server, 1, 60001, 0, A, 0);
    assert_eq!(Conv::kinds(&probe_ack), vec![EventKind::ZeroWindowProbeAck, EventKind::ZeroWindow]);
    let upd = c.send(300.0, From::Server, 1, 60001, 0, A, 30000);
    assert_eq!(Conv::kinds(&upd), vec![EventKind::WindowUpdate]);
    // A Linux-style keep-alive: one byte before the next sequence number, no data.
    let ka = c.send(9000.0, From::Client, 60000, 1, 0, A, 60000);
    assert_eq!(Conv::kinds(&ka), vec![EventKind::KeepAlive]);
    let ka_ack = c.send(9001.0, From::Server, 1, 60001, 0, A, 30000);
    assert_eq!(Conv::kinds(&ka_ack), vec![EventKind::KeepAliveAck]);
    // None of this is inferred loss.
    assert!(!c.events.iter().any(|e| e.event == EventKind::LossInfer), "{:?}", Conv::kinds(&c.events));
}

#[test]
fn reused_ports_start_a_new_flow() {
    let mut c = Conv::new();
    c.handshake();
    c.send(20.0, From::Client, 1, 1, 100, PA, 60000);
    c.client_isn = 777_777;
    let syn = c.send(5000.0, From::Client, 0, 0, 0, TcpFlags::SYN, 60000);
    assert_eq!(Conv::kinds(&syn), vec![EventKind::ReusedPorts]);
    assert_eq!(syn[0].flow_id, 1);
    let retired = c.finish();
    assert_eq!(retired.len(), 2);
    assert_eq!(retired[0].1, Retirement::Reused);
}

#[test]
fn timer_retransmission_is_inferred_loss_but_recovery_is_not() {
    let mut c = Conv::new();
    c.handshake();
    c.send(20.0, From::Client, 1, 1, 1000, PA, 60000);
    c.send(20.1, From::Client, 1001, 1, 1000, PA, 60000);
    c.send(28.0, From::Server, 1, 1001, 0, A, 60000);
    // 1001..2001 lost, no duplicate ACK (it was the last segment): the timer fires. The
    // first repeat of a lone segment is the sender's tail-loss probe, the next its timeout.
    let probe = c.send(240.0, From::Client, 1001, 1, 1000, PA, 60000);
    assert_eq!(Conv::kinds(&probe), vec![EventKind::Retransmission, EventKind::TailLossProbe]);
    let rto = c.send(630.0, From::Client, 1001, 1, 1000, PA, 60000);
    assert_eq!(Conv::kinds(&rto), vec![EventKind::Retransmission, EventKind::LossInfer]);
    assert_eq!(rto[1].extra.reason, Some(Reason::RetransmissionTimeout));
    assert_eq!(rto[1].severity, Severity::Warning);
    // Backed off: the second attempt is critical.
    let again = c.send(1430.0, From::Client, 1001, 1, 1000, PA, 60000);
    assert_eq!(again[1].extra.attempt, Some(2));
    assert_eq!(again[1].severity, Severity::Critical);
    // A retransmission right after a partial ACK (recovery in progress) is not a timeout.
    let mut c = Conv::new();
    c.handshake();
    for i in 0..4u32 {
        c.send(20.0, From::Client, 1 + i * 1000, 1, 1000, PA, 60000);
    }
    c.send(300.0, From::Client, 1, 1, 1000, PA, 60000);
    c.send(301.0, From::Server, 1, 2001, 0, A, 60000);
    let partial = c.send(301.05, From::Client, 2001, 1, 1000, PA, 60000);
    assert_eq!(Conv::kinds(&partial), vec![EventKind::Retransmission]);
}

#[test]
fn ack_stall_and_not_when_the_window_was_closed() {
    let mut c = Conv::new();
    c.handshake();
    c.send(20.0, From::Client, 1, 1, 1000, PA, 60000);
    let late = c.send(2520.0, From::Server, 1, 1001, 0, A, 60000);
    assert_eq!(Conv::kinds(&late), vec![EventKind::LossInfer]);
    assert_eq!(late[0].extra.reason, Some(Reason::AckStall));
    assert_eq!(late[0].extra.stall_ms, Some(2500.0));
    let mut c = Conv::new();
    c.handshake();
    c.send(20.0, From::Client, 1, 1, 1000, PA, 60000);
    c.send(21.0, From::Server, 1, 1, 0, A, 0);
    c.send(2520.0, From::Server, 1, 1001, 0, A, 60000);
    assert!(!c.reasons().contains(&Reason::AckStall), "{:?}", c.reasons());
}

#[test]
fn handshake_and_teardown_findings() {
    // Refused: RST-ACK answers the SYN.
    let mut c = Conv::new();
    c.send(0.0, From::Client, 0, 0, 0, TcpFlags::SYN, 60000);
    let rst = c.send(0.1, From::Server, 0, 1, 0, TcpFlags::RST | A, 0);
    assert_eq!(rst[0].extra.reason, Some(Reason::ConnectionRefused));
    c.finish();
    assert_eq!(c.reasons(), vec![Reason::ConnectionRefused]);

    // SYNs never answered: two retransmissions, then nothing.
    let mut c = Conv::new();
    c.send(0.0, From::Client, 0, 0, 0, TcpFlags::SYN, 60000);
    c.send(1000.0, From::Client, 0, 0, 0, TcpFlags::SYN, 60000);
    c.send(3000.0, From::Client, 0, 0, 0, TcpFlags::SYN, 60000);
    c.finish();
    assert_eq!(c.reasons(), vec![Reason::SynRetransmitted, Reason::SynRetransmitted, Reason::NoSynAck]);
    let last = c.events.last().unwrap();
    assert_eq!((last.severity, last.frame, last.extra.attempt), (Severity::Critical, Some(3), Some(3)));

    // Too early to tell: the capture ends 0.5 s after the only SYN.
    let mut c = Conv::new();
    c.send(0.0, From::Client, 0, 0, 0, TcpFlags::SYN, 60000);
    c.finish();
    assert!(c.events.is_empty());

    // RST after FIN is informational; RST with data in flight is a warning.
    let mut c = Conv::new();
    c.handshake();
    c.send(20.0, From::Client, 1, 1, 0, TcpFlags::FIN | A, 60000);
    let r = c.send(21.0, From::Server, 1, 2, 0, TcpFlags::RST, 0);
    assert_eq!((r[0].extra.reason, r[0].severity), (Some(Reason::ResetAfterFin), Severity::Info));
    let mut c = Conv::new();
    c.handshake();
    c.send(20.0, From::Client, 1, 1, 500, PA, 60000);
    let r = c.send(21.0, From::Server, 1, 1, 0, TcpFlags::RST, 0);
    assert_eq!((r[0].extra.reason, r[0].severity), (Some(Reason::ResetWithDataInFlight), Severity::Warning));
}

#[test]
fn sequence_numbers_wrap_without_false_flags() {
    // The client's ISN sits just below 2^32: its data crosses zero.
    let mut c = Conv::with(FlowLimits::default(), u32::MAX - 2500, S);
    c.handshake();
    for i in 0..6u32 {
        let t = 20.0 + i as f64;
        c.send(t, From::Client, 1 + i * 1000, 1, 1000, PA, 60000);
        c.send(t + 0.5, From::Server, 1, 1 + (i + 1) * 1000, 0, A, 60000);
    }
    assert!(c.events.is_empty(), "{:?}", Conv::kinds(&c.events));
    let retired = c.finish();
    assert_eq!(retired[0].0.dirs[0].stats.rtt.count, 7, "the SYN and the six segments");
}

#[test]
fn sack_blocks_reduce_bytes_in_flight() {
    let mut c = Conv::new();
    c.handshake();
    for i in 0..4u32 {
        c.send(20.0, From::Client, 1 + i * 1000, 1, 1000, PA, 60000);
    }
    let mut sack = SackBlocks::default();
    sack.blocks[0] = (C + 2001, C + 4001);
    sack.len = 1;
    c.send_opts(30.0, From::Server, 1, 1001, 0, A, 60000, TcpOptions { sack, ..Default::default() });
    // A new segment that fills the window: 1001..5001 unacknowledged, 2000 of it SACKed.
    let ev = c.send_opts(40.0, From::Client, 4001, 1, 1000, PA, 60000, TcpOptions::default());
    assert!(ev.is_empty());
    let flow = c.an.active_flows().next().unwrap();
    assert_eq!(flow.dirs[0].stats.max_bytes_in_flight, 4000);
    let ev = c.send(41.0, From::Client, 1, 1, 1000, PA, 60000);
    assert_eq!(ev[0].event, EventKind::SpuriousRetransmission);
    assert_eq!(ev[0].extra.bytes_in_flight, Some(2000));
}

#[test]
fn flow_table_memory_is_bounded() {
    let limits = FlowLimits { max_flows: 100, ..FlowLimits::default() };
    let mut c = Conv::with(limits, C, S);
    for i in 0..1000u16 {
        c.cport = 10_000 + i;
        c.send(i as f64, From::Client, 0, 0, 0, TcpFlags::SYN, 60000);
        assert!(c.an.flows_active() <= 100);
    }
    assert_eq!(c.an.flows_created(), 1000);
    assert!(c.an.evictions().capacity >= 900);
    // Each retired flow reached the summary.
    let mut n = c.an.take_retired().count();
    n += c.finish().len();
    assert_eq!(n, 1000);
}

#[test]
fn unacked_list_is_capped() {
    let mut c = Conv::new();
    c.handshake();
    for i in 0..(crate::flow::unacked::MAX_UNACKED_SEGMENTS as u32 + 500) {
        c.send(20.0 + i as f64 * 0.001, From::Client, 1 + i * 10, 1, 10, PA, 60000);
    }
    let retired = c.finish();
    assert_eq!(retired[0].0.dirs[0].unacked.len(), crate::flow::unacked::MAX_UNACKED_SEGMENTS);
}

#[test]
fn observer_sees_every_packet_with_its_analysis_after_the_events() {
    use super::flags::AnalysisFlags;
    let mut an = Analyzer::new(FlowLimits::default());
    let seg = |t_ms: i64, client: bool, seq: u32, ack: u32, len: u32, flags: u16| Segment {
        ts: 1_700_000_000_000_000_000 + t_ms * MS,
        src: if client { "10.0.0.1" } else { "10.0.0.2" }.parse().unwrap(),
        dst: if client { "10.0.0.2" } else { "10.0.0.1" }.parse().unwrap(),
        sport: if client { 40000 } else { 80 },
        dport: if client { 80 } else { 40000 },
        seq,
        ack,
        flags: TcpFlags(flags),
        window: 60000,
        payload_len: len,
        options: TcpOptions::default(),
        truncated: false,
    };
    let packets = [
        seg(0, true, C, 0, 0, TcpFlags::SYN),
        seg(5, false, S, C + 1, 0, TcpFlags::SYN | A),
        seg(10, true, C + 1, S + 1, 0, A),
        seg(20, true, C + 1, S + 1, 1000, PA),
        seg(420, true, C + 1, S + 1, 1000, PA),
        seg(430, false, S + 1, C + 1001, 0, A),
    ];
    let mut seen = Vec::new();
    let mut events = Vec::new();
    for (i, p) in packets.iter().enumerate() {
        let before = events.len();
        an.process_observed(p, PacketRef { frame: i as u64 + 1, file_index: 0 }, &mut events, |flow, dir, pa| {
            let retransmission = pa.flags.has(AnalysisFlags::RETRANSMISSION);
            seen.push((dir, retransmission, pa.bytes_in_flight, flow.dirs[dir].stats.packets));
        });
        assert_eq!(seen.len(), i + 1, "once per packet");
        if seen[i].1 {
            assert!(events.len() > before, "the packet's events come before the observer");
        }
    }
    assert_eq!(&seen[3..], &[(0, false, Some(1000), 3), (0, true, Some(1000), 4), (1, false, None, 2)]);
}

/// A wire read from a file a capture tool is writing runs behind the kernel hooks: a kernel
/// retransmission must wait for its wire copy until the wire has moved past it, however
/// far the kernel's own reports have gone on meanwhile.
#[test]
fn kernel_retransmissions_wait_for_a_wire_that_runs_behind() {
    use super::kernel::{KernelEvent, KernelKind};
    let mut c = Conv::new();
    c.an.set_kernel_mode(true);
    c.handshake();
    c.send(20.0, From::Client, 1, 1, 1000, TcpFlags::ACK, 60000);
    let base = 1_700_000_000_000_000_000i64;
    let kernel = |t_ms: i64, kind: KernelKind, seq_range: Option<(u32, u32)>| KernelEvent {
        ts: base + t_ms * MS,
        kind,
        src: "10.0.0.1".parse().unwrap(),
        sport: 40000,
        dst: "10.0.0.2".parse().unwrap(),
        dport: 80,
        seq_range,
    };
    let mut out = Vec::new();
    // The kernel resends the segment at 250 ms, then goes on reporting for another second
    // before the wire side has caught up.
    c.an.process_kernel(&kernel(250, KernelKind::Retransmit { state: 1, err: 0 }, Some((C + 1, C + 1001))), &mut out);
    for t in (300..1300).step_by(100) {
        c.an.process_kernel(&kernel(t, KernelKind::CongState(4), None), &mut out);
    }
    assert!(out.iter().all(|e| e.event != EventKind::KernelRetransmit), "released before the wire caught up");
    // The wire copy, at the time the kernel sent it.
    out.extend(c.send(250.5, From::Client, 1, 1, 1000, TcpFlags::ACK, 60000));
    c.send(400.0, From::Server, 1, 1001, 0, TcpFlags::ACK, 60000);
    c.an.finish(&mut out);
    let k = out.iter().find(|e| e.event == EventKind::KernelRetransmit).expect("the kernel retransmission");
    assert_eq!(k.extra.wire_frame, Some(5), "{k:?}");
}

/// A watch of the live agent's kernel side names its flow: the start that came before the
/// flow's first packet, later starts counted; a connection the wire never showed keeps the
/// start on the flow of its kernel reports.
#[test]
fn watch_starts_go_to_their_flows() {
    use super::kernel::{KernelEvent, KernelKind};
    use crate::flow::watch::{FlowWatch, WatchStart};
    let base = 1_700_000_000_000_000_000i64;
    let (client, server) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
    let start = |t_ms: i64, cport: u16, reason| WatchStart {
        ts: base + t_ms * MS,
        // As the kernel names it: the server's side (an ACK with SACK blocks it sent).
        src: (server, 80),
        dst: (client, cport),
        reason,
        lasts: 30_000 * MS,
    };
    let mut c = Conv::new();
    c.an.set_kernel_mode(true);
    c.an.process_watch(&start(-1, 40000, "sack_sent"));
    c.handshake();
    c.an.process_watch(&start(40_000, 40000, "tcp_retransmit_skb"));
    // Another connection: kernel reports only, no packet.
    c.an.process_watch(&start(5, 40001, "zero_window_sent"));
    let state = KernelEvent {
        ts: base + 6 * MS,
        kind: KernelKind::StateChange { old: 1, new: 4 },
        src: client,
        sport: 40001,
        dst: server,
        dport: 80,
        seq_range: None,
    };
    let mut out = Vec::new();
    c.an.process_kernel(&state, &mut out);
    c.an.finish(&mut out);
    let flows: Vec<_> = c.an.take_retired().map(|(f, _)| (f.endpoints[0].1, f.watch().copied())).collect();
    assert_eq!(
        flows,
        [
            (40000, Some(FlowWatch { since: base - MS, reason: "sack_sent", starts: 2 })),
            (40001, Some(FlowWatch { since: base + 5 * MS, reason: "zero_window_sent", starts: 1 })),
        ]
    );
}

/// A receiver-side view that begins at the SACK the receiver sends (live, policy
/// `troubled`): the retransmissions that fill the hole repeat data sent before the view
/// began, and only the SACK tells so.
#[test]
fn a_partial_view_that_begins_with_a_sack_knows_the_hole_fills_are_not_new() {
    let view = |partial: bool| {
        let mut c = Conv::new();
        c.an.set_partial_wire_view(partial);
        let mut sack = SackBlocks::default();
        sack.blocks[0] = (C + 20_001, C + 30_001);
        sack.len = 1;
        let mut events =
            c.send_opts(10.0, From::Server, 1, 10_001, 0, A, 60000, TcpOptions { sack, ..Default::default() });
        // Soon after the SACK (out of order to the rules), then later (a retransmission).
        events.extend(c.send(10.1, From::Client, 10_001, 1, 1000, PA, 60000));
        events.extend(c.send(15.0, From::Client, 11_001, 1, 1000, PA, 60000));
        // New data just past the SACKed block is not a gap.
        events.extend(c.send(16.0, From::Client, 30_001, 1, 1000, PA, 60000));
        Conv::kinds(&events)
    };
    assert_eq!(view(true), vec![EventKind::OutOfOrder, EventKind::Retransmission]);
    // A capture keeps Wireshark's rules, which know nothing before the first data segment.
    assert_eq!(view(false), vec![EventKind::LostSegment]);
    // On the sender, new data past the edge comes first: the view began later, no gap.
    let mut c = Conv::new();
    c.an.set_partial_wire_view(true);
    let mut sack = SackBlocks::default();
    sack.blocks[0] = (C + 20_001, C + 30_001);
    sack.len = 1;
    let mut events = c.send_opts(10.0, From::Server, 1, 10_001, 0, A, 60000, TcpOptions { sack, ..Default::default() });
    events.extend(c.send(10.1, From::Client, 40_001, 1, 1000, PA, 60000));
    events.extend(c.send(10.2, From::Client, 41_001, 1, 1000, PA, 60000));
    assert!(events.is_empty(), "{:?}", Conv::kinds(&events));
}

/// A flight of four segments of which the server acknowledges two (RTT 8 ms), then silence.
fn silent_tail() -> Conv {
    let mut c = Conv::new();
    c.handshake();
    for i in 0..4u32 {
        c.send(20.0, From::Client, 1 + i * 1000, 1, 1000, PA, 60000);
    }
    c.send(28.0, From::Server, 1, 2001, 0, A, 60000);
    c
}

#[test]
fn tail_loss_probes_repeat_the_last_segment_or_send_new_data() {
    let mut c = silent_tail();
    let probe = c.send(60.0, From::Client, 3001, 1, 1000, PA, 60000);
    assert_eq!(Conv::kinds(&probe), vec![EventKind::Retransmission, EventKind::TailLossProbe]);
    assert_eq!(probe[1].extra.reason, Some(Reason::ProbeLastSegment));
    assert_eq!(probe[1].extra.stall_ms, Some(32.0));
    // One probe per flight: the next silence ends in the retransmission timeout.
    let rto = c.send(300.0, From::Client, 2001, 1, 1000, PA, 60000);
    assert_eq!(Conv::kinds(&rto), vec![EventKind::Retransmission, EventKind::LossInfer]);
    // Once the ACK moves, the next flight may be probed again.
    c.send(310.0, From::Server, 1, 4001, 0, A, 60000);
    c.send(311.0, From::Client, 4001, 1, 1000, PA, 60000);
    c.send(311.0, From::Client, 5001, 1, 1000, PA, 60000);
    let new_data = c.send(330.0, From::Client, 6001, 1, 1000, PA, 60000);
    assert_eq!(Conv::kinds(&new_data), vec![EventKind::TailLossProbe]);
    assert_eq!(new_data[0].extra.reason, Some(Reason::ProbeNewData));
}

#[test]
fn no_tail_loss_probe_without_a_silent_tail() {
    // Too soon: less than 2 x SRTT after the last ACK.
    let mut c = silent_tail();
    let soon = c.send(35.0, From::Client, 3001, 1, 1000, PA, 60000);
    assert!(!Conv::kinds(&soon).contains(&EventKind::TailLossProbe), "{:?}", Conv::kinds(&soon));
    // Duplicate ACKs came first: the sender is recovering, not probing.
    let mut c = silent_tail();
    let mut sack = SackBlocks::default();
    sack.blocks[0] = (C + 3001, C + 4001);
    sack.len = 1;
    c.send_opts(29.0, From::Server, 1, 2001, 0, A, 60000, TcpOptions { sack, ..Default::default() });
    let recovery = c.send(60.0, From::Client, 3001, 1, 1000, PA, 60000);
    assert!(!Conv::kinds(&recovery).contains(&EventKind::TailLossProbe), "{:?}", Conv::kinds(&recovery));
    // The middle of the flight repeated: not the tail.
    let mut c = silent_tail();
    let middle = c.send(60.0, From::Client, 2001, 1, 1000, PA, 60000);
    assert!(!Conv::kinds(&middle).contains(&EventKind::TailLossProbe), "{:?}", Conv::kinds(&middle));
    // A lone request whose answer the receiver delays (40 ms): the next request is no probe.
    let mut c = Conv::new();
    c.handshake();
    c.send(20.0, From::Client, 1, 1, 100, PA, 60000);
    c.send(28.0, From::Server, 1, 101, 0, A, 60000);
    c.send(30.0, From::Client, 101, 1, 100, PA, 60000);
    let next = c.send(60.0, From::Client, 201, 1, 100, PA, 60000);
    assert!(next.is_empty(), "{:?}", Conv::kinds(&next));
    // New data long after the probe time: paced, or timed by the application.
    let mut c = silent_tail();
    let paced = c.send(200.0, From::Client, 4001, 1, 1000, PA, 60000);
    assert!(paced.is_empty(), "{:?}", Conv::kinds(&paced));
    // Nothing outstanding: new data after an idle time is just new data.
    let mut c = Conv::new();
    c.handshake();
    c.send(20.0, From::Client, 1, 1, 1000, PA, 60000);
    c.send(28.0, From::Server, 1, 1001, 0, A, 60000);
    assert!(c.send(500.0, From::Client, 1001, 1, 1000, PA, 60000).is_empty());
}

#[test]
fn a_timeout_after_a_failed_fast_retransmission_is_a_timeout() {
    let mut c = Conv::new();
    c.handshake();
    for i in 0..6u32 {
        c.send(20.0, From::Client, 1 + i * 1000, 1, 1000, PA, 60000);
    }
    // 1..1001 lost: three duplicate ACKs, a fast retransmission, which is lost too.
    let mut sack = SackBlocks { len: 1, ..Default::default() };
    for (t, right) in [(28.0, 2001), (28.1, 3001), (28.2, 4001)] {
        sack.blocks[0] = (C + 1001, C + right);
        c.send_opts(t, From::Server, 1, 1, 0, A, 60000, TcpOptions { sack, ..Default::default() });
    }
    let fast = c.send(28.3, From::Client, 1, 1, 1000, PA, 60000);
    assert_eq!(Conv::kinds(&fast), vec![EventKind::FastRetransmission]);
    let rto = c.send(300.0, From::Client, 1, 1, 1000, PA, 60000);
    assert_eq!(Conv::kinds(&rto), vec![EventKind::Retransmission, EventKind::LossInfer]);
    assert_eq!(rto[1].extra.reason, Some(Reason::RetransmissionTimeout));
}
