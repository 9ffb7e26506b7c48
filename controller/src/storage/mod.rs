//! The storage seam: resolving model artifacts and attaching signed attestations to them in the
//! cosign-compatible and OCI 1.1 layouts (DESIGN.md "Registry layout", docs/registry-layout.md),
//! in an OCI registry or an OCI image layout directory; pushing model directories as artifacts;
//! reading attestations back for `verify`.
//!
//! The controller holds an `Arc<dyn AttestationStore>`; the CLI an `Arc<dyn ArtifactStore>` from
//! [`open_store`]. [`RegistryStore`] and [`LayoutStore`] share the manifest logic (`backend.rs`).

mod backend;
mod cache;
pub mod credentials;
pub mod discover;
pub mod layout;
pub mod model;
pub mod oci;
pub mod reference;
pub mod registry;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

pub use credentials::{Credential, DockerConfig};
pub use discover::{FoundAttestation, Via};
pub use layout::LayoutStore;
pub use model::ModelArtifact;
pub use reference::{Location, Reference, parse_reference};
pub use registry::{Observer, RegistryOptions, RegistryStore, RetryPolicy, op};

use crate::hashing::FileDigest;

/// The artifact an attestation is about: a manifest in a repository.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subject {
    /// `host[:port]/path`, e.g. `registry.example.com/models/mnist`. A [`LayoutStore`] does not
    /// use it (it is bound to its directory); `oci:<dir>` is the conventional value there.
    pub repository: String,
    /// Manifest digest, `sha256:<hex>`.
    pub digest: String,
}

impl Subject {
    pub fn new(repository: impl Into<String>, digest: impl Into<String>) -> Self {
        Subject {
            repository: repository.into(),
            digest: digest.into(),
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.repository, self.digest)
    }
}

/// A cosign "simple signing" signature over the subject manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimpleSignature {
    /// The cosign simple-signing JSON payload, exact bytes (stored as the layer blob).
    pub payload: Vec<u8>,
    /// Base64 of the DER ECDSA signature over `payload`.
    pub signature: String,
}

/// One signed attestation to attach to its subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attestation {
    pub subject: Subject,
    /// In-toto predicate type, e.g. `https://slsa.dev/provenance/v1`.
    pub predicate_type: String,
    /// The DSSE envelope JSON, exact bytes: stored as-is, never re-serialized.
    pub envelope: Vec<u8>,
    /// Signature over the subject manifest, written under the `.sig` tag when present.
    pub signature: Option<SimpleSignature>,
}

/// Where an attestation was written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attached {
    /// `host/repo:sha256-<hex>.att`, `host/repo:sha256-<hex>.sig` (when signed) and
    /// `host/repo@sha256:<referrer manifest digest>`, in that order.
    pub references: Vec<String>,
    /// Digest of the OCI 1.1 referrer manifest (`sha256:<hex>`).
    pub referrer_digest: String,
}

/// A manifest found in (or pushed to) a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedArtifact {
    /// `sha256:<hex>`, verified against the bytes served.
    pub digest: String,
    /// The manifest's media type (from `Content-Type`, else its `mediaType` field).
    pub media_type: String,
    /// Size of the manifest in bytes.
    pub size: u64,
}

/// Resolves artifacts and attaches attestations. Implementations are shared across tasks.
#[async_trait::async_trait]
pub trait AttestationStore: Send + Sync {
    /// Fetches the subject's manifest by digest and checks that its content hashes to it.
    async fn resolve(&self, subject: &Subject) -> Result<ResolvedArtifact, StorageError>;

    /// Attaches the attestation (and signature) to its subject. Idempotent: repeating it, also
    /// after a crash half-way, never duplicates anything.
    async fn attach(&self, attestation: &Attestation) -> Result<Attached, StorageError>;
}

/// What `provenant attest` and `provenant verify` need beyond attaching: push a model, read the
/// attestations back, resolve a tag. Implemented by both stores, used as `Arc<dyn ArtifactStore>`.
#[async_trait::async_trait]
pub trait ArtifactStore: AttestationStore {
    /// Pushes the model directory `dir` (its files hashed as `files`, paths relative to `dir`)
    /// as an OCI artifact ([`ModelArtifact`]), tagged `tag` if given. File contents are
    /// streamed, never read whole into memory. `repository` is `host/path` for a registry and
    /// ignored by a layout.
    async fn push_model(
        &self,
        repository: &str,
        tag: Option<&str>,
        dir: &Path,
        files: &[FileDigest],
    ) -> Result<ResolvedArtifact, StorageError>;

    /// Every DSSE envelope about `subject`: the layers of `sha256-<hex>.att` and the in-toto
    /// referrers (referrers API, else the fallback index), one entry per envelope.
    async fn attestations(&self, subject: &Subject) -> Result<Vec<FoundAttestation>, StorageError>;

    /// The manifest a reference names (see [`parse_reference`]): a tag is resolved to its
    /// digest, a digest is checked against the content.
    async fn resolve_reference(&self, reference: &str) -> Result<ResolvedArtifact, StorageError>;
}

/// The store a reference lives in: a [`LayoutStore`] on its directory, or a [`RegistryStore`]
/// with `options`.
pub fn open_store(reference: &Reference, options: RegistryOptions) -> Arc<dyn ArtifactStore> {
    match &reference.location {
        Location::Layout(dir) => Arc::new(LayoutStore::new(dir.clone())),
        Location::Registry(_) => Arc::new(RegistryStore::new(options)),
    }
}

/// What kind of failure a [`StorageError`] is; drives the caller's retry decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The registry says the manifest (or repository) does not exist.
    NotFound,
    /// The registry served content that does not hash to the digest asked for.
    DigestMismatch,
    /// Worth retrying later: connection failures, timeouts, 5xx, 408, 429 (after the store's own
    /// retries were exhausted).
    Transient,
    /// Retrying will not help: bad input, 4xx, unauthorized, malformed registry data.
    Permanent,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::DigestMismatch => "digest mismatch",
            ErrorKind::Transient => "transient",
            ErrorKind::Permanent => "permanent",
        })
    }
}

/// A storage failure: which step (`op`, one of [`op`] or a local step such as `credentials`),
/// on what (`target`), its kind, and the registry's own message (`CODE: message` from its JSON
/// error body) or the transport error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{op} {target}: {message} ({kind})")]
pub struct StorageError {
    op: &'static str,
    target: String,
    kind: ErrorKind,
    status: Option<u16>,
    message: String,
    /// The registry's `Retry-After` on a 429/503, honoured by the store's own retries.
    retry_after: Option<std::time::Duration>,
    /// A manifest PUT refused because a blob (or manifest) it references is unknown to the
    /// registry (`MANIFEST_BLOB_UNKNOWN`, `BLOB_UNKNOWN`): the store stores it again and retries.
    blob_unknown: bool,
}

impl StorageError {
    pub fn new(
        op: &'static str,
        target: impl Into<String>,
        kind: ErrorKind,
        message: impl Into<String>,
    ) -> Self {
        StorageError {
            op,
            target: target.into(),
            kind,
            status: None,
            message: message.into(),
            retry_after: None,
            blob_unknown: false,
        }
    }

    pub(crate) fn permanent(
        op: &'static str,
        target: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        StorageError::new(op, target, ErrorKind::Permanent, message)
    }

    pub(crate) fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    pub(crate) fn with_message(mut self, message: String) -> Self {
        self.message = message;
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Transient
    }

    /// The registry refused a manifest because something it references does not exist there.
    pub(crate) fn is_blob_unknown(&self) -> bool {
        self.blob_unknown
    }

    /// The step that failed, e.g. `manifest_get`.
    pub fn op(&self) -> &'static str {
        self.op
    }

    /// What it failed on, e.g. `host/repo:sha256-<hex>.att`.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The registry's message (`HTTP 404 MANIFEST_UNKNOWN: manifest unknown`) or the transport
    /// error.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// HTTP status of the failing response, if there was one.
    pub fn status(&self) -> Option<u16> {
        self.status
    }
}
