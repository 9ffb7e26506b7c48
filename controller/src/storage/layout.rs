//! [`LayoutStore`]: the [`AttestationStore`] over an OCI image layout directory (image-spec
//! "image layout": `oci-layout`, `index.json`, `blobs/sha256/<hex>`), for `provenant attest`
//! outside a cluster. It writes the same artifacts as the registry store (the manifest logic is
//! shared, `backend.rs`), so `verify` reads both the same way and `skopeo copy oci:<dir>:<tag>`
//! moves them to a registry unchanged.
//!
//! - Tags are `index.json` entries annotated `org.opencontainers.image.ref.name`; a manifest put
//!   by digest (a referrer, an untagged model) gets an entry without the annotation, so every
//!   manifest is reachable from `index.json` (where tools that walk or garbage-collect a layout
//!   start).
//! - The store is bound to one directory: a [`Subject`]'s `repository` is not used to address
//!   anything (it may be `oci:<dir>` or a registry name the model will be copied to); returned
//!   references name the layout as `oci:<dir>:<tag>` / `oci:<dir>@<digest>`.
//! - Crash safety: blobs and `index.json` are written to a temporary file in the layout, synced,
//!   then renamed into place; `oci-layout` is written first so a half-created layout is completed
//!   by the next write. A crash leaves at most a stray `.provenant-*.tmp` file.
//! - Concurrency: `index.json` read-modify-writes are serialized by a per-directory lock shared by
//!   every store of the process and by an advisory lock (`flock`) on `oci-layout` against other
//!   processes; tag updates are serialized per tag in the process and verified like on a registry.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use sha2::{Digest as _, Sha256};

use super::backend::{self, Backend, Blob, Fetched, MAX_DOCUMENT_BYTES};
use super::discover::FoundAttestation;
use super::model::ModelArtifact;
use super::oci::{self, Descriptor, ImageIndex, sha256_digest};
use super::reference::{LAYOUT_PREFIX, Location, parse_reference};
use super::registry::op;
use super::{
    ArtifactStore, Attached, Attestation, AttestationStore, ErrorKind, ResolvedArtifact,
    StorageError, Subject,
};
use crate::hashing::FileDigest;

/// The `index.json` annotation naming a tag.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// The `oci-layout` file's content.
pub const OCI_LAYOUT_FILE: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Copy buffer for model files (the only large blobs).
const COPY_BUFFER: usize = 1 << 20;
/// Op of failures that are not one store operation (a blocking task that died).
const OP_LAYOUT: &str = "layout";

/// Locks of one layout directory, shared by every [`LayoutStore`] on it in this process.
#[derive(Default)]
struct Shared {
    /// Serializes `index.json` read-modify-writes (and layout creation).
    index: Mutex<()>,
    /// Serializes read-modify-writes of one tag.
    tags: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

static LAYOUTS: LazyLock<Mutex<HashMap<PathBuf, Arc<Shared>>>> = LazyLock::new(Mutex::default);

/// The [`AttestationStore`] (and [`ArtifactStore`]) on an OCI image layout directory, created
/// on first write.
#[derive(Clone)]
pub struct LayoutStore {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    /// `oci:<dir>` as given (references and errors).
    name: String,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LayoutStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayoutStore")
            .field("dir", &self.inner.root)
            .finish_non_exhaustive()
    }
}

/// A blob handed to a blocking task.
enum OwnedBlob {
    Bytes(Vec<u8>),
    File { path: PathBuf, size: u64 },
}

fn io_error(op: &'static str, target: &str, what: &Path, e: &io::Error) -> StorageError {
    let kind = match e.kind() {
        io::ErrorKind::NotFound => ErrorKind::NotFound,
        io::ErrorKind::StorageFull
        | io::ErrorKind::QuotaExceeded
        | io::ErrorKind::Interrupted
        | io::ErrorKind::WouldBlock
        | io::ErrorKind::TimedOut => ErrorKind::Transient,
        _ => ErrorKind::Permanent,
    };
    StorageError::new(op, target, kind, format!("{}: {e}", what.display()))
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
            inner: Arc::new(Inner {
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

    /// Runs file work off the async runtime.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| {
                StorageError::permanent(OP_LAYOUT, &self.inner.name, format!("file task: {e}"))
            })?
    }
}

impl Inner {
    fn tag_ref(&self, tag: &str) -> String {
        format!("{}:{tag}", self.name)
    }

    fn digest_ref(&self, digest: &str) -> String {
        format!("{}@{digest}", self.name)
    }

    fn blob_path(&self, op: &'static str, digest: &str) -> Result<PathBuf, StorageError> {
        let hex = oci::sha256_hex(digest).ok_or_else(|| {
            StorageError::permanent(op, self.digest_ref(digest), "not a sha256:<hex> digest")
        })?;
        Ok(self.root.join("blobs").join("sha256").join(hex))
    }

    fn layout_file(&self) -> PathBuf {
        self.root.join("oci-layout")
    }

    fn index_file(&self) -> PathBuf {
        self.root.join("index.json")
    }

    /// Fails as `NotFound` unless the directory is a layout (reads never invent an empty one).
    fn require_layout(&self, op: &'static str, target: &str) -> Result<(), StorageError> {
        if self.layout_file().is_file() {
            return Ok(());
        }
        Err(StorageError::new(
            op,
            target,
            ErrorKind::NotFound,
            format!(
                "no OCI image layout at {} (no oci-layout file)",
                self.root.display()
            ),
        ))
    }

    /// Creates the layout if the directory is missing or empty; checks an existing one.
    fn ensure_layout(&self, op: &'static str) -> Result<(), StorageError> {
        let target = &self.name;
        let layout_file = self.layout_file();
        let _guard = self.shared.index.lock().unwrap_or_else(|p| p.into_inner());
        match std::fs::read(&layout_file) {
            Ok(content) => {
                let version = serde_json::from_slice::<serde_json::Value>(&content)
                    .ok()
                    .and_then(|v| v.get("imageLayoutVersion")?.as_str().map(str::to_string));
                if !version.as_deref().is_some_and(|v| v.starts_with("1.")) {
                    return Err(StorageError::permanent(
                        op,
                        target,
                        format!(
                            "{}: unsupported imageLayoutVersion {version:?}",
                            layout_file.display()
                        ),
                    ));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match std::fs::read_dir(&self.root) {
                    Ok(mut entries) => {
                        if entries.next().is_some() {
                            return Err(StorageError::permanent(
                                op,
                                target,
                                format!(
                                    "{} is not empty and not an OCI image layout (no oci-layout \
                                     file); not writing into it",
                                    self.root.display()
                                ),
                            ));
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_error(op, target, &self.root, &e)),
                }
                std::fs::create_dir_all(&self.root)
                    .map_err(|e| io_error(op, target, &self.root, &e))?;
                // `oci-layout` first: a crash after it leaves a layout the next write completes.
                self.write_atomic(op, &layout_file, |f| f.write_all(OCI_LAYOUT_FILE))?;
                tracing::debug!(layout = %self.root.display(), "OCI image layout created");
            }
            Err(e) => return Err(io_error(op, target, &layout_file, &e)),
        }
        let blobs = self.root.join("blobs").join("sha256");
        std::fs::create_dir_all(&blobs).map_err(|e| io_error(op, target, &blobs, &e))?;
        let index = self.index_file();
        if !index.is_file() {
            let bytes = oci::to_bytes(&ImageIndex::empty())
                .map_err(|e| StorageError::permanent(op, target, e.to_string()))?;
            self.write_atomic(op, &index, |f| f.write_all(&bytes))?;
        }
        Ok(())
    }

    /// Writes `dest` via a synced temporary file in the layout renamed into place, then syncs
    /// the directory so the rename survives a crash.
    fn write_atomic(
        &self,
        op: &'static str,
        dest: &Path,
        write: impl FnOnce(&mut File) -> Result<(), io::Error>,
    ) -> Result<(), StorageError> {
        self.write_atomic_checked(op, dest, |f| {
            write(f).map_err(|e| io_error(op, &self.name, dest, &e))
        })
    }

    fn write_atomic_checked(
        &self,
        op: &'static str,
        dest: &Path,
        write: impl FnOnce(&mut File) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let temp = self.root.join(format!(
            ".provenant-{}-{}-{:016x}.tmp",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            rand::random::<u64>()
        ));
        let result = (|| {
            let mut file = File::create(&temp).map_err(|e| io_error(op, &self.name, &temp, &e))?;
            write(&mut file)?;
            file.sync_all()
                .map_err(|e| io_error(op, &self.name, &temp, &e))?;
            std::fs::rename(&temp, dest).map_err(|e| io_error(op, &self.name, dest, &e))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        result?;
        // Best effort: some filesystems cannot sync a directory; the data itself is synced.
        if let Some(parent) = dest.parent()
            && let Ok(dir) = File::open(parent)
        {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    fn read_index(&self, op: &'static str) -> Result<ImageIndex, StorageError> {
        let path = self.index_file();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                StorageError::permanent(op, &self.name, format!("{}: {e}", path.display()))
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(ImageIndex::empty()),
            Err(e) => Err(io_error(op, &self.name, &path, &e)),
        }
    }

    /// Read-modify-write of `index.json`; `change` returns whether it changed anything.
    fn update_index(
        &self,
        op: &'static str,
        change: impl FnOnce(&mut ImageIndex) -> bool,
    ) -> Result<(), StorageError> {
        let _guard = self.shared.index.lock().unwrap_or_else(|p| p.into_inner());
        let layout_file = self.layout_file();
        let lock =
            File::open(&layout_file).map_err(|e| io_error(op, &self.name, &layout_file, &e))?;
        match lock.lock() {
            Ok(()) => {}
            // Filesystems without flock: the in-process lock still holds.
            Err(e) if e.kind() == io::ErrorKind::Unsupported => {}
            Err(e) => return Err(io_error(op, &self.name, &layout_file, &e)),
        }
        let mut index = self.read_index(op)?;
        if !change(&mut index) {
            return Ok(());
        }
        let bytes = oci::to_bytes(&index)
            .map_err(|e| StorageError::permanent(op, &self.name, e.to_string()))?;
        self.write_atomic(op, &self.index_file(), |f| f.write_all(&bytes))
    }

    /// A blob of at most [`MAX_DOCUMENT_BYTES`], checked against its digest; `None` if absent.
    fn read_blob(&self, op: &'static str, digest: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let path = self.blob_path(op, digest)?;
        let target = self.digest_ref(digest);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(op, &target, &path, &e)),
        };
        let mut bytes = Vec::new();
        file.take(MAX_DOCUMENT_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| io_error(op, &target, &path, &e))?;
        if bytes.len() > MAX_DOCUMENT_BYTES {
            return Err(StorageError::permanent(
                op,
                target,
                format!("larger than {MAX_DOCUMENT_BYTES} bytes"),
            ));
        }
        backend::check_digest(op, &target, digest, &bytes)?;
        Ok(Some(bytes))
    }

    fn blob_exists(&self, digest: &str) -> Result<bool, StorageError> {
        let path = self.blob_path(op::BLOB_HEAD, digest)?;
        match std::fs::metadata(&path) {
            Ok(m) => Ok(m.is_file()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_error(op::BLOB_HEAD, &self.digest_ref(digest), &path, &e)),
        }
    }

    /// Stores a blob under its digest, checking the content hashes to it (a model file is
    /// copied in chunks, hashed on the way: a file changed since it was hashed is refused).
    fn write_blob(&self, digest: &str, blob: OwnedBlob) -> Result<(), StorageError> {
        let op = op::BLOB_UPLOAD;
        self.ensure_layout(op)?;
        let dest = self.blob_path(op, digest)?;
        let target = self.digest_ref(digest);
        match blob {
            OwnedBlob::Bytes(bytes) => {
                backend::check_digest(op, &target, digest, &bytes)?;
                self.write_atomic(op, &dest, |f| f.write_all(&bytes))
            }
            OwnedBlob::File { path, size } => self.write_atomic_checked(op, &dest, |out| {
                let read_error = |e: io::Error| io_error(op, &target, &path, &e);
                let mut src = File::open(&path).map_err(read_error)?;
                let mut hasher = Sha256::new();
                let mut buf = vec![0u8; COPY_BUFFER];
                let mut copied = 0u64;
                loop {
                    let n = match src.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(read_error(e)),
                    };
                    let chunk = buf.get(..n).unwrap_or_default();
                    hasher.update(chunk);
                    out.write_all(chunk)
                        .map_err(|e| io_error(op, &target, &dest, &e))?;
                    copied += n as u64;
                }
                let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
                if actual != digest || copied != size {
                    return Err(StorageError::new(
                        op,
                        &target,
                        ErrorKind::DigestMismatch,
                        format!(
                            "{}: {copied} bytes hashing to {actual}, expected {size} bytes {digest} \
                             (changed since it was hashed?)",
                            path.display()
                        ),
                    ));
                }
                Ok(())
            }),
        }
    }

    fn get_manifest(&self, reference: &str) -> Result<Option<Fetched>, StorageError> {
        let op = op::MANIFEST_GET;
        let by_digest = oci::sha256_hex(reference).is_some();
        let target = if by_digest {
            self.digest_ref(reference)
        } else {
            self.tag_ref(reference)
        };
        self.require_layout(op, &target)?;
        let index = self.read_index(op)?;
        let listed = |d: &Descriptor| {
            if by_digest {
                d.digest == reference
            } else {
                d.annotations.get(REF_NAME_ANNOTATION).map(String::as_str) == Some(reference)
            }
        };
        let entry = index.manifests.iter().find(|d| listed(d));
        let digest = match entry {
            Some(e) => e.digest.as_str(),
            None if by_digest => reference,
            None => return Ok(None),
        };
        let bytes = match self.read_blob(op, digest)? {
            Some(b) => b,
            None if by_digest => return Ok(None),
            None => {
                return Err(StorageError::new(
                    op,
                    target,
                    ErrorKind::NotFound,
                    format!("index.json lists {digest}, its blob is missing"),
                ));
            }
        };
        Ok(Some(Fetched {
            bytes,
            media_type: entry.map(|e| e.media_type.clone()),
        }))
    }

    fn put_manifest(
        &self,
        reference: &str,
        media_type: &str,
        bytes: Vec<u8>,
    ) -> Result<(), StorageError> {
        let op = op::MANIFEST_PUT;
        let digest = sha256_digest(&bytes);
        let tag = if oci::sha256_hex(reference).is_some() {
            backend::check_digest(op, &self.digest_ref(reference), reference, &bytes)?;
            None
        } else {
            Some(reference)
        };
        if !self.blob_exists(&digest)? {
            self.write_blob(&digest, OwnedBlob::Bytes(bytes.clone()))?;
        }
        let mut entry = Descriptor::new(media_type, digest.clone(), bytes.len() as u64);
        // The descriptor carries the artifact type, as the referrers API would list it.
        entry.artifact_type = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("artifactType")?.as_str().map(str::to_string));
        self.update_index(op, |index| match tag {
            Some(tag) => {
                let entry = entry.with_annotation(REF_NAME_ANNOTATION, tag);
                let named = |d: &Descriptor| {
                    d.annotations.get(REF_NAME_ANNOTATION).map(String::as_str) == Some(tag)
                };
                let untagged_same = |d: &Descriptor| {
                    d.digest == digest && !d.annotations.contains_key(REF_NAME_ANNOTATION)
                };
                // The tag keeps its position; other entries with this name and an untagged
                // entry for the same manifest go.
                let before = index.manifests.clone();
                let mut placed = false;
                let mut manifests = Vec::with_capacity(before.len() + 1);
                for d in index.manifests.drain(..) {
                    if named(&d) {
                        if !placed {
                            manifests.push(entry.clone());
                            placed = true;
                        }
                    } else if !untagged_same(&d) {
                        manifests.push(d);
                    }
                }
                if !placed {
                    manifests.push(entry);
                }
                index.manifests = manifests;
                index.manifests != before
            }
            None => {
                if index.contains(&digest) {
                    return false;
                }
                index.manifests.push(entry);
                true
            }
        })
    }

    fn resolve(&self, digest: &str) -> Result<ResolvedArtifact, StorageError> {
        let op = op::MANIFEST_GET;
        let target = self.digest_ref(digest);
        let Some(fetched) = self.get_manifest(digest)? else {
            return Err(StorageError::new(
                op,
                target,
                ErrorKind::NotFound,
                "manifest unknown",
            ));
        };
        Ok(ResolvedArtifact {
            digest: digest.to_string(),
            media_type: backend::manifest_media_type(fetched.media_type, &fetched.bytes, &target)?,
            size: fetched.bytes.len() as u64,
        })
    }
}

#[async_trait::async_trait]
impl Backend for LayoutStore {
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

    async fn referrers(&self, _subject: &str) -> Result<Option<ImageIndex>, StorageError> {
        Ok(None)
    }

    fn learned_referrers_api(&self) {}

    /// Nothing remembered: checking a file costs no request.
    fn known_blob(&self, _digest: &str) -> Arc<tokio::sync::OnceCell<()>> {
        Arc::default()
    }

    fn forget_known_blobs(&self) {}

    /// A re-read is a file read: cheap insurance against another process updating the same tag
    /// of this layout (`index.json` itself is locked, a tag's read-modify-write is not).
    fn verifies_tag_writes(&self) -> bool {
        true
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
        backend::subject_hex(subject)?;
        Backend::resolve(self, &subject.digest).await
    }

    async fn attach(&self, attestation: &Attestation) -> Result<Attached, StorageError> {
        let hex = backend::validate_attestation(attestation)?;
        backend::attach(self, attestation, &hex).await
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
        let model = ModelArtifact::new(dir, files)?;
        backend::push_model(self, tag, &model).await
    }

    async fn attestations(&self, subject: &Subject) -> Result<Vec<FoundAttestation>, StorageError> {
        backend::attestations(self, subject).await
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
        backend::resolve_reference(self, &tag_or_digest).await
    }
}
