//! Wall-clock time as the engine uses it: milliseconds since the Unix epoch, the unit of due
//! times, store timestamps and delivery times.

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A point in wall-clock time with nanosecond precision, as clients send delivery times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WallTime {
    pub seconds: i64,
    pub nanos: i32,
}

impl WallTime {
    /// Milliseconds since the epoch, rounded down (what the time reads as).
    pub fn floor_ms(self) -> i64 {
        self.seconds
            .saturating_mul(1000)
            .saturating_add(i64::from(self.nanos) / 1_000_000)
    }

    /// Milliseconds since the epoch, rounded up: a message due at this time is never delivered
    /// before it.
    pub fn ceil_ms(self) -> i64 {
        self.seconds
            .saturating_mul(1000)
            .saturating_add((i64::from(self.nanos.max(0)) + 999_999) / 1_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_times_round_up_and_displayed_times_down() {
        let t = WallTime {
            seconds: 10,
            nanos: 1,
        };
        assert_eq!(t.floor_ms(), 10_000);
        assert_eq!(t.ceil_ms(), 10_001);
        let exact = WallTime {
            seconds: 10,
            nanos: 2_000_000,
        };
        assert_eq!(exact.ceil_ms(), exact.floor_ms());
    }
}
