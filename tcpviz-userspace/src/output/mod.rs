//! Sinks: events.jsonl, summary.json, benchmark.log, and the session folder they live in.
pub mod alerting;
pub mod benchmark;
pub mod console;
pub mod event_json;
pub mod flow_csv;
pub mod json_stream;
pub mod jsonl;
pub mod pcapng;
pub mod record_file;
pub mod rotation;
pub mod sections;
pub mod session;
pub mod sink;
pub mod stdio;
pub mod summary;
