//! Rule-by-rule tests on synthetic connections: Wireshark's flags and the bookkeeping here,
//! tcpviz's findings in `findings.rs`, what only live sessions do in `live.rs`.

mod findings;
mod live;

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
    assert_eq!(flow.dirs[0].max_bytes_in_flight, 4000);
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
fn an_evicted_connection_seen_again_goes_on_where_it_stopped() {
    // Room for 20: the 21st connection evicts a tenth and one (3).
    let limits = FlowLimits { max_flows: 20, ..FlowLimits::default() };
    let mut c = Conv::with(limits, C, S);
    c.an.set_kernel_mode(true);
    // The eldest connection, open, with data in flight (window scale 0 from the handshake).
    c.handshake();
    c.send(20.0, From::Client, 1, 1, 1000, PA, 60000);
    // A closed one, more recent.
    c.cport = 50_000;
    c.handshake();
    c.send(30.0, From::Client, 1, 1, 0, TcpFlags::RST | A, 60000);
    // Busy newer connections fill the table.
    for i in 0..19u16 {
        c.cport = 41_000 + i;
        c.send(40.0 + i as f64, From::Client, 0, 0, 0, TcpFlags::SYN, 60000);
    }
    let ev = c.an.evictions();
    assert_eq!((ev.closed, ev.capacity), (1, 2), "the closed connection went first, then the eldest open ones");
    // Evicted, it is still found by its key, and a kernel report of it joins it there
    // (not a flow of the kernel's own); only a packet takes it back into the table.
    let (client, server) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
    assert_eq!(c.an.flow_id_of(client, 40000, server, 80), Some(0));
    let report = crate::analysis::kernel::KernelEvent {
        ts: 1_700_000_000_000_000_000 + 60 * MS,
        kind: crate::analysis::kernel::KernelKind::StateChange { old: 1, new: 4 },
        src: client,
        sport: 40000,
        dst: server,
        dport: 80,
        seq_range: None,
    };
    let mut out = Vec::new();
    c.an.process_kernel(&report, &mut out);
    assert_eq!(out.iter().map(|e| e.flow_id).collect::<Vec<_>>(), [0]);
    assert_eq!(c.an.evictions().resumed, 0);
    // The eldest is seen again: its next segment and the ACK of both are no gap, no ACK of
    // unseen data, and its RTT is measured from a segment sent before the eviction.
    let created = c.an.flows_created();
    c.cport = 40000;
    let next = c.send(100.0, From::Client, 1001, 1, 1000, PA, 60000);
    let acked = c.send(110.0, From::Server, 1, 2001, 0, A, 60000);
    assert!(next.is_empty() && acked.is_empty(), "{next:?} {acked:?}");
    assert_eq!(c.an.flows_created(), created, "the same flow, not a new one");
    assert_eq!(c.an.evictions().resumed, 1);
    let retired = c.finish();
    let eldest = retired.iter().find(|(f, _)| f.id == 0).expect("flow 0 retired once");
    assert_eq!(retired.iter().filter(|(f, _)| f.id == 0).count(), 1);
    assert_eq!((eldest.0.dirs[0].stats.packets, eldest.1), (4, Retirement::End));
    assert_eq!(eldest.0.dirs[0].stats.payload_bytes, 2000);
    assert_eq!(eldest.0.kernel.as_ref().map(|k| k.counts.state_changes), Some(1));
    assert!(retired.iter().all(|(f, _)| f.id < crate::analysis::kernel::KERNEL_ONLY_FLOW_BASE));
}

#[test]
fn an_evicted_connection_quiet_past_its_timeout_is_retired_not_resumed() {
    let limits = FlowLimits { max_flows: 20, idle_timeout: 60 * crate::time::NS_PER_SEC, ..FlowLimits::default() };
    let mut c = Conv::with(limits, C, S);
    c.handshake();
    c.send(20.0, From::Client, 1, 1, 1000, PA, 60000);
    for i in 0..20u16 {
        c.cport = 41_000 + i;
        c.send(40.0 + i as f64, From::Client, 0, 0, 0, TcpFlags::SYN, 60000);
    }
    assert_eq!(c.an.evictions().capacity, 3);
    // 100 s later: the sweep retires it from the store, as a table with room would.
    c.cport = 40000;
    let created = c.an.flows_created();
    c.send(100_000.0, From::Client, 1001, 1, 1000, PA, 60000);
    assert_eq!(c.an.flows_created(), created + 1, "a new flow");
    let ev = c.an.evictions();
    assert_eq!((ev.resumed, ev.idle >= 1), (0, true), "{ev:?}");
    let retired: Vec<_> = c.an.take_retired().collect();
    assert!(retired.iter().any(|(f, why)| f.id == 0 && *why == Retirement::Idle));
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

/// Why is this connection slow, on crafted flows: a receiver that closes its window, and an
/// application that sends a little now and then (`flow::limits`).
#[test]
fn limited_by_the_receiver_window_or_the_application() {
    use crate::flow::limits::Limit;
    let limits = |c: &mut Conv| {
        let mut out = Vec::new();
        c.an.finish(&mut out);
        let (flow, _) = c.an.take_retired().next().unwrap();
        flow.dirs[0].limited_by().expect("the client sent two segments")
    };
    // Two segments, then the server's window stays shut for 100 ms.
    let mut c = Conv::new();
    c.handshake();
    c.send(20.0, From::Client, 1, 1, 1000, PA, 60000);
    c.send(21.0, From::Client, 1001, 1, 1000, PA, 60000);
    c.send(22.0, From::Server, 1, 2001, 0, A, 0);
    c.send(122.0, From::Server, 1, 2001, 0, A, 60000);
    c.send(123.0, From::Client, 2001, 1, 1000, PA, 60000);
    c.send(124.0, From::Server, 1, 3001, 0, A, 60000);
    let l = limits(&mut c);
    assert_eq!(l.dominant(), Limit::ReceiverWindow, "{l:?}");
    assert!(l.receiver_window > 0.9, "{l:?}");
    // 100 bytes every 50 ms, each acknowledged within a millisecond.
    let mut c = Conv::new();
    c.handshake();
    for i in 0..10u32 {
        let t = 20.0 + 50.0 * i as f64;
        c.send(t, From::Client, 1 + 100 * i, 1, 100, PA, 60000);
        c.send(t + 1.0, From::Server, 1, 101 + 100 * i, 0, A, 60000);
    }
    let l = limits(&mut c);
    assert_eq!(l.dominant(), Limit::Application, "{l:?}");
    assert!(l.application > 0.95, "{l:?}");
}
