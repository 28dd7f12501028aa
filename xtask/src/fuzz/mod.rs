//! `cargo xtask fuzz [--secs N] [--corpus DIR] [TARGET...]`: seeds the corpora, builds the
//! fuzz targets of `fuzz/` once (cargo-fuzz, nightly, no eBPF build) and runs each for N
//! seconds (30 by default). A crash, timeout or out-of-memory input fails the run and is
//! printed. Corpora grow in `fuzz/corpus/TARGET/` (not in git); crashes go to
//! `fuzz/artifacts/TARGET/`.
//!
//! Seeds are made at run time, from captures and the kernel of this machine: the captures of
//! `--corpus` (default `../shared/pcaps` when it is there) and of `samples/`, whole or their
//! first 64 KiB; single frames taken out of them (decode_frame, ring_record); sessions that
//! `tcpviz parse-pcap` writes for the small ones (events_jsonl); the tracefs format files of
//! this kernel (and the copies in `fuzz/seeds/tracefs/`); BTF built from
//! `/sys/kernel/btf/vmlinux` (its first types) and by hand (the agent's member paths).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::sh;

mod seeds;

/// Every target in `fuzz/fuzz_targets/`, with the largest input it is given.
pub const TARGETS: [(&str, usize); 7] = [
    ("capture_reader", 64 * 1024),
    ("decode_frame", 4 * 1024),
    ("tailer", 1024),
    ("events_jsonl", 64 * 1024),
    ("tracefs_format", 8 * 1024),
    ("btf", 64 * 1024),
    ("ring_record", 512),
];

/// `cargo xtask fuzz [--secs N] [--corpus DIR] [TARGET...]`.
#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Seconds of fuzzing per target.
    #[arg(long, value_name = "N", default_value_t = 30)]
    pub secs: u64,
    /// Captures to seed from (default ../shared/pcaps when it is there).
    #[arg(long, value_name = "DIR")]
    pub corpus: Option<PathBuf>,
    /// The targets to run (all by default).
    #[arg(value_name = "TARGET", value_parser = clap::builder::PossibleValuesParser::new(TARGETS.map(|(n, _)| n)))]
    pub targets: Vec<String>,
}

pub fn run(args: &FuzzArgs) -> Result<()> {
    let secs = args.secs;
    let mut targets = args.targets.clone();
    if targets.is_empty() {
        targets = TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    }
    if !nightly_available() {
        bail!("cargo xtask fuzz needs the nightly toolchain (cargo xtask setup installs it)");
    }
    let corpus = args.corpus.clone().or_else(|| Some(PathBuf::from("../shared/pcaps")).filter(|p| p.is_dir()));
    seeds::seed(corpus.as_deref(), &targets)?;
    let target_dir = fuzz_target_dir();
    build(&target_dir)?;

    let mut results = Vec::new();
    for t in &targets {
        results.push(run_target(&target_dir, t, secs)?);
    }
    eprintln!("\nfuzzing, {secs} s per target:");
    eprintln!(
        "{:<16} {:>12} {:>9} {:>7} {:>7} {:>8} {:>9}  crashes",
        "target", "execs", "exec/s", "cov", "ft", "corpus", "peak MB"
    );
    for r in &results {
        eprintln!(
            "{:<16} {:>12} {:>9} {:>7} {:>7} {:>8} {:>9}  {}",
            r.target,
            r.execs,
            r.execs_per_sec,
            r.cov,
            r.ft,
            r.corpus,
            r.peak_rss_mb,
            r.crashes.len()
        );
    }
    let crashed: Vec<&RunResult> = results.iter().filter(|r| !r.crashes.is_empty() || !r.exited_ok).collect();
    if !crashed.is_empty() {
        for r in &crashed {
            for c in &r.crashes {
                eprintln!("\n{}: {}", r.target, c.display());
                eprintln!("{}", hex_dump(&fs::read(c).unwrap_or_default()));
                eprintln!(
                    "reproduce: {} {}",
                    target_dir.join("x86_64-unknown-linux-gnu/release").join(&r.target).display(),
                    c.display()
                );
            }
        }
        bail!("fuzzing found crashes in: {}", crashed.iter().map(|r| r.target.as_str()).collect::<Vec<_>>().join(", "));
    }
    Ok(())
}

pub fn nightly_available() -> bool {
    Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn fuzz_target_dir() -> PathBuf {
    // Beside the workspace's own build, never mixed with it (other flags, other toolchain).
    let base = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("target"));
    let base = if base.is_absolute() { base } else { std::env::current_dir().unwrap_or_default().join(base) };
    base.join("fuzz")
}

/// The one build of all targets: release with debug assertions and overflow checks. No
/// sanitizer: the code under test is safe Rust, and on two cores the executions count more.
fn fuzz_args() -> [&'static str; 4] {
    ["--release", "--debug-assertions", "--sanitizer", "none"]
}

fn build(target_dir: &Path) -> Result<()> {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo", "fuzz", "build"])
        .args(fuzz_args())
        .arg("--target-dir")
        .arg(target_dir)
        // The targets need no eBPF programs.
        .env("AYA_BUILD_SKIP", "1")
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_TARGET_DIR");
    sh(&mut cmd)
}

struct RunResult {
    target: String,
    exited_ok: bool,
    execs: u64,
    execs_per_sec: u64,
    cov: u64,
    ft: u64,
    corpus: u64,
    peak_rss_mb: u64,
    crashes: Vec<PathBuf>,
}

fn run_target(target_dir: &Path, target: &str, secs: u64) -> Result<RunResult> {
    let max_len = TARGETS.iter().find(|(n, _)| *n == target).map_or(4096, |(_, l)| *l);
    let corpus = PathBuf::from("fuzz/corpus").join(target);
    let artifacts = PathBuf::from("fuzz/artifacts").join(target);
    fs::create_dir_all(&corpus)?;
    fs::create_dir_all(&artifacts)?;
    let before = list_files(&artifacts);
    let bin = target_dir.join("x86_64-unknown-linux-gnu/release").join(target);
    // The targets' temporary files (session folders, followed captures), removed after the
    // run even when a crash left some behind.
    let tmp = target_dir.join("tmp").join(target);
    fs::create_dir_all(&tmp)?;
    let mut cmd = Command::new(&bin);
    cmd.env("TMPDIR", &tmp)
        .arg(&corpus)
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg(format!("-max_total_time={secs}"))
        .arg(format!("-max_len={max_len}"))
        .arg("-timeout=10")
        .arg("-rss_limit_mb=2048")
        .arg("-print_final_stats=1");
    eprintln!("+ {}", crate::render(&cmd));
    let out = cmd.stderr(Stdio::piped()).output().with_context(|| format!("cannot run {}", bin.display()))?;
    let _ = fs::remove_dir_all(&tmp);
    let log = String::from_utf8_lossy(&out.stderr);
    let log_path = artifacts.join("last-run.log");
    fs::write(&log_path, log.as_bytes())?;
    let crashes: Vec<PathBuf> = list_files(&artifacts)
        .into_iter()
        .filter(|p| !before.contains(p))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| ["crash-", "timeout-", "oom-", "leak-", "slow-unit-"].iter().any(|k| n.starts_with(k)))
        })
        .collect();
    if !out.status.success() {
        // The end of libFuzzer's report says what went wrong.
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        eprintln!("{target} failed ({}); log {}:", out.status, log_path.display());
        for l in tail.into_iter().rev() {
            eprintln!("  {l}");
        }
    }
    let stat = |name: &str| -> u64 {
        log.lines()
            .find_map(|l| l.strip_prefix(&format!("stat::{name}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    // The last status line: "#N  DONE  cov: X ft: Y corp: A/B ...".
    let field = |line: &str, key: &str| -> u64 {
        line.split_whitespace()
            .skip_while(|w| *w != key)
            .nth(1)
            .and_then(|v| v.split('/').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let last = log.lines().rev().find(|l| l.starts_with('#') && l.contains("cov:")).unwrap_or("");
    Ok(RunResult {
        target: target.to_string(),
        exited_ok: out.status.success(),
        execs: stat("number_of_executed_units"),
        execs_per_sec: stat("average_exec_per_sec"),
        cov: field(last, "cov:"),
        ft: field(last, "ft:"),
        corpus: field(last, "corp:"),
        peak_rss_mb: stat("peak_rss_mb"),
        crashes,
    })
}

fn list_files(dir: &Path) -> BTreeSet<PathBuf> {
    fs::read_dir(dir).map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default()
}

fn hex_dump(bytes: &[u8]) -> String {
    let mut s = format!("{} bytes", bytes.len());
    for (i, chunk) in bytes.chunks(16).take(16).enumerate() {
        s.push_str(&format!("\n  {:04x}:", i * 16));
        for b in chunk {
            s.push_str(&format!(" {b:02x}"));
        }
        s.push_str("  ");
        s.extend(chunk.iter().map(|&b| if b.is_ascii_graphic() || b == b' ' { b as char } else { '.' }));
    }
    if bytes.len() > 256 {
        s.push_str("\n  …");
    }
    s
}
