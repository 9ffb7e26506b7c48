//! The manifest logic both stores share, written once over a small [`Backend`] trait: a place that
//! can get and put manifests (by tag or digest), check, put and get blobs, and maybe list
//! referrers. The registry store implements it with HTTP requests (one request per call, so the
//! documented request counts hold), the layout store with files.
//!
//! Here: the read-modify-write of a tag (append a layer, add an index entry, verify, retry), the
//! attach sequence (`.att`, `.sig`, referrer + fallback index), model pushes, and the read side
//! (`attestations`, resolving a tag or digest).

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

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
/// processes make a round fail).
const MAX_TAG_ROUNDS: u32 = 8;

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
    /// Stores a blob known to be absent; the store checks the content against `digest`.
    async fn put_blob(&self, digest: &str, blob: Blob<'_>) -> Result<(), StorageError>;
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
}

impl TagDocument for ImageManifest {
    const MEDIA_TYPES: &'static [&'static str] =
        &[OCI_MANIFEST_MEDIA_TYPE, DOCKER_MANIFEST_MEDIA_TYPE];
    fn media_type_field(&self) -> Option<&str> {
        self.media_type.as_deref()
    }
}

impl TagDocument for ImageIndex {
    const MEDIA_TYPES: &'static [&'static str] = &[OCI_INDEX_MEDIA_TYPE];
    fn media_type_field(&self) -> Option<&str> {
        self.media_type.as_deref()
    }
}

/// What must exist before a tag may reference it (done once per attach, only when a write is
/// actually needed).
enum Prerequisite<'a> {
    /// A cosign `.att` / `.sig` layer blob, plus the config blob if the tag is being created.
    CosignLayer { config: &'a [u8], layer: &'a [u8] },
    /// The referrer manifest (and its blobs) before the fallback index lists it.
    Referrer(&'a Referrer),
}

/// The OCI 1.1 referrer for one attestation.
struct Referrer {
    manifest: ImageManifest,
    bytes: Vec<u8>,
    digest: String,
    envelope: Vec<u8>,
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

/// Adds an entry to the document under `tag` unless it is there: read, add, write, re-read to
/// verify, and repeat (with jitter, bounded) if a concurrent writer dropped it. Writers in this
/// process are serialized per tag; other processes are only caught by the verification (a
/// registry has no conditional PUT). Returns whether it wrote.
async fn update_tag<T: TagDocument>(
    b: &dyn Backend,
    tag: &str,
    new: impl Fn() -> T + Send + Sync,
    add: impl Fn(&mut T) -> bool + Send + Sync,
    prerequisite: &Prerequisite<'_>,
    ensured: &mut HashSet<String>,
) -> Result<bool, StorageError> {
    let lock = b.tag_lock(tag);
    let _guard = lock.lock().await;
    let (mut doc, mut media_type, mut created) = match read_tag::<T>(b, tag).await? {
        Some(c) => (c.doc, c.media_type, false),
        None => (new(), T::MEDIA_TYPES[0].to_string(), true),
    };
    if !add(&mut doc) {
        return Ok(false);
    }
    // Whether the prerequisite is met, and whether that included a new tag's needs.
    let mut satisfied: Option<bool> = None;
    for round in 1..=MAX_TAG_ROUNDS {
        if satisfied.is_none() || (created && satisfied == Some(false)) {
            satisfy(b, prerequisite, created, ensured).await?;
            satisfied = Some(created);
        }
        let bytes = oci::to_bytes(&doc).map_err(|e| {
            StorageError::permanent(op::MANIFEST_PUT, b.tag_ref(tag), e.to_string())
        })?;
        b.put_manifest(tag, &media_type, &bytes).await?;
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

async fn satisfy(
    b: &dyn Backend,
    prerequisite: &Prerequisite<'_>,
    created: bool,
    ensured: &mut HashSet<String>,
) -> Result<(), StorageError> {
    match prerequisite {
        Prerequisite::CosignLayer { config, layer } => {
            if created {
                ensure_bytes(b, config, ensured).await?;
            }
            ensure_bytes(b, layer, ensured).await
        }
        Prerequisite::Referrer(r) => push_referrer(b, r, ensured).await.map(|_| ()),
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

async fn ensure_bytes(
    b: &dyn Backend,
    bytes: &[u8],
    ensured: &mut HashSet<String>,
) -> Result<(), StorageError> {
    ensure_blob(b, &sha256_digest(bytes), Blob::Bytes(bytes), ensured).await
}

/// Pushes the referrer manifest (by digest) and its blobs; returns whether the store said it
/// indexed the subject (`OCI-Subject`).
async fn push_referrer(
    b: &dyn Backend,
    r: &Referrer,
    ensured: &mut HashSet<String>,
) -> Result<bool, StorageError> {
    ensure_bytes(b, EMPTY_BLOB, ensured).await?;
    ensure_bytes(b, &r.envelope, ensured).await?;
    let indexed = b
        .put_manifest(&r.digest, OCI_MANIFEST_MEDIA_TYPE, &r.bytes)
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
        layer: Descriptor,
        same: fn(&Descriptor, &Descriptor) -> bool,
        blob: &[u8],
        ensured: &mut HashSet<String>,
    ) -> Result<bool, StorageError> {
        update_tag(
            b,
            tag,
            || ImageManifest::cosign(self.config_descriptor.clone()),
            |m: &mut ImageManifest| m.append_layer(layer.clone(), same),
            &Prerequisite::CosignLayer {
                config: self.config,
                layer: blob,
            },
            ensured,
        )
        .await
    }
}

/// Attaches a validated attestation (`hex` = its subject's digest hex): `.att`, `.sig`, then the
/// OCI 1.1 referrer and, without a referrers API, the fallback index.
pub(crate) async fn attach(
    b: &dyn Backend,
    attestation: &Attestation,
    hex: &str,
) -> Result<Attached, StorageError> {
    let subject = &attestation.subject.digest;
    let model = b.resolve(subject).await?;
    let mut ensured = HashSet::new();
    let mut references = Vec::with_capacity(3);
    let input_error = |e: serde_json::Error| {
        StorageError::permanent(op::INPUT, b.digest_ref(subject), e.to_string())
    };

    // cosign's config for .att/.sig manifests created here (constant, so stored once).
    let config = oci::to_bytes(&ImageConfig::cosign_empty()).map_err(input_error)?;
    let cosign = CosignTag {
        config_descriptor: Descriptor::of(OCI_CONFIG_MEDIA_TYPE, &config),
        config: &config,
    };

    // 1. cosign attestation: our DSSE layer in `sha256-<hex>.att`; 2. cosign signature:
    // (payload, signature) in `sha256-<hex>.sig`.
    type Same = fn(&Descriptor, &Descriptor) -> bool;
    let mut layers: Vec<(String, Descriptor, Same, &[u8])> = vec![(
        oci::attestation_tag(hex),
        oci::attestation_layer(&attestation.envelope, &attestation.predicate_type),
        oci::same_attestation,
        &attestation.envelope,
    )];
    if let Some(signature) = &attestation.signature {
        layers.push((
            oci::signature_tag(hex),
            oci::signature_layer(&signature.payload, &signature.signature),
            oci::same_signature,
            &signature.payload,
        ));
    }
    for (tag, layer, same, blob) in layers {
        cosign
            .append(b, &tag, layer, same, blob, &mut ensured)
            .await?;
        references.push(b.tag_ref(&tag));
    }

    // 3. OCI 1.1 referrer, plus the fallback index where there is no referrers API.
    let manifest = ImageManifest::referrer(
        Descriptor::new(&model.media_type, model.digest.clone(), model.size),
        &attestation.envelope,
        &attestation.predicate_type,
    );
    let bytes = oci::to_bytes(&manifest).map_err(input_error)?;
    let referrer = Referrer {
        digest: sha256_digest(&bytes),
        envelope: attestation.envelope.clone(),
        manifest,
        bytes,
    };
    if b.has_referrers_api(subject).await? {
        push_referrer(b, &referrer, &mut ensured).await?;
    } else {
        let entry = oci::referrer_entry(&referrer.manifest, &referrer.bytes);
        update_tag(
            b,
            &oci::referrers_tag(hex),
            ImageIndex::empty,
            |i: &mut ImageIndex| i.add(entry.clone()),
            &Prerequisite::Referrer(&referrer),
            &mut ensured,
        )
        .await?;
    }
    references.push(b.digest_ref(&referrer.digest));
    tracing::debug!(subject = %attestation.subject, referrer = %referrer.digest, "attestation attached");
    Ok(Attached {
        references,
        referrer_digest: referrer.digest,
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
    ensure_bytes(b, EMPTY_BLOB, &mut ensured).await?;
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
