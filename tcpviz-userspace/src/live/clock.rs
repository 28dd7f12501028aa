//! Boot-time to wall-clock conversion. The kernel stamps records with
//! `bpf_ktime_get_boot_ns()` (CLOCK_BOOTTIME, which keeps counting during suspend); events
//! and pcapng files carry wall time (CLOCK_REALTIME). The offset between the two clocks is
//! measured at start-up by reading them back to back, keeping the tightest of several tries.

use crate::time::TimestampNs;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootClock {
    /// realtime - boottime, in nanoseconds.
    pub offset_ns: i64,
    /// Uncertainty of the offset (the window the two readings straddle).
    pub error_ns: i64,
}

fn now(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

impl BootClock {
    pub fn measure() -> BootClock {
        let mut best = BootClock { offset_ns: 0, error_ns: i64::MAX };
        for _ in 0..16 {
            let b0 = now(libc::CLOCK_BOOTTIME);
            let r = now(libc::CLOCK_REALTIME);
            let b1 = now(libc::CLOCK_BOOTTIME);
            if b1 - b0 < best.error_ns {
                best = BootClock { offset_ns: r - (b0 + (b1 - b0) / 2), error_ns: b1 - b0 };
            }
        }
        best
    }

    /// A record's boot time in wall time. A time no kernel could have stamped (past the
    /// year 2262) saturates instead of overflowing.
    pub fn to_wall(self, boot_ns: u64) -> TimestampNs {
        i64::try_from(boot_ns).unwrap_or(i64::MAX).saturating_add(self.offset_ns)
    }
}

/// Current CLOCK_BOOTTIME.
pub fn boot_now() -> u64 {
    now(libc::CLOCK_BOOTTIME) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_time_converts_to_wall_time() {
        let c = BootClock::measure();
        assert!(c.error_ns < 1_000_000, "two clock reads took {} ns", c.error_ns);
        let wall = c.to_wall(boot_now());
        let real = now(libc::CLOCK_REALTIME);
        assert!((wall - real).abs() < 1_000_000, "converted {wall}, realtime {real}");
        // Pure arithmetic: a fixed offset maps exactly.
        let fixed = BootClock { offset_ns: 1_700_000_000_000_000_000, error_ns: 0 };
        assert_eq!(fixed.to_wall(5_000), 1_700_000_000_000_005_000);
    }

    /// Found by the `ring_record` fuzz target: a record stamped near u64::MAX (a corrupt or
    /// hostile ring record) overflowed the addition.
    #[test]
    fn absurd_boot_times_saturate() {
        let c = BootClock { offset_ns: 1_764_000_000_000_000_000, error_ns: 0 };
        assert_eq!(c.to_wall(u64::MAX), i64::MAX);
        assert_eq!(c.to_wall(i64::MAX as u64), i64::MAX);
        let behind = BootClock { offset_ns: -5, error_ns: 0 };
        assert_eq!(behind.to_wall(3), -2);
    }
}
