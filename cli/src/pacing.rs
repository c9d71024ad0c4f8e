//! Spreads a fleet's snapshot runs over time so that the API calls they make together stay
//! under the token's rate limit (DigitalOcean: 250 a minute, 5,000 an hour, per token; a fleet
//! usually shares one). A token bucket of `--api-rate` calls a minute: a run starts only when
//! the bucket holds what a run costs, measured from the runs that finished (their reports'
//! `provider_calls`; a guess before the first), with a little jitter so that starts do not
//! line up. The agents still wait out a 429 before they freeze; pacing keeps them from
//! meeting one.

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// What a run is taken to cost before any finished.
const FIRST_GUESS: f64 = 10.0;

pub struct Pacer {
    per_minute: u32,
    per_second: f64,
    /// At most this many calls at once (ten seconds' worth), so a fleet does not start with a
    /// burst the minute's window cannot hold.
    burst: f64,
    state: Mutex<Bucket>,
}

struct Bucket {
    tokens: f64,
    refilled: Instant,
    /// The most calls a finished run made; `None` before one finished.
    measured: Option<f64>,
    /// Runs that had to wait for the budget, and how long in all.
    waited: (usize, Duration),
}

impl Pacer {
    pub fn new(per_minute: u32) -> Pacer {
        let per_second = f64::from(per_minute.max(1)) / 60.0;
        let burst = (per_second * 10.0).max(FIRST_GUESS);
        Pacer {
            per_minute,
            per_second,
            burst,
            state: Mutex::new(Bucket {
                tokens: burst,
                refilled: Instant::now(),
                measured: None,
                waited: (0, Duration::ZERO),
            }),
        }
    }

    /// Waits until a run may start, and takes its cost from the budget. Returns how long it
    /// waited.
    pub async fn start(&self) -> Duration {
        let began = Instant::now();
        let mut slept = false;
        loop {
            let wait = {
                let mut b = self.state.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                b.tokens = (b.tokens + now.duration_since(b.refilled).as_secs_f64() * self.per_second)
                    .min(self.burst);
                b.refilled = now;
                let cost = b.measured.unwrap_or(FIRST_GUESS).min(self.burst);
                if b.tokens >= cost {
                    b.tokens -= cost;
                    let waited = began.elapsed();
                    if slept {
                        b.waited.0 += 1;
                        b.waited.1 += waited;
                    }
                    return waited;
                }
                Duration::from_secs_f64((cost - b.tokens) / self.per_second)
            };
            tokio::time::sleep(wait + jitter()).await;
            slept = true;
        }
    }

    /// A run finished, having made `calls` API calls.
    pub fn finished(&self, calls: u64) {
        let mut b = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if calls > 0 {
            b.measured = Some(b.measured.unwrap_or(0.0).max(calls as f64));
        }
    }

    /// The budget, in calls a minute.
    pub fn per_minute(&self) -> u32 {
        self.per_minute
    }

    /// What pacing did, for the progress line: the runs that waited, and the cost per run.
    pub fn summary(&self) -> (usize, Duration, f64) {
        let b = self.state.lock().unwrap_or_else(|p| p.into_inner());
        (b.waited.0, b.waited.1, b.measured.unwrap_or(FIRST_GUESS))
    }
}

/// Up to a quarter of a second, from the clock's nanoseconds: enough to keep waiting runs from
/// starting in the same instant.
fn jitter() -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    Duration::from_millis(u64::from(nanos % 250))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn runs_start_no_faster_than_the_budget_allows() {
        // 60 calls a minute, 10 a run: a burst of 10 s (one run), then one run every 10 s.
        let pacer = Pacer::new(60);
        let started = tokio::time::Instant::now();
        for _ in 0..4 {
            pacer.start().await;
        }
        let took = started.elapsed();
        assert!(took >= Duration::from_secs(30), "{took:?}");
        let (waited, _, cost) = pacer.summary();
        assert_eq!((waited, cost), (3, 10.0));
        // Runs measured cheaper start faster: the most a finished run made is what one costs.
        pacer.finished(2);
        pacer.finished(5);
        assert_eq!(pacer.summary().2, 5.0);
        let started = tokio::time::Instant::now();
        pacer.start().await;
        assert!(
            started.elapsed() <= Duration::from_secs(6),
            "{:?}",
            started.elapsed()
        );
    }
}
