//! Blocking work (a child program waited for, a file flushed to disk) run off the async workers,
//! so that the signals and timeouts a command races it against are still heard meanwhile.

/// Runs `work` on tokio's blocking pool and returns its result; a panic in it goes on in the
/// caller, as if `work` had run inline.
pub(crate) async fn run<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}
