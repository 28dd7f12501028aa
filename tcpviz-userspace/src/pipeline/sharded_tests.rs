//! The sharded pipeline against one analyzer, and its id map; one analyzer reading ahead
//! against one that does not.

use etherparse::PacketBuilder;

use super::*;
use crate::capture::frame::LinkType;
use crate::pipeline::Pipeline;
use crate::time::NS_PER_SEC;

/// One packet of the synthetic stream.
struct Packet {
    ts: TimestampNs,
    data: Vec<u8>,
}

/// A small deterministic generator (no test may depend on a random seed).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

#[derive(Clone, Copy)]
struct Conn {
    client: ([u8; 4], u16),
    isn: u32,
    sent: u32,
    step: u32,
    /// Only SYNs, never answered.
    unanswered: bool,
}

fn packet(ts: TimestampNs, c: &Conn, from_client: bool, seq: u32, ack: u32, flags: &str, len: usize) -> Packet {
    let server = ([192, 0, 2, 1], 80);
    let (src, dst) = if from_client { (c.client, server) } else { (server, c.client) };
    let b = PacketBuilder::ethernet2([1; 6], [2; 6]).ipv4(src.0, dst.0, 64);
    let mut tcp = b.tcp(src.1, dst.1, seq, 64_240);
    for f in flags.chars() {
        tcp = match f {
            'S' => tcp.syn(),
            'A' => tcp.ack(ack),
            'F' => tcp.fin(),
            'R' => tcp.rst(),
            _ => tcp,
        };
    }
    let mut data = Vec::new();
    tcp.write(&mut data, &vec![0u8; len]).unwrap();
    Packet { ts, data }
}

/// Many interleaved connections, more than the table holds: handshakes, data with
/// retransmissions and duplicate ACKs, FINs, unanswered SYNs, connections left idle
/// past the timeout, and ports reused by a new connection.
fn stream(connections: u32, seed: u64) -> Vec<Packet> {
    let mut rng = Lcg(seed);
    let mut out = Vec::new();
    let mut active: Vec<Conn> = Vec::new();
    let (mut ts, mut opened) = (1_700_000_000 * NS_PER_SEC, 0u32);
    while opened < connections || !active.is_empty() {
        ts += 1 + rng.next(400_000) as TimestampNs;
        // Now and then a long pause: connections quiet past the idle timeout.
        if rng.next(20_000) == 0 {
            ts += 8 * NS_PER_SEC;
        }
        if opened < connections && (active.len() < 3_000 || rng.next(4) == 0) {
            // One in 500 reuses the ports of an earlier connection.
            let id = if opened > 100 && rng.next(500) == 0 { rng.next(opened as u64) as u32 } else { opened };
            let client = ([10, (id >> 16) as u8, (id >> 8) as u8, id as u8], 1024 + (id % 50_000) as u16);
            let isn = rng.next(u32::MAX as u64) as u32;
            active.push(Conn { client, isn, sent: 0, step: 0, unanswered: rng.next(40) == 0 });
            opened += 1;
            continue;
        }
        let i = rng.next(active.len() as u64) as usize;
        let c = &mut active[i];
        let (cseq, sseq) = (c.isn, c.isn ^ 0x5555_5555);
        let p = match c.step {
            _ if c.unanswered => packet(ts, c, true, cseq, 0, "S", 0),
            0 => packet(ts, c, true, cseq, 0, "S", 0),
            1 => packet(ts, c, false, sseq, cseq.wrapping_add(1), "SA", 0),
            2 => packet(ts, c, true, cseq.wrapping_add(1), sseq.wrapping_add(1), "A", 0),
            3..=9 => {
                // Data, one in eight sent again.
                if c.sent > 0 && rng.next(8) == 0 {
                    c.sent -= 1;
                }
                let seq = cseq.wrapping_add(1 + c.sent * 1_000);
                c.sent += 1;
                packet(ts, c, true, seq, sseq.wrapping_add(1), "A", 1_000)
            }
            10 | 11 => {
                // The server acknowledges (twice the same: a duplicate ACK).
                let ack = cseq.wrapping_add(1 + (c.sent.saturating_sub(2)) * 1_000);
                packet(ts, c, false, sseq.wrapping_add(1), ack, "A", 0)
            }
            12 => packet(ts, c, true, cseq.wrapping_add(1 + c.sent * 1_000), sseq.wrapping_add(1), "FA", 0),
            _ => packet(ts, c, false, sseq.wrapping_add(1), cseq.wrapping_add(2 + c.sent * 1_000), "FA", 0),
        };
        c.step += 1;
        // Some connections stop early and stay open; unanswered ones give up.
        let done = c.step > 13 || (c.unanswered && c.step > 2) || (c.step > 4 && rng.next(60) == 0);
        if done {
            active.swap_remove(i);
        }
        out.push(p);
    }
    out
}

/// What a run writes: its events as JSON lines, and its summary.
fn outputs(events: &[Event], summary: &Summary) -> (String, String) {
    let lines = events.iter().map(|e| serde_json::to_string(e).unwrap() + "\n").collect();
    (lines, serde_json::to_string_pretty(summary).unwrap())
}

fn frames(packets: &[Packet]) -> impl Iterator<Item = Frame<'_>> {
    packets.iter().enumerate().map(|(i, p)| Frame {
        ts: p.ts,
        link_type: LinkType::ETHERNET,
        data: &p.data,
        orig_len: p.data.len() as u32,
        interface: 0,
        number: i as u64 + 1,
        direction: None,
    })
}

fn run(packets: &[Packet], limits: FlowLimits, threads: usize) -> (String, String) {
    let opts = PipelineOptions { limits, summary_flows: 200, ..Default::default() };
    let mut events: Vec<Event> = Vec::new();
    let frames = frames(packets);
    let summary = if threads == 1 {
        let mut one = Pipeline::with_options(opts);
        for f in frames {
            one.process_frame(&f, 0, &mut events).unwrap();
        }
        one.finish(&mut events).unwrap();
        one.summary(Vec::new(), Vec::new(), 0)
    } else {
        assert_eq!(ShardedPipeline::workers(threads, limits), threads, "the table has too few partitions");
        let mut many = ShardedPipeline::new(opts, threads, &[]).unwrap();
        for f in frames {
            many.process_frame(&f, 0, &mut events).unwrap();
        }
        many.finish(&mut events).unwrap();
        many.summary(Vec::new(), Vec::new(), 0)
    };
    outputs(&events, &summary)
}

#[test]
fn the_id_map_keeps_long_lived_flows_out_of_its_window() {
    let mut ids = IdMap::default();
    for local in 0..20_000u64 {
        ids.push(10 * local);
        // Every flow ends at once but the first and every 5,000th.
        if local > 0 && local % 5_000 != 0 {
            assert_eq!(ids.remove(local), Some(10 * local));
        }
    }
    assert!(ids.window.len() < 8_192, "the window holds {} ids", ids.window.len());
    assert!(ids.old.contains_key(&0) && ids.old.contains_key(&5_000), "the eldest moved out of the window");
    for local in [0, 5_000, 10_000, 15_000] {
        assert_eq!(ids.get(local), Some(10 * local));
    }
    assert_eq!(ids.get(1), None);
    assert_eq!(ids.remove(0), Some(0));
    assert_eq!((ids.remove(0), ids.get(0)), (None, None));
    assert_eq!(ids.remove(15_000), Some(150_000));
    assert_eq!(ids.live, 2);
}

#[test]
fn threads_write_what_one_thread_writes_through_sweeps_evictions_and_reused_ports() {
    let packets = stream(8_000, 7);
    for (max_flows, threads) in [(2_048, 2), (4_096, 3), (4_096, 4)] {
        let limits = FlowLimits { max_flows, idle_timeout: 5 * NS_PER_SEC, closed_timeout: 2 * NS_PER_SEC };
        let one = run(&packets, limits, 1);
        let summary: serde_json::Value = serde_json::from_str(&one.1).unwrap();
        let t = &summary["totals"];
        // The stream must exercise what the merge has to get right.
        for (what, field) in [
            ("idle sweeps", "flows_evicted_idle"),
            ("capacity evictions", "flows_evicted_capacity"),
            ("resumed connections", "flows_resumed"),
            ("connections let go", "flows_evicted_forgotten"),
        ] {
            assert!(t[field].as_u64().unwrap() > 0, "{max_flows} flows: no {what}: {t}");
        }
        assert!(one.1.contains("\"reused\""), "no reused ports");
        assert!(one.0.lines().count() > 5_000, "too few events: {}", one.0.lines().count());
        let many = run(&packets, limits, threads);
        if one.0 != many.0 {
            let at = one.0.lines().zip(many.0.lines()).position(|(a, b)| a != b);
            panic!("{threads} threads: events differ from line {at:?}");
        }
        assert!(one.1 == many.1, "{threads} threads: the summary differs:\n{}\n{}", one.1, many.1);
    }
}

/// One analyzer, reading ahead (on tables of `read_ahead_from` flows or more) or not; a
/// second file is registered half way through, and the frames after it are that file's.
/// Also returns how often the pipeline started and stopped reading ahead, and whether
/// segments were waiting when the second file came.
fn run_one(packets: &[Packet], limits: FlowLimits, read_ahead_from: Option<usize>) -> ((String, String), u32, bool) {
    let opts =
        PipelineOptions { limits, summary_flows: 200, read_ahead: read_ahead_from.is_some(), ..Default::default() };
    let mut events: Vec<Event> = Vec::new();
    let mut one = Pipeline::with_options(opts);
    if let Some(flows) = read_ahead_from {
        one.analyzer.set_prefetch_from_flows(flows);
    }
    one.add_file("first");
    let half = packets.len() as u64 / 2;
    let (mut switches, mut was_ahead, mut waiting_at_second_file) = (0, false, false);
    for f in frames(packets) {
        if f.number == half {
            waiting_at_second_file = !one.ahead.is_empty();
            one.add_file("second");
        }
        one.process_frame(&f, u32::from(f.number >= half), &mut events).unwrap();
        let ahead = !one.ahead.is_empty();
        switches += u32::from(ahead != was_ahead);
        was_ahead = ahead;
    }
    one.finish(&mut events).unwrap();
    (outputs(&events, &one.summary(Vec::new(), Vec::new(), 0)), switches, waiting_at_second_file)
}

#[test]
fn reading_ahead_writes_what_reading_frame_by_frame_writes() {
    let packets = stream(8_000, 11);
    let limits = FlowLimits { max_flows: 2_048, idle_timeout: 5 * NS_PER_SEC, closed_timeout: 2 * NS_PER_SEC };
    let (plain, ..) = run_one(&packets, limits, None);
    // Read ahead on a table of 1,200 flows or more: the stream's table grows past that and
    // shrinks under it (idle sweeps), so the pipeline switches both ways, and the second
    // file is registered while segments wait.
    let (ahead, switches, waiting) = run_one(&packets, limits, Some(1_200));
    assert!(
        switches >= 3 && waiting,
        "reading ahead switched {switches} times; segments waiting at the second file: {waiting}"
    );
    // Events are named by file once there are two: the second file's are, the first's not.
    assert!(plain.0.contains("\"file\":\"second\""), "no event names the second file");
    assert!(plain.0.lines().take(100).all(|l| !l.contains("\"file\"")), "the first file's events name it");
    if plain.0 != ahead.0 {
        let at = plain.0.lines().zip(ahead.0.lines()).position(|(a, b)| a != b);
        panic!("reading ahead: events differ from line {at:?}");
    }
    assert!(plain.1 == ahead.1, "reading ahead: the summary differs:\n{}\n{}", plain.1, ahead.1);
}
