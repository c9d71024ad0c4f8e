//! Spreads a fleet's snapshot runs over time so that the API calls they make together stay
//! under the token's rate limit (DigitalOcean: 250 a minute, 5,000 an hour, per token; a fleet
//! usually shares one). A token bucket of `--api-rate` calls a minute: a run starts only when
//! the bucket holds what a run costs, measured from the runs that finished (their reports'
//! `provider_calls`; a guess before the first), with a little jitter so that starts do not
//! line up. The hour's budget is watched too, from what the API told the finished runs
//! (`provider_budget`): a run that would find it spent waits for it when it comes back within
//! a minute, and is not started otherwise. The agents still wait out a 429 before they freeze;
//! pacing keeps them from meeting one.

use freezeframe_contract::ApiBudget;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// What a run is taken to cost before any finished.
const FIRST_GUESS: f64 = 10.0;
/// The longest wait for the hour's budget to come back; past it, a run is not started.
const HOUR_WAIT_MAX: Duration = Duration::from_secs(60);

/// Whether a run may start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// It may, after waiting this long.
    Go(Duration),
    /// The token's hourly budget is spent until this Unix time, further off than a run waits.
    HourSpent { until_unix: u64 },
}

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
    /// Runs started and not finished.
    in_flight: u64,
    /// The hour's budget as the freshest finished run heard it, and the runs started since
    /// (or still running then), whose calls it does not count yet.
    hour: Option<(ApiBudget, u64)>,
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
                in_flight: 0,
                hour: None,
            }),
        }
    }

    /// Waits until a run may start, and takes its cost from the budget; or says that the
    /// hour's budget is spent for longer than a run waits.
    pub async fn start(&self) -> Start {
        let began = Instant::now();
        let mut slept = false;
        loop {
            let wait = {
                let mut b = self.state.lock().unwrap_or_else(|p| p.into_inner());
                let cost = b.measured.unwrap_or(FIRST_GUESS).min(self.burst);
                match b.hour_wait(cost) {
                    Some(wait) if wait > HOUR_WAIT_MAX => {
                        let until_unix = b.hour.map_or(0, |(h, _)| h.reset_unix);
                        return Start::HourSpent { until_unix };
                    }
                    // Every run waits for the reset; past it, the old hour's count no longer
                    // holds (`hour_wait` says so).
                    Some(wait) => wait,
                    None => {
                        let now = Instant::now();
                        b.tokens = (b.tokens
                            + now.duration_since(b.refilled).as_secs_f64() * self.per_second)
                            .min(self.burst);
                        b.refilled = now;
                        if b.tokens >= cost {
                            b.tokens -= cost;
                            b.in_flight += 1;
                            if let Some((_, since)) = b.hour.as_mut() {
                                *since += 1;
                            }
                            let waited = began.elapsed();
                            if slept {
                                b.waited.0 += 1;
                                b.waited.1 += waited;
                            }
                            return Start::Go(waited);
                        }
                        Duration::from_secs_f64((cost - b.tokens) / self.per_second)
                    }
                }
            };
            tokio::time::sleep(wait + jitter()).await;
            slept = true;
        }
    }

    /// A run finished, having made `calls` API calls and heard `budget` last.
    pub fn finished(&self, calls: u64, budget: Option<ApiBudget>) {
        let mut b = self.state.lock().unwrap_or_else(|p| p.into_inner());
        b.in_flight = b.in_flight.saturating_sub(1);
        if calls > 0 {
            b.measured = Some(b.measured.unwrap_or(0.0).max(calls as f64));
        }
        if let Some(budget) = budget {
            // The runs still going will spend their cost on top of what it says.
            b.hour = Some((budget, b.in_flight));
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

/// Why a run was not started: the hour's budget, and when it comes back.
pub fn hour_spent(until_unix: u64) -> String {
    let until = std::time::UNIX_EPOCH + Duration::from_secs(until_unix);
    format!(
        "the API token's hourly budget is spent until {} (ratelimit-reset), so it could not \
         snapshot without meeting the rate limit; run it again then, or spread the runs that \
         share the token",
        humantime::format_rfc3339_seconds(until)
    )
}

impl Bucket {
    /// How long until the hour's budget holds a run of `cost`, if it does not now.
    fn hour_wait(&self, cost: f64) -> Option<Duration> {
        let (budget, since) = self.hour?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let left = budget.remaining as f64 - since as f64 * cost;
        if left >= cost || now >= budget.reset_unix {
            return None;
        }
        Some(Duration::from_secs(budget.reset_unix - now))
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
            assert!(matches!(pacer.start().await, Start::Go(_)));
        }
        let took = started.elapsed();
        assert!(took >= Duration::from_secs(30), "{took:?}");
        let (waited, _, cost) = pacer.summary();
        assert_eq!((waited, cost), (3, 10.0));
        // Runs measured cheaper start faster: the most a finished run made is what one costs.
        pacer.finished(2, None);
        pacer.finished(5, None);
        assert_eq!(pacer.summary().2, 5.0);
        let started = tokio::time::Instant::now();
        pacer.start().await;
        assert!(
            started.elapsed() <= Duration::from_secs(6),
            "{:?}",
            started.elapsed()
        );
    }

    // Real time: the hour's reset is a wall-clock time.
    #[tokio::test]
    async fn a_spent_hour_holds_runs_back_or_stops_them() {
        let unix = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        };
        let pacer = Pacer::new(6000);
        assert!(matches!(pacer.start().await, Start::Go(_)));
        assert!(matches!(pacer.start().await, Start::Go(_)));
        // The first run heard 12 left; the second, still running, will spend about 5 of them.
        let soon = ApiBudget {
            remaining: 12,
            reset_unix: unix() + 2,
        };
        pacer.finished(5, Some(soon));
        assert!(
            matches!(pacer.start().await, Start::Go(_)),
            "12 − 5 left: room for one more"
        );
        // Now 12 − 2 × 5 < 5: the next waits for the reset.
        assert!(matches!(pacer.start().await, Start::Go(_)));
        assert!(
            unix() >= soon.reset_unix,
            "it started only once the hour's budget came back"
        );
        // An hour that frees only in 20 minutes: the run is not started.
        let later = unix() + 1200;
        pacer.finished(
            5,
            Some(ApiBudget {
                remaining: 3,
                reset_unix: later,
            }),
        );
        assert_eq!(pacer.start().await, Start::HourSpent { until_unix: later });
    }
}
