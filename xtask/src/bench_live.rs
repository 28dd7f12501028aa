//! `cargo xtask bench-live` (root): what the live agent costs, per capture policy.
//!
//! Two namespaces joined by a router namespace, iperf3 across the veth. Each round runs, one
//! after the other: no agent, the do-nothing TC program (the floor), and `tcpviz live` with
//! `--capture kernel`, `troubled` and `all` on the sender's interface. At full speed
//! iperf3 fills the router's queue and retransmits, which is trouble: `troubled` then
//! watches it like `all`. `--pace MBIT` keeps it below what the lab carries, healthy, as
//! on most hosts most of the time: the cost of `troubled`'s healthy path. With `kernel.bpf_stats_enabled=1` the kernel
//! accounts the TC programs' run time (ns per packet); the agent's CPU time comes from
//! /proc, the packets from the interface's counters. Reports each configuration's median
//! over the rounds: throughput and its loss against no agent, ns per packet and its ratio to
//! the do-nothing program, agent CPU seconds per million packets, records lost.
//!
//! Then the cost of the connection hooks (attribution: the accept and socket-state
//! tracepoints run once per accepted connection and per state change): a client opens short
//! connections to a server that accepts and closes them, without the agent and with
//! `--capture kernel`, in turn; reports connections per second each way, the hooks' ns
//! per run from the kernel's BPF statistics, and the agent's CPU per connection and the
//! kernel records it lost.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tcpviz_privileged_tests::{Lab, SERVER_V4, interrupt};

use tcpviz_common::privilege::is_root;

use crate::sh;

struct Prog {
    run_time_ns: u64,
    run_cnt: u64,
}

/// Run time and count of the TC programs of these names, summed.
fn tc_progs(names: &[&str]) -> Result<Prog> {
    let o = Command::new("bpftool").args(["prog", "show", "--json"]).output().context("bpftool")?;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let mut sum = Prog { run_time_ns: 0, run_cnt: 0 };
    for p in v.as_array().into_iter().flatten() {
        if p["name"].as_str().is_some_and(|n| names.contains(&n)) {
            sum.run_time_ns += p["run_time_ns"].as_u64().unwrap_or(0);
            sum.run_cnt += p["run_cnt"].as_u64().unwrap_or(0);
        }
    }
    Ok(sum)
}

/// Throughput in bit/s and the sender's retransmissions of one iperf3 run.
fn iperf(lab: &Lab, secs: u32, pace: Option<u32>) -> Result<(f64, u64)> {
    let pace = pace.map(|m| format!(" -b {m}M")).unwrap_or_default();
    let o = lab.sh(&lab.a, &format!("iperf3 -c {SERVER_V4} -p 5301 -t {secs}{pace} -J"));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).context("iperf3 -J output")?;
    let bits = v["end"]["sum_received"]["bits_per_second"].as_f64().context("iperf3 result")?;
    Ok((bits, v["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0)))
}

/// Packets through the sender's interface, both ways.
fn iface_packets(lab: &Lab) -> u64 {
    let o = lab.sh(
        &lab.a,
        &format!("cat /sys/class/net/{0}/statistics/rx_packets /sys/class/net/{0}/statistics/tx_packets", lab.veth_a),
    );
    String::from_utf8_lossy(&o.stdout).split_whitespace().filter_map(|n| n.parse::<u64>().ok()).sum()
}

/// User plus system CPU seconds of a process.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0) + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    ticks as f64 / clock_ticks_per_sec()
}

fn clock_ticks_per_sec() -> f64 {
    let o = Command::new("getconf").arg("CLK_TCK").output();
    o.ok().and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok()).unwrap_or(100.0)
}

#[derive(Clone, Copy, PartialEq)]
enum Setup {
    NoAgent,
    Noop,
    Agent(&'static str),
}

impl Setup {
    fn name(self) -> String {
        match self {
            Setup::NoAgent => "no agent".into(),
            Setup::Noop => "do-nothing TC program".into(),
            Setup::Agent(p) => format!("tcpviz live --capture {p}"),
        }
    }
}

const SETUPS: [Setup; 5] =
    [Setup::NoAgent, Setup::Noop, Setup::Agent("kernel"), Setup::Agent("troubled"), Setup::Agent("all")];

#[derive(Default)]
struct Samples {
    gbits: Vec<f64>,
    ns_per_packet: Vec<f64>,
    cpu_per_mpkt: Vec<f64>,
    /// The agent's CPU seconds during the transfers, summed over the rounds (with `copied`:
    /// its cost per packet it was handed, which says how many one core keeps up with).
    agent_cpu_secs: f64,
    lost: u64,
    marks: u64,
    copied: u64,
    /// iperf3's own count of the sender's retransmissions: traffic with some is not the
    /// healthy traffic `troubled` skips.
    retransmits: u64,
}

pub fn run(offloads_off: bool, pace: Option<u32>) -> Result<()> {
    if !is_root() {
        bail!("bench-live needs root (network namespaces, eBPF)");
    }
    let offloads = !offloads_off;
    let rounds = std::env::var("ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let secs = 4;
    sh(Command::new("cargo").args(["build", "--release", "-p", "tcpviz", "--bin", "tcpviz", "--example", "noop_tc"]))?;
    let bin = std::fs::canonicalize("target/release/tcpviz")?;
    let noop = std::fs::canonicalize("target/release/examples/noop_tc")?;
    let lab = Lab::new();
    if !offloads {
        lab.offloads_off();
    }
    let mut server = lab.spawn(&lab.b, &["iperf3", "-s", "-p", "5301"]);
    std::thread::sleep(Duration::from_millis(500));
    let result = measure(&lab, &bin, &noop, Run { rounds, secs, offloads, pace });
    let _ = server.kill();
    let _ = server.wait();
    result?;
    measure_connections(&lab, &bin, rounds)
}

/// Port of the server that accepts and closes.
const ACCEPT_PORT: u16 = 5302;
/// Connections a client opens per run: enough that the agent's tables fill as on a busy
/// host (each connection is some ten kernel records, the server's accept among them).
const CONNECTIONS: u32 = 20_000;

/// A server (Python, in B) that accepts connections and closes them at once.
const ACCEPT_SERVER: &str = "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('0.0.0.0',PORT))\ns.listen(1024)\nwhile True:\n  c,_=s.accept()\n  c.close()\n";

/// A client (Python, in A): COUNT connections one after the other, each read to its end;
/// prints the seconds they took.
const CONNECT_CLIENT: &str = "import socket,time\nt=time.monotonic()\nfor _ in range(COUNT):\n  c=socket.create_connection(('HOST',PORT))\n  c.recv(1)\n  c.close()\nprint(time.monotonic()-t)\n";

/// Connections per second, with the agent (`--capture kernel`) and without, in turn; and
/// the connection hooks' run time per run.
fn measure_connections(lab: &Lab, bin: &Path, rounds: usize) -> Result<()> {
    let server_py = ACCEPT_SERVER.replace("PORT", &ACCEPT_PORT.to_string());
    let stats_before = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap_or_else(|_| "0".into());
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1").context("cannot enable BPF statistics")?;
    let mut server = lab.spawn(&lab.b, &["python3", "-c", &server_py]);
    std::thread::sleep(Duration::from_millis(500));
    let mut samples = ConnectionSamples::default();
    let result = (0..rounds).try_for_each(|round| connection_round(lab, bin, round, &mut samples));
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", stats_before.trim());
    let _ = server.kill();
    let _ = server.wait();
    result?;
    let ConnectionSamples { without, with, ns_per_run, runs_per_connection, agent_us_per_connection, lost } = samples;
    let (a, b) = (median(&without).unwrap_or(0.0), median(&with).unwrap_or(0.0));
    let (ns, runs) = (median(&ns_per_run).unwrap_or(0.0), median(&runs_per_connection).unwrap_or(0.0));
    let agent_us = median(&agent_us_per_connection).unwrap_or(0.0);
    // The rates are those of a client and a server waking each other: on a VM, another busy
    // process (the agent) can make them faster. The hooks' own time is the cost.
    println!(
        "\nshort connections (accept and close), median of {rounds} rounds: {a:.0}/s without the agent, {b:.0}/s with \
         `--capture kernel` ({:+.1}%); connection hooks {ns:.0} ns per run, {runs:.1} runs per connection: {:.2} µs \
         of kernel time per connection; the agent {agent_us:.1} µs of CPU per connection, {lost} kernel records lost \
         (the server is in a namespace the agent does not watch: its accepts are named from the socket)",
        (b / a - 1.0) * 100.0,
        ns * runs / 1e3
    );
    Ok(())
}

#[derive(Default)]
struct ConnectionSamples {
    without: Vec<f64>,
    with: Vec<f64>,
    ns_per_run: Vec<f64>,
    runs_per_connection: Vec<f64>,
    agent_us_per_connection: Vec<f64>,
    lost: u64,
}

/// One run of the client without the agent, then one with it.
fn connection_round(lab: &Lab, bin: &Path, round: usize, s: &mut ConnectionSamples) -> Result<()> {
    let client_py = CONNECT_CLIENT
        .replace("COUNT", &CONNECTIONS.to_string())
        .replace("HOST", SERVER_V4)
        .replace("PORT", &ACCEPT_PORT.to_string());
    let run = || -> Result<f64> {
        let o = lab.sh(&lab.a, &format!("python3 -c \"{client_py}\""));
        let secs: f64 = String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse()
            .with_context(|| format!("connection client: {}", String::from_utf8_lossy(&o.stderr)))?;
        Ok(CONNECTIONS as f64 / secs)
    };
    s.without.push(run()?);
    let session = PathBuf::from("target/bench-live");
    let _ = std::fs::remove_dir_all(&session);
    let agent = Command::new(bin)
        .args(["live", "--capture", "kernel", "--iface", &lab.veth_a, "--netns", &lab.a, "--out"])
        .arg(&session)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(2000));
    let hooks = ["tcpviz_sys_exit_accept", "tcpviz_inet_sock_set_state"];
    let pid = agent.id();
    let measured = (|| -> Result<(Prog, f64, Prog, f64)> {
        let (before, cpu0) = (tc_progs(&hooks)?, cpu_secs(pid));
        let rate = run()?;
        // What the agent still had queued when the client finished.
        std::thread::sleep(Duration::from_millis(1000));
        Ok((before, rate, tc_progs(&hooks)?, cpu_secs(pid) - cpu0))
    })();
    let out = interrupt(agent);
    if !out.status.success() {
        bail!("tcpviz live failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let (before, rate, after, agent_cpu) = measured?;
    s.with.push(rate);
    s.agent_us_per_connection.push(agent_cpu * 1e6 / CONNECTIONS as f64);
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(session.join("summary.json"))?)?;
    s.lost += summary["sections"]["live"]["lost_events"].as_u64().unwrap_or(0);
    if after.run_cnt > before.run_cnt {
        let runs = (after.run_cnt - before.run_cnt) as f64;
        s.ns_per_run.push((after.run_time_ns - before.run_time_ns) as f64 / runs);
        s.runs_per_connection.push(runs / CONNECTIONS as f64);
    }
    println!(
        "round {}: {CONNECTIONS} connections, {:.0}/s without the agent, {rate:.0}/s with it, the agent {:.1} µs \
         of CPU per connection",
        round + 1,
        s.without.last().unwrap_or(&0.0),
        s.agent_us_per_connection.last().unwrap_or(&0.0)
    );
    Ok(())
}

/// One iperf3 run with `setup` in place.
fn one_run(
    lab: &Lab,
    bin: &Path,
    noop: &Path,
    setup: Setup,
    (secs, pace): (u32, Option<u32>),
    s: &mut Samples,
) -> Result<()> {
    let session = PathBuf::from("target/bench-live");
    let _ = std::fs::remove_dir_all(&session);
    let mut child = match setup {
        Setup::NoAgent => None,
        Setup::Noop => Some(
            Command::new("ip")
                .args(["netns", "exec", &lab.a])
                .arg(noop)
                .arg(&lab.veth_a)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()?,
        ),
        Setup::Agent(policy) => Some(
            Command::new(bin)
                .args(["live", "--capture", policy, "--iface", &lab.veth_a, "--netns", &lab.a, "--out"])
                .arg(&session)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()?,
        ),
    };
    std::thread::sleep(Duration::from_millis(2000));
    let progs: &[&str] = match setup {
        Setup::Noop => &["tcpviz_noop"],
        _ => &["tcpviz_ingress", "tcpviz_egress"],
    };
    let pid = match setup {
        Setup::Agent(_) => child.as_ref().map(|c| c.id()),
        _ => None,
    };
    let (before, packets0, cpu0) = (tc_progs(progs)?, iface_packets(lab), pid.map(cpu_secs).unwrap_or(0.0));
    let (bits, retransmits) = iperf(lab, secs, pace)?;
    s.gbits.push(bits / 1e9);
    s.retransmits += retransmits;
    let (after, packets1, cpu1) = (tc_progs(progs)?, iface_packets(lab), pid.map(cpu_secs).unwrap_or(0.0));
    if after.run_cnt > before.run_cnt {
        s.ns_per_packet.push((after.run_time_ns - before.run_time_ns) as f64 / (after.run_cnt - before.run_cnt) as f64);
    }
    if pid.is_some() && packets1 > packets0 {
        s.cpu_per_mpkt.push((cpu1 - cpu0) / ((packets1 - packets0) as f64 / 1e6));
        s.agent_cpu_secs += cpu1 - cpu0;
    }
    match (setup, child.take()) {
        (Setup::Noop, Some(mut c)) => {
            drop(c.stdin.take());
            c.wait()?;
        }
        (Setup::Agent(_), Some(c)) => {
            let out = interrupt(c);
            if !out.status.success() {
                bail!("tcpviz live failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            let summary: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(session.join("summary.json"))?)?;
            let live = &summary["sections"]["live"];
            s.lost += live["lost_events"].as_u64().unwrap_or(0);
            // Healthy traffic is not always trouble-free: a tail-loss probe or a drop in a
            // full queue marks the connection, and from then on its packets are copied.
            s.marks += live["trouble_marks"]
                .as_object()
                .map_or(0, |m| m.iter().filter(|(k, _)| *k != "failed").filter_map(|(_, v)| v.as_u64()).sum());
            s.copied += live["packets_seen_by_tc"].as_u64().unwrap_or(0);
        }
        _ => {}
    }
    Ok(())
}

fn median(v: &[f64]) -> Option<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

struct Run {
    rounds: usize,
    secs: u32,
    offloads: bool,
    pace: Option<u32>,
}

fn measure(lab: &Lab, bin: &Path, noop: &Path, run: Run) -> Result<()> {
    let Run { rounds, secs, offloads, pace } = run;
    let stats_before = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap_or_else(|_| "0".into());
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1").context("cannot enable BPF statistics")?;
    let mut samples: Vec<Samples> = SETUPS.iter().map(|_| Samples::default()).collect();
    let mut result = Ok(());
    'rounds: for round in 0..rounds {
        for (setup, s) in SETUPS.iter().zip(samples.iter_mut()) {
            if let Err(e) = one_run(lab, bin, noop, *setup, (secs, pace), s) {
                result = Err(e);
                break 'rounds;
            }
            println!("round {}: {:<34} {:.2} Gbit/s", round + 1, setup.name(), s.gbits.last().unwrap_or(&0.0));
        }
    }
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", stats_before.trim());
    result?;
    let base = median(&samples[0].gbits).unwrap_or(0.0);
    let floor = median(&samples[1].ns_per_packet);
    println!(
        "\noffloads {}, {}, median of {rounds} rounds:",
        if offloads { "on (GSO packets)" } else { "off (MTU packets)" },
        pace.map(|m| format!("iperf3 paced at {m} Mbit/s")).unwrap_or_else(|| "iperf3 at full speed".into())
    );
    for (setup, s) in SETUPS.iter().zip(&samples) {
        let gbits = median(&s.gbits).unwrap_or(0.0);
        let mut line = format!("  {:<34} {gbits:6.2} Gbit/s, {} retransmissions", setup.name(), s.retransmits);
        if *setup != Setup::NoAgent {
            line += &format!(" ({:+.1}%)", (gbits / base - 1.0) * 100.0);
        }
        if let Some(ns) = median(&s.ns_per_packet) {
            line += &format!(", TC {ns:.0} ns/packet");
            if let (Some(f), Setup::Agent(_)) = (floor, setup) {
                line += &format!(" ({:.2}x the do-nothing program)", ns / f);
            }
        }
        if let Some(cpu) = median(&s.cpu_per_mpkt) {
            line += &format!(", agent {cpu:.3} CPU s per million packets");
        }
        if let Setup::Agent(policy) = setup {
            line += &format!(", packets copied {}, records lost {}", s.copied, s.lost);
            if s.copied > 0 {
                let us = s.agent_cpu_secs / s.copied as f64 * 1e6;
                line += &format!(
                    ", agent {us:.2} µs per copied packet (one core: {:.0} k copied packets/s)",
                    1e3 / us.max(1e-9)
                );
            }
            if *policy == "troubled" {
                line += &format!(", trouble marks {}", s.marks);
            }
        }
        println!("{line}");
    }
    Ok(())
}
