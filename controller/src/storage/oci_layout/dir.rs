//! One OCI image layout directory on disk (image-spec "image layout": `oci-layout`,
//! `index.json`, `blobs/sha256/<hex>`): creating it, crash-safe writes (temporary file, fsync,
//! rename, directory sync), `index.json` read-modify-writes under the process lock and `flock`,
//! blobs checked against their names, tags as `index.json` entries. Blocking file I/O: the store
//! (`mod.rs`) runs it off the async runtime.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};

use crate::observe::sha256_digest;
use crate::storage::error::{ErrorKind, StorageError};
use crate::storage::oci::{self, Descriptor, Index};
use crate::storage::op;
use crate::storage::store::ResolvedArtifact;
use crate::storage::transport::{Fetched, check_digest, manifest_media_type};

use super::untrusted;

/// The `index.json` annotation naming a tag.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// The `oci-layout` file's content.
pub const OCI_LAYOUT_FILE: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Copy buffer for model files (the only large blobs).
const COPY_BUFFER: usize = 1 << 20;

/// Locks of one layout directory, shared by every store on it in this process.
#[derive(Default)]
pub(super) struct Shared {
    /// Serializes `index.json` read-modify-writes (and layout creation).
    index: Mutex<()>,
    /// Serializes read-modify-writes of one tag.
    pub tags: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// A layout directory and its locks.
pub(super) struct LayoutDir {
    pub root: PathBuf,
    /// `oci:<dir>` as given (references and errors).
    pub name: String,
    pub shared: Arc<Shared>,
}

/// A blob handed to a blocking task.
pub(super) enum OwnedBlob {
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

impl LayoutDir {
    pub(super) fn tag_ref(&self, tag: &str) -> String {
        format!("{}:{tag}", self.name)
    }

    pub(super) fn digest_ref(&self, digest: &str) -> String {
        format!("{}@{digest}", self.name)
    }

    fn blob_path(&self, op: &'static str, digest: &str) -> Result<PathBuf, StorageError> {
        untrusted::blob_path(&self.root, digest)
            .map_err(|why| StorageError::permanent(op, self.digest_ref(digest), why))
    }

    fn layout_file(&self) -> PathBuf {
        self.root.join("oci-layout")
    }

    fn index_file(&self) -> PathBuf {
        self.root.join("index.json")
    }

    /// Fails as `NotFound` unless the directory is a layout (reads never invent an empty one).
    pub(super) fn require_layout(
        &self,
        op: &'static str,
        target: &str,
    ) -> Result<(), StorageError> {
        // Not followed if a symbolic link: a layout is what is in the directory.
        if std::fs::symlink_metadata(self.layout_file()).is_ok_and(|m| m.is_file()) {
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
            let bytes = serde_json::to_vec(&Index::empty())
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

    /// `index.json` (untrusted input for `verify`: a regular file of at most
    /// [`untrusted::MAX_INDEX_BYTES`]).
    pub(super) fn read_index(&self, op: &'static str) -> Result<Index, StorageError> {
        let path = self.index_file();
        match untrusted::read_capped(&path, untrusted::MAX_INDEX_BYTES) {
            Ok(Some(bytes)) => serde_json::from_slice(&bytes).map_err(|e| {
                StorageError::permanent(op, &self.name, format!("{}: {e}", path.display()))
            }),
            Ok(None) => Ok(Index::empty()),
            Err(e) => Err(io_error(op, &self.name, &path, &e)),
        }
    }

    /// Read-modify-write of `index.json`; `change` returns whether it changed anything.
    fn update_index(
        &self,
        op: &'static str,
        change: impl FnOnce(&mut Index) -> bool,
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
        let bytes = serde_json::to_vec(&index)
            .map_err(|e| StorageError::permanent(op, &self.name, e.to_string()))?;
        self.write_atomic(op, &self.index_file(), |f| f.write_all(&bytes))
    }

    /// A blob of at most [`untrusted::MAX_DOCUMENT_BYTES`], checked against its digest; `None` if absent.
    pub(super) fn read_blob(
        &self,
        op: &'static str,
        digest: &str,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        let path = self.blob_path(op, digest)?;
        let target = self.digest_ref(digest);
        // The layout may be someone else's (`verify`): nothing is read through a link out of it,
        // nor from a special file, nor beyond the limit.
        let read = untrusted::check_blob_dirs(&self.root)
            .and_then(|()| untrusted::read_capped(&path, untrusted::MAX_DOCUMENT_BYTES));
        let Some(bytes) = read.map_err(|e| io_error(op, &target, &path, &e))? else {
            return Ok(None);
        };
        check_digest(op, &target, digest, &bytes)?;
        Ok(Some(bytes))
    }

    pub(super) fn blob_exists(&self, digest: &str) -> Result<bool, StorageError> {
        let path = self.blob_path(op::BLOB_HEAD, digest)?;
        match std::fs::symlink_metadata(&path) {
            Ok(m) => Ok(m.is_file()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_error(op::BLOB_HEAD, &self.digest_ref(digest), &path, &e)),
        }
    }

    /// Stores a blob under its digest, checking the content hashes to it (a model file is
    /// copied in chunks, hashed on the way: a file changed since it was hashed is refused).
    pub(super) fn write_blob(&self, digest: &str, blob: OwnedBlob) -> Result<(), StorageError> {
        let op = op::BLOB_UPLOAD;
        self.ensure_layout(op)?;
        let dest = self.blob_path(op, digest)?;
        let target = self.digest_ref(digest);
        match blob {
            OwnedBlob::Bytes(bytes) => {
                check_digest(op, &target, digest, &bytes)?;
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

    pub(super) fn get_manifest(&self, reference: &str) -> Result<Option<Fetched>, StorageError> {
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

    pub(super) fn put_manifest(
        &self,
        reference: &str,
        media_type: &str,
        bytes: Vec<u8>,
    ) -> Result<(), StorageError> {
        let op = op::MANIFEST_PUT;
        let digest = sha256_digest(&bytes);
        let tag = if oci::sha256_hex(reference).is_some() {
            check_digest(op, &self.digest_ref(reference), reference, &bytes)?;
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

    pub(super) fn resolve(&self, digest: &str) -> Result<ResolvedArtifact, StorageError> {
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
            media_type: manifest_media_type(fetched.media_type, &fetched.bytes, &target)?,
            size: fetched.bytes.len() as u64,
        })
    }
}
