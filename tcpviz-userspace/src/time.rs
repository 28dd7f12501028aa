//! Time as the analysis counts it: nanoseconds since the Unix epoch, one integer type for
//! every source (capture files, ring files, the kernel's boot clock converted).

/// Nanoseconds since the Unix epoch. Event time everywhere in the analysis.
pub type TimestampNs = i64;

pub const NS_PER_SEC: i64 = 1_000_000_000;

/// Seconds since the epoch as a float, the `ts` of the JSON events.
pub fn ts_to_secs(ts: TimestampNs) -> f64 {
    ts.div_euclid(NS_PER_SEC) as f64 + ts.rem_euclid(NS_PER_SEC) as f64 / NS_PER_SEC as f64
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
    fn seconds_conversion_handles_negative_and_fraction() {
        assert_eq!(ts_to_secs(1_500_000_000), 1.5);
        assert_eq!(ts_to_secs(-500_000_000), -0.5);
        let t = 1_700_000_000_123_456_789;
        assert!((ts_to_secs(t) - 1_700_000_000.123_456_7).abs() < 1e-6);
    }
}
