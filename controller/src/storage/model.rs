//! Model packaging: a model directory as an OCI 1.1 artifact (docs/registry-layout.md "Model
//! artifacts"), and pushing it over a [`Transport`]. The same files always give the same
//! manifest bytes, hence the same digest: that digest is the model's identity in the provenance.
//!
//! The format is the test bed's (`provenant_testbed::registry::Registry::push_model`): an OCI image
//! manifest with `artifactType` [`MODEL_ARTIFACT_TYPE`], the empty config, one
//! [`MODEL_FILE_MEDIA_TYPE`] layer per file titled with its relative path; no annotations, no
//! timestamps; compact JSON with keys sorted.

use std::collections::{HashMap, HashSet};
use std::path::{Component, Path, PathBuf};

use oci_spec::image::{Descriptor, Digest, ImageManifestBuilder, MediaType};
use serde_json::Value;

use super::error::StorageError;
use super::oci::{self, EMPTY_BLOB, OCI_EMPTY_MEDIA_TYPE, OCI_MANIFEST_MEDIA_TYPE};
use super::op;
use super::reference::is_valid_tag;
use super::store::ResolvedArtifact;
use super::transport::{Blob, Transport};
use crate::hashing::FileDigest;
use crate::observe::sha256_digest;

/// `artifactType` of a model artifact.
pub const MODEL_ARTIFACT_TYPE: &str = "application/vnd.provenant.model.v1";
/// Media type of each file layer: model files are stored as they are (no tar, no compression),
/// so a layer digest is the file's own sha256 and any OCI client fetches the file as a blob.
pub const MODEL_FILE_MEDIA_TYPE: &str = "application/octet-stream";
/// The layer annotation carrying the file's relative path (`/`-separated).
pub const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";

/// One file of a model and its layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFile {
    /// Where the content is read from.
    pub path: PathBuf,
    /// The relative path, `/`-separated (the layer's title).
    pub title: String,
    /// `sha256:<hex>` as hashed.
    pub digest: String,
    /// Size in bytes as hashed.
    pub size: u64,
}

/// A model directory packaged as an OCI artifact: its layers (sorted by relative path) and the
/// manifest bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelArtifact {
    files: Vec<ModelFile>,
    manifest: Vec<u8>,
    digest: String,
}

impl ModelArtifact {
    /// Packages the files of `dir` hashed as `files` (paths relative to `dir`). Checks that each
    /// is a regular file of the size hashed; the content is checked against the digest when it
    /// is stored.
    pub fn new(dir: &Path, files: &[FileDigest]) -> Result<Self, StorageError> {
        let target = dir.display().to_string();
        let bad = |message: String| StorageError::permanent(op::INPUT, &target, message);
        if files.is_empty() {
            return Err(bad("no files to package".into()));
        }
        let mut layers = Vec::with_capacity(files.len());
        for f in files {
            let title = title(&f.path).ok_or_else(|| {
                bad(format!(
                    "{}: not a relative path of UTF-8 names inside the directory",
                    f.path.display()
                ))
            })?;
            if oci::sha256_hex(&f.digest).is_none() {
                return Err(bad(format!(
                    "{title}: digest {:?} is not sha256:<hex>",
                    f.digest
                )));
            }
            let path = dir.join(&f.path);
            let meta =
                std::fs::metadata(&path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
            if !meta.is_file() {
                return Err(bad(format!("{title}: not a regular file")));
            }
            if meta.len() != f.size {
                return Err(bad(format!(
                    "{title}: {} bytes on disk, {} when hashed (changed since?)",
                    meta.len(),
                    f.size
                )));
            }
            layers.push(ModelFile {
                path,
                title,
                digest: f.digest.clone(),
                size: f.size,
            });
        }
        // Sorted by the title's bytes: any implementation can reproduce the order.
        layers.sort_by(|a, b| a.title.cmp(&b.title));
        if let Some(w) = layers.windows(2).find(|w| w[0].title == w[1].title) {
            return Err(bad(format!("{} is listed twice", w[0].title)));
        }
        let manifest = manifest(&layers)
            .map_err(|e| bad(format!("building the manifest: {e}")))
            .and_then(|m| {
                serde_json::to_value(&m)
                    .and_then(|v| canonical_json(&v))
                    .map_err(|e| bad(format!("serializing the manifest: {e}")))
            })?;
        Ok(ModelArtifact {
            digest: sha256_digest(&manifest),
            files: layers,
            manifest,
        })
    }

    /// The files, in layer order.
    pub fn files(&self) -> &[ModelFile] {
        &self.files
    }

    /// The manifest bytes.
    pub fn manifest(&self) -> &[u8] {
        &self.manifest
    }

    /// `sha256:` of the manifest.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The manifest's descriptor as a store reports it.
    pub fn resolved(&self) -> ResolvedArtifact {
        ResolvedArtifact {
            digest: self.digest.clone(),
            media_type: OCI_MANIFEST_MEDIA_TYPE.to_string(),
            size: self.manifest.len() as u64,
        }
    }

    /// Stores it: the empty config, every file blob not yet there (streamed), then the manifest
    /// under `tag` (or by digest only).
    pub(crate) async fn push(
        &self,
        t: &dyn Transport,
        tag: Option<&str>,
    ) -> Result<ResolvedArtifact, StorageError> {
        if let Some(tag) = tag
            && !is_valid_tag(tag)
        {
            return Err(StorageError::permanent(
                op::INPUT,
                t.tag_ref(tag),
                "invalid tag (want [A-Za-z0-9_][A-Za-z0-9._-]{0,127})",
            ));
        }
        let mut ensured = HashSet::new();
        let empty = sha256_digest(EMPTY_BLOB);
        ensure_blob(t, &empty, Blob::Bytes(EMPTY_BLOB), &mut ensured).await?;
        for file in &self.files {
            let blob = Blob::File {
                path: &file.path,
                size: file.size,
            };
            ensure_blob(t, &file.digest, blob, &mut ensured).await?;
        }
        let resolved = self.resolved();
        t.put_manifest(
            tag.unwrap_or(&resolved.digest),
            &resolved.media_type,
            &self.manifest,
        )
        .await?;
        tracing::debug!(reference = %t.digest_ref(&resolved.digest), tag, "model pushed");
        Ok(resolved)
    }
}

/// The model manifest: the empty config, one titled layer per file (key order does not matter:
/// the bytes are [`canonical_json`]).
fn manifest(files: &[ModelFile]) -> Result<oci_spec::image::ImageManifest, oci_spec::OciSpecError> {
    let layers = files
        .iter()
        .map(|f| {
            let mut layer = Descriptor::new(
                MediaType::from(MODEL_FILE_MEDIA_TYPE),
                f.size,
                Digest::try_from(f.digest.as_str())?,
            );
            layer.set_annotations(Some(HashMap::from([(
                TITLE_ANNOTATION.to_string(),
                f.title.clone(),
            )])));
            Ok(layer)
        })
        .collect::<Result<Vec<_>, oci_spec::OciSpecError>>()?;
    ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .artifact_type(MediaType::from(MODEL_ARTIFACT_TYPE))
        .config(oci::spec_descriptor(OCI_EMPTY_MEDIA_TYPE, EMPTY_BLOB)?)
        .layers(layers)
        .build()
}

/// Makes sure blob `digest` exists: checked, and stored only when missing. `ensured` remembers
/// blobs checked during this push (two files with the same content are one blob).
async fn ensure_blob(
    t: &dyn Transport,
    digest: &str,
    blob: Blob<'_>,
    ensured: &mut HashSet<String>,
) -> Result<(), StorageError> {
    if ensured.contains(digest) {
        return Ok(());
    }
    if !t.blob_exists(digest).await? {
        t.put_blob(digest, blob).await?;
    }
    ensured.insert(digest.to_string());
    Ok(())
}

/// `a/b/c` from a relative path of normal components; `None` for anything else (absolute,
/// `..`, non-UTF-8, empty).
fn title(path: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(name) => parts.push(name.to_str()?),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Compact JSON with the keys of every object sorted by their bytes: the same document always
/// gives the same bytes, whatever order the serializer keeps maps in.
pub fn canonical_json(value: &Value) -> Result<Vec<u8>, serde_json::Error> {
    fn write(out: &mut Vec<u8>, value: &Value) -> Result<(), serde_json::Error> {
        match value {
            Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                out.push(b'{');
                for (i, (k, v)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    serde_json::to_writer(&mut *out, k)?;
                    out.push(b':');
                    write(out, v)?;
                }
                out.push(b'}');
            }
            Value::Array(items) => {
                out.push(b'[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write(out, v)?;
                }
                out.push(b']');
            }
            scalar => serde_json::to_writer(&mut *out, scalar)?,
        }
        Ok(())
    }
    let mut out = Vec::new();
    write(&mut out, value)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest_of(bytes: &[u8]) -> String {
        sha256_digest(bytes)
    }

    fn fixture() -> (tempfile::TempDir, Vec<FileDigest>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sub")).unwrap();
        let files = [("z.bin", &b"zz"[..]), ("sub/b.json", b"{}"), ("a-b", b"")];
        let mut digests = Vec::new();
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).unwrap();
            digests.push(FileDigest {
                path: PathBuf::from(name),
                digest: digest_of(content),
                size: content.len() as u64,
            });
        }
        (dir, digests)
    }

    #[test]
    fn manifest_is_sorted_canonical_and_reproducible() {
        let (dir, mut files) = fixture();
        let a = ModelArtifact::new(dir.path(), &files).unwrap();
        files.reverse();
        let b = ModelArtifact::new(dir.path(), &files).unwrap();
        assert_eq!(a, b);
        let titles: Vec<_> = a.files().iter().map(|f| f.title.as_str()).collect();
        assert_eq!(titles, ["a-b", "sub/b.json", "z.bin"]);
        // The bytes provenant has always written: the model digest must not change.
        assert_eq!(
            std::str::from_utf8(a.manifest()).unwrap(),
            r#"{"artifactType":"application/vnd.provenant.model.v1","config":{"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","mediaType":"application/vnd.oci.empty.v1+json","size":2},"layers":[{"annotations":{"org.opencontainers.image.title":"a-b"},"digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","mediaType":"application/octet-stream","size":0},{"annotations":{"org.opencontainers.image.title":"sub/b.json"},"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","mediaType":"application/octet-stream","size":2},{"annotations":{"org.opencontainers.image.title":"z.bin"},"digest":"sha256:4a60bf7d4bc1e485744cf7e8d0860524752fca1ce42331be7c439fd23043f151","mediaType":"application/octet-stream","size":2}],"mediaType":"application/vnd.oci.image.manifest.v1+json","schemaVersion":2}"#
        );
        assert_eq!(a.digest(), digest_of(a.manifest()));
        assert_eq!(a.resolved().size, a.manifest().len() as u64);
    }

    #[test]
    fn bad_inputs_are_refused() {
        let (dir, files) = fixture();
        let with = |f: FileDigest| {
            let mut all = files.clone();
            all.push(f);
            ModelArtifact::new(dir.path(), &all)
                .unwrap_err()
                .to_string()
        };
        let ok = files[0].clone();
        for path in ["../x", "/etc/passwd", ""] {
            let e = with(FileDigest {
                path: PathBuf::from(path),
                ..ok.clone()
            });
            assert!(e.contains("not a relative path"), "{e}");
        }
        assert!(with(ok.clone()).contains("listed twice"));
        let e = with(FileDigest {
            path: "./z.bin".into(),
            ..ok.clone()
        });
        assert!(e.contains("z.bin is listed twice"), "{e}");
        let e = with(FileDigest {
            path: "missing".into(),
            ..ok.clone()
        });
        assert!(e.contains("missing"), "{e}");
        let e = with(FileDigest {
            path: "sub".into(),
            ..ok.clone()
        });
        assert!(e.contains("not a regular file"), "{e}");
        let e = ModelArtifact::new(
            dir.path(),
            &[FileDigest {
                size: 5,
                ..files[0].clone()
            }],
        )
        .unwrap_err();
        assert!(e.to_string().contains("changed since"), "{e}");
        let e = ModelArtifact::new(
            dir.path(),
            &[FileDigest {
                digest: "md5:x".into(),
                ..files[0].clone()
            }],
        )
        .unwrap_err();
        assert!(e.to_string().contains("not sha256"), "{e}");
        assert!(ModelArtifact::new(dir.path(), &[]).is_err());
    }

    #[test]
    fn canonical_json_sorts_every_level() {
        let v = serde_json::json!({"b": [{"y": 1, "x": "é\"\n"}], "a": null});
        let bytes = canonical_json(&v).unwrap();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"a":null,"b":[{"x":"é\"\n","y":1}]}"#
        );
    }
}
