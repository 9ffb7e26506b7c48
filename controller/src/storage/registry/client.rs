//! The HTTP exchange under the registry store: one shared `reqwest::Client` (connection pool,
//! keep-alive), one observed exchange per request, the retry policy and the redirect rule; an
//! unexpected status becomes an error in `status.rs`. Knows nothing of auth or of the
//! distribution API's paths.

use std::error::Error as _;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap};
use reqwest::{Method, StatusCode};

use super::sink::BodySink;
use crate::storage::error::{ErrorKind, StorageError, printable};
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
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                let original = attempt.previous().first().cloned();
                let hops = attempt.previous().len();
                match original.map(|o| redirect_allowed(&o, attempt.url(), hops)) {
                    Some(Err(why)) => attempt.error(why),
                    _ => attempt.follow(),
                }
            }))
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
        self.exchange_with(call, authorization, None).await
    }

    /// As [`Client::exchange`]; a `200` body goes to `sink` (when given) as it arrives instead
    /// of into the response: a model file is never held in memory.
    pub async fn exchange_with(
        &self,
        call: &Call<'_>,
        authorization: Option<&str>,
        sink: Option<&BodySink>,
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
        if let Some(sink) = sink {
            // As for uploads: time for a big file at 1 MiB/s at least.
            req = req.timeout(self.request_timeout + Duration::from_secs(sink.limit >> 20));
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
            if let Some(sink) = sink.filter(|_| status == StatusCode::OK) {
                let sink_error = |e: std::io::Error| {
                    StorageError::permanent(call.op, call.target, e.to_string())
                };
                sink.restart().map_err(sink_error)?;
                while let Some(chunk) = resp.chunk().await.map_err(transport)? {
                    sink.write(&chunk).map_err(sink_error)?;
                }
                return Ok(Response {
                    status,
                    headers,
                    body,
                });
            }
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

// ----- redirects (issue 14, point 2) -----

/// Redirects followed at most, per request.
const MAX_REDIRECTS: usize = 5;

/// Whether a request first sent to `original` may follow a redirect to `next` (after `hops`
/// redirects). A registry is one origin: a redirect to another scheme, host or port is refused
/// (it would carry our requests, and with them the registry's credentials, elsewhere), except for
/// a blob read (`GET`/`HEAD /v2/<name>/blobs/<digest>`), which registries commonly send to their
/// storage (S3, GCS, a CDN): followed to HTTPS only, without the `Authorization` header (reqwest
/// drops it on any change of origin), the content checked against its digest.
fn redirect_allowed(
    original: &reqwest::Url,
    next: &reqwest::Url,
    hops: usize,
) -> Result<(), String> {
    if hops >= MAX_REDIRECTS {
        return Err(format!("more than {MAX_REDIRECTS} redirects"));
    }
    let same_origin = next.scheme() == original.scheme()
        && next.host_str() == original.host_str()
        && next.port_or_known_default() == original.port_or_known_default();
    if same_origin {
        return Ok(());
    }
    // Blob uploads live under `/blobs/uploads/`: writes never leave the registry.
    let blob_read = original
        .path()
        .rsplit_once("/blobs/")
        .is_some_and(|(_, digest)| digest.starts_with("sha256:"));
    if blob_read && next.scheme() == "https" {
        return Ok(());
    }
    let shown = printable(
        &format!(
            "{}://{}",
            next.scheme(),
            next.host_str().unwrap_or_default()
        ),
        100,
    );
    Err(format!(
        "refused a redirect from {}://{} to {shown}: a registry is not followed to another scheme or host (only blob reads, to https)",
        original.scheme(),
        original.host_str().unwrap_or_default()
    ))
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
    fn redirects_stay_on_the_registry_but_blob_reads_may_go_to_https_storage() {
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        let manifest = url("https://r.example/v2/team-a/m/manifests/v1");
        let blob = url("https://r.example/v2/team-a/m/blobs/sha256:abc");
        let upload = url("https://r.example/v2/team-a/m/blobs/uploads/");
        assert!(
            redirect_allowed(
                &manifest,
                &url("https://r.example/v2/other/m/manifests/v1"),
                0
            )
            .is_ok()
        );
        assert!(redirect_allowed(&manifest, &url("https://r.example:443/x"), 0).is_ok());
        for other in [
            "https://evil.example/x",
            "http://r.example/x",
            "https://r.example:8443/x",
        ] {
            let e = redirect_allowed(&manifest, &url(other), 0).unwrap_err();
            assert!(e.contains("refused a redirect"), "{other}: {e}");
            assert!(
                redirect_allowed(&upload, &url(other), 0).is_err(),
                "{other}"
            );
        }
        assert!(redirect_allowed(&blob, &url("https://bucket.s3.example/blob?sig=x"), 1).is_ok());
        assert!(
            redirect_allowed(&blob, &url("http://169.254.169.254/latest/meta-data"), 0).is_err()
        );
        let e = redirect_allowed(&manifest, &manifest, MAX_REDIRECTS).unwrap_err();
        assert!(e.contains("more than"), "{e}");
    }
}
