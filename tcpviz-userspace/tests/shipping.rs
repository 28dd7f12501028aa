//! Shipping what tcpviz finds to the monitoring an operator runs: `--events -` (events and
//! alerts as JSON lines on standard output) and `--log-format json` (structured logs).

mod common;

use std::path::Path;

use common::{sample, tcpviz};

fn jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// `follow --events -` on a lossy capture: standard output holds JSON lines only, the
/// session's events and alerts each once and in order, tagged; the alert lines for people
/// and the table are on standard error.
#[test]
fn events_dash_streams_events_and_alerts_as_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s");
    let o = tcpviz()
        .args(["follow", "--pcap-path"])
        .arg(sample("ipv4_loss_sender.pcap"))
        .args(["--duration", "1", "--threshold", "2", "--critical", "5", "--events", "-", "--out"])
        .arg(&session)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let lines: Vec<serde_json::Value> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    let of = |record: &str| -> Vec<serde_json::Value> {
        lines
            .iter()
            .filter(|l| l["record"] == record)
            .map(|l| {
                let mut l = l.clone();
                l.as_object_mut().unwrap().remove("record");
                l
            })
            .collect()
    };
    let (events, alerts) = (of("event"), of("alert"));
    assert_eq!(events.len() + alerts.len(), lines.len(), "lines neither event nor alert");
    assert_eq!(events, jsonl(&session.join("events.jsonl")));
    let alerts_file = jsonl(&session.join("alerts.jsonl"));
    assert!(!alerts_file.is_empty(), "the capture raises no alert at these thresholds");
    assert_eq!(alerts, alerts_file);
    // The same alerts for people, and the table, on standard error.
    assert_eq!(stderr.lines().filter(|l| l.contains(" flow ") && l.contains(" in the last ")).count(), alerts.len());
    assert!(stderr.contains("connection") && stderr.contains("summary.json"), "{stderr}");
}

/// Without `--events -` nothing changes: alert lines on standard output, no JSON there.
#[test]
fn without_it_alert_lines_stay_on_standard_output() {
    let dir = tempfile::tempdir().unwrap();
    let o = tcpviz()
        .args(["follow", "--pcap-path"])
        .arg(sample("ipv4_loss_sender.pcap"))
        .args(["--duration", "1", "--threshold", "2", "--out"])
        .arg(dir.path().join("s"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains(" in the last ") && !stdout.contains("\"record\""), "{stdout}");
}

#[test]
fn events_takes_only_a_dash() {
    let o = tcpviz().args(["follow", "--pcap-path", "x", "--events", "out.jsonl"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
}

/// `--log-format json`: each log line is a JSON object with its level, message and target.
#[test]
fn log_format_json_gives_structured_logs() {
    let dir = tempfile::tempdir().unwrap();
    let run = |format: &str| {
        let o = tcpviz()
            .args(["--log-format", format, "follow", "--pcap-path"])
            .arg(sample("ipv4_loss_sender.pcap"))
            .args(["--duration", "0.5", "--out"])
            .arg(dir.path().join(format))
            .env("TCPVIZ_LOG", "trace")
            .output()
            .unwrap();
        assert!(o.status.success());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let json = run("json");
    let logs: Vec<serde_json::Value> =
        json.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(!logs.is_empty(), "no log lines: {json}");
    for l in &logs {
        assert!(l["level"].is_string() && l["message"].is_string() && l["target"].is_string(), "{l}");
    }
    let text = run("text");
    assert!(text.contains("TRACE") && !text.lines().any(|l| l.starts_with('{')), "{text}");
}
