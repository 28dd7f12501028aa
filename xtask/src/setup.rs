//! `cargo xtask setup`: installs what the project needs and is missing. Idempotent.

use std::process::Command;

use anyhow::{Context, Result, bail};

use tcpviz_common::privilege::is_root;

use crate::sh;

/// Debian packages: LLVM 22 to build bpf-linker and to run it; the tools of the tests and
/// of the demo (namespaces, loss, captures, tshark as the reference, a browser for the
/// HTML reports, a Prometheus server and promtool that scrape and lint the agent's `/metrics`;
/// systemd for `systemd-analyze verify` of the unit, util-linux for `setpriv`, which runs
/// the agent as a non-root user with only the unit's capabilities; binutils (strip, objdump)
/// and man-db for `cargo xtask package` and the test that installs the package and reads
/// its manual page).
const PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libllvm22",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "iproute2",
    "iptables",
    "ethtool",
    "tcpdump",
    "tshark",
    // The classic peer of `cargo xtask bench`.
    "tcptrace",
    "iperf3",
    "bpftool",
    "chromium",
    "python3",
    "prometheus",
    "systemd",
    "util-linux",
    "binutils",
    "man-db",
    // The package's zsh and fish completions are checked in the shells themselves.
    "zsh",
    "fish",
];

const BPF_LINKER_VERSION: &str = "0.13.0";
/// `cargo xtask fuzz` (and so `cargo xtask test`) runs the fuzz targets with it.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

pub fn run() -> Result<()> {
    apt_packages()?;
    nightly_rust_src()?;
    other_os_targets()?;
    bpf_linker()?;
    cargo_fuzz()?;
    eprintln!("setup: everything is installed");
    Ok(())
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn apt_packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages: {}. As root: apt-get update && apt-get install -y {}",
            missing.join(" "),
            missing.join(" ")
        );
    }
    sh(Command::new("apt-get").args(["update", "-q"]))?;
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive");
    sh(&mut install)
}

fn nightly_rust_src() -> Result<()> {
    let out = Command::new("rustup").args(["toolchain", "list"]).output().context("rustup is needed")?;
    if !String::from_utf8_lossy(&out.stdout).lines().any(|l| l.starts_with("nightly")) {
        sh(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))?;
    }
    let out = Command::new("rustup").args(["component", "list", "--toolchain", "nightly", "--installed"]).output()?;
    if !String::from_utf8_lossy(&out.stdout).lines().any(|l| l.starts_with("rust-src")) {
        sh(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    }
    Ok(())
}

/// The standard libraries `cargo xtask test` checks the offline commands against: macOS
/// and Windows, where the live agent is absent.
pub const OTHER_OS_TARGETS: [&str; 2] = ["x86_64-apple-darwin", "x86_64-pc-windows-gnu"];

fn other_os_targets() -> Result<()> {
    let out = Command::new("rustup").args(["target", "list", "--installed"]).output().context("rustup is needed")?;
    let installed = String::from_utf8_lossy(&out.stdout).into_owned();
    for target in OTHER_OS_TARGETS {
        if !installed.lines().any(|l| l.trim() == target) {
            sh(Command::new("rustup").args(["target", "add", target]))?;
        }
    }
    Ok(())
}

fn bpf_linker() -> Result<()> {
    let current = Command::new("bpf-linker").arg("--version").output();
    if let Ok(o) = &current
        && String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION)
    {
        return Ok(());
    }
    // Without LLVM_PREFIX the build finds Debian's default LLVM 14 and fails.
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args([
        "install",
        &format!("bpf-linker@{BPF_LINKER_VERSION}"),
        "--locked",
        "--no-default-features",
        "--features",
        "llvm-22",
    ])
    .env("LLVM_PREFIX", "/usr/lib/llvm-22");
    sh(&mut cmd)
}

fn cargo_fuzz() -> Result<()> {
    let current =
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())).args(["fuzz", "--version"]).output();
    if let Ok(o) = &current
        && o.status.success()
        && String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ_VERSION)
    {
        return Ok(());
    }
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["install", &format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"), "--locked"]);
    sh(&mut cmd)
}
