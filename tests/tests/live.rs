//! The live agent on real kernel traffic between network namespaces with induced loss.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use tcpviz::capture::decode::decode_frame;
use tcpviz::capture::reader::{CaptureReader, Next};
use tcpviz_privileged_tests::*;

fn start_live(lab: &Lab, session: &Path, extra: &[&str]) -> Running {
    let mut args = lab.live_args(&["--out", session.to_str().unwrap()]);
    args.extend_from_slice(extra);
    start_tcpviz(args)
}

fn stop(agent: Running) -> String {
    let (code, _, stderr) = agent.interrupt();
    assert_eq!(code, Some(0), "tcpviz live failed: {stderr}");
    stderr
}

/// (timestamp, seq) of the SYN and FIN segments of a capture, to compare clocks.
fn syn_fin_times(path: &Path) -> Vec<(i64, u32, u16)> {
    let mut r = CaptureReader::new(File::open(path).unwrap(), "x");
    let mut out = Vec::new();
    while let Ok(Next::Frame(f)) = r.next_frame() {
        if let Ok(s) = decode_frame(&f)
            && (s.flags.syn() || s.flags.fin())
        {
            out.push((f.ts, s.seq, s.flags.0));
        }
    }
    out
}

fn count_frames(path: &Path) -> u64 {
    let mut r = CaptureReader::new(File::open(path).unwrap(), "x");
    let mut n = 0;
    while let Ok(Next::Frame(_)) = r.next_frame() {
        n += 1;
    }
    n
}

#[test]
fn kernel_and_wire_agree_on_ipv4_and_ipv6_transfers_with_loss() {
    if !privileged() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let session = work.path().join("live");
    let lab = Lab::new();
    lab.offloads_off();
    lab.loss(0.02, 5201);
    let dump_path = work.path().join("tcpdump.pcap");
    let retrans_before = retrans_segs(&lab, &lab.a);
    let live = start_live(&lab, &session, &["--metrics-addr", "127.0.0.1:19464"]);
    let tcpdump = lab.tcpdump(&dump_path, 128, &[], "tcp");
    let s4 = lab.server(SERVER_V4, 5201);
    lab.send(SERVER_V4, 5201, 4_000_000);
    let s6 = lab.server(SERVER_V6, 5201);
    lab.send(SERVER_V6, 5201, 4_000_000);
    let _ = (s4.wait_with_output(), s6.wait_with_output());
    // The metrics endpoint answers while the agent runs.
    let metrics = {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect("127.0.0.1:19464").expect("metrics endpoint");
        c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut s = String::new();
        let _ = c.read_to_string(&mut s);
        s
    };
    std::thread::sleep(Duration::from_secs(1));
    let dump = interrupt(tcpdump);
    let retrans_after = retrans_segs(&lab, &lab.a);
    let stderr = stop(live);
    assert!(metrics.contains("tcpviz_packets_total") && metrics.contains("tcpviz_lost_events_total"), "{metrics}");

    let events = events(&session);
    let summary = summary(&session);
    let live_section = &summary["sections"]["live"];
    // No record found the rings full. (The kernel may skip a few tracepoint runs when
    // another BPF program runs on the CPU: counted as recursion, see live_losses.rs.)
    assert_eq!(live_section["lost_by_cause"]["packets"]["ring_full"], 0, "{stderr}");
    assert_eq!(live_section["lost_by_cause"]["kernel_events"]["ring_full"], 0, "{stderr}");

    // Kernel retransmissions: present, and the kernel's own counter agrees once the
    // segments of each retransmitted skb are counted (one GSO skb can hold several).
    let kernel: Vec<&serde_json::Value> =
        events.iter().filter(|e| e["event"] == "kernel_retransmit" && e["extra"]["err"].is_null()).collect();
    assert!(!kernel.is_empty(), "no kernel_retransmit events; stderr: {stderr}");
    // The skb's own segment count (tcp_skb_pcount), as the kernel counts TcpRetransSegs.
    let segs = |e: &serde_json::Value| e["extra"]["segments"].as_u64().expect("segments of a retransmitted skb");
    let segments: u64 = kernel.iter().map(|e| segs(e)).sum();
    let delta = retrans_after - retrans_before;
    assert!(delta > 0);
    let tolerance = (delta / 10).max(2);
    assert!(
        segments.abs_diff(delta) <= tolerance,
        "kernel_retransmit covers {segments} segments in {} events, TcpRetransSegs grew by {delta}",
        kernel.len()
    );

    // The wire sees them too, and most are matched to their wire copy.
    let wire_retx = events
        .iter()
        .filter(|e| {
            e["origin"] == "wire"
                && matches!(
                    e["event"].as_str(),
                    Some("retransmission" | "fast_retransmission" | "spurious_retransmission")
                )
        })
        .count();
    assert!(wire_retx > 0);
    let matched = kernel.iter().filter(|e| e["extra"]["wire_frame"].is_u64()).count();
    assert!(matched * 10 >= kernel.len() * 9, "matched {matched} of {} kernel retransmissions", kernel.len());
    let flows = summary["flows"].as_array().unwrap();
    let per_flow_matched: u64 = flows.iter().filter_map(|f| f["kernel"]["matched"].as_u64()).sum();
    assert_eq!(per_flow_matched, matched as u64, "the summary's per-flow matched counts");

    // The kernel's verdict wins: the wire copies of what it resent are retransmissions
    // (Wireshark's rules call many of them out-of-order at this RTT), and the reconciled
    // count is the kernel's own.
    let wire_kind: std::collections::HashMap<u64, &str> = events
        .iter()
        .filter(|e| e["origin"] == "wire" && e["event"] != "lost_segment")
        .filter_map(|e| Some((e["frame"].as_u64()?, e["event"].as_str()?)))
        .filter(|(_, k)| *k != "duplicate_ack")
        .collect();
    let confirmed: u64 = kernel
        .iter()
        .filter(|e| {
            e["extra"]["wire_frame"]
                .as_u64()
                .and_then(|f| wire_kind.get(&f))
                .is_some_and(|k| k.ends_with("retransmission"))
        })
        .map(|e| segs(e))
        .sum();
    let relabelled = events.iter().filter(|e| e["extra"]["wire_verdict"] == "out_of_order").count();
    assert!(
        confirmed * 100 >= segments * 95,
        "{confirmed} of {segments} kernel-retransmitted segments are retransmissions on the wire \
         ({relabelled} relabelled from out_of_order)"
    );
    let reconciled = summary["totals"]["kernel"]["retransmitted_segments"].as_u64().unwrap();
    assert!(
        reconciled.abs_diff(delta) <= tolerance,
        "reconciled {reconciled} retransmitted segments, TcpRetransSegs grew by {delta}; {}",
        summary["totals"]["kernel"]
    );
    eprintln!(
        "kernel: {segments} segments in {} reports, {confirmed} retransmissions on the wire ({relabelled} relabelled \
         from out_of_order); reconciled {reconciled}; TcpRetransSegs +{delta}",
        kernel.len()
    );
    let table = std::process::Command::new(tcpviz_bin()).arg("summary").arg("--in").arg(&session).output().unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("ooo>rtx") && table.contains("retransmitted segments:"), "{table}");
    // IPv4 and IPv6 both.
    assert!(kernel.iter().any(|e| e["src"].as_str().unwrap().contains(':')));
    assert!(kernel.iter().any(|e| !e["src"].as_str().unwrap().contains(':')));

    // The TC program reported what tcpdump saw (segments of GSO packets counted).
    let tcpdump_packets = count_frames(&dump_path);
    assert_eq!(
        live_section["tcp_segments_seen_by_tc"].as_u64().unwrap(),
        tcpdump_packets,
        "tcpdump: {}",
        String::from_utf8_lossy(&dump.stderr)
    );

    // Clocks: SYN and FIN times in capture.pcapng are within a few ms of tcpdump's. A received
    // packet is stamped for tcpdump when the veth queues it to the backlog, and for us when
    // the softirq that drains it reaches TC; on two busy cores that softirq can wait several
    // milliseconds (5.15 ms in one CI run). A clock conversion error is off by the
    // boot-to-realtime offset, seconds at least, so 20 ms still catches it.
    let ours = syn_fin_times(&session.join("capture.pcapng"));
    let theirs = syn_fin_times(&dump_path);
    assert!(ours.len() >= 4);
    for (ts, seq, flags) in &ours {
        let Some((t2, _, _)) = theirs.iter().find(|(_, s, f)| s == seq && f == flags) else { continue };
        assert!((ts - t2).abs() < 20_000_000, "packet seq {seq}: {ts} vs tcpdump {t2}");
    }

    // The recorded capture gives the same wire events offline.
    let offline = work.path().join("offline");
    let o = Command::new(tcpviz_bin())
        .arg("parse-pcap")
        .arg("--quiet")
        .arg(session.join("capture.pcapng"))
        .arg("--out")
        .arg(&offline)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Attribution (the owners of the sockets) and the kernel's verdict are what only the
    // live hooks know; with the wire rules' own verdict put back, the wire analysis must be
    // the same (in frame order: relabelled events left after the kernel's report).
    let mut wire_live: Vec<(u64, String)> = events
        .iter()
        .filter(|e| e["origin"] == "wire")
        .map(|e| {
            let mut e = e.clone();
            let extra = e["extra"].as_object_mut().unwrap();
            extra.remove("src_process");
            extra.remove("dst_process");
            if let Some(verdict) = extra.remove("wire_verdict") {
                e["event"] = verdict;
                e["severity"] = "WARNING".into();
            }
            (e["frame"].as_u64().unwrap_or(0), e.to_string())
        })
        .collect();
    let mut wire_offline: Vec<(u64, String)> = tcpviz_privileged_tests::events(&offline)
        .iter()
        .map(|e| (e["frame"].as_u64().unwrap_or(0), e.to_string()))
        .collect();
    wire_live.sort();
    wire_offline.sort();
    assert_eq!(wire_live.len(), wire_offline.len());
    for (a, b) in wire_live.iter().zip(&wire_offline) {
        assert_eq!(a, b);
    }

    // The session's kernel events join the offline analysis of tcpdump's capture of the
    // same period, with the same matching.
    let joined = work.path().join("joined");
    let o = Command::new(tcpviz_bin())
        .args(["parse-pcap", "--quiet", "--kernel-events"])
        .arg(&session)
        .arg(&dump_path)
        .arg("--out")
        .arg(&joined)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let joined_summary = tcpviz_privileged_tests::summary(&joined);
    let sum = |k: &str| -> u64 {
        joined_summary["flows"].as_array().unwrap().iter().filter_map(|f| f["kernel"][k].as_u64()).sum()
    };
    assert_eq!(sum("kernel_retransmissions"), kernel.len() as u64);
    assert!(
        sum("matched") * 10 >= sum("kernel_retransmissions") * 9,
        "offline join matched {} of {}",
        sum("matched"),
        sum("kernel_retransmissions")
    );
    assert!(sum("wire_retransmissions") > 0);

    // Nothing of tcpviz stays attached.
    let state = tc_state(&lab, &lab.a, &lab.veth_a);
    assert!(!state.contains("tcpviz") && !state.contains("clsact"), "{state}");
    assert!(tcpviz_programs().is_empty(), "{:?}", tcpviz_programs());
}

#[test]
fn wire_packets_from_a_capture_being_written_beside_the_kernel_hooks() {
    if !privileged() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let session = work.path().join("live");
    let lab = Lab::new();
    lab.offloads_off();
    lab.loss(0.03, 5201);
    let dump_path = work.path().join("growing.pcap");
    let tcpdump = lab.tcpdump(&dump_path, 128, &[], "tcp");
    // No --iface: the wire comes from the file tcpdump writes, the kernel from the hooks.
    let live = start_tcpviz([
        "live",
        "--netns",
        &lab.a,
        "--pcap-path",
        dump_path.to_str().unwrap(),
        "--out",
        session.to_str().unwrap(),
    ]);
    let server = lab.server(SERVER_V4, 5201);
    lab.send(SERVER_V4, 5201, 4_000_000);
    let _ = server.wait_with_output();
    std::thread::sleep(Duration::from_secs(1));
    let tcpdump_said = String::from_utf8_lossy(&interrupt(tcpdump).stderr).into_owned();
    let stderr = stop(live);
    let events = events(&session);
    // A retransmission the kernel failed to send (`err`, kernels since 6.17: a full qdisc
    // or device queue on a loaded machine) has no wire copy to match.
    let failed = events.iter().filter(|e| e["event"] == "kernel_retransmit" && !e["extra"]["err"].is_null()).count();
    let kernel: Vec<_> =
        events.iter().filter(|e| e["event"] == "kernel_retransmit" && e["extra"]["err"].is_null()).collect();
    assert!(!kernel.is_empty(), "{stderr}");
    assert!(events.iter().any(|e| e["origin"] == "wire" && e["event"] == "retransmission"));
    let summary = tcpviz_privileged_tests::summary(&session);
    assert!(summary["sources"].as_array().unwrap().iter().any(|s| s.as_str().unwrap().ends_with("growing.pcap")));
    let matched = kernel.iter().filter(|e| e["extra"]["wire_frame"].is_u64()).count();
    let unmatched: Vec<String> = kernel
        .iter()
        .filter(|e| !e["extra"]["wire_frame"].is_u64())
        .take(5)
        .map(|e| format!("{} seq {} len {}", e["ts"], e["seq"], e["len"]))
        .collect();
    assert!(
        matched * 10 >= kernel.len() * 9,
        "matched {matched} of {} ({failed} failed retransmissions left out; unmatched: {unmatched:?}); \
         tcpdump said: {tcpdump_said}; the agent said: {stderr}; live section: {}",
        kernel.len(),
        summary["sections"]["live"]
    );
    assert!(!session.join("capture.pcapng").exists(), "no TC capture without --iface");
    assert_eq!(summary["sections"]["live"]["capture"], "file", "the wire view is the file");
}

#[test]
fn ring_buffer_overflow_is_counted_and_the_agent_keeps_running() {
    if !privileged() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let session = work.path().join("live");
    let lab = Lab::new();
    // A 4 KiB ring holds about 26 packet records: a burst overflows it.
    let live = start_live(&lab, &session, &["--ring-bytes", "4096"]);
    let server = lab.server(SERVER_V4, 5201);
    lab.send(SERVER_V4, 5201, 20_000_000);
    let _ = server.wait_with_output();
    std::thread::sleep(Duration::from_millis(500));
    let stderr = stop(live);
    let summary = summary(&session);
    let live_section = &summary["sections"]["live"];
    let lost = live_section["packets_lost"].as_u64().unwrap();
    assert!(lost > 0, "no loss counted: {live_section}");
    assert!(stderr.contains("records lost"), "{stderr}");
    assert_eq!(
        live_section["lost_events"].as_u64().unwrap(),
        lost + live_section["kernel_events_lost"].as_u64().unwrap()
    );
    let bench = std::fs::read_to_string(session.join("benchmark.log")).unwrap();
    assert!(bench.contains(&format!("lost.packets: {lost}")), "{bench}");
    // It went on analysing what it did get.
    assert!(summary["totals"]["packets"].as_u64().unwrap() > 0);
    let seen = live_section["packets_seen_by_tc"].as_u64().unwrap();
    assert_eq!(summary["totals"]["packets"].as_u64().unwrap() + lost, seen);
}

#[test]
fn clsact_mode_and_a_crash_leave_nothing_attached() {
    if !privileged() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let lab = Lab::new();
    // Normal run in clsact mode: the qdisc tcpviz added is removed.
    let live = start_live(&lab, &work.path().join("a"), &["--tc-mode", "clsact"]);
    let during = tc_state(&lab, &lab.a, &lab.veth_a);
    assert!(during.contains("clsact") && during.contains("tcpviz"), "{during}");
    stop(live);
    let after = tc_state(&lab, &lab.a, &lab.veth_a);
    assert!(!after.contains("clsact") && !after.contains("tcpviz"), "{after}");

    // A panic in the agent still detaches everything.
    for mode in ["tcx", "clsact"] {
        let session = work.path().join(format!("crash-{mode}"));
        let child = Command::new(tcpviz_bin())
            .args(lab.live_args(&["--tc-mode", mode, "--out"]))
            .arg(&session)
            .env("TCPVIZ_TEST_PANIC_AFTER_PACKETS", "3")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(2000));
        let server = lab.server(SERVER_V4, 5201);
        lab.send(SERVER_V4, 5201, 100_000);
        let _ = server.wait_with_output();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains("panicked"), "{mode}: {stderr}");
        let state = tc_state(&lab, &lab.a, &lab.veth_a);
        assert!(!state.contains("tcpviz") && !state.contains("clsact"), "{mode}: {state}");
        // The kernel frees the programs a moment after the process is gone (RCU).
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while !tcpviz_programs().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(tcpviz_programs().is_empty(), "{mode}: {:?}", tcpviz_programs());
    }
}

#[test]
fn clear_errors_for_a_missing_interface_or_namespace() {
    if !privileged() {
        return;
    }
    let lab = Lab::new();
    let work = tempfile::tempdir().unwrap();
    let o = Command::new(tcpviz_bin())
        .args(["live", "--iface", "nosuchif0", "--netns", &lab.a, "--duration", "1", "--out"])
        .arg(work.path().join("s"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("no interface nosuchif0") && err.contains(&lab.a), "{err}");
    let o = Command::new(tcpviz_bin())
        .args(["live", "--iface", "lo", "--netns", "tvz-no-such-ns", "--duration", "1", "--out"])
        .arg(work.path().join("s2"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("tvz-no-such-ns") && err.contains("ip netns list"), "{err}");
    // Without privileges: a one-line message with the fix.
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"])
        .arg(tcpviz_bin())
        .args(["live", "--iface", "lo", "--duration", "1", "--out", "/tmp"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("needs root"), "{err}");
}

/// BPF_PROG_TEST_RUN with crafted frames: the snapshot decodes to the same segment as the
/// offline path decodes the frame itself.
#[test]
fn classifier_snapshots_decode_like_the_offline_path() {
    use aya::maps::{Array, RingBuf};
    use aya::programs::{ProgramError, SchedClassifier, TestRun, TestRunOptions};
    use tcpviz::capture::frame::{Frame, LinkType};
    use tcpviz_common::{AgentConfig, PacketRecord};

    if !privileged() {
        return;
    }
    let mut ebpf = aya::Ebpf::load(tcpviz::ebpf::object().expect("built with the eBPF programs")).unwrap();
    {
        let mut config: Array<_, AgentConfig> = Array::try_from(ebpf.map_mut("CONFIG").unwrap()).unwrap();
        config.set(0, AgentConfig { wakeup_bytes: 1, ..Default::default() }, 0).unwrap();
    }
    let prog: &mut SchedClassifier = ebpf.program_mut("tcpviz_egress").unwrap().try_into().unwrap();
    prog.load().unwrap();
    let build = |payload: &[u8], v6: bool| {
        let mut out = Vec::new();
        let eth = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let opts = [
            etherparse::TcpOptionElement::MaximumSegmentSize(1460),
            etherparse::TcpOptionElement::SelectiveAcknowledgement((1, 2), [Some((3, 4)), Some((5, 6)), None]),
            etherparse::TcpOptionElement::Timestamp(7, 8),
        ];
        if v6 {
            eth.ipv6([0xfd; 16], [0xfe; 16], 64)
                .tcp(4000, 443, 77, 1000)
                .ack(55)
                .options(&opts)
                .unwrap()
                .write(&mut out, payload)
                .unwrap();
        } else {
            eth.ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                .tcp(4000, 443, 77, 1000)
                .ack(55)
                .options(&opts)
                .unwrap()
                .write(&mut out, payload)
                .unwrap();
        }
        out
    };
    let frames = [build(b"", false), build(&[7u8; 1400], false), build(&[9u8; 900], true)];
    for frame in &frames {
        let r = prog.test_run(TestRunOptions { data_in: Some(frame), ..Default::default() });
        let r: Result<_, ProgramError> = r;
        assert_eq!(r.unwrap().return_value as i32, -1, "TC_ACT_UNSPEC: the packet's fate is never changed");
    }
    // A UDP frame is not copied.
    let mut udp = Vec::new();
    etherparse::PacketBuilder::ethernet2([0; 6], [0; 6])
        .ipv4([1, 1, 1, 1], [2, 2, 2, 2], 9)
        .udp(1, 2)
        .write(&mut udp, b"x")
        .unwrap();
    prog.test_run(TestRunOptions { data_in: Some(&udp), ..Default::default() }).unwrap();

    let mut ring = RingBuf::try_from(ebpf.take_map("PACKETS").unwrap()).unwrap();
    let mut snaps: Vec<PacketRecord> = Vec::new();
    while let Some(item) = ring.next() {
        snaps.push(tcpviz_common::decode::packet(&item).unwrap());
    }
    assert_eq!(snaps.len(), frames.len(), "one snapshot per TCP frame, none for UDP");
    for (snap, frame) in snaps.iter().zip(&frames) {
        assert_eq!(snap.orig_len as usize, frame.len());
        assert_eq!(snap.snap_len as usize, frame.len().min(tcpviz_common::SNAP_LEN));
        let mk = |data: &'static [u8]| Frame {
            ts: 1,
            link_type: LinkType::ETHERNET,
            data,
            orig_len: frame.len() as u32,
            interface: 0,
            number: 1,
            direction: None,
        };
        let snap_data: &'static [u8] = Box::leak(snap.data[..snap.snap_len as usize].to_vec().into_boxed_slice());
        let full: &'static [u8] = Box::leak(frame.clone().into_boxed_slice());
        let from_snapshot = decode_frame(&mk(snap_data)).unwrap();
        let from_frame = decode_frame(&mk(full)).unwrap();
        assert_eq!(from_snapshot.payload_len, from_frame.payload_len);
        assert_eq!(
            (from_snapshot.seq, from_snapshot.ack, from_snapshot.options),
            (from_frame.seq, from_frame.ack, from_frame.options)
        );
        assert_eq!(from_snapshot.src, from_frame.src);
    }
    let lens: BTreeSet<u32> = snaps.iter().map(|s| s.orig_len).collect();
    assert_eq!(lens.len(), 3);
}
