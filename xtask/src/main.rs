//! Developer and setup tasks: `cargo xtask <task>`.
//!
//! - `setup`: installs what is missing (Debian packages, the nightly `rust-src`, bpf-linker,
//!   cargo-fuzz).
//!   Running it twice does nothing the second time.
//! - `demo`: setup, release build, analysis of the bundled samples with reports.
//! - `install [--prefix DIR]`: release build, binary copied to DIR/bin (default ~/.cargo/bin).
//! - `package [--debug]`: the Debian package (binary, unit, config, manual pages,
//!   completions) in target/debian/.
//! - `test`: setup, formatting, lints (host and eBPF), unit/golden/corpus tests, and the
//!   privileged namespace tests when run as root, then 30 s of each fuzz target. This is what
//!   `.ci/run` calls.
//! - `fuzz [--secs N] [TARGET...]`: the cargo-fuzz targets of `fuzz/`, N seconds each.
//! - `bench`: throughput and memory on a large capture, beside tshark on the same file.
//! - `soak`: memory of the follow mode over a long run.
//! - `bench-live`: cost of the live agent: TC program time per packet, throughput loss.
//! - `gen-captures`: synthetic captures for the scale benchmarks (SYN scan, many interleaved
//!   connections, wild sequence numbers).
//! - `report-scale`: the dashboards of a synthetic session of a million events over 2,000
//!   flows (release build): page sizes, time to write them, render time in headless Chromium.

mod bench;
mod bench_live;
mod bench_tui;
mod fuzz;
mod gen_captures;
mod package;
mod setup;
mod soak;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use tcpviz_common::privilege::is_root;

/// Developer and setup tasks of the tcpviz workspace.
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install missing prerequisites (idempotent).
    Setup,
    /// Set up, build, analyse the bundled samples (and, as root, a live session).
    Demo,
    /// Build the release binary and copy it to PREFIX/bin.
    Install {
        /// Installation prefix: the binary goes to PREFIX/bin/tcpviz. The default,
        /// $CARGO_HOME (~/.cargo), is where `cargo install` puts binaries, on PATH after rustup.
        #[arg(long, value_name = "DIR")]
        prefix: Option<PathBuf>,
    },
    /// Build the Debian package (target/debian/<profile>/tcpviz_<version>_<arch>.deb).
    Package {
        /// Package the debug build (fast; for tests), not the release build.
        #[arg(long)]
        debug: bool,
    },
    /// Set up and run every check (what CI runs).
    Test {
        /// A folder of captures for the corpus tests; may be given several times.
        #[arg(long = "corpus", value_name = "DIR")]
        corpus: Vec<PathBuf>,
    },
    /// Run the fuzz targets.
    Fuzz(fuzz::FuzzArgs),
    /// Throughput and memory vs tshark.
    Bench {
        /// Captures to measure (repeat the flag): a million packets or more, e.g. from
        /// ../shared/pcaps/recipes/netns_gen.sh (STEPS=4) or `cargo xtask gen-captures`.
        #[arg(long, value_name = "FILE", required = true)]
        capture: Vec<PathBuf>,
    },
    /// Memory of the follow mode over a long run.
    Soak {
        #[arg(long, value_name = "N", default_value_t = 600)]
        rounds: usize,
    },
    /// Cost of the live agent (root).
    BenchLive {
        /// Turn the veths' offloads off (segments of one MSS, as on the wire).
        #[arg(long)]
        offloads_off: bool,
        /// Pace iperf3 at this many Mbit/s (`-b`): below what the lab carries, a transfer
        /// has no drops, hence no trouble, and the capture policy `troubled` shows the cost
        /// of its healthy path.
        #[arg(long, value_name = "MBIT")]
        pace: Option<u32>,
    },
    /// Dashboards of a million events: sizes and render times.
    ReportScale,
    /// Speed of the follow mode with and without the terminal view (tmux).
    BenchTui {
        /// A capture to follow, e.g. target/captures/interleaved.pcap from gen-captures.
        #[arg(long, value_name = "FILE")]
        capture: PathBuf,
    },
    /// Synthetic captures for the scale benchmarks.
    GenCaptures {
        #[arg(long, value_name = "DIR", default_value = "target/captures")]
        out: PathBuf,
        /// Size factor, in (0, 10]: 0.1 makes each capture a tenth of the size.
        #[arg(long, value_name = "F", default_value_t = 1.0)]
        scale: f64,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    std::env::set_current_dir(&root)?;
    match cli.task {
        Task::Setup => setup::run(),
        Task::Test { corpus } => test(&corpus),
        Task::Demo => demo(),
        Task::Install { prefix } => install(prefix),
        Task::Package { debug } => {
            package::build(if debug { package::Build::Debug { features: &[] } } else { package::Build::Release })
                .map(|_| ())
        }
        Task::Fuzz(args) => fuzz::run(&args),
        Task::Bench { capture } => bench::run(&capture),
        Task::Soak { rounds } => soak::run(rounds),
        Task::BenchLive { offloads_off, pace } => bench_live::run(offloads_off, pace),
        Task::GenCaptures { out, scale } => gen_captures::run(&out, scale),
        Task::ReportScale => report_scale(),
        Task::BenchTui { capture } => bench_tui::run(&capture),
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

pub fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn test(corpus: &[PathBuf]) -> Result<()> {
    // --corpus may be given several times (the captures tcpviz agrees with tshark on, and the
    // ones it must handle next).
    setup::run()?;
    sh(cargo().args(["fmt", "--all", "--", "--check"]))?;
    sh(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    sh(cargo().args(["clippy", "-p", "tcpviz-privileged-tests", "--all-targets", "--", "-D", "warnings"]))?;
    clippy_ebpf()?;
    // The offline commands build on macOS and Windows (checked, not linked: no SDKs here).
    for target in setup::OTHER_OS_TARGETS {
        sh(cargo().args(["check", "-q", "-p", "tcpviz", "--target", target, "--target-dir", "target/other-os"]))?;
    }
    let mut t = cargo();
    t.arg("test");
    if !corpus.is_empty() {
        let dirs = corpus
            .iter()
            .map(|dir| {
                std::fs::canonicalize(dir)
                    .with_context(|| format!("the corpus folder {} does not exist", dir.display()))
            })
            .collect::<Result<Vec<_>>>()?;
        t.env("TCPVIZ_CORPUS", std::env::join_paths(dirs)?);
    }
    sh(&mut t)?;
    if is_root() {
        // The privileged tests run the `tcpviz` binary, which depending on its package does
        // not rebuild: build it here so they never run a stale one, with the hooks they
        // drive it through (never in a release build: `demo` and README's commands).
        sh(cargo().args(["build", "-p", "tcpviz", "--features", "test-hooks"]))?;
        // The package test (tests/tests/package.rs) installs this same debug build, packaged.
        let deb = package::build(package::Build::Debug { features: &["test-hooks"] })?;
        sh(cargo().args(["test", "-p", "tcpviz-privileged-tests", "--", "--test-threads=1"]).env("TCPVIZ_DEB", deb))?;
    } else {
        eprintln!("privileged tests skipped: they need root (network namespaces, eBPF)");
    }
    // Fuzzing needs the nightly toolchain, which setup installs; 30 s per target keeps the
    // cost to one fuzz build and a few minutes.
    let fuzz_args = fuzz::FuzzArgs { secs: 30, corpus: corpus.first().cloned(), targets: Vec::new() };
    if fuzz::nightly_available() {
        fuzz::run(&fuzz_args)?;
    } else {
        eprintln!("fuzzing skipped: it needs the nightly toolchain");
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
    let abs = std::fs::canonicalize(&bin).unwrap_or(bin);
    eprintln!(
        "\nthe tcpviz binary (release build): {0}\nput it on your PATH with: cargo xtask install (to ~/.cargo/bin), or sudo install -m 755 {0} /usr/local/bin/",
        abs.display()
    );
    Ok(())
}

/// `cargo xtask install`: the release binary in PREFIX/bin.
fn install(prefix: Option<PathBuf>) -> Result<()> {
    let prefix = match prefix {
        Some(p) => p,
        None => match std::env::var_os("CARGO_HOME") {
            Some(home) => PathBuf::from(home),
            None => {
                PathBuf::from(std::env::var_os("HOME").context("neither CARGO_HOME nor HOME is set")?).join(".cargo")
            }
        },
    };
    sh(cargo().args(["build", "--release", "-p", "tcpviz"]))?;
    let dest = prefix.join("bin/tcpviz");
    sh(Command::new("install").arg("-Dm755").arg("target/release/tcpviz").arg(&dest))?;
    let dest = std::fs::canonicalize(&dest)?;
    eprintln!("installed: {}", dest.display());
    let bin_dir = dest.parent().unwrap();
    let on_path = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|p| std::fs::canonicalize(p).is_ok_and(|p| p == bin_dir)));
    if !on_path {
        eprintln!("{} is not on your PATH: add it, or run {} directly", bin_dir.display(), dest.display());
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

/// The million-event dashboard test of `tcpviz-userspace/tests/report_scale.rs`, in release mode
/// (it is ignored in plain `cargo test`): it prints page sizes, the time to write them and
/// the render time of each page in headless Chromium.
fn report_scale() -> Result<()> {
    setup::run()?;
    // The pages need no eBPF programs: skip building them.
    sh(cargo()
        .env("AYA_BUILD_SKIP", "1")
        .args(["test", "--release", "-p", "tcpviz", "--test", "report_scale", "--", "--ignored", "--nocapture"])
        .arg("million_events_render_in_seconds"))
}
