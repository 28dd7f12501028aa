//! Every interface: `--iface all` follows interfaces that come and go, `--iface` repeats, a
//! packet seen at two points of the host is analysed once, and nothing stays attached.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tcpviz::capture::decode::decode_frame;
use tcpviz::capture::reader::{CaptureReader, Next};
use tcpviz_privileged_tests::*;

const RETRANSMISSIONS: [&str; 3] = ["retransmission", "fast_retransmission", "spurious_retransmission"];

/// Wire events that a clean link would not give.
fn alarms(events: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    events
        .iter()
        .filter(|e| {
            let kind = e["event"].as_str().unwrap_or("");
            RETRANSMISSIONS.contains(&kind) || kind == "duplicate_ack" || kind == "out_of_order"
        })
        .collect()
}

/// A packet as both tools name it: source, raw sequence and acknowledgement numbers, length.
type Packet = (String, u64, u64, u64);

fn packet_of(e: &serde_json::Value) -> Packet {
    let n = |k: &str| e[k].as_u64().unwrap_or_else(|| panic!("no {k} in {e}"));
    (e["src"].as_str().unwrap().to_string(), n("seq"), n("ack"), n("len"))
}

/// A transfer on a loaded machine is not always clean: the sender may send a tail loss
/// probe, or a router's per-CPU backlogs may forward two segments out of order. So a
/// session's alarms must be exactly those tshark finds in the frames of its capture seen at
/// the vantage points (`filter`), rather than none: a copy analysed twice would add some.
fn assert_alarms_are_tsharks(session: &Path, filter: &str) {
    let ours: BTreeSet<Packet> = alarms(&events(session)).into_iter().map(packet_of).collect();
    let theirs = tshark_alarms(&session.join("capture.pcapng"), filter);
    assert_eq!(ours, theirs, "tcpviz's alarms (left) differ from tshark's at the vantage points (right)");
}

/// The packets tshark flags as retransmissions, out-of-order or duplicate ACKs when it reads
/// only the frames of `capture` that match `filter`.
fn tshark_alarms(capture: &Path, filter: &str) -> BTreeSet<Packet> {
    let view = capture.with_file_name("vantage.pcapng");
    let out = Command::new("tshark")
        .args(["-r", capture.to_str().unwrap(), "-Y", filter, "-w", view.to_str().unwrap()])
        .output()
        .expect("tshark runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let flagged = "tcp.analysis.retransmission || tcp.analysis.fast_retransmission || \
                   tcp.analysis.spurious_retransmission || tcp.analysis.out_of_order || \
                   tcp.analysis.duplicate_ack";
    let out = Command::new("tshark")
        .args(["-r", view.to_str().unwrap(), "-Y", flagged, "-T", "fields", "-E", "separator=,"])
        .args(["-e", "ip.src", "-e", "tcp.seq_raw", "-e", "tcp.ack_raw", "-e", "tcp.len"])
        .output()
        .expect("tshark runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            let n = |i: usize| f[i].parse::<u64>().unwrap_or_else(|_| panic!("field {i} of {line}"));
            (f[0].to_string(), n(1), n(2), n(3))
        })
        .collect()
}

/// The session's record of interface `name`.
fn interface<'a>(summary: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    let all = summary["sections"]["live"]["interfaces"].as_array().expect("interfaces in the live section");
    all.iter().find(|i| i["name"] == name).unwrap_or_else(|| panic!("no {name} in {all:?}"))
}

/// SYNs in `capture.pcapng`, with the name of the interface each was seen on.
fn syns_by_interface(capture: &Path) -> Vec<(String, std::net::IpAddr)> {
    let mut r = CaptureReader::new(File::open(capture).unwrap(), "capture");
    let mut syns = Vec::new();
    while let Ok(Next::Frame(f)) = r.next_frame() {
        if let Ok(s) = decode_frame(&f)
            && s.flags.syn()
            && !s.flags.ack()
        {
            syns.push((f.interface, s.src));
        }
    }
    let name = |id: u32| r.interfaces().get(id as usize).and_then(|i| i.name.clone()).unwrap_or_default();
    syns.into_iter().map(|(id, src)| (name(id), src)).collect()
}

/// `tcpviz live --iface all` in the router: each forwarded packet crosses two of its
/// interfaces and is analysed once; an interface created while the agent runs is watched
/// within a second, one removed is let go, and nothing stays attached.
#[test]
fn every_interface_of_a_router_including_a_new_one() {
    if !privileged() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let session = work.path().join("router");
    let lab = Lab::new();
    lab.offloads_off();
    let mut agent = start_tcpviz([
        "live",
        "--capture",
        "all",
        "--iface",
        "all",
        "--netns",
        &lab.r,
        "--out",
        session.to_str().unwrap(),
    ]);
    let server = lab.server(SERVER_V4, 5201);
    lab.send(SERVER_V4, 5201, 2_000_000);
    let _ = server.wait_with_output();

    // A second link between A and the router, created now; A reaches B through it.
    let (new_r, new_a) = (format!("{}n", lab.veth_ra), format!("{}n", lab.veth_a));
    let created = Instant::now();
    lab.exec(&lab.r, &format!("ip link add {new_r} type veth peer name {new_a} netns {}", lab.a));
    agent.wait_stderr(&format!("note: {new_r} appeared"));
    let attached_after = created.elapsed();
    lab.exec(&lab.r, &format!("ip addr add 10.202.1.254/24 dev {new_r} && ip link set {new_r} up"));
    lab.exec(&lab.a, &format!("ip addr add 10.202.1.1/24 dev {new_a} && ip link set {new_a} up"));
    lab.exec(&lab.a, &format!("ethtool -K {new_a} tso off gso off gro off tx off rx off >/dev/null 2>&1 || true"));
    lab.exec(&lab.a, &format!("ip route add {SERVER_V4}/32 via 10.202.1.254 dev {new_a}"));
    let server = lab.server(SERVER_V4, 5202);
    lab.send(SERVER_V4, 5202, 2_000_000);
    let _ = server.wait_with_output();
    std::thread::sleep(Duration::from_millis(300));
    lab.exec(&lab.r, &format!("ip link del {new_r}"));
    std::thread::sleep(Duration::from_millis(500));
    let programs = programs_held_by(agent.id());
    assert!(programs.len() >= 2, "{programs:?}");
    let (code, _, stderr) = agent.interrupt();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(attached_after < Duration::from_secs(1), "the new interface was watched after {attached_after:?}");

    let summary = summary(&session);
    let live = &summary["sections"]["live"];
    assert_eq!(live["interface"], "all", "{live}");
    // The first transfer crossed the router's two original interfaces, the second its new
    // one and the one towards B.
    for name in [&lab.veth_ra, &lab.veth_rb, &new_r] {
        let i = interface(&summary, name);
        assert!(i["tcp_segments"].as_u64().unwrap() > 100, "{i}");
        assert_eq!(i["hook"].as_str().unwrap().split(' ').next(), Some("tcx"), "{i}");
    }
    let gone = interface(&summary, &new_r);
    assert!(gone["gone_at"].as_i64().unwrap() > gone["attached_at"].as_i64().unwrap(), "{gone}");
    assert!(interface(&summary, &lab.veth_ra)["gone_at"].is_null());
    // The SYN of the connection through the new interface is in the capture, seen there.
    let syns = syns_by_interface(&session.join("capture.pcapng"));
    assert!(
        syns.iter().any(|(name, src)| *name == new_r && src.to_string() == "10.202.1.1"),
        "no SYN from 10.202.1.1 on {new_r}: {syns:?}"
    );
    // Each forwarded packet was seen twice, and analysed once.
    let seen = live["packets_seen_by_tc"].as_u64().unwrap();
    let again = live["packets_seen_again"].as_u64().unwrap();
    assert!(seen > 1000 && again * 2 >= seen * 98 / 100 && again * 2 <= seen, "seen {seen}, seen again {again}");
    // Each direction's vantage point is where it enters the router.
    let on = |name: &str| format!("frame.interface_name == \"{name}\"");
    let at_vantage = format!(
        "(ip.src != {SERVER_V4} && ({} || {})) || (ip.src == {SERVER_V4} && {})",
        on(&lab.veth_ra),
        on(&new_r),
        on(&lab.veth_rb)
    );
    assert_alarms_are_tsharks(&session, &at_vantage);
    for port in [5201, 5202] {
        let flows = summary["flows"].as_array().unwrap();
        assert!(
            flows.iter().any(|f| f["directions"].as_array().unwrap().iter().any(|d| d["dport"] == port)),
            "no flow to port {port}"
        );
    }
    // Nothing stays: none of the agent's programs is loaded, nothing is on the interfaces
    // left.
    assert_eq!(loaded_after(&programs, Duration::from_secs(5)), [] as [u32; 0]);
    for dev in [&lab.veth_ra, &lab.veth_rb] {
        let state = tc_state(&lab, &lab.r, dev);
        assert!(!state.contains("tcpviz"), "{state}");
    }
}

/// `--iface` repeated, in clsact mode, with loopback among them: a packet on loopback
/// leaves and comes back on the same interface, and is analysed once; every qdisc tcpviz
/// added goes at the end.
#[test]
fn repeated_iface_with_loopback_in_clsact_mode() {
    if !privileged() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let session = work.path().join("two");
    let lab = Lab::new();
    lab.offloads_off();
    let agent = start_tcpviz([
        "live",
        "--capture",
        "all",
        "--iface",
        &lab.veth_a,
        "--iface",
        "lo",
        "--tc-mode",
        "clsact",
        "--netns",
        &lab.a,
        "--out",
        session.to_str().unwrap(),
    ]);
    for dev in [lab.veth_a.as_str(), "lo"] {
        let state = tc_state(&lab, &lab.a, dev);
        assert!(state.contains("clsact") && state.contains("tcpviz"), "{state}");
    }
    let local = lab.server_in(&lab.a, "127.0.0.1", 5301);
    lab.send_from(&lab.a, "127.0.0.1", 5301, 2_000_000);
    let _ = local.wait_with_output();
    let remote = lab.server(SERVER_V4, 5302);
    lab.send(SERVER_V4, 5302, 1_000_000);
    let _ = remote.wait_with_output();
    std::thread::sleep(Duration::from_millis(300));
    let (code, _, stderr) = agent.interrupt();
    assert_eq!(code, Some(0), "{stderr}");

    let summary = summary(&session);
    let live = &summary["sections"]["live"];
    assert_eq!(live["interface"], format!("{},lo", lab.veth_a), "{live}");
    assert_eq!(live["tc_mode"], "clsact", "{live}");
    let lo = interface(&summary, "lo");
    let veth = interface(&summary, &lab.veth_a);
    // Segments, not packet records: with GSO still on in the sending stack a veth carries
    // 1 MB as a few dozen large packets.
    assert!(lo["tcp_segments"].as_u64().unwrap() > 100 && veth["tcp_segments"].as_u64().unwrap() > 100, "{lo} {veth}");
    // On loopback every packet is seen leaving, where it is analysed, and coming back (as
    // one packet, or cut in several when it left as a large GSO packet), where it is not.
    let again = live["packets_seen_again"].as_u64().unwrap();
    let on_lo = lo["packets"].as_u64().unwrap();
    assert!(again * 2 >= on_lo && again < on_lo, "{live}");
    // Each direction's vantage point: loopback where packets leave, the veth both ways.
    let at_vantage = format!(
        "(frame.interface_name == \"lo\" && frame.packet_flags_direction == 2) || frame.interface_name == \"{}\"",
        lab.veth_a
    );
    assert_alarms_are_tsharks(&session, &at_vantage);
    for dev in [lab.veth_a.as_str(), "lo"] {
        let state = tc_state(&lab, &lab.a, dev);
        assert!(!state.contains("clsact") && !state.contains("tcpviz"), "{state}");
    }
    assert!(clsact_markers_for(&lab.veth_a).is_empty() && clsact_markers_for("lo").is_empty());
}
