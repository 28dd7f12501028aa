//! Wi-Fi link layers end to end: a bundled Ethernet sample re-wrapped as radiotap + 802.11
//! (FCS and padding flags, HT control, To-DS and From-DS, A-MSDU), as PPI + 802.11, and
//! inside CAPWAP and Aruba GRE tunnels, with protected frames mixed in, must give the events
//! of the original (frame numbers aside) and count the protected frames as encrypted.

mod common;

use std::path::Path;
use std::process::Command;

use common::{read_pcap, sample};

/// One record: seconds, microseconds, the bytes captured, the packet's length on the wire.
type Record = (u32, u32, Vec<u8>, u32);

/// Wraps the Ethernet frame with this index, protected or not.
type Wrap<'a> = &'a dyn Fn(usize, &[u8], bool) -> Vec<u8>;

/// The records of a little-endian microsecond pcap.
fn records(path: &Path) -> Vec<Record> {
    read_pcap(path)
        .records
        .into_iter()
        .map(|r| {
            let word = |o: usize| u32::from_le_bytes(r[o..o + 4].try_into().unwrap());
            (word(0), word(4), r[16..].to_vec(), word(12))
        })
        .collect()
}

fn write_pcap(path: &Path, link_type: u32, frames: &[Record]) {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&262_144u32.to_le_bytes());
    out.extend_from_slice(&link_type.to_le_bytes());
    for (sec, usec, frame, orig_len) in frames {
        for v in [*sec, *usec, frame.len() as u32, *orig_len] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(frame);
    }
    std::fs::write(path, out).unwrap();
}

/// An 802.11 QoS data frame around an Ethernet frame's payload: To-DS from the first
/// station seen, From-DS back, with HT control on every other frame and the data-pad bytes
/// radiotap asks for; as an A-MSDU when `amsdu`.
fn dot11(eth: &[u8], to_ds: bool, ht_control: bool, padded: bool, amsdu: bool) -> Vec<u8> {
    let mut f = vec![0x88, if to_ds { 0x01 } else { 0x02 } | if ht_control { 0x80 } else { 0 }, 0, 0];
    f.extend_from_slice(&eth[0..6]);
    f.extend_from_slice(&eth[6..12]);
    f.extend_from_slice(&[2, 0xaa, 0xbb, 0xcc, 0xdd, 1]);
    f.extend_from_slice(&[0x10, 0]); // sequence 1, fragment 0
    f.extend_from_slice(&[if amsdu { 0x80 } else { 0 }, 0]);
    if ht_control {
        f.extend_from_slice(&[0; 4]);
    }
    if padded {
        f.resize(f.len().next_multiple_of(4), 0);
    }
    let mut msdu = vec![0xaa, 0xaa, 0x03, 0, 0, 0];
    msdu.extend_from_slice(&eth[12..]);
    if amsdu {
        f.extend_from_slice(&eth[0..12]);
        f.extend_from_slice(&(msdu.len() as u16).to_be_bytes());
    }
    f.extend_from_slice(&msdu);
    f
}

/// Runs parse-pcap; returns its events without frame numbers, and its summary.
fn analyse(capture: &Path, out: &Path) -> (Vec<serde_json::Value>, serde_json::Value) {
    let o = Command::new(env!("CARGO_BIN_EXE_tcpviz"))
        .args(["parse-pcap", "--quiet", "--in"])
        .arg(capture)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let events = std::fs::read_to_string(out.join("events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut e: serde_json::Value = serde_json::from_str(l).unwrap();
            let obj = e.as_object_mut().unwrap();
            obj.remove("frame");
            if let Some(extra) = obj.get_mut("extra").and_then(|x| x.as_object_mut()) {
                // Frame numbers named in details move with the inserted frames.
                extra.retain(|k, _| !k.contains("frame"));
            }
            e
        })
        .collect();
    let summary = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    (events, summary)
}

fn assert_same_as_original(wrapped: &Path, want: &[serde_json::Value], dir: &Path, protected: u64) {
    let name = wrapped.file_name().unwrap().to_string_lossy().into_owned();
    let (got, summary) = analyse(wrapped, &dir.join(format!("{name}.session")));
    assert!(!want.is_empty());
    assert_eq!(got.len(), want.len(), "{name}: event count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g, w, "{name}: event {}", i + 1);
    }
    assert_eq!(
        summary["totals"]["skipped"]["encrypted"].as_u64().unwrap_or(0),
        protected,
        "{name}: {}",
        summary["totals"]
    );
}

#[test]
fn wrapped_in_wifi_headers_and_wlan_tunnels_the_events_are_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let original = sample("ipv4_loss_sender.pcap");
    let eth = records(&original);
    let (want, _) = analyse(&original, &dir.path().join("original"));
    let first_station = eth[0].2[6..12].to_vec();
    // Every frame wrapped (the sample has a snap length: what was not captured stays so,
    // and a frame check sequence is captured only with a whole frame), and a protected copy
    // of every 100th frame: skipped as encrypted, never parsed.
    let with_protected = |wrap: Wrap<'_>, fcs: bool| -> (Vec<Record>, u64) {
        let mut out = Vec::new();
        let mut protected = 0;
        for (i, (s, u, f, orig_len)) in eth.iter().enumerate() {
            let whole = f.len() as u32 == *orig_len;
            for protect in [true, false] {
                if protect && !i.is_multiple_of(100) {
                    continue;
                }
                protected += protect as u64;
                let mut w = wrap(i, f, protect);
                let grown = (w.len() - f.len()) as u32 + if fcs { 4 } else { 0 };
                if fcs && whole {
                    w.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
                }
                out.push((*s, *u, w, orig_len + grown));
            }
        }
        (out, protected)
    };
    let protect = |mut frame: Vec<u8>, at: usize, protected: bool| {
        if protected {
            frame[at + 1] |= 0x40;
        }
        frame
    };

    // Radiotap: present = TSFT | Flags; TSFT, then flags FCS | data pad; a 4-byte FCS at the end.
    let radiotap = |i: usize, f: &[u8], protected: bool| {
        let mut r = vec![0, 0, 18, 0, 0b11, 0, 0, 0];
        r.extend_from_slice(&[0; 8]);
        r.extend_from_slice(&[0x30, 0]);
        let at = r.len();
        r.extend_from_slice(&dot11(f, f[6..12] == first_station[..], i.is_multiple_of(2), true, i.is_multiple_of(3)));
        protect(r, at, protected)
    };
    let (frames, protected) = with_protected(&radiotap, true);
    let path = dir.path().join("radiotap.pcap");
    write_pcap(&path, 127, &frames);
    assert_same_as_original(&path, &want, dir.path(), protected);

    // PPI with an 802.11-common field whose flags say an FCS ends the frame.
    let ppi = |i: usize, f: &[u8], protected: bool| {
        let mut p = vec![0, 0, 32, 0, 105, 0, 0, 0, 2, 0, 20, 0];
        p.extend_from_slice(&[0; 8]);
        p.extend_from_slice(&[1, 0]);
        p.extend_from_slice(&[0; 10]);
        let at = p.len();
        p.extend_from_slice(&dot11(f, f[6..12] == first_station[..], i % 2 == 1, false, false));
        protect(p, at, protected)
    };
    let (frames, protected) = with_protected(&ppi, true);
    let path = dir.path().join("ppi.pcap");
    write_pcap(&path, 192, &frames);
    assert_same_as_original(&path, &want, dir.path(), protected);

    // Controller tunnels, over IPv4 between two controllers' addresses: CAPWAP data to UDP
    // 5247 (HLEN 2, 802.11 binding, native frame), and Aruba GRE (protocol 0x8240).
    let tunnel = |inner_proto: u8, header: &[u8], dot11: Vec<u8>| {
        let mut eth = vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0x08, 0x00];
        let total = 20 + header.len() + dot11.len();
        eth.extend_from_slice(&[0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0x40, 0, 64, inner_proto, 0, 0]);
        eth.extend_from_slice(&[192, 0, 2, 1, 192, 0, 2, 2]);
        eth.extend_from_slice(header);
        eth.extend_from_slice(&dot11);
        eth
    };
    let capwap = |i: usize, f: &[u8], protected: bool| {
        let frame = protect(dot11(f, f[6..12] == first_station[..], i.is_multiple_of(2), false, false), 0, protected);
        let udp_len = 8 + 8 + frame.len();
        let mut h = vec![0x30, 0x39, 0x14, 0x7f, (udp_len >> 8) as u8, udp_len as u8, 0, 0];
        h.extend_from_slice(&((2u32 << 19) | (1 << 9) | (1 << 8)).to_be_bytes());
        h.extend_from_slice(&[0; 4]);
        tunnel(17, &h, frame)
    };
    let (frames, protected) = with_protected(&capwap, false);
    let path = dir.path().join("capwap.pcap");
    write_pcap(&path, 1, &frames);
    assert_same_as_original(&path, &want, dir.path(), protected);

    let aruba = |i: usize, f: &[u8], protected: bool| {
        let frame = protect(dot11(f, f[6..12] == first_station[..], false, false, i.is_multiple_of(2)), 0, protected);
        tunnel(47, &[0, 0, 0x82, 0x40], frame)
    };
    let (frames, protected) = with_protected(&aruba, false);
    let path = dir.path().join("aruba.pcap");
    write_pcap(&path, 1, &frames);
    assert_same_as_original(&path, &want, dir.path(), protected);
}
