//! `cargo xtask gen-captures [--out DIR] [--scale F]`: synthetic captures for the scale
//! benchmarks, written deterministically (the same bytes on every run):
//!
//! - `syn_scan.pcap`: 2,000,000 SYNs, each from its own address and port (a port scan, or a
//!   SYN flood): every packet is a new connection;
//! - `interleaved.pcap`: 500,000 short connections of 4 packets each (SYN, SYN-ACK, ACK with
//!   data, RST), 5,000 of them open at any moment, their packets interleaved as on a busy
//!   server;
//! - `seq_jumps.pcap`: one connection whose sequence numbers jump wildly (forward, back,
//!   across the 2^32 wrap) for 200,000 packets, against the wrap-safe arithmetic.
//!
//! `--scale 0.1` makes each a tenth of the size (for a quick look).

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

pub fn run(out: &Path, scale: f64) -> Result<()> {
    if !(scale > 0.0 && scale <= 10.0) {
        bail!("--scale must be in (0, 10]");
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let n = |count: f64| ((count * scale) as u64).max(1);
    let written = [
        syn_scan(&out.join("syn_scan.pcap"), n(2_000_000.0))?,
        interleaved(&out.join("interleaved.pcap"), n(500_000.0), 5_000)?,
        seq_jumps(&out.join("seq_jumps.pcap"), n(200_000.0))?,
    ];
    for (path, packets) in written {
        let size = std::fs::metadata(&path)?.len();
        println!("{}: {packets} packets, {:.1} MB", path.display(), size as f64 / 1e6);
    }
    Ok(())
}

/// A small deterministic generator (splitmix64), so the captures are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A little-endian microsecond pcap of Ethernet frames.
struct PcapWriter {
    out: BufWriter<std::fs::File>,
    path: PathBuf,
    packets: u64,
    /// Packet time in microseconds.
    now_us: u64,
}

/// One TCP segment to write.
struct Tcp {
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    payload: u16,
}

const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

impl PcapWriter {
    fn create(path: &Path) -> Result<PcapWriter> {
        let file = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&0xa1b2_c3d4u32.to_le_bytes())?;
        out.write_all(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0])?;
        out.write_all(&96u32.to_le_bytes())?; // snap length: headers only, as a busy server is captured
        out.write_all(&1u32.to_le_bytes())?;
        Ok(PcapWriter { out, path: path.to_path_buf(), packets: 0, now_us: 1_796_000_000_000_000 })
    }

    fn write(&mut self, t: &Tcp) -> Result<()> {
        let mut frame = [0u8; 54];
        frame[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 2]);
        frame[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
        frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip = &mut frame[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(40 + t.payload).to_be_bytes());
        ip[6] = 0x40; // don't fragment
        ip[8] = 64;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&t.src);
        ip[16..20].copy_from_slice(&t.dst);
        let tcp = &mut frame[34..54];
        tcp[0..2].copy_from_slice(&t.sport.to_be_bytes());
        tcp[2..4].copy_from_slice(&t.dport.to_be_bytes());
        tcp[4..8].copy_from_slice(&t.seq.to_be_bytes());
        tcp[8..12].copy_from_slice(&t.ack.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = t.flags;
        tcp[14..16].copy_from_slice(&t.window.to_be_bytes());
        let orig_len = 54 + t.payload as u32;
        let (sec, usec) = (self.now_us / 1_000_000, self.now_us % 1_000_000);
        for v in [sec as u32, usec as u32, 54, orig_len] {
            self.out.write_all(&v.to_le_bytes())?;
        }
        self.out.write_all(&frame)?;
        self.packets += 1;
        Ok(())
    }

    fn finish(mut self) -> Result<(PathBuf, u64)> {
        self.out.flush()?;
        Ok((self.path, self.packets))
    }
}

fn addr(n: u64) -> [u8; 4] {
    // 10.0.0.0/8 and 172.16.0.0/12 style private space, spread by n.
    [10, (n >> 16) as u8, (n >> 8) as u8, n as u8]
}

fn syn_scan(path: &Path, count: u64) -> Result<(PathBuf, u64)> {
    let mut w = PcapWriter::create(path)?;
    let mut rng = Rng(1);
    for i in 0..count {
        w.now_us += 2;
        let r = rng.next();
        w.write(&Tcp {
            src: addr(i / 30_000),
            dst: [192, 0, 2, (r % 250) as u8 + 1],
            sport: 1024 + (i % 30_000) as u16,
            dport: [22, 80, 443, 3306, 5432, 6379, 8080][(r >> 8) as usize % 7],
            seq: (r >> 32) as u32,
            ack: 0,
            flags: SYN,
            window: 64_240,
            payload: 0,
        })?;
    }
    w.finish()
}

fn interleaved(path: &Path, connections: u64, open: u64) -> Result<(PathBuf, u64)> {
    let mut w = PcapWriter::create(path)?;
    let mut rng = Rng(2);
    let server = [192, 0, 2, 10];
    // Each open connection: client address, client port, client ISN, server ISN, packets sent.
    type Conn = ([u8; 4], u16, u32, u32, u8);
    let mut slots: Vec<Option<Conn>> = vec![None; open as usize];
    let mut started = 0u64;
    let mut finished = 0u64;
    while finished < connections {
        let s = (rng.next() % open) as usize;
        let slot = &mut slots[s];
        if slot.is_none() {
            if started == connections {
                continue;
            }
            let r = rng.next();
            *slot = Some((addr(started / 60_000 + 1), 1024 + (started % 60_000) as u16, r as u32, (r >> 32) as u32, 0));
            started += 1;
        }
        let (client, port, cisn, sisn, sent) = slot.expect("filled above");
        w.now_us += 1;
        let (c2s, s2c) = ((client, server, port, 443u16), (server, client, 443u16, port));
        let t = match sent {
            0 => Tcp {
                src: c2s.0,
                dst: c2s.1,
                sport: c2s.2,
                dport: c2s.3,
                seq: cisn,
                ack: 0,
                flags: SYN,
                window: 64_240,
                payload: 0,
            },
            1 => Tcp {
                src: s2c.0,
                dst: s2c.1,
                sport: s2c.2,
                dport: s2c.3,
                seq: sisn,
                ack: cisn.wrapping_add(1),
                flags: SYN | ACK,
                window: 65_160,
                payload: 0,
            },
            2 => Tcp {
                src: c2s.0,
                dst: c2s.1,
                sport: c2s.2,
                dport: c2s.3,
                seq: cisn.wrapping_add(1),
                ack: sisn.wrapping_add(1),
                flags: PSH | ACK,
                window: 502,
                payload: 517,
            },
            _ => Tcp {
                src: s2c.0,
                dst: s2c.1,
                sport: s2c.2,
                dport: s2c.3,
                seq: sisn.wrapping_add(1),
                ack: cisn.wrapping_add(518),
                flags: RST | ACK,
                window: 0,
                payload: 0,
            },
        };
        w.write(&t)?;
        if sent == 3 {
            *slot = None;
            finished += 1;
        } else {
            *slot = Some((client, port, cisn, sisn, sent + 1));
        }
    }
    w.finish()
}

fn seq_jumps(path: &Path, count: u64) -> Result<(PathBuf, u64)> {
    let mut w = PcapWriter::create(path)?;
    let mut rng = Rng(3);
    let (a, b) = ([10, 9, 9, 1], [10, 9, 9, 2]);
    let (mut seq, mut ack) = (0xffff_0000u32, 1_000u32);
    w.write(&Tcp { src: a, dst: b, sport: 40_000, dport: 443, seq, ack: 0, flags: SYN, window: 64_240, payload: 0 })?;
    for i in 1..count {
        w.now_us += 10;
        let r = rng.next();
        // Mostly in order, with jumps forward and back of any size, and across the wrap.
        seq = match r % 16 {
            0 => seq.wrapping_add(r as u32 >> 1),
            1 => seq.wrapping_sub((r >> 20) as u32 % 1_000_000),
            2 => (r >> 32) as u32,
            _ => seq.wrapping_add(1448),
        };
        if i % 2 == 0 {
            w.write(&Tcp {
                src: a,
                dst: b,
                sport: 40_000,
                dport: 443,
                seq,
                ack,
                flags: ACK,
                window: 502,
                payload: 1448,
            })?;
        } else {
            ack = ack.wrapping_add((r >> 40) as u32 % 3);
            w.write(&Tcp {
                src: b,
                dst: a,
                sport: 443,
                dport: 40_000,
                seq: ack,
                ack: seq,
                flags: ACK,
                window: 0x7fff,
                payload: 0,
            })?;
        }
    }
    w.finish()
}
