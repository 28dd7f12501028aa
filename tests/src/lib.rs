//! Helpers for the privileged tests: a network-namespace lab that is always removed.
//!
//! ```text
//!  client ns (A) --vethA/vethRA-- router ns (R) --vethRB/vethB-- server ns (B)
//!  10.201.1.1, fd20:1::1                                       10.201.2.2, fd20:2::2
//! ```
//! Loss is injected with `iptables -m statistic` in the router's FORWARD chain (netem is not
//! in this kernel; a drop in the sender's own OUTPUT chain is reported to TCP and resent at
//! once, so it would show no loss on the wire).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

pub const CLIENT_V4: &str = "10.201.1.1";
pub const SERVER_V4: &str = "10.201.2.2";
pub const CLIENT_V6: &str = "fd20:1::1";
pub const SERVER_V6: &str = "fd20:2::2";

/// True when the tests can run: root, with `ip netns`.
pub fn privileged() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false);
    if !root {
        eprintln!("skipped: needs root (run `cargo xtask test` as root)");
    }
    root
}

pub fn tcpviz_bin() -> PathBuf {
    // The tests crate builds the binary of the tcpviz package as a dependency; cargo puts it
    // next to this test executable's folder.
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let bin = dir.join("tcpviz");
    assert!(bin.is_file(), "{} is missing: build it with `cargo build -p tcpviz`", bin.display());
    bin
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Three namespaces joined by two veth pairs, removed on drop (also when a test panics).
pub struct Lab {
    pub a: String,
    pub r: String,
    pub b: String,
    /// Interface names: A's, R's towards A, R's towards B, B's.
    pub veth_a: String,
    pub veth_ra: String,
    pub veth_rb: String,
    pub veth_b: String,
}

fn run(args: &[&str]) -> Output {
    let o = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(o.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
    o
}

impl Lab {
    pub fn new() -> Lab {
        let n = (std::process::id() % 10_000) * 10 + NEXT.fetch_add(1, Ordering::SeqCst);
        let lab = Lab {
            a: format!("tvz{n}a"),
            r: format!("tvz{n}r"),
            b: format!("tvz{n}b"),
            veth_a: format!("tv{n}a"),
            veth_ra: format!("tv{n}ra"),
            veth_rb: format!("tv{n}rb"),
            veth_b: format!("tv{n}b"),
        };
        for ns in [&lab.a, &lab.r, &lab.b] {
            run(&["ip", "netns", "add", ns]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        run(&[
            "ip",
            "link",
            "add",
            &lab.veth_a,
            "netns",
            &lab.a,
            "type",
            "veth",
            "peer",
            "name",
            &lab.veth_ra,
            "netns",
            &lab.r,
        ]);
        run(&[
            "ip",
            "link",
            "add",
            &lab.veth_b,
            "netns",
            &lab.b,
            "type",
            "veth",
            "peer",
            "name",
            &lab.veth_rb,
            "netns",
            &lab.r,
        ]);
        let addrs = [
            (&lab.a, &lab.veth_a, "10.201.1.1/24", "fd20:1::1/64"),
            (&lab.r, &lab.veth_ra, "10.201.1.254/24", "fd20:1::fe/64"),
            (&lab.r, &lab.veth_rb, "10.201.2.254/24", "fd20:2::fe/64"),
            (&lab.b, &lab.veth_b, "10.201.2.2/24", "fd20:2::2/64"),
        ];
        for (ns, dev, v4, v6) in addrs {
            run(&["ip", "-n", ns, "addr", "add", v4, "dev", dev]);
            run(&["ip", "-n", ns, "addr", "add", v6, "dev", dev, "nodad"]);
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        run(&["ip", "-n", &lab.a, "route", "add", "default", "via", "10.201.1.254"]);
        run(&["ip", "-n", &lab.b, "route", "add", "default", "via", "10.201.2.254"]);
        run(&["ip", "-n", &lab.a, "-6", "route", "add", "default", "via", "fd20:1::fe"]);
        run(&["ip", "-n", &lab.b, "-6", "route", "add", "default", "via", "fd20:2::fe"]);
        lab.exec(&lab.r, "sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1");
        lab
    }

    /// MTU-sized segments on the wire (no TSO/GSO/GRO super-packets).
    pub fn offloads_off(&self) {
        for (ns, dev) in
            [(&self.a, &self.veth_a), (&self.r, &self.veth_ra), (&self.r, &self.veth_rb), (&self.b, &self.veth_b)]
        {
            let _ = self.sh(ns, &format!("ethtool -K {dev} tso off gso off gro off tx off rx off"));
        }
    }

    /// Runs a shell command in a namespace; panics if it fails.
    pub fn exec(&self, ns: &str, cmd: &str) -> Output {
        let o = self.sh(ns, cmd);
        assert!(o.status.success(), "[{ns}] {cmd}: {}", String::from_utf8_lossy(&o.stderr));
        o
    }

    /// Runs a shell command in a namespace.
    pub fn sh(&self, ns: &str, cmd: &str) -> Output {
        Command::new("ip").args(["netns", "exec", ns, "sh", "-c", cmd]).output().unwrap()
    }

    /// Starts a command in a namespace.
    pub fn spawn(&self, ns: &str, args: &[&str]) -> Child {
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// tcpdump on the client's interface (as root, packet-buffered, immediate mode so that
    /// nothing is lost when it is stopped), writing `path`; `extra` goes before the filter.
    pub fn tcpdump(&self, path: &Path, snaplen: u32, extra: &[&str], filter: &str) -> Child {
        let snap = snaplen.to_string();
        let mut args = vec!["tcpdump", "-Z", "root", "-i", &self.veth_a, "-s", &snap, "-U", "--immediate-mode"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["-w", path.to_str().expect("UTF-8 path"), filter]);
        let child = self.spawn(&self.a, &args);
        std::thread::sleep(std::time::Duration::from_secs(1));
        child
    }

    /// Drops that share of the data segments (>= 1000 bytes) forwarded to `port`.
    pub fn loss(&self, probability: f64, port: u16) {
        for tool in ["iptables", "ip6tables"] {
            self.exec(
                &self.r,
                &format!(
                    "{tool} -A FORWARD -p tcp --dport {port} -m length --length 1000:65535 -m statistic --mode random --probability {probability} -j DROP"
                ),
            );
        }
    }

    /// A server in B that reads one connection to the end.
    pub fn server(&self, addr: &str, port: u16) -> Child {
        let script = format!(
            "import socket\ns=socket.socket(socket.AF_INET6 if ':' in '{addr}' else socket.AF_INET)\n\
             s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('{addr}',{port}));s.listen(1)\n\
             c,_=s.accept()\nwhile c.recv(1<<16):\n    pass\nc.close()\n"
        );
        let child = self.spawn(&self.b, &["python3", "-c", &script]);
        std::thread::sleep(std::time::Duration::from_millis(400));
        child
    }

    /// Sends `bytes` from A to the server and closes.
    pub fn send(&self, addr: &str, port: u16, bytes: usize) {
        let script = format!(
            "import socket\ns=socket.create_connection(('{addr}',{port}),timeout=60)\n\
             s.sendall(b'x'*{bytes})\ns.shutdown(socket.SHUT_WR)\ns.recv(1)\ns.close()\n"
        );
        self.exec(&self.a, &format!("python3 -c \"{script}\""));
    }
}

impl Default for Lab {
    fn default() -> Self {
        Lab::new()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.a, &self.r, &self.b] {
            if let Ok(o) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("kill").arg(pid).status();
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        for ns in [&self.a, &self.r, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Sends SIGINT to a child (as Ctrl-C would) and waits for it.
pub fn interrupt(child: Child) -> Output {
    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    child.wait_with_output().unwrap()
}

/// Namespaces that still exist with a name starting with `prefix` (to check cleanup).
pub fn namespaces_named(prefix: &str) -> Vec<String> {
    let o = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// `Tcp: RetransSegs` of a namespace (/proc/net/snmp).
pub fn retrans_segs(lab: &Lab, ns: &str) -> u64 {
    let o = lab.exec(ns, "cat /proc/net/snmp");
    let text = String::from_utf8_lossy(&o.stdout);
    let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next().expect("Tcp header"), tcp.next().expect("Tcp values"));
    let i = names.split_whitespace().position(|n| n == "RetransSegs").expect("RetransSegs");
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

/// Programs named tcpviz_* loaded in the kernel (`bpftool prog show`).
pub fn tcpviz_programs() -> Vec<String> {
    let o = Command::new("bpftool").args(["prog", "show"]).output().expect("bpftool");
    String::from_utf8_lossy(&o.stdout).lines().filter(|l| l.contains("tcpviz_")).map(str::to_string).collect()
}

/// What TC has on an interface of a namespace: filters, TCX programs, and qdiscs.
pub fn tc_state(lab: &Lab, ns: &str, dev: &str) -> String {
    let mut s = String::new();
    for cmd in [
        format!("tc filter show dev {dev} ingress"),
        format!("tc filter show dev {dev} egress"),
        format!("tc qdisc show dev {dev}"),
        format!("bpftool net show dev {dev}"),
    ] {
        let o = lab.sh(ns, &cmd);
        s.push_str(&format!("$ {cmd}\n{}", String::from_utf8_lossy(&o.stdout)));
    }
    s
}

/// Events of a session, parsed.
pub fn events(session: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(session.join("events.jsonl"))
        .expect("events.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

pub fn summary(session: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(session.join("summary.json")).expect("summary.json")).expect("JSON")
}
