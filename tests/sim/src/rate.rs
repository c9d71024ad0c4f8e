//! DigitalOcean's rate limits on one token: so many requests a minute and so many an hour
//! (250 and 5,000 on the real API), each a sliding window; a request past either gets 429 with
//! `retry-after`. One `RateLimit` may be shared by several simulators standing for Droplets of
//! the same account, as a fleet run shares one token.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// The limits, and the requests let through in the last hour.
#[derive(Debug)]
pub struct RateLimit {
    pub per_minute: usize,
    pub per_hour: usize,
    admitted: Mutex<VecDeque<Instant>>,
}

/// What the limit says of one request, with what the `ratelimit-*` headers tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// `None`: let through; otherwise the seconds until a slot frees (`retry-after`).
    pub retry_after: Option<u64>,
    /// Requests left in the hour.
    pub remaining: u64,
    /// When the oldest request of the hour leaves it (Unix time).
    pub reset: u64,
}

impl RateLimit {
    pub fn new(per_minute: usize, per_hour: usize) -> Arc<RateLimit> {
        Arc::new(RateLimit {
            per_minute,
            per_hour,
            admitted: Mutex::new(VecDeque::new()),
        })
    }

    /// `PER_MINUTE` or `PER_MINUTE/PER_HOUR` (the hour defaults to the real API's 5,000).
    pub fn parse(text: &str) -> Result<Arc<RateLimit>, String> {
        let number = |t: &str| {
            t.trim().parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                format!("`{text}`: write the limit as PER_MINUTE or PER_MINUTE/PER_HOUR, e.g. 250/5000")
            })
        };
        let (minute, hour) = match text.split_once('/') {
            Some((m, h)) => (number(m)?, number(h)?),
            None => (number(text)?, 5000),
        };
        Ok(RateLimit::new(minute, hour))
    }

    /// Lets the request through, counting it, or says when to come back.
    pub fn admit(&self) -> Admission {
        let now = Instant::now();
        let mut admitted = self.admitted.lock().unwrap_or_else(|p| p.into_inner());
        while admitted.front().is_some_and(|t| now.duration_since(*t) >= HOUR) {
            admitted.pop_front();
        }
        let in_minute = admitted
            .iter()
            .rev()
            .take_while(|t| now.duration_since(**t) < MINUTE)
            .count();
        // The slot that frees first, in whichever window is full.
        let frees_at = if in_minute >= self.per_minute {
            Some(admitted[admitted.len() - in_minute] + MINUTE)
        } else if admitted.len() >= self.per_hour {
            admitted.front().map(|t| *t + HOUR)
        } else {
            None
        };
        let retry_after = frees_at.map(|at| at.duration_since(now).as_secs_f64().ceil().max(1.0) as u64);
        if retry_after.is_none() {
            admitted.push_back(now);
        }
        let unix_now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let oldest = admitted
            .front()
            .map_or(Duration::ZERO, |t| (*t + HOUR).duration_since(now));
        Admission {
            retry_after,
            remaining: self.per_hour.saturating_sub(admitted.len()) as u64,
            reset: unix_now + oldest.as_secs(),
        }
    }

    /// When each request of the last hour was let through, oldest first.
    pub fn admitted_times(&self) -> Vec<Instant> {
        let admitted = self.admitted.lock().unwrap_or_else(|p| p.into_inner());
        admitted.iter().copied().collect()
    }

    /// The requests let through in the last hour, and the most of them in any one minute.
    pub fn admitted(&self) -> (usize, usize) {
        let admitted = self.admitted.lock().unwrap_or_else(|p| p.into_inner());
        let times: Vec<Instant> = admitted.iter().copied().collect();
        let mut busiest = 0;
        let mut first = 0;
        for (last, t) in times.iter().enumerate() {
            while t.duration_since(times[first]) >= MINUTE {
                first += 1;
            }
            busiest = busiest.max(last + 1 - first);
        }
        (times.len(), busiest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_minute_refuses_until_its_oldest_request_leaves() {
        let limit = RateLimit::new(3, 5000);
        for left in [4999, 4998, 4997] {
            let a = limit.admit();
            assert_eq!((a.retry_after, a.remaining), (None, left));
        }
        let refused = limit.admit();
        assert!(matches!(refused.retry_after, Some(1..=60)), "{refused:?}");
        assert_eq!(refused.remaining, 4997, "a refused request is not counted");
        assert_eq!(limit.admitted(), (3, 3));
        assert!(RateLimit::parse("250/5000").is_ok());
        assert!(RateLimit::parse("0").is_err() && RateLimit::parse("x/1").is_err());
    }

    #[test]
    fn a_full_hour_refuses_too() {
        let limit = RateLimit::new(100, 2);
        limit.admit();
        limit.admit();
        let refused = limit.admit();
        assert!(matches!(refused.retry_after, Some(3500..=3600)), "{refused:?}");
        assert_eq!(refused.remaining, 0);
    }
}
