//! The HTTP exchange under the registry store: one shared `reqwest::Client` (connection pool,
//! keep-alive), one observed exchange per request, the retry policy, and the mapping of
//! statuses and registry error bodies to [`StorageError`]s. Knows nothing of auth or of the
//! distribution API's paths.

use std::error::Error as _;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, RETRY_AFTER,
};
use reqwest::{Method, StatusCode};
use serde::Deserialize;

use crate::storage::error::{ErrorKind, StorageError};
use crate::storage::transport::{Blob, MAX_DOCUMENT_BYTES};

/// Called once per HTTP request (every attempt, auth included) with its op, duration and whether
/// it got a usable answer (2xx, or 404 where absence is an answer: blob HEAD, tag GET, referrers
/// probe). Transport errors, 401 challenges, 5xx, 429 and unexpected statuses are `false`.
pub type Observer = Arc<dyn Fn(&str, Duration, bool) + Send + Sync>;

/// Capped exponential backoff for transient failures (connect errors, timeouts, 5xx, 408, 429).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay before the first retry.
    pub initial: Duration,
    /// Cap on any delay (also on a registry's `Retry-After`).
    pub max: Duration,
    /// Total attempts per request, the first included (1 = no retries).
    pub attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(5),
            attempts: 5,
        }
    }
}

impl RetryPolicy {
    /// Delay after failed attempt `attempt` (1-based): `initial * 2^(attempt-1)` capped at `max`,
    /// with equal jitter (half fixed, half random) so concurrent clients spread out.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(30));
        let full = self.initial.saturating_mul(factor).min(self.max);
        let half = full / 2;
        let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(rand::random_range(0..=nanos))
    }
}

/// One HTTP request as the store sends it (rebuilt for each attempt).
pub(super) struct Call<'a> {
    pub op: &'static str,
    pub method: Method,
    pub url: &'a str,
    pub target: &'a str,
    pub accept: Option<&'static str>,
    pub content_type: Option<&'a str>,
    pub body: Option<Blob<'a>>,
    /// Statuses that are a usable answer (for the observer).
    pub ok: &'static [u16],
}

pub(super) struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `Content-Type` without parameters, lowercased.
    pub fn media_type(&self) -> Option<String> {
        let ct = self.header(CONTENT_TYPE.as_str())?;
        let mt = ct.split(';').next().unwrap_or_default().trim();
        (!mt.is_empty()).then(|| mt.to_ascii_lowercase())
    }
}

/// The HTTP client of one store: every request goes through [`Client::exchange`].
pub(super) struct Client {
    /// The error is kept (not raised at construction) so a store always exists and each
    /// operation reports why it cannot send.
    http: Result<reqwest::Client, String>,
    retry: RetryPolicy,
    observer: Option<Observer>,
    request_timeout: Duration,
}

impl Client {
    pub fn new(
        connect_timeout: Duration,
        request_timeout: Duration,
        retry: RetryPolicy,
        observer: Option<Observer>,
    ) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .timeout(request_timeout)
            .user_agent(concat!("provenant/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {}", error_chain(&e)));
        Client {
            http,
            retry,
            observer,
            request_timeout,
        }
    }

    /// Runs `f` until it succeeds, fails non-transiently, or `retry.attempts` are used up.
    pub async fn retry<T, F, Fut>(&self, mut f: F) -> Result<T, StorageError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StorageError>>,
    {
        let policy = &self.retry;
        let attempts = policy.attempts.max(1);
        let mut attempt = 1;
        loop {
            match f().await {
                Err(e) if e.is_transient() && attempt < attempts => {
                    let delay = e
                        .retry_after()
                        .map(|d| d.min(policy.max))
                        .unwrap_or_else(|| policy.delay(attempt));
                    tracing::debug!(op = e.op(), reference = e.target(), error = %e.message(), attempt, ?delay, "registry request failed, retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(e) if e.is_transient() && attempts > 1 => {
                    let message = format!("{} (gave up after {attempt} attempts)", e.message());
                    return Err(e.with_message(message));
                }
                other => return other,
            }
        }
    }

    /// Sends one HTTP request and reads the response; reports it to the observer.
    pub async fn exchange(
        &self,
        call: &Call<'_>,
        authorization: Option<&str>,
    ) -> Result<Response, StorageError> {
        let client = self
            .http
            .as_ref()
            .map_err(|e| StorageError::permanent(call.op, call.target, e.clone()))?;
        let mut req = client.request(call.method.clone(), call.url);
        if let Some(accept) = call.accept {
            req = req.header(ACCEPT, accept);
        }
        if let Some(ct) = call.content_type {
            req = req.header(CONTENT_TYPE, ct);
        }
        if let Some(a) = authorization {
            req = req.header(AUTHORIZATION, a);
        }
        match call.body {
            Some(Blob::Bytes(body)) => {
                req = req.header(CONTENT_LENGTH, body.len()).body(body.to_vec());
            }
            Some(Blob::File { path, size }) => {
                let file = tokio::fs::File::open(path).await.map_err(|e| {
                    StorageError::permanent(
                        call.op,
                        call.target,
                        format!("{}: {e}", path.display()),
                    )
                })?;
                // The whole-request timeout is sized for manifests; give big files time at
                // 1 MiB/s at least.
                let timeout = self.request_timeout + Duration::from_secs(size >> 20);
                req = req
                    .header(CONTENT_LENGTH, size)
                    .timeout(timeout)
                    .body(file_body(file));
            }
            None if call.method == Method::POST || call.method == Method::PUT => {
                req = req.header(CONTENT_LENGTH, 0);
            }
            None => {}
        }
        let start = Instant::now();
        let result = async {
            let transport = |e: reqwest::Error| {
                StorageError::new(call.op, call.target, ErrorKind::Transient, error_chain(&e))
            };
            let mut resp = req.send().await.map_err(transport)?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(transport)? {
                if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                    return Err(StorageError::permanent(
                        call.op,
                        call.target,
                        format!("response larger than {MAX_DOCUMENT_BYTES} bytes"),
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Response {
                status,
                headers,
                body,
            })
        }
        .await;
        let ok = matches!(&result, Ok(r) if call.ok.contains(&r.status.as_u16()));
        if let Some(observer) = &self.observer {
            observer(call.op, start.elapsed(), ok);
        }
        result
    }
}

/// The error chain of a transport failure, e.g. `error sending request for url (...): client
/// error (Connect): tcp connect error: Connection refused (os error 111)`.
fn error_chain(e: &reqwest::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = s.source();
    }
    message
}

/// A request body streaming `file` in chunks: model files are never read whole into memory.
fn file_body(file: tokio::fs::File) -> reqwest::Body {
    use tokio::io::AsyncReadExt as _;
    const CHUNK: usize = 256 << 10;
    let chunks = futures::stream::try_unfold(file, |mut file| async move {
        let mut buf = vec![0; CHUNK];
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok::<_, std::io::Error>(None);
        }
        buf.truncate(n);
        Ok(Some((buf, file)))
    });
    reqwest::Body::wrap_stream(chunks)
}

/// An error for a status the caller did not expect: 404 → NotFound, 408/429/5xx → Transient,
/// other 4xx → Permanent; the message is the registry's own (`CODE: message`).
pub(super) fn status_error(op: &'static str, target: &str, resp: &Response) -> StorageError {
    let status = resp.status.as_u16();
    // A manifest PUT referencing a blob the registry does not have: it raced that blob's upload
    // (another writer's, or ours from another process), or the blob is gone (registry wiped,
    // garbage-collected) while we remembered it. Storing the blob again and retrying helps.
    let blob_unknown = status == 400
        && ErrorResponse::codes(&resp.body)
            .iter()
            .any(|c| c == "MANIFEST_BLOB_UNKNOWN" || c == "BLOB_UNKNOWN");
    let kind = match status {
        404 => ErrorKind::NotFound,
        408 | 429 | 500..=599 => ErrorKind::Transient,
        400 if blob_unknown => ErrorKind::Transient,
        _ => ErrorKind::Permanent,
    };
    let detail = ErrorResponse::summary(&resp.body).unwrap_or_else(|| {
        let text = String::from_utf8_lossy(&resp.body);
        let text = text.trim();
        if text.is_empty() {
            resp.status
                .canonical_reason()
                .unwrap_or_default()
                .to_string()
        } else {
            text.chars().take(300).collect()
        }
    });
    let retry_after = (kind == ErrorKind::Transient)
        .then(|| resp.header(RETRY_AFTER.as_str()))
        .flatten()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    StorageError::new(op, target, kind, format!("HTTP {status} {detail}"))
        .with_status(status)
        .with_blob_unknown(blob_unknown)
        .with_retry_after(retry_after)
}

/// The distribution-spec error body: `{"errors":[{"code","message","detail"}]}`. Not
/// `oci_spec::distribution::ErrorResponse`: its `code` is a closed enum and required, so a body
/// with any other code (registries add their own) would not parse and the registry's message
/// would be lost from the error.
#[derive(Debug, Clone, Default, Deserialize)]
struct ErrorResponse {
    #[serde(default)]
    errors: Option<Vec<RegistryError>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct RegistryError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

impl ErrorResponse {
    fn parse(body: &[u8]) -> Vec<RegistryError> {
        serde_json::from_slice::<ErrorResponse>(body)
            .ok()
            .and_then(|r| r.errors)
            .unwrap_or_default()
    }

    /// The error codes in a registry error body (empty when it is not one).
    fn codes(body: &[u8]) -> Vec<String> {
        Self::parse(body).into_iter().map(|e| e.code).collect()
    }

    /// `CODE: message; CODE: message`, or `None` when the body is not a registry error.
    fn summary(body: &[u8]) -> Option<String> {
        let errors = Self::parse(body);
        if errors.is_empty() {
            return None;
        }
        Some(
            errors
                .iter()
                .map(|e| match (e.code.is_empty(), e.message.is_empty()) {
                    (false, false) => format!("{}: {}", e.code, e.message),
                    (false, true) => e.code.clone(),
                    _ => e.message.clone(),
                })
                .collect::<Vec<_>>()
                .join("; "),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_exponential_with_jitter() {
        let p = RetryPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            attempts: 10,
        };
        for (attempt, full) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (40, 1000),
        ] {
            let d = p.delay(attempt);
            let full = Duration::from_millis(full);
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
        }
    }

    #[test]
    fn registry_error_summary() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}}]}"#;
        assert_eq!(
            ErrorResponse::summary(body).as_deref(),
            Some("MANIFEST_UNKNOWN: manifest unknown")
        );
        assert_eq!(ErrorResponse::summary(b"<html>"), None);
        assert_eq!(ErrorResponse::summary(b"{}"), None);
        assert_eq!(ErrorResponse::summary(br#"{"errors":null}"#), None);
    }

    #[test]
    fn status_errors_carry_the_registry_message() {
        let resp = |status: u16, body: &str| Response {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: body.as_bytes().to_vec(),
        };
        let e = status_error(
            "manifest_get",
            "r",
            &resp(
                404,
                r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
            ),
        );
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(e.message(), "HTTP 404 MANIFEST_UNKNOWN: manifest unknown");
        assert_eq!(e.status(), Some(404));
        assert!(status_error("x", "r", &resp(503, "")).is_transient());
        assert!(status_error("x", "r", &resp(429, "")).is_transient());
        assert!(status_error("x", "r", &resp(408, "")).is_transient());
        let race =
            r#"{"errors":[{"code":"MANIFEST_BLOB_UNKNOWN","message":"blob unknown to registry"}]}"#;
        let e = status_error("x", "r", &resp(400, race));
        assert!(
            e.is_transient() && e.is_blob_unknown(),
            "a blob upload race is retried"
        );
        // distribution 2.8 lists every problem of a manifest.
        let several = r#"{"errors":[{"code":"DIGEST_INVALID","message":"x"},{"code":"MANIFEST_BLOB_UNKNOWN","message":"blob unknown to registry"}]}"#;
        assert!(status_error("x", "r", &resp(400, several)).is_blob_unknown());
        let e = status_error("x", "r", &resp(400, "bad"));
        assert!(!e.is_blob_unknown());
        assert_eq!(e.kind(), ErrorKind::Permanent);
        assert_eq!(e.message(), "HTTP 400 bad");
        assert_eq!(
            status_error("x", "r", &resp(403, "")).message(),
            "HTTP 403 Forbidden"
        );
    }
}
