//! What publishing a run's provenance needs besides the Kubernetes client: the signing key and
//! registry credentials (watched Secrets), the builder identity, the registry store, and the
//! per-run memory of the publish workers (backoff, runs already attached).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::provenance::BuilderIdentity;
use crate::secrets::{RegistryCredentials, SigningKey};
use crate::storage::{AttestationStore, Observer, RegistryOptions, RegistryStore, RetryPolicy};

/// Present when provenance is enabled.
pub struct Publisher {
    pub key: Arc<SigningKey>,
    pub credentials: Arc<RegistryCredentials>,
    pub builder: BuilderIdentity,
    insecure: Vec<String>,
    attempts: u32,
    observer: Option<Observer>,
    store: Mutex<Option<(u64, Arc<dyn AttestationStore>)>>,
    /// Consecutive transient failures per run UID, for the backoff between passes.
    failures: Mutex<HashMap<String, u32>>,
    /// Runs this process attached: a pass started from a cache that has not seen the `Attached`
    /// status yet must not attach (and read every tag) again.
    attached: Mutex<HashSet<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means another worker panicked mid-update of plain data.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Publisher {
    pub fn new(
        key: Arc<SigningKey>,
        credentials: Arc<RegistryCredentials>,
        builder: BuilderIdentity,
        insecure: Vec<String>,
        attempts: u32,
        observer: Option<Observer>,
    ) -> Self {
        Publisher {
            key,
            credentials,
            builder,
            insecure,
            attempts,
            observer,
            store: Mutex::new(None),
            failures: Mutex::new(HashMap::new()),
            attached: Mutex::new(HashSet::new()),
        }
    }

    /// The registry store for the current credentials (rebuilt when they change).
    pub fn store(&self) -> Arc<dyn AttestationStore> {
        let (generation, credentials) = self.credentials.get();
        let mut cached = lock(&self.store);
        if let Some((g, store)) = cached.as_ref()
            && *g == generation
        {
            return store.clone();
        }
        let store: Arc<dyn AttestationStore> = Arc::new(RegistryStore::new(RegistryOptions {
            insecure_registries: self.insecure.clone(),
            credentials,
            retry: RetryPolicy {
                attempts: self.attempts.max(1),
                ..RetryPolicy::default()
            },
            observer: self.observer.clone(),
            ..RegistryOptions::default()
        }));
        *cached = Some((generation, store.clone()));
        store
    }

    /// The wait before the next attempt after one more transient failure of run `uid`: 2 s,
    /// 4 s, ... capped at 5 minutes.
    pub fn backoff(&self, uid: &str) -> Duration {
        let mut failures = lock(&self.failures);
        let n = failures.entry(uid.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        Duration::from_secs((1u64 << (*n).min(9)).min(300))
    }

    /// Run `uid` no longer waits on a transient failure.
    pub fn forget(&self, uid: &str) {
        lock(&self.failures).remove(uid);
    }

    /// This process attached run `uid` (and its status says so).
    pub fn mark_attached(&self, uid: &str) {
        lock(&self.attached).insert(uid.to_string());
    }

    pub fn attached(&self, uid: &str) -> bool {
        lock(&self.attached).contains(uid)
    }
}
