//! Helpers shared by the WAL's integration tests.

use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};

/// Runs `f` on a fresh glommio executor (unbound, small io_memory, 2 ms preemption) and
/// returns its result.
pub fn in_executor<T, F, Fut>(f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
    T: Send + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(256 << 10)
        .preempt_timer(Duration::from_millis(2))
        .spawn(f)
        .expect("executor starts")
        .join()
        .expect("executor runs")
}
