//! `cargo xtask bench`: offline throughput and peak memory of a release build on a large
//! capture, with tshark's one-pass TCP analysis of the same file measured in the same run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::sh;

pub fn run(capture: &Path) -> Result<()> {
    crate::setup::run()?;
    sh(Command::new("cargo").args(["build", "--release", "-p", "tcpviz"]))?;
    let out = PathBuf::from("target/bench-session");
    let _ = std::fs::remove_dir_all(&out);

    // Warm the page cache so both tools read from memory. Read through a small buffer: a
    // forked child inherits this process's peak RSS, which would blur the children's.
    let mut file = std::fs::File::open(capture).with_context(|| format!("cannot read {}", capture.display()))?;
    std::io::copy(&mut file, &mut std::io::sink())?;

    let mut best_tcpviz = f64::MAX;
    let mut tcpviz_rss = 0u64;
    for _ in 0..3 {
        let (secs, rss) = timed(
            Command::new("target/release/tcpviz").arg("parse-pcap").arg("--quiet").arg("--out").arg(&out).arg(capture),
        )?;
        best_tcpviz = best_tcpviz.min(secs);
        tcpviz_rss = tcpviz_rss.max(rss);
    }
    let log = std::fs::read_to_string(out.join("benchmark.log"))?;
    let packets: u64 = log
        .lines()
        .find_map(|l| l.strip_prefix("packets: "))
        .and_then(|v| v.trim().parse().ok())
        .context("benchmark.log has no packet count")?;

    // The peer: tshark dissecting every packet with its TCP analysis and collecting the
    // expert items (the analysis flags), with no per-packet output. (`tshark -q` alone skips
    // dissection entirely, so it is no peer.)
    let (tshark_secs, tshark_rss) =
        timed(Command::new("tshark").args(["-n", "-q", "-r"]).arg(capture).args(["-z", "expert,note"]))?;

    let mpps = |s: f64| packets as f64 / s / 1e6;
    println!("capture: {} ({packets} packets)", capture.display());
    println!(
        "tcpviz parse-pcap: {best_tcpviz:.3} s  {:.2} M packets/s  peak RSS {:.1} MiB (best of 3)",
        mpps(best_tcpviz),
        tcpviz_rss as f64 / 1048576.0
    );
    println!(
        "tshark -z expert:  {tshark_secs:.3} s  {:.3} M packets/s  peak RSS {:.1} MiB",
        mpps(tshark_secs),
        tshark_rss as f64 / 1048576.0
    );
    println!(
        "ratio: tcpviz is {:.1}x faster than tshark and uses {:.1}x less memory",
        tshark_secs / best_tcpviz,
        tshark_rss as f64 / tcpviz_rss.max(1) as f64
    );
    Ok(())
}

/// Wall time and peak RSS (from wait4's rusage) of a command, stdout discarded.
fn timed(cmd: &mut Command) -> Result<(f64, u64)> {
    let started = Instant::now();
    let child = cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn()?;
    let pid = child.id() as i32;
    let mut status = 0i32;
    let mut usage = std::mem::MaybeUninit::<libc_rusage>::zeroed();
    // SAFETY: wait4 writes a struct rusage into `usage`; the layout matches Linux x86_64.
    let r = unsafe { wait4(pid, &mut status, 0, usage.as_mut_ptr()) };
    let secs = started.elapsed().as_secs_f64();
    if r != pid {
        bail!("wait4 failed");
    }
    // SAFETY: initialised by wait4.
    let usage = unsafe { usage.assume_init() };
    if status != 0 {
        bail!("{} exited with status {status}", crate::render(cmd));
    }
    Ok((secs, usage.ru_maxrss as u64 * 1024))
}

#[repr(C)]
struct libc_rusage {
    ru_utime: [i64; 2],
    ru_stime: [i64; 2],
    ru_maxrss: i64,
    rest: [i64; 13],
}

unsafe extern "C" {
    fn wait4(pid: i32, status: *mut i32, options: i32, rusage: *mut libc_rusage) -> i32;
}
