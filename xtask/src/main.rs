//! Developer and setup tasks: `cargo xtask <task>`.
//!
//! - `setup`: installs what is missing (Debian packages, the nightly `rust-src`, bpf-linker).
//!   Running it twice does nothing the second time.
//! - `demo`: setup, release build, analysis of the bundled samples with reports.
//! - `test`: setup, formatting, lints (host and eBPF), unit/golden/corpus tests, and the
//!   privileged namespace tests when run as root. This is what `.ci/run` calls.
//! - `bench`: throughput and memory on a large capture, beside tshark on the same file.
//! - `soak`: memory of the follow mode over a long run.
//! - `bench-live`: cost of the live agent: TC program time per packet, throughput loss.
//! - `report-scale`: the dashboards of a synthetic session of a million events over 2,000
//!   flows (release build): page sizes, time to write them, render time in headless Chromium.

mod bench;
mod bench_live;
mod setup;
mod soak;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    std::env::set_current_dir(&root)?;
    match args.first().map(String::as_str) {
        Some("setup") => setup::run(),
        Some("test") => test(&args[1..]),
        Some("demo") => demo(),
        Some("bench") => bench::run(&args[1..]),
        Some("soak") => soak::run(&args[1..]),
        Some("bench-live") => bench_live::run(&args[1..]),
        Some("report-scale") => report_scale(),
        _ => {
            eprintln!(
                "usage: cargo xtask <task>\n\n  setup               install missing prerequisites (idempotent)\n  demo                set up, build, analyse the bundled samples (and, as root, a live session)\n  test [--corpus DIR] set up and run every check (what CI runs)\n  bench --capture FILE  throughput and memory vs tshark\n  soak [--rounds N]   memory of the follow mode over a long run\n  bench-live [--offloads-off]  cost of the live agent (root)\n  report-scale        dashboards of a million events: sizes and render times"
            );
            bail!("unknown task {:?}", args.first());
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

/// Runs a command, echoing it, failing on a non-zero exit.
pub fn sh(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {}", render(cmd));
    let status = cmd.status().with_context(|| format!("cannot start {}", render(cmd)))?;
    if !status.success() {
        bail!("{} failed ({status})", render(cmd));
    }
    Ok(())
}

pub fn render(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

pub fn is_root() -> bool {
    // The effective uid is in /proc/self/status ("Uid: real effective ...").
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn test(args: &[String]) -> Result<()> {
    let mut corpus: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--corpus" => corpus = Some(PathBuf::from(it.next().context("--corpus needs a folder")?)),
            other => bail!("unknown option {other}"),
        }
    }
    setup::run()?;
    sh(cargo().args(["fmt", "--all", "--", "--check"]))?;
    sh(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    sh(cargo().args(["clippy", "-p", "tcpviz-privileged-tests", "--all-targets", "--", "-D", "warnings"]))?;
    clippy_ebpf()?;
    let mut t = cargo();
    t.arg("test");
    if let Some(dir) = &corpus {
        let dir = std::fs::canonicalize(dir)
            .with_context(|| format!("the corpus folder {} does not exist", dir.display()))?;
        t.env("TCPVIZ_CORPUS", dir);
    }
    sh(&mut t)?;
    if is_root() {
        sh(cargo().args(["test", "-p", "tcpviz-privileged-tests", "--", "--test-threads=1"]))?;
    } else {
        eprintln!("privileged tests skipped: they need root (network namespaces, eBPF)");
    }
    eprintln!("all checks passed");
    Ok(())
}

/// Lints the eBPF crate for its own target, as aya-build compiles it.
fn clippy_ebpf() -> Result<()> {
    let mut cmd = Command::new("rustup");
    cmd.args([
        "run",
        "nightly",
        "cargo",
        "clippy",
        "-p",
        "tcpviz-ebpf",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--target-dir",
        "target/ebpf-clippy",
        "--",
        "-D",
        "warnings",
    ]);
    // The same cfg aya-build passes: aya-ebpf's bindings are chosen by it.
    let arch = std::env::consts::ARCH;
    cmd.env("CARGO_ENCODED_RUSTFLAGS", format!("--cfg=bpf_target_arch=\"{arch}\""))
        .env_remove("RUSTFLAGS")
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    sh(&mut cmd)
}

fn demo() -> Result<()> {
    setup::run()?;
    sh(cargo().args(["build", "--release", "-p", "tcpviz"]))?;
    let bin = PathBuf::from("target/release/tcpviz");
    let mut samples: Vec<PathBuf> = std::fs::read_dir("samples")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("pcap" | "pcapng")))
        .collect();
    samples.sort();
    if samples.is_empty() {
        bail!("no captures in samples/");
    }
    for sample in &samples {
        let stem = sample.file_stem().unwrap().to_string_lossy().into_owned();
        let out = PathBuf::from("artifacts/demo").join(&stem);
        let _ = std::fs::remove_dir_all(&out);
        sh(Command::new(&bin).arg("parse-pcap").arg("--in").arg(sample).arg("--out").arg(&out).arg("--report"))?;
        sh(Command::new(&bin).arg("summary").arg("--in").arg(&out).args(["--top", "5"]))?;
    }
    eprintln!(
        "\nsession folders: artifacts/demo/<sample>/ (events.jsonl, summary.json, benchmark.log, and the \
         dashboards report.html, timeline.html, summary.html: open them in a browser, no network needed)"
    );
    if is_root() {
        demo_live(&bin)?;
    } else {
        eprintln!("(as root, the demo also runs the live agent on a namespace lab with induced loss)");
    }
    Ok(())
}

/// The live side: a namespace lab with 2 % loss in its router, `tcpviz live` on the
/// sender's interface for a few seconds while IPv4 and IPv6 transfers run.
fn demo_live(bin: &std::path::Path) -> Result<()> {
    use tcpviz_privileged_tests::{Lab, SERVER_V4, SERVER_V6};
    let out = PathBuf::from("artifacts/demo/live");
    let _ = std::fs::remove_dir_all(&out);
    let lab = Lab::new();
    lab.offloads_off();
    lab.loss(0.02, 5201);
    eprintln!("\nlive agent on {} in namespace {} (a lab with 2% loss in its router), 8 seconds:", lab.veth_a, lab.a);
    let mut agent = Command::new(bin)
        .args(["live", "--iface", &lab.veth_a, "--netns", &lab.a, "--duration", "8", "--out"])
        .arg(&out)
        .spawn()?;
    std::thread::sleep(std::time::Duration::from_secs(2));
    for addr in [SERVER_V4, SERVER_V6] {
        let server = lab.server(addr, 5201);
        lab.send(addr, 5201, 3_000_000);
        let _ = server.wait_with_output();
    }
    let status = agent.wait()?;
    if !status.success() {
        bail!("tcpviz live failed ({status})");
    }
    eprintln!("live session: {}/", out.display());
    Ok(())
}

/// The million-event dashboard test of `tcpviz-userspace/tests/report.rs`, in release mode
/// (it is ignored in plain `cargo test`): it prints page sizes, the time to write them and
/// the render time of each page in headless Chromium.
fn report_scale() -> Result<()> {
    setup::run()?;
    // The pages need no eBPF programs: skip building them.
    sh(cargo()
        .env("AYA_BUILD_SKIP", "1")
        .args(["test", "--release", "-p", "tcpviz", "--test", "report", "--", "--ignored", "--nocapture"])
        .arg("million_events_render_in_seconds"))
}
