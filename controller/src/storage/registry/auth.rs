//! Registry auth: anonymous first; on a `401` the `WWW-Authenticate` challenge decides — `Basic`
//! with the docker config's user/password, or `Bearer` with a token from the realm (Basic
//! user/password, an `identitytoken` refresh grant, or anonymously; a `registrytoken` is used
//! as-is). Challenges are remembered per registry, so later requests send the header up front
//! (no 401 round trip), and tokens are cached per (registry, scope) until shortly before they
//! expire.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::header::WWW_AUTHENTICATE;
use reqwest::{Method, StatusCode, Url};

use super::client::{Call, Client, Response};
use super::credentials::{Credential, DockerConfig, normalize_host};
use super::repo::Repo;
use super::sink::BodySink;
use super::status::status_error;
use crate::storage::error::StorageError;
use crate::storage::op;
use crate::storage::transport::Blob;

/// What a store learned about authenticating to each registry.
pub(super) struct Auth {
    credentials: Option<DockerConfig>,
    /// Hosts reached over plain HTTP: a token realm there may be plain HTTP too.
    insecure_registries: Vec<String>,
    state: Mutex<AuthState>,
}

#[derive(Default)]
struct AuthState {
    /// Registry API host → its auth challenge, learned from the first 401.
    challenges: HashMap<String, Challenge>,
    /// (registry API host, scope) → bearer token.
    tokens: HashMap<(String, String), Token>,
}

/// The lifetime a token is cached for at most, whatever the registry says: an `expires_in` is
/// the registry's number (one of `u64::MAX` seconds once made `Instant::now() + lifetime`
/// panic, and the panic stopped the controller). A token renewed hourly costs one request.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// Docker's token spec: 60 s when the response gives none.
const DEFAULT_TOKEN_LIFETIME: u64 = 60;
/// Tokens are renewed this long before they expire.
const TOKEN_RENEW_EARLY: u64 = 5;

/// An authentication challenge of a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
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

#[derive(serde::Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    /// Any JSON number (a negative or fractional one is no reason to fail the request).
    #[serde(default)]
    expires_in: Option<serde_json::Number>,
}

/// A token endpoint's answer: the token, and how long to cache it (at most
/// [`MAX_TOKEN_LIFETIME`], renewed a few seconds early).
pub fn parse_token_response(body: &[u8]) -> Result<(String, Duration), String> {
    let parsed: TokenResponse =
        serde_json::from_slice(body).map_err(|e| format!("token response not JSON: {e}"))?;
    let token = parsed
        .token
        .or(parsed.access_token)
        .filter(|t| !t.is_empty())
        .ok_or("token response without a token")?;
    let seconds = match parsed.expires_in {
        None => DEFAULT_TOKEN_LIFETIME,
        // Negative or fractional: taken as 0 (renewed on next use) or rounded down.
        Some(n) => n
            .as_u64()
            .or_else(|| n.as_f64().map(|f| f.max(0.0) as u64))
            .unwrap_or(0),
    };
    let lifetime =
        Duration::from_secs(seconds.saturating_sub(TOKEN_RENEW_EARLY)).min(MAX_TOKEN_LIFETIME);
    Ok((token, lifetime))
}

impl Auth {
    pub fn new(credentials: Option<DockerConfig>, insecure_registries: Vec<String>) -> Self {
        Auth {
            credentials,
            insecure_registries,
            state: Mutex::default(),
        }
    }

    /// One attempt of a registry request, authenticating when the registry asks (and
    /// proactively once its challenge is known, so later requests cost no extra round trip).
    pub async fn send(
        &self,
        client: &Client,
        repo: &Repo,
        push: bool,
        call: &Call<'_>,
    ) -> Result<Response, StorageError> {
        self.send_with(client, repo, push, call, None).await
    }

    /// As [`Auth::send`], a `200` body streamed into `sink` ([`Client::exchange_with`]).
    pub async fn send_with(
        &self,
        client: &Client,
        repo: &Repo,
        push: bool,
        call: &Call<'_>,
        sink: Option<&BodySink>,
    ) -> Result<Response, StorageError> {
        let scope = repo.scope(push);
        let sent = self.authorization(client, repo, &scope, call).await?;
        let resp = client.exchange_with(call, sent.as_deref(), sink).await?;
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
            let mut state = self.lock();
            state.tokens.remove(&(repo.api_host.clone(), scope.clone()));
            state.challenges.insert(repo.api_host.clone(), challenge);
        }
        let header = self.authorization(client, repo, &scope, call).await?;
        if header.is_none() || header == sent {
            let e = status_error(call.op, call.target, &resp);
            let message = match header {
                None => format!(
                    "{} (no credentials for {} in the docker config)",
                    e.message(),
                    repo.host
                ),
                Some(_) => format!("{} (credentials rejected)", e.message()),
            };
            return Err(e.with_message(message));
        }
        let resp = client.exchange_with(call, header.as_deref(), sink).await?;
        if resp.status == StatusCode::UNAUTHORIZED {
            let e = status_error(call.op, call.target, &resp);
            let message = format!("{} (credentials rejected)", e.message());
            return Err(e.with_message(message));
        }
        Ok(resp)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AuthState> {
        // A panic while holding the lock cannot leave the maps inconsistent; keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn credential(&self, repo: &Repo) -> Option<&Credential> {
        self.credentials.as_ref()?.get(&repo.host)
    }

    /// The `Authorization` header for a request, if the registry's challenge is known.
    async fn authorization(
        &self,
        client: &Client,
        repo: &Repo,
        scope: &str,
        call: &Call<'_>,
    ) -> Result<Option<String>, StorageError> {
        let (challenge, cached) = {
            let state = self.lock();
            let Some(challenge) = state.challenges.get(&repo.api_host).cloned() else {
                return Ok(None);
            };
            let now = Instant::now();
            // A pull,push token also serves pull requests.
            let wider = scope
                .strip_suffix(":pull")
                .map(|s| format!("{s}:pull,push"))
                .unwrap_or_default();
            let cached = [scope, wider.as_str()].iter().find_map(|s| {
                state
                    .tokens
                    .get(&(repo.api_host.clone(), s.to_string()))
                    .filter(|t| t.expires > now)
                    .map(|t| t.value.clone())
            });
            (challenge, cached)
        };
        match challenge {
            Challenge::Basic => Ok(match self.credential(repo) {
                Some(Credential::Basic { username, password }) => {
                    Some(basic_header(username, password))
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
                    .fetch_token(client, repo, &realm, service.as_deref(), scope, call.target)
                    .await?;
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    /// Gets a bearer token for `scope` from the registry's token endpoint and caches it.
    async fn fetch_token(
        &self,
        client: &Client,
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
                basic = Some(basic_header(username, password));
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
        let resp = client
            .exchange(&call, basic.as_deref())
            .await
            .and_then(|resp| match resp.status {
                StatusCode::OK => Ok(resp),
                _ => Err(status_error(op::AUTH, target, &resp)),
            })
            .map_err(|e| {
                let message = format!("token request to {realm}: {}", e.message());
                e.with_message(message)
            })?;
        let (token, lifetime) = parse_token_response(&resp.body).map_err(|why| {
            StorageError::permanent(op::AUTH, target, format!("token request to {realm}: {why}"))
        })?;
        // Checked all the same: the lifetime is capped, but an Instant cannot hold every sum.
        let now = Instant::now();
        self.lock().tokens.insert(
            (repo.api_host.clone(), scope.to_string()),
            Token {
                value: token.clone(),
                expires: now.checked_add(lifetime).unwrap_or(now),
            },
        );
        Ok(token)
    }
}

fn basic_header(username: &str, password: &str) -> String {
    let raw = format!("{username}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// Parses a `WWW-Authenticate` value: `Basic realm="x"` or
/// `Bearer realm="https://auth/token",service="registry",scope="..."`.
pub fn parse_challenge(value: &str) -> Option<Challenge> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn token_lifetimes_are_the_registrys_word_within_bounds() {
        let lifetime = |body: &str| parse_token_response(body.as_bytes()).map(|(_, l)| l);
        // A hostile registry's u64::MAX (once a panic in `Instant::now() + lifetime`).
        assert_eq!(
            lifetime(r#"{"token":"x","expires_in":18446744073709551615}"#),
            Ok(MAX_TOKEN_LIFETIME)
        );
        assert_eq!(
            lifetime(r#"{"token":"x","expires_in":1e300}"#),
            Ok(MAX_TOKEN_LIFETIME)
        );
        assert_eq!(
            lifetime(r#"{"token":"x","expires_in":300}"#),
            Ok(Duration::from_secs(295))
        );
        assert_eq!(
            lifetime(r#"{"access_token":"x"}"#),
            Ok(Duration::from_secs(55))
        );
        assert_eq!(
            lifetime(r#"{"token":"x","expires_in":-7}"#),
            Ok(Duration::ZERO)
        );
        assert_eq!(
            lifetime(r#"{"token":""}"#),
            Err("token response without a token".to_string())
        );
        assert!(lifetime("[").unwrap_err().contains("not JSON"));
    }
}
