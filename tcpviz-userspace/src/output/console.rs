//! Alert lines on the terminal: one per change of level, coloured on a TTY.

use std::fmt::Write as _;
use std::io::IsTerminal;

use crate::alert::{Alert, Level};
use crate::output::summary::endpoint;
use crate::time::NS_PER_SEC;

pub struct Console {
    colour: bool,
}

impl Default for Console {
    fn default() -> Self {
        let colour = if crate::output::json_stream::enabled() {
            std::io::stderr().is_terminal()
        } else {
            std::io::stdout().is_terminal()
        };
        Console { colour }
    }
}

impl Console {
    pub fn render(&self, a: &Alert) -> String {
        let when = chrono::DateTime::from_timestamp(a.ts.div_euclid(NS_PER_SEC), a.ts.rem_euclid(NS_PER_SEC) as u32)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
            .unwrap_or_else(|| a.ts.to_string());
        let (level, colour) = match a.level {
            Level::Critical => ("CRITICAL", "\x1b[1;31m"),
            Level::Warn => ("WARN    ", "\x1b[33m"),
            Level::Ok => ("OK      ", "\x1b[32m"),
        };
        let level = if self.colour { format!("{colour}{level}\x1b[0m") } else { level.to_string() };
        format!(
            "{when} {level} flow {} {} -> {}  {}",
            a.flow_id,
            endpoint(a.src, a.sport),
            endpoint(a.dst, a.dport),
            a.message
        )
    }

    /// Prints alert lines on standard output (dropped once its reader is gone: see
    /// [`stdio`](crate::output::stdio)), or on standard error when standard output is the
    /// JSON-lines stream (`--events -`).
    pub fn print(&self, alerts: &[Alert]) {
        if alerts.is_empty() {
            return;
        }
        let mut text = String::new();
        for a in alerts {
            let _ = writeln!(text, "{}", self.render(a));
        }
        if crate::output::json_stream::enabled() {
            crate::output::stdio::write_err(format_args!("{text}"));
        } else {
            crate::out!("{text}");
        }
    }
}
