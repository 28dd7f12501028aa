//! Captures taken apart into their records, to write them again bit by bit. Shared by the
//! CLI tests and, through a `#[path]` module, the privileged ones.

use std::io::Write;
use std::path::Path;

/// A capture split into its leading blocks (file header, or section and interface blocks)
/// and its packet records, each with its own header.
pub struct Pcap {
    pub header: Vec<u8>,
    pub records: Vec<Vec<u8>>,
}

/// A little-endian legacy pcap, split into its file header and its records.
pub fn read_pcap(path: &Path) -> Pcap {
    let data = std::fs::read(path).unwrap();
    let mut records = Vec::new();
    let mut at = 24;
    while at + 16 <= data.len() {
        let caplen = u32::from_le_bytes(data[at + 8..at + 12].try_into().unwrap()) as usize;
        records.push(data[at..at + 16 + caplen].to_vec());
        at += 16 + caplen;
    }
    Pcap { header: data[..24].to_vec(), records }
}

/// A capture being written: the header and the first half of `sample`'s records are in
/// `path`; `finish` appends the rest.
pub struct HalfWritten {
    file: std::fs::File,
    rest: Vec<Vec<u8>>,
}

impl HalfWritten {
    pub fn start(sample: &Path, path: &Path) -> HalfWritten {
        let Pcap { header, mut records } = read_pcap(sample);
        let rest = records.split_off(records.len() / 2);
        let mut file = std::fs::File::create(path).unwrap();
        file.write_all(&header).unwrap();
        for r in &records {
            file.write_all(r).unwrap();
        }
        file.flush().unwrap();
        HalfWritten { file, rest }
    }

    pub fn finish(mut self) {
        for r in &self.rest {
            self.file.write_all(r).unwrap();
        }
        self.file.flush().unwrap();
    }
}
