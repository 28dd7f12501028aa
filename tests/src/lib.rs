//! Helpers for the privileged tests: a network-namespace lab that is always removed.
//!
//! ```text
//!  client ns (A) --vethA/vethRA-- router ns (R) --vethRB/vethB-- server ns (B)
//!  10.201.1.1, fd20:1::1                                       10.201.2.2, fd20:2::2
//! ```
//! Loss is injected with `iptables -m statistic` in the router's FORWARD chain (netem is not
//! in this kernel; a drop in the sender's own OUTPUT chain is reported to TCP and resent at
//! once, so it would show no loss on the wire).

use std::io::{BufRead, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const CLIENT_V4: &str = "10.201.1.1";
pub const SERVER_V4: &str = "10.201.2.2";
pub const CLIENT_V6: &str = "fd20:1::1";
pub const SERVER_V6: &str = "fd20:2::2";

/// True when the tests can run: root, with `ip netns`.
pub fn privileged() -> bool {
    let root = tcpviz_common::privilege::is_root();
    if !root {
        eprintln!("skipped: needs root (run `cargo xtask test` as root)");
    }
    root
}

/// How to build the binary these tests run.
const BUILD_IT: &str = "cargo build -p tcpviz --features test-hooks";

pub fn tcpviz_bin() -> PathBuf {
    // Depending on the tcpviz package builds its library, not its binary: `cargo xtask test`
    // (or BUILD_IT) builds that first, into the folder above this test's.
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let bin = dir.join("tcpviz");
    assert!(bin.is_file(), "{} is missing: build it with `{BUILD_IT}`", bin.display());
    // The tests drive the agent through its test hooks (a tiny ring, a pause at a named
    // point, a panic), which a binary built without them lacks: its hidden flag is unknown.
    static HOOKS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let hooks = *HOOKS.get_or_init(|| {
        Command::new(&bin)
            .args(["live", "--ring-bytes", "4096", "--help"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    assert!(hooks, "{} was built without the test hooks: build it with `{BUILD_IT}`", bin.display());
    bin
}

/// A capture of the workspace's `samples/` folder.
pub fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples").join(name)
}

#[path = "../../tcpviz-userspace/tests/common/running.rs"]
mod running;
pub use running::Running;

#[path = "../../tcpviz-userspace/tests/common/pcap_records.rs"]
mod pcap_records;
pub use pcap_records::{HalfWritten, Pcap, read_pcap};

mod kernel_objects;
pub use kernel_objects::*;

/// Waits until `path` holds a line (panics after 30 s).
pub fn wait_for_a_line(path: &Path) {
    let start = Instant::now();
    while std::fs::read_to_string(path).map(|t| t.lines().count()).unwrap_or(0) == 0 {
        assert!(start.elapsed() < Duration::from_secs(30), "nothing written to {}", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) static NEXT: AtomicU32 = AtomicU32::new(0);

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

pub(crate) fn run(args: &[&str]) -> Output {
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

    /// Starts a capture tool in the client's namespace (`args` is its whole command line) and
    /// gives it a second to open the interface.
    pub fn capture_tool(&self, args: &[&str]) -> Child {
        let child = self.spawn(&self.a, args);
        std::thread::sleep(std::time::Duration::from_secs(1));
        child
    }

    /// Limits what the router forwards towards the server to `mbit` Mbit/s (tbf: real
    /// queueing, tail drops past the queue).
    pub fn rate_limit(&self, mbit: u32) {
        self.exec(
            &self.r,
            &format!("tc qdisc add dev {} root tbf rate {mbit}mbit burst 32kbit latency 200ms", self.veth_rb),
        );
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
        self.server_in(&self.b, addr, port)
    }

    /// A server in namespace `ns` that reads one connection to its end.
    pub fn server_in(&self, ns: &str, addr: &str, port: u16) -> Child {
        let script = format!(
            "import socket\ns=socket.socket(socket.AF_INET6 if ':' in '{addr}' else socket.AF_INET)\n\
             s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('{addr}',{port}));s.listen(1)\n\
             c,_=s.accept()\nwhile c.recv(1<<16):\n    pass\nc.close()\n"
        );
        let child = self.spawn(ns, &["python3", "-c", &script]);
        std::thread::sleep(std::time::Duration::from_millis(400));
        child
    }

    /// A server in B that reads one connection slowly: `chunk` bytes every `gap_ms`, with a
    /// receive buffer of `rcvbuf` bytes (a slow reader: the sender waits on its window).
    pub fn slow_server(&self, addr: &str, port: u16, rcvbuf: usize, chunk: usize, gap_ms: u64) -> Child {
        let script = format!(
            "import socket,time\ns=socket.socket(socket.AF_INET6 if ':' in '{addr}' else socket.AF_INET)\n\
             s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
             s.setsockopt(socket.SOL_SOCKET,socket.SO_RCVBUF,{rcvbuf})\ns.bind(('{addr}',{port}));s.listen(1)\n\
             c,_=s.accept()\nwhile c.recv({chunk}):\n    time.sleep({gap_ms}/1000)\nc.close()\n"
        );
        let child = self.spawn(&self.b, &["python3", "-c", &script]);
        std::thread::sleep(std::time::Duration::from_millis(400));
        child
    }

    /// Sends `bytes` from A to the server and closes.
    pub fn send(&self, addr: &str, port: u16, bytes: usize) {
        self.send_from(&self.a, addr, port, bytes)
    }

    /// Sends `bytes` from namespace `ns` to the server and closes. A server still starting on
    /// a loaded machine refuses the first tries: they are repeated for up to 10 s.
    pub fn send_from(&self, ns: &str, addr: &str, port: u16, bytes: usize) {
        self.exec(ns, &Self::send_command(addr, port, bytes));
    }

    /// Sends `bytes` from A to the server with the sender kept on CPU 0. A veth delivers on
    /// the sending CPU's backlog, so a sender that moves between CPUs mid-transfer (as on a
    /// busy machine) reorders its own segments: trouble a test of a healthy connection must
    /// not make itself.
    pub fn send_on_one_cpu(&self, addr: &str, port: u16, bytes: usize) {
        self.exec(&self.a, &format!("taskset -c 0 {}", Self::send_command(addr, port, bytes)));
    }

    fn send_command(addr: &str, port: u16, bytes: usize) -> String {
        Self::client_command(addr, port, &format!("s.sendall(b'x'*{bytes})\n"))
    }

    /// A python client that connects to the server (a server still starting on a loaded
    /// machine refuses the first tries: they are repeated for up to 10 s), runs `body` with
    /// the socket as `s`, then closes its side and waits for the server's end.
    fn client_command(addr: &str, port: u16, body: &str) -> String {
        let script = format!(
            "import socket,time\nfor i in range(100):\n    try:\n        s=socket.create_connection(('{addr}',{port}),timeout=60);break\n    except ConnectionRefusedError:\n        time.sleep(0.1)\n\
             {body}s.shutdown(socket.SHUT_WR)\ns.recv(1)\ns.close()\n"
        );
        format!("python3 -c \"{script}\"")
    }

    /// Sends `bursts` writes of `bytes` from A to the server, `gap_ms` apart, and closes: an
    /// application that writes in bursts, whose every burst ends in a tail.
    pub fn send_bursts(&self, addr: &str, port: u16, bursts: usize, bytes: usize, gap_ms: u64) {
        let body = format!("for i in range({bursts}):\n    s.sendall(b'x'*{bytes})\n    time.sleep({gap_ms}/1000)\n");
        self.exec(&self.a, &Self::client_command(addr, port, &body));
    }
}

impl Lab {
    /// `tcpviz live` on the client's interface and namespace with every packet copied (what
    /// the tests that count packets need), then `extra`.
    pub fn live_args<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec!["live", "--capture", "all", "--iface", &self.veth_a, "--netns", &self.a];
        args.extend_from_slice(extra);
        args
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

/// What a live agent prints once its hooks are attached.
pub const AGENT_READY: &str = "(Ctrl-C to stop)";

/// Starts `tcpviz ARGS` (a live agent) and waits until it says its hooks are attached: a
/// fixed pause was too short on a loaded machine, and traffic sent before the hooks are in
/// place is traffic the test then misses.
pub fn start_tcpviz<S: AsRef<std::ffi::OsStr>>(args: impl IntoIterator<Item = S>) -> Running {
    let mut agent = Running::start(Command::new(tcpviz_bin()).args(args));
    agent.wait_stderr(AGENT_READY);
    agent
}

/// Sends SIGINT to a child (as Ctrl-C would) and waits for it.
pub fn interrupt(child: Child) -> Output {
    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    child.wait_with_output().unwrap()
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

/// A running tcpviz whose stderr is read line by line as it comes, so that a test can act at
/// the moment the agent reaches a point (its start banner, a test pause).
pub struct Agent {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Lines read so far.
    pub stderr: Vec<String>,
}

impl Agent {
    /// Starts `tcpviz ARGS` with extra environment variables.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Agent {
        let mut child = Command::new(tcpviz_bin())
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Agent { child, lines, stderr: Vec::new() }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until a stderr line contains `needle` (true), or the agent ends or `timeout`
    /// passes (false).
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        if self.stderr.iter().any(|l| l.contains(needle)) {
            return true;
        }
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    self.stderr.push(line);
                    if hit {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
        false
    }

    /// Sends a signal (libc number) to the agent.
    pub fn signal(&self, sig: i32) {
        // SAFETY: a signal to our own child process.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits for the end: exit status, stdout, and all of stderr.
    pub fn finish(mut self) -> (ExitStatus, String, String) {
        let out = self.child.wait_with_output().unwrap();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.stderr.push(line);
        }
        (out.status, String::from_utf8_lossy(&out.stdout).into_owned(), self.stderr.join("\n"))
    }

    /// Stops the agent as Ctrl-C would and checks that it ended well; returns its stderr.
    pub fn stop(self) -> String {
        self.signal(libc::SIGINT);
        let (status, _, stderr) = self.finish();
        assert!(status.success(), "tcpviz live failed ({status}): {stderr}");
        stderr
    }
}

/// A port free on 127.0.0.1 now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The body of `GET path` (HTTP/1.0, so the server closes when done); None unless 200.
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut c = TcpStream::connect(addr).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(c, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    c.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?;
    (status == "200").then(|| body.to_string())
}
