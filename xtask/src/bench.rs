//! `cargo xtask bench`: offline throughput and peak memory of a release build, with one
//! analysis thread and with one per core, side by side in one run with its peers on the same
//! captures: tshark's one-pass TCP analysis, tcptrace (the fastest classic analyser), and
//! `cat FILE > /dev/null` as the I/O floor.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::sh;

/// One tool's run on one capture.
struct Measured {
    secs: f64,
    peak_rss: u64,
}

pub fn run(captures: &[PathBuf]) -> Result<()> {
    if captures.is_empty() {
        bail!("give at least one --capture FILE");
    }
    crate::setup::run()?;
    sh(Command::new("cargo").args(["build", "--release", "-p", "tcpviz"]))?;
    let mut table = vec![
        "| capture | packets | tool | time | packets/s | peak RSS |".to_string(),
        "|---|---|---|---|---|---|".to_string(),
    ];
    for capture in captures {
        table.extend(bench_one(capture)?);
    }
    println!("\n{}", table.join("\n"));
    Ok(())
}

/// The rows of one capture: tcpviz (best of 3), tshark, tcptrace, cat.
fn bench_one(capture: &Path) -> Result<Vec<String>> {
    let out = PathBuf::from("target/bench-session");
    let _ = std::fs::remove_dir_all(&out);
    // Warm the page cache so every tool reads from memory. Read through a small buffer: a
    // forked child inherits this process's peak RSS, which would blur the children's.
    let mut file = std::fs::File::open(capture).with_context(|| format!("cannot read {}", capture.display()))?;
    std::io::copy(&mut file, &mut std::io::sink())?;

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let sessions = [out.join("t1"), out.join(format!("t{cores}"))];
    let mut tcpviz = [Measured { secs: f64::MAX, peak_rss: 0 }, Measured { secs: f64::MAX, peak_rss: 0 }];
    // One thread and N in turn, so that both see the same machine (these are noisy).
    for _ in 0..3 {
        for ((threads, session), best) in [1, cores].into_iter().zip(&sessions).zip(&mut tcpviz) {
            let m = timed(
                Command::new("target/release/tcpviz")
                    .args(["parse-pcap", "--quiet", "--threads", &threads.to_string(), "--out"])
                    .arg(session)
                    .arg(capture),
            )?;
            best.secs = best.secs.min(m.secs);
            best.peak_rss = best.peak_rss.max(m.peak_rss);
        }
    }
    for file in ["events.jsonl", "summary.json"] {
        if !same_bytes(&sessions[0].join(file), &sessions[1].join(file))? {
            bail!("{}: {file} with {cores} threads differs from one thread's", capture.display());
        }
    }
    let out = &sessions[0];
    let log = std::fs::read_to_string(out.join("benchmark.log"))?;
    let packets: u64 = log
        .lines()
        .find_map(|l| l.strip_prefix("packets: "))
        .and_then(|v| v.trim().parse().ok())
        .context("benchmark.log has no packet count")?;
    // tshark dissecting every packet with its TCP analysis and collecting the expert items
    // (the analysis flags), with no per-packet output. (`tshark -q` alone skips dissection
    // entirely, so it is no peer.)
    let tshark = timed(Command::new("tshark").args(["-n", "-q", "-r"]).arg(capture).args(["-z", "expert,note"]))?;
    // tcptrace -n: per-connection analysis, no name lookups. It reads pcap only.
    let tcptrace = timed(Command::new("tcptrace").arg("-n").arg(capture)).ok();
    // Best of 3: tcptrace's RSS (16 GB on the SYN scan) can push the capture out of the page
    // cache, and the floor is reading from memory.
    let mut cat = Measured { secs: f64::MAX, peak_rss: 0 };
    for _ in 0..3 {
        let m = timed(Command::new("sh").arg("-c").arg("cat \"$0\" > /dev/null").arg(capture))?;
        cat = Measured { secs: cat.secs.min(m.secs), peak_rss: cat.peak_rss.max(m.peak_rss) };
    }

    let name = capture.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let row = |tool: &str, m: &Measured| {
        format!(
            "| {name} | {packets} | {tool} | {:.3} s | {:.2} M | {:.1} MiB |",
            m.secs,
            packets as f64 / m.secs / 1e6,
            m.peak_rss as f64 / 1048576.0
        )
    };
    let mut rows = vec![
        row("tcpviz (1 thread, best of 3)", &tcpviz[0]),
        row(&format!("tcpviz ({cores} threads, best of 3)"), &tcpviz[1]),
        row("tshark -z expert", &tshark),
    ];
    match &tcptrace {
        Some(m) => rows.push(row("tcptrace -n", m)),
        None => rows.push(format!("| {name} | {packets} | tcptrace -n | failed (pcapng?) | – | – |")),
    }
    rows.push(row("cat > /dev/null (best of 3)", &cat));
    let one = &tcpviz[0];
    println!(
        "{name}: tcpviz {:.1}x tshark's speed{}, {:.1}x cat's time; {cores} threads {:.2}x one's speed, the same output",
        tshark.secs / one.secs,
        tcptrace.as_ref().map(|t| format!(", {:.2}x tcptrace's", t.secs / one.secs)).unwrap_or_default(),
        one.secs / cat.secs.max(1e-9),
        one.secs / tcpviz[1].secs,
    );
    Ok(rows)
}

/// Whether two files hold the same bytes, read a piece at a time: this process's peak RSS
/// is inherited by the children it measures next.
fn same_bytes(a: &Path, b: &Path) -> Result<bool> {
    use std::io::Read;
    let (mut a, mut b) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    let (mut x, mut y) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = a.read(&mut x)?;
        let mut got = 0;
        while got < n {
            let m = b.read(&mut y[got..n])?;
            if m == 0 {
                return Ok(false);
            }
            got += m;
        }
        if x[..n] != y[..n] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(b.read(&mut y[..1])? == 0);
        }
    }
}

/// Wall time and peak RSS (from wait4's rusage) of a command, stdout discarded.
fn timed(cmd: &mut Command) -> Result<Measured> {
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
    Ok(Measured { secs, peak_rss: usage.ru_maxrss as u64 * 1024 })
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
