//! The kernel side as the agent's loop reads it: the two ring buffers, the per-CPU
//! counters and the loaded programs' statistics.

use aya::Ebpf;
use aya::maps::{MapData, PerCpuArray, RingBuf};
use aya::programs::ProgramFd;
use tcpviz_common::COUNTERS;
use tcpviz_common::decode::Record;
use tokio::io::unix::AsyncFd;

use crate::live::LiveError;
use crate::live::losses::{KernelLosses, read_counters};

/// The kernel side as the loop reads it.
pub(super) struct Rings {
    pub(super) packets: AsyncFd<RingBuf<MapData>>,
    pub(super) traces: AsyncFd<RingBuf<MapData>>,
    counters: PerCpuArray<MapData, u64>,
    /// Descriptors of every loaded program, to read what the kernel skipped.
    programs: Vec<(String, ProgramFd)>,
}

impl Rings {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Rings, LiveError> {
        let load_err = |e: aya::maps::MapError| LiveError::Load(e.to_string());
        let packets = RingBuf::try_from(ebpf.take_map("PACKETS").expect("PACKETS map")).map_err(load_err)?;
        let traces = RingBuf::try_from(ebpf.take_map("TRACES").expect("TRACES map")).map_err(load_err)?;
        let counters = PerCpuArray::try_from(ebpf.take_map("COUNTS").expect("COUNTS map")).map_err(load_err)?;
        // SAFETY: the ring buffer owns its map's file descriptor, which stays open as long as
        // the AsyncFd that wraps it.
        let packets = unsafe { AsyncFd::register(packets) }.map_err(|e| LiveError::Load(format!("{e}")))?;
        // SAFETY: as above.
        let traces = unsafe { AsyncFd::register(traces) }.map_err(|e| LiveError::Load(format!("{e}")))?;
        let mut programs: Vec<(String, ProgramFd)> = Vec::new();
        for (name, prog) in ebpf.programs() {
            if let Ok(fd) = prog.fd().and_then(|fd| fd.try_clone().map_err(Into::into)) {
                programs.push((name.to_string(), fd));
            }
        }
        programs.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Rings { packets, traces, counters, programs })
    }

    /// Everything both rings hold, in time order; records that cannot be decoded are
    /// counted in `bad_records`.
    pub(super) fn drain(&mut self, batch: &mut Vec<Record>, bad_records: &mut u64) {
        batch.clear();
        for ring in [self.packets.get_mut(), self.traces.get_mut()] {
            while let Some(item) = ring.next() {
                match tcpviz_common::decode::record(&item) {
                    Ok(rec) => batch.push(rec),
                    Err(e) => {
                        *bad_records += 1;
                        tracing::debug!("bad ring record: {e:?}");
                    }
                }
            }
        }
        batch.sort_by_key(Record::ts_boot_ns);
    }

    pub(super) fn losses(&self, unreadable: u64) -> ([u64; COUNTERS], KernelLosses) {
        let c = read_counters(&self.counters);
        let losses = KernelLosses::read(&c, &self.programs, unreadable);
        (c, losses)
    }
}
