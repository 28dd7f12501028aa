//! Memory is bounded by the flows tracked, not by the flows seen: a capture of a million
//! connections (one SYN each, a SYN scan) is analysed with a small flow table, and the
//! peak RSS of the run (the kernel's `ru_maxrss` of the child) must stay under a limit that
//! a per-seen-flow cost of even 100 bytes would break.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::Command;

/// Connections in the capture, each its own flow.
const FLOWS: u32 = 1_000_000;
/// Flows tracked at once (`--max-flows`).
const TRACKED: usize = 50_000;
/// Peak RSS allowed. The binary, its buffers and 50,000 flows take about 78 MiB here (a
/// debug build, with an analysis thread per core: 47 MiB for a release build on one), so
/// the million flows seen would break the limit at 20 bytes each. (mimalloc committing its
/// arenas eagerly, see `main.rs`, took it over.)
const LIMIT_KIB: i64 = 96 * 1024;

/// A little-endian pcap of Ethernet SYNs, each from its own address and port (the layout
/// of `cargo xtask gen-captures`' syn_scan.pcap).
fn write_syn_scan(path: &Path, count: u32) {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    out.write_all(&0xa1b2_c3d4u32.to_le_bytes()).unwrap();
    out.write_all(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap();
    out.write_all(&96u32.to_le_bytes()).unwrap();
    out.write_all(&1u32.to_le_bytes()).unwrap();
    let mut frame = [0u8; 54];
    frame[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    frame[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    frame[14] = 0x45;
    frame[16..18].copy_from_slice(&40u16.to_be_bytes());
    frame[22] = 64;
    frame[23] = 6;
    frame[30..34].copy_from_slice(&[192, 0, 2, 1]);
    frame[36..38].copy_from_slice(&443u16.to_be_bytes());
    frame[46] = 5 << 4;
    frame[47] = 0x02; // SYN
    frame[48..50].copy_from_slice(&64_240u16.to_be_bytes());
    for i in 0..count {
        let (host, port) = (i / 30_000, 1024 + (i % 30_000) as u16);
        frame[26..30].copy_from_slice(&[10, (host >> 8) as u8, host as u8, 1]);
        frame[34..36].copy_from_slice(&port.to_be_bytes());
        frame[38..42].copy_from_slice(&i.wrapping_mul(2_654_435_761).to_be_bytes());
        let us = 1_796_000_000_000_000u64 + 2 * i as u64;
        for v in [(us / 1_000_000) as u32, (us % 1_000_000) as u32, 54, 54] {
            out.write_all(&v.to_le_bytes()).unwrap();
        }
        out.write_all(&frame).unwrap();
    }
    out.flush().unwrap();
}

/// Runs `cmd` to its end and returns its exit status and peak RSS in KiB.
// wait4 reaps the child (std's wait cannot return its resource usage).
#[allow(clippy::zombie_processes)]
fn run_measured(cmd: &mut Command) -> (std::process::ExitStatus, i64) {
    use std::os::unix::process::ExitStatusExt;
    let child = cmd.spawn().unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pid is our child's, not waited for yet; both pointers are to live locals.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t, "wait4: {}", std::io::Error::last_os_error());
    (std::process::ExitStatus::from_raw(status), usage.ru_maxrss)
}

#[test]
fn peak_rss_is_bounded_by_the_flows_tracked() {
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("syn_scan.pcap");
    write_syn_scan(&capture, FLOWS);
    let out = dir.path().join("out");
    let (status, peak_kib) = run_measured(
        Command::new(env!("CARGO_BIN_EXE_tcpviz"))
            .args(["parse-pcap", "--quiet", "--max-flows", &TRACKED.to_string()])
            .arg(&capture)
            .arg("--out")
            .arg(&out),
    );
    assert!(status.success(), "tcpviz failed: {status}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let totals = &summary["totals"];
    assert_eq!(totals["flows"], FLOWS as u64);
    let listed = summary["flows"].as_array().unwrap().len() as u64;
    assert_eq!(listed + totals["flows_folded"].as_u64().unwrap(), FLOWS as u64, "every flow listed or folded");
    assert_eq!(totals["folded"]["flows"], totals["flows_folded"]);
    assert_eq!(totals["folded"]["packets"].as_u64().unwrap() + listed, FLOWS as u64, "one SYN per flow");
    assert!(totals["flows_evicted_capacity"].as_u64().unwrap() > 0, "the table was full: {totals}");
    eprintln!("peak RSS {:.1} MiB for {FLOWS} flows, {TRACKED} tracked", peak_kib as f64 / 1024.0);
    assert!(peak_kib <= LIMIT_KIB, "peak RSS {peak_kib} KiB is over the limit of {LIMIT_KIB} KiB");
}
