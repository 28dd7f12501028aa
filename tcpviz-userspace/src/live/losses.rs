//! What the kernel side lost, read from its counters and from the programs' info.

use std::os::fd::AsFd;

use aya::maps::{MapData, PerCpuArray};
use aya::programs::ProgramFd;
use tcpviz_common::{COUNTER_PACKETS_LOST, COUNTER_TRACE_LOST, COUNTERS};

use super::{bpf_info, leftovers};

/// Records the kernel side lost, by cause. Nothing is lost silently: a full ring buffer,
/// a program run the kernel skipped (`recursion_misses`: another BPF program was running on
/// that CPU, e.g. a tracepoint fired from an interrupt while one of ours ran), or a
/// tracepoint record that could not be read.
#[derive(Debug, Clone, Default)]
pub struct KernelLosses {
    pub packets_ring_full: u64,
    /// Runs of the TC programs the kernel skipped.
    pub packets_recursion: u64,
    pub events_ring_full: u64,
    /// Runs of the tracepoint programs the kernel skipped.
    pub events_recursion: u64,
    /// Tracepoint records whose fields could not be copied.
    pub events_unreadable: u64,
    /// `recursion_misses` of every program (kernel name).
    pub recursion_by_program: Vec<(String, u64)>,
}

impl KernelLosses {
    pub fn read(counters: &[u64; COUNTERS], programs: &[(String, ProgramFd)], unreadable: u64) -> KernelLosses {
        let mut l = KernelLosses {
            packets_ring_full: counters[COUNTER_PACKETS_LOST as usize],
            events_ring_full: counters[COUNTER_TRACE_LOST as usize],
            events_unreadable: unreadable,
            ..Default::default()
        };
        for (name, fd) in programs {
            let misses = match bpf_info::prog_info(fd.as_fd()) {
                Ok(info) => info.recursion_misses,
                Err(e) => {
                    tracing::debug!("cannot read the info of {name}: {e}");
                    0
                }
            };
            if leftovers::TC_PROGRAMS.contains(&name.as_str()) {
                l.packets_recursion += misses;
            } else {
                l.events_recursion += misses;
            }
            l.recursion_by_program.push((name.clone(), misses));
        }
        l
    }

    pub fn packets(&self) -> u64 {
        self.packets_ring_full + self.packets_recursion
    }

    pub fn kernel_events(&self) -> u64 {
        self.events_ring_full + self.events_recursion + self.events_unreadable
    }

    pub fn total(&self) -> u64 {
        self.packets() + self.kernel_events()
    }

    pub fn ring_full(&self) -> u64 {
        self.packets_ring_full + self.events_ring_full
    }

    /// One line for the operator.
    pub fn describe(&self) -> String {
        let mut causes = Vec::new();
        if self.ring_full() > 0 {
            causes.push(format!(
                "ring buffer full: {} packets, {} kernel events",
                self.packets_ring_full, self.events_ring_full
            ));
        }
        if self.packets_recursion + self.events_recursion > 0 {
            let progs: Vec<String> =
                self.recursion_by_program.iter().filter(|(_, n)| *n > 0).map(|(p, n)| format!("{p} {n}")).collect();
            causes.push(format!("runs the kernel skipped (another BPF program was running): {}", progs.join(", ")));
        }
        if self.events_unreadable > 0 {
            causes.push(format!("unreadable tracepoint records: {}", self.events_unreadable));
        }
        format!("{} records lost ({})", self.total(), causes.join("; "))
    }
}

/// Per-CPU counters of the kernel side, summed.
pub fn read_counters(map: &PerCpuArray<MapData, u64>) -> [u64; COUNTERS] {
    let mut out = [0u64; COUNTERS];
    for (i, slot) in out.iter_mut().enumerate() {
        if let Ok(values) = map.get(&(i as u32), 0) {
            *slot = values.iter().sum();
        }
    }
    out
}
