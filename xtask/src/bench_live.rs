//! `cargo xtask bench-live` (root): what the live agent costs.
//!
//! Two namespaces joined by a router namespace, iperf3 across the veth, with and without
//! `tcpviz live` on the sender's interface, alternating runs. With
//! `kernel.bpf_stats_enabled=1` the kernel accounts the TC programs' run time: average
//! nanoseconds per packet. Reports the throughput of each run, the loss of throughput, the
//! programs' cost, and the records the agent lost (there should be none).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tcpviz_privileged_tests::{Lab, SERVER_V4, interrupt};

use crate::{is_root, sh};

struct Prog {
    run_time_ns: u64,
    run_cnt: u64,
}

fn tcpviz_progs() -> Result<Vec<Prog>> {
    let o = Command::new("bpftool").args(["prog", "show", "--json"]).output().context("bpftool")?;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["name"].as_str().is_some_and(|n| n == "tcpviz_ingress" || n == "tcpviz_egress"))
        .map(|p| Prog {
            run_time_ns: p["run_time_ns"].as_u64().unwrap_or(0),
            run_cnt: p["run_cnt"].as_u64().unwrap_or(0),
        })
        .collect())
}

fn iperf(lab: &Lab, secs: u32) -> Result<f64> {
    let o = lab.sh(&lab.a, &format!("iperf3 -c {SERVER_V4} -p 5301 -t {secs} -J"));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).context("iperf3 -J output")?;
    v["end"]["sum_received"]["bits_per_second"].as_f64().context("iperf3 result")
}

pub fn run(args: &[String]) -> Result<()> {
    if !is_root() {
        bail!("bench-live needs root (network namespaces, eBPF)");
    }
    let offloads = !args.iter().any(|a| a == "--offloads-off");
    let rounds = std::env::var("ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let secs = 4;
    sh(Command::new("cargo").args(["build", "--release", "-p", "tcpviz"]))?;
    let bin = std::fs::canonicalize("target/release/tcpviz")?;
    let lab = Lab::new();
    if !offloads {
        lab.offloads_off();
    }
    let mut server = lab.spawn(&lab.b, &["iperf3", "-s", "-p", "5301"]);
    std::thread::sleep(Duration::from_millis(500));
    let result = measure(&lab, &bin, rounds, secs, offloads);
    let _ = server.kill();
    let _ = server.wait();
    result
}

fn measure(lab: &Lab, bin: &std::path::Path, rounds: usize, secs: u32, offloads: bool) -> Result<()> {
    let stats_before = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap_or_else(|_| "0".into());
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1").context("cannot enable BPF statistics")?;

    let (mut without, mut with, mut ns_per_packet) = (Vec::new(), Vec::new(), Vec::new());
    let mut lost = 0u64;
    let session = PathBuf::from("target/bench-live");
    for round in 0..rounds {
        without.push(iperf(lab, secs)?);
        let _ = std::fs::remove_dir_all(&session);
        let agent = Command::new(bin)
            .args(["live", "--iface", &lab.veth_a, "--netns", &lab.a, "--out"])
            .arg(&session)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        std::thread::sleep(Duration::from_millis(2000));
        let before = tcpviz_progs()?;
        with.push(iperf(lab, secs)?);
        let after = tcpviz_progs()?;
        let out = interrupt(agent);
        if !out.status.success() {
            bail!("tcpviz live failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let (t0, c0): (u64, u64) = before.iter().fold((0, 0), |a, p| (a.0 + p.run_time_ns, a.1 + p.run_cnt));
        let (t1, c1): (u64, u64) = after.iter().fold((0, 0), |a, p| (a.0 + p.run_time_ns, a.1 + p.run_cnt));
        if c1 > c0 {
            ns_per_packet.push((t1 - t0) as f64 / (c1 - c0) as f64);
        }
        let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(session.join("summary.json"))?)?;
        lost += summary["sections"]["live"]["lost_events"].as_u64().unwrap_or(0);
        println!(
            "round {}: without {:.2} Gbit/s, with {:.2} Gbit/s, TC program {:.0} ns/packet over {} packets",
            round + 1,
            without[round] / 1e9,
            with[round] / 1e9,
            ns_per_packet.last().copied().unwrap_or(0.0),
            c1 - c0
        );
    }
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", stats_before.trim());
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (w0, w1, ns) = (median(&mut without), median(&mut with), median(&mut ns_per_packet));
    println!(
        "offloads {}: throughput {:.2} -> {:.2} Gbit/s ({:+.1}%), TC program {:.0} ns per packet (median of {rounds}), records lost: {lost}",
        if offloads { "on (GSO packets)" } else { "off (MTU packets)" },
        w0 / 1e9,
        w1 / 1e9,
        (w1 / w0 - 1.0) * 100.0,
        ns
    );
    Ok(())
}
