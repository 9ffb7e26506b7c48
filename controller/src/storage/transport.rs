//! [`Transport`]: one place holding OCI content, as the attach protocol (`attach.rs`) and the read
//! side (`discover.rs`) see it — a repository in a registry (HTTP: one request per call, so the
//! documented request counts hold) or a layout directory (files). Plus what every step needs
//! over any transport: the document under a tag, content checked against its digest, a
//! manifest's media type.

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::{ErrorKind, StorageError};
use super::oci::{
    DOCKER_MANIFEST_MEDIA_TYPE, Index, Manifest, OCI_INDEX_MEDIA_TYPE, OCI_MANIFEST_MEDIA_TYPE,
};
use super::op;
use super::store::ResolvedArtifact;
use crate::observe::sha256_digest;

/// Manifests, indexes and envelopes are small; anything bigger is not what we asked for.
pub(crate) const MAX_DOCUMENT_BYTES: usize = 8 << 20;

/// A manifest as a transport returns it.
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
pub(crate) trait Transport: Send + Sync {
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
    /// A transport that remembers nothing returns a new cell.
    fn known_blob(&self, digest: &str) -> Arc<tokio::sync::OnceCell<()>>;
    /// Forgets the repository's known blobs (the store refused a manifest for an unknown blob:
    /// wiped or garbage-collected since).
    fn forget_known_blobs(&self);
    /// How long another writer of this store may take from reading a tag to writing it back:
    /// the least pause before a tag we wrote is read back (`attach::update_tag`).
    fn concurrent_write_window(&self) -> std::time::Duration;
    /// A small blob (at most [`MAX_DOCUMENT_BYTES`]); `None` when absent.
    async fn get_blob(&self, digest: &str) -> Result<Option<Vec<u8>>, StorageError>;
    /// Whether the store serves the OCI 1.1 referrers API (probed once, then known).
    async fn has_referrers_api(&self, subject: &str) -> Result<bool, StorageError>;
    /// The referrers API's list for `subject`, `None` when the store has no referrers API.
    async fn referrers(
        &self,
        subject: &str,
    ) -> Result<Option<oci_spec::image::ImageIndex>, StorageError>;
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

/// A document kept under a tag and updated by read-modify-write.
pub(crate) trait TagDocument: Serialize + DeserializeOwned + Send + Sync {
    /// Media types it may be stored as; the first is used when creating the tag.
    const MEDIA_TYPES: &'static [&'static str];
    fn media_type_field(&self) -> Option<&str>;
    /// Whether the document references blob or manifest `digest`.
    fn references(&self, digest: &str) -> bool;
}

impl TagDocument for Manifest {
    const MEDIA_TYPES: &'static [&'static str] =
        &[OCI_MANIFEST_MEDIA_TYPE, DOCKER_MANIFEST_MEDIA_TYPE];
    fn media_type_field(&self) -> Option<&str> {
        self.media_type.as_deref()
    }
    fn references(&self, digest: &str) -> bool {
        self.config.digest == digest || self.layers.iter().any(|l| l.digest == digest)
    }
}

impl TagDocument for Index {
    const MEDIA_TYPES: &'static [&'static str] = &[OCI_INDEX_MEDIA_TYPE];
    fn media_type_field(&self) -> Option<&str> {
        self.media_type.as_deref()
    }
    fn references(&self, digest: &str) -> bool {
        self.contains(digest)
    }
}

/// A document read from a tag, with the media type to write it back with.
pub(crate) struct TagContent<T> {
    pub doc: T,
    pub media_type: String,
}

/// Reads the document under `tag` (`None` if the tag does not exist). Content of another kind
/// under the tag is an error: it is never overwritten.
pub(crate) async fn read_tag<T: TagDocument>(
    t: &dyn Transport,
    tag: &str,
) -> Result<Option<TagContent<T>>, StorageError> {
    let Some(fetched) = t.get_manifest(tag).await? else {
        return Ok(None);
    };
    let target = t.tag_ref(tag);
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
