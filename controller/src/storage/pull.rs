//! Reading a model out of a store into a directory (`provenant verify --pull DIR`, called only
//! once the model verified): the manifest by its verified digest, then every layer streamed to a
//! file named by its title, each checked against its digest and size as it is written.
//!
//! The manifest is signed over (its digest is the statement's subject) but written by whoever
//! pushed the model — in a cluster, the training workload. So its titles are input: a title
//! becomes a path only when it is relative, made of normal names (no `..`, no `.`, nothing
//! absolute, no empty component) and shared with no other layer, and files are created new
//! (`O_CREAT|O_EXCL`, which also refuses to follow a link). Everything is written into a
//! staging directory inside DIR, then moved into DIR only when every file checked: a failure
//! leaves DIR as it was (empty), and a serving container never reads a half-written model.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::error::StorageError;
use super::model::TITLE_ANNOTATION;
use super::oci;
use super::store::{ArtifactStore, Subject};
use super::transport::{Transport, check_digest, manifest_media_type};
use crate::storage::op;

/// A manifest read by digest: its bytes (checked to hash to the digest) and media type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestBytes {
    pub bytes: Vec<u8>,
    pub media_type: String,
}

/// The manifest `digest` over a transport, checked against its digest.
pub(crate) async fn manifest(
    t: &dyn Transport,
    digest: &str,
) -> Result<ManifestBytes, StorageError> {
    let target = t.digest_ref(digest);
    let fetched = t.get_manifest(digest).await?.ok_or_else(|| {
        StorageError::new(
            op::MANIFEST_GET,
            &target,
            super::ErrorKind::NotFound,
            "manifest unknown",
        )
    })?;
    check_digest(op::MANIFEST_GET, &target, digest, &fetched.bytes)?;
    Ok(ManifestBytes {
        media_type: manifest_media_type(fetched.media_type, &fetched.bytes, &target)?,
        bytes: fetched.bytes,
    })
}

/// Why a model was not pulled.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The model's content cannot be written as files (a hostile title, a layer that does not
    /// match its digest): the model is refused, nothing was written.
    #[error("{0}")]
    Refused(String),
    /// DIR is not usable (not empty, not a directory, not writable).
    #[error("--pull {dir}: {why}")]
    Destination { dir: PathBuf, why: String },
    /// The store could not be read.
    #[error("{0}")]
    Storage(#[from] StorageError),
}

/// One file written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledFile {
    /// Relative path (the layer's title).
    pub title: String,
    pub digest: String,
    pub size: u64,
}

/// A layer to write: where, and what it must hash to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Layer {
    title: String,
    digest: String,
    size: u64,
}

/// The prefix of the staging directory a pull writes into, inside DIR.
const STAGING_PREFIX: &str = ".provenant-pull-";

/// Checks that `dir` can receive a model: a directory (created when absent). A staging
/// directory left by a pull that was killed is removed (it is provenant's own, by name).
pub fn prepare_destination(dir: &Path) -> Result<(), PullError> {
    let fail = |why: String| PullError::Destination {
        dir: dir.to_path_buf(),
        why,
    };
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => return Err(fail("not a directory".into())),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return std::fs::create_dir_all(dir)
                .map_err(|e| fail(format!("cannot create it: {e}")));
        }
        Err(e) => return Err(fail(e.to_string())),
    }
    for entry in std::fs::read_dir(dir).map_err(|e| fail(e.to_string()))? {
        let entry = entry.map_err(|e| fail(e.to_string()))?;
        let name = entry.file_name();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir && name.to_string_lossy().starts_with(STAGING_PREFIX) {
            std::fs::remove_dir_all(entry.path())
                .map_err(|e| fail(format!("removing a stale {}: {e}", entry.path().display())))?;
        }
    }
    Ok(())
}

/// What a pull did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    pub files: Vec<PulledFile>,
    /// DIR already held exactly these files (an init container run again over its volume):
    /// re-hashed, nothing written.
    pub already_there: bool,
}

/// DIR is not empty: it must hold exactly the model's files (each re-hashed), nothing else.
fn check_existing(dir: &Path, layers: &[Layer]) -> Result<Pulled, PullError> {
    let fail = |why: String| PullError::Destination {
        dir: dir.to_path_buf(),
        why: format!(
            "not empty, and not exactly this model ({why}); refusing to mix the model with other files or to overwrite any"
        ),
    };
    let found = crate::hashing::hash_tree(dir).map_err(|e| fail(e.to_string()))?;
    let found: BTreeSet<(String, String, u64)> = found
        .into_iter()
        .map(|f| (f.path.display().to_string(), f.digest, f.size))
        .collect();
    let want: BTreeSet<(String, String, u64)> = layers
        .iter()
        .map(|l| (l.title.clone(), l.digest.clone(), l.size))
        .collect();
    if let Some((path, ..)) = found.difference(&want).next() {
        return Err(fail(format!("{path} is not one of its files as attested")));
    }
    if let Some((path, ..)) = want.difference(&found).next() {
        return Err(fail(format!("{path} is missing")));
    }
    Ok(Pulled {
        files: layers
            .iter()
            .map(|l| PulledFile {
                title: l.title.clone(),
                digest: l.digest.clone(),
                size: l.size,
            })
            .collect(),
        already_there: true,
    })
}

/// The layers of a model manifest, each with a title that is a safe relative path.
fn layers(manifest: &[u8]) -> Result<Vec<Layer>, PullError> {
    let refuse = |why: String| PullError::Refused(why);
    let manifest: Value = serde_json::from_slice(manifest)
        .map_err(|e| refuse(format!("the model manifest is not JSON: {e}")))?;
    let Some(descriptors) = manifest["layers"].as_array() else {
        return Err(refuse(
            "the model manifest has no layers (an image index or not a model?)".into(),
        ));
    };
    let mut out = Vec::with_capacity(descriptors.len());
    let mut paths = BTreeSet::new();
    for (i, d) in descriptors.iter().enumerate() {
        let digest = d["digest"].as_str().unwrap_or_default();
        if oci::sha256_hex(digest).is_none() {
            return Err(refuse(format!(
                "layer {i} has an invalid digest {digest:?}: not sha256: and 64 lowercase hex digits"
            )));
        }
        let Some(size) = d["size"].as_u64() else {
            return Err(refuse(format!("layer {i} ({digest}) has no size")));
        };
        let Some(title) = d["annotations"][TITLE_ANNOTATION].as_str() else {
            return Err(refuse(format!(
                "layer {i} ({digest}) has no {TITLE_ANNOTATION} annotation: not a model file"
            )));
        };
        check_title(title).map_err(|why| {
            refuse(format!(
                "model file {title:?} ({digest}) {why}; refusing to write it"
            ))
        })?;
        out.push(Layer {
            title: title.to_string(),
            digest: digest.to_string(),
            size,
        });
        paths.insert(title.to_string());
    }
    if paths.len() != out.len() {
        return Err(refuse("the model manifest lists a file twice".into()));
    }
    // `a` and `a/b` cannot both be files.
    for title in &paths {
        let mut prefix = String::new();
        for part in title.split('/') {
            if !prefix.is_empty() && paths.contains(&prefix) {
                return Err(refuse(format!(
                    "model file {title:?} is inside {prefix:?}, which is a file too"
                )));
            }
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
        }
    }
    Ok(out)
}

/// Why `title` is not a relative path of normal names, if it is not.
fn check_title(title: &str) -> Result<(), &'static str> {
    if title.is_empty() {
        return Err("has an empty title");
    }
    if title.starts_with('/') {
        return Err("is an absolute path");
    }
    if title.contains('\0') {
        return Err("has a NUL byte in its title");
    }
    for part in title.split('/') {
        match part {
            "" => return Err("has an empty path component"),
            "." | ".." => return Err("has a `.` or `..` component (it would leave the directory)"),
            _ => {}
        }
    }
    Ok(())
}

/// Writes the model whose manifest is `manifest` (read by digest from `store`) into `dir`,
/// which [`prepare_destination`] accepted: an empty directory, or one already holding exactly
/// these files (checked, left as they are). Nothing is left in `dir` unless every file checked.
pub async fn pull_model(
    store: &dyn ArtifactStore,
    subject: &Subject,
    manifest: &[u8],
    dir: &Path,
) -> Result<Pulled, PullError> {
    let layers = layers(manifest)?;
    let destination = |why: String| PullError::Destination {
        dir: dir.to_path_buf(),
        why,
    };
    let occupied = std::fs::read_dir(dir)
        .map_err(|e| destination(e.to_string()))?
        .next()
        .is_some();
    if occupied {
        return check_existing(dir, &layers);
    }
    let staging = dir.join(format!("{STAGING_PREFIX}{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir(&staging)
        .map_err(|e| destination(format!("cannot create {}: {e}", staging.display())))?;
    let result = write_all(store, subject, &layers, &staging, dir).await;
    // Whatever happened, the staging directory goes (empty after a successful move).
    let _ = std::fs::remove_dir_all(&staging);
    Ok(Pulled {
        files: result?,
        already_there: false,
    })
}

async fn write_all(
    store: &dyn ArtifactStore,
    subject: &Subject,
    layers: &[Layer],
    staging: &Path,
    dir: &Path,
) -> Result<Vec<PulledFile>, PullError> {
    let destination = |why: String| PullError::Destination {
        dir: dir.to_path_buf(),
        why,
    };
    let mut pulled = Vec::with_capacity(layers.len());
    for layer in layers {
        let path = staging.join(&layer.title);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| destination(format!("{}: {e}", parent.display())))?;
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| destination(format!("{}: {e}", path.display())))?;
        let (digest, size) = store
            .copy_blob(subject, &layer.digest, layer.size, file)
            .await?;
        if digest != layer.digest || size != layer.size {
            return Err(PullError::Refused(format!(
                "model file {} was served as {digest} ({size} bytes), the attested manifest says {} ({} bytes)",
                layer.title, layer.digest, layer.size
            )));
        }
        pulled.push(PulledFile {
            title: layer.title.clone(),
            digest,
            size,
        });
    }
    // Every file checked: move the top-level entries into DIR, never over anything.
    let tops: BTreeSet<&str> = layers
        .iter()
        .map(|l| l.title.split('/').next().unwrap_or_default())
        .collect();
    for top in tops {
        let target = dir.join(top);
        if std::fs::symlink_metadata(&target).is_ok() {
            return Err(destination(format!(
                "{} appeared while pulling; refusing to overwrite it",
                target.display()
            )));
        }
        std::fs::rename(staging.join(top), &target)
            .map_err(|e| destination(format!("{}: {e}", target.display())))?;
    }
    Ok(pulled)
}

/// Copies the layout blob file `path` (opened without following a link, a regular file) into
/// `file`, at most `limit` bytes; returns the digest and size written.
pub(crate) fn copy_file_blob(
    path: &Path,
    limit: u64,
    mut file: std::fs::File,
) -> std::io::Result<(String, u64)> {
    use std::io::Read as _;
    let source = super::oci_layout::untrusted::open_regular(path)?;
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    // One byte past the limit tells a longer file from one of exactly `limit` bytes.
    let mut reader = source.take(limit.saturating_add(1));
    let mut buffer = vec![0u8; 1 << 20];
    let mut written = 0u64;
    loop {
        let n = reader.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        std::io::Write::write_all(&mut file, &buffer[..n])?;
        sha2::Digest::update(&mut hasher, &buffer[..n]);
        written += n as u64;
    }
    file.sync_all()?;
    Ok((
        format!("sha256:{}", hex::encode(sha2::Digest::finalize(hasher))),
        written,
    ))
}

#[cfg(test)]
mod tests;
