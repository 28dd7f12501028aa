//! Helpers shared by the CLI tests: the binary, the bundled samples, captures taken apart
//! into records, a running tcpviz whose output is collected.
//!
//! Each test file compiles this module on its own and uses only part of it.
#![allow(dead_code)]

pub mod browser;
mod pcap_records;
mod running;

#[allow(unused_imports)]
pub use pcap_records::{HalfWritten, Pcap, read_pcap};
#[allow(unused_imports)]
pub use running::Running;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The `tcpviz` binary cargo built for these tests.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tcpviz")
}

pub fn tcpviz() -> Command {
    Command::new(bin())
}

/// A capture of the workspace's `samples/` folder.
pub fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples").join(name)
}

/// The number of lines of a text file.
pub fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).unwrap().lines().count()
}

/// A pcapng split into its leading section and interface blocks and its packet blocks.
pub fn read_pcapng(path: &Path) -> Pcap {
    let data = std::fs::read(path).unwrap();
    let mut blocks = Vec::new();
    let mut at = 0;
    while at + 8 <= data.len() {
        let len = u32::from_le_bytes(data[at + 4..at + 8].try_into().unwrap()) as usize;
        blocks.push((u32::from_le_bytes(data[at..at + 4].try_into().unwrap()), data[at..at + len].to_vec()));
        at += len;
    }
    // The section and interface blocks, then the packet blocks (the statistics block at the
    // end is left out, so that every record is one packet).
    let split = blocks.iter().position(|(t, _)| *t == 6).unwrap();
    let header = blocks[..split].iter().flat_map(|(_, b)| b.clone()).collect();
    Pcap { header, records: blocks[split..].iter().filter(|(t, _)| *t == 6).map(|(_, b)| b.clone()).collect() }
}

/// Waits until `path` holds at least one whole line.
pub fn wait_for_a_line(path: &Path) {
    let start = Instant::now();
    while !std::fs::read_to_string(path).is_ok_and(|t| t.contains('\n')) {
        assert!(start.elapsed().as_secs() < 30, "nothing written to {}", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}
