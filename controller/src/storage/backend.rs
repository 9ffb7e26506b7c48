//! The manifest logic both stores share, written once over a small [`Backend`] trait: a place that
//! can get and put manifests (by tag or digest), check, put and get blobs, and maybe list
//! referrers. The registry store implements it with HTTP requests (one request per call, so the
//! documented request counts hold), the layout store with files.
//!
//! Here: the read-modify-write of a tag (append a layer, add an index entry), the attach
//! sequence (`.att`, `.sig`, referrer + fallback index, concurrently), which blobs are checked
//! and which are simply uploaded, model pushes, and the read side (`attestations`, resolving a
//! tag or digest).

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt as _, Shared};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::discover::{FoundAttestation, Via};
use super::model::ModelArtifact;
use super::oci::{
    self, DOCKER_MANIFEST_MEDIA_TYPE, DSSE_MEDIA_TYPE, Descriptor, EMPTY_BLOB,
    IN_TOTO_ARTIFACT_TYPE, IN_TOTO_PREDICATE_TYPE_ANNOTATION, ImageConfig, ImageIndex,
    ImageManifest, OCI_CONFIG_MEDIA_TYPE, OCI_INDEX_MEDIA_TYPE, OCI_MANIFEST_MEDIA_TYPE,
    PREDICATE_TYPE_ANNOTATION, sha256_digest,
};
use super::reference::is_valid_tag;
use super::registry::op;
use super::{Attached, Attestation, ErrorKind, ResolvedArtifact, StorageError, Subject};

/// Manifests, indexes and envelopes are small; anything bigger is not what we asked for.
pub(crate) const MAX_DOCUMENT_BYTES: usize = 8 << 20;
/// Rounds of read-modify-write on one tag before giving up (only concurrent writers in other
/// processes make a round fail; only backends that verify their tag writes retry).
const MAX_TAG_ROUNDS: u32 = 8;
/// Attempts of a manifest PUT the store refuses for an unknown blob, each after storing the
/// blobs again.
const BLOB_UNKNOWN_ATTEMPTS: u32 = 3;

/// A manifest as a backend returns it.
pub(crate) struct Fetched {
    pub bytes: Vec<u8>,
    /// The media type the store gives it (`Content-Type`, the layout's index entry), if any.
    pub media_type: Option<String>,
}

/// Content of a blob to store.
#[derive(Clone, Copy)]
pub(crate) enum Blob<'a> {
    Bytes(&'a [u8]),
    /// A file streamed from disk (model files: never read whole into memory).
    File {
        path: &'a Path,
        size: u64,
    },
}

/// One place holding OCI content: a repository in a registry, or a layout directory.
#[async_trait::async_trait]
pub(crate) trait Backend: Send + Sync {
    /// How a tag is named in references and errors (`host/repo:tag`, `oci:dir:tag`).
    fn tag_ref(&self, tag: &str) -> String;
    /// How a digest is named in references and errors (`host/repo@sha256:..`).
    fn digest_ref(&self, digest: &str) -> String;
    /// A manifest by tag or digest; `None` when absent.
    async fn get_manifest(&self, reference: &str) -> Result<Option<Fetched>, StorageError>;
    /// Stores a manifest under a tag or its digest; returns the subject digest the store says
    /// it indexed for the referrers API (`OCI-Subject`), if any.
    async fn put_manifest(
        &self,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Option<String>, StorageError>;
    async fn blob_exists(&self, digest: &str) -> Result<bool, StorageError>;
    /// Stores a blob; the store checks the content against `digest`. Storing content the store
    /// already has is accepted (blobs new by construction are not checked first).
    async fn put_blob(&self, digest: &str, blob: Blob<'_>) -> Result<(), StorageError>;
    /// The once-initialized record that constant blob `digest` (cosign config, `{}`) exists in
    /// this repository, shared by the store's operations so it is checked once, not per attach.
    /// A backend that remembers nothing returns a new cell.
    fn known_blob(&self, digest: &str) -> Arc<tokio::sync::OnceCell<()>>;
    /// Forgets the repository's known blobs (the store refused a manifest for an unknown blob:
    /// wiped or garbage-collected since).
    fn forget_known_blobs(&self);
    /// Whether a tag update is re-read after its write and written again if a concurrent writer
    /// dropped our entry (see `update_tag`).
    fn verifies_tag_writes(&self) -> bool;
    /// A small blob (at most [`MAX_DOCUMENT_BYTES`]); `None` when absent.
    async fn get_blob(&self, digest: &str) -> Result<Option<Vec<u8>>, StorageError>;
    /// Whether the store serves the OCI 1.1 referrers API (probed once, then known).
    async fn has_referrers_api(&self, subject: &str) -> Result<bool, StorageError>;
    /// The referrers API's list for `subject`, `None` when the store has no referrers API.
    async fn referrers(&self, subject: &str) -> Result<Option<ImageIndex>, StorageError>;
    /// The store indexed a referrer's subject on push: it has the referrers API.
    fn learned_referrers_api(&self);
    /// The lock serializing this process's read-modify-writes of `tag`.
    fn tag_lock(&self, tag: &str) -> Arc<tokio::sync::Mutex<()>>;
    /// The manifest `digest`, checked to hash to it.
    async fn resolve(&self, digest: &str) -> Result<ResolvedArtifact, StorageError>;
}

/// Media types that say nothing about a manifest (some registries and proxies serve these).
pub(crate) fn is_generic_media_type(mt: &str) -> bool {
    matches!(
        mt,
        "application/json" | "text/plain" | "application/octet-stream"
    )
}

/// The media type of manifest `bytes`: the store's, unless generic, else the `mediaType` field,
/// else by shape (an index has `manifests`).
pub(crate) fn manifest_media_type(
    served: Option<String>,
    bytes: &[u8],
    target: &str,
) -> Result<String, StorageError> {
    if let Some(mt) = served.filter(|mt| !is_generic_media_type(mt)) {
        return Ok(mt);
    }
    let v: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| StorageError::permanent(op::MANIFEST_GET, target, format!("not JSON: {e}")))?;
    Ok(match v.get("mediaType").and_then(|m| m.as_str()) {
        Some(mt) => mt.to_string(),
        None if v.get("manifests").is_some() => OCI_INDEX_MEDIA_TYPE.to_string(),
        None => OCI_MANIFEST_MEDIA_TYPE.to_string(),
    })
}

/// The hex of a subject's digest, after checking what an attach needs.
pub(crate) fn validate_attestation(attestation: &Attestation) -> Result<String, StorageError> {
    let subject = &attestation.subject;
    let hex = subject_hex(subject)?;
    if attestation.envelope.is_empty() || attestation.predicate_type.is_empty() {
        return Err(StorageError::permanent(
            op::INPUT,
            subject.to_string(),
            "empty DSSE envelope or predicate type",
        ));
    }
    if let Some(s) = &attestation.signature
        && (s.payload.is_empty() || s.signature.is_empty())
    {
        return Err(StorageError::permanent(
            op::INPUT,
            subject.to_string(),
            "empty signature payload or signature",
        ));
    }
    Ok(hex)
}

/// The hex part of a subject's digest (`sha256:<64 lowercase hex>` required).
pub(crate) fn subject_hex(subject: &Subject) -> Result<String, StorageError> {
    oci::sha256_hex(&subject.digest)
        .map(str::to_string)
        .ok_or_else(|| {
            StorageError::permanent(
                op::INPUT,
                subject.to_string(),
                "digest must be sha256:<64 lowercase hex>",
            )
        })
}

// ----- tags (read-modify-write) --------------------------------------------------------------

/// A manifest read from a tag, with the media type to write it back with.
struct TagContent<T> {
    doc: T,
    media_type: String,
}

/// A document kept under a tag and updated by read-modify-write.
trait TagDocument: Serialize + DeserializeOwned + Send + Sync {
    /// Media types it may be stored as; the first is used when creating the tag.
    const MEDIA_TYPES: &'static [&'static str];
    fn media_type_field(&self) -> Option<&str>;
    /// Whether the document references blob or manifest `digest`.
    fn references(&self, digest: &str) -> bool;
}

impl TagDocument for ImageManifest {
    const MEDIA_TYPES: &'static [&'static str] =
        &[OCI_MANIFEST_MEDIA_TYPE, DOCKER_MANIFEST_MEDIA_TYPE];
    fn media_type_field(&self) -> Option<&str> {
        self.media_type.as_deref()
    }
    fn references(&self, digest: &str) -> bool {
        self.config.digest == digest || self.layers.iter().any(|l| l.digest == digest)
    }
}

impl TagDocument for ImageIndex {
    const MEDIA_TYPES: &'static [&'static str] = &[OCI_INDEX_MEDIA_TYPE];
    fn media_type_field(&self) -> Option<&str> {
        self.media_type.as_deref()
    }
    fn references(&self, digest: &str) -> bool {
        self.contains(digest)
    }
}

/// The subject's descriptor, resolved at most once per attach and awaited by every write that
/// needs it (nothing is written for a subject that does not resolve).
type Model<'a> = Shared<BoxFuture<'a, Result<ResolvedArtifact, StorageError>>>;

/// A blob that is new by construction (an envelope, a simple-signing payload: unique per
/// attestation), so it is uploaded without asking first: that HEAD would be a 404 in practice,
/// and re-uploading content the store has is accepted. Uploaded once per attach even though two
/// concurrent writes (the `.att` layer, the referrer) need the envelope.
struct NewBlob<'a> {
    bytes: &'a [u8],
    digest: String,
    stored: tokio::sync::OnceCell<()>,
}

impl<'a> NewBlob<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        NewBlob {
            bytes,
            digest: sha256_digest(bytes),
            stored: tokio::sync::OnceCell::new(),
        }
    }

    /// Uploads it unless this attach did; `again`: upload anyway (the store said it is unknown).
    async fn store(&self, b: &dyn Backend, again: bool) -> Result<(), StorageError> {
        let upload = || b.put_blob(&self.digest, Blob::Bytes(self.bytes));
        if again {
            return upload().await;
        }
        self.stored.get_or_try_init(upload).await.map(|_| ())
    }
}

/// What must exist before a manifest referencing it is accepted.
enum Prerequisite<'a> {
    /// A cosign `.att` / `.sig` layer blob, plus the constant config if the tag is being created.
    CosignLayer {
        config: &'a [u8],
        layer: &'a NewBlob<'a>,
    },
    /// The referrer manifest's blobs: the empty config `{}` and the envelope.
    ReferrerBlobs { envelope: &'a NewBlob<'a> },
    /// The referrer manifest (and its blobs) before the fallback index lists it.
    Referrer(&'a Referrer<'a>),
}

impl Prerequisite<'_> {
    /// The layer blob a tag may already reference (then it exists and is not uploaded).
    fn layer_digest(&self) -> Option<&str> {
        match self {
            Prerequisite::CosignLayer { layer, .. } => Some(&layer.digest),
            _ => None,
        }
    }
}

/// The OCI 1.1 referrer for one attestation.
struct Referrer<'a> {
    manifest: ImageManifest,
    bytes: Vec<u8>,
    digest: String,
    envelope: &'a NewBlob<'a>,
}

/// Reads the document under `tag` (`None` if the tag does not exist). Content of another kind
/// under the tag is an error: it is never overwritten.
async fn read_tag<T: TagDocument>(
    b: &dyn Backend,
    tag: &str,
) -> Result<Option<TagContent<T>>, StorageError> {
    let Some(fetched) = b.get_manifest(tag).await? else {
        return Ok(None);
    };
    let target = b.tag_ref(tag);
    let doc: T = serde_json::from_slice(&fetched.bytes).map_err(|e| {
        StorageError::permanent(
            op::MANIFEST_GET,
            &target,
            format!("not a {}: {e}", T::MEDIA_TYPES[0]),
        )
    })?;
    let media_type = match fetched.media_type {
        Some(mt) if !is_generic_media_type(&mt) => Some(mt),
        _ => doc.media_type_field().map(str::to_string),
    }
    .unwrap_or_else(|| T::MEDIA_TYPES[0].to_string());
    if !T::MEDIA_TYPES.contains(&media_type.as_str()) {
        return Err(StorageError::permanent(
            op::MANIFEST_GET,
            &target,
            format!(
                "holds a {media_type}, expected {}; not overwriting it",
                T::MEDIA_TYPES.join(" or ")
            ),
        ));
    }
    Ok(Some(TagContent { doc, media_type }))
}

/// Adds an entry to the document under `tag` unless it is there: read (to keep every entry
/// other writers put there), add, write. Writers in this process are serialized per tag. A
/// registry has no conditional PUT, so another process writing the same tag between our read
/// and our write can drop our entry. With `recheck` (the referrers fallback index, which
/// DESIGN.md requires to be re-checked; every layout tag, where a re-read is a file read) the
/// tag is read back and written again, with jitter, bounded, if our entry is gone; the cosign
/// tags of a registry are not (one GET each per attestation, for a window of milliseconds; see
/// docs/registry-layout.md). Returns whether it wrote.
async fn update_tag<T: TagDocument>(
    b: &dyn Backend,
    tag: &str,
    recheck: bool,
    new: impl Fn() -> T + Send + Sync,
    add: impl Fn(&mut T) -> bool + Send + Sync,
    prerequisite: &Prerequisite<'_>,
    model: &Model<'_>,
) -> Result<bool, StorageError> {
    let lock = b.tag_lock(tag);
    let _guard = lock.lock().await;
    let (mut doc, mut media_type, mut created) = match read_tag::<T>(b, tag).await? {
        Some(c) => (c.doc, c.media_type, false),
        None => (new(), T::MEDIA_TYPES[0].to_string(), true),
    };
    // A layer the tag already references exists (same payload signed again): no upload.
    let listed = prerequisite
        .layer_digest()
        .is_some_and(|d| doc.references(d));
    if !add(&mut doc) {
        return Ok(false);
    }
    model.clone().await?;
    // Whether the prerequisite is met, and whether that included a new tag's needs.
    let mut satisfied: Option<bool> = None;
    for round in 1..=MAX_TAG_ROUNDS {
        if satisfied.is_none() || (created && satisfied == Some(false)) {
            satisfy(b, prerequisite, created, listed, false).await?;
            satisfied = Some(created);
        }
        let bytes = oci::to_bytes(&doc).map_err(|e| {
            StorageError::permanent(op::MANIFEST_PUT, b.tag_ref(tag), e.to_string())
        })?;
        put_manifest_checked(b, tag, &media_type, &bytes, prerequisite, created).await?;
        if !recheck && !b.verifies_tag_writes() {
            return Ok(true);
        }
        // Verify; if our entry is gone, the re-read (with our entry added) is the next write.
        match read_tag::<T>(b, tag).await? {
            Some(mut c) => {
                if !add(&mut c.doc) {
                    return Ok(true);
                }
                (doc, media_type, created) = (c.doc, c.media_type, false);
            }
            None => {
                doc = new();
                add(&mut doc);
                (media_type, created) = (T::MEDIA_TYPES[0].to_string(), true);
            }
        }
        let delay = Duration::from_millis(rand::random_range(10..=50) * u64::from(round));
        tracing::info!(tag = %b.tag_ref(tag), round, ?delay, "entry lost to a concurrent writer, retrying");
        tokio::time::sleep(delay).await;
    }
    Err(StorageError::new(
        op::MANIFEST_PUT,
        b.tag_ref(tag),
        ErrorKind::Transient,
        format!("concurrent writers kept dropping our entry ({MAX_TAG_ROUNDS} rounds)"),
    ))
}

/// Makes what `prerequisite` names exist. `created`: the tag is new, so our config is referenced
/// too; `listed`: the tag already references the layer; `again`: the store refused the manifest
/// for an unknown blob, so everything is stored again and nothing is taken as known.
async fn satisfy(
    b: &dyn Backend,
    prerequisite: &Prerequisite<'_>,
    created: bool,
    listed: bool,
    again: bool,
) -> Result<(), StorageError> {
    match prerequisite {
        Prerequisite::CosignLayer { config, layer } => {
            let config = async {
                if created {
                    ensure_constant(b, config).await?;
                }
                Ok::<_, StorageError>(())
            };
            let layer = async {
                if again || !listed {
                    layer.store(b, again).await?;
                }
                Ok::<_, StorageError>(())
            };
            futures::try_join!(config, layer).map(|_| ())
        }
        Prerequisite::ReferrerBlobs { envelope } => {
            futures::try_join!(ensure_constant(b, EMPTY_BLOB), envelope.store(b, again)).map(|_| ())
        }
        // Boxed: pushing the referrer puts a manifest, which may come back here.
        Prerequisite::Referrer(r) => Box::pin(push_referrer(b, r)).await.map(|_| ()),
    }
}

/// A manifest PUT; when the store refuses it for an unknown blob (registry wiped or
/// garbage-collected since this store remembered the blob, or a concurrent upload of it not
/// finished), forgets what the store remembered about the repository's blobs, stores the
/// prerequisite again and retries, a bounded number of times; then the error (transient).
async fn put_manifest_checked(
    b: &dyn Backend,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
    prerequisite: &Prerequisite<'_>,
    created: bool,
) -> Result<Option<String>, StorageError> {
    let mut attempt = 1;
    loop {
        match b.put_manifest(reference, media_type, bytes).await {
            Err(e) if e.is_blob_unknown() && attempt < BLOB_UNKNOWN_ATTEMPTS => {
                tracing::info!(error = %e, attempt, "manifest refused for an unknown blob, storing its blobs again");
                b.forget_known_blobs();
                if attempt > 1 {
                    // Someone else's upload of the blob may still be committing.
                    let delay =
                        Duration::from_millis(rand::random_range(10..=50) * u64::from(attempt));
                    tokio::time::sleep(delay).await;
                }
                satisfy(b, prerequisite, created, false, true).await?;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Makes sure blob `digest` exists: checked, and stored only when missing. `ensured` remembers
/// blobs checked during this operation.
async fn ensure_blob(
    b: &dyn Backend,
    digest: &str,
    blob: Blob<'_>,
    ensured: &mut HashSet<String>,
) -> Result<(), StorageError> {
    if ensured.contains(digest) {
        return Ok(());
    }
    if !b.blob_exists(digest).await? {
        b.put_blob(digest, blob).await?;
    }
    ensured.insert(digest.to_string());
    Ok(())
}

/// A constant blob (the cosign config, `{}`): checked (and stored when missing) once per
/// repository for the store's lifetime, shared by concurrent attaches, then taken as known
/// without a request ([`Backend::known_blob`]).
async fn ensure_constant(b: &dyn Backend, bytes: &[u8]) -> Result<(), StorageError> {
    let digest = sha256_digest(bytes);
    b.known_blob(&digest)
        .get_or_try_init(|| async {
            if !b.blob_exists(&digest).await? {
                b.put_blob(&digest, Blob::Bytes(bytes)).await?;
            }
            Ok::<_, StorageError>(())
        })
        .await
        .map(|_| ())
}

/// Pushes the referrer manifest (by digest) and its blobs; returns whether the store said it
/// indexed the subject (`OCI-Subject`).
async fn push_referrer(b: &dyn Backend, r: &Referrer<'_>) -> Result<bool, StorageError> {
    let blobs = Prerequisite::ReferrerBlobs {
        envelope: r.envelope,
    };
    satisfy(b, &blobs, false, false, false).await?;
    let indexed = put_manifest_checked(
        b,
        &r.digest,
        OCI_MANIFEST_MEDIA_TYPE,
        &r.bytes,
        &blobs,
        false,
    )
    .await?;
    let subject = r.manifest.subject.as_ref().map(|s| s.digest.as_str());
    let indexed = indexed.is_some_and(|h| Some(h.as_str()) == subject);
    if indexed {
        b.learned_referrers_api();
    }
    Ok(indexed)
}

// ----- attach --------------------------------------------------------------------------------

/// The cosign `.att` / `.sig` tags: image manifests with a constant config, one layer each.
struct CosignTag<'a> {
    config: &'a [u8],
    config_descriptor: Descriptor,
}

impl CosignTag<'_> {
    /// Appends `layer` (content `blob`) to the manifest under `tag` unless `same` finds it.
    async fn append(
        &self,
        b: &dyn Backend,
        tag: &str,
        layer: &Descriptor,
        same: fn(&Descriptor, &Descriptor) -> bool,
        blob: &NewBlob<'_>,
        model: &Model<'_>,
    ) -> Result<bool, StorageError> {
        update_tag(
            b,
            tag,
            false,
            || ImageManifest::cosign(self.config_descriptor.clone()),
            |m: &mut ImageManifest| m.append_layer(layer.clone(), same),
            &Prerequisite::CosignLayer {
                config: self.config,
                layer: blob,
            },
            model,
        )
        .await
    }
}

/// Attaches a validated attestation (`hex` = its subject's digest hex): `.att`, `.sig`, and the
/// OCI 1.1 referrer plus, without a referrers API, the fallback index. The three are independent
/// (different tags), so they run concurrently; within each, blobs are stored before the manifest
/// referencing them and the referrer before the index listing it.
pub(crate) async fn attach(
    b: &dyn Backend,
    attestation: &Attestation,
    hex: &str,
) -> Result<Attached, StorageError> {
    let subject = &attestation.subject.digest;
    let model: Model<'_> = b.resolve(subject).shared();
    let input_error = |e: serde_json::Error| {
        StorageError::permanent(op::INPUT, b.digest_ref(subject), e.to_string())
    };

    // cosign's config for .att/.sig manifests created here (constant, so stored once).
    let config = oci::to_bytes(&ImageConfig::cosign_empty()).map_err(input_error)?;
    let cosign = CosignTag {
        config_descriptor: Descriptor::of(OCI_CONFIG_MEDIA_TYPE, &config),
        config: &config,
    };
    let envelope = NewBlob::new(&attestation.envelope);

    // 1. cosign attestation: our DSSE layer in `sha256-<hex>.att`.
    let att_tag = oci::attestation_tag(hex);
    let att_layer = oci::attestation_layer(&attestation.envelope, &attestation.predicate_type);
    let att = cosign.append(
        b,
        &att_tag,
        &att_layer,
        oci::same_attestation,
        &envelope,
        &model,
    );

    // 2. cosign signature: (payload, signature) in `sha256-<hex>.sig`.
    let sig_tag = oci::signature_tag(hex);
    let signature = attestation.signature.as_ref().map(|s| {
        (
            oci::signature_layer(&s.payload, &s.signature),
            NewBlob::new(&s.payload),
        )
    });
    let sig = async {
        if let Some((layer, payload)) = &signature {
            cosign
                .append(b, &sig_tag, layer, oci::same_signature, payload, &model)
                .await?;
        }
        Ok::<_, StorageError>(())
    };

    // 3. OCI 1.1 referrer, plus the fallback index where there is no referrers API.
    let referrer = async {
        let resolved = model.clone().await?;
        let manifest = ImageManifest::referrer(
            Descriptor::new(&resolved.media_type, resolved.digest.clone(), resolved.size),
            &attestation.envelope,
            &attestation.predicate_type,
        );
        let bytes = oci::to_bytes(&manifest).map_err(input_error)?;
        let referrer = Referrer {
            digest: sha256_digest(&bytes),
            envelope: &envelope,
            manifest,
            bytes,
        };
        if b.has_referrers_api(subject).await? {
            push_referrer(b, &referrer).await?;
        } else {
            let entry = oci::referrer_entry(&referrer.manifest, &referrer.bytes);
            update_tag(
                b,
                &oci::referrers_tag(hex),
                true,
                ImageIndex::empty,
                |i: &mut ImageIndex| i.add(entry.clone()),
                &Prerequisite::Referrer(&referrer),
                &model,
            )
            .await?;
        }
        Ok::<_, StorageError>(referrer.digest)
    };

    let (_, (), referrer_digest) = futures::try_join!(att, sig, referrer)?;
    let mut references = vec![b.tag_ref(&att_tag)];
    if signature.is_some() {
        references.push(b.tag_ref(&sig_tag));
    }
    references.push(b.digest_ref(&referrer_digest));
    tracing::debug!(subject = %attestation.subject, referrer = %referrer_digest, "attestation attached");
    Ok(Attached {
        references,
        referrer_digest,
    })
}

// ----- models --------------------------------------------------------------------------------

/// Stores a model artifact: the empty config, every file blob not yet there (streamed), then the
/// manifest under `tag` (or by digest only).
pub(crate) async fn push_model(
    b: &dyn Backend,
    tag: Option<&str>,
    model: &ModelArtifact,
) -> Result<ResolvedArtifact, StorageError> {
    if let Some(tag) = tag
        && !is_valid_tag(tag)
    {
        return Err(StorageError::permanent(
            op::INPUT,
            b.tag_ref(tag),
            "invalid tag (want [A-Za-z0-9_][A-Za-z0-9._-]{0,127})",
        ));
    }
    let mut ensured = HashSet::new();
    let empty = sha256_digest(EMPTY_BLOB);
    ensure_blob(b, &empty, Blob::Bytes(EMPTY_BLOB), &mut ensured).await?;
    for file in model.files() {
        let blob = Blob::File {
            path: &file.path,
            size: file.descriptor.size,
        };
        ensure_blob(b, &file.descriptor.digest, blob, &mut ensured).await?;
    }
    let resolved = model.resolved();
    b.put_manifest(
        tag.unwrap_or(&resolved.digest),
        &resolved.media_type,
        model.manifest(),
    )
    .await?;
    tracing::debug!(reference = %b.digest_ref(&resolved.digest), tag, "model pushed");
    Ok(resolved)
}

// ----- read side -----------------------------------------------------------------------------

/// The manifest behind a tag or a digest (`sha256:..`), its content checked against the digest.
pub(crate) async fn resolve_reference(
    b: &dyn Backend,
    reference: &str,
) -> Result<ResolvedArtifact, StorageError> {
    if oci::sha256_hex(reference).is_some() {
        return b.resolve(reference).await;
    }
    let target = b.tag_ref(reference);
    let fetched = b.get_manifest(reference).await?.ok_or_else(|| {
        StorageError::new(
            op::MANIFEST_GET,
            &target,
            ErrorKind::NotFound,
            "tag not found",
        )
    })?;
    Ok(ResolvedArtifact {
        digest: sha256_digest(&fetched.bytes),
        media_type: manifest_media_type(fetched.media_type, &fetched.bytes, &target)?,
        size: fetched.bytes.len() as u64,
    })
}

/// A manifest by digest, its content checked; `None` when absent.
async fn manifest_by_digest(
    b: &dyn Backend,
    digest: &str,
) -> Result<Option<ImageManifest>, StorageError> {
    let target = b.digest_ref(digest);
    let Some(fetched) = b.get_manifest(digest).await? else {
        return Ok(None);
    };
    check_digest(op::MANIFEST_GET, &target, digest, &fetched.bytes)?;
    serde_json::from_slice(&fetched.bytes)
        .map(Some)
        .map_err(|e| {
            StorageError::permanent(
                op::MANIFEST_GET,
                target,
                format!("not an image manifest: {e}"),
            )
        })
}

/// `DigestMismatch` unless `bytes` hash to `digest`.
pub(crate) fn check_digest(
    op: &'static str,
    target: &str,
    digest: &str,
    bytes: &[u8],
) -> Result<(), StorageError> {
    let actual = sha256_digest(bytes);
    if actual == digest {
        return Ok(());
    }
    Err(StorageError::new(
        op,
        target,
        ErrorKind::DigestMismatch,
        format!("content served for {digest} hashes to {actual}"),
    ))
}

/// The DSSE envelopes in `manifest`'s layers, with their predicate types.
async fn envelopes(
    b: &dyn Backend,
    manifest: &ImageManifest,
    predicate_annotation: &str,
) -> Result<Vec<(Vec<u8>, Option<String>)>, StorageError> {
    let mut out = Vec::new();
    for layer in manifest
        .layers
        .iter()
        .filter(|l| l.media_type == DSSE_MEDIA_TYPE)
    {
        let target = b.digest_ref(&layer.digest);
        let bytes = b.get_blob(&layer.digest).await?.ok_or_else(|| {
            StorageError::new(op::BLOB_GET, &target, ErrorKind::NotFound, "blob unknown")
        })?;
        check_digest(op::BLOB_GET, &target, &layer.digest, &bytes)?;
        let predicate_type = layer
            .annotations
            .get(predicate_annotation)
            .or_else(|| manifest.annotations.get(IN_TOTO_PREDICATE_TYPE_ANNOTATION))
            .cloned();
        out.push((bytes, predicate_type));
    }
    Ok(out)
}

/// Every DSSE envelope about `subject`: the `.att` layers, then the in-toto referrers (referrers
/// API, else the fallback index); one entry per envelope digest, with every place it was found.
pub(crate) async fn attestations(
    b: &dyn Backend,
    subject: &Subject,
) -> Result<Vec<FoundAttestation>, StorageError> {
    let hex = subject_hex(subject)?;
    let mut found: Vec<FoundAttestation> = Vec::new();
    let mut add =
        |envelope: Vec<u8>, predicate_type: Option<String>, via: Via, reference: String| {
            let digest = sha256_digest(&envelope);
            match found.iter_mut().find(|f| f.digest == digest) {
                Some(f) => {
                    if !f.via.contains(&via) {
                        f.via.push(via);
                    }
                    f.predicate_type = f.predicate_type.take().or(predicate_type);
                }
                None => found.push(FoundAttestation {
                    envelope,
                    digest,
                    predicate_type,
                    via: vec![via],
                    reference,
                }),
            }
        };

    let att_tag = oci::attestation_tag(&hex);
    if let Some(att) = read_tag::<ImageManifest>(b, &att_tag).await? {
        for (envelope, predicate_type) in envelopes(b, &att.doc, PREDICATE_TYPE_ANNOTATION).await? {
            add(envelope, predicate_type, Via::Att, b.tag_ref(&att_tag));
        }
    }

    let listed = match b.referrers(&subject.digest).await? {
        Some(index) => index,
        None => read_tag::<ImageIndex>(b, &oci::referrers_tag(&hex))
            .await?
            .map(|c| c.doc)
            .unwrap_or_else(ImageIndex::empty),
    };
    for entry in listed
        .manifests
        .iter()
        .filter(|e| e.artifact_type.as_deref() == Some(IN_TOTO_ARTIFACT_TYPE))
    {
        let Some(manifest) = manifest_by_digest(b, &entry.digest).await? else {
            tracing::warn!(referrer = %b.digest_ref(&entry.digest), "listed referrer does not exist");
            continue;
        };
        // An entry about another subject (a hand-edited index) is not evidence about this one.
        if manifest
            .subject
            .as_ref()
            .is_some_and(|s| s.digest != subject.digest)
        {
            tracing::warn!(referrer = %b.digest_ref(&entry.digest), "listed referrer is about another subject");
            continue;
        }
        for (envelope, predicate_type) in
            envelopes(b, &manifest, IN_TOTO_PREDICATE_TYPE_ANNOTATION).await?
        {
            add(
                envelope,
                predicate_type,
                Via::Referrer,
                b.digest_ref(&entry.digest),
            );
        }
    }
    Ok(found)
}
