//! [`RegistryStore`]: the [`AttestationStore`] over the OCI distribution HTTP API.
//!
//! Written directly on one shared `reqwest::Client` (`client.rs`), not on an OCI client library,
//! so that every manifest is sent byte for byte as serialized here and every request is
//! accounted for: the request sequence is documented in docs/registry-layout.md and asserted by
//! `controller/tests/registry_store.rs`. This file holds what the store remembers between
//! operations (resolved subjects, constant blobs known to exist, the referrers API per
//! registry, per-tag locks) and the [`Transport`] the attach protocol runs over.

mod api;
mod auth;
mod cache;
mod client;
pub mod credentials;
mod listing;
mod repo;
mod sink;
mod status;

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use auth::{Challenge, MAX_TOKEN_LIFETIME, parse_challenge, parse_token_response};
pub use client::{Observer, RetryPolicy};
pub use credentials::{Credential, DockerConfig};
pub use status::error_summary;

use self::api::Api;
use self::auth::Auth;
use self::cache::Lru;
use self::client::Client;
use self::repo::Repo;
use self::sink::BodySink;
use crate::hashing::FileDigest;
use crate::storage::error::{ErrorKind, StorageError};
use crate::storage::model::ModelArtifact;
use crate::storage::model_files::{self, ModelLayer};
use crate::storage::model_signature;
use crate::storage::reference::{Location, parse_reference};
use crate::storage::store::{
    ArtifactStore, Attached, Attestation, AttestationStore, BundleAttestation, FoundAttestation,
    FoundModelSignature, ResolvedArtifact, Subject,
};
use crate::storage::transport::{Blob, Fetched, Transport, check_digest, manifest_media_type};
use crate::storage::{ManifestBytes, attach, attach_bundle, discover, op, pull};

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
/// How long `cosign attest` / `cosign sign` take from reading a tag to writing it back on a fast
/// registry (docs/registry-layout.md, "Updating tags"); on slower ones the pause grows with our
/// own read-to-write time (`attach::settle`).
const COSIGN_WRITE_WINDOW: Duration = Duration::from_millis(250);
/// Tag locks are pruned (unused ones dropped) when the map grows past this.
const TAG_LOCKS_PRUNE_AT: usize = 256;

/// (repository, digest) → the once-initialized check that a constant blob exists there.
type KnownBlobs = Lru<(String, String), Arc<tokio::sync::OnceCell<()>>>;

/// The [`AttestationStore`] on an OCI registry. Create one per process and share it
/// (`Arc<dyn AttestationStore>`): it holds the connection pool, the token cache, the per-tag
/// locks that serialize read-modify-writes, and what it learned about each registry.
pub struct RegistryStore {
    api: Api,
    options: RegistryOptions,
    /// Registry API host → whether it serves the OCI 1.1 referrers API.
    referrers_api: Mutex<HashMap<String, bool>>,
    resolved: Mutex<Lru<(String, String), ResolvedArtifact>>,
    /// (repository, digest) → constant blobs (cosign config, `{}`) checked to exist.
    known_blobs: Mutex<KnownBlobs>,
    tag_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl fmt::Debug for RegistryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryStore")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// A lock whose holder panicked guards nothing left half-updated here; keep going.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RegistryStore {
    pub fn new(options: RegistryOptions) -> Self {
        let client = Client::new(
            options.connect_timeout,
            options.request_timeout,
            options.retry.clone(),
            options.observer.clone(),
        );
        let auth = Auth::new(
            options.credentials.clone(),
            options.insecure_registries.clone(),
        );
        RegistryStore {
            api: Api { client, auth },
            options,
            referrers_api: Mutex::default(),
            resolved: Mutex::new(Lru::new(RESOLVED_CACHE_ENTRIES)),
            known_blobs: Mutex::new(Lru::new(KNOWN_BLOBS_ENTRIES)),
            tag_locks: Mutex::default(),
        }
    }

    pub fn options(&self) -> &RegistryOptions {
        &self.options
    }

    /// The transport for one repository; `push` asks for push scope when authenticating.
    fn transport(
        &self,
        repository: &str,
        push: bool,
    ) -> Result<RegistryTransport<'_>, StorageError> {
        Ok(RegistryTransport {
            store: self,
            repo: Repo::parse(repository, &self.options.insecure_registries)?,
            push,
        })
    }

    /// The manifest `digest`, from the cache or fetched and checked.
    async fn resolve_in(
        &self,
        repo: &Repo,
        digest: &str,
        push: bool,
    ) -> Result<ResolvedArtifact, StorageError> {
        let key = (repo.key(), digest.to_string());
        let hit = lock(&self.resolved).get(&key);
        if let Some(hit) = hit {
            return Ok(hit);
        }
        let target = repo.digest_ref(digest);
        let Some(resp) = self.api.get_manifest(repo, push, digest, false).await? else {
            return Err(StorageError::new(
                op::MANIFEST_GET,
                &target,
                ErrorKind::NotFound,
                "manifest unknown",
            ));
        };
        check_digest(op::MANIFEST_GET, &target, digest, &resp.body)?;
        let resolved = ResolvedArtifact {
            digest: digest.to_string(),
            media_type: manifest_media_type(resp.media_type(), &resp.body, &target)?,
            size: resp.body.len() as u64,
        };
        lock(&self.resolved).insert(key, resolved.clone());
        Ok(resolved)
    }

    fn set_referrers_api(&self, repo: &Repo, supported: bool) {
        lock(&self.referrers_api).insert(repo.api_host.clone(), supported);
    }

    fn known_referrers_api(&self, repo: &Repo) -> Option<bool> {
        lock(&self.referrers_api).get(&repo.api_host).copied()
    }

    /// The referrers list when the registry serves the API, `None` when it does not
    /// (remembered per registry: no request once known absent).
    async fn referrers(
        &self,
        repo: &Repo,
        push: bool,
        subject: &str,
    ) -> Result<Option<oci_spec::image::ImageIndex>, StorageError> {
        if self.known_referrers_api(repo) == Some(false) {
            return Ok(None);
        }
        let index = self.api.referrers(repo, push, subject).await?;
        tracing::debug!(registry = %repo.api_host, supported = index.is_some(), "referrers API asked");
        self.set_referrers_api(repo, index.is_some());
        Ok(index)
    }
}

/// One repository of a [`RegistryStore`] as the attach protocol sees it: each call is one
/// request (plus retries and auth), so the request counts in docs/registry-layout.md hold.
struct RegistryTransport<'a> {
    store: &'a RegistryStore,
    repo: Repo,
    push: bool,
}

#[async_trait::async_trait]
impl Transport for RegistryTransport<'_> {
    fn tag_ref(&self, tag: &str) -> String {
        self.repo.tag_ref(tag)
    }

    fn digest_ref(&self, digest: &str) -> String {
        self.repo.digest_ref(digest)
    }

    async fn get_manifest(&self, reference: &str) -> Result<Option<Fetched>, StorageError> {
        let resp = self
            .store
            .api
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
            .api
            .put_manifest(&self.repo, reference, media_type, bytes)
            .await?;
        Ok(resp.header("oci-subject").map(str::to_string))
    }

    async fn blob_exists(&self, digest: &str) -> Result<bool, StorageError> {
        let head = self
            .store
            .api
            .blob_request(&self.repo, true, op::BLOB_HEAD, digest)
            .await?;
        Ok(head.is_some())
    }

    async fn put_blob(&self, digest: &str, blob: Blob<'_>) -> Result<(), StorageError> {
        self.store.api.upload_blob(&self.repo, digest, blob).await
    }

    async fn get_blob(&self, digest: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let resp = self
            .store
            .api
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

    async fn referrers(
        &self,
        subject: &str,
    ) -> Result<Option<oci_spec::image::ImageIndex>, StorageError> {
        self.store.referrers(&self.repo, self.push, subject).await
    }

    fn learned_referrers_api(&self) {
        self.store.set_referrers_api(&self.repo, true);
    }

    fn tag_lock(&self, tag: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = lock(&self.store.tag_locks);
        if locks.len() > TAG_LOCKS_PRUNE_AT {
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        locks
            .entry(format!("{}:{tag}", self.repo.key()))
            .or_default()
            .clone()
    }

    fn known_blob(&self, digest: &str) -> Arc<tokio::sync::OnceCell<()>> {
        lock(&self.store.known_blobs)
            .get_or_insert_with((self.repo.key(), digest.to_string()), Arc::default)
    }

    fn concurrent_write_window(&self) -> Duration {
        COSIGN_WRITE_WINDOW
    }

    fn forget_known_blobs(&self) {
        let repo = self.repo.key();
        // A check still in flight (another attach recovering at the same moment) is kept and
        // joined rather than duplicated: concurrent uploads of one blob race in distribution.
        lock(&self.store.known_blobs).retain(|(r, _), cell| *r != repo || !cell.initialized());
    }

    async fn resolve(&self, digest: &str) -> Result<ResolvedArtifact, StorageError> {
        self.store.resolve_in(&self.repo, digest, self.push).await
    }
}

#[async_trait::async_trait]
impl AttestationStore for RegistryStore {
    async fn resolve(&self, subject: &Subject) -> Result<ResolvedArtifact, StorageError> {
        let t = self.transport(&subject.repository, false)?;
        subject.hex()?;
        self.resolve_in(&t.repo, &subject.digest, false).await
    }

    async fn attach(&self, attestation: &Attestation) -> Result<Attached, StorageError> {
        let t = self.transport(&attestation.subject.repository, true)?;
        attach::attach(&t, attestation).await
    }

    async fn attach_bundle(&self, bundle: &BundleAttestation) -> Result<Attached, StorageError> {
        let t = self.transport(&bundle.subject.repository, true)?;
        attach_bundle::attach_bundle(&t, bundle).await
    }

    async fn model_files(
        &self,
        subject: &Subject,
    ) -> Result<Option<Vec<ModelLayer>>, StorageError> {
        let t = self.transport(&subject.repository, false)?;
        subject.hex()?;
        model_files::stored_layers(&t, &subject.digest).await
    }

    async fn attach_model_signature(
        &self,
        subject: &Subject,
        bundle: &[u8],
    ) -> Result<Attached, StorageError> {
        let t = self.transport(&subject.repository, true)?;
        model_signature::attach(&t, subject, bundle).await
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
        let t = self.transport(repository, true)?;
        ModelArtifact::new(dir, files)?.push(&t, tag).await
    }

    async fn attestations(&self, subject: &Subject) -> Result<Vec<FoundAttestation>, StorageError> {
        let t = self.transport(&subject.repository, false)?;
        discover::attestations(&t, subject).await
    }

    async fn model_signatures(
        &self,
        subject: &Subject,
    ) -> Result<Vec<FoundModelSignature>, StorageError> {
        let t = self.transport(&subject.repository, false)?;
        model_signature::found(&t, subject).await
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
        let t = self.transport(repository, false)?;
        let tag_or_digest = parsed.tag_or_digest().ok_or_else(|| {
            StorageError::permanent(op::INPUT, reference, "no tag or digest in the reference")
        })?;
        discover::resolve_reference(&t, tag_or_digest).await
    }

    async fn manifest(&self, subject: &Subject) -> Result<ManifestBytes, StorageError> {
        let t = self.transport(&subject.repository, false)?;
        subject.hex()?;
        pull::manifest(&t, &subject.digest).await
    }

    async fn copy_blob(
        &self,
        subject: &Subject,
        digest: &str,
        limit: u64,
        file: std::fs::File,
    ) -> Result<(String, u64), StorageError> {
        let t = self.transport(&subject.repository, false)?;
        let target = t.repo.digest_ref(digest);
        let sink = BodySink::new(file, limit);
        if !self.api.download_blob(&t.repo, digest, &sink).await? {
            return Err(StorageError::new(
                op::BLOB_GET,
                &target,
                ErrorKind::NotFound,
                "blob unknown",
            ));
        }
        sink.finish()
            .map_err(|e| StorageError::permanent(op::BLOB_GET, &target, e.to_string()))
    }
}
