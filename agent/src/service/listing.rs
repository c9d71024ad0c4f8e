//! ListSnapshots' answer, kept for a short while. Each answer costs API calls (the account's
//! snapshots, the drills' results) from the token's budget, which a fleet shares, and with
//! `agent.public_read` any local user may ask: a caller admitted only by `public_read` gets an
//! answer up to [`LIFETIME`] old, fetched once however many ask at a time. Root and the group
//! always get a fresh one, which renews it. A job or a deletion by this agent, or a change of
//! the `[snapshot]` settings, makes it stale at once.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a kept answer is given to callers admitted by `public_read`.
pub(crate) const LIFETIME: Duration = Duration::from_secs(30);

/// One fetched answer and what it was fetched for.
struct Listed<K, T> {
    at: Instant,
    /// The count of changes by this agent when the fetch began.
    generation: u64,
    /// The settings it was fetched with.
    key: K,
    answer: Result<T, String>,
}

/// The kept answer (`T`), for the settings (`K`) it was fetched with.
pub(crate) struct ListCache<K, T> {
    listed: tokio::sync::Mutex<Option<Listed<K, T>>>,
    /// Counts this agent's changes to its snapshots.
    generation: AtomicU64,
}

impl<K: PartialEq + Clone, T: Clone> ListCache<K, T> {
    pub(crate) fn new() -> ListCache<K, T> {
        ListCache {
            listed: tokio::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
        }
    }

    /// This agent created or deleted snapshots: the kept answer is stale.
    pub(crate) fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The answer for `key`: the kept one if `fresh` is false and it is still good, else
    /// `fetch`'s (kept, an error too: a failing API is not asked again by every caller). One
    /// fetch at a time: callers who come meanwhile wait for it and get its answer.
    pub(crate) async fn get<F, Fut>(&self, key: &K, fresh: bool, fetch: F) -> Result<T, String>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, String>>,
    {
        let mut listed = self.listed.lock().await;
        let generation = self.generation.load(Ordering::SeqCst);
        if !fresh {
            if let Some(kept) = listed
                .as_ref()
                .filter(|l| l.generation == generation && l.key == *key && l.at.elapsed() < LIFETIME)
            {
                return kept.answer.clone();
            }
        }
        let at = Instant::now();
        let answer = fetch().await;
        *listed = Some(Listed {
            at,
            generation,
            key: key.clone(),
            answer: answer.clone(),
        });
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use std::sync::Arc;

    #[tokio::test]
    async fn one_fetch_serves_public_callers_until_a_change_or_other_settings() {
        let cache = Arc::new(ListCache::<u32, u32>::new());
        let fetches = Arc::new(AtomicU32::new(0));
        let ask = |key: u32, fresh: bool| {
            let (cache, fetches) = (cache.clone(), fetches.clone());
            async move {
                cache
                    .get(&key, fresh, || async {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok(fetches.fetch_add(1, Ordering::SeqCst) + 1)
                    })
                    .await
                    .unwrap()
            }
        };
        // Many at once: one fetch, one answer.
        let answers = futures_util::future::join_all((0..50).map(|_| ask(1, false))).await;
        assert!(answers.iter().all(|a| *a == 1), "{answers:?}");
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        // A privileged caller fetches afresh, and that answer is kept.
        assert_eq!(ask(1, true).await, 2);
        assert_eq!(ask(1, false).await, 2);
        // Other settings, or a change by this agent: stale.
        assert_eq!(ask(7, false).await, 3);
        cache.invalidate();
        assert_eq!(ask(7, false).await, 4);
        assert_eq!(ask(7, false).await, 4);
    }
}
