//! What runs tcpviz as a service: the `--config` file as the binary reads it, the default
//! packaging/agent.toml, and the systemd unit (checked by `systemd-analyze verify`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::tcpviz;

fn packaging(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging").join(name)
}

fn live_with_config(toml: &str, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.toml");
    std::fs::write(&file, toml).unwrap();
    tcpviz().args(["live", "--config"]).arg(&file).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn an_unknown_key_names_the_key_and_the_file_and_exits_2() {
    let o = live_with_config("iface = [\"lo\"]\nmetrics_adr = \"127.0.0.1:1\"\n", &[]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains("agent.toml") && e.contains("unknown key `metrics_adr`"), "{e}");
}

#[test]
fn a_bad_value_names_the_flag_and_the_file() {
    let o = live_with_config("capture = \"sometimes\"\n", &[]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains("agent.toml") && e.contains("sometimes") && e.contains("--capture"), "{e}");
}

/// The file's settings are used, and a flag overrides them: checked through two settings
/// the agent rejects before it needs any privilege (more than 8 ports, a ring that is not
/// a power of two), in the order the agent checks them.
#[test]
fn the_file_is_used_and_flags_override_it() {
    let file = "port = [1, 2, 3, 4, 5, 6, 7, 8, 9]\nring-mb = 3\n";
    let o = live_with_config(file, &[]);
    assert!(stderr(&o).contains("at most 8 --port"), "{}", stderr(&o));
    // --port on the command line replaces the file's list: the next check, the file's ring
    // size, is what fails now.
    let o = live_with_config(file, &["--port", "80"]);
    assert!(stderr(&o).contains("power of two"), "{}", stderr(&o));
    assert_eq!(o.status.code(), Some(1));
}

/// A TCPVIZ_* variable overrides the file too: the file's bad window is the error
/// without it, the file's next bad setting with it.
#[test]
fn the_environment_overrides_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.toml");
    std::fs::write(&file, "window = -1.0\nthreshold = 0\n").unwrap();
    let run = |env: Option<&str>| {
        let mut cmd = tcpviz();
        cmd.args(["live", "--config"]).arg(&file).env_remove("TCPVIZ_WINDOW").env_remove("TCPVIZ_THRESHOLD");
        if let Some(v) = env {
            cmd.env("TCPVIZ_WINDOW", v);
        }
        String::from_utf8_lossy(&cmd.output().unwrap().stderr).into_owned()
    };
    let e = run(None);
    assert!(e.contains("--window must be"), "{e}");
    let e = run(Some("30"));
    assert!(e.contains("need 0 < --threshold"), "{e}");
}

/// Every key of the default configuration is a setting with a valid value: with the ring
/// size overridden to an invalid one, the agent gets past the file and fails on the ring.
#[test]
fn the_default_agent_toml_is_valid() {
    let o = tcpviz().args(["live", "--config"]).arg(packaging("agent.toml")).args(["--ring-mb", "3"]).output().unwrap();
    assert!(stderr(&o).contains("power of two"), "{}", stderr(&o));
}

fn unit_text() -> String {
    std::fs::read_to_string(packaging("tcpviz.service")).unwrap()
}

/// `systemd-analyze verify` on the unit, with ExecStart pointed at the binary under test
/// (verify checks that it exists). Returns its output, or None without systemd-analyze.
fn verify(unit: &str) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tcpviz.service");
    std::fs::write(&path, unit.replace("/usr/bin/tcpviz", common::bin())).unwrap();
    let o = match Command::new("systemd-analyze").arg("verify").arg(&path).output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("skipped: no systemd-analyze (cargo xtask setup installs it)");
            return None;
        }
        Err(e) => panic!("systemd-analyze: {e}"),
    };
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    Some(if o.status.success() { text } else { format!("exit {}: {text}", o.status) })
}

#[test]
fn systemd_analyze_verify_passes_on_the_unit() {
    let Some(out) = verify(&unit_text()) else { return };
    // verify exits 0 on settings it ignores: any line it prints is a finding.
    assert!(out.trim().is_empty(), "systemd-analyze verify: {out}");
    // The check can fail: a misspelt setting is reported.
    let broken = verify(&unit_text().replace("Type=notify", "Type=notifyy")).unwrap();
    assert!(broken.contains("notifyy"), "{broken}");
}

#[test]
fn the_unit_is_a_notify_service_restarted_on_failure_without_root() {
    let unit = unit_text();
    let settings: Vec<&str> = unit.lines().map(str::trim).filter(|l| !l.starts_with('#')).collect();
    for wanted in [
        "Type=notify",
        "Restart=on-failure",
        "ExecStart=/usr/bin/tcpviz live --config /etc/tcpviz/agent.toml",
        "NoNewPrivileges=yes",
    ] {
        assert!(settings.contains(&wanted), "{wanted} missing");
    }
    assert!(settings.iter().any(|l| l.starts_with("User=") && *l != "User=root"));
    let caps = |key: &str| -> Vec<&str> {
        let line = settings.iter().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("{key} missing"));
        let mut c: Vec<&str> = line[key.len()..].split_whitespace().collect();
        c.sort();
        c
    };
    let ambient = caps("AmbientCapabilities=");
    assert_eq!(ambient, caps("CapabilityBoundingSet="));
    for cap in ["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"] {
        assert!(ambient.contains(&cap), "{cap}");
    }
    // Root's power is not granted back: each capability beyond the three is documented.
    for cap in &ambient {
        assert!(!["CAP_SYS_ADMIN", "CAP_DAC_OVERRIDE", "CAP_SYS_PTRACE"].contains(cap), "{cap}");
        assert!(unit.lines().any(|l| l.starts_with('#') && l.contains(cap)), "{cap} is not explained in the unit");
    }
}
