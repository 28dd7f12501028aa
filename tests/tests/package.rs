//! The Debian package of `cargo xtask package`, installed on this machine with `dpkg -i`
//! as an operator would: the installed binary runs, its manual page renders, the bash
//! completion completes, the installed unit verifies, and removal then purge leave nothing.
//!
//! `cargo xtask test` packages the debug build it has just made and names the `.deb` in
//! TCPVIZ_DEB; by hand: `cargo xtask package --debug`, then this test with
//! TCPVIZ_DEB=target/debian/debug/tcpviz_<version>_<arch>.deb.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tcpviz_privileged_tests::privileged;

fn run(cmd: &mut Command) -> Output {
    let o = cmd.output().unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?} failed ({}): {}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn package_status() -> String {
    let o = Command::new("dpkg-query").args(["-W", "-f=${Status}", "tcpviz"]).output().unwrap();
    stdout(&o)
}

/// Purges the package however the test ends, so a failed check leaves no tcpviz installed.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "tcpviz"]).output();
    }
}

#[test]
fn the_package_installs_works_and_purges_clean() {
    if !privileged() {
        return;
    }
    let deb = PathBuf::from(
        std::env::var_os("TCPVIZ_DEB")
            .expect("TCPVIZ_DEB names no package: `cargo xtask test` sets it, or see this file's header"),
    );
    assert!(deb.is_file(), "{} is missing: build it with `cargo xtask package --debug`", deb.display());
    // An operator's own installation is not ours to replace and purge.
    let before = package_status();
    assert!(!before.contains("installed"), "a tcpviz package is already on this machine ({before}): remove it first");

    let _installed = Installed;
    run(Command::new("dpkg").arg("-i").arg(&deb));
    assert!(package_status().contains("install ok installed"), "{}", package_status());
    let files: Vec<PathBuf> =
        stdout(&run(Command::new("dpkg").args(["-L", "tcpviz"]))).lines().map(PathBuf::from).collect();
    for expected in [
        "/usr/bin/tcpviz",
        "/lib/systemd/system/tcpviz.service",
        "/etc/tcpviz/agent.toml",
        "/usr/share/man/man1/tcpviz.1.gz",
        "/usr/share/man/man1/tcpviz-live.1.gz",
        "/usr/share/bash-completion/completions/tcpviz",
        "/usr/share/zsh/vendor-completions/_tcpviz",
        "/usr/share/fish/vendor_completions.d/tcpviz.fish",
    ] {
        assert!(files.iter().any(|f| f == Path::new(expected)), "{expected} is not in the package: {files:?}");
        assert!(Path::new(expected).exists(), "{expected} was not installed");
    }
    let conffiles = stdout(&run(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "tcpviz"])));
    assert!(conffiles.contains("/etc/tcpviz/agent.toml"), "agent.toml is not a conffile: {conffiles}");

    let version = stdout(&run(Command::new("/usr/bin/tcpviz").arg("--version")));
    assert_eq!(version.trim(), format!("tcpviz {}", env!("CARGO_PKG_VERSION")));

    // The page as man renders it, and man finding it by name (man-db, which setup installs).
    let page = stdout(&run(Command::new("man").args(["-l", "/usr/share/man/man1/tcpviz.1.gz"]).env("MANPAGER", "cat")));
    assert!(page.contains("NAME") && page.contains("parse-pcap") && page.contains("live"), "{page}");
    let found = stdout(&run(Command::new("man").args(["-w", "tcpviz-live"])));
    assert_eq!(found.trim(), "/usr/share/man/man1/tcpviz-live.1.gz");

    // bash completes `tcpviz parse-p` to the command, through the installed file.
    let script = r#"source /usr/share/bash-completion/completions/tcpviz
        COMP_WORDS=(tcpviz parse-p); COMP_CWORD=1; COMP_LINE="tcpviz parse-p"; COMP_POINT=${#COMP_LINE}
        _tcpviz tcpviz parse-p tcpviz; printf '%s\n' "${COMPREPLY[@]}""#;
    let completed = stdout(&run(Command::new("bash").args(["--norc", "-c", script])));
    assert_eq!(completed.trim(), "parse-pcap", "bash completion: {completed}");
    // fish finds the installed file on its own and completes the same; zsh parses it and
    // compinit registers it for the command (from its vendor-completions folder).
    let completed = stdout(&run(Command::new("fish").args(["-c", "complete -C 'tcpviz parse-p'"])));
    assert!(completed.starts_with("parse-pcap	"), "fish completion: {completed}");
    run(Command::new("zsh").args(["-n", "/usr/share/zsh/vendor-completions/_tcpviz"]));
    let registered = stdout(&run(Command::new("zsh").args([
        "-f",
        "-c",
        "autoload -U compinit; compinit -u; print -r -- ${_comps[tcpviz]}",
    ])));
    assert_eq!(registered.trim(), "_tcpviz", "zsh completion");

    match Command::new("systemd-analyze").args(["verify", "/lib/systemd/system/tcpviz.service"]).output() {
        Ok(o) => {
            let text = format!("{}{}", stdout(&o), String::from_utf8_lossy(&o.stderr));
            // verify exits 0 on settings it ignores: any line it prints is a finding.
            assert!(o.status.success() && text.trim().is_empty(), "systemd-analyze verify: {text}");
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("systemd-analyze verify skipped: no systemd-analyze (cargo xtask setup installs it)")
        }
        Err(e) => panic!("systemd-analyze: {e}"),
    }

    // Removal keeps the configuration an operator may have edited; purge removes it.
    run(Command::new("dpkg").args(["-r", "tcpviz"]));
    assert!(package_status().contains("config-files"), "{}", package_status());
    assert!(!Path::new("/usr/bin/tcpviz").exists(), "dpkg -r left the binary");
    assert!(Path::new("/etc/tcpviz/agent.toml").exists(), "dpkg -r removed the conffile");
    run(Command::new("dpkg").args(["--purge", "tcpviz"]));
    assert!(!package_status().contains("installed"), "{}", package_status());
    let left: Vec<&PathBuf> = files.iter().filter(|f| f.is_file()).collect();
    assert!(left.is_empty(), "purge left {left:?}");
    assert!(!Path::new("/etc/tcpviz").exists(), "purge left /etc/tcpviz");
}
