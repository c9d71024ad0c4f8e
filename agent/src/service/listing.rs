//! ListSnapshots' answer, kept for a short while. Each answer costs API calls (the account's
//! snapshots, the drills' results) from the token's budget, which a fleet shares, and with
//! `agent.public_read` any local user may ask: a caller admitted only by `public_read` gets an
//! answer up to [`LIFETIME`] old, fetched once however many ask at a time. Root and the group
//! always get a fresh one, which renews it. A job or a deletion by this agent, or a change of
//! the `[snapshot]` settings, makes it stale at once.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// How long a kept answer is given to callers admitted by `public_read`.
pub(crate) const LIFETIME: Duration = Duration::from_secs(30);

/// One fetched answer and what it was fetched for.
struct Listed<K, T, E> {
    /// Its fetch's place in the order fetches began: a later one's answer is not replaced by
    /// an earlier one's.
    began: u64,
    /// When its fetch ended: its age counts from then, however long the API took.
    at: Instant,
    /// The count of changes by this agent when the fetch began.
    generation: u64,
    /// The settings it was fetched with.
    key: K,
    answer: Result<T, E>,
}

/// The kept answer (`T`, or the error `E`), for the settings (`K`) it was fetched with.
pub(crate) struct ListCache<K, T, E> {
    listed: Mutex<Option<Listed<K, T, E>>>,
    /// One fetch at a time for callers who may get the kept answer…
    public_flight: tokio::sync::Mutex<()>,
    /// …and another for those who get a fresh one, so that they never wait behind the first.
    fresh_flight: tokio::sync::Mutex<()>,
    /// Counts this agent's changes to its snapshots.
    generation: AtomicU64,
    /// Counts the fetches begun.
    fetches: AtomicU64,
}

impl<K: PartialEq + Clone, T: Clone, E: Clone> ListCache<K, T, E> {
    pub(crate) fn new() -> ListCache<K, T, E> {
        ListCache {
            listed: Mutex::new(None),
            public_flight: tokio::sync::Mutex::new(()),
            fresh_flight: tokio::sync::Mutex::new(()),
            generation: AtomicU64::new(0),
            fetches: AtomicU64::new(0),
        }
    }

    /// This agent created or deleted snapshots: the kept answer is stale.
    pub(crate) fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The answer for `key`: the kept one if `fresh` is false and it is still good, else
    /// `fetch`'s (kept, an error too: a failing API is not asked again by every caller). One
    /// fetch at a time of each kind: callers who come meanwhile wait for it and get its answer
    /// (or, fresh, fetch again after it).
    pub(crate) async fn get<F, Fut>(&self, key: &K, fresh: bool, fetch: F) -> Result<T, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let flight = if fresh {
            &self.fresh_flight
        } else {
            &self.public_flight
        };
        let _flight = flight.lock().await;
        let generation = self.generation.load(Ordering::SeqCst);
        if !fresh {
            if let Some(kept) = self.kept(key, generation) {
                return kept;
            }
        }
        let began = self.fetches.fetch_add(1, Ordering::SeqCst);
        let answer = fetch().await;
        let mut listed = self.listed.lock().unwrap();
        if listed.as_ref().is_none_or(|l| l.began <= began) {
            *listed = Some(Listed {
                began,
                at: Instant::now(),
                generation,
                key: key.clone(),
                answer: answer.clone(),
            });
        }
        answer
    }

    /// The kept answer, if it is for `key`, no change since, and younger than [`LIFETIME`].
    fn kept(&self, key: &K, generation: u64) -> Option<Result<T, E>> {
        let listed = self.listed.lock().unwrap();
        listed
            .as_ref()
            .filter(|l| l.generation == generation && l.key == *key && l.at.elapsed() < LIFETIME)
            .map(|l| l.answer.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use std::sync::Arc;

    #[tokio::test]
    async fn one_fetch_serves_public_callers_until_a_change_or_other_settings() {
        let cache = Arc::new(ListCache::<u32, u32, String>::new());
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

    /// A fetch that takes longer than the lifetime still serves the callers after it: its age
    /// counts from its end.
    #[tokio::test(start_paused = true)]
    async fn an_answer_is_aged_from_the_end_of_its_fetch() {
        let cache = ListCache::<u32, u32, String>::new();
        let slow = || async {
            tokio::time::sleep(LIFETIME + Duration::from_secs(10)).await;
            Ok(1)
        };
        assert_eq!(cache.get(&1, false, slow).await, Ok(1));
        let again = cache.get(&1, false, || async { Ok(2) }).await;
        assert_eq!(again, Ok(1), "the slow answer was kept already expired");
        tokio::time::sleep(LIFETIME).await;
        assert_eq!(cache.get(&1, false, || async { Ok(3) }).await, Ok(3));
    }

    /// A privileged caller's fresh fetch does not wait for a public fetch in flight.
    #[tokio::test(start_paused = true)]
    async fn a_fresh_caller_does_not_queue_behind_a_public_fetch() {
        let cache = Arc::new(ListCache::<u32, u32, String>::new());
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let public = tokio::spawn({
            let cache = cache.clone();
            async move {
                cache
                    .get(&1, false, || async {
                        let _ = released.await;
                        Ok(1)
                    })
                    .await
            }
        });
        tokio::task::yield_now().await;
        // Paused time: a fresh call stuck behind the public one would run into this bound.
        let fresh = tokio::time::timeout(Duration::from_secs(3600), cache.get(&1, true, || async { Ok(2) }))
            .await
            .expect("the fresh call waited for the public fetch");
        assert_eq!(fresh, Ok(2));
        release.send(()).unwrap();
        assert_eq!(public.await.unwrap(), Ok(1));
        // The fresh answer began later: the public one did not replace it.
        assert_eq!(cache.get(&1, false, || async { Ok(3) }).await, Ok(2));
    }

    /// A failed fetch is kept too, as the error it was (not asked again by every caller).
    #[tokio::test]
    async fn a_failed_fetch_is_kept_as_its_error() {
        #[derive(Debug, Clone, PartialEq)]
        enum Failure {
            RateLimited,
        }
        let cache = ListCache::<u32, u32, Failure>::new();
        let failed = cache.get(&1, false, || async { Err(Failure::RateLimited) }).await;
        assert_eq!(failed, Err(Failure::RateLimited));
        let kept = cache.get(&1, false, || async { Ok(2) }).await;
        assert_eq!(kept, Err(Failure::RateLimited));
        assert_eq!(cache.get(&1, true, || async { Ok(3) }).await, Ok(3));
    }
}
