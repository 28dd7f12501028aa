//! Attribution on real kernel hooks: a client and a server, each in a cgroup of its own and
//! a network namespace of its own, exchange data through a lossy router while the agent
//! runs. Events and the summary must name the right process, cgroup and hook for the
//! connect side and the accept side, and a connection opened before the agent started must
//! stay unattributed. A server in the watched namespace that closes what it accepts at once
//! must be named too: found by the socket's kernel address, not in /proc; a server in a
//! namespace the agent does not watch by the ends read from its accepted socket.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tcpviz_privileged_tests::*;

const CGROUP2: &str = "/sys/fs/cgroup/unified";
/// The port of the connection opened while the agent runs, and of the one opened before.
const PORT_NEW: u16 = 5311;
const PORT_OLD: u16 = 5312;
/// The port of a server in the watched namespace that closes each connection it accepts.
const PORT_QUICK: u16 = 5313;

/// A cgroup2 directory made for the test; removed at the end (its processes moved out first).
struct Cgroup {
    path: PathBuf,
}

impl Cgroup {
    fn new(name: &str) -> Cgroup {
        let path = Path::new(CGROUP2).join(name);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        Cgroup { path }
    }

    /// Runs `args` in namespace `ns` inside this cgroup (the shell enters the cgroup, then
    /// becomes the command, so the command's pid is the child's).
    fn spawn_in(&self, ns: &str, script: &str) -> Child {
        let procs = self.path.join("cgroup.procs");
        Command::new("sh")
            .args([
                "-c",
                &format!("echo $$ > {} && exec ip netns exec {ns} python3 -c \"$0\"", procs.display()),
                script,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if let Ok(pids) = std::fs::read_to_string(self.path.join("cgroup.procs")) {
            for pid in pids.split_whitespace() {
                let _ = std::fs::write(Path::new(CGROUP2).join("cgroup.procs"), pid);
            }
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// A server that accepts one connection, reads it to its end, and keeps the socket a
/// moment longer (so the agent finds the accepted socket in /proc).
fn server_script(port: u16) -> String {
    format!(
        "import socket,time\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
         s.bind(('{SERVER_V4}',{port}));s.listen(4)\nc,_=s.accept()\nwhile c.recv(1<<16):\n    pass\n\
         time.sleep(2)\nc.close()\n"
    )
}

/// A server on the client's side (the namespace the agent watches) that closes the
/// connection it accepts at once: gone from /proc before the agent could look.
fn quick_server_script(port: u16) -> String {
    format!(
        "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
         s.bind(('{CLIENT_V4}',{port}));s.listen(4)\nc,_=s.accept()\nc.close()\n"
    )
}

/// A client of the quick server: connects, then reads to the end.
fn quick_client_script(port: u16) -> String {
    format!(
        "import socket,time\nfor i in range(100):\n    try:\n        s=socket.create_connection(('{CLIENT_V4}',{port}),timeout=60);break\n    except ConnectionRefusedError:\n        time.sleep(0.1)\n\
         while s.recv(1<<16):\n    pass\ns.close()\n"
    )
}

/// A client that connects at once, waits for `go` to exist, then sends `bytes`.
fn client_script(port: u16, go: &Path, bytes: usize) -> String {
    format!(
        "import socket,time,os\nfor i in range(100):\n    try:\n        s=socket.create_connection(('{SERVER_V4}',{port}),timeout=60);break\n    except ConnectionRefusedError:\n        time.sleep(0.1)\n\
         while not os.path.exists('{}'):\n    time.sleep(0.05)\ns.sendall(b'x'*{bytes})\ns.shutdown(socket.SHUT_WR)\ns.recv(1)\ns.close()\n",
        go.display()
    )
}

fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr).expect("metrics endpoint");
    c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut s = String::new();
    let _ = c.read_to_string(&mut s);
    s
}

fn ended(child: Child, what: &str) {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The flow of a summary whose server port is `port`, and which of its directions the
/// client sends.
fn flow_by_port(summary: &Value, port: u16) -> (&Value, usize) {
    let flow = summary["flows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["directions"].as_array().unwrap().iter().any(|d| d["dport"] == port))
        .unwrap_or_else(|| panic!("no flow to port {port} in {summary}"));
    let from_client = if flow["directions"][0]["dport"] == port { 0 } else { 1 };
    (flow, from_client)
}

fn check_process(p: &Value, pid: u32, cgroup: &str, hook: &str) {
    assert_eq!(p["pid"], pid, "{p}");
    assert_eq!(p["comm"], "python3", "{p}");
    assert_eq!(p["cgroup"], cgroup, "{p}");
    assert_eq!(p["hook"], hook, "{p}");
}

#[test]
fn connect_and_accept_sides_are_attributed_and_older_connections_are_not() {
    if !privileged() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let session = work.path().join("live");
    let lab = Lab::new();
    lab.offloads_off();
    lab.loss(0.05, PORT_NEW);
    lab.loss(0.05, PORT_OLD);
    let top = format!("tcpviz-attrib-{}", std::process::id());
    let _top = Cgroup::new(&top);
    let client_cg = Cgroup::new(&format!("{top}/client"));
    let server_cg = Cgroup::new(&format!("{top}/server"));

    // Opened before the agent: connected and accepted, data sent only once it runs.
    let go_old = work.path().join("go-old");
    let old_server = server_cg.spawn_in(&lab.b, &server_script(PORT_OLD));
    std::thread::sleep(Duration::from_millis(500));
    let old_client = client_cg.spawn_in(&lab.a, &client_script(PORT_OLD, &go_old, 4_000_000));
    std::thread::sleep(Duration::from_millis(800));

    let metrics_addr = "127.0.0.1:19481";
    let agent = start_tcpviz(lab.live_args(&["--out", session.to_str().unwrap(), "--metrics-addr", metrics_addr]));
    let go_new = work.path().join("go-new");
    let server = server_cg.spawn_in(&lab.b, &server_script(PORT_NEW));
    std::thread::sleep(Duration::from_millis(500));
    let client = client_cg.spawn_in(&lab.a, &client_script(PORT_NEW, &go_new, 4_000_000));
    let (client_pid, server_pid) = (client.id(), server.id());
    let quick_server = server_cg.spawn_in(&lab.a, &quick_server_script(PORT_QUICK));
    std::thread::sleep(Duration::from_millis(300));
    let quick_client = client_cg.spawn_in(&lab.b, &quick_client_script(PORT_QUICK));
    let quick_server_pid = quick_server.id();
    std::fs::write(&go_new, "").unwrap();
    std::fs::write(&go_old, "").unwrap();
    ended(client, "client");
    ended(server, "server");
    ended(old_client, "old client");
    ended(old_server, "old server");
    ended(quick_client, "quick client");
    ended(quick_server, "quick server");
    // The metrics refresh every second.
    std::thread::sleep(Duration::from_millis(1500));
    let metrics = scrape(metrics_addr);
    let (code, _, stderr) = agent.interrupt();
    assert_eq!(code, Some(0), "tcpviz live failed: {stderr}");

    let client_cgroup = format!("{top}/client");
    let server_cgroup = format!("{top}/server");
    let connect = "sock:inet_sock_set_state";
    let accept = "syscalls:sys_exit_accept4";

    // Events of the new connection name both ends; retransmissions happened.
    let events = events(&session);
    let new: Vec<&Value> = events.iter().filter(|e| e["dport"] == PORT_NEW || e["sport"] == PORT_NEW).collect();
    let is_retx = |e: &Value| e["event"].as_str().unwrap().contains("retransmi");
    let both_named = |e: &Value| !e["extra"]["src_process"].is_null() && !e["extra"]["dst_process"].is_null();
    assert!(
        new.iter().any(|e| is_retx(e) && both_named(e)),
        "no retransmission naming both ends on the new connection: {new:?}"
    );
    for e in &new {
        let from_client = e["dport"] == PORT_NEW;
        let (src, dst) = (&e["extra"]["src_process"], &e["extra"]["dst_process"]);
        let (client_side, server_side) = if from_client { (src, dst) } else { (dst, src) };
        // An event is annotated when it is written: one that comes before the owner is
        // learned (the handshake's state changes, trouble in the first milliseconds before
        // accept() returns) lacks it. What is named must be right.
        if !client_side.is_null() {
            check_process(client_side, client_pid, &client_cgroup, connect);
        }
        if !server_side.is_null() {
            check_process(server_side, server_pid, &server_cgroup, accept);
        }
    }
    // Events of the old connection name nobody.
    let old: Vec<&Value> = events.iter().filter(|e| e["dport"] == PORT_OLD || e["sport"] == PORT_OLD).collect();
    assert!(!old.is_empty(), "no event on the older connection");
    for e in &old {
        assert!(e["extra"].get("src_process").is_none() && e["extra"].get("dst_process").is_none(), "{e}");
    }

    // An alert on the new connection names its service (the sender's cgroup).
    let alerts: Vec<Value> = std::fs::read_to_string(session.join("alerts.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let new_alerts: Vec<&Value> = alerts.iter().filter(|a| a["dport"] == PORT_NEW || a["sport"] == PORT_NEW).collect();
    assert!(!new_alerts.is_empty(), "no alert on the new connection: {alerts:?}");
    for a in &new_alerts {
        let service = a["service"].as_str().unwrap_or_else(|| panic!("no service in {a}"));
        assert!(service == client_cgroup || service == server_cgroup, "{a}");
        assert!(a["message"].as_str().unwrap().contains(service), "{a}");
    }
    for a in alerts.iter().filter(|a| a["dport"] == PORT_OLD || a["sport"] == PORT_OLD) {
        assert!(a.get("service").is_none(), "{a}");
    }

    // The summary says the same per direction.
    let summary = summary(&session);
    let (flow, c) = flow_by_port(&summary, PORT_NEW);
    check_process(&flow["directions"][c]["process"], client_pid, &client_cgroup, connect);
    check_process(&flow["directions"][1 - c]["process"], server_pid, &server_cgroup, accept);
    // `tcpviz summary` (the terminal table) and summary.html name them too.
    let out = Command::new(tcpviz_bin()).arg("summary").arg("--in").arg(&session).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for who in [format!("python3[{client_pid}] {client_cgroup}"), format!("python3[{server_pid}] {server_cgroup}")] {
        assert!(table.contains(&who), "{who} not in\n{table}");
        let html = std::fs::read_to_string(session.join("summary.html")).unwrap();
        assert!(html.contains(&who), "{who} not in summary.html");
    }
    // Prometheus: the client's service sent the retransmissions.
    let series = format!("tcpviz_service_retransmissions_total{{service=\"{client_cgroup}\"}} ");
    let retx: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
        .trim()
        .parse()
        .unwrap();
    assert!(retx > 0, "{metrics}");
    let (flow, _) = flow_by_port(&summary, PORT_OLD);
    for d in flow["directions"].as_array().unwrap() {
        assert!(d.get("process").is_none(), "{d}");
    }

    // The quick server's accept was joined by the socket's kernel address (its descriptor
    // was closed at once), and the other server's, in a namespace the agent does not
    // watch, by the ends the kernel side read from the accepted socket: not through /proc,
    // whose tables cost a read of every socket of the namespace per accept.
    let (flow, c) = flow_by_port(&summary, PORT_QUICK);
    check_process(&flow["directions"][1 - c]["process"], quick_server_pid, &server_cgroup, accept);
    let log = std::fs::read_to_string(session.join("benchmark.log")).unwrap();
    let figure = |name: &str| -> u64 {
        log.lines()
            .find_map(|l| l.strip_prefix(&format!("attribution.{name}: ")))
            .unwrap_or_else(|| panic!("no attribution.{name} in\n{log}"))
            .trim()
            .parse()
            .unwrap()
    };
    let (accepts, from_socket, from_proc) =
        (figure("accepts"), figure("accepts_from_socket"), figure("accepts_from_proc"));
    assert!(
        accepts >= 2 && from_socket >= 1 && from_socket < accepts && from_proc == 0,
        "accepts {accepts}, from the socket {from_socket}, from /proc {from_proc}"
    );
}
