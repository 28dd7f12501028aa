//! An agent killed with SIGKILL cannot detach. In TCX mode the kernel removes its links with
//! its descriptors; in clsact mode its filters and qdisc stay, and the next agent (or
//! `tcpviz live --cleanup`) must recognise and remove them, and nothing else.

use std::path::Path;
use std::time::Duration;

use tcpviz_privileged_tests::*;

const STARTED: &str = "tcpviz live:";

fn live_args<'a>(lab: &'a Lab, session: &'a Path, mode: &'a str) -> Vec<&'a str> {
    lab.live_args(&["--tc-mode", mode, "--out", session.to_str().unwrap()])
}

fn start(lab: &Lab, session: &Path, mode: &str) -> Agent {
    let mut agent = Agent::start(&live_args(lab, session, mode), &[]);
    assert!(agent.wait_for(STARTED, Duration::from_secs(20)), "the agent did not start: {:?}", agent.stderr);
    agent
}

#[test]
fn a_killed_agent_is_replaced_on_restart_and_nothing_stays_attached() {
    if !privileged() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let lab = Lab::new();
    for mode in ["tcx", "clsact"] {
        let killed = start(&lab, &work.path().join(format!("{mode}-killed")), mode);
        let killed_programs = programs_held_by(killed.pid());
        assert!(killed_programs.len() >= 2, "{mode}: {killed_programs:?}");
        killed.signal(libc::SIGKILL);
        let (status, _, _) = killed.finish();
        assert!(!status.success());
        let state = tc_state(&lab, &lab.a, &lab.veth_a);
        if mode == "tcx" {
            // TCX links and tracepoint attachments die with the process's descriptors, and
            // tcpviz pins nothing: no program of the killed agent stays loaded.
            assert!(!state.contains("tcpviz") && !state.contains("clsact"), "{mode}: {state}");
            let left = loaded_after(&killed_programs, Duration::from_secs(3));
            assert!(left.is_empty(), "{mode}: programs of the killed agent still loaded: {left:?}");
        } else {
            // The situation: both filters and the qdisc stay, their programs loaded.
            assert!(state.contains("clsact") && state.contains("tcpviz_ingress") && state.contains("tcpviz_egress"));
            // The tracepoint programs go (a moment later: RCU), the two TC programs stay.
            let deadline = std::time::Instant::now() + Duration::from_secs(3);
            while still_loaded(&killed_programs).len() > 2 && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            assert_eq!(still_loaded(&killed_programs).len(), 2, "the two TC programs stay loaded");
        }

        // The restart recognises the leftovers, says so, replaces them, and works.
        let session = work.path().join(format!("{mode}-restarted"));
        let restarted = start(&lab, &session, mode);
        let notes = restarted.stderr.join("\n");
        if mode == "clsact" {
            assert!(notes.contains("removed the TC filters a tcpviz that did not stop cleanly left on"), "{notes}");
            assert!(
                notes.contains("tcpviz_ingress on ingress") && notes.contains("tcpviz_egress on egress"),
                "{notes}"
            );
            assert!(notes.contains("the same program as this tcpviz"), "{notes}");
            assert!(notes.contains("removed the clsact qdisc that tcpviz had added"), "{notes}");
            for hook in ["ingress", "egress"] {
                let filters = tc_filters(&lab, &lab.a, &lab.veth_a, hook);
                assert_eq!(filters.len(), 1, "one filter, the new agent's: {filters:?}");
            }
        } else {
            assert!(!notes.contains("removed"), "nothing to remove after a TCX agent: {notes}");
        }
        let restarted_programs = programs_held_by(restarted.pid());
        let server = lab.server(SERVER_V4, 5201);
        lab.send(SERVER_V4, 5201, 200_000);
        let _ = server.wait_with_output();
        std::thread::sleep(Duration::from_millis(300));
        let stderr = restarted.stop();
        let summary = summary(&session);
        // 200 kB are about 140 segments of 1448 bytes (GSO packets count their segments).
        let seen = summary["sections"]["live"]["tcp_segments_seen_by_tc"].as_u64().unwrap();
        assert!(seen > 140, "{mode}: the restarted agent saw {seen} segments");
        assert_eq!(summary["sections"]["live"]["tc_mode"], mode, "{stderr}");

        // After the restart's clean exit nothing of either agent is left.
        let state = tc_state(&lab, &lab.a, &lab.veth_a);
        assert!(!state.contains("tcpviz") && !state.contains("clsact"), "{mode}: {state}");
        let mut all = killed_programs.clone();
        all.extend(restarted_programs);
        let left = loaded_after(&all, Duration::from_secs(3));
        assert!(left.is_empty(), "{mode}: programs still loaded: {left:?}");
        assert!(clsact_markers_for(&lab.veth_a).is_empty(), "{:?}", clsact_markers_for(&lab.veth_a));
    }
}

#[test]
fn cleanup_removes_leftovers_and_leaves_other_filters_and_running_agents_alone() {
    if !privileged() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let lab = Lab::new();
    let cleanup = |extra: &[&str]| {
        let mut args = vec!["live", "--cleanup", "--netns", &lab.a];
        args.extend_from_slice(extra);
        let o = std::process::Command::new(tcpviz_bin()).args(&args).current_dir(work.path()).output().unwrap();
        let (out, err) = (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success(), "{args:?}: {err}");
        assert!(!work.path().join("artifacts").exists(), "--cleanup writes no session");
        out
    };
    let kill = |name: &str| {
        let agent = start(&lab, &work.path().join(name), "clsact");
        let programs = programs_held_by(agent.pid());
        agent.signal(libc::SIGKILL);
        agent.finish();
        programs
    };

    // One interface: the filters and the qdisc the killed agent added go.
    let programs = kill("a");
    let out = cleanup(&["--iface", &lab.veth_a]);
    assert!(out.contains("removed the TC filters") && out.contains("removed the clsact qdisc"), "{out}");
    let state = tc_state(&lab, &lab.a, &lab.veth_a);
    assert!(!state.contains("tcpviz") && !state.contains("clsact"), "{state}");
    assert!(loaded_after(&programs, Duration::from_secs(3)).is_empty());
    let out = cleanup(&["--iface", &lab.veth_a]);
    assert!(out.contains("no leftovers of tcpviz on"), "{out}");

    // Filters of others on the same qdisc: an eBPF program that is not tcpviz's and a
    // classic BPF filter. They stay, and so does the qdisc they use.
    let programs = kill("b");
    attach_foreign_ebpf_filter(&lab, &lab.a, &lab.veth_a, "ingress", 7);
    lab.exec(&lab.a, &format!("tc filter add dev {} egress pref 9 bpf bytecode '1,6 0 0 4294967295,'", lab.veth_a));
    let out = cleanup(&["--iface", "all"]);
    assert!(out.contains("removed the TC filters") && out.contains(&lab.veth_a), "{out}");
    assert!(
        out.contains("kept the clsact qdisc tcpviz had added") && out.contains("other filters use it (2)"),
        "{out}"
    );
    let ingress = tc_filters(&lab, &lab.a, &lab.veth_a, "ingress");
    let egress = tc_filters(&lab, &lab.a, &lab.veth_a, "egress");
    assert!(ingress.len() == 1 && ingress[0].contains("foreign_tc"), "{ingress:?}");
    assert!(egress.len() == 1 && egress[0].contains("bytecode"), "{egress:?}");
    assert!(loaded_after(&programs, Duration::from_secs(3)).is_empty());

    // A running agent's filters are not leftovers (the foreign filters keep the qdisc).
    let running = start(&lab, &work.path().join("c"), "clsact");
    let out = cleanup(&[]);
    assert!(out.contains("left alone: a tcpviz filter") && out.contains("that a running process holds"), "{out}");
    assert!(!out.contains("removed"), "{out}");
    let ingress = tc_filters(&lab, &lab.a, &lab.veth_a, "ingress");
    assert_eq!(ingress.iter().filter(|l| l.contains("tcpviz_ingress")).count(), 1, "{ingress:?}");
    running.stop();
    let ingress = tc_filters(&lab, &lab.a, &lab.veth_a, "ingress");
    assert!(ingress.len() == 1 && ingress[0].contains("foreign_tc"), "{ingress:?}");
}
