//! Faults the simulator injects, written `[METHOD ]PATH_PREFIX=KIND[*COUNT]`:
//! `POST /v2/droplets/=hang`, `GET /v2/droplets/=500*2`, `/v2/=429:3`, `GET /v2/actions/=latency:800`.
//! KIND is `hang`, `reset` (the connection drops mid-answer), `garbage` (200 with a body that
//! is not JSON), `no-action-id` (handled, but the answer's action lacks its id), an HTTP status (`401`, `403`, `404`, `422`, `500`, …), `429:SECONDS`
//! (with `retry-after`), `latency:MS` (before the call is handled), `slow-answer:MS` (the call
//! is handled at once, its answer held back), or `unwaited:MS` (handled MS later whether or not
//! the client still waits: the platform acting on a request it received from a client that
//! gave up on it). Without `*COUNT` a fault applies to every match.

use axum::http::Method;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    Hang,
    /// The connection is dropped in the middle of the answer.
    Reset,
    /// A 200 whose body is not JSON.
    Garbage,
    /// The call is handled, but the answer's action has no id (a 201 the client cannot use).
    NoActionId,
    Status(u16),
    RateLimited {
        retry_after: u64,
    },
    Latency(Duration),
    SlowAnswer(Duration),
    /// Handled after the delay, whether or not the client still waits for the answer.
    Unwaited(Duration),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    method: Option<Method>,
    path_prefix: String,
    kind: FaultKind,
    /// How many more calls it applies to; `None`: all.
    remaining: Option<u32>,
}

impl Fault {
    /// A fault of `kind` on calls of `method` (any, when `None`) to paths starting with
    /// `path_prefix`, `count` times (every time, when `None`).
    pub fn new(method: Option<Method>, path_prefix: &str, kind: FaultKind, count: Option<u32>) -> Fault {
        Fault {
            method,
            path_prefix: path_prefix.to_string(),
            kind,
            remaining: count,
        }
    }

    pub fn matches(&self, method: &Method, path: &str) -> bool {
        self.remaining != Some(0)
            && self.method.as_ref().is_none_or(|m| m == method)
            && path.starts_with(&self.path_prefix)
    }

    /// Uses up one application and returns what to do.
    pub fn take(&mut self) -> FaultKind {
        if let Some(n) = self.remaining.as_mut() {
            *n = n.saturating_sub(1);
        }
        self.kind.clone()
    }
}

impl std::str::FromStr for Fault {
    type Err = String;

    fn from_str(spec: &str) -> Result<Fault, String> {
        let bad = |why: &str| format!("bad fault `{spec}`: {why}; write it like `POST /v2/droplets/=hang`");
        let (target, action) = spec.split_once('=').ok_or_else(|| bad("no `=`"))?;
        let (method, path_prefix) = match target.trim().split_once(' ') {
            Some((m, p)) => (
                Some(Method::from_bytes(m.as_bytes()).map_err(|_| bad("unknown method"))?),
                p,
            ),
            None => (None, target.trim()),
        };
        if !path_prefix.starts_with('/') {
            return Err(bad("the path must start with /"));
        }
        let (kind, count) = match action.split_once('*') {
            Some((k, n)) => (
                k,
                Some(n.parse::<u32>().map_err(|_| bad("the count is not a number"))?),
            ),
            None => (action, None),
        };
        let kind = match kind.split_once(':') {
            None if kind == "hang" => FaultKind::Hang,
            None if kind == "reset" => FaultKind::Reset,
            None if kind == "garbage" => FaultKind::Garbage,
            None if kind == "no-action-id" => FaultKind::NoActionId,
            None => FaultKind::Status(
                kind.parse::<u16>()
                    .ok()
                    .filter(|c| (400..600).contains(c))
                    .ok_or_else(|| bad("unknown kind"))?,
            ),
            Some(("429", secs)) => FaultKind::RateLimited {
                retry_after: secs.parse().map_err(|_| bad("retry-after is not a number"))?,
            },
            Some(("latency", ms)) => FaultKind::Latency(Duration::from_millis(
                ms.parse().map_err(|_| bad("latency is not a number"))?,
            )),
            Some(("slow-answer", ms)) => FaultKind::SlowAnswer(Duration::from_millis(
                ms.parse().map_err(|_| bad("the delay is not a number"))?,
            )),
            Some(("unwaited", ms)) => FaultKind::Unwaited(Duration::from_millis(
                ms.parse().map_err(|_| bad("the delay is not a number"))?,
            )),
            Some(_) => return Err(bad("unknown kind")),
        };
        Ok(Fault {
            method,
            path_prefix: path_prefix.to_string(),
            kind,
            remaining: count,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_and_count_down() {
        let mut f: Fault = "GET /v2/droplets/=500*2".parse().unwrap();
        assert!(f.matches(&Method::GET, "/v2/droplets/1"));
        assert!(!f.matches(&Method::POST, "/v2/droplets/1"));
        assert_eq!(f.take(), FaultKind::Status(500));
        f.take();
        assert!(!f.matches(&Method::GET, "/v2/droplets/1"), "used up");
        assert_eq!(
            "/v2/=429:3".parse::<Fault>().unwrap().kind,
            FaultKind::RateLimited { retry_after: 3 }
        );
        assert_eq!("POST /v2/=hang".parse::<Fault>().unwrap().kind, FaultKind::Hang);
        assert_eq!("/v2/=reset".parse::<Fault>().unwrap().kind, FaultKind::Reset);
        assert_eq!("/v2/=garbage".parse::<Fault>().unwrap().kind, FaultKind::Garbage);
        assert_eq!(
            "/v2/=no-action-id".parse::<Fault>().unwrap().kind,
            FaultKind::NoActionId
        );
        assert_eq!(
            "/v2/=latency:800".parse::<Fault>().unwrap().kind,
            FaultKind::Latency(Duration::from_millis(800))
        );
        assert_eq!(
            "POST /v2/=slow-answer:5".parse::<Fault>().unwrap().kind,
            FaultKind::SlowAnswer(Duration::from_millis(5))
        );
        assert_eq!(
            "POST /v2/droplets=unwaited:3000*1".parse::<Fault>().unwrap(),
            Fault::new(
                Some(Method::POST),
                "/v2/droplets",
                FaultKind::Unwaited(Duration::from_secs(3)),
                Some(1)
            )
        );
        for bad in ["/v2/", "v2/=500", "/v2/=teapot", "/v2/=200", "/v2/=500*x"] {
            assert!(bad.parse::<Fault>().is_err(), "{bad}");
        }
    }
}
