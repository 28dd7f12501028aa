//! `cargo xtask package [--debug]`: the Debian package, assembled with `dpkg-deb` (always
//! on Debian; cargo-deb would be one more slow `cargo install`).
//!
//! Contents: /usr/bin/tcpviz, the systemd unit, /etc/tcpviz/agent.toml as a conffile, the
//! manual pages and the bash, zsh and fish completions (written by the binary's hidden
//! `generate-assets` from its clap definitions), and the maintainer scripts.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{cargo, sh};

/// Which build goes into the package.
pub enum Build<'a> {
    /// `cargo build --release`: what `cargo xtask package` ships.
    Release,
    /// The debug build with these features, for the install test: `cargo xtask test` has
    /// just built it, so packaging it costs no second build.
    Debug { features: &'a [&'a str] },
}

/// Builds the binary, assembles the package and returns the path of the `.deb`.
pub fn build(build: Build<'_>) -> Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args(["build", "-p", "tcpviz"]);
    let profile = match build {
        Build::Release => {
            cmd.arg("--release");
            "release"
        }
        Build::Debug { features } => {
            if !features.is_empty() {
                cmd.args(["--features", &features.join(",")]);
            }
            "debug"
        }
    };
    sh(&mut cmd)?;
    let bin = Path::new("target").join(profile).join("tcpviz");
    let version = env!("CARGO_PKG_VERSION");
    let arch = output(Command::new("dpkg").arg("--print-architecture"))?;
    let out_dir = PathBuf::from("target/debian").join(profile);
    let name = format!("tcpviz_{version}_{arch}");
    let root = out_dir.join(&name);
    if root.exists() {
        fs::remove_dir_all(&root).with_context(|| format!("cannot clear {}", root.display()))?;
    }

    // The debug information stays in target/ (it is most of a debug build's size); the
    // symbols stay, for readable backtraces.
    let installed_bin = root.join("usr/bin/tcpviz");
    fs::create_dir_all(installed_bin.parent().unwrap())?;
    sh(Command::new("strip").arg("--strip-debug").arg("-o").arg(&installed_bin).arg(&bin))?;
    set_mode(&installed_bin, 0o755)?;

    let assets = out_dir.join("assets");
    let _ = fs::remove_dir_all(&assets);
    sh(Command::new(&bin).arg("generate-assets").arg("--out").arg(&assets))?;
    let man1 = root.join("usr/share/man/man1");
    fs::create_dir_all(&man1)?;
    for page in fs::read_dir(assets.join("man"))? {
        let page = page?.path();
        let dest = man1.join(page.file_name().unwrap());
        fs::copy(&page, &dest)?;
        // -n: no name or time stamp in the header, so the same page gives the same bytes.
        sh(Command::new("gzip").args(["-9n"]).arg(&dest))?;
    }
    let completions = assets.join("completions");
    copy(&completions.join("tcpviz.bash"), &root.join("usr/share/bash-completion/completions/tcpviz"), 0o644)?;
    copy(&completions.join("_tcpviz"), &root.join("usr/share/zsh/vendor-completions/_tcpviz"), 0o644)?;
    copy(&completions.join("tcpviz.fish"), &root.join("usr/share/fish/vendor_completions.d/tcpviz.fish"), 0o644)?;

    // Bookworm's debhelper still installs units under /lib (the /usr move came in trixie);
    // with merged /usr both name the same folder.
    copy(Path::new("packaging/tcpviz.service"), &root.join("lib/systemd/system/tcpviz.service"), 0o644)?;
    copy(Path::new("packaging/agent.toml"), &root.join("etc/tcpviz/agent.toml"), 0o644)?;
    let doc = root.join("usr/share/doc/tcpviz");
    fs::create_dir_all(&doc)?;
    fs::write(doc.join("copyright"), COPYRIGHT)?;

    let debian = root.join("DEBIAN");
    fs::create_dir_all(&debian)?;
    let control = control(version, &arch, &installed_bin, installed_size_kib(&root)?)?;
    fs::write(debian.join("control"), control)?;
    // dpkg keeps an edited agent.toml on upgrade and removal, and removes it on purge.
    fs::write(debian.join("conffiles"), "/etc/tcpviz/agent.toml\n")?;
    for (script, text) in [("postinst", POSTINST), ("prerm", PRERM), ("postrm", POSTRM)] {
        let path = debian.join(script);
        fs::write(&path, text)?;
        set_mode(&path, 0o755)?;
    }
    // The staging tree was made with this process's umask; dpkg-deb wants 0755 folders.
    // (X keeps the execute bits of the binary and the scripts.)
    sh(Command::new("chmod").args(["-R", "u=rwX,go=rX"]).arg(&root))?;

    let deb = out_dir.join(format!("{name}.deb"));
    let mut pack = Command::new("dpkg-deb");
    pack.arg("--root-owner-group");
    // A test package is read once: fast compression. The release one gets dpkg's default (xz).
    if profile == "debug" {
        pack.args(["-Zgzip", "-z1"]);
    }
    sh(pack.arg("--build").arg(&root).arg(&deb))?;
    let deb = fs::canonicalize(&deb)?;
    eprintln!("package: {}", deb.display());
    Ok(deb)
}

const COPYRIGHT: &str = "\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: tcpviz
Source: https://github.com/tcpviz/tcpviz

Files: *
Copyright: tcpviz developers
License: MIT or Apache-2.0
 On Debian systems the Apache License 2.0 is in /usr/share/common-licenses/Apache-2.0.
";

/// Nothing to create for the unit: it runs as a user systemd makes when it starts
/// (DynamicUser=). The service is not enabled or started here: it attaches to every
/// interface by default, which an operator turns on after reading agent.toml.
const POSTINST: &str = "#!/bin/sh
set -e
if [ \"$1\" = configure ] && [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
fi
";

/// On removal, stop the agent (SIGTERM: it detaches its hooks and writes its session) and
/// disable it, so that no link to a removed unit is left in /etc/systemd.
const PRERM: &str = "#!/bin/sh
set -e
if [ \"$1\" = remove ]; then
    if [ -d /run/systemd/system ]; then
        systemctl stop tcpviz.service >/dev/null 2>&1 || true
    fi
    if command -v systemctl >/dev/null; then
        systemctl --no-reload disable tcpviz.service >/dev/null 2>&1 || true
    fi
fi
";

/// Purge also removes the sessions the service wrote (its StateDirectory, which with
/// DynamicUser= lives under /var/lib/private) and the qdisc markers of /run/tcpviz.
const POSTRM: &str = "#!/bin/sh
set -e
if [ \"$1\" = purge ]; then
    rm -rf /var/lib/tcpviz /var/lib/private/tcpviz /run/tcpviz
fi
if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
fi
";

fn control(version: &str, arch: &str, bin: &Path, installed_kib: u64) -> Result<String> {
    // Set DEBFULLNAME and DEBEMAIL (as dch reads them) to sign a package as its maintainer.
    let maintainer = match (std::env::var("DEBFULLNAME"), std::env::var("DEBEMAIL")) {
        (Ok(name), Ok(email)) => format!("{name} <{email}>"),
        _ => "tcpviz developers <tcpviz@users.noreply.github.com>".into(),
    };
    Ok(format!(
        "Package: tcpviz
Version: {version}
Architecture: {arch}
Maintainer: {maintainer}
Installed-Size: {installed_kib}
Depends: {depends}
Section: net
Priority: optional
Homepage: https://github.com/tcpviz/tcpviz
Description: find TCP trouble: retransmissions, loss, reordering, stalls
 tcpviz reads pcap/pcapng captures, follows captures being written, or runs
 as a live eBPF agent (systemd unit tcpviz.service, /etc/tcpviz/agent.toml),
 and reports retransmissions, loss, reordering, stalls and zero windows per
 connection, with HTML dashboards and Prometheus metrics.
",
        depends = depends(bin)?
    ))
}

/// The C libraries the binary links (Rust links everything else in): glibc at the newest
/// symbol version it uses, and libgcc_s for unwinding.
fn depends(bin: &Path) -> Result<String> {
    let symbols = output(Command::new("objdump").arg("-T").arg(bin))?;
    let newest_glibc = symbols
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter_map(|v| {
            let parts: Option<Vec<u32>> = v.split('.').map(|p| p.parse().ok()).collect();
            parts.map(|p| (p, v.to_string()))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, v)| v);
    let libc = match newest_glibc {
        Some(v) => format!("libc6 (>= {v})"),
        None => "libc6".into(),
    };
    Ok(format!("{libc}, libgcc-s1"))
}

fn installed_size_kib(root: &Path) -> Result<u64> {
    let du = output(Command::new("du").args(["-sk", "--exclude=DEBIAN"]).arg(root))?;
    du.split_whitespace().next().and_then(|n| n.parse().ok()).context("du printed no size")
}

fn copy(from: &Path, to: &Path, mode: u32) -> Result<()> {
    fs::create_dir_all(to.parent().unwrap())?;
    fs::copy(from, to).with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    set_mode(to, mode)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))
}

fn output(cmd: &mut Command) -> Result<String> {
    let o = cmd.output().with_context(|| format!("cannot start {}", crate::render(cmd)))?;
    if !o.status.success() {
        bail!("{} failed ({}): {}", crate::render(cmd), o.status, String::from_utf8_lossy(&o.stderr));
    }
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
}
