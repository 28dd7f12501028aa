//! Sinks: events.jsonl, summary.json, benchmark.log, and the session folder they live in.
pub mod benchmark;
pub mod console;
pub mod jsonl;
pub mod pcapng;
pub mod session;
pub mod summary;
