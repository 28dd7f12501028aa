//! `cargo xtask soak`: memory of `tcpviz monitor` over a long run.
//!
//! Appends a sample capture to a growing file again and again, each round with a new client
//! port (new connections) and timestamps 10 s later (old connections go idle and are
//! retired), while `tcpviz monitor` follows it; samples the monitor's resident memory.
//! Memory must stay flat: state is bounded by the active flows, not by the run's length.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::sh;

pub fn run(rounds: usize) -> Result<()> {
    sh(Command::new("cargo").args(["build", "--release", "-p", "tcpviz"]))?;
    let sample = std::fs::read("samples/ipv4_loss_sender.pcap")?;
    let (header, records) = split(&sample);
    let work = PathBuf::from("target/soak");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let capture = work.join("growing.pcap");
    let mut file = std::fs::File::create(&capture)?;
    file.write_all(header)?;
    file.flush()?;

    let mut monitor = Command::new("target/release/tcpviz")
        .args(["monitor", "--poll-interval", "0.2", "--summary-flows", "100", "--pcap-path"])
        .arg(&capture)
        .arg("--out")
        .arg(work.join("session"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = monitor.id();
    let started = Instant::now();
    let mut samples: Vec<(usize, u64)> = Vec::new();
    let mut packets = 0usize;
    for round in 0..rounds {
        let port = 10_000 + (round % 50_000) as u16;
        let shift = round as u32 * 10;
        for r in &records {
            let mut r = r.clone();
            let secs = u32::from_le_bytes(r[0..4].try_into().unwrap()) + shift;
            r[0..4].copy_from_slice(&secs.to_le_bytes());
            // Ethernet + IPv4 without options: the client port is a source or a
            // destination port at bytes 34..38 of the frame.
            let p = &mut r[16 + 34..16 + 38];
            if u16::from_be_bytes([p[0], p[1]]) != 5001 {
                p[0..2].copy_from_slice(&port.to_be_bytes());
            } else {
                p[2..4].copy_from_slice(&port.to_be_bytes());
            }
            file.write_all(&r)?;
        }
        file.flush()?;
        packets += records.len();
        if round % (rounds / 20).max(1) == 0 {
            std::thread::sleep(Duration::from_millis(300));
            samples.push((packets, rss_kib(pid)?));
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    samples.push((packets, rss_kib(pid)?));
    let _ = Command::new("kill").args(["-INT", &pid.to_string()]).status();
    monitor.wait()?;
    println!("{rounds} rounds, {packets} packets, {rounds} connections, in {:.1} s", started.elapsed().as_secs_f64());
    for (p, kib) in &samples {
        println!("after {p:>9} packets: RSS {:>7.1} MiB", *kib as f64 / 1024.0);
    }
    let early = samples[samples.len() / 5].1 as f64;
    let last = samples.last().unwrap().1 as f64;
    println!("growth from 20% of the run to the end: {:+.1}%", (last / early - 1.0) * 100.0);
    Ok(())
}

fn split(pcap: &[u8]) -> (&[u8], Vec<Vec<u8>>) {
    let mut records = Vec::new();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let caplen = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().unwrap()) as usize;
        records.push(pcap[at..at + 16 + caplen].to_vec());
        at += 16 + caplen;
    }
    (&pcap[..24], records)
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")
}
