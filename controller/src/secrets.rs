//! The signing key and the registry credentials, read from Secrets in the controller's namespace.
//! Each Secret is watched: loaded once, reloaded when it changes, so rotating a key or a password
//! needs no restart. A missing or unreadable key is a state (reported on the runs as
//! `SigningKeyUnavailable`), never a crash.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tracing::{info, warn};

use crate::signing::Signer;
use crate::signing::keys::load_from_secret_data;
use crate::storage::DockerConfig;

/// The current signing key, or why there is none.
pub struct SigningKey {
    current: RwLock<Result<Arc<dyn Signer>, String>>,
}

impl SigningKey {
    /// No key yet, with the reason.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        SigningKey {
            current: RwLock::new(Err(reason.into())),
        }
    }

    /// A fixed key (tests, `provenant attest`).
    pub fn fixed(signer: Arc<dyn Signer>) -> Self {
        SigningKey {
            current: RwLock::new(Ok(signer)),
        }
    }

    /// The key, or the reason it is unavailable.
    pub fn get(&self) -> Result<Arc<dyn Signer>, String> {
        match self.current.read() {
            Ok(current) => current.clone(),
            Err(_) => Err("signing key state is poisoned".into()),
        }
    }

    fn set(&self, value: Result<Arc<dyn Signer>, String>) {
        if let Ok(mut current) = self.current.write() {
            *current = value;
        }
    }
}

/// The current registry credentials (None = anonymous).
#[derive(Default)]
pub struct RegistryCredentials {
    current: RwLock<Option<DockerConfig>>,
    /// Bumped on every change, so the store is rebuilt only when needed.
    generation: std::sync::atomic::AtomicU64,
}

impl RegistryCredentials {
    pub fn get(&self) -> (u64, Option<DockerConfig>) {
        let generation = self.generation.load(std::sync::atomic::Ordering::SeqCst);
        (generation, self.current.read().ok().and_then(|c| c.clone()))
    }

    fn set(&self, value: Option<DockerConfig>) {
        if let Ok(mut current) = self.current.write() {
            *current = value;
        }
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

fn secret_bytes(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    secret
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

/// Watch the signing-key Secret `namespace/name` and keep `key` current. Runs until dropped.
pub async fn watch_signing_key(
    api: Api<Secret>,
    namespace: String,
    name: String,
    key: Arc<SigningKey>,
) {
    let label = format!("{namespace}/{name}");
    key.set(Err(format!("Secret {label} not loaded yet")));
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut seen_in_init = false;
    // Backoff on errors: a 403 (RBAC, wrong namespace) must not become a tight loop.
    let mut events = watcher(api, config).default_backoff().boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => seen_in_init = false,
            Ok(watcher::Event::InitApply(secret) | watcher::Event::Apply(secret)) => {
                seen_in_init = true;
                match load_from_secret_data(&secret_bytes(&secret)) {
                    Ok(loaded) => {
                        info!(secret = %label, key_id = loaded.key_id(), "signing key loaded");
                        key.set(Ok(Arc::new(loaded)));
                    }
                    Err(e) => {
                        warn!(secret = %label, error = %e, "signing key unusable");
                        key.set(Err(format!("Secret {label}: {e}")));
                    }
                }
            }
            Ok(watcher::Event::InitDone) => {
                if !seen_in_init {
                    warn!(secret = %label, "signing key Secret not found");
                    key.set(Err(format!(
                        "Secret {label} not found: create it with `provenant keys generate --secret {name} --namespace {namespace} | kubectl apply -f -`"
                    )));
                }
            }
            Ok(watcher::Event::Delete(_)) => {
                warn!(secret = %label, "signing key Secret deleted");
                key.set(Err(format!("Secret {label} was deleted")));
            }
            Err(e) => {
                warn!(secret = %label, error = %e, "watching the signing key Secret failed; retrying")
            }
        }
    }
}

/// Watch the registry credentials Secret (`kubernetes.io/dockerconfigjson`). Runs until dropped.
pub async fn watch_registry_credentials(
    api: Api<Secret>,
    namespace: String,
    name: String,
    credentials: Arc<RegistryCredentials>,
) {
    let label = format!("{namespace}/{name}");
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    // Backoff on errors: a 403 (RBAC, wrong namespace) must not become a tight loop.
    let mut events = watcher(api, config).default_backoff().boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::InitApply(secret) | watcher::Event::Apply(secret)) => {
                let data = secret_bytes(&secret);
                match data
                    .get(".dockerconfigjson")
                    .map(|b| DockerConfig::from_json(b))
                {
                    Some(Ok(config)) => {
                        info!(secret = %label, "registry credentials loaded");
                        credentials.set(Some(config));
                    }
                    Some(Err(e)) => {
                        warn!(secret = %label, error = %e, "registry credentials unusable; using anonymous access");
                        credentials.set(None);
                    }
                    None => {
                        warn!(secret = %label, "registry credentials Secret has no .dockerconfigjson; using anonymous access");
                        credentials.set(None);
                    }
                }
            }
            Ok(watcher::Event::Delete(_)) => {
                warn!(secret = %label, "registry credentials Secret deleted; using anonymous access");
                credentials.set(None);
            }
            Ok(_) => {}
            Err(e) => {
                warn!(secret = %label, error = %e, "watching the registry credentials Secret failed; retrying")
            }
        }
    }
}
