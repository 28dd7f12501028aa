//! What only live sessions do: kernel reports joined to the wire, watch starts, and the
//! partial view of capture policy `troubled`.

use super::*;

/// A wire read from a file a capture tool is writing runs behind the kernel hooks: a kernel
/// retransmission must wait for its wire copy until the wire has moved past it, however
/// far the kernel's own reports have gone on meanwhile.
#[test]
fn kernel_retransmissions_wait_for_a_wire_that_runs_behind() {
    use crate::analysis::kernel::{KernelEvent, KernelKind};
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
    c.an.process_kernel(
        &kernel(250, KernelKind::Retransmit { state: 1, err: 0, segs: 0, mss: 0 }, Some((C + 1, C + 1001))),
        &mut out,
    );
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
    use crate::analysis::kernel::{KernelEvent, KernelKind};
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

/// The kernel's verdict wins: a segment the wire rules call out-of-order (the missing one
/// sent within an RTT of the highest) that the kernel reports as resent is a retransmission
/// in the events, the flow's counts and its retransmitted bytes, whichever of the two
/// arrives first; the rules' verdict stays in `extra.wire_verdict`.
#[test]
fn a_kernel_retransmission_overrules_the_wire_rules_out_of_order() {
    use crate::analysis::kernel::{KernelEvent, KernelKind};
    for kernel_first in [false, true] {
        let mut c = Conv::new();
        c.an.set_kernel_mode(true);
        c.handshake();
        let mut out = Vec::new();
        out.extend(c.send(20.0, From::Client, 1, 1, 1000, TcpFlags::ACK, 60000));
        out.extend(c.send(30.0, From::Client, 2001, 1, 1000, TcpFlags::ACK, 60000));
        let base = 1_700_000_000_000_000_000i64;
        let report = KernelEvent {
            ts: base + 31 * MS + if kernel_first { -100_000 } else { 20_000 },
            kind: KernelKind::Retransmit { state: 1, err: 0, segs: 1, mss: 1000 },
            src: "10.0.0.1".parse().unwrap(),
            sport: 40000,
            dst: "10.0.0.2".parse().unwrap(),
            dport: 80,
            seq_range: Some((C + 1001, C + 2001)),
        };
        if kernel_first {
            c.an.process_kernel(&report, &mut out);
        }
        out.extend(c.send(31.0, From::Client, 1001, 1, 1000, TcpFlags::ACK, 60000));
        if !kernel_first {
            c.an.process_kernel(&report, &mut out);
        }
        out.extend(c.send(40.0, From::Server, 1, 3001, 0, TcpFlags::ACK, 60000));
        c.an.finish(&mut out);
        let kinds: Vec<EventKind> = out.iter().map(|e| e.event).collect();
        assert!(!kinds.contains(&EventKind::OutOfOrder), "kernel first: {kernel_first}: {kinds:?}");
        let retx = out.iter().find(|e| e.event == EventKind::Retransmission).expect("relabelled");
        assert_eq!((retx.frame, retx.extra.wire_verdict), (Some(6), Some(EventKind::OutOfOrder)));
        let k = out.iter().find(|e| e.event == EventKind::KernelRetransmit).unwrap();
        assert_eq!((k.extra.wire_frame, k.extra.segments), (Some(6), Some(1)));
        let (flow, _) = c.an.take_retired().next().unwrap();
        let stats = &flow.dirs[0].stats;
        assert_eq!(stats.retransmitted_bytes, 1000);
        assert_eq!((stats.events.get(EventKind::OutOfOrder), stats.events.get(EventKind::Retransmission)), (0, 1));
        let counts = &flow.kernel.as_ref().unwrap().counts;
        assert_eq!((counts.reclassified, counts.retransmitted_segments, counts.matched_segments), (1, 1, 1));
    }
}

/// The kernel sweep reads only the flows something waits in, not every flow: reports
/// waiting in connections that see no packet again are released all the same once the wire
/// has passed their window, in the order the flows were created, the kernel's own flows
/// after the wire's.
#[test]
fn waiting_kernel_reports_are_released_by_the_sweep_in_creation_order() {
    use crate::analysis::kernel::{KERNEL_ONLY_FLOW_BASE, KernelEvent, KernelKind};
    let mut c = Conv::new();
    c.an.set_kernel_mode(true);
    let ws = TcpOptions { window_scale: Some(0), mss: Some(1000), ..Default::default() };
    let ports = [40_000, 40_001, 40_002, 40_003];
    for (i, &port) in ports.iter().enumerate() {
        c.cport = port;
        c.send_opts(i as f64, From::Client, 0, 0, 0, TcpFlags::SYN, 60000, ws);
    }
    let base = 1_700_000_000_000_000_000i64;
    let resent = |cport: u16, t_ms: i64| KernelEvent {
        ts: base + t_ms * MS,
        kind: KernelKind::Retransmit { state: 1, err: 0, segs: 0, mss: 0 },
        src: "10.0.0.1".parse().unwrap(),
        sport: cport,
        dst: "10.0.0.2".parse().unwrap(),
        dport: 80,
        // Data the wire never shows: the report waits for a copy that does not come.
        seq_range: Some((C + 1, C + 1001)),
    };
    let mut out = Vec::new();
    for port in [40_003, 40_001, 50_000, 40_002, 40_000] {
        c.an.process_kernel(&resent(port, 20), &mut out);
    }
    assert!(out.is_empty(), "released before their window passed: {out:?}");
    // Another connection moves the wire on; the five see nothing more.
    c.cport = 41_000;
    for t in [30.0, 60.0, 90.0, 120.0, 150.0] {
        out.extend(c.send_opts(t, From::Client, 0, 0, 0, TcpFlags::SYN, 60000, ws));
    }
    let released: Vec<(u16, u64)> =
        out.iter().filter(|e| e.event == EventKind::KernelRetransmit).map(|e| (e.sport, e.flow_id)).collect();
    let ids: Vec<u64> = released.iter().map(|r| r.1).collect();
    assert_eq!(ids, [0, 1, 2, 3, KERNEL_ONLY_FLOW_BASE], "{released:?}");
    let ports: Vec<u16> = released.iter().map(|r| r.0).collect();
    assert_eq!(ports, [40_000, 40_001, 40_002, 40_003, 50_000]);
    // Released once: nothing is left for the end.
    let mut end = Vec::new();
    c.an.finish(&mut end);
    assert!(end.iter().all(|e| e.event != EventKind::KernelRetransmit), "{end:?}");
}

/// A full map of the kernel's own flows makes room for a batch at once, the least recently
/// active first, retired in the order they were created.
#[test]
fn the_kernels_own_flows_make_room_by_the_batch_least_recent_first() {
    use crate::analysis::kernel::{
        KERNEL_ONLY_EVICTION_BATCH, KERNEL_ONLY_FLOW_BASE, KernelEvent, KernelKind, MAX_KERNEL_ONLY_FLOWS,
    };
    let mut an = Analyzer::new(FlowLimits::default());
    an.set_kernel_mode(true);
    let report = |socket: usize, ts: i64| KernelEvent {
        ts,
        kind: KernelKind::StateChange { old: 2, new: 1 },
        src: IpAddr::from([10, 1, (socket >> 8) as u8, socket as u8]),
        sport: 40_000 + (socket >> 16) as u16,
        dst: "10.0.0.2".parse().unwrap(),
        dport: 80,
        seq_range: None,
    };
    let mut events = Vec::new();
    for socket in 0..MAX_KERNEL_ONLY_FLOWS {
        an.orphan_to_kernel_only(report(socket, socket as i64 * MS), &mut events);
    }
    // The first connection speaks again: the least recent are now the next ones.
    an.orphan_to_kernel_only(report(0, MAX_KERNEL_ONLY_FLOWS as i64 * MS), &mut events);
    assert_eq!(an.take_retired().count(), 0);
    an.orphan_to_kernel_only(report(MAX_KERNEL_ONLY_FLOWS, (MAX_KERNEL_ONLY_FLOWS + 1) as i64 * MS), &mut events);
    let retired: Vec<_> = an.take_retired().collect();
    assert!(retired.iter().all(|(_, why)| *why == Retirement::Capacity));
    let ids: Vec<u64> = retired.iter().map(|(f, _)| f.id - KERNEL_ONLY_FLOW_BASE).collect();
    assert_eq!(ids, (1..=KERNEL_ONLY_EVICTION_BATCH as u64).collect::<Vec<_>>());
    assert_eq!(an.kernel_only.len(), MAX_KERNEL_ONLY_FLOWS - KERNEL_ONLY_EVICTION_BATCH + 1);
}
