//! The end of a live run: flows end, files are flushed, and the summary (with its `live`
//! section) and the benchmark log are written.

use super::*;

/// Flows end, files are flushed, the summary and the benchmark log are written.
pub(super) fn finish(
    mut agent: Agent<'_>,
    rings: &Rings,
    started: Instant,
    signals_at_end: usize,
) -> Result<LiveResult, LiveError> {
    let session = agent.session();
    agent.pipeline.finish(&mut agent.sink).map_err(out_err(session, EVENTS_FILE))?;
    agent.sink.flush().map_err(out_err(session, EVENTS_FILE))?;
    if let Some(c) = agent.capture.as_mut() {
        c.flush().map_err(out_err(session, CAPTURE_FILE))?;
    }
    agent.samples.out.flush().map_err(out_err(session, KERNEL_SAMPLES_FILE))?;
    let (c, losses) = rings.losses(agent.tally.unreadable);
    let opts = agent.inputs.opts;
    let mut src_names = vec![opts.ifaces.label().map(|i| format!("live:{i}")).unwrap_or_default()];
    let (follow_sources, follow_errors) =
        agent.follower.take().map(Follower::into_sources_and_errors).unwrap_or_default();
    src_names.extend(follow_sources);
    src_names.retain(|s| !s.is_empty());
    // What the session read: the packets' bytes on the wire (the TC snapshots hold their headers).
    let bytes = agent.tally.wire_bytes;
    let mut figures = agent.pipeline.figures(src_names.clone(), bytes, started.elapsed().as_secs_f64());
    let alerts_raised = agent.sink.engine.raised;
    let packets_seen = agent.tally.frames + losses.packets();
    let live = live_section(&mut agent, &c, &losses, packets_seen);
    let Agent { pipeline, sink, samples, capture, attribution, .. } = agent;
    let mut summary = pipeline.summary(src_names, follow_errors, bytes);
    for d in summary.flows.iter_mut().flat_map(|f| f.directions.iter_mut()) {
        d.process = sink.owners.get((d.src, d.sport), (d.dst, d.dport)).cloned();
    }
    summary.sections.live = Some(live);
    summary.sections.alerts = Some(AlertsSection { raised: alerts_raised, ..Default::default() });
    let extra = &mut figures.extra;
    extra.insert("lost_events".into(), losses.total().to_string());
    extra.insert("lost.packets".into(), losses.packets().to_string());
    extra.insert("lost.packets.ring_full".into(), losses.packets_ring_full.to_string());
    extra.insert("lost.packets.recursion".into(), losses.packets_recursion.to_string());
    extra.insert("lost.kernel_events".into(), losses.kernel_events().to_string());
    extra.insert("lost.kernel_events.ring_full".into(), losses.events_ring_full.to_string());
    extra.insert("lost.kernel_events.recursion".into(), losses.events_recursion.to_string());
    extra.insert("lost.kernel_events.unreadable".into(), losses.events_unreadable.to_string());
    extra.insert("capture.policy".into(), opts.capture.name().to_string());
    extra.insert(
        "capture.trouble_marks".into(),
        (COUNTER_MARKS_TRACEPOINT..=COUNTER_MARKS_ZERO_WINDOW_SENT).map(|i| c[i as usize]).sum::<u64>().to_string(),
    );
    extra.insert("hook.tc.packets".into(), packets_seen.to_string());
    extra.insert("hook.tc.tcp_segments".into(), agent.tally.segments.to_string());
    for tp in &TRACEPOINTS {
        let seen = c[COUNTER_TRACE_SEEN as usize + tp.index as usize];
        extra.insert(format!("hook.{}:{}", tp.category, tp.name), seen.to_string());
    }
    extra.insert("alerts_raised".into(), alerts_raised.to_string());
    let a = &attribution.counts;
    extra.insert("attribution.connects".into(), a.connects.to_string());
    extra.insert("attribution.accepts".into(), a.accepts.to_string());
    extra.insert("attribution.accepts_from_proc".into(), a.accepts_from_proc.to_string());
    extra.insert("attribution.accepts_from_socket".into(), a.accepts_from_socket.to_string());
    extra.insert("attribution.accepts_unresolved".into(), a.accepts_unresolved.to_string());
    extra.insert("attribution.connects_forgotten".into(), a.connects_forgotten.to_string());
    extra.insert("attribution.cgroups_unknown".into(), a.cgroups_unknown.to_string());
    extra.insert("attribution.owners".into(), sink.owners.len().to_string());
    extra.insert("attribution.owners_reset".into(), sink.owners.resets.to_string());
    extra.insert("attribution.owners_forgotten".into(), sink.owners.forgotten.to_string());
    let files = session_files(&sink, &samples, capture.as_ref());
    report_losses(&files, &mut summary, &mut figures);
    let mut written: Vec<std::path::PathBuf> = files[..2].iter().flat_map(|f| f.paths()).collect();
    written.extend(session.finish_lasting(&mut summary, &figures).0);
    written.extend(files[2..].iter().rev().flat_map(|f| f.paths()));
    Ok(LiveResult { summary, written, losses, signals_at_end })
}

/// The `live` section of summary.json.
fn live_section(agent: &mut Agent<'_>, c: &[u64; COUNTERS], losses: &KernelLosses, packets_seen: u64) -> LiveSection {
    let opts = agent.inputs.opts;
    let kernel_events_by_tracepoint = TRACEPOINTS
        .iter()
        .map(|tp| (format!("{}:{}", tp.category, tp.name), c[COUNTER_TRACE_SEEN as usize + tp.index as usize]))
        .collect();
    // What the wire view is: the TC snapshots under the policy, a capture file another tool
    // writes (`--pcap-path`), or nothing.
    let capture = match (opts.ifaces.any(), &opts.pcap_path) {
        (true, _) => opts.capture.name(),
        (false, Some(_)) => "file",
        (false, None) => CapturePolicy::Kernel.name(),
    };
    let troubled = opts.ifaces.any() && opts.capture == CapturePolicy::Troubled;
    let mut hooks = agent.inputs.hooks.clone();
    hooks.extend(agent.tc.hooks());
    let tcp_ext_after =
        crate::live::netns::in_netns(agent.inputs.counters_ns.as_ref(), crate::live::netstat::read_tcp_ext)
            .unwrap_or_default();
    // The last reading closes the timeline: its readings add up to the run's growth.
    let now = crate::time::ts_to_secs(agent.clock.to_wall(crate::live::clock::boot_now()));
    agent.tally.tcp_ext_timeline.read(now, tcp_ext_after.clone());
    let mark = |i: u32| c[i as usize];
    LiveSection {
        bad_records: agent.tally.bad_records,
        capture: Some(capture.to_string()),
        max_watched: troubled.then_some(opts.max_watched),
        trouble_marks: troubled.then(|| TroubleMarks {
            failed: mark(COUNTER_MARKS_FAILED),
            sack_sent: mark(COUNTER_MARKS_SACK_SENT),
            tracepoint: mark(COUNTER_MARKS_TRACEPOINT),
            zero_window_sent: mark(COUNTER_MARKS_ZERO_WINDOW_SENT),
        }),
        watch_secs: troubled.then_some(opts.watch.as_secs_f64()),
        watch_starts: troubled.then_some(agent.tally.watch_starts + c[COUNTER_WATCH_LOST as usize]),
        watch_starts_lost: troubled.then_some(c[COUNTER_WATCH_LOST as usize]),
        clock_error_ns: agent.clock.error_ns,
        clock_offset_ns: agent.clock.offset_ns,
        hooks,
        interface: opts.ifaces.label(),
        interfaces: agent.tc.iter().map(|w| w.section()).collect(),
        kernel_events_by_tracepoint,
        kernel_events_filtered_by_netns: c[COUNTER_TRACE_FILTERED as usize],
        kernel_events_lost: losses.kernel_events(),
        kernel_samples_written: agent.samples.written,
        kernel_samples_left_in_kernel: c[tcpviz_common::COUNTER_PROBES_SAMPLED_OUT as usize],
        lost_by_cause: Some(LostByCause {
            kernel_events: KernelEventsLost {
                recursion: losses.events_recursion,
                ring_full: losses.events_ring_full,
                unreadable: losses.events_unreadable,
            },
            packets: PacketsLost { recursion: losses.packets_recursion, ring_full: losses.packets_ring_full },
        }),
        lost_events: losses.total(),
        netns: opts.netns.clone(),
        packets_lost: losses.packets(),
        packets_seen_again: agent.vantage.as_ref().map_or(0, |v| v.seen_again),
        packets_seen_by_tc: packets_seen,
        packets_written: agent.capture.as_ref().map(|c| c.packets()),
        recursion_misses_by_program: losses.recursion_by_program.iter().cloned().collect(),
        stopped_by_signal: agent.inputs.stop.requested(),
        tc_mode: agent.tc.mode(),
        tcp_ext: crate::live::netstat::growth(&agent.inputs.tcp_ext_before, &tcp_ext_after),
        tcp_ext_during: agent.tally.tcp_ext_timeline.readings().to_vec(),
        tcp_segments_seen_by_tc: agent.tally.segments,
    }
}
