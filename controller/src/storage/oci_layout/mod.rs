//! [`LayoutStore`]: the [`AttestationStore`] over an OCI image layout directory (image-spec
//! "image layout"), for `provenant attest` outside a cluster. It runs the same attach protocol
//! as the registry store (`attach.rs`), so it writes the same artifacts, `verify` reads both the
//! same way and `skopeo copy oci:<dir>:<tag>` moves them to a registry unchanged.
//!
//! - Tags are `index.json` entries annotated `org.opencontainers.image.ref.name`; a manifest put
//!   by digest (a referrer, an untagged model) gets an entry without the annotation, so every
//!   manifest is reachable from `index.json` (where tools that walk or garbage-collect a layout
//!   start).
//! - The store is bound to one directory: a [`Subject`]'s `repository` is not used to address
//!   anything (it may be `oci:<dir>` or a registry name the model will be copied to); returned
//!   references name the layout as `oci:<dir>:<tag>` / `oci:<dir>@<digest>`.
//! - Crash safety and the locks against other stores and processes: `dir.rs`. Tag updates are
//!   serialized per tag in the process and read back like on a registry (`index.json` itself is
//!   locked against other processes, a tag's read-modify-write is not).

mod dir;
pub mod untrusted;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};

pub use dir::{OCI_LAYOUT_FILE, REF_NAME_ANNOTATION};

use self::dir::{LayoutDir, OwnedBlob, Shared};
use crate::hashing::FileDigest;
use crate::storage::error::StorageError;
use crate::storage::model::ModelArtifact;
use crate::storage::model_files::{self, ModelLayer};
use crate::storage::model_signature;
use crate::storage::op;
use crate::storage::reference::{LAYOUT_PREFIX, Location, parse_reference};
use crate::storage::store::{
    ArtifactStore, Attached, Attestation, AttestationStore, BundleAttestation, FoundAttestation,
    FoundModelSignature, ResolvedArtifact, Subject,
};
use crate::storage::transport::{Blob, Fetched, Transport};
use crate::storage::{ManifestBytes, attach, attach_bundle, discover, pull};

/// Op of failures that are not one store operation (a blocking task that died).
const OP_LAYOUT: &str = "layout";

/// Every layout directory a store of this process opened, by absolute path, with its locks.
static LAYOUTS: LazyLock<Mutex<HashMap<PathBuf, Arc<Shared>>>> = LazyLock::new(Mutex::default);

/// The [`AttestationStore`] (and [`ArtifactStore`]) on an OCI image layout directory, created
/// on first write.
#[derive(Clone)]
pub struct LayoutStore {
    inner: Arc<LayoutDir>,
}

impl std::fmt::Debug for LayoutStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayoutStore")
            .field("dir", &self.inner.root)
            .finish_non_exhaustive()
    }
}

impl LayoutStore {
    /// A store on the layout at `dir` (nothing is touched until the first operation).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let root: PathBuf = dir.into();
        let key = std::path::absolute(&root).unwrap_or_else(|_| root.clone());
        let shared = LAYOUTS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_default()
            .clone();
        LayoutStore {
            inner: Arc::new(LayoutDir {
                name: format!("{LAYOUT_PREFIX}{}", root.display()),
                root,
                shared,
            }),
        }
    }

    /// The layout directory.
    pub fn dir(&self) -> &Path {
        &self.inner.root
    }

    /// Every tag of the layout (`index.json`'s `org.opencontainers.image.ref.name` entries).
    pub async fn tags(&self) -> Result<Vec<String>, StorageError> {
        self.blocking(|l| {
            l.require_layout(op::MANIFEST_GET, &l.name)?;
            // Untrusted input (someone else's layout): read_index reads a capped regular file.
            let index = l.read_index(op::MANIFEST_GET)?;
            let mut tags: Vec<String> = index
                .manifests
                .into_iter()
                .filter_map(|mut d| d.annotations.remove(REF_NAME_ANNOTATION))
                .collect();
            tags.sort();
            tags.dedup();
            Ok(tags)
        })
        .await
    }

    /// Runs file work off the async runtime.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&LayoutDir) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| {
                StorageError::permanent(OP_LAYOUT, &self.inner.name, format!("file task: {e}"))
            })?
    }
}

#[async_trait::async_trait]
impl Transport for LayoutStore {
    fn tag_ref(&self, tag: &str) -> String {
        self.inner.tag_ref(tag)
    }

    fn digest_ref(&self, digest: &str) -> String {
        self.inner.digest_ref(digest)
    }

    async fn get_manifest(&self, reference: &str) -> Result<Option<Fetched>, StorageError> {
        let reference = reference.to_string();
        self.blocking(move |l| l.get_manifest(&reference)).await
    }

    async fn put_manifest(
        &self,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Option<String>, StorageError> {
        let (reference, media_type, bytes) = (
            reference.to_string(),
            media_type.to_string(),
            bytes.to_vec(),
        );
        self.blocking(move |l| l.put_manifest(&reference, &media_type, bytes))
            .await?;
        Ok(None)
    }

    async fn blob_exists(&self, digest: &str) -> Result<bool, StorageError> {
        let digest = digest.to_string();
        self.blocking(move |l| l.blob_exists(&digest)).await
    }

    async fn put_blob(&self, digest: &str, blob: Blob<'_>) -> Result<(), StorageError> {
        let digest = digest.to_string();
        let blob = match blob {
            Blob::Bytes(b) => OwnedBlob::Bytes(b.to_vec()),
            Blob::File { path, size } => OwnedBlob::File {
                path: path.to_path_buf(),
                size,
            },
        };
        // Checking costs no request here, and a blob file is verified when written: rewriting
        // it (an attach repeated) would only cost an fsync.
        self.blocking(move |l| {
            if l.blob_exists(&digest)? {
                return Ok(());
            }
            l.write_blob(&digest, blob)
        })
        .await
    }

    async fn get_blob(&self, digest: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let digest = digest.to_string();
        self.blocking(move |l| {
            l.require_layout(op::BLOB_GET, &l.digest_ref(&digest))?;
            l.read_blob(op::BLOB_GET, &digest)
        })
        .await
    }

    /// A layout has no referrers API: the fallback index is written and read.
    async fn has_referrers_api(&self, _subject: &str) -> Result<bool, StorageError> {
        Ok(false)
    }

    async fn referrers(
        &self,
        _subject: &str,
    ) -> Result<Option<oci_spec::image::ImageIndex>, StorageError> {
        Ok(None)
    }

    fn learned_referrers_api(&self) {}

    /// Nothing remembered: checking a file costs no request.
    fn known_blob(&self, _digest: &str) -> Arc<tokio::sync::OnceCell<()>> {
        Arc::default()
    }

    fn forget_known_blobs(&self) {}

    /// Its other writers are provenant processes doing the same file work as ours: the pause
    /// grows with our own read-to-write time alone.
    fn concurrent_write_window(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    fn tag_lock(&self, tag: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .inner
            .shared
            .tags
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(tag.to_string()).or_default().clone()
    }

    async fn resolve(&self, digest: &str) -> Result<ResolvedArtifact, StorageError> {
        let digest = digest.to_string();
        self.blocking(move |l| l.resolve(&digest)).await
    }
}

#[async_trait::async_trait]
impl AttestationStore for LayoutStore {
    async fn resolve(&self, subject: &Subject) -> Result<ResolvedArtifact, StorageError> {
        subject.hex()?;
        Transport::resolve(self, &subject.digest).await
    }

    async fn attach(&self, attestation: &Attestation) -> Result<Attached, StorageError> {
        attach::attach(self, attestation).await
    }

    async fn attach_bundle(&self, bundle: &BundleAttestation) -> Result<Attached, StorageError> {
        attach_bundle::attach_bundle(self, bundle).await
    }

    async fn model_files(
        &self,
        subject: &Subject,
    ) -> Result<Option<Vec<ModelLayer>>, StorageError> {
        subject.hex()?;
        model_files::stored_layers(self, &subject.digest).await
    }

    async fn attach_model_signature(
        &self,
        subject: &Subject,
        bundle: &[u8],
    ) -> Result<Attached, StorageError> {
        model_signature::attach(self, subject, bundle).await
    }
}

#[async_trait::async_trait]
impl ArtifactStore for LayoutStore {
    /// `repository` is not used: the model goes into this store's layout.
    async fn push_model(
        &self,
        _repository: &str,
        tag: Option<&str>,
        dir: &Path,
        files: &[FileDigest],
    ) -> Result<ResolvedArtifact, StorageError> {
        ModelArtifact::new(dir, files)?.push(self, tag).await
    }

    async fn attestations(&self, subject: &Subject) -> Result<Vec<FoundAttestation>, StorageError> {
        discover::attestations(self, subject).await
    }

    async fn model_signatures(
        &self,
        subject: &Subject,
    ) -> Result<Vec<FoundModelSignature>, StorageError> {
        model_signature::found(self, subject).await
    }

    /// Takes `oci:<dir>[:<tag>|@<digest>]` naming this layout, or a bare tag or digest.
    async fn resolve_reference(&self, reference: &str) -> Result<ResolvedArtifact, StorageError> {
        let bad = |why: &str| StorageError::permanent(op::INPUT, reference, why.to_string());
        let tag_or_digest = if reference.starts_with(LAYOUT_PREFIX) {
            let parsed = parse_reference(reference)?;
            let Location::Layout(dir) = &parsed.location else {
                return Err(bad("not an OCI layout reference"));
            };
            let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
            if absolute(dir) != absolute(&self.inner.root) {
                return Err(bad(&format!(
                    "names another layout than this store's ({})",
                    self.inner.name
                )));
            }
            parsed
                .tag_or_digest()
                .ok_or_else(|| bad("no tag or digest in the reference"))?
                .to_string()
        } else {
            reference.trim_start_matches('@').to_string()
        };
        discover::resolve_reference(self, &tag_or_digest).await
    }

    async fn manifest(&self, subject: &Subject) -> Result<ManifestBytes, StorageError> {
        subject.hex()?;
        pull::manifest(self, &subject.digest).await
    }

    /// The blob file is the layout's, read as input (`untrusted`): only a regular file inside
    /// the layout, at most `limit` bytes.
    async fn copy_blob(
        &self,
        _subject: &Subject,
        digest: &str,
        limit: u64,
        file: std::fs::File,
    ) -> Result<(String, u64), StorageError> {
        let digest = digest.to_string();
        self.blocking(move |l| {
            let target = l.digest_ref(&digest);
            let fail = |why: String| StorageError::permanent(op::BLOB_GET, &target, why);
            let path = untrusted::blob_path(&l.root, &digest).map_err(fail)?;
            untrusted::check_blob_dirs(&l.root).map_err(|e| fail(e.to_string()))?;
            pull::copy_file_blob(&path, limit, file)
                .map_err(|e| fail(format!("{}: {e}", path.display())))
        })
        .await
    }
}
