//! Simulated time: a monotonic count of ticks owned by the cluster. The Raft core never
//! sees it (time reaches the core only as `tick()` calls); the network, the disk and the
//! event log measure delays and stamp lines with it.

use std::fmt;

/// A point in simulated time, in ticks since the start of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SimTime(pub u64);

impl SimTime {
    /// This time plus `ticks`.
    #[must_use]
    pub fn after(self, ticks: u64) -> SimTime {
        SimTime(self.0.saturating_add(ticks))
    }
}

impl fmt::Display for SimTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&format!("t{}", self.0))
    }
}

/// The simulation clock. Only `advance` moves it, by exactly one tick.
#[derive(Debug, Clone, Default)]
pub struct SimClock {
    now: SimTime,
}

impl SimClock {
    /// A clock at time zero.
    #[must_use]
    pub fn new() -> SimClock {
        SimClock::default()
    }

    /// The current time.
    #[must_use]
    pub fn now(&self) -> SimTime {
        self.now
    }

    /// Moves time forward by one tick and returns the new time.
    pub fn advance(&mut self) -> SimTime {
        self.now = self.now.after(1);
        self.now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_moves_one_tick_at_a_time() {
        let mut c = SimClock::new();
        assert_eq!(c.now(), SimTime(0));
        assert_eq!(c.advance(), SimTime(1));
        assert_eq!(c.now().after(4), SimTime(5));
        assert_eq!(c.now().to_string(), "t1");
    }
}
