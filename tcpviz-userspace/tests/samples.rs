//! Golden tests on the captures the project records itself (`samples/`, made by
//! `samples/record.sh`): the events must equal the golden files in `samples/golden/`, the
//! Wireshark flags must equal tshark's for each packet, and every event must satisfy the
//! documented JSON Schema. `UPDATE_GOLDEN=1` rewrites the golden files after a re-recording.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use tcpviz::capture::read_files;
use tcpviz::event::{Event, EventKind};
use tcpviz::flow::table::FlowLimits;
use tcpviz::pipeline::Pipeline;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn samples() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(workspace().join("samples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("pcap" | "pcapng")))
        .collect();
    v.sort();
    assert!(v.len() >= 4, "the bundled samples are missing");
    v
}

fn analyse(path: &Path) -> Vec<Event> {
    let mut pipeline = Pipeline::new(FlowLimits::default());
    let mut events: Vec<Event> = Vec::new();
    let read = read_files(&[path], |f, at| pipeline.process_frame(f, at.file_index, &mut events).map(drop)).unwrap();
    let errors: Vec<String> = read.errors.iter().map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{} is not read to its end: {errors:?}", path.display());
    pipeline.finish(&mut events).unwrap();
    events
}

fn to_jsonl(events: &[Event]) -> String {
    events.iter().map(|e| serde_json::to_string(e).unwrap() + "\n").collect()
}

#[test]
fn events_match_the_golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let golden_dir = workspace().join("samples/golden");
    for cap in samples() {
        let name = cap.file_name().unwrap().to_str().unwrap();
        let got = to_jsonl(&analyse(&cap));
        let golden = golden_dir.join(format!("{name}.events.jsonl"));
        if update {
            std::fs::create_dir_all(&golden_dir).unwrap();
            std::fs::write(&golden, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&golden)
            .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", golden.display()));
        if got != want {
            let (g, w): (Vec<&str>, Vec<&str>) = (got.lines().collect(), want.lines().collect());
            let first = g.iter().zip(w.iter()).position(|(a, b)| a != b).unwrap_or(g.len().min(w.len()));
            panic!(
                "{name}: events differ from {} ({} lines vs {} golden); first difference at line {}:\n got: {}\nwant: {}",
                golden.display(),
                g.len(),
                w.len(),
                first + 1,
                g.get(first).unwrap_or(&"<none>"),
                w.get(first).unwrap_or(&"<none>")
            );
        }
    }
}

#[test]
fn wireshark_flags_equal_tshark_on_every_sample() {
    const COLS: [(&str, &[EventKind]); 7] = [
        (
            "tcp.analysis.retransmission",
            &[EventKind::Retransmission, EventKind::FastRetransmission, EventKind::SpuriousRetransmission],
        ),
        ("tcp.analysis.fast_retransmission", &[EventKind::FastRetransmission]),
        ("tcp.analysis.spurious_retransmission", &[EventKind::SpuriousRetransmission]),
        ("tcp.analysis.out_of_order", &[EventKind::OutOfOrder]),
        ("tcp.analysis.lost_segment", &[EventKind::LostSegment]),
        ("tcp.analysis.duplicate_ack", &[EventKind::DuplicateAck]),
        ("tcp.analysis.zero_window", &[EventKind::ZeroWindow]),
    ];
    let mut compared = 0;
    for cap in samples() {
        let csv = std::fs::read_to_string(
            cap.with_file_name(format!("{}.flagged.csv", cap.file_name().unwrap().to_str().unwrap())),
        )
        .unwrap();
        let mut lines = csv.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        let rows: Vec<Vec<String>> =
            lines.map(|l| l.split(',').map(|f| f.trim_matches('"').to_string()).collect()).collect();
        let events = analyse(&cap);
        for (col, kinds) in COLS {
            let i = header.iter().position(|h| *h == col).unwrap();
            let truth: BTreeSet<u64> =
                rows.iter().filter(|r| !r[i].is_empty()).map(|r| r[0].parse().unwrap()).collect();
            let ours: BTreeSet<u64> =
                events.iter().filter(|e| kinds.contains(&e.event)).filter_map(|e| e.frame).collect();
            assert_eq!(ours, truth, "{} {col}", cap.display());
            compared += truth.len();
        }
    }
    assert!(compared > 100, "the samples should exhibit trouble ({compared} flags)");
}

#[test]
fn every_event_satisfies_the_json_schema() {
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(workspace().join("docs/events.schema.json")).unwrap()).unwrap();
    let validator = jsonschema::options().should_validate_formats(true).build(&schema).expect("valid schema");
    let mut seen = BTreeSet::new();
    for cap in samples() {
        for line in to_jsonl(&analyse(&cap)).lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            if let Err(e) = validator.validate(&v) {
                panic!("{}: {line}\n{e}", cap.display());
            }
            seen.insert(v["event"].as_str().unwrap().to_string());
        }
    }
    // The samples exercise the findings as well as the flags.
    for kind in ["loss_infer", "handshake_anomaly", "teardown_anomaly", "zero_window", "lost_segment"] {
        assert!(seen.contains(kind), "no {kind} in the samples");
    }
    // A line that breaks the schema is caught (the check can fail).
    let bad = serde_json::json!({"ts": 1.0, "event": "retransmission"});
    assert!(validator.validate(&bad).is_err());
}
