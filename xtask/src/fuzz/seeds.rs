//! Fuzz seeds, made at run time from captures and from the kernel of this machine (see the
//! module above for what each target gets).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

use crate::{cargo, sh};

/// The largest seed written.
const SEED_MAX: usize = 64 * 1024;

/// Writes a seed named after its contents (so seeding twice adds nothing).
fn put(dir: &Path, bytes: &[u8]) -> Result<()> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    let path = dir.join(format!("seed-{h:016x}"));
    if !path.exists() {
        fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn captures(corpus: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from("samples")];
    if let Some(c) = corpus {
        dirs.push(c.to_path_buf());
        dirs.push(c.join("generated"));
    }
    let mut out = Vec::new();
    for d in dirs {
        let Ok(entries) = fs::read_dir(&d) else { continue };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.ends_with(".pcap") || n.ends_with(".pcapng"))
            })
            .collect();
        files.sort();
        out.extend(files);
    }
    out
}

pub(super) fn seed(corpus: Option<&Path>, targets: &[String]) -> Result<()> {
    let wanted = |t: &str| targets.iter().any(|x| x == t);
    let dir = |t: &str| -> Result<PathBuf> {
        let d = PathBuf::from("fuzz/corpus").join(t);
        fs::create_dir_all(&d)?;
        Ok(d)
    };
    let captures = captures(corpus);
    match corpus {
        Some(c) => eprintln!("fuzz seeds: {} captures (samples/ and {})", captures.len(), c.display()),
        None => eprintln!("fuzz seeds: {} captures of samples/ (no --corpus folder)", captures.len()),
    }
    let mut frames: Vec<(u32, Vec<u8>, u32)> = Vec::new();
    for c in &captures {
        let bytes = fs::read(c).with_context(|| format!("cannot read {}", c.display()))?;
        if wanted("capture_reader") {
            put(&dir("capture_reader")?, &bytes[..bytes.len().min(SEED_MAX)])?;
        }
        frames.extend(sample_frames(&bytes, 24));
    }
    if wanted("decode_frame") {
        let d = dir("decode_frame")?;
        for (link, data, orig_len) in &frames {
            let Some(selector) = link_selector(*link) else { continue };
            let uncaptured = orig_len.saturating_sub(data.len() as u32).min(u16::MAX as u32) as u16;
            let mut seed = vec![selector];
            seed.extend_from_slice(&uncaptured.to_be_bytes());
            seed.extend_from_slice(data);
            put(&d, &seed)?;
        }
    }
    if wanted("ring_record") {
        ring_record_seeds(&dir("ring_record")?, &frames)?;
    }
    if wanted("tailer") {
        tailer_seeds(&dir("tailer")?)?;
    }
    if wanted("tracefs_format") {
        let d = dir("tracefs_format")?;
        for text in format_files() {
            put(&d, text.as_bytes())?;
            let mut with_record = text.into_bytes();
            with_record.push(0);
            with_record.extend((0..144u32).map(|i| (i * 7) as u8));
            put(&d, &with_record)?;
        }
    }
    if wanted("btf") {
        let d = dir("btf")?;
        put(&d, &agent_paths_btf())?;
        match fs::read("/sys/kernel/btf/vmlinux") {
            Ok(vmlinux) => {
                for n in [40, 400] {
                    if let Some(b) = btf_prefix(&vmlinux, n) {
                        put(&d, &b)?;
                    }
                }
            }
            Err(e) => eprintln!("fuzz seeds: no kernel BTF ({e}); the btf target starts from hand-made seeds"),
        }
    }
    if wanted("events_jsonl") {
        events_seeds(&dir("events_jsonl")?, &captures)?;
    }
    Ok(())
}

/// The index of the fuzz target's link-type table (fuzz/fuzz_targets/decode_frame.rs).
fn link_selector(link: u32) -> Option<u8> {
    [1, 101, 12, 14, 228, 229, 113, 276, 0, 108].iter().position(|&l| l == link).map(|i| i as u8)
}

/// Up to `max` distinct frames of a capture: (link type, captured bytes, original length).
fn sample_frames(bytes: &[u8], max: usize) -> Vec<(u32, Vec<u8>, u32)> {
    use pcap_parser::pcapng::Block;
    use pcap_parser::{PcapBlockOwned, PcapError, create_reader};
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let Ok(mut reader) = create_reader(1 << 20, bytes) else { return out };
    let mut links: Vec<u32> = Vec::new();
    for _ in 0..100_000 {
        if out.len() >= max {
            break;
        }
        match reader.next() {
            Ok((offset, block)) => {
                let frame = match block {
                    PcapBlockOwned::LegacyHeader(h) => {
                        links = vec![h.network.0 as u32 & 0x03ff_ffff];
                        None
                    }
                    PcapBlockOwned::Legacy(b) => Some((links.first().copied().unwrap_or(1), b.data, b.origlen)),
                    PcapBlockOwned::NG(Block::SectionHeader(_)) => {
                        links.clear();
                        None
                    }
                    PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                        links.push(idb.linktype.0 as u32 & 0xffff);
                        None
                    }
                    PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                        let link = links.get(epb.if_id as usize).copied().unwrap_or(1);
                        Some((link, &epb.data[..(epb.caplen as usize).min(epb.data.len())], epb.origlen))
                    }
                    PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                        Some((links.first().copied().unwrap_or(1), spb.data, spb.origlen))
                    }
                    PcapBlockOwned::NG(_) => None,
                };
                if let Some((link, data, orig)) = frame
                    && seen.insert((link, data.iter().take(96).copied().collect::<Vec<u8>>()))
                {
                    out.push((link, data.to_vec(), orig));
                }
                reader.consume(offset);
            }
            Err(PcapError::Incomplete(_)) => {
                if reader.refill().is_err() {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    out
}

/// Packet snapshots of real frames, tracepoint records of every kind and watch starts, laid
/// out as the eBPF programs write them (`tcpviz_common::PacketRecord`, `TraceRecord`,
/// `WatchRecord`).
fn ring_record_seeds(dir: &Path, frames: &[(u32, Vec<u8>, u32)]) -> Result<()> {
    use tcpviz_common::{
        RECORD_PACKET, RECORD_WATCH, SNAP_LEN, TP_COUNT, TRACE_RAW_LEN, WATCH_SACK_SENT, WATCH_TRACEPOINT,
        WATCH_ZERO_WINDOW_SENT,
    };
    for (i, (link, data, orig_len)) in frames.iter().filter(|(l, _, _)| *l == 1 || *l == 101).take(48).enumerate() {
        let snap = data.len().min(SNAP_LEN);
        let mut r = vec![RECORD_PACKET, (i % 2) as u8];
        r.extend_from_slice(&(snap as u16).to_ne_bytes());
        r.extend_from_slice(&(if *link == 1 { 2u32 } else { 3 }).to_ne_bytes());
        r.extend_from_slice(&(5_000_000_000u64 + i as u64 * 1000).to_ne_bytes());
        r.extend_from_slice(&orig_len.to_ne_bytes());
        r.extend_from_slice(&1u16.to_ne_bytes());
        r.extend_from_slice(&[0, 0]);
        let mut snapshot = [0u8; SNAP_LEN];
        snapshot[..snap].copy_from_slice(&data[..snap]);
        r.extend_from_slice(&snapshot);
        put(dir, &decoded(r)?)?;
    }
    for tp in 0..TP_COUNT as u8 {
        // A socket of 10.0.0.1:40000 -> 10.0.0.2:5201 at the usual offsets of the tcp
        // tracepoints; the fuzzer finds the rest.
        let mut raw = [0u8; TRACE_RAW_LEN];
        raw[24..28].copy_from_slice(&1i32.to_ne_bytes());
        raw[28..30].copy_from_slice(&40000u16.to_ne_bytes());
        raw[30..32].copy_from_slice(&5201u16.to_ne_bytes());
        raw[32..34].copy_from_slice(&2u16.to_ne_bytes());
        raw[34..38].copy_from_slice(&[10, 0, 0, 1]);
        raw[38..42].copy_from_slice(&[10, 0, 0, 2]);
        raw[8..10].copy_from_slice(&2u16.to_ne_bytes());
        raw[10..12].copy_from_slice(&40000u16.to_be_bytes());
        raw[12..16].copy_from_slice(&[10, 0, 0, 1]);
        raw[36..38].copy_from_slice(&2u16.to_ne_bytes());
        put(dir, &trace_record(tp, &raw)?)?;
    }
    // Watch starts (`WatchRecord`): each reason, an IPv4 and an IPv6 connection.
    for (reason, tp, v6) in
        [(WATCH_TRACEPOINT, 3u8, false), (WATCH_SACK_SENT, 0, true), (WATCH_ZERO_WINDOW_SENT, 0, false)]
    {
        let mut r = vec![RECORD_WATCH, reason, tp, 0, 0, 0, 0, 0];
        r.extend_from_slice(&7_000_000_000u64.to_ne_bytes());
        let (mut src, mut dst) = ([0u8; 16], [0u8; 16]);
        if v6 {
            src = [0xfd, 0x20, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
            dst = [0xfd, 0x20, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        } else {
            src[..4].copy_from_slice(&[10, 0, 0, 1]);
            dst[..4].copy_from_slice(&[10, 0, 0, 2]);
        }
        r.extend_from_slice(&src);
        r.extend_from_slice(&dst);
        r.extend_from_slice(&40000u16.to_ne_bytes());
        r.extend_from_slice(&5201u16.to_ne_bytes());
        r.extend_from_slice(&[if v6 { 6 } else { 4 }, 0, 0, 0]);
        put(dir, &decoded(r)?)?;
    }
    Ok(())
}

/// A seed, if the agent's decoder takes it (a seed it rejects starts the fuzzer from nothing).
fn decoded(r: Vec<u8>) -> Result<Vec<u8>> {
    match tcpviz_common::decode::record(&r) {
        Ok(_) => Ok(r),
        Err(e) => anyhow::bail!("a ring record seed does not decode: {e:?}"),
    }
}

/// A tracepoint record laid out as `tcpviz_common::TraceRecord` is, field by field at its
/// offset (a seed that missed a field the struct gained would be rejected as too short by
/// the decoder, and the fuzzer would start from nothing); checked by decoding it back.
fn trace_record(tp: u8, raw: &[u8; tcpviz_common::TRACE_RAW_LEN]) -> Result<Vec<u8>> {
    use std::mem::{offset_of, size_of};
    use tcpviz_common::decode::{Record, record};
    use tcpviz_common::{RECORD_TRACE, TRACE_RAW_LEN, TaskOwner, TraceRecord};
    let mut r = vec![0u8; size_of::<TraceRecord>()];
    let mut at = |offset: usize, bytes: &[u8]| r[offset..offset + bytes.len()].copy_from_slice(bytes);
    at(offset_of!(TraceRecord, kind), &[RECORD_TRACE]);
    at(offset_of!(TraceRecord, tracepoint), &[tp]);
    at(offset_of!(TraceRecord, raw_len), &(TRACE_RAW_LEN as u16).to_ne_bytes());
    at(offset_of!(TraceRecord, netns), &4_026_531_840u32.to_ne_bytes());
    at(offset_of!(TraceRecord, ts_boot_ns), &6_000_000_000u64.to_ne_bytes());
    at(offset_of!(TraceRecord, skb_seq), &1000u32.to_ne_bytes());
    at(offset_of!(TraceRecord, skb_end_seq), &3896u32.to_ne_bytes());
    at(offset_of!(TraceRecord, skb_gso_segs), &2u16.to_ne_bytes());
    at(offset_of!(TraceRecord, skb_gso_size), &1448u16.to_ne_bytes());
    at(offset_of!(TraceRecord, sk_mss), &1448u32.to_ne_bytes());
    let owner = offset_of!(TraceRecord, owner);
    at(owner + offset_of!(TaskOwner, tgid), &4242u32.to_ne_bytes());
    at(owner + offset_of!(TaskOwner, tid), &4243u32.to_ne_bytes());
    at(owner + offset_of!(TaskOwner, cgroup_id), &9001u64.to_ne_bytes());
    at(owner + offset_of!(TaskOwner, comm), b"iperf3");
    at(offset_of!(TraceRecord, accepted_sk), &0xffff_8881_0000_1000u64.to_ne_bytes());
    at(offset_of!(TraceRecord, raw), raw);
    match record(&r) {
        Ok(Record::Trace(t)) if t.tracepoint == tp && t.owner.tgid == 4242 && t.raw == *raw => Ok(r),
        Ok(_) => anyhow::bail!("a tracepoint seed decodes to other values than written"),
        Err(e) => anyhow::bail!("a tracepoint seed does not decode: {e:?}"),
    }
}

/// Scripts for the tailer target (fuzz/fuzz_targets/tailer.rs): setup byte (mode + 3 ×
/// source), then 3-byte operations: 0-2 append 1 + n % 4096 bytes, 3 poll, 4 rotate,
/// 5 truncate to n, 6 rewrite.
fn tailer_seeds(dir: &Path) -> Result<()> {
    let op = |code: u8, n: u16| -> [u8; 3] {
        let b = n.to_be_bytes();
        [code, b[0], b[1]]
    };
    for setup in 0..9u8 {
        let scripts: [Vec<[u8; 3]>; 4] = [
            // The file header, packets one poll at a time.
            vec![op(3, 0), op(0, 23), op(3, 0), op(0, 99), op(3, 0), op(0, 399), op(3, 0), op(0, 2000), op(3, 0)],
            // A packet cut in half, the rest later; rotations.
            vec![
                op(0, 60),
                op(3, 0),
                op(0, 7),
                op(3, 0),
                op(4, 0),
                op(0, 300),
                op(3, 0),
                op(4, 0),
                op(0, 999),
                op(3, 0),
            ],
            // Rotate before the first poll, twice.
            vec![op(0, 500), op(4, 0), op(0, 500), op(4, 0), op(0, 80), op(3, 0), op(3, 0)],
            // Truncate and rewrite under the reader.
            vec![op(0, 800), op(3, 0), op(5, 100), op(3, 0), op(0, 400), op(6, 3), op(3, 0)],
        ];
        for s in scripts {
            let mut seed = vec![setup];
            seed.extend(s.iter().flatten());
            put(dir, &seed)?;
        }
    }
    Ok(())
}

/// Format files: this kernel's tcp and sock tracepoints when tracefs is mounted, and the
/// copies kept in fuzz/seeds/tracefs (which the ring_record target also embeds).
fn format_files() -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![PathBuf::from("fuzz/seeds/tracefs")];
    for cat in ["tcp", "sock"] {
        if let Ok(entries) = fs::read_dir(Path::new("/sys/kernel/tracing/events").join(cat)) {
            dirs.extend(entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()));
        }
    }
    for d in dirs {
        let files: Vec<PathBuf> = if d.join("format").is_file() {
            vec![d.join("format")]
        } else {
            fs::read_dir(&d).map(|e| e.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default()
        };
        out.extend(files.iter().filter_map(|f| fs::read_to_string(f).ok()));
    }
    out
}

/// A BTF blob in the layout of the running kernel's, with the types behind the agent's
/// member paths: `sock.__sk_common.skc_net.net`, `net.ns.inum`, `sk_buff.cb`.
fn agent_paths_btf() -> Vec<u8> {
    const INT: u32 = 1;
    const PTR: u32 = 2;
    const ARRAY: u32 = 3;
    const STRUCT: u32 = 4;
    const UNION: u32 = 5;
    const TYPEDEF: u32 = 8;
    let mut strings = vec![0u8];
    let mut name = |s: &str| -> u32 {
        let off = strings.len() as u32;
        strings.extend_from_slice(s.as_bytes());
        strings.push(0);
        off
    };
    let (n_int, n_char, n_net, n_ns_common, n_inum, n_ns, n_possible, n_sk_common, n_skc_net, n_sock, n_sk_buff, n_cb) = (
        name("unsigned int"),
        name("char"),
        name("net"),
        name("ns_common"),
        name("inum"),
        name("ns"),
        name("possible_net_t"),
        name("sock_common"),
        name("skc_net"),
        name("sock"),
        name("sk_buff"),
        name("cb"),
    );
    let (n_sk_common_member, n_net_member, n_pad) = (name("__sk_common"), name("net"), name("skc_hash"));
    let info = |kind: u32, vlen: u32, kind_flag: bool| (kind << 24) | vlen | if kind_flag { 1 << 31 } else { 0 };
    let words: Vec<Vec<u32>> = vec![
        // 1: unsigned int
        vec![n_int, info(INT, 0, false), 4, 32],
        // 2: char
        vec![n_char, info(INT, 0, false), 1, 8],
        // 3: struct ns_common { ...; unsigned int inum at 16 bytes }
        vec![n_ns_common, info(STRUCT, 1, false), 24, n_inum, 1, 128],
        // 4: struct net { ...; struct ns_common ns at 120 bytes }
        vec![n_net, info(STRUCT, 1, false), 4096, n_ns, 3, 960],
        // 5: struct net *
        vec![0, info(PTR, 0, false), 4],
        // 6: struct { struct net *net } (possible_net_t's body)
        vec![0, info(STRUCT, 1, false), 8, n_net_member, 5, 0],
        // 7: typedef possible_net_t
        vec![n_possible, info(TYPEDEF, 0, false), 6],
        // 8: anonymous union { unsigned int skc_hash; possible_net_t skc_net }
        vec![0, info(UNION, 2, false), 8, n_pad, 1, 0, n_skc_net, 7, 0],
        // 9: struct sock_common { ...; <anonymous union> at 48 bytes }
        vec![n_sk_common, info(STRUCT, 1, true), 136, 0, 8, 384],
        // 10: struct sock { struct sock_common __sk_common }
        vec![n_sock, info(STRUCT, 1, false), 760, n_sk_common_member, 9, 0],
        // 11: char[48]
        vec![0, info(ARRAY, 0, false), 0, 2, 1, 48],
        // 12: struct sk_buff { ...; char cb[48] at 40 bytes }
        vec![n_sk_buff, info(STRUCT, 1, false), 232, n_cb, 11, 320],
    ];
    let types: Vec<u8> = words.iter().flatten().flat_map(|w| w.to_le_bytes()).collect();
    btf_blob(&types, &strings)
}

fn btf_blob(types: &[u8], strings: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xeb9fu16.to_le_bytes());
    out.extend_from_slice(&[1, 0]);
    for w in [24u32, 0, types.len() as u32, types.len() as u32, strings.len() as u32] {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out.extend_from_slice(types);
    out.extend_from_slice(strings);
    out
}

/// The first `count` types of a kernel's BTF, with only the strings they name.
fn btf_prefix(data: &[u8], count: usize) -> Option<Vec<u8>> {
    let u32_at = |d: &[u8], at: usize| d.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let hdr = u32_at(data, 4)? as usize;
    let (type_off, type_len) = (u32_at(data, 8)? as usize, u32_at(data, 12)? as usize);
    let (str_off, str_len) = (u32_at(data, 16)? as usize, u32_at(data, 20)? as usize);
    let types = data.get(hdr + type_off..hdr + type_off + type_len)?;
    let strings = data.get(hdr + str_off..hdr + str_off + str_len)?;
    let mut new_strings = vec![0u8];
    let mut remap = |off: u32| -> u32 {
        if off == 0 {
            return 0;
        }
        let s = strings.get(off as usize..).unwrap_or(&[]);
        let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
        let at = new_strings.len() as u32;
        new_strings.extend_from_slice(&s[..end]);
        new_strings.push(0);
        at
    };
    let mut out_types = Vec::new();
    let mut at = 0;
    for _ in 0..count {
        if at + 12 > types.len() {
            break;
        }
        let info = u32_at(types, at + 4)?;
        let (vlen, kind) = ((info & 0xffff) as usize, (info >> 24) & 0x1f);
        // (bytes after the 12-byte header, size of each named entry or 0)
        let (extra, entry) = match kind {
            4 | 5 => (12 * vlen, 12),
            6 | 13 => (8 * vlen, 8),
            19 => (12 * vlen, 12),
            15 => (12 * vlen, 0),
            1 | 14 | 17 => (4, 0),
            3 => (12, 0),
            _ => (0, 0),
        };
        let mut rec = types.get(at..at + 12 + extra)?.to_vec();
        let name = remap(u32_at(&rec, 0)?);
        rec[0..4].copy_from_slice(&name.to_le_bytes());
        if entry > 0 {
            for i in 0..vlen {
                let o = 12 + i * entry;
                let n = remap(u32_at(&rec, o)?);
                rec[o..o + 4].copy_from_slice(&n.to_le_bytes());
            }
        }
        out_types.extend_from_slice(&rec);
        at += 12 + extra;
    }
    Some(btf_blob(&out_types, &new_strings))
}

/// Sessions written by `tcpviz parse-pcap` on the smaller captures: events.jsonl (its first
/// lines), summary.json, alerts.jsonl and kernel_samples.jsonl joined by NUL bytes, the
/// input layout of the events_jsonl target.
fn events_seeds(dir: &Path, captures: &[PathBuf]) -> Result<()> {
    sh(cargo().args(["build", "-q", "-p", "tcpviz", "--bin", "tcpviz"]))?;
    let base = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("target"));
    let bin = base.join("debug/tcpviz");
    let tmp = std::env::temp_dir().join(format!("tcpviz-fuzz-seeds-{}", std::process::id()));
    let small = captures.iter().filter(|c| fs::metadata(c).is_ok_and(|m| m.len() <= 400 * 1024)).take(16);
    for (i, c) in small.enumerate() {
        let out = tmp.join(i.to_string());
        let status = Command::new(&bin)
            .arg("parse-pcap")
            .arg("--in")
            .arg(c)
            .arg("--out")
            .arg(&out)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        // A damaged capture still writes its session (exit 1).
        if !out.join("events.jsonl").is_file() {
            eprintln!("fuzz seeds: no session from {} ({status})", c.display());
            continue;
        }
        let read = |name: &str| fs::read(out.join(name)).unwrap_or_default();
        let events = read("events.jsonl");
        let mut head: Vec<u8> = Vec::new();
        for line in events.split_inclusive(|&b| b == b'\n').take(40) {
            head.extend_from_slice(line);
        }
        for with_summary in [false, true] {
            let mut seed = head.clone();
            if with_summary {
                seed.push(0);
                seed.extend(read("summary.json"));
                seed.push(0);
                seed.extend(read("alerts.jsonl"));
            }
            if seed.len() <= SEED_MAX {
                put(dir, &seed)?;
            }
        }
    }
    let _ = fs::remove_dir_all(&tmp);
    Ok(())
}
