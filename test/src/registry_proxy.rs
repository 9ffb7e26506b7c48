//! A fault-injecting HTTP proxy in front of the registry fixture, for outage scenarios with exact
//! timing: pass everything, refuse writes (503, as a registry under maintenance or overload), be
//! down (503 for everything), deny (403 `DENIED`, as a registry whose policy forbids the push or
//! the pull), ask for credentials (401), tamper with manifests, or hang. Clients talk to the
//! proxy's host as if it were the registry. Independently of the mode, another writer can race
//! the clients' tag updates ([`RegistryProxy::race_tag_writes`], `racing_writer.rs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::task::JoinHandle;

use crate::racing_writer::{TagKind, write_after};
use crate::registry::Registry;

/// What the proxy does with requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Forward everything.
    Pass = 0,
    /// Answer 503 to writes (POST, PUT, PATCH, DELETE); forward reads.
    RefuseWrites = 1,
    /// Answer 503 to everything.
    Down = 2,
    /// Forward, but serve manifests with one extra byte: content that no longer matches its
    /// digest, as a broken or malicious registry would.
    TamperManifests = 3,
    /// Hold every request without an answer while this mode lasts, then forward it: a hung
    /// registry (clients wait until their own timeout or until it recovers).
    Stall = 4,
    /// Answer 403 `DENIED` to writes; forward reads (a push the registry's policy forbids).
    DenyWrites = 5,
    /// Answer 403 `DENIED` to everything (credentials without any access).
    DenyAll = 6,
    /// Answer 401 with a `Basic` challenge to everything (credentials missing or rejected).
    Unauthorized = 7,
}

struct Shared {
    upstream: String,
    mode: AtomicU8,
    refused: AtomicUsize,
    stalled: AtomicUsize,
    client: reqwest::Client,
    /// The upstream, as the racing writer reaches it.
    registry: Registry,
    /// How many writes of each read-modify-write tag the racing writer races.
    race_per_tag: AtomicUsize,
    /// Manifest path → writes raced so far.
    races: Mutex<HashMap<String, usize>>,
    raced: AtomicUsize,
    race_error: Mutex<Option<String>>,
    /// Per-repository access control (issue 14, point 2): see [`RegistryProxy::require_basic`].
    access: Mutex<Vec<AccessRule>>,
}

/// The proxy; stops on drop.
pub struct RegistryProxy {
    shared: Arc<Shared>,
    host: String,
    task: JoinHandle<()>,
}

impl RegistryProxy {
    /// Proxy to `upstream` (`http://host:port`) on a random loopback port.
    pub async fn start(upstream: &str) -> Result<RegistryProxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the registry proxy")?;
        let host = listener.local_addr()?.to_string();
        let registry = Registry::external(upstream).await?;
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            mode: AtomicU8::new(Mode::Pass as u8),
            refused: AtomicUsize::new(0),
            stalled: AtomicUsize::new(0),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            registry,
            race_per_tag: AtomicUsize::new(0),
            races: Mutex::default(),
            raced: AtomicUsize::new(0),
            race_error: Mutex::default(),
            access: Mutex::default(),
        });
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(RegistryProxy { shared, host, task })
    }

    /// `127.0.0.1:PORT`, to use as the registry host.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn set_mode(&self, mode: Mode) {
        self.shared.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// Requests held in `Stall` mode so far.
    pub fn stalled(&self) -> usize {
        self.shared.stalled.load(Ordering::SeqCst)
    }

    /// Requests answered with 503, 403 or 401 so far.
    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// From now on, another writer races the next `writes_per_tag` client writes of each
    /// read-modify-write tag (`sha256-<hex>.att`, `.sig`, the referrers fallback index
    /// `sha256-<hex>`): it reads the tag before the client's PUT is forwarded and, once that PUT
    /// is stored, writes what it read plus an entry of its own, as a concurrent `cosign attest`
    /// would. 0 stops it; `usize::MAX` races every write.
    pub fn race_tag_writes(&self, writes_per_tag: usize) {
        lock(&self.shared.races).clear();
        self.shared
            .race_per_tag
            .store(writes_per_tag, Ordering::SeqCst);
    }

    /// Writes raced so far; an error if the racing writer failed to write (then the race did
    /// not happen as the test meant).
    pub fn raced(&self) -> Result<usize> {
        if let Some(e) = lock(&self.shared.race_error).clone() {
            anyhow::bail!("the racing writer failed: {e}");
        }
        Ok(self.shared.raced.load(Ordering::SeqCst))
    }
}

impl Drop for RegistryProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `(repository, tag)` of a client's PUT of a read-modify-write tag the racing writer is to race
/// (claimed: counted against the tag's budget).
fn claim_race(shared: &Shared, request: &Request) -> Option<(String, String)> {
    if request.method() != Method::PUT || shared.race_per_tag.load(Ordering::SeqCst) == 0 {
        return None;
    }
    let path = request.uri().path();
    let (repo, tag) = path.strip_prefix("/v2/")?.rsplit_once("/manifests/")?;
    TagKind::of(tag)?;
    let mut races = lock(&shared.races);
    let done = races.entry(path.to_string()).or_default();
    if *done >= shared.race_per_tag.load(Ordering::SeqCst) {
        return None;
    }
    *done += 1;
    Some((repo.to_string(), tag.to_string()))
}

/// The client's write, raced: the other writer reads the tag, the client's PUT is forwarded,
/// then the other writer writes what it read plus its own entry. The client gets the answer to
/// its own PUT; a failure of the other writer is kept for [`RegistryProxy::raced`].
async fn race(shared: &Shared, request: Request, repo: &str, tag: &str) -> Result<Response> {
    let read = shared.registry.get_manifest(repo, tag).await?;
    let response = relay(shared, request).await?;
    if response.status() == StatusCode::CREATED {
        let n = shared.raced.fetch_add(1, Ordering::SeqCst) + 1;
        if let Err(e) = write_after(&shared.registry, repo, tag, read, n).await {
            *lock(&shared.race_error) = Some(format!("racing the write of {repo}:{tag}: {e:#}"));
        }
    }
    Ok(response)
}

async fn forward(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let mode = shared.mode.load(Ordering::SeqCst);
    let write = matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    if mode == Mode::Down as u8 || (mode == Mode::RefuseWrites as u8 && write) {
        shared.refused.fetch_add(1, Ordering::SeqCst);
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [("content-type", "application/json")],
            r#"{"errors":[{"code":"UNAVAILABLE","message":"registry unavailable (injected by the test proxy)"}]}"#,
        )
            .into_response();
    }
    if mode == Mode::DenyAll as u8 || (mode == Mode::DenyWrites as u8 && write) {
        shared.refused.fetch_add(1, Ordering::SeqCst);
        return (
            StatusCode::FORBIDDEN,
            [("content-type", "application/json")],
            r#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied (injected by the test proxy)"}]}"#,
        )
            .into_response();
    }
    if mode == Mode::Unauthorized as u8 {
        shared.refused.fetch_add(1, Ordering::SeqCst);
        return (
            StatusCode::UNAUTHORIZED,
            [
                ("content-type", "application/json"),
                ("www-authenticate", r#"Basic realm="test proxy""#),
            ],
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required (injected by the test proxy)"}]}"#,
        )
            .into_response();
    }
    if mode == Mode::Stall as u8 {
        shared.stalled.fetch_add(1, Ordering::SeqCst);
        while shared.mode.load(Ordering::SeqCst) == Mode::Stall as u8 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    if let Some(denied) = check_access(&shared, &request) {
        return denied;
    }
    let relayed = match claim_race(&shared, &request) {
        Some((repo, tag)) => race(&shared, request, &repo, &tag).await,
        None => relay(&shared, request).await,
    };
    match relayed {
        Ok(response) => response,
        Err(e) => (StatusCode::BAD_GATEWAY, format!("proxy: {e:#}")).into_response(),
    }
}

async fn relay(shared: &Shared, request: Request) -> Result<Response> {
    let (parts, body) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let url = format!("{}{path}", shared.upstream);
    let body: Bytes = axum::body::to_bytes(body, usize::MAX).await?;
    let mut upstream = shared.client.request(parts.method.clone(), &url).body(body);
    for (name, value) in parts.headers.iter() {
        if name != "host" {
            upstream = upstream.header(name, value);
        }
    }
    let response = upstream.send().await?;
    let status = response.status();
    let mut headers = HeaderMap::new();
    for (name, value) in response.headers() {
        let value = if name == "location" {
            // Upload locations point at the upstream; keep clients on the proxy.
            let text = value
                .to_str()
                .unwrap_or_default()
                .replace(&shared.upstream, "");
            HeaderValue::from_str(&text).unwrap_or_else(|_| value.clone())
        } else {
            value.clone()
        };
        headers.insert(name.clone(), value);
    }
    let mut bytes = response.bytes().await?.to_vec();
    if shared.mode.load(Ordering::SeqCst) == Mode::TamperManifests as u8
        && parts.method == Method::GET
        && path.contains("/manifests/")
        && status.is_success()
    {
        bytes.push(b' ');
        headers.remove("content-length");
    }
    let mut out = Response::new(Body::from(bytes));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    Ok(out)
}

// ----- per-repository credentials (issue 14, point 2) -----
//
// distribution 2.8's htpasswd auth is registry-wide; hosted registries (Harbor, GHCR, GitLab)
// grant each account its own repositories. The proxy plays that part in front of the real
// registry: requests under a repository prefix must carry that prefix's Basic credentials.

struct AccessRule {
    /// `/v2/<prefix>/`.
    path_prefix: String,
    /// The exact `Authorization` value accepted.
    authorization: String,
    /// Basic usernames of the requests seen under the prefix (`None`: anonymous).
    seen: Vec<Option<String>>,
}

impl RegistryProxy {
    /// From now on, requests for repositories under `repository_prefix` (e.g. `models/team-a`)
    /// need HTTP Basic `user:password`: 401 with a `Basic` challenge without credentials, 403
    /// `DENIED` with other ones, as a registry whose accounts each own their repositories.
    pub fn require_basic(&self, repository_prefix: &str, user: &str, password: &str) {
        use base64::Engine as _;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        lock(&self.shared.access).push(AccessRule {
            path_prefix: format!("/v2/{}/", repository_prefix.trim_matches('/')),
            authorization: format!("Basic {token}"),
            seen: Vec::new(),
        });
    }

    /// The Basic usernames (`None`: anonymous) of every request seen under `repository_prefix`.
    pub fn users_seen(&self, repository_prefix: &str) -> Vec<Option<String>> {
        let path_prefix = format!("/v2/{}/", repository_prefix.trim_matches('/'));
        lock(&self.shared.access)
            .iter()
            .filter(|r| r.path_prefix == path_prefix)
            .flat_map(|r| r.seen.clone())
            .collect()
    }
}

/// The answer to a request its repository's credentials do not allow, if so.
fn check_access(shared: &Shared, request: &Request) -> Option<Response> {
    use base64::Engine as _;
    let path = request.uri().path();
    let given = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    let user = given
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.split_once(':').map(|(u, _)| u.to_string()));
    let mut rules = lock(&shared.access);
    let rule = rules
        .iter_mut()
        .find(|r| path.starts_with(&r.path_prefix))?;
    rule.seen.push(user);
    match given {
        Some(a) if a == rule.authorization => None,
        None => Some(
            (
                StatusCode::UNAUTHORIZED,
                [
                    ("content-type", "application/json"),
                    ("www-authenticate", "Basic realm=\"test-proxy\""),
                ],
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
            )
                .into_response(),
        ),
        Some(_) => {
            shared.refused.fetch_add(1, Ordering::SeqCst);
            Some(
                (
                    StatusCode::FORBIDDEN,
                    [("content-type", "application/json")],
                    r#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#,
                )
                    .into_response(),
            )
        }
    }
}
