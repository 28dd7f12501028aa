//! Agreement with Wireshark on real captures.
//!
//! Runs the analysis on every capture of the corpus (`TCPVIZ_CORPUS`: one folder or several
//! separated by `:`, e.g. `../shared/pcaps:../shared/pcaps-next`; the test is skipped when the
//! variable is unset and fails when a folder is missing) and compares, packet by packet, with
//! tshark 4.0's flags in `<capture>.flagged.csv`. Summed over the corpus, each flag must reach
//! F1 >= 0.98, and every capture must yield as many TCP segments as tshark decoded
//! (`tcp_packets` in `<capture>.truth.json`). `TCPVIZ_CORPUS_VERBOSE=1` prints every
//! disagreement.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use tcpviz::capture::read_files;
use tcpviz::cross_check::{FLAGS, FlaggedFrames, flags_of_events, parse_tshark_csv};
use tcpviz::event::Event;
use tcpviz::flow::table::{EvictionCounts, FlowLimits};
use tcpviz::pipeline::Pipeline;

/// Cases where tcpviz is right and tshark is not, excluded with the reason.
/// (file name, frame, flag, reason)
const EXCLUSIONS: &[(&str, u64, &str, &str)] = &[];

fn corpus_dirs() -> Option<Vec<PathBuf>> {
    let dirs = std::env::split_paths(&std::env::var_os("TCPVIZ_CORPUS")?)
        .map(|mut dir| {
            if dir.is_relative() {
                // Relative to the workspace root, where the test command runs.
                dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir);
            }
            assert!(dir.is_dir(), "TCPVIZ_CORPUS: {} is not a folder", dir.display());
            dir
        })
        .collect();
    Some(dirs)
}

/// The number of TCP packets tshark decoded, from `<capture>.truth.json`.
fn tshark_tcp_packets(capture: &Path) -> Option<u64> {
    let name = capture.file_name()?.to_str()?;
    let text = std::fs::read_to_string(capture.with_file_name(format!("{name}.truth.json"))).ok()?;
    serde_json::from_str::<serde_json::Value>(&text).ok()?["tcp_packets"].as_u64()
}

fn captures(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(name) = p.file_name().and_then(|n| n.to_str())
                && let Some(cap) = name.strip_suffix(".flagged.csv")
            {
                out.push(p.with_file_name(cap));
            }
        }
    }
    out.sort();
    out
}

/// tshark's flags per frame, as recorded beside the capture.
fn truth(csv_path: &Path) -> FlaggedFrames {
    parse_tshark_csv(&std::fs::read_to_string(csv_path).unwrap()).unwrap()
}

/// Runs tcpviz on a capture; returns its events (a damaged file yields what came before) and
/// the number of TCP segments it decoded.
fn analyse(path: &Path) -> (Vec<Event>, u64) {
    let (events, segments, _) = analyse_with(path, FlowLimits::default());
    (events, segments)
}

fn analyse_with(path: &Path, limits: FlowLimits) -> (Vec<Event>, u64, EvictionCounts) {
    let mut pipeline = Pipeline::new(limits);
    let mut events: Vec<Event> = Vec::new();
    let read = read_files(&[path], |f, at| pipeline.process_frame(f, at.file_index, &mut events).map(drop)).unwrap();
    for e in &read.errors {
        eprintln!("  {e} (compared up to there)");
    }
    pipeline.finish(&mut events).unwrap();
    (events, pipeline.counters.tcp_segments, pipeline.analyzer().evictions())
}

#[derive(Default, Clone, Copy)]
struct Score {
    tp: u64,
    fp: u64,
    fn_: u64,
}

impl Score {
    fn f1(self) -> f64 {
        if self.tp + self.fp + self.fn_ == 0 {
            return 1.0;
        }
        2.0 * self.tp as f64 / (2 * self.tp + self.fp + self.fn_) as f64
    }
}

#[test]
fn per_packet_flags_agree_with_tshark() {
    let Some(dirs) = corpus_dirs() else {
        eprintln!("TCPVIZ_CORPUS not set: corpus comparison skipped");
        return;
    };
    let verbose = std::env::var_os("TCPVIZ_CORPUS_VERBOSE").is_some();
    let mut files = Vec::new();
    for dir in &dirs {
        let found = captures(dir);
        assert!(!found.is_empty(), "no *.flagged.csv in {}", dir.display());
        files.extend(found);
    }
    let mut totals: BTreeMap<&str, Score> = BTreeMap::new();
    let mut segment_counts_differ = Vec::new();
    for cap in &files {
        let name = cap.file_name().unwrap().to_str().unwrap().to_string();
        let truth = truth(&cap.with_file_name(format!("{name}.flagged.csv")));
        let (events, segments) = analyse(cap);
        if let Some(want) = tshark_tcp_packets(cap)
            && want != segments
        {
            segment_counts_differ.push(format!("{name}: {segments} TCP segments, tshark {want}"));
        }
        let ours = flags_of_events(&events);
        let mut line = format!("{name:<45}");
        for (flag, _) in FLAGS {
            let excluded: BTreeSet<u64> =
                EXCLUSIONS.iter().filter(|(f, _, fl, _)| *f == name && *fl == flag).map(|(_, fr, _, _)| *fr).collect();
            let t: BTreeSet<u64> = truth[flag].difference(&excluded).copied().collect();
            let o: BTreeSet<u64> = ours[flag].difference(&excluded).copied().collect();
            let s = Score {
                tp: t.intersection(&o).count() as u64,
                fp: o.difference(&t).count() as u64,
                fn_: t.difference(&o).count() as u64,
            };
            let tot = totals.entry(flag).or_default();
            tot.tp += s.tp;
            tot.fp += s.fp;
            tot.fn_ += s.fn_;
            line.push_str(&format!(" {}:{}/{}/{}", &flag[..4], s.tp, s.fp, s.fn_));
            if verbose && (s.fp > 0 || s.fn_ > 0) {
                eprintln!(
                    "  {name} {flag}: extra {:?} missing {:?}",
                    o.difference(&t).take(20).collect::<Vec<_>>(),
                    t.difference(&o).take(20).collect::<Vec<_>>()
                );
            }
        }
        eprintln!("{line}");
    }
    let mut failed = Vec::new();
    for (flag, s) in &totals {
        eprintln!("{flag:<25} tp {:>6} fp {:>5} fn {:>5}  F1 {:.4}", s.tp, s.fp, s.fn_, s.f1());
        if s.f1() < 0.98 {
            failed.push(format!("{flag} F1 {:.4}", s.f1()));
        }
    }
    assert!(failed.is_empty(), "below F1 0.98: {failed:?}");
    assert!(segment_counts_differ.is_empty(), "TCP segments decoded: {segment_counts_differ:#?}");
}

/// A flow table too small for the capture evicts connections that are seen again: their
/// analysis must go on from the kept state and raise nothing that a table with room would
/// not. With room for two connections, every capture of more than two is analysed mostly
/// through evictions; its events must be a subset of those with the default table (same
/// frame, kind and reason), and lose few of them.
#[test]
fn evicted_connections_seen_again_raise_nothing_new() {
    let Some(dirs) = corpus_dirs() else {
        eprintln!("TCPVIZ_CORPUS is not set: skipped");
        return;
    };
    type Key = (u64, String, String);
    let keys = |events: &[Event]| -> BTreeSet<Key> {
        events
            .iter()
            .filter_map(|e| {
                Some((e.frame?, e.event.to_string(), e.extra.reason.map(|r| format!("{r:?}")).unwrap_or_default()))
            })
            .collect()
    };
    let tiny = FlowLimits { max_flows: 2, ..FlowLimits::default() };
    let (mut full_total, mut tiny_total, mut extra_total, mut resumed) = (0usize, 0usize, 0usize, 0u64);
    for capture in dirs.iter().flat_map(|d| captures(d)) {
        let full = keys(&analyse(&capture).0);
        let (limited, _, evictions) = analyse_with(&capture, tiny);
        let limited = keys(&limited);
        resumed += evictions.resumed;
        let extra: Vec<&Key> = limited.difference(&full).collect();
        if !extra.is_empty() {
            eprintln!(
                "{}: {} events only with evictions, e.g. {:?}",
                capture.display(),
                extra.len(),
                &extra[..extra.len().min(5)]
            );
        }
        full_total += full.len();
        tiny_total += limited.len();
        extra_total += extra.len();
    }
    eprintln!(
        "events: {full_total} with room, {tiny_total} through evictions, {extra_total} only through evictions; {resumed} connections resumed"
    );
    assert!(resumed > 500, "the small table did not make connections resume: {resumed}");
    assert_eq!(extra_total, 0, "evictions raised events a table with room does not");
    assert!(
        tiny_total * 10 >= full_total * 9,
        "evictions lost over a tenth of the events: {tiny_total} of {full_total}"
    );
}

/// `parse-pcap --threads N` writes what one thread writes: the events file and summary.json
/// of every capture, byte for byte, with 1, 2 and 3 analysis threads, each capture alone and
/// the whole corpus read as one stream (flows of many files at once, idle sweeps across
/// them). (Evictions are compared by `pipeline::sharded`'s unit tests: the corpus does not
/// fill a table.)
#[test]
fn output_is_the_same_whatever_the_number_of_threads() {
    use tcpviz::analyse_captures::{AnalyseOptions, open_inputs, run};
    use tcpviz::output::session::Session;
    let Some(dirs) = corpus_dirs() else {
        eprintln!("TCPVIZ_CORPUS is not set: skipped");
        return;
    };
    let all: Vec<PathBuf> = dirs.iter().flat_map(|d| captures(d)).collect();
    let work = tempfile::tempdir().unwrap();
    let session_files = |inputs: &[PathBuf], threads: usize, limits: FlowLimits| -> (Vec<u8>, Vec<u8>) {
        let dir = work.path().join(format!("t{threads}"));
        let _ = std::fs::remove_dir_all(&dir);
        let opts = AnalyseOptions {
            inputs: inputs.to_vec(),
            session: Session::create(Some(&dir)).unwrap(),
            limits,
            summary_flows: 50,
            progress: false,
            kernel_events: Vec::new(),
            cross_check: false,
            threads,
        };
        run(&opts, open_inputs(inputs).unwrap()).unwrap();
        (std::fs::read(dir.join("events.jsonl")).unwrap(), std::fs::read(dir.join("summary.json")).unwrap())
    };
    let (mut compared, mut events) = (0, 0);
    let singles = all.iter().map(|c| (vec![c.clone()], FlowLimits::default()));
    let whole = (all.clone(), FlowLimits::default());
    for (inputs, limits) in singles.chain([whole]) {
        let one = session_files(&inputs, 1, limits);
        for threads in [2, 3] {
            let many = session_files(&inputs, threads, limits);
            let name = if inputs.len() == 1 { inputs[0].display().to_string() } else { "the corpus".to_string() };
            assert!(one.0 == many.0, "{name}: events with {threads} threads differ from one thread's");
            assert!(one.1 == many.1, "{name}: summary.json with {threads} threads differs from one thread's");
            compared += 1;
        }
        events += one.0.iter().filter(|&&b| b == b'\n').count();
    }
    eprintln!("{compared} runs identical to one thread's ({events} events)");
    assert!(events > 1_000, "too few events to compare: {events}");
}
