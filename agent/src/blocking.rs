//! Blocking work (a child program waited for, files flushed to disk, a loop device mounted, a
//! sleep) run off the async workers, so that a D-Bus call, a job's signals or the metrics
//! endpoint are never held up behind it.

/// Runs `work` on tokio's blocking pool and returns its result; a panic in it goes on in the
/// caller, as if `work` had run inline.
pub(crate) async fn run<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}
