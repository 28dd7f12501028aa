use etherparse::PacketBuilder;

use super::*;
use crate::alert::AlertConfig;
use crate::capture::frame::{Frame, LinkType};
use crate::flow::table::FlowLimits;

/// One Ethernet/IPv4/TCP packet at `t_ms`.
fn packet(t_ms: i64, from: ([u8; 4], u16), to: ([u8; 4], u16), seq: u32, ack: u32, payload: usize) -> (i64, Vec<u8>) {
    let mut out = Vec::new();
    PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv4(from.0, to.0, 64)
        .tcp(from.1, to.1, seq, 65000)
        .ack(ack)
        .write(&mut out, &vec![0u8; payload])
        .unwrap();
    (1_700_000_000_000_000_000 + t_ms * 1_000_000, out)
}

fn feed_packets(pipeline: &mut Pipeline, engine: &mut AlertEngine, feed: &mut ViewFeed, packets: &[(i64, Vec<u8>)]) {
    let mut events: Vec<Event> = Vec::new();
    for (i, (ts, data)) in packets.iter().enumerate() {
        let frame = Frame {
            ts: *ts,
            link_type: LinkType::ETHERNET,
            data,
            orig_len: data.len() as u32,
            interface: 0,
            number: i as u64 + 1,
            direction: None,
        };
        pipeline.process_frame(&frame, 0, &mut events).unwrap();
    }
    let mut alerts = Vec::new();
    for e in &events {
        engine.on_event(e, &mut alerts);
    }
    feed.note_events(&events);
    feed.note_alerts(&alerts);
}

#[test]
fn the_retransmitting_connection_comes_first_with_its_counts_and_rates() {
    let (client, server, other) = (([10, 0, 0, 1], 40000), ([10, 0, 0, 2], 80), ([10, 0, 0, 3], 40001));
    let mut packets = Vec::new();
    // A clean connection: 20 segments of 1000 bytes, each acknowledged.
    for i in 0..20u32 {
        packets.push(packet(i as i64 * 10, other, server, 1 + i * 1000, 1, 1000));
        packets.push(packet(i as i64 * 10 + 5, server, other, 1, 1001 + i * 1000, 0));
    }
    // A troubled one: each of 5 segments sent twice, 200 ms apart.
    for i in 0..5u32 {
        let seq = 1 + i * 1000;
        packets.push(packet(i as i64 * 10 + 1, client, server, seq, 1, 1000));
        packets.push(packet(i as i64 * 10 + 201, client, server, seq, 1, 1000));
    }
    packets.sort_by_key(|p| p.0);
    let slot = SnapshotSlot::default();
    let mut feed = ViewFeed::new(slot.clone(), ViewMode::Monitor, "test".into());
    let mut pipeline = Pipeline::new(FlowLimits::default());
    let mut engine = AlertEngine::new(AlertConfig {
        default: crate::alert::Thresholds { warn: 3, critical: 50 },
        ..Default::default()
    });
    assert!(feed.due());
    feed_packets(&mut pipeline, &mut engine, &mut feed, &packets);
    // The hooks saw the troubled client's socket open.
    let mut owners = crate::attribution::Owners::default();
    let curl = crate::attribution::Process {
        pid: 4242,
        comm: "curl".into(),
        cgroup: Some("system.slice/backup.service".into()),
        cgroup_id: 7,
        hook: "sock:inet_sock_set_state".into(),
    };
    let (c, s) = (([10, 0, 0, 1].into(), 40000), ([10, 0, 0, 2].into(), 80));
    owners.insert((c.0, c.1, s.0, s.1), std::sync::Arc::new(curl));
    feed.publish(&pipeline, &engine, &owners, &no_interface, 0);
    assert!(!feed.due(), "the next snapshot waits a second");
    let snap = slot.load();
    assert_eq!((snap.sequence, snap.flows_active, snap.rows.len()), (1, 2, 2));
    let worst = &snap.rows[0];
    assert_eq!(worst.a, ("10.0.0.1".parse().unwrap(), 40000));
    assert_eq!((worst.retx_window, worst.retx_total), (5, 5));
    assert_eq!(worst.level, Level::Warn);
    assert_eq!(worst.process.as_deref(), Some("system.slice/backup.service[4242]"));
    assert_eq!(snap.rows[1].process, None);
    assert!(snap.retransmissions >= 5);
    assert_eq!(snap.rows[1].retx_total, 0);
    assert_eq!(snap.alerts.len(), 1, "{:?}", snap.alerts);
    assert_eq!(worst.detail.events.len(), 5);
    assert_eq!(worst.detail.bytes_per_s.len(), 1);

    // A second snapshot one second later in event time: the clean flow sent 10 kB more.
    let more: Vec<_> = (20..30u32).map(|i| packet(1200 + i as i64, other, server, 1 + i * 1000, 1, 1000)).collect();
    feed_packets(&mut pipeline, &mut engine, &mut feed, &more);
    feed.last_publish = None;
    feed.publish(&pipeline, &engine, &owners, &no_interface, 7);
    let snap = slot.load();
    assert_eq!((snap.sequence, snap.records_lost), (2, 7));
    let clean = snap.rows.iter().find(|r| r.a.1 == 40001).unwrap();
    // 10 packets and 10,000 bytes over the event time since the last snapshot (from the
    // last retransmission at 241 ms to 1229 ms).
    assert!((clean.bytes_per_s - 10_000.0 / 0.988).abs() < 1.0, "{}", clean.bytes_per_s);
    assert!((clean.packets_per_s - 10.0 / 0.988).abs() < 0.01, "{}", clean.packets_per_s);
    assert_eq!(snap.rows[0].a.1, 40000, "still the worst");
    assert_eq!(snap.rows[0].detail.bytes_per_s.len(), 2);
}

#[test]
fn an_empty_pipeline_publishes_an_empty_snapshot() {
    let slot = SnapshotSlot::default();
    let mut feed = ViewFeed::new(slot.clone(), ViewMode::Live, "eth0".into());
    let nobody = crate::attribution::Owners::default();
    feed.publish(
        &Pipeline::new(FlowLimits::default()),
        &AlertEngine::new(AlertConfig::default()),
        &nobody,
        &no_interface,
        0,
    );
    let snap = slot.load();
    assert_eq!((snap.sequence, snap.rows.len(), snap.retx_per_sec.as_slice()), (1, 0, &[0u64][..]));
}

#[test]
fn of_thousands_of_connections_the_worst_rows_are_kept_in_order() {
    // 2,500 quiet connections, and a retransmitting one among them (in the middle of the
    // table, so that it must survive the cuts made while the rows are gathered).
    let server = ([10, 0, 0, 2], 80);
    let mut packets = Vec::new();
    for i in 0..2500u32 {
        let client = ([10, 1, (i / 250) as u8, (i % 250) as u8 + 1], 40000);
        packets.push(packet(i as i64, client, server, 1, 1, 100));
        if i == 1234 {
            for r in 0..3 {
                packets.push(packet(i as i64 + 300 * (r + 1), client, server, 1, 1, 100));
            }
        }
    }
    packets.sort_by_key(|p| p.0);
    let slot = SnapshotSlot::default();
    let mut feed = ViewFeed::new(slot.clone(), ViewMode::Monitor, "test".into());
    let mut pipeline = Pipeline::new(FlowLimits::default());
    let mut engine = AlertEngine::new(AlertConfig::default());
    feed_packets(&mut pipeline, &mut engine, &mut feed, &packets);
    feed.publish(&pipeline, &engine, &crate::attribution::Owners::default(), &no_interface, 0);
    let snap = slot.load();
    assert_eq!((snap.flows_active, snap.rows.len()), (2500, MAX_ROWS));
    assert_eq!(snap.rows[0].a.0, "10.1.4.235".parse::<std::net::IpAddr>().unwrap());
    assert!(snap.rows[0].retx_total >= 3);
    let by_score =
        |a: &FlowRow, b: &FlowRow| crate::tui::snapshot::compare(a, b, crate::tui::snapshot::SortColumn::Score);
    assert!(snap.rows.windows(2).all(|w| by_score(&w[0], &w[1]).is_le()), "rows in score order");
    // The quiet ones shown are the eldest connections (ties go to the lower flow id).
    assert_eq!(snap.rows[1].flow_id, 0);
    assert_eq!(snap.rows[MAX_ROWS - 1].flow_id, MAX_ROWS as u64 - 2);
}
