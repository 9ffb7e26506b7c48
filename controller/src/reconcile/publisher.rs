//! What publishing a run's provenance needs besides the Kubernetes client: the signing key and
//! registry credentials (watched Secrets), the builder identity, the registry store, and the
//! per-run memory of the publish workers (backoff, refusals of credentials, runs already
//! attached).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::fairness::Backoff;
use crate::config::RegistryConfig;
use crate::provenance::BuilderIdentity;
use crate::secrets::{RegistryCredentials, SigningKey};
use crate::storage::{
    ArtifactStore, AttestationStore, Encoding, Observer, RegistryOptions, RegistryStore,
    RetryPolicy,
};

/// A store and the generation of the credentials it was built with.
type CachedStore = (u64, Arc<RegistryStore>);

/// Present when provenance is enabled.
pub struct Publisher {
    pub key: Arc<SigningKey>,
    pub credentials: Arc<RegistryCredentials>,
    pub builder: BuilderIdentity,
    /// How attestations are written (`provenance.encoding`).
    pub encoding: Encoding,
    registry: RegistryConfig,
    backoff: Backoff,
    observer: Option<Observer>,
    /// Credentials named by `provenance.repositoryPolicy[].credentialsSecret`, by Secret name.
    scoped: HashMap<String, Arc<RegistryCredentials>>,
    /// One store per credentials (`None`: the default ones), with their generation: a run is
    /// never published through a store holding another rule's credentials.
    stores: Mutex<HashMap<Option<String>, CachedStore>>,
    /// Consecutive transient failures per run UID, for the backoff between passes.
    failures: Mutex<HashMap<String, u32>>,
    /// Passes per run UID that met 401/403, against `unauthorizedAttempts`.
    refusals: Mutex<HashMap<String, u32>>,
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
        registry: &RegistryConfig,
        observer: Option<Observer>,
    ) -> Self {
        let seconds = |s: u32| Duration::from_secs(u64::from(s));
        Publisher {
            key,
            credentials,
            builder,
            encoding: Encoding::default(),
            registry: registry.clone(),
            backoff: Backoff {
                initial: seconds(registry.retry_initial_seconds),
                max: seconds(registry.retry_max_seconds),
                unauthorized_attempts: registry.unauthorized_attempts,
            },
            observer,
            scoped: HashMap::new(),
            stores: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            refusals: Mutex::new(HashMap::new()),
            attached: Mutex::new(HashSet::new()),
        }
    }

    /// The credentials watched for each `repositoryPolicy` Secret.
    pub fn with_scoped_credentials(
        mut self,
        scoped: HashMap<String, Arc<RegistryCredentials>>,
    ) -> Self {
        self.scoped = scoped;
        self
    }

    /// Attestations written in `encoding` (`provenance.encoding`; default `dsse`).
    pub fn with_encoding(mut self, encoding: Encoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// The registry store for the default credentials (rebuilt when they change).
    pub fn store(&self) -> Arc<dyn AttestationStore> {
        self.store_for(None)
    }

    /// The registry store for the credentials of Secret `secret` (a `repositoryPolicy` rule's),
    /// or the default ones when `None`. A Secret not watched (not in the configuration) gives
    /// anonymous access, never another Secret's credentials.
    pub fn store_for(&self, secret: Option<&str>) -> Arc<dyn AttestationStore> {
        self.registry_store(secret)
    }

    /// [`Publisher::store_for`], able to read attestations back too (revocations check what a
    /// model already carries before signing).
    pub fn artifact_store_for(&self, secret: Option<&str>) -> Arc<dyn ArtifactStore> {
        self.registry_store(secret)
    }

    fn registry_store(&self, secret: Option<&str>) -> Arc<RegistryStore> {
        let (generation, credentials) = match secret {
            None => self.credentials.get(),
            Some(name) => self.scoped.get(name).map_or((0, None), |c| c.get()),
        };
        let key = secret.map(str::to_string);
        let mut stores = lock(&self.stores);
        if let Some((g, store)) = stores.get(&key)
            && *g == generation
        {
            return store.clone();
        }
        let store = Arc::new(RegistryStore::new(RegistryOptions {
            insecure_registries: self.registry.insecure.clone(),
            credentials,
            retry: RetryPolicy {
                attempts: self.registry.attempts.max(1),
                ..RetryPolicy::default()
            },
            observer: self.observer.clone(),
            // Every attempt is bounded, so a registry that never answers holds a worker for at
            // most `attempts` of these per request.
            connect_timeout: Duration::from_secs(u64::from(self.registry.connect_timeout_seconds)),
            request_timeout: Duration::from_secs(u64::from(self.registry.request_timeout_seconds)),
        }));
        stores.insert(key, (generation, store.clone()));
        store
    }

    /// The wait before the next pass after one more transient failure of run `uid`:
    /// `retryInitialSeconds`, doubled each time up to `retryMaxSeconds`, with jitter.
    pub fn backoff(&self, uid: &str) -> Duration {
        let mut failures = lock(&self.failures);
        let n = failures.entry(uid.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        self.backoff.delay(*n)
    }

    /// One more pass of run `uid` met 401/403: `(refusals so far, the wait before the next
    /// pass)`, the wait `None` once `unauthorizedAttempts` are spent (the run fails).
    pub fn refused(&self, uid: &str) -> (u32, Option<Duration>) {
        let mut refusals = lock(&self.refusals);
        let n = refusals.entry(uid.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        (*n, self.backoff.after_refusal(*n))
    }

    /// Passes that may meet 401/403 before a run fails.
    pub fn unauthorized_attempts(&self) -> u32 {
        self.backoff.unauthorized_attempts
    }

    /// Run `uid` no longer waits on a failure.
    pub fn forget(&self, uid: &str) {
        lock(&self.failures).remove(uid);
        lock(&self.refusals).remove(uid);
    }

    /// This process attached run `uid` (and its status says so).
    pub fn mark_attached(&self, uid: &str) {
        lock(&self.attached).insert(uid.to_string());
    }

    pub fn attached(&self, uid: &str) -> bool {
        lock(&self.attached).contains(uid)
    }
}
