//! Counts heap allocations of the whole `quasar-bench` process, so a benchmark can report
//! allocations per operation in its steady state. The counting allocator is the maintained
//! `stats_alloc` crate wrapping the system allocator (no unsafe code here); the cost is a
//! few relaxed atomic increments per allocation.

use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Allocation counts since `start`.
pub struct AllocCounter {
    region: Region<'static, System>,
}

/// What was allocated in a measured span.
#[derive(Clone, Copy, Debug)]
pub struct AllocDelta {
    /// `alloc` calls plus `realloc` calls (a growing Vec counts).
    pub allocations: u64,
    pub bytes_allocated: u64,
}

impl AllocCounter {
    pub fn start() -> AllocCounter {
        AllocCounter {
            region: Region::new(GLOBAL),
        }
    }

    pub fn delta(&self) -> AllocDelta {
        let s = self.region.change();
        AllocDelta {
            allocations: (s.allocations + s.reallocations) as u64,
            bytes_allocated: s.bytes_allocated as u64,
        }
    }
}
