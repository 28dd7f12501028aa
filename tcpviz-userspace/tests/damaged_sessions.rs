//! The reading commands (`summary`, `plot`, `report`) on damaged session folders.

mod common;

use std::path::{Path, PathBuf};

use common::{sample, tcpviz};

/// Copies a session folder (flat) to `to`.
fn copy_session(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Runs a reading command; returns its exit status and standard error.
fn read_command(command: &str, input: &Path) -> (Option<i32>, String) {
    let o = tcpviz().arg(command).arg("--in").arg(input).output().unwrap();
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(!err.contains("panicked"), "{command} {}: {err}", input.display());
    (o.status.code(), err)
}

/// Damaged sessions: each command that reads the damaged file names the file and the line,
/// exits 1, and (for the pages) still writes what it could read.
#[test]
fn bad_sessions_get_clear_errors_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("cap.pcap");
    std::fs::copy(sample("ipv4_loss_sender.pcap"), &capture).unwrap();
    let good = dir.path().join("good");
    let o = tcpviz().args(["parse-pcap", "--quiet", "--out"]).arg(&good).arg(&capture).output().unwrap();
    assert!(o.status.success());
    let events = std::fs::read_to_string(good.join("events.jsonl")).unwrap();
    let n = events.lines().count();
    let damaged = |name: &str, file: &str, text: String| -> PathBuf {
        let s = dir.path().join(name);
        copy_session(&good, &s);
        std::fs::write(s.join(file), text).unwrap();
        s
    };
    let with_line = |i: usize, line: &str| -> String {
        let mut lines: Vec<&str> = events.lines().collect();
        lines[i - 1] = line;
        lines.join("\n") + "\n"
    };

    // A last line cut short in a finished session: damage.
    let s = damaged("cut", "events.jsonl", events[..events.len() - 20].to_string());
    let (code, err) = read_command("plot", &s);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("cut/events.jsonl line {n}: cut short (the file ends inside it)")), "{err}");
    assert!(s.join("timeline.html").is_file(), "what could be read is drawn");
    // The same in a session still being written (no summary.json yet): skipped, said.
    std::fs::remove_file(s.join("summary.json")).unwrap();
    let (code, err) = read_command("plot", &s);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.starts_with("warning: ") && err.contains(&format!("line {n}: cut short")), "{err}");

    // A line that is not JSON, and events of another schema.
    let s = damaged("garbage", "events.jsonl", with_line(5, "this is not json"));
    let (code, err) = read_command("plot", &s);
    assert_eq!(code, Some(1));
    assert!(err.contains("garbage/events.jsonl line 5: not JSON"), "{err}");
    let line3 = events.lines().nth(2).unwrap();
    let newer = line3.replacen(r#""event":""#, r#""event":"quantum_"#, 1);
    let s = damaged("newer", "events.jsonl", with_line(3, &newer));
    let (code, err) = read_command("plot", &s);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("newer/events.jsonl line 3: not an event of tcpviz schema version 1 (unknown variant `quantum_"),
        "{err}"
    );
    let original = line3.replace(r#","origin":"wire""#, "");
    assert_ne!(original, line3);
    let s = damaged("original", "events.jsonl", with_line(3, &original));
    let (code, err) = read_command("plot", &s);
    assert_eq!(code, Some(1));
    assert!(err.contains("line 3: not an event of tcpviz schema version 1 (missing field `origin`)"), "{err}");

    // The summary: cut, not JSON, another version. Every command reads it.
    let summary = std::fs::read_to_string(good.join("summary.json")).unwrap();
    let summary_lines = summary[..summary.len() - 3].lines().count();
    for (name, text, want) in [
        (
            "scut",
            summary[..summary.len() - 3].to_string(),
            format!("EOF while parsing an object at line {summary_lines}"),
        ),
        ("sjunk", summary.replacen("{", "<", 1), "expected value at line 1 column 1".to_string()),
        (
            "sv2",
            summary.replacen("\"schema_version\": 1", "\"schema_version\": 2", 1),
            "summary.json line 2: a summary of schema version 2, where this tcpviz reads version 1".to_string(),
        ),
    ] {
        let s = damaged(name, "summary.json", text);
        for command in ["summary", "plot", "report"] {
            let (code, err) = read_command(command, &s);
            assert_eq!(code, Some(1), "{command} {name}: {err}");
            assert!(err.contains(&format!("{name}/summary.json")) && err.contains(&want), "{command} {name}: {err}");
        }
    }

    // An empty folder, and files where a folder is expected.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "some notes\n").unwrap();
    for command in ["summary", "plot", "report"] {
        let (code, err) = read_command(command, &empty);
        assert_eq!(code, Some(1));
        assert!(err.contains("empty has no events.jsonl: is it a tcpviz session folder?"), "{err}");
        let (code, err) = read_command(command, &capture);
        assert_eq!(code, Some(1));
        assert!(err.contains("cap.pcap is not a session folder or an events file: it is a capture"), "{err}");
        let (code, err) = read_command(command, &notes);
        assert_eq!(code, Some(1));
        assert!(err.contains("notes.txt is not a session folder or an events file"), "{err}");
    }
    assert!(!dir.path().join("timeline.html").exists(), "no page beside a file that is not a session");

    // Captures moved: the report is still written (from the events), with a warning that
    // names the capture; summary and plot do not read captures.
    std::fs::rename(&capture, dir.path().join("moved.pcap")).unwrap();
    let (code, err) = read_command("report", &good);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains(&format!("warning: capture {} not found", capture.display())), "{err}");
    assert!(good.join("report.html").is_file());
    for command in ["summary", "plot"] {
        let (code, err) = read_command(command, &good);
        assert_eq!((code, err.as_str()), (Some(0), ""), "{command}");
    }
    // ... and when their events are damaged too, the report says which line.
    let s = damaged("moved-garbage", "events.jsonl", with_line(7, "{\"ts\": oops}"));
    let (code, err) = read_command("report", &s);
    assert_eq!(code, Some(1));
    assert!(err.contains("moved-garbage/events.jsonl line 7: not JSON"), "{err}");
}
