//! `cargo xtask bench-tui --capture FILE`: does the terminal view slow the analysis? The
//! same capture is followed (`tcpviz monitor`) with and without `--tui`, the view drawn in
//! a real terminal (a detached 120x40 tmux session), and the speeds compared in one run.
//!
//! The speed is the benchmark log's `packets_per_busy_second`: packets over the time spent
//! reading and analysing, without the waits for the capture to grow (a follow's wall time
//! is mostly waiting). Best of three rounds each, interleaved, as the machine is noisy.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::sh;

/// How long each follow runs: the capture is read at once, the rest is waiting.
const FOLLOW_SECS: u32 = 4;
const ROUNDS: usize = 3;
const TMUX_SOCKET: &str = "tcpviz-bench-tui";

pub fn run(capture: &Path) -> Result<()> {
    if !capture.is_file() {
        bail!("{} is not a capture file", capture.display());
    }
    sh(Command::new("cargo").args(["build", "--release", "-p", "tcpviz"]))?;
    let bin = std::fs::canonicalize("target/release/tcpviz")?;
    let capture = std::fs::canonicalize(capture)?;
    let out = std::env::current_dir()?.join("target/bench-tui");
    let (mut plain, mut tui) = (Figures::default(), Figures::default());
    for round in 0..ROUNDS {
        let p = follow_plain(&bin, &capture, &out.join(format!("plain-{round}")))?;
        let t = follow_in_tmux(&bin, &capture, &out.join(format!("tui-{round}")))?;
        println!(
            "round {}: {:.0} packets/busy s without the view, {:.0} with it",
            round + 1,
            p.packets_per_busy_second,
            t.packets_per_busy_second
        );
        plain = plain.best(p);
        tui = tui.best(t);
    }
    if plain.packets != tui.packets {
        bail!("the two follows read {} and {} packets", plain.packets, tui.packets);
    }
    println!("\n| mode | packets | busy s (best) | packets/busy s (best) | peak RSS |");
    println!("|---|---|---|---|---|");
    for (name, f) in [("monitor", &plain), ("monitor --tui (tmux 120x40)", &tui)] {
        println!(
            "| {name} | {} | {:.3} | {:.0} | {:.1} MiB |",
            f.packets, f.busy_seconds, f.packets_per_busy_second, f.peak_rss_mib
        );
    }
    println!(
        "\nwith the view: {:.2}x the speed without it (best of {ROUNDS})",
        tui.packets_per_busy_second / plain.packets_per_busy_second
    );
    Ok(())
}

#[derive(Debug, Default, Clone, Copy)]
struct Figures {
    packets: u64,
    busy_seconds: f64,
    packets_per_busy_second: f64,
    peak_rss_mib: f64,
}

impl Figures {
    fn best(self, other: Figures) -> Figures {
        if other.packets_per_busy_second > self.packets_per_busy_second { other } else { self }
    }

    fn read(session: &Path) -> Result<Figures> {
        let path = session.join("benchmark.log");
        let log = std::fs::read_to_string(&path).with_context(|| format!("no {}", path.display()))?;
        let figure = |name: &str| -> Result<f64> {
            log.lines()
                .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(": ")))
                .and_then(|v| v.trim().parse().ok())
                .with_context(|| format!("{} has no {name}", path.display()))
        };
        Ok(Figures {
            packets: figure("packets")? as u64,
            busy_seconds: figure("busy_seconds")?,
            packets_per_busy_second: figure("packets_per_busy_second")?,
            peak_rss_mib: figure("peak_rss_mib").unwrap_or(0.0),
        })
    }
}

fn monitor_args(capture: &Path, session: &Path) -> Vec<String> {
    let _ = std::fs::remove_dir_all(session);
    vec![
        "monitor".into(),
        "--pcap-path".into(),
        capture.display().to_string(),
        "--out".into(),
        session.display().to_string(),
        "--duration".into(),
        FOLLOW_SECS.to_string(),
    ]
}

fn follow_plain(bin: &Path, capture: &Path, session: &Path) -> Result<Figures> {
    let status = Command::new(bin)
        .args(monitor_args(capture, session))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()?;
    if !status.success() {
        bail!("tcpviz monitor failed: {status}");
    }
    Figures::read(session)
}

/// `monitor --tui` in a detached tmux session, which ends when the follow does.
fn follow_in_tmux(bin: &Path, capture: &Path, session: &Path) -> Result<Figures> {
    let tmux = |args: &[&str]| Command::new("tmux").args(["-L", TMUX_SOCKET, "-f", "/dev/null"]).args(args).output();
    let _ = tmux(&["kill-server"]);
    let mut command = vec![bin.display().to_string()];
    command.extend(monitor_args(capture, session));
    command.push("--tui".into());
    let started = tmux(&["new-session", "-d", "-x", "120", "-y", "40", &command.join(" ")])
        .context("tmux is needed (cargo xtask setup installs it)")?;
    if !started.status.success() {
        bail!("tmux new-session failed: {}", String::from_utf8_lossy(&started.stderr));
    }
    let deadline = Instant::now() + Duration::from_secs(FOLLOW_SECS as u64 + 60);
    while tmux(&["has-session"])?.status.success() {
        if Instant::now() > deadline {
            let _ = tmux(&["kill-server"]);
            bail!("monitor --tui did not end");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = tmux(&["kill-server"]);
    Figures::read(session)
}
