//! Registry credentials from a `kubernetes.io/dockerconfigjson` Secret (`.dockerconfigjson`),
//! also accepting the legacy `.dockercfg` shape (the `auths` map at top level).

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use serde::Deserialize;

use crate::storage::error::{ErrorKind, StorageError};

/// How to authenticate to one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// Username and password: HTTP Basic, or the token endpoint's Basic auth.
    Basic { username: String, password: String },
    /// An OAuth2 refresh token (`identitytoken`) exchanged at the token endpoint.
    IdentityToken(String),
    /// A bearer token used as-is (`registrytoken`).
    RegistryToken(String),
}

// Secrets never reach logs or error messages.
impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Credential::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
            Credential::RegistryToken(_) => f.write_str("RegistryToken(<redacted>)"),
        }
    }
}

/// Parsed docker config: credentials per registry host (`host[:port]`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct DockerConfig {
    auths: BTreeMap<String, Credential>,
}

impl fmt::Debug for DockerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.auths.iter()).finish()
    }
}

#[derive(Deserialize, Default)]
struct Entry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
}

const DOCKER_HUB: &str = "docker.io";

/// The registry host a docker config key or repository host names: scheme and path dropped,
/// lowercased, Docker Hub's aliases folded into `docker.io`.
pub fn normalize_host(key: &str) -> String {
    let key = key.trim();
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = key
        .split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB.to_string()
        }
        _ => host,
    }
}

fn invalid(message: impl Into<String>) -> StorageError {
    StorageError::new(
        "credentials",
        ".dockerconfigjson",
        ErrorKind::Permanent,
        message,
    )
}

impl DockerConfig {
    /// Parses `.dockerconfigjson` (`{"auths": {"host": {...}}}`). Each entry is `auth`
    /// (base64 `user:pass`), `username` + `password`, `identitytoken` or `registrytoken`.
    pub fn from_json(bytes: &[u8]) -> Result<Self, StorageError> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| invalid(format!("not JSON: {e}")))?;
        let auths = match value.get("auths") {
            Some(auths) => auths.clone(),
            None => value,
        };
        let entries: BTreeMap<String, Entry> = serde_json::from_value(auths)
            .map_err(|e| invalid(format!("`auths` is not a map of registry entries: {e}")))?;
        let mut config = DockerConfig::default();
        for (key, entry) in entries {
            let host = normalize_host(&key);
            if host.is_empty() {
                continue;
            }
            if let Some(credential) = Self::credential(&key, entry)? {
                config.auths.insert(host, credential);
            }
        }
        Ok(config)
    }

    fn credential(key: &str, e: Entry) -> Result<Option<Credential>, StorageError> {
        if let Some(token) = e.registrytoken.filter(|t| !t.is_empty()) {
            return Ok(Some(Credential::RegistryToken(token)));
        }
        if let Some(token) = e.identitytoken.filter(|t| !t.is_empty()) {
            return Ok(Some(Credential::IdentityToken(token)));
        }
        if let Some(auth) = e.auth.filter(|a| !a.is_empty()) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| invalid(format!("auths.{key}.auth is not base64")))?;
            let decoded = String::from_utf8(decoded)
                .map_err(|_| invalid(format!("auths.{key}.auth is not UTF-8")))?;
            let Some((username, password)) = decoded.split_once(':') else {
                return Err(invalid(format!(
                    "auths.{key}.auth is not base64 of `user:password`"
                )));
            };
            return Ok(Some(Credential::Basic {
                username: username.to_string(),
                password: password.to_string(),
            }));
        }
        match (e.username, e.password) {
            (Some(username), Some(password)) if !username.is_empty() => {
                Ok(Some(Credential::Basic { username, password }))
            }
            _ => Ok(None),
        }
    }

    /// Credentials for a registry host (`host[:port]`), if any.
    pub fn get(&self, host: &str) -> Option<&Credential> {
        self.auths.get(&normalize_host(host))
    }

    /// Registry hosts with credentials.
    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        self.auths.keys().map(String::as_str)
    }

    /// Adds or replaces the credentials for `host`.
    pub fn insert(&mut self, host: &str, credential: Credential) {
        self.auths.insert(normalize_host(host), credential);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_entry_shape() {
        let json = br#"{"auths":{
            "https://index.docker.io/v1/":{"auth":"dXNlcjpwYTpzcw=="},
            "ghcr.io":{"username":"u","password":"p"},
            "myacr.azurecr.io":{"identitytoken":"refresh"},
            "http://127.0.0.1:5000/v2/":{"registrytoken":"bearer"},
            "empty.example":{}
        }}"#;
        let c = DockerConfig::from_json(json).unwrap();
        assert_eq!(
            c.get("registry-1.docker.io"),
            Some(&Credential::Basic {
                username: "user".into(),
                password: "pa:ss".into()
            })
        );
        assert_eq!(c.get("docker.io"), c.get("index.docker.io"));
        assert_eq!(
            c.get("GHCR.io"),
            Some(&Credential::Basic {
                username: "u".into(),
                password: "p".into()
            })
        );
        assert_eq!(
            c.get("myacr.azurecr.io"),
            Some(&Credential::IdentityToken("refresh".into()))
        );
        assert_eq!(
            c.get("127.0.0.1:5000"),
            Some(&Credential::RegistryToken("bearer".into()))
        );
        assert_eq!(c.get("empty.example"), None);
        assert_eq!(c.get("127.0.0.1:5001"), None);
    }

    #[test]
    fn legacy_dockercfg_and_errors() {
        let c = DockerConfig::from_json(br#"{"r.example":{"auth":"YTpi"}}"#).unwrap();
        assert!(c.get("r.example").is_some());
        let e = DockerConfig::from_json(b"nope").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Permanent);
        let e = DockerConfig::from_json(br#"{"auths":{"r":{"auth":"!!"}}}"#).unwrap_err();
        assert!(e.message().contains("not base64"), "{e}");
        let e = DockerConfig::from_json(br#"{"auths":{"r":{"auth":"bm9jb2xvbg=="}}}"#).unwrap_err();
        assert!(e.message().contains("user:password"), "{e}");
    }

    #[test]
    fn debug_redacts_secrets() {
        let c = DockerConfig::from_json(
            br#"{"auths":{"a":{"username":"u","password":"hunter2"},"b":{"identitytoken":"tok"}}}"#,
        )
        .unwrap();
        let s = format!("{c:?}");
        assert!(!s.contains("hunter2") && !s.contains("tok\""), "{s}");
    }
}
