//! A small client for the DigitalOcean API v2 (reqwest with rustls and compiled-in roots: no
//! OpenSSL, no certificate files read at request time). The base URLs are injected; tests point
//! them at the simulator or at Prism on loopback.

use crate::types::*;
use crate::Token;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use std::time::Duration;

/// A failed API call, with what DigitalOcean said. Never holds the token.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The token was refused: 401, a token the API does not accept (mistyped, expired or
    /// revoked); 403, a token without a scope the call needs.
    #[error("{}", refused(*.status, .message, .request_id, .scopes))]
    Unauthorized {
        /// 401 or 403.
        status: u16,
        /// The API's message.
        message: String,
        /// The API's request id, for DigitalOcean's support.
        request_id: Option<String>,
        /// The scopes the configuration needs.
        scopes: String,
    },
    /// The API answered 429.
    #[error("the DigitalOcean API is rate-limiting this token (HTTP 429: {message}{}){}", request_id_suffix(.request_id), .retry_after.map(|d| format!("; retry after {}", humantime::format_duration(d))).unwrap_or_default())]
    RateLimited {
        /// The API's message.
        message: String,
        /// The API's request id.
        request_id: Option<String>,
        /// How long the API asked to wait (`retry-after`).
        retry_after: Option<Duration>,
    },
    /// Any other error status.
    #[error("DigitalOcean API: {message} (HTTP {status}{}, {what})", request_id_suffix(.request_id))]
    Status {
        /// The HTTP status.
        status: u16,
        /// The API's error id, such as `not_found`.
        id: String,
        /// The API's message.
        message: String,
        /// The API's request id.
        request_id: Option<String>,
        /// The call, in words.
        what: String,
    },
    /// No answer within the call's bound.
    #[error("no answer from {what} within {}", humantime::format_duration(*.timeout))]
    Timeout {
        /// The call, in words.
        what: String,
        /// The bound that passed.
        timeout: Duration,
    },
    /// No connection, or it broke.
    #[error("cannot reach {what}: {problem}")]
    Transport {
        /// The call, in words.
        what: String,
        /// What went wrong on the way.
        problem: String,
    },
    /// Not worth retrying: a wrong scheme or a certificate this machine does not trust.
    #[error(
        "TLS handshake with {what} failed: {problem} (check that the address's scheme matches \
         the server: https:// for a TLS server, http:// for a plain one such as the bundled \
         simulator; and that its certificate is valid and trusted)"
    )]
    Tls {
        /// The call, in words.
        what: String,
        /// The handshake's failure.
        problem: String,
    },
    /// An answer that is not what the API documents.
    #[error("unexpected answer from {what}: {problem}")]
    Decode {
        /// The call, in words.
        what: String,
        /// What did not fit.
        problem: String,
    },
}

/// A refused token's one cause, by status.
fn refused(status: u16, message: &str, request_id: &Option<String>, scopes: &str) -> String {
    let answer = format!("HTTP {status}: {message}{}", request_id_suffix(request_id));
    if status == 401 {
        format!(
            "the DigitalOcean API does not accept the token ({answer}): it is mistyped, expired or \
             revoked; replace it with a new one (with the scopes {scopes})"
        )
    } else {
        format!(
            "the token lacks a scope this needs ({answer}): it needs the scopes {scopes} (the API \
             cannot list a token's scopes, so check them in the control panel)"
        )
    }
}

fn request_id_suffix(id: &Option<String>) -> String {
    id.as_ref()
        .map(|id| format!(", request id {id}"))
        .unwrap_or_default()
}

impl ApiError {
    /// Whether a later attempt may succeed (outside the frozen window only): rate limits,
    /// server errors, "pending event", timeouts and connection failures.
    pub fn retryable(&self) -> bool {
        match self {
            ApiError::RateLimited { .. } | ApiError::Timeout { .. } | ApiError::Transport { .. } => true,
            ApiError::Status { status, message, .. } => {
                *status >= 500 || (*status == 422 && message.to_lowercase().contains("pending event"))
            }
            _ => false,
        }
    }
}

/// How calls outside the frozen window are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// The first pause; doubled after each failure.
    pub backoff: Duration,
    /// The longest `retry-after` worth waiting for; a longer one fails at once.
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            backoff: Duration::from_millis(500),
            max_wait: Duration::from_secs(60),
        }
    }
}

/// Builds the HTTP client used for every call to the API at `api_url`: rustls, compiled-in
/// roots, keep-alive. The system's proxy (`https_proxy`, `ALL_PROXY`) is used for an https API
/// only: a plain-http API is on this machine (the configuration refuses any other), and a
/// proxy would carry its token in the clear and to another process.
pub fn http_client(api_url: &str) -> Result<reqwest::Client, ApiError> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("freezeframe/", env!("CARGO_PKG_VERSION")))
        .pool_idle_timeout(Duration::from_secs(300))
        .tcp_keepalive(Duration::from_secs(30));
    let url = reqwest::Url::parse(api_url).ok();
    if url.as_ref().is_none_or(|url| url.scheme() != "https") {
        builder = builder.no_proxy();
    }
    // `localhost` is this machine's whatever the resolver says: NSS could ask DNS for it where
    // /etc/hosts lacks it (port 0: the URL's port is used).
    if url.as_ref().and_then(|url| url.host_str()) == Some("localhost") {
        let loopback = [
            std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0)),
            std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0)),
        ];
        builder = builder.resolve_to_addrs("localhost", &loopback);
    }
    builder.build().map_err(|e| ApiError::Transport {
        what: "the HTTP client".into(),
        problem: e.to_string(),
    })
}

/// The DigitalOcean API, with one token: GETs and DELETEs retried outside the window, the snapshot POST sent once.
pub struct Client {
    http: reqwest::Client,
    api_url: String,
    token: Token,
    /// Scopes a snapshot with this configuration needs, for 401/403 messages.
    scopes: String,
    /// Bound on each call outside the frozen window.
    timeout: Duration,
    retry: RetryPolicy,
    /// What the API's `ratelimit-*` headers said last, and how many calls this client made.
    usage: std::sync::Mutex<Usage>,
}

/// A token's standing with the API's rate limits, as this client last heard it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Calls made (each attempt counts against the token).
    pub calls: u64,
    /// `ratelimit-remaining`: requests left in the hour.
    pub remaining: Option<u64>,
    /// `ratelimit-reset`: when the oldest request of the hour leaves it (Unix time).
    pub reset: Option<u64>,
    /// When the API last answered a call with success.
    pub succeeded: Option<std::time::Instant>,
}

impl Client {
    /// A client of the API at `api_url`, whose token needs `scopes` (named in 401/403 messages), each call bounded by `timeout`.
    pub fn new(
        http: reqwest::Client,
        api_url: &str,
        token: Token,
        scopes: &[&str],
        timeout: Duration,
    ) -> Self {
        Client {
            http,
            api_url: api_url.trim_end_matches('/').to_string(),
            token,
            scopes: scopes.join(", "),
            timeout,
            retry: RetryPolicy::default(),
            usage: std::sync::Mutex::new(Usage::default()),
        }
    }

    /// The token's standing with the rate limits, as last heard.
    pub fn usage(&self) -> Usage {
        *self.usage.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The retry policy's longest wait.
    pub fn max_wait(&self) -> Duration {
        self.retry.max_wait
    }

    /// A GET outside the frozen window, retried per the policy.
    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        self.idempotent(Method::GET, path).await.map_err(|(e, _)| e)
    }

    /// A call that may be repeated (GET, DELETE), outside the frozen window, retried per the
    /// policy: after the API's `retry-after` (failing at once when that is past `max_wait`),
    /// otherwise after a backoff that doubles up to `max_wait`. A failure comes with the number
    /// of attempts made.
    pub(crate) async fn idempotent<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
    ) -> Result<T, (ApiError, u32)> {
        let mut backoff = self.retry.backoff;
        let mut attempt = 1;
        loop {
            match self.call(method.clone(), path, None, self.timeout).await {
                Ok(value) => return Ok(value),
                Err(e) if e.retryable() && attempt < self.retry.attempts => {
                    let wait = match &e {
                        ApiError::RateLimited {
                            retry_after: Some(after),
                            ..
                        } if *after > self.retry.max_wait => return Err((e, attempt)),
                        ApiError::RateLimited {
                            retry_after: Some(after),
                            ..
                        } => *after,
                        _ => backoff,
                    };
                    tracing::warn!(
                        "{method} {path} (attempt {attempt} of {}): {e}; retrying in {}",
                        self.retry.attempts,
                        humantime::format_duration(wait)
                    );
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(self.retry.max_wait);
                    attempt += 1;
                }
                Err(e) => return Err((e, attempt)),
            }
        }
    }

    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&dyn erased::Body>,
        timeout: Duration,
    ) -> Result<T, ApiError> {
        let what = format!("{method} {path}");
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.api_url))
            .bearer_auth(self.token.expose())
            .timeout(timeout);
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_json());
        }
        self.usage.lock().unwrap_or_else(|p| p.into_inner()).calls += 1;
        let resp = req.send().await.map_err(|e| transport(&what, timeout, e))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        self.heard(&headers);
        let bytes = resp.bytes().await.map_err(|e| transport(&what, timeout, e))?;
        if status.is_success() {
            self.usage.lock().unwrap_or_else(|p| p.into_inner()).succeeded = Some(std::time::Instant::now());
            let text: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
            return serde_json::from_slice(text).map_err(|e| ApiError::Decode {
                what,
                problem: e.to_string(),
            });
        }
        let err: ErrorBody = serde_json::from_slice(&bytes).unwrap_or_default();
        let message = if err.message.is_empty() {
            status.canonical_reason().unwrap_or("error").to_string()
        } else {
            err.message
        };
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ApiError::Unauthorized {
                status: status.as_u16(),
                message,
                request_id: err.request_id,
                scopes: self.scopes.clone(),
            },
            StatusCode::TOO_MANY_REQUESTS => ApiError::RateLimited {
                message,
                request_id: err.request_id,
                retry_after: retry_after(&headers),
            },
            _ => ApiError::Status {
                status: status.as_u16(),
                id: err.id,
                message,
                request_id: err.request_id,
                what,
            },
        })
    }

    /// The account the token belongs to.
    pub async fn account(&self) -> Result<Account, ApiError> {
        let env: AccountEnvelope = self.get("/v2/account").await?;
        Ok(env.account)
    }

    /// The API this client calls.
    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// A Droplet, by id.
    pub async fn droplet(&self, id: u64) -> Result<Droplet, ApiError> {
        let env: DropletEnvelope = self.get(&format!("/v2/droplets/{id}")).await?;
        Ok(env.droplet)
    }

    /// The Droplet's most recent actions (first page).
    pub async fn droplet_actions(&self, id: u64) -> Result<Vec<Action>, ApiError> {
        let list: ActionList = self
            .get(&format!("/v2/droplets/{id}/actions?page=1&per_page=50"))
            .await?;
        Ok(list.actions)
    }

    /// Starts a snapshot: one attempt, bounded by `timeout`.
    pub async fn snapshot_droplet(&self, id: u64, name: &str, timeout: Duration) -> Result<Action, ApiError> {
        let body = SnapshotRequest {
            kind: "snapshot",
            name,
        };
        let env: ActionEnvelope = self
            .call(
                Method::POST,
                &format!("/v2/droplets/{id}/actions"),
                Some(&body),
                timeout,
            )
            .await?;
        Ok(env.action)
    }

    /// Asks for a power action: one attempt, since the API refuses a second `shutdown` or
    /// `power_on` as already done (the caller reads the Droplet to learn where it is).
    pub async fn droplet_power(&self, id: u64, action: PowerAction) -> Result<Action, ApiError> {
        let body = PowerRequest { kind: action };
        let env: ActionEnvelope = self
            .call(
                Method::POST,
                &format!("/v2/droplets/{id}/actions"),
                Some(&body),
                self.timeout,
            )
            .await?;
        Ok(env.action)
    }

    /// An action, by id.
    pub async fn action(&self, id: u64) -> Result<Action, ApiError> {
        let env: ActionEnvelope = self.get(&format!("/v2/actions/{id}")).await?;
        Ok(env.action)
    }

    /// A volume, by id.
    pub async fn volume(&self, id: &str) -> Result<Volume, ApiError> {
        let env: VolumeEnvelope = self.get(&format!("/v2/volumes/{id}")).await?;
        Ok(env.volume)
    }

    /// Snapshots a volume: one attempt, bounded by `timeout` (inside the frozen window).
    pub async fn snapshot_volume(
        &self,
        id: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<VolumeSnapshot, ApiError> {
        let body = VolumeSnapshotRequest { name };
        let env: VolumeSnapshotEnvelope = self
            .call(
                Method::POST,
                &format!("/v2/volumes/{id}/snapshots"),
                Some(&body),
                timeout,
            )
            .await?;
        Ok(env.snapshot)
    }

    /// The bound on each call outside the frozen window.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Adds scopes to name in 401/403 messages.
    pub fn add_scopes(&mut self, scopes: &[&str]) {
        for s in scopes {
            if !self.scopes.split(", ").any(|have| have == *s) {
                self.scopes.push_str(", ");
                self.scopes.push_str(s);
            }
        }
    }

    /// Deletes a snapshot (`image:delete`), retried like a GET: deleting twice is harmless.
    pub async fn delete_snapshot(&self, id: u64) -> Result<(), ApiError> {
        self.delete(&format!("/v2/snapshots/{id}")).await
    }

    /// Deletes a volume snapshot (`block_storage_snapshot:delete`), retried like a GET.
    pub async fn delete_volume_snapshot(&self, id: &str) -> Result<(), ApiError> {
        self.delete(&format!("/v2/volumes/snapshots/{}", escape(id)))
            .await
    }

    /// A DELETE, retried like a GET; a 404 after a first attempt means that attempt went through.
    pub(crate) async fn delete(&self, path: &str) -> Result<(), ApiError> {
        match self.idempotent::<serde_json::Value>(Method::DELETE, path).await {
            Ok(_) => Ok(()),
            Err((ApiError::Status { status: 404, .. }, attempts)) if attempts > 1 => Ok(()),
            Err((e, _)) => Err(e),
        }
    }

    /// Every item of the paginated list at `path`, page by page.
    pub(crate) async fn all<L: Paged>(&self, path: &str) -> Result<Vec<L::Item>, ApiError> {
        let mut all = Vec::new();
        let separator = if path.contains('?') { '&' } else { '?' };
        for page in 1..=100 {
            let list: L = self
                .get(&format!("{path}{separator}page={page}&per_page=200"))
                .await?;
            let (items, more) = list.into_page();
            let last = items.is_empty() || !more;
            all.extend(items);
            if last {
                break;
            }
        }
        Ok(all)
    }

    /// The account's Droplets, following pagination.
    pub async fn droplets(&self) -> Result<Vec<ListedDroplet>, ApiError> {
        self.all::<DropletList>("/v2/droplets").await
    }

    /// The account's Droplets that carry `tag`, following pagination.
    pub async fn droplets_with_tag(&self, tag: &str) -> Result<Vec<ListedDroplet>, ApiError> {
        self.all::<DropletList>(&format!("/v2/droplets?tag_name={}", escape(tag)))
            .await
    }

    /// Every snapshot of the Droplet, following pagination.
    pub async fn droplet_snapshots(&self, id: u64) -> Result<Vec<DropletSnapshot>, ApiError> {
        self.all::<SnapshotList>(&format!("/v2/droplets/{id}/snapshots"))
            .await
    }

    /// The snapshots of volume `id`.
    pub async fn volume_snapshots(&self, id: &str) -> Result<Vec<Snapshot>, ApiError> {
        self.all::<ImageList>(&format!("/v2/volumes/{}/snapshots", escape(id)))
            .await
    }
}

/// A query value, percent-encoded (tags are letters, digits, `:`, `-` and `_`; anything else is
/// escaped all the same).
pub(crate) fn escape(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// The metadata service: which Droplet this is. Plain HTTP on a link-local address.
pub async fn droplet_id_from_metadata(
    http: &reqwest::Client,
    metadata_url: &str,
    timeout: Duration,
) -> Result<u64, ApiError> {
    let url = format!("{}/metadata/v1.json", metadata_url.trim_end_matches('/'));
    let what = format!("the metadata service ({url})");
    let resp = http
        .get(&url)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| transport(&what, timeout, e))?;
    if !resp.status().is_success() {
        return Err(ApiError::Decode {
            what,
            problem: format!("HTTP {}", resp.status()),
        });
    }
    let meta: Metadata = resp.json().await.map_err(|e| ApiError::Decode {
        what,
        problem: e.to_string(),
    })?;
    Ok(meta.droplet_id)
}

fn transport(what: &str, timeout: Duration, e: reqwest::Error) -> ApiError {
    if e.is_timeout() {
        ApiError::Timeout {
            what: what.to_string(),
            timeout,
        }
    } else if let Some(tls) = tls_error(&e) {
        ApiError::Tls {
            what: what.to_string(),
            problem: tls.to_string(),
        }
    } else {
        ApiError::Transport {
            what: what.to_string(),
            problem: error_chain(&e),
        }
    }
}

/// An error and its causes, joined with `: ` on one line, each cause left out when the text so
/// far already says it (reqwest's own message leaves out why a connection failed: refused, no
/// route, a name that does not resolve). The agent's reports and both binaries' messages use it.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The TLS error behind a failed request, if that is what failed. (rustls's errors come wrapped
/// in `io::Error`s, sometimes twice, whose `source` skips what they wrap: hence `get_ref`.)
fn tls_error(e: &reqwest::Error) -> Option<&rustls::Error> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let mut inner: &(dyn std::error::Error + 'static) = s;
        loop {
            if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
                return Some(tls);
            }
            match inner.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
                Some(wrapped) => inner = wrapped,
                None => break,
            }
        }
        source = s.source();
    }
    None
}

impl Client {
    /// Keeps what an answer's `ratelimit-*` headers say.
    fn heard(&self, headers: &reqwest::header::HeaderMap) {
        let number = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<u64>().ok();
        let mut usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(remaining) = number("ratelimit-remaining") {
            usage.remaining = Some(remaining);
            usage.reset = number("ratelimit-reset");
        }
    }
}

/// `retry-after` in seconds, or the wait until `ratelimit-reset` (Unix time).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let number = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<u64>().ok();
    if let Some(secs) = number("retry-after") {
        return Some(Duration::from_secs(secs));
    }
    let reset = number("ratelimit-reset")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    Some(Duration::from_secs(reset.saturating_sub(now)))
}

/// Request bodies, serialised without making `call` generic over them.
pub(crate) mod erased {
    pub(crate) trait Body: Sync {
        fn to_json(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize + Sync> Body for T {
        fn to_json(&self) -> Vec<u8> {
            serde_json::to_vec(self).unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Causes are joined once each: a cause the text already holds is not repeated.
    #[test]
    fn an_error_chain_names_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot reach the API: {0}")]
        struct Repeats(#[source] std::io::Error);
        #[derive(Debug, thiserror::Error)]
        #[error("cannot reach the API")]
        struct Wraps(#[source] std::io::Error);
        let refused = || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(error_chain(&Repeats(refused())), "cannot reach the API: refused");
        assert_eq!(error_chain(&Wraps(refused())), "cannot reach the API: refused");
    }

    /// The token is sent, and a refusal's error (as text, as Debug, with its causes) does not
    /// hold it.
    #[tokio::test]
    async fn a_refused_token_is_not_in_the_error() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        const SECRET: &str = "dop_v1_0123456789abcdef";
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buf).await.unwrap();
                assert!(n > 0, "the request ended early");
                request.extend_from_slice(&buf[..n]);
            }
            let body = r#"{"id":"unauthorized","message":"Unable to authenticate you"}"#;
            let answer = format!(
                "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(answer.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&request).into_owned()
        });
        let client = Client::new(
            http_client(&url).unwrap(),
            &url,
            Token::new(SECRET),
            &["droplet:read"],
            Duration::from_secs(30),
        );
        let err = client.droplet(1).await.unwrap_err();
        let request = server.await.unwrap();
        assert!(
            request.contains(&format!("Bearer {SECRET}")),
            "the token was not sent: {request}"
        );
        assert!(
            matches!(err, ApiError::Unauthorized { status: 401, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("does not accept the token"), "{err}");
        for printed in [err.to_string(), format!("{err:?}"), error_chain(&err)] {
            assert!(!printed.contains(SECRET), "{printed}");
        }
    }
}
