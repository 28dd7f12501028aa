//! A ring-buffer record as the live agent handles it: `tcpviz_common::decode::record`, then
//! a packet snapshot into a frame and `decode_frame`, a tracepoint record through
//! `decode_trace` with the tracefs formats of a real kernel, or a watch start through
//! `decode_watch` into a flow. Never a panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tcpviz::capture::{Direction, Frame, LinkType, decode_frame};
use tcpviz::live::clock::BootClock;
use tcpviz::flow::watch::PendingWatches;
use tcpviz::live::records::{decode_trace, decode_watch};
use tcpviz::live::tracefs::{Format, parse_format};
use tcpviz_common::decode::{Record, record};
use tcpviz_common::{DIR_EGRESS, SNAP_LEN, TP_COUNT, TRACE_RAW_LEN, TRACEPOINTS};

/// The formats of Linux 6.18 (`/sys/kernel/tracing/events/*/*/format`), in `TRACEPOINTS`
/// order, so that a crash reproduces on any machine.
const FORMAT_TEXTS: [&str; TP_COUNT] = [
    include_str!("../seeds/tracefs/tcp_retransmit_skb.format"),
    include_str!("../seeds/tracefs/tcp_retransmit_synack.format"),
    include_str!("../seeds/tracefs/tcp_probe.format"),
    include_str!("../seeds/tracefs/tcp_cong_state_set.format"),
    include_str!("../seeds/tracefs/inet_sock_set_state.format"),
    include_str!("../seeds/tracefs/tcp_send_reset.format"),
    include_str!("../seeds/tracefs/tcp_receive_reset.format"),
    include_str!("../seeds/tracefs/sys_exit_accept4.format"),
    include_str!("../seeds/tracefs/sys_exit_accept.format"),
];

fn formats() -> &'static [Option<Format>; TP_COUNT] {
    static FORMATS: OnceLock<[Option<Format>; TP_COUNT]> = OnceLock::new();
    FORMATS.get_or_init(|| {
        std::array::from_fn(|i| {
            let tp = TRACEPOINTS[i];
            Some(parse_format(tp.category, tp.name, FORMAT_TEXTS[i]).expect("a real format file parses"))
        })
    })
}

// A clock offset as measured on a machine booted a while ago.
const CLOCK: BootClock = BootClock { offset_ns: 1_764_000_000_000_000_000, error_ns: 100 };

fuzz_target!(|data: &[u8]| {
    match record(data) {
        Ok(Record::Packet(p)) => {
            assert!(p.snap_len as usize <= SNAP_LEN);
            let data = &p.data[..p.snap_len as usize];
            let direction = Some(if p.direction == DIR_EGRESS { Direction::Egress } else { Direction::Ingress });
            // The agent decodes with the interface's link type: Ethernet, or raw IP on L3 devices.
            for link_type in [LinkType::ETHERNET, LinkType::RAW] {
                let frame = Frame {
                    ts: CLOCK.to_wall(p.ts_boot_ns),
                    link_type,
                    data,
                    orig_len: p.orig_len,
                    interface: 0,
                    number: 1,
                    direction,
                };
                let _ = decode_frame(&frame);
            }
        }
        Ok(Record::Trace(t)) => {
            assert!(t.raw_len as usize <= TRACE_RAW_LEN);
            let _ = decode_trace(&t, formats(), CLOCK.to_wall(t.ts_boot_ns));
        }
        Ok(Record::Watch(w)) => {
            let ts = CLOCK.to_wall(w.ts_boot_ns);
            // The decoder checked what the agent relies on: a known reason, IPv4 or IPv6.
            let start = decode_watch(&w, ts, 30_000_000_000).expect("a watch start the decoder accepted");
            let mut pending = PendingWatches::default();
            pending.add(start);
            assert!(pending.take(&start.key()).is_some());
        }
        Err(_) => {}
    }
});
