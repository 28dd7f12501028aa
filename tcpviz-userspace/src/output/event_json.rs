//! An event as its `events.jsonl` line, written field by field: the bytes serde_json writes
//! for [`Event`]'s derived `Serialize`, at a fraction of the cost. On a capture with an event
//! per connection, serde_json spent a tenth of the whole run on events, much of it escaping
//! the field names character by character. The floats, strings that need escaping, and the
//! process owners (live sessions only) are still written by serde_json itself, so those
//! bytes cannot drift from its; a test compares whole lines on random events.

use std::io;
use std::net::IpAddr;

use crate::event::{Event, Extra};
use crate::time::ts_to_secs;

/// Appends `e` as one JSON object, without the newline.
pub fn write_event(buf: &mut Vec<u8>, e: &Event) -> io::Result<()> {
    buf.extend_from_slice(b"{\"ts\":");
    float(buf, ts_to_secs(e.ts))?;
    buf.extend_from_slice(b",\"event\":\"");
    buf.extend_from_slice(e.event.as_str().as_bytes());
    buf.extend_from_slice(b"\",\"flow_id\":");
    int(buf, e.flow_id);
    buf.extend_from_slice(b",\"src\":");
    ip(buf, e.src);
    buf.extend_from_slice(b",\"dst\":");
    ip(buf, e.dst);
    buf.extend_from_slice(b",\"sport\":");
    int(buf, e.sport);
    buf.extend_from_slice(b",\"dport\":");
    int(buf, e.dport);
    buf.extend_from_slice(b",\"seq\":");
    int(buf, e.seq);
    buf.extend_from_slice(b",\"ack\":");
    int(buf, e.ack);
    buf.extend_from_slice(b",\"len\":");
    int(buf, e.len);
    buf.extend_from_slice(b",\"flags\":");
    string(buf, &e.flags)?;
    buf.extend_from_slice(b",\"severity\":\"");
    buf.extend_from_slice(e.severity.as_str().as_bytes());
    buf.extend_from_slice(b"\",\"extra\":");
    extra(buf, &e.extra)?;
    buf.extend_from_slice(b",\"origin\":\"");
    buf.extend_from_slice(e.origin.as_str().as_bytes());
    buf.push(b'"');
    if let Some(frame) = e.frame {
        buf.extend_from_slice(b",\"frame\":");
        int(buf, frame);
    }
    if let Some(file) = &e.file {
        buf.extend_from_slice(b",\"file\":");
        string(buf, file)?;
    }
    buf.push(b'}');
    Ok(())
}

/// The fields of an object, each with the comma before it but the first.
struct Fields<'b> {
    buf: &'b mut Vec<u8>,
    first: bool,
}

impl Fields<'_> {
    /// `"name":` (`name` is one of [`Extra`]'s field names: nothing to escape).
    fn name(&mut self, name: &str) -> &mut Vec<u8> {
        if !self.first {
            self.buf.push(b',');
        }
        self.first = false;
        self.buf.push(b'"');
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.extend_from_slice(b"\":");
        self.buf
    }

    fn int<T: itoa::Integer>(&mut self, name: &str, v: Option<T>) {
        if let Some(v) = v {
            int(self.name(name), v);
        }
    }

    fn float(&mut self, name: &str, v: Option<f64>) -> io::Result<()> {
        match v {
            Some(v) => float(self.name(name), v),
            None => Ok(()),
        }
    }

    fn string(&mut self, name: &str, v: Option<&str>) -> io::Result<()> {
        match v {
            Some(v) => string(self.name(name), v),
            None => Ok(()),
        }
    }

    fn name_str(&mut self, name: &str, v: Option<&'static str>) {
        if let Some(v) = v {
            let buf = self.name(name);
            buf.push(b'"');
            buf.extend_from_slice(v.as_bytes());
            buf.push(b'"');
        }
    }

    fn serde<T: serde::Serialize>(&mut self, name: &str, v: Option<&T>) -> io::Result<()> {
        match v {
            Some(v) => serde_json::to_writer(self.name(name), v).map_err(io::Error::other),
            None => Ok(()),
        }
    }
}

/// [`Extra`], its fields in their declared order, the absent ones left out.
fn extra(buf: &mut Vec<u8>, x: &Extra) -> io::Result<()> {
    buf.push(b'{');
    let mut f = Fields { buf: &mut *buf, first: true };
    f.name_str("reason", x.reason.map(|r| r.as_str()));
    f.int("rel_seq", x.rel_seq);
    f.int("rel_ack", x.rel_ack);
    f.int("window", x.window);
    f.int("bytes_in_flight", x.bytes_in_flight);
    f.float("srtt_ms", x.srtt_ms)?;
    f.float("irtt_ms", x.irtt_ms)?;
    f.int("dupack_num", x.dupack_num);
    f.int("dupack_frame", x.dupack_frame);
    f.float("rto_ms", x.rto_ms)?;
    f.int("rto_frame", x.rto_frame);
    f.float("stall_ms", x.stall_ms)?;
    f.int("attempt", x.attempt);
    f.string("detail", x.detail.as_deref())?;
    f.string("state", x.state.as_deref())?;
    f.string("old_state", x.old_state.as_deref())?;
    f.int("err", x.err);
    f.int("reset_reason", x.reset_reason);
    f.int("wire_frame", x.wire_frame);
    f.int("end_seq", x.end_seq);
    f.int("segments", x.segments);
    f.int("mss", x.mss);
    f.name_str("wire_verdict", x.wire_verdict.map(|k| k.as_str()));
    f.serde("src_process", x.src_process.as_deref())?;
    f.serde("dst_process", x.dst_process.as_deref())?;
    buf.push(b'}');
    Ok(())
}

fn int<T: itoa::Integer>(buf: &mut Vec<u8>, v: T) {
    buf.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// serde_json's own float form (shortest round trip; `null` when not finite).
fn float(buf: &mut Vec<u8>, v: f64) -> io::Result<()> {
    serde_json::to_writer(buf, &v).map_err(io::Error::other)
}

/// A JSON string: copied as it is when nothing in it needs escaping (the flags, the file
/// names, the states), else escaped by serde_json.
fn string(buf: &mut Vec<u8>, s: &str) -> io::Result<()> {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        buf.push(b'"');
        buf.extend_from_slice(s.as_bytes());
        buf.push(b'"');
        Ok(())
    } else {
        serde_json::to_writer(buf, s).map_err(io::Error::other)
    }
}

/// An address as serde writes it (its `Display` form, which needs no escaping).
fn ip(buf: &mut Vec<u8>, addr: IpAddr) {
    buf.push(b'"');
    match addr {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            int(buf, a);
            for octet in [b, c, d] {
                buf.push(b'.');
                int(buf, octet);
            }
        }
        IpAddr::V6(v6) => {
            use std::io::Write as _;
            // Writing to a Vec cannot fail.
            let _ = write!(buf, "{v6}");
        }
    }
    buf.push(b'"');
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::sync::Arc;

    use strum::VariantArray;

    use super::*;
    use crate::attribution::Process;
    use crate::event::{EventKind, Origin, Reason, Severity};

    /// xorshift: the same events on every run, no test dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn maybe<T>(&mut self, v: impl FnOnce(&mut Rng) -> T) -> Option<T> {
            if self.below(3) == 0 { Some(v(self)) } else { None }
        }
        fn pick<T: Copy>(&mut self, from: &[T]) -> T {
            from[self.below(from.len() as u64) as usize]
        }
        fn float(&mut self) -> f64 {
            match self.below(8) {
                0 => self.pick(&[0.0, -0.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, f64::MIN_POSITIVE]),
                1 => f64::from_bits(self.next()),
                2 => self.below(1_000_000) as f64,
                _ => self.below(10_000_000) as f64 / 1e3,
            }
        }
        fn text(&mut self) -> String {
            const PIECES: &[&str] = &[
                "A",
                "RA",
                "ESTABLISHED",
                "\"",
                "\\",
                "\n",
                "\t",
                "\u{1}",
                "\u{1f}",
                "\u{7f}",
                "é",
                "→",
                "😀",
                " ",
                "/",
            ];
            (0..self.below(6)).map(|_| self.pick(PIECES)).collect()
        }
        fn ip(&mut self) -> IpAddr {
            match self.below(5) {
                0 => IpAddr::V6(Ipv6Addr::from(self.next() as u128 * self.next() as u128)),
                1 => IpAddr::V6(Ipv6Addr::from(self.below(65_536) as u128)),
                2 => IpAddr::V6(Ipv4Addr::from(self.next() as u32).to_ipv6_mapped()),
                _ => IpAddr::V4(Ipv4Addr::from(self.next() as u32)),
            }
        }
    }

    fn process(r: &mut Rng) -> Arc<Process> {
        Arc::new(Process {
            pid: r.next() as u32,
            comm: r.text(),
            cgroup: r.maybe(Rng::text),
            cgroup_id: r.next(),
            hook: r.text(),
        })
    }

    fn random_event(r: &mut Rng) -> Event {
        let extra = Extra {
            reason: r.maybe(|r| r.pick(Reason::VARIANTS)),
            rel_seq: r.maybe(|r| r.next() as u32),
            rel_ack: r.maybe(|r| r.next() as u32),
            window: r.maybe(Rng::next),
            bytes_in_flight: r.maybe(|r| r.next() as u32),
            srtt_ms: r.maybe(Rng::float),
            irtt_ms: r.maybe(Rng::float),
            dupack_num: r.maybe(|r| r.below(100) as u32),
            dupack_frame: r.maybe(Rng::next),
            rto_ms: r.maybe(Rng::float),
            rto_frame: r.maybe(Rng::next),
            stall_ms: r.maybe(Rng::float),
            attempt: r.maybe(|r| r.below(10) as u32),
            detail: r.maybe(Rng::text),
            state: r.maybe(Rng::text),
            old_state: r.maybe(Rng::text),
            err: r.maybe(|r| r.next() as i64),
            reset_reason: r.maybe(|r| r.below(40) as i64 - 20),
            wire_frame: r.maybe(Rng::next),
            end_seq: r.maybe(|r| r.next() as u32),
            segments: r.maybe(|r| r.below(64) as u32),
            mss: r.maybe(|r| r.below(65_536) as u32),
            wire_verdict: r.maybe(|r| r.pick(EventKind::VARIANTS)),
            src_process: r.maybe(process),
            dst_process: r.maybe(process),
        };
        Event {
            ts: match r.below(4) {
                0 => r.next() as i64,
                1 => -(r.below(1 << 40) as i64),
                _ => 1_796_000_000_000_000_000 + r.below(1 << 40) as i64,
            },
            event: r.pick(EventKind::VARIANTS),
            flow_id: if r.below(2) == 0 { r.next() } else { r.below(1000) },
            src: r.ip(),
            dst: r.ip(),
            sport: r.next() as u16,
            dport: r.next() as u16,
            seq: r.next() as u32,
            ack: r.next() as u32,
            len: r.below(70_000) as u32,
            flags: r.text(),
            severity: r.pick(&[Severity::Info, Severity::Warning, Severity::Critical]),
            extra,
            origin: r.pick(&[Origin::Wire, Origin::Kernel]),
            frame: r.maybe(Rng::next),
            file: r.maybe(|r| Arc::from(r.text())),
        }
    }

    #[test]
    fn lines_are_serde_jsons_bytes() {
        let mut r = Rng(0x9e37_79b9_7f4a_7c15);
        let mut line = Vec::new();
        for i in 0..20_000 {
            let e = random_event(&mut r);
            line.clear();
            write_event(&mut line, &e).unwrap();
            let serde = serde_json::to_vec(&e).unwrap();
            assert_eq!(String::from_utf8_lossy(&line), String::from_utf8_lossy(&serde), "event {i}: {e:?}");
        }
    }

    #[test]
    fn an_event_with_nothing_optional_is_serde_jsons_bytes() {
        let e = Event {
            ts: 0,
            event: EventKind::Retransmission,
            flow_id: 0,
            src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            dst: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            sport: 0,
            dport: 0,
            seq: 0,
            ack: 0,
            len: 0,
            flags: String::new(),
            severity: Severity::Info,
            extra: Extra::default(),
            origin: Origin::Wire,
            frame: None,
            file: None,
        };
        let mut line = Vec::new();
        write_event(&mut line, &e).unwrap();
        assert_eq!(line, serde_json::to_vec(&e).unwrap());
    }

    #[test]
    fn names_are_serdes() {
        for r in Reason::VARIANTS {
            assert_eq!(serde_json::to_string(r).unwrap(), format!("\"{}\"", r.as_str()));
        }
        for o in [Origin::Wire, Origin::Kernel] {
            assert_eq!(serde_json::to_string(&o).unwrap(), format!("\"{}\"", o.as_str()));
        }
    }
}
