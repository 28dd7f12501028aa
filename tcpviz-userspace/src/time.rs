//! Time as the analysis counts it: nanoseconds since the Unix epoch, one integer type for
//! every source (capture files, ring files, the kernel's boot clock converted).

/// Nanoseconds since the Unix epoch. Event time everywhere in the analysis.
pub type TimestampNs = i64;

pub const NS_PER_SEC: i64 = 1_000_000_000;

/// Seconds since the epoch as a float, the `ts` of the JSON events.
pub fn ts_to_secs(ts: TimestampNs) -> f64 {
    ts.div_euclid(NS_PER_SEC) as f64 + ts.rem_euclid(NS_PER_SEC) as f64 / NS_PER_SEC as f64
}

/// An optional timestamp in 8 bytes, where `Option<TimestampNs>` takes 16: per-flow state
/// holds a few, and the flow table holds hundreds of thousands of flows. No source gives a
/// time of `i64::MIN`, which stands for none.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MaybeTs(TimestampNs);

impl MaybeTs {
    pub const NONE: MaybeTs = MaybeTs(TimestampNs::MIN);

    pub fn some(ts: TimestampNs) -> MaybeTs {
        MaybeTs(ts)
    }

    pub fn get(self) -> Option<TimestampNs> {
        (self.0 != TimestampNs::MIN).then_some(self.0)
    }

    pub fn is_none(self) -> bool {
        self.0 == TimestampNs::MIN
    }
}

impl Default for MaybeTs {
    fn default() -> Self {
        MaybeTs::NONE
    }
}

impl std::fmt::Debug for MaybeTs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

/// The wall clock now.
pub fn now_ns() -> TimestampNs {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos().min(i64::MAX as u128) as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maybe_ts_is_an_option_in_eight_bytes() {
        assert_eq!(std::mem::size_of::<MaybeTs>(), 8);
        assert_eq!(MaybeTs::default().get(), None);
        assert_eq!(MaybeTs::some(-5).get(), Some(-5));
        assert_eq!(MaybeTs::some(0).get(), Some(0));
        assert!(MaybeTs::NONE.is_none() && !MaybeTs::some(0).is_none());
    }

    #[test]
    fn seconds_conversion_handles_negative_and_fraction() {
        assert_eq!(ts_to_secs(1_500_000_000), 1.5);
        assert_eq!(ts_to_secs(-500_000_000), -0.5);
        let t = 1_700_000_000_123_456_789;
        assert!((ts_to_secs(t) - 1_700_000_000.123_456_7).abs() < 1e-6);
    }
}
