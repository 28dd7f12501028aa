//! tcpviz as the systemd unit runs it: a non-root user holding only the unit's
//! capabilities (packaging/tcpviz.service, run here with `setpriv`), and the readiness it
//! sends to a NOTIFY_SOCKET once its hooks are attached.
//!
//! The agent watches an interface of the host's own namespace, as the service does (a
//! named namespace needs CAP_SYS_ADMIN, which the unit does not grant): a veth pair from
//! the host to a lab namespace, with loss on the far side.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tcpviz_privileged_tests::*;

const PORT: u16 = 5391;
const NOBODY: u32 = 65534;

/// The unit's `AmbientCapabilities=`, as setpriv names them (`bpf`, `perfmon`, ...).
fn unit_capabilities() -> Vec<String> {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/tcpviz.service");
    let text = std::fs::read_to_string(unit).unwrap();
    let line = text.lines().find_map(|l| l.strip_prefix("AmbientCapabilities=")).expect("AmbientCapabilities=");
    line.split_whitespace().map(|c| c.trim_start_matches("CAP_").to_lowercase()).collect()
}

/// `setpriv` to nobody with exactly these capabilities (inheritable, ambient, bounding).
fn as_nobody(caps: &[String]) -> Command {
    let set = format!("-all,{}", caps.iter().map(|c| format!("+{c}")).collect::<Vec<_>>().join(","));
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=nobody", "--regid=nogroup", "--init-groups", "--no-new-privs"])
        .arg(format!("--inh-caps={set}"))
        .arg(format!("--ambient-caps={set}"))
        .arg(format!("--bounding-set={set}"));
    cmd
}

/// A folder nobody can use, with a copy of the binary (the build tree may be closed to
/// other users).
fn nobody_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("tcpviz");
    std::fs::copy(tcpviz_bin(), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sessions = dir.path().join("sessions");
    std::fs::create_dir(&sessions).unwrap();
    std::os::unix::fs::chown(&sessions, Some(NOBODY), Some(NOBODY)).unwrap();
    (dir, bin)
}

/// A veth pair from the host namespace to the lab's server namespace B; returns the host
/// interface and the far address. Removed with the namespace (the pair goes with it).
fn host_link(lab: &Lab) -> (String, String) {
    let n = std::process::id();
    let (host_if, net) = (format!("tvh{}", n % 100_000), format!("10.{}.{}", 210 + n % 40, (n / 40) % 250));
    let sh = |cmd: &str| {
        let o = Command::new("sh").args(["-c", cmd]).output().unwrap();
        assert!(o.status.success(), "{cmd}: {}", String::from_utf8_lossy(&o.stderr));
    };
    sh(&format!("ip link add {host_if} type veth peer name tvhp netns {}", lab.b));
    sh(&format!("ip addr add {net}.1/30 dev {host_if} && ip link set {host_if} up"));
    sh(&format!("ethtool -K {host_if} tso off gso off gro off >/dev/null 2>&1 || true"));
    lab.exec(&lab.b, &format!("ip addr add {net}.2/30 dev tvhp && ip link set tvhp up"));
    lab.exec(
        &lab.b,
        &format!(
            "iptables -A INPUT -p tcp --dport {PORT} -m length --length 1000:65535 -m statistic --mode random --probability 0.02 -j DROP"
        ),
    );
    (host_if, format!("{net}.2"))
}

/// The capabilities a running process holds (CapEff of /proc/PID/status), and its uid.
fn effective(pid: u32) -> (u64, u32) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |k: &str| status.lines().find_map(|l| l.strip_prefix(k)).unwrap().trim().to_string();
    let caps = u64::from_str_radix(&field("CapEff:"), 16).unwrap();
    let uid = field("Uid:").split_whitespace().next().unwrap().parse().unwrap();
    (caps, uid)
}

fn cap_bits(caps: &[String]) -> u64 {
    caps.iter()
        .map(|c| match c.as_str() {
            "net_admin" => 12,
            "dac_read_search" => 2,
            "sys_admin" => 21,
            "sys_resource" => 24,
            "perfmon" => 38,
            "bpf" => 39,
            other => panic!("unexpected capability {other}"),
        })
        .fold(0, |bits, b| bits | 1u64 << b)
}

#[test]
fn runs_as_nobody_with_only_the_units_capabilities() {
    if !privileged() {
        return;
    }
    let caps = unit_capabilities();
    let lab = Lab::new();
    let (iface, server_addr) = host_link(&lab);
    let (dir, bin) = nobody_dir();
    let session = dir.path().join("sessions/s");
    let mut agent = Running::start(
        as_nobody(&caps)
            .arg(&bin)
            .args(["live", "--capture", "all", "--iface", &iface, "--events", "-", "--out"])
            .arg(&session),
    );
    agent.wait_stderr(AGENT_READY);
    // setpriv execs the agent: the child is the agent, as nobody, with those capabilities.
    let (eff, uid) = effective(agent.id());
    assert_eq!(uid, NOBODY);
    assert_eq!(eff, cap_bits(&caps), "CapEff {eff:#x}");

    let server = lab.server(&server_addr, PORT);
    let script = format!(
        "import socket\ns=socket.create_connection(('{server_addr}',{PORT}),timeout=60)\n\
         s.sendall(b'x'*3000000)\ns.shutdown(socket.SHUT_WR)\ns.recv(1)\ns.close()\n"
    );
    let o = Command::new("python3").args(["-c", &script]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let _ = server.wait_with_output();
    std::thread::sleep(Duration::from_millis(500));
    let (code, stdout, stderr) = agent.interrupt();
    assert_eq!(code, Some(0), "{stderr}");

    // It analysed: the wire retransmissions of the lossy transfer, and the kernel's.
    let events = events(&session);
    let wire_retx = events
        .iter()
        .filter(|e| e["origin"] == "wire" && e["event"].as_str().is_some_and(|k| k.contains("retransmission")))
        .count();
    let kernel_retx = events.iter().filter(|e| e["event"] == "kernel_retransmit").count();
    assert!(wire_retx > 0 && kernel_retx > 0, "wire {wire_retx}, kernel {kernel_retx}: {stderr}");
    // `--events -`: standard output is the same events, as JSON lines only.
    let streamed: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(streamed.iter().filter(|l| l["record"] == "event").count(), events.len());
    // ... and wrote its session, as nobody.
    let summary = summary(&session);
    // Every byte of the transfer was seen (segments may be GSO super-packets: counted in
    // bytes, not packets).
    let flows = summary["flows"].as_array().unwrap();
    let transfer = flows.iter().find(|f| f["bytes"].as_u64().unwrap_or(0) >= 3_000_000);
    let transfer = transfer.unwrap_or_else(|| panic!("no 3 MB transfer in {summary}"));
    for f in ["summary.json", "events.jsonl", "capture.pcapng", "report.html"] {
        assert_eq!(std::fs::metadata(session.join(f)).unwrap().uid(), NOBODY, "{f}");
    }
    // Both ends are named, although both processes are root's: the connect by the hook's
    // own task, the accept by the accepted socket's kernel address. Nobody cannot read
    // root's /proc/PID/fd (that takes CAP_SYS_PTRACE, which the unit does not grant).
    let hooks: Vec<&str> = transfer["directions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["process"]["hook"].as_str().unwrap_or_else(|| panic!("an end without its process: {transfer}")))
        .collect();
    assert!(hooks.contains(&"sock:inet_sock_set_state") && hooks.contains(&"syscalls:sys_exit_accept4"), "{hooks:?}");
    let log = std::fs::read_to_string(session.join("benchmark.log")).unwrap();
    assert!(log.lines().any(|l| l == "attribution.accepts_from_proc: 0"), "{log}");
}

/// Each capability beyond the three the issue names is there because the agent fails
/// without it. Today that is CAP_DAC_READ_SEARCH, for tracefs (root's, mode 0700): checked
/// where tracefs is so.
#[test]
fn without_dac_read_search_the_agent_cannot_read_tracefs() {
    if !privileged() {
        return;
    }
    let mode = std::fs::metadata("/sys/kernel/tracing").map(|m| m.mode()).unwrap_or(0);
    if mode & 0o005 != 0 {
        eprintln!("skipped: tracefs is open to other users here ({mode:o})");
        return;
    }
    let caps: Vec<String> = unit_capabilities().into_iter().filter(|c| c != "dac_read_search").collect();
    let (dir, bin) = nobody_dir();
    let o = as_nobody(&caps)
        .arg(&bin)
        .args(["live", "--capture", "kernel", "--duration", "1", "--out"])
        .arg(dir.path().join("sessions/s"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    // Not "not mounted": it is mounted, and the message names what is missing.
    assert!(!o.status.success() && stderr.contains("CAP_DAC_READ_SEARCH"), "{stderr}");
}

/// `--netns` needs setns, which needs CAP_SYS_ADMIN, which the unit does not grant: the
/// agent says so instead of a bare "Operation not permitted".
#[test]
fn without_sys_admin_entering_a_namespace_names_the_capability() {
    if !privileged() {
        return;
    }
    let ns = format!("tvz-svc-{}", std::process::id());
    assert!(Command::new("ip").args(["netns", "add", &ns]).status().unwrap().success());
    let (dir, bin) = nobody_dir();
    let o = as_nobody(&unit_capabilities())
        .arg(&bin)
        .args(["live", "--netns", &ns, "--iface", "lo", "--duration", "1", "--out"])
        .arg(dir.path().join("sessions/s"))
        .output();
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    let o = o.unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && stderr.contains("CAP_SYS_ADMIN"), "{stderr}");
}

/// The agent sends READY=1 to NOTIFY_SOCKET once its hooks are attached (its programs are
/// loaded when the datagram arrives), and STOPPING=1 when it stops.
#[test]
fn readiness_reaches_a_notify_socket() {
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut agent = Running::start(
        Command::new(tcpviz_bin())
            .args(["live", "--capture", "kernel", "--out"])
            .arg(dir.path().join("s"))
            .env("NOTIFY_SOCKET", &socket_path),
    );
    let mut buf = [0u8; 1024];
    let n = socket.recv(&mut buf).expect("no READY=1 within 60 s");
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    assert!(!programs_held_by(agent.id()).is_empty(), "READY=1 before the programs were loaded");
    agent.wait_stderr(AGENT_READY);
    let (code, _, stderr) = agent.interrupt();
    assert_eq!(code, Some(0), "{stderr}");
    let n = socket.recv(&mut buf).expect("no STOPPING=1");
    let stopping = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping}");
    assert!(socket.set_nonblocking(true).is_ok() && socket.recv(&mut buf).is_err(), "more than two datagrams");
}
