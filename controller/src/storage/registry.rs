//! [`RegistryStore`]: the [`AttestationStore`] over the OCI distribution HTTP API.
//!
//! Written directly on one shared `reqwest::Client` (not `oci-client`) so that every manifest is
//! sent byte for byte as serialized here and every request is accounted for: the request
//! sequence is documented in docs/registry-layout.md and asserted by
//! `controller/tests/registry_store.rs`.

use std::collections::HashMap;
use std::error::Error as _;
use std::fmt;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, LOCATION, RETRY_AFTER,
    WWW_AUTHENTICATE,
};
use reqwest::{Method, StatusCode, Url};

use super::backend::{self, Backend, Blob, Fetched, MAX_DOCUMENT_BYTES};
use super::cache::Lru;
use super::credentials::{Credential, DockerConfig, normalize_host};
use super::discover::FoundAttestation;
use super::model::ModelArtifact;
use super::oci::{self, ImageIndex, MANIFEST_ACCEPT, OCI_INDEX_MEDIA_TYPE, sha256_digest};
use super::reference::{Location, parse_reference};
use super::{
    ArtifactStore, Attached, Attestation, AttestationStore, ErrorKind, ResolvedArtifact,
    StorageError, Subject,
};
use crate::hashing::FileDigest;

/// The op names passed to the observer and carried by errors: one per kind of HTTP request.
pub mod op {
    /// `GET /v2/<name>/manifests/<ref>` (subject, `.att`, `.sig`, fallback index).
    pub const MANIFEST_GET: &str = "manifest_get";
    /// `PUT /v2/<name>/manifests/<ref>`.
    pub const MANIFEST_PUT: &str = "manifest_put";
    /// `HEAD /v2/<name>/blobs/<digest>`.
    pub const BLOB_HEAD: &str = "blob_head";
    /// `POST /v2/<name>/blobs/uploads/` (opens an upload session).
    pub const BLOB_UPLOAD_START: &str = "blob_upload_start";
    /// `PUT <upload location>?digest=` (monolithic upload of the content).
    pub const BLOB_UPLOAD: &str = "blob_upload";
    /// `GET /v2/<name>/blobs/<digest>` (reading envelopes back, `verify`).
    pub const BLOB_GET: &str = "blob_get";
    /// `GET /v2/<name>/referrers/<digest>` (referrers API probe, once per registry; the list
    /// itself when reading).
    pub const REFERRERS_GET: &str = "referrers_get";
    /// Token endpoint request (bearer auth).
    pub const AUTH: &str = "auth";
    /// Every op above, e.g. to pre-register metric label values.
    pub const ALL: [&str; 8] = [
        MANIFEST_GET,
        MANIFEST_PUT,
        BLOB_HEAD,
        BLOB_UPLOAD_START,
        BLOB_UPLOAD,
        BLOB_GET,
        REFERRERS_GET,
        AUTH,
    ];
    /// Not an HTTP request: an invalid repository, digest or attestation.
    pub const INPUT: &str = "input";
}

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

/// Configuration of a [`RegistryStore`].
#[derive(Clone)]
pub struct RegistryOptions {
    /// Hosts (`host[:port]`) reached over plain HTTP; every other host is HTTPS.
    pub insecure_registries: Vec<String>,
    /// Credentials, e.g. from a `kubernetes.io/dockerconfigjson` Secret.
    pub credentials: Option<DockerConfig>,
    pub retry: RetryPolicy,
    /// Per-request callback (the controller turns it into metrics).
    pub observer: Option<Observer>,
    /// TCP/TLS connect timeout per request.
    pub connect_timeout: Duration,
    /// Whole-request timeout (a blob upload included).
    pub request_timeout: Duration,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            insecure_registries: Vec::new(),
            credentials: None,
            retry: RetryPolicy::default(),
            observer: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
        }
    }
}

impl fmt::Debug for RegistryOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryOptions")
            .field("insecure_registries", &self.insecure_registries)
            .field("credentials", &self.credentials)
            .field("retry", &self.retry)
            .field("observer", &self.observer.as_ref().map(|_| "<fn>"))
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// Subject descriptors remembered, so `attach` after the caller's `resolve` does not fetch the
/// manifest again (keyed by repository and digest: content addressed, never stale); LRU.
const RESOLVED_CACHE_ENTRIES: usize = 4096;
/// (repository, constant blob) pairs known to exist: two per repository written to, so a few
/// thousand repositories; LRU. An evicted entry costs one HEAD.
const KNOWN_BLOBS_ENTRIES: usize = 8192;
/// Tag locks are pruned (unused ones dropped) when the map grows past this.
const TAG_LOCKS_PRUNE_AT: usize = 256;

/// (repository, digest) → the once-initialized check that a constant blob exists there.
type KnownBlobs = Lru<(String, String), Arc<tokio::sync::OnceCell<()>>>;

/// The [`AttestationStore`] on an OCI registry. Create one per process and share it
/// (`Arc<dyn AttestationStore>`): it holds the connection pool, the token cache, the per-tag
/// locks that serialize read-modify-writes, and what it learned about each registry.
pub struct RegistryStore {
    client: Result<reqwest::Client, String>,
    options: RegistryOptions,
    auth: Mutex<AuthState>,
    /// Registry API host → whether it serves the OCI 1.1 referrers API.
    referrers_api: Mutex<HashMap<String, bool>>,
    resolved: Mutex<Lru<(String, String), ResolvedArtifact>>,
    /// (repository, digest) → constant blobs (cosign config, `{}`) checked to exist.
    known_blobs: Mutex<KnownBlobs>,
    tag_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

#[derive(Default)]
struct AuthState {
    /// Registry API host → its auth challenge, learned from the first 401.
    challenges: HashMap<String, Challenge>,
    /// (registry API host, scope) → bearer token.
    tokens: HashMap<(String, String), Token>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

struct Token {
    value: String,
    expires: Instant,
}

impl fmt::Debug for RegistryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryStore")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// A parsed `host[:port]/path` repository.
#[derive(Debug, Clone)]
struct Repo {
    /// As the caller wrote it (used in returned references).
    display: String,
    /// `host[:port]` as written (credentials lookup).
    host: String,
    /// Where the API lives (`registry-1.docker.io` for `docker.io`).
    api_host: String,
    path: String,
    plain_http: bool,
    /// `scheme://api_host/v2/path`.
    base: String,
}

impl Repo {
    fn parse(repository: &str, insecure: &[String]) -> Result<Repo, StorageError> {
        let bad = |why: &str| {
            StorageError::permanent(
                op::INPUT,
                repository,
                format!("invalid repository (want host[:port]/path): {why}"),
            )
        };
        let (host, path) = repository.split_once('/').ok_or_else(|| bad("no path"))?;
        let looks_like_host = host.contains('.') || host.contains(':') || host == "localhost";
        if host.is_empty() || !looks_like_host {
            return Err(bad("does not start with a registry host"));
        }
        if host
            .bytes()
            .any(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')))
        {
            return Err(bad("invalid character in host"));
        }
        let path_ok = path.split('/').all(|c| {
            !c.is_empty()
                && c.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                })
        });
        if !path_ok {
            return Err(bad(
                "path components must be lowercase [a-z0-9._-] (no tag or digest)",
            ));
        }
        let normalized = normalize_host(host);
        let (api_host, path) = if normalized == "docker.io" {
            let path = if path.contains('/') {
                path.to_string()
            } else {
                format!("library/{path}")
            };
            ("registry-1.docker.io".to_string(), path)
        } else {
            (host.to_ascii_lowercase(), path.to_string())
        };
        let plain_http = insecure
            .iter()
            .map(|h| normalize_host(h))
            .any(|h| h == normalized || h == api_host);
        let scheme = if plain_http { "http" } else { "https" };
        Ok(Repo {
            display: repository.to_string(),
            host: host.to_string(),
            base: format!("{scheme}://{api_host}/v2/{path}"),
            api_host,
            path,
            plain_http,
        })
    }

    fn manifest_url(&self, reference: &str) -> String {
        format!("{}/manifests/{reference}", self.base)
    }

    fn blob_url(&self, digest: &str) -> String {
        format!("{}/blobs/{digest}", self.base)
    }

    fn tag_ref(&self, tag: &str) -> String {
        format!("{}:{tag}", self.display)
    }

    fn digest_ref(&self, digest: &str) -> String {
        format!("{}@{digest}", self.display)
    }

    /// The repository as the registry sees it (`api_host/path`), for the store's caches.
    fn key(&self) -> String {
        format!("{}/{}", self.api_host, self.path)
    }

    fn scope(&self, push: bool) -> String {
        let actions = if push { "pull,push" } else { "pull" };
        format!("repository:{}:{actions}", self.path)
    }
}

/// One HTTP request as the store sends it (rebuilt for each attempt).
struct Call<'a> {
    op: &'static str,
    method: Method,
    url: &'a str,
    target: &'a str,
    accept: Option<&'static str>,
    content_type: Option<&'a str>,
    body: Option<Blob<'a>>,
    /// Statuses that are a usable answer (for the observer).
    ok: &'static [u16],
}

struct Response {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `Content-Type` without parameters, lowercased.
    fn media_type(&self) -> Option<String> {
        let ct = self.header(CONTENT_TYPE.as_str())?;
        let mt = ct.split(';').next().unwrap_or_default().trim();
        (!mt.is_empty()).then(|| mt.to_ascii_lowercase())
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

/// An error for a status the caller did not expect: 404 → NotFound, 408/429/5xx → Transient,
/// other 4xx → Permanent; the message is the registry's own (`CODE: message`).
fn status_error(op: &'static str, target: &str, resp: &Response) -> StorageError {
    let status = resp.status.as_u16();
    // A manifest PUT referencing a blob the registry does not have: it raced that blob's upload
    // (another writer's, or ours from another process), or the blob is gone (registry wiped,
    // garbage-collected) while we remembered it. Storing the blob again and retrying helps.
    let blob_unknown = status == 400
        && oci::ErrorResponse::codes(&resp.body)
            .iter()
            .any(|c| c == "MANIFEST_BLOB_UNKNOWN" || c == "BLOB_UNKNOWN");
    let kind = match status {
        404 => ErrorKind::NotFound,
        408 | 429 | 500..=599 => ErrorKind::Transient,
        400 if blob_unknown => ErrorKind::Transient,
        _ => ErrorKind::Permanent,
    };
    let detail = oci::ErrorResponse::summary(&resp.body).unwrap_or_else(|| {
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
    let mut e =
        StorageError::new(op, target, kind, format!("HTTP {status} {detail}")).with_status(status);
    e.blob_unknown = blob_unknown;
    if kind == ErrorKind::Transient {
        e.retry_after = resp
            .header(RETRY_AFTER.as_str())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
    }
    e
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

/// Parses a `WWW-Authenticate` value: `Basic realm="x"` or
/// `Bearer realm="https://auth/token",service="registry",scope="..."`.
fn parse_challenge(value: &str) -> Option<Challenge> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim()
            .to_ascii_lowercase();
        if key.is_empty() {
            break;
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            val.push(n);
                        }
                    }
                    '"' => break,
                    c => val.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c == ',' {
                    break;
                }
                val.push(c);
                chars.next();
            }
            val = val.trim().to_string();
        }
        params.insert(key, val);
    }
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer {
            realm: params.remove("realm").filter(|r| !r.is_empty())?,
            service: params.remove("service"),
        }),
        _ => None,
    }
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl RegistryStore {
    pub fn new(options: RegistryOptions) -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            .user_agent(concat!("provenant/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {}", error_chain(&e)));
        RegistryStore {
            client,
            options,
            auth: Mutex::default(),
            referrers_api: Mutex::default(),
            resolved: Mutex::new(Lru::new(RESOLVED_CACHE_ENTRIES)),
            known_blobs: Mutex::new(Lru::new(KNOWN_BLOBS_ENTRIES)),
            tag_locks: Mutex::default(),
        }
    }

    pub fn options(&self) -> &RegistryOptions {
        &self.options
    }

    fn observe(&self, op: &str, elapsed: Duration, ok: bool) {
        if let Some(observer) = &self.options.observer {
            observer(op, elapsed, ok);
        }
    }

    /// Runs `f` until it succeeds, fails non-transiently, or `retry.attempts` are used up.
    async fn retry<T, F, Fut>(&self, mut f: F) -> Result<T, StorageError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StorageError>>,
    {
        let policy = &self.options.retry;
        let attempts = policy.attempts.max(1);
        let mut attempt = 1;
        loop {
            match f().await {
                Err(e) if e.is_transient() && attempt < attempts => {
                    let delay = e
                        .retry_after
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
    async fn exchange(
        &self,
        call: &Call<'_>,
        authorization: Option<&str>,
    ) -> Result<Response, StorageError> {
        let client = self
            .client
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
                let timeout = self.options.request_timeout + Duration::from_secs(size >> 20);
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
        self.observe(call.op, start.elapsed(), ok);
        result
    }

    /// One attempt of a registry request, authenticating when the registry asks (and
    /// proactively once its challenge is known, so later requests cost no extra round trip).
    async fn send(
        &self,
        repo: &Repo,
        push: bool,
        call: &Call<'_>,
    ) -> Result<Response, StorageError> {
        let scope = repo.scope(push);
        let sent = self.authorization(repo, &scope, call).await?;
        let resp = self.exchange(call, sent.as_deref()).await?;
        if resp.status != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let challenge = resp
            .headers
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(parse_challenge)
            .max_by_key(|c| matches!(c, Challenge::Bearer { .. }));
        let Some(challenge) = challenge else {
            return Err(status_error(call.op, call.target, &resp)
                .with_message("HTTP 401 without a usable WWW-Authenticate challenge".into()));
        };
        {
            let mut auth = self.lock_auth();
            auth.tokens.remove(&(repo.api_host.clone(), scope.clone()));
            auth.challenges.insert(repo.api_host.clone(), challenge);
        }
        let header = self.authorization(repo, &scope, call).await?;
        if header.is_none() || header == sent {
            let mut e = status_error(call.op, call.target, &resp);
            let message = match header {
                None => format!(
                    "{} (no credentials for {} in the docker config)",
                    e.message(),
                    repo.host
                ),
                Some(_) => format!("{} (credentials rejected)", e.message()),
            };
            e = e.with_message(message);
            return Err(e);
        }
        let resp = self.exchange(call, header.as_deref()).await?;
        if resp.status == StatusCode::UNAUTHORIZED {
            let e = status_error(call.op, call.target, &resp);
            let message = format!("{} (credentials rejected)", e.message());
            return Err(e.with_message(message));
        }
        Ok(resp)
    }

    /// A request with retries; returns any non-transient response for the caller to interpret.
    async fn request(
        &self,
        repo: &Repo,
        push: bool,
        call: &Call<'_>,
    ) -> Result<Response, StorageError> {
        self.retry(move || async move {
            let resp = self.send(repo, push, call).await?;
            if matches!(resp.status.as_u16(), 408 | 429 | 500..=599) {
                return Err(status_error(call.op, call.target, &resp));
            }
            Ok(resp)
        })
        .await
    }

    fn lock_auth(&self) -> std::sync::MutexGuard<'_, AuthState> {
        // A panic while holding the lock cannot leave the maps inconsistent; keep going.
        self.auth.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn credential(&self, repo: &Repo) -> Option<&Credential> {
        self.options.credentials.as_ref()?.get(&repo.host)
    }

    /// The `Authorization` header for a request, if the registry's challenge is known.
    async fn authorization(
        &self,
        repo: &Repo,
        scope: &str,
        call: &Call<'_>,
    ) -> Result<Option<String>, StorageError> {
        let (challenge, cached) = {
            let auth = self.lock_auth();
            let Some(challenge) = auth.challenges.get(&repo.api_host).cloned() else {
                return Ok(None);
            };
            let now = Instant::now();
            // A pull,push token also serves pull requests.
            let wider = scope
                .strip_suffix(":pull")
                .map(|s| format!("{s}:pull,push"))
                .unwrap_or_default();
            let cached = [scope, wider.as_str()].iter().find_map(|s| {
                auth.tokens
                    .get(&(repo.api_host.clone(), s.to_string()))
                    .filter(|t| t.expires > now)
                    .map(|t| t.value.clone())
            });
            (challenge, cached)
        };
        match challenge {
            Challenge::Basic => Ok(match self.credential(repo) {
                Some(Credential::Basic { username, password }) => {
                    let raw = format!("{username}:{password}");
                    Some(format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode(raw)
                    ))
                }
                _ => None,
            }),
            Challenge::Bearer { realm, service } => {
                if let Some(Credential::RegistryToken(t)) = self.credential(repo) {
                    return Ok(Some(format!("Bearer {t}")));
                }
                if let Some(token) = cached {
                    return Ok(Some(format!("Bearer {token}")));
                }
                let token = self
                    .fetch_token(repo, &realm, service.as_deref(), scope, call.target)
                    .await?;
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    /// Gets a bearer token for `scope` from the registry's token endpoint and caches it.
    async fn fetch_token(
        &self,
        repo: &Repo,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        target: &str,
    ) -> Result<String, StorageError> {
        let mut url = Url::parse(realm).map_err(|e| {
            StorageError::permanent(op::AUTH, target, format!("bad token realm {realm}: {e}"))
        })?;
        let realm_host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => String::new(),
        };
        let realm_insecure = self
            .options
            .insecure_registries
            .iter()
            .any(|h| normalize_host(h) == realm_host.to_ascii_lowercase());
        match url.scheme() {
            "https" => {}
            "http" if repo.plain_http || realm_insecure => {}
            s => {
                return Err(StorageError::permanent(
                    op::AUTH,
                    target,
                    format!("refusing token realm {realm}: scheme {s} (HTTPS required)"),
                ));
            }
        }
        let mut form = None;
        let mut basic = None;
        match self.credential(repo) {
            Some(Credential::IdentityToken(refresh)) => {
                // OAuth2 refresh-token grant (docker's identity tokens).
                let mut f = Url::parse("http://form.invalid/").map_err(|e| {
                    StorageError::permanent(op::AUTH, target, format!("form encoding: {e}"))
                })?;
                {
                    let mut q = f.query_pairs_mut();
                    q.append_pair("grant_type", "refresh_token");
                    q.append_pair("refresh_token", refresh);
                    q.append_pair("client_id", "provenant");
                    q.append_pair("scope", scope);
                    if let Some(s) = service {
                        q.append_pair("service", s);
                    }
                }
                form = Some(f.query().unwrap_or_default().as_bytes().to_vec());
            }
            Some(Credential::Basic { username, password }) => {
                let raw = format!("{username}:{password}");
                basic = Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(raw)
                ));
            }
            _ => {}
        }
        if form.is_none() {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            q.append_pair("scope", scope);
        }
        let url = url.to_string();
        let call = Call {
            op: op::AUTH,
            method: if form.is_some() {
                Method::POST
            } else {
                Method::GET
            },
            url: &url,
            target,
            accept: Some("application/json"),
            content_type: form.as_ref().map(|_| "application/x-www-form-urlencoded"),
            body: form.as_deref().map(Blob::Bytes),
            ok: &[200],
        };
        // One attempt: the token fetch runs inside a registry request, whose retry covers it.
        let resp = self.exchange(&call, basic.as_deref()).await;
        let resp = resp
            .and_then(|resp| match resp.status {
                StatusCode::OK => Ok(resp),
                _ => Err(status_error(op::AUTH, target, &resp)),
            })
            .map_err(|e| {
                let message = format!("token request to {realm}: {}", e.message());
                e.with_message(message)
            })?;
        let parsed: TokenResponse = serde_json::from_slice(&resp.body).map_err(|e| {
            StorageError::permanent(op::AUTH, target, format!("token response not JSON: {e}"))
        })?;
        let token = parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                StorageError::permanent(op::AUTH, target, "token response without a token")
            })?;
        // Docker's token spec: 60 s when unspecified; renew a little early.
        let lifetime = Duration::from_secs(parsed.expires_in.unwrap_or(60).saturating_sub(5));
        self.lock_auth().tokens.insert(
            (repo.api_host.clone(), scope.to_string()),
            Token {
                value: token.clone(),
                expires: Instant::now() + lifetime,
            },
        );
        Ok(token)
    }

    // ----- manifests -------------------------------------------------------------------------

    /// GET a manifest; `None` on 404 when `absent_ok`. Checks `Docker-Content-Digest` against
    /// the bytes when the registry sends it.
    async fn get_manifest(
        &self,
        repo: &Repo,
        push: bool,
        reference: &str,
        absent_ok: bool,
    ) -> Result<Option<Response>, StorageError> {
        let url = repo.manifest_url(reference);
        let target = if reference.starts_with("sha256:") {
            repo.digest_ref(reference)
        } else {
            repo.tag_ref(reference)
        };
        let call = Call {
            op: op::MANIFEST_GET,
            method: Method::GET,
            url: &url,
            target: &target,
            accept: Some(MANIFEST_ACCEPT),
            content_type: None,
            body: None,
            ok: if absent_ok { &[200, 404] } else { &[200] },
        };
        let resp = self.request(repo, push, &call).await?;
        match resp.status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND if absent_ok => return Ok(None),
            _ => return Err(status_error(op::MANIFEST_GET, &target, &resp)),
        }
        let actual = sha256_digest(&resp.body);
        if let Some(served) = resp.header("docker-content-digest")
            && served.starts_with("sha256:")
            && served != actual
        {
            return Err(StorageError::new(
                op::MANIFEST_GET,
                &target,
                ErrorKind::DigestMismatch,
                format!("registry says {served}, content hashes to {actual}"),
            ));
        }
        Ok(Some(resp))
    }

    /// PUT a manifest under a tag or its digest; returns the response (for `OCI-Subject`).
    async fn put_manifest(
        &self,
        repo: &Repo,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Response, StorageError> {
        let url = repo.manifest_url(reference);
        let target = if reference.starts_with("sha256:") {
            repo.digest_ref(reference)
        } else {
            repo.tag_ref(reference)
        };
        let call = Call {
            op: op::MANIFEST_PUT,
            method: Method::PUT,
            url: &url,
            target: &target,
            accept: None,
            content_type: Some(media_type),
            body: Some(Blob::Bytes(bytes)),
            ok: &[201],
        };
        let resp = self.request(repo, true, &call).await?;
        if resp.status != StatusCode::CREATED && resp.status != StatusCode::OK {
            return Err(status_error(op::MANIFEST_PUT, &target, &resp));
        }
        let expected = sha256_digest(bytes);
        if let Some(served) = resp.header("docker-content-digest")
            && served.starts_with("sha256:")
            && served != expected
        {
            return Err(StorageError::new(
                op::MANIFEST_PUT,
                &target,
                ErrorKind::DigestMismatch,
                format!("registry stored {served}, we sent {expected}"),
            ));
        }
        tracing::debug!(reference = %target, digest = %expected, "manifest written");
        Ok(resp)
    }

    async fn resolve_in(
        &self,
        repo: &Repo,
        digest: &str,
        push: bool,
    ) -> Result<ResolvedArtifact, StorageError> {
        let key = (repo.key(), digest.to_string());
        let hit = self.lock_resolved().get(&key);
        if let Some(hit) = hit {
            return Ok(hit);
        }
        let target = repo.digest_ref(digest);
        let Some(resp) = self.get_manifest(repo, push, digest, false).await? else {
            return Err(StorageError::new(
                op::MANIFEST_GET,
                &target,
                ErrorKind::NotFound,
                "manifest unknown",
            ));
        };
        backend::check_digest(op::MANIFEST_GET, &target, digest, &resp.body)?;
        let resolved = ResolvedArtifact {
            digest: digest.to_string(),
            media_type: backend::manifest_media_type(resp.media_type(), &resp.body, &target)?,
            size: resp.body.len() as u64,
        };
        self.lock_resolved().insert(key, resolved.clone());
        Ok(resolved)
    }

    fn lock_resolved(&self) -> std::sync::MutexGuard<'_, Lru<(String, String), ResolvedArtifact>> {
        self.resolved.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_known_blobs(&self) -> std::sync::MutexGuard<'_, KnownBlobs> {
        self.known_blobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ----- blobs -----------------------------------------------------------------------------

    /// `HEAD` (exists?) or `GET` (content) of a blob; `None` on 404.
    async fn blob_request(
        &self,
        repo: &Repo,
        push: bool,
        op: &'static str,
        digest: &str,
    ) -> Result<Option<Response>, StorageError> {
        let url = repo.blob_url(digest);
        let target = repo.digest_ref(digest);
        let call = Call {
            op,
            method: if op == op::BLOB_HEAD {
                Method::HEAD
            } else {
                Method::GET
            },
            url: &url,
            target: &target,
            accept: None,
            content_type: None,
            body: None,
            ok: &[200, 404],
        };
        let resp = self.request(repo, push, &call).await?;
        match resp.status {
            StatusCode::OK => Ok(Some(resp)),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(status_error(op, &target, &resp)),
        }
    }

    /// POST + monolithic PUT, retried as a unit (a failed PUT may have consumed the upload
    /// session; a file body is reopened for each attempt).
    async fn upload_blob(
        &self,
        repo: &Repo,
        digest: &str,
        blob: Blob<'_>,
    ) -> Result<(), StorageError> {
        let start_url = &format!("{}/blobs/uploads/", repo.base);
        let target = &repo.digest_ref(digest);
        self.retry(move || async move {
            let start = Call {
                op: op::BLOB_UPLOAD_START,
                method: Method::POST,
                url: start_url,
                target,
                accept: None,
                content_type: None,
                body: None,
                ok: &[202],
            };
            let resp = self.send(repo, true, &start).await?;
            if resp.status != StatusCode::ACCEPTED {
                return Err(status_error(op::BLOB_UPLOAD_START, target, &resp));
            }
            let location = resp.header(LOCATION.as_str()).ok_or_else(|| {
                StorageError::permanent(
                    op::BLOB_UPLOAD_START,
                    target,
                    "202 without a Location header",
                )
            })?;
            let base = Url::parse(start_url).map_err(|e| {
                StorageError::permanent(op::BLOB_UPLOAD_START, target, e.to_string())
            })?;
            let mut put_url = base.join(location).map_err(|e| {
                StorageError::permanent(
                    op::BLOB_UPLOAD_START,
                    target,
                    format!("bad Location {location}: {e}"),
                )
            })?;
            put_url.query_pairs_mut().append_pair("digest", digest);
            let put_url = put_url.to_string();
            let put = Call {
                op: op::BLOB_UPLOAD,
                method: Method::PUT,
                url: &put_url,
                target,
                accept: None,
                content_type: Some("application/octet-stream"),
                body: Some(blob),
                ok: &[201],
            };
            let resp = self.send(repo, true, &put).await?;
            if resp.status != StatusCode::CREATED {
                return Err(status_error(op::BLOB_UPLOAD, target, &resp));
            }
            Ok(())
        })
        .await
    }

    // ----- tags and referrers ----------------------------------------------------------------

    fn tag_lock(&self, repo: &Repo, tag: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.tag_locks.lock().unwrap_or_else(|p| p.into_inner());
        if locks.len() > TAG_LOCKS_PRUNE_AT {
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        locks
            .entry(format!("{}:{tag}", repo.key()))
            .or_default()
            .clone()
    }

    fn set_referrers_api(&self, repo: &Repo, supported: bool) {
        self.referrers_api
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(repo.api_host.clone(), supported);
    }

    fn known_referrers_api(&self, repo: &Repo) -> Option<bool> {
        self.referrers_api
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&repo.api_host)
            .copied()
    }

    /// `GET /v2/<name>/referrers/<digest>`: the referrers list when the registry serves the API
    /// (200 with an OCI index), `None` when it does not (remembered per registry: no request
    /// once known absent).
    async fn referrers(
        &self,
        repo: &Repo,
        push: bool,
        subject: &str,
    ) -> Result<Option<ImageIndex>, StorageError> {
        if self.known_referrers_api(repo) == Some(false) {
            return Ok(None);
        }
        let url = format!("{}/referrers/{subject}", repo.base);
        let target = repo.digest_ref(subject);
        let call = Call {
            op: op::REFERRERS_GET,
            method: Method::GET,
            url: &url,
            target: &target,
            accept: Some(OCI_INDEX_MEDIA_TYPE),
            content_type: None,
            body: None,
            ok: &[200, 404],
        };
        let resp = self.request(repo, push, &call).await?;
        let index = (resp.status == StatusCode::OK)
            .then(|| serde_json::from_slice::<ImageIndex>(&resp.body).ok())
            .flatten()
            .filter(|i| {
                resp.media_type().as_deref() == Some(OCI_INDEX_MEDIA_TYPE)
                    || i.media_type.as_deref() == Some(OCI_INDEX_MEDIA_TYPE)
            });
        tracing::debug!(registry = %repo.api_host, supported = index.is_some(), "referrers API asked");
        self.set_referrers_api(repo, index.is_some());
        Ok(index)
    }

    /// The backend for one repository; `push` asks for push scope when authenticating.
    fn backend(&self, repository: &str, push: bool) -> Result<RegistryBackend<'_>, StorageError> {
        Ok(RegistryBackend {
            store: self,
            repo: Repo::parse(repository, &self.options.insecure_registries)?,
            push,
        })
    }
}

/// Checks `host[:port]/path` (no tag, no digest) as the store would parse it.
pub(crate) fn validate_repository(repository: &str) -> Result<(), StorageError> {
    Repo::parse(repository, &[]).map(|_| ())
}

/// One repository of a [`RegistryStore`] as the shared manifest logic sees it: each call is one
/// request (plus retries and auth), so the request counts in docs/registry-layout.md hold.
struct RegistryBackend<'a> {
    store: &'a RegistryStore,
    repo: Repo,
    push: bool,
}

#[async_trait::async_trait]
impl Backend for RegistryBackend<'_> {
    fn tag_ref(&self, tag: &str) -> String {
        self.repo.tag_ref(tag)
    }

    fn digest_ref(&self, digest: &str) -> String {
        self.repo.digest_ref(digest)
    }

    async fn get_manifest(&self, reference: &str) -> Result<Option<Fetched>, StorageError> {
        let resp = self
            .store
            .get_manifest(&self.repo, self.push, reference, true)
            .await?;
        Ok(resp.map(|r| Fetched {
            media_type: r.media_type(),
            bytes: r.body,
        }))
    }

    async fn put_manifest(
        &self,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Option<String>, StorageError> {
        let resp = self
            .store
            .put_manifest(&self.repo, reference, media_type, bytes)
            .await?;
        Ok(resp.header("oci-subject").map(str::to_string))
    }

    async fn blob_exists(&self, digest: &str) -> Result<bool, StorageError> {
        let head = self
            .store
            .blob_request(&self.repo, true, op::BLOB_HEAD, digest)
            .await?;
        Ok(head.is_some())
    }

    async fn put_blob(&self, digest: &str, blob: Blob<'_>) -> Result<(), StorageError> {
        self.store.upload_blob(&self.repo, digest, blob).await
    }

    async fn get_blob(&self, digest: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let resp = self
            .store
            .blob_request(&self.repo, self.push, op::BLOB_GET, digest)
            .await?;
        Ok(resp.map(|r| r.body))
    }

    async fn has_referrers_api(&self, subject: &str) -> Result<bool, StorageError> {
        match self.store.known_referrers_api(&self.repo) {
            Some(known) => Ok(known),
            None => Ok(self.referrers(subject).await?.is_some()),
        }
    }

    async fn referrers(&self, subject: &str) -> Result<Option<ImageIndex>, StorageError> {
        self.store.referrers(&self.repo, self.push, subject).await
    }

    fn learned_referrers_api(&self) {
        self.store.set_referrers_api(&self.repo, true);
    }

    fn tag_lock(&self, tag: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.store.tag_lock(&self.repo, tag)
    }

    fn known_blob(&self, digest: &str) -> Arc<tokio::sync::OnceCell<()>> {
        self.store
            .lock_known_blobs()
            .get_or_insert_with((self.repo.key(), digest.to_string()), Arc::default)
    }

    fn forget_known_blobs(&self) {
        let repo = self.repo.key();
        // A check still in flight (another attach recovering at the same moment) is kept and
        // joined rather than duplicated: concurrent uploads of one blob race in distribution.
        self.store
            .lock_known_blobs()
            .retain(|(r, _), cell| *r != repo || !cell.initialized());
    }

    /// No re-read after a tag PUT: without a conditional PUT it cannot make another process's
    /// concurrent write safe, only narrow the window, at one GET per tag (docs/registry-layout.md).
    fn verifies_tag_writes(&self) -> bool {
        false
    }

    async fn resolve(&self, digest: &str) -> Result<ResolvedArtifact, StorageError> {
        self.store.resolve_in(&self.repo, digest, self.push).await
    }
}

#[async_trait::async_trait]
impl AttestationStore for RegistryStore {
    async fn resolve(&self, subject: &Subject) -> Result<ResolvedArtifact, StorageError> {
        let b = self.backend(&subject.repository, false)?;
        backend::subject_hex(subject)?;
        self.resolve_in(&b.repo, &subject.digest, false).await
    }

    async fn attach(&self, attestation: &Attestation) -> Result<Attached, StorageError> {
        let b = self.backend(&attestation.subject.repository, true)?;
        let hex = backend::validate_attestation(attestation)?;
        backend::attach(&b, attestation, &hex).await
    }
}

#[async_trait::async_trait]
impl ArtifactStore for RegistryStore {
    async fn push_model(
        &self,
        repository: &str,
        tag: Option<&str>,
        dir: &Path,
        files: &[FileDigest],
    ) -> Result<ResolvedArtifact, StorageError> {
        let b = self.backend(repository, true)?;
        let model = ModelArtifact::new(dir, files)?;
        backend::push_model(&b, tag, &model).await
    }

    async fn attestations(&self, subject: &Subject) -> Result<Vec<FoundAttestation>, StorageError> {
        let b = self.backend(&subject.repository, false)?;
        backend::attestations(&b, subject).await
    }

    async fn resolve_reference(&self, reference: &str) -> Result<ResolvedArtifact, StorageError> {
        let parsed = parse_reference(reference)?;
        let Location::Registry(repository) = &parsed.location else {
            return Err(StorageError::permanent(
                op::INPUT,
                reference,
                "an OCI layout reference (oci:...) given to the registry store",
            ));
        };
        let b = self.backend(repository, false)?;
        let tag_or_digest = parsed.tag_or_digest().ok_or_else(|| {
            StorageError::permanent(op::INPUT, reference, "no tag or digest in the reference")
        })?;
        backend::resolve_reference(&b, tag_or_digest).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories() {
        let insecure = vec!["127.0.0.1:5000".to_string()];
        let r = Repo::parse("127.0.0.1:5000/models/mnist", &insecure).unwrap();
        assert!(r.plain_http);
        assert_eq!(r.base, "http://127.0.0.1:5000/v2/models/mnist");
        assert_eq!(r.scope(true), "repository:models/mnist:pull,push");
        let r = Repo::parse("Registry.Example.com/a/b-c_d.e", &insecure).unwrap();
        assert_eq!(r.base, "https://registry.example.com/v2/a/b-c_d.e");
        let r = Repo::parse("docker.io/ubuntu", &[]).unwrap();
        assert_eq!(r.base, "https://registry-1.docker.io/v2/library/ubuntu");
        assert_eq!(r.display, "docker.io/ubuntu");
        let r = Repo::parse("localhost/x", &["localhost".into()]).unwrap();
        assert_eq!(r.base, "http://localhost/v2/x");
        for bad in [
            "models/mnist",
            "host.example",
            "host.example/",
            "host.example/Upper",
            "host.example/a:tag",
            "host.example/a@sha256:x",
            "host.example/a//b",
            "ho st.example/a",
        ] {
            let e = Repo::parse(bad, &[]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Permanent, "{bad}");
        }
    }

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"bearer realm="https://x/t?a=\"b\"", service=svc"#),
            Some(Challenge::Bearer {
                realm: r#"https://x/t?a="b""#.into(),
                service: Some("svc".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(parse_challenge("Negotiate"), None);
    }

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
    fn status_errors_carry_the_registry_message() {
        let resp = |status: u16, body: &str| Response {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: body.as_bytes().to_vec(),
        };
        let e = status_error(
            op::MANIFEST_GET,
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
