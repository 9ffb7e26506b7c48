//! The storage seam: the [`AttestationStore`] and [`ArtifactStore`] traits and the values that
//! cross them. Both stores implement them; nothing here knows how a store works.

use std::fmt;
use std::path::Path;

use super::error::StorageError;
use super::model_files::ModelLayer;
use super::{oci, op};
use crate::hashing::FileDigest;

/// The artifact an attestation is about: a manifest in a repository.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subject {
    /// `host[:port]/path`, e.g. `registry.example.com/models/mnist`. A
    /// [`LayoutStore`](super::LayoutStore) does not use it (it is bound to its directory);
    /// `oci:<dir>` is the conventional value there.
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

    /// The hex part of the digest (`sha256:<64 lowercase hex>` required): the cosign tags and
    /// the fallback index are named after it.
    pub(crate) fn hex(&self) -> Result<&str, StorageError> {
        oci::sha256_hex(&self.digest).ok_or_else(|| {
            StorageError::permanent(
                op::INPUT,
                self.to_string(),
                "digest must be sha256:<64 lowercase hex>",
            )
        })
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

/// One Sigstore bundle to attach to its subject as an OCI 1.1 referrer, the layout cosign v3
/// writes (`cosign attest --new-bundle-format`; docs/registry-layout.md, "Sigstore bundles").
/// Build the bundle with [`crate::signing::SigstoreBundle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleAttestation {
    pub subject: Subject,
    /// Predicate type of the in-toto statement in the bundle's envelope (the referrer's
    /// `dev.sigstore.bundle.predicateType` annotation, a hint for readers).
    pub predicate_type: String,
    /// The bundle JSON, exact bytes: stored as-is (the referrer's one layer).
    pub bundle: Vec<u8>,
    /// The layer's `org.opencontainers.image.title`, the file name `oras pull` saves it as (a
    /// plain file name: no `/`, not `.` or `..`); `None`: `sha256-<hex>.sigstore.json` after
    /// the bundle's digest, as cosign's BUNDLE_SPEC suggests.
    pub title: Option<String>,
}

/// Where an attestation was written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attached {
    /// `host/repo:sha256-<hex>.att`, `host/repo:sha256-<hex>.sig` (when signed) and
    /// `host/repo@sha256:<referrer manifest digest>`, in that order; for a bundle, the referrer
    /// alone.
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

/// How an attestation was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Via {
    /// A DSSE layer of the cosign tag `sha256-<hex>.att`.
    Att,
    /// An OCI 1.1 referrer with `artifactType` `application/vnd.in-toto+json`, listed by the
    /// referrers API or, without one, the fallback index `sha256-<hex>`.
    Referrer,
    /// A Sigstore bundle: an OCI 1.1 referrer with `artifactType`
    /// `application/vnd.dev.sigstore.bundle.v0.3+json` (referrers API or fallback index), the
    /// envelope read out of the bundle.
    Bundle,
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Via::Att => "cosign .att",
            Via::Referrer => "OCI referrer",
            Via::Bundle => "Sigstore bundle",
        })
    }
}

/// One DSSE envelope found about a subject. The same envelope reached both ways (provenant
/// writes both) is one entry with both [`Via`]s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundAttestation {
    /// The envelope's exact bytes (checked against the digest they were stored under); for a
    /// Sigstore bundle, the envelope read out of the bundle (whose bytes were checked), as DSSE
    /// JSON — or, when the bundle cannot be read, the bundle's own bytes (then
    /// `unreadable_bundle` says why, and they fail as "not a DSSE envelope").
    pub envelope: Vec<u8>,
    /// `sha256:` of `envelope`.
    pub digest: String,
    /// From the layer's annotation (`predicateType`, `in-toto.io/predicate-type`), if any. Only
    /// a hint: the signed statement inside the envelope is what counts.
    pub predicate_type: Option<String>,
    /// Every way it was found, in the order found (`.att` first).
    pub via: Vec<Via>,
    /// Where it was found first: `REPO:sha256-<hex>.att`, or `REPO@<referrer digest>`.
    pub reference: String,
    /// Why a Sigstore bundle listed for the subject could not be read (not JSON, another
    /// version, no DSSE envelope, ...).
    pub unreadable_bundle: Option<String>,
}

impl FoundAttestation {
    /// Where it was found, for people: the reference, saying when it is a Sigstore bundle (and
    /// why it could not be read).
    pub fn found_at(&self) -> String {
        match (&self.unreadable_bundle, self.via.first()) {
            (Some(why), _) => format!("Sigstore bundle {}, unreadable: {why}", self.reference),
            (None, Some(Via::Bundle)) => format!("Sigstore bundle {}", self.reference),
            _ => self.reference.clone(),
        }
    }
}

/// A model's OpenSSF model signature found about it (`model_signature.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundModelSignature {
    /// `REPO@<referrer digest>`.
    pub reference: String,
    /// The Sigstore bundle's bytes (checked against the layer digest).
    pub bundle: Vec<u8>,
}

/// Resolves artifacts and attaches attestations. Implementations are shared across tasks.
#[async_trait::async_trait]
pub trait AttestationStore: Send + Sync {
    /// Fetches the subject's manifest by digest and checks that its content hashes to it.
    async fn resolve(&self, subject: &Subject) -> Result<ResolvedArtifact, StorageError>;

    /// Attaches the attestation (and signature) to its subject. Idempotent: repeating it, also
    /// after a crash half-way, never duplicates anything.
    async fn attach(&self, attestation: &Attestation) -> Result<Attached, StorageError>;

    /// Attaches a Sigstore bundle to its subject as an OCI 1.1 referrer (plus, without a
    /// referrers API, an entry in the fallback index `sha256-<hex>`). Idempotent: the same
    /// bundle, predicate type and title give the same referrer manifest, listed once.
    async fn attach_bundle(&self, bundle: &BundleAttestation) -> Result<Attached, StorageError>;

    /// The files of the model `subject` names, as its manifest lists them (fetched and checked
    /// against the digest): what its model signature is made from. `None` when the manifest is
    /// not a provenant model ([`model_layers`](super::model_layers)).
    async fn model_files(&self, subject: &Subject)
    -> Result<Option<Vec<ModelLayer>>, StorageError>;

    /// Attaches a model's OpenSSF model signature (its Sigstore bundle, `model.sig`) as an OCI
    /// 1.1 referrer of the model ([`model_signature`](super::model_signature)). Idempotent.
    async fn attach_model_signature(
        &self,
        subject: &Subject,
        bundle: &[u8],
    ) -> Result<Attached, StorageError>;
}

/// What `provenant attest` and `provenant verify` need beyond attaching: push a model, read the
/// attestations back, resolve a tag. Implemented by both stores, used as `Arc<dyn ArtifactStore>`.
#[async_trait::async_trait]
pub trait ArtifactStore: AttestationStore {
    /// Pushes the model directory `dir` (its files hashed as `files`, paths relative to `dir`)
    /// as an OCI artifact ([`ModelArtifact`](super::ModelArtifact)), tagged `tag` if given. File
    /// contents are streamed, never read whole into memory. `repository` is `host/path` for a
    /// registry and ignored by a layout.
    async fn push_model(
        &self,
        repository: &str,
        tag: Option<&str>,
        dir: &Path,
        files: &[FileDigest],
    ) -> Result<ResolvedArtifact, StorageError>;

    /// Every DSSE envelope about `subject`: the layers of `sha256-<hex>.att`, the in-toto
    /// referrers and the Sigstore bundle referrers (referrers API, else the fallback index), one
    /// entry per envelope.
    async fn attestations(&self, subject: &Subject) -> Result<Vec<FoundAttestation>, StorageError>;

    /// Every model signature attached to `subject` (the model signature referrers, by the
    /// referrers API or the fallback index), each bundle checked against its digest.
    async fn model_signatures(
        &self,
        subject: &Subject,
    ) -> Result<Vec<FoundModelSignature>, StorageError>;

    /// The manifest a reference names (see [`parse_reference`](super::parse_reference)): a tag
    /// is resolved to its digest, a digest is checked against the content.
    async fn resolve_reference(&self, reference: &str) -> Result<ResolvedArtifact, StorageError>;

    /// The manifest of `subject`, read by its digest and checked against it
    /// (`provenant verify`: the model's annotations, the files to `--pull`).
    async fn manifest(&self, subject: &Subject) -> Result<super::ManifestBytes, StorageError>;

    /// Streams blob `digest` of `subject`'s repository into `file` (new and empty), at most
    /// `limit` bytes; returns the `sha256:` digest and size of what was written, for the caller
    /// to check against the descriptor ([`pull`](super::pull)).
    async fn copy_blob(
        &self,
        subject: &Subject,
        digest: &str,
        limit: u64,
        file: std::fs::File,
    ) -> Result<(String, u64), StorageError>;
}
