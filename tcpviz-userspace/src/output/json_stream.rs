//! `--events -`: the events and alerts of a long-running mode as JSON lines on standard
//! output, for a log shipper (Vector, Fluent Bit) or journald. Each line is the object
//! written to `events.jsonl` or `alerts.jsonl` with `"record": "event"` or
//! `"record": "alert"` in front, so one stream carries both. Standard output then carries
//! nothing else: the alert lines for people and the final table go to standard error.
//!
//! Standard output is one per process, so the switch is too (set once by the command line).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::alert::Alert;
use crate::event::Event;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Standard output becomes the JSON-lines stream.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether standard output is the JSON-lines stream (everything else goes to stderr).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Writes the events, if the stream is on (one write for the batch).
pub fn events(events: &[Event]) {
    write("event", events);
}

/// Writes the alerts, if the stream is on.
pub fn alerts(alerts: &[Alert]) {
    write("alert", alerts);
}

fn write<T: Serialize>(record: &str, items: &[T]) {
    if !enabled() || items.is_empty() {
        return;
    }
    let mut text = String::new();
    for item in items {
        line(&mut text, record, item);
    }
    // A reader gone ends the agent as on Ctrl-C (see `stdio`).
    crate::out!("{text}");
}

/// `{"record":"<record>", <the item's fields>}` and a newline.
pub fn line<T: Serialize>(text: &mut String, record: &str, item: &T) {
    let json = serde_json::to_string(item).unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()));
    let _ = match json.strip_prefix('{') {
        Some("}") => writeln!(text, "{{\"record\":\"{record}\"}}"),
        Some(rest) => writeln!(text, "{{\"record\":\"{record}\",{rest}"),
        // Not an object: wrapped.
        None => writeln!(text, "{{\"record\":\"{record}\",\"value\":{json}}}"),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Two {
        a: u32,
        b: &'static str,
    }

    #[derive(Serialize)]
    struct Empty {}

    fn one<T: Serialize>(item: &T) -> serde_json::Value {
        let mut text = String::new();
        line(&mut text, "event", item);
        assert_eq!(text.matches('\n').count(), 1);
        assert!(text.ends_with('\n'));
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn the_record_kind_leads_the_items_fields() {
        assert_eq!(one(&Two { a: 1, b: "x\ny" }), serde_json::json!({"record": "event", "a": 1, "b": "x\ny"}));
        assert_eq!(one(&Empty {}), serde_json::json!({"record": "event"}));
        assert_eq!(one(&3), serde_json::json!({"record": "event", "value": 3}));
    }
}
