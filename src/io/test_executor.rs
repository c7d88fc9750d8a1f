//! Unit tests' glommio executor: storage and the fake disk run their async tests on one.

use std::future::Future;

/// Runs `g`'s future on a fresh glommio executor thread (1 MiB of io_uring memory, enough for
/// the tests' reads and writes) and returns its output; a panic inside fails the test.
pub fn on_executor<G, F, T>(g: G) -> T
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .io_memory(1 << 20)
        .spawn(g)
        .expect("spawn executor")
        .join()
        .expect("executor thread")
}
