//! The OpenSSF model-signing (OMS) statement: an in-toto Statement v1 with the
//! `https://model_signing/signature/v1.0` predicate over every file of a model, as
//! `model_signing sign key` (PyPI `model-signing` 1.1, sigstore/model-transparency) writes it.
//! Pure: the model's files (relative path, sha256) in, the statement out; the same files always
//! give the same statement bytes. docs/model-signing.md describes the format.
//!
//! Written to what `model_signing` 1.1.1 does, read in its sources:
//! - `_signing/signing.py` `Payload.__init__`: one `resources` entry `{name, algorithm, digest}`
//!   per file, in manifest order; the subject is `{name: <model name>, digest: {sha256: <root>}}`
//!   where the root is SHA-256 over the concatenated raw digests of the resources, in that order;
//!   the predicate holds `serialization` and `resources`.
//! - `manifest.py` `Manifest.resource_descriptors`: the order is `sorted()` of `PurePosixPath`s,
//!   which compare component by component (`a/b` sorts before `a-b`), not as strings.
//! - `manifest.py` `_FileSerialization.serialization_parameters`: `{method: "files", hash_type:
//!   "sha256", allow_symlinks: false, ignore_paths: [...]}` (`ignore_paths` only when not empty).
//! - `hashing.py` `Config.hash` and `_cli.py` `_sign_private_key`: by default the signer skips the
//!   git paths (`.git/`, `.gitattributes`, `.github/`, `.gitignore`) and the signature file
//!   (`model.sig`), and records them in `ignore_paths` (in a set's order; here sorted). A path is
//!   skipped when it is one of them or lies under one (`serialization.should_ignore`).
//! - `_signing/signing.py` `dsse_payload_to_manifest`: what `model_signing verify` reads back —
//!   exactly one subject whose sha256 is the root digest of the resources.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::statement::{ResourceDescriptor, STATEMENT_TYPE};

/// `predicateType` of a model signature (model-signing v1.0).
pub const PREDICATE_TYPE: &str = "https://model_signing/signature/v1.0";
/// The file name `model_signing` reads and writes the signature as, and the title of the
/// signature's layer in the registry (so `oras pull` writes it under this name).
pub const SIGNATURE_FILE: &str = "model.sig";
/// What `model_signing sign key` leaves out of a directory with its default options (git paths,
/// and the signature file itself), sorted.
pub const IGNORED_PATHS: [&str; 5] = [
    ".git",
    ".gitattributes",
    ".github",
    ".gitignore",
    SIGNATURE_FILE,
];
/// `serialization.method` of a per-file manifest.
pub const METHOD_FILES: &str = "files";
/// The only hash provenant records (model layers are addressed by their sha256).
pub const SHA256: &str = "sha256";

/// One file of a model as the statement needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFileDigest {
    /// The path relative to the model directory, `/`-separated (a model layer's title).
    pub path: String,
    /// `sha256:<64 lowercase hex>`.
    pub digest: String,
}

/// The OMS statement (an in-toto Statement v1), fields in `model_signing`'s order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSignatureStatement {
    #[serde(rename = "_type")]
    pub type_: String,
    pub subject: Vec<ResourceDescriptor>,
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    pub predicate: ModelSignaturePredicate,
}

/// The model-signing v1.0 predicate. Verifiers of v1.0 ignore any other field, and so does
/// deserializing here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSignaturePredicate {
    pub serialization: Serialization,
    pub resources: Vec<Resource>,
}

/// How the model was serialized to resources, so a verifier can do it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Serialization {
    pub method: String,
    pub hash_type: String,
    pub allow_symlinks: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore_paths: Vec<String>,
    /// Only with method `shards` (never written here; read so such a statement can be named).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard_size: Option<u64>,
}

/// One file: its relative path, the hash algorithm and the lowercase hex digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    pub name: String,
    pub algorithm: String,
    pub digest: String,
}

/// Why a model's files cannot be stated, naming the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelSigningError {
    #[error(
        "model file {path:?}: not a relative path of non-empty names (no `.`, `..`, leading or doubled `/`)"
    )]
    InvalidPath { path: String },
    #[error("model file {path}: digest {digest:?} is not sha256: and 64 lowercase hex digits")]
    InvalidDigest { path: String, digest: String },
    #[error("model file {path} is listed twice")]
    Duplicate { path: String },
    #[error("model file {path} is also a directory of {child}: the files cannot be written out")]
    FileIsDirectory { path: String, child: String },
    #[error("model name {0:?} is empty or contains `/`")]
    InvalidName(String),
}

/// The statement `model_signing sign key` would write for a directory `model_name` holding
/// exactly `files`: the ignored paths left out, resources in `model_signing`'s order, the root
/// digest over them.
pub fn statement(
    model_name: &str,
    files: &[ModelFileDigest],
) -> Result<ModelSignatureStatement, ModelSigningError> {
    if model_name.is_empty() || model_name.contains('/') {
        return Err(ModelSigningError::InvalidName(model_name.to_string()));
    }
    let resources = resources(files)?;
    Ok(ModelSignatureStatement {
        type_: STATEMENT_TYPE.to_string(),
        subject: vec![ResourceDescriptor {
            name: Some(model_name.to_string()),
            digest: BTreeMap::from([(SHA256.to_string(), root_digest(&resources))]),
            ..Default::default()
        }],
        predicate_type: PREDICATE_TYPE.to_string(),
        predicate: ModelSignaturePredicate {
            serialization: Serialization {
                method: METHOD_FILES.to_string(),
                hash_type: SHA256.to_string(),
                allow_symlinks: false,
                ignore_paths: IGNORED_PATHS.iter().map(|p| p.to_string()).collect(),
                shard_size: None,
            },
            resources,
        },
    })
}

/// The resources of `files`: checked, the ignored paths left out, in `model_signing`'s order.
pub fn resources(files: &[ModelFileDigest]) -> Result<Vec<Resource>, ModelSigningError> {
    let mut resources = Vec::with_capacity(files.len());
    let mut seen = HashSet::with_capacity(files.len());
    for f in files {
        if !is_relative_path(&f.path) {
            return Err(ModelSigningError::InvalidPath {
                path: f.path.clone(),
            });
        }
        let hex = sha256_hex(&f.digest).ok_or_else(|| ModelSigningError::InvalidDigest {
            path: f.path.clone(),
            digest: f.digest.clone(),
        })?;
        if !seen.insert(f.path.as_str()) {
            return Err(ModelSigningError::Duplicate {
                path: f.path.clone(),
            });
        }
        if is_ignored(&f.path) {
            continue;
        }
        resources.push(Resource {
            name: f.path.clone(),
            algorithm: SHA256.to_string(),
            digest: hex.to_string(),
        });
    }
    resources.sort_by(|a, b| path_order(&a.name, &b.name));
    // Sorted by components, a directory's files follow it at once: `a` then `a/b`.
    if let Some(w) = resources.windows(2).find(|w| {
        w[1].name
            .strip_prefix(w[0].name.as_str())
            .is_some_and(|rest| rest.starts_with('/'))
    }) {
        return Err(ModelSigningError::FileIsDirectory {
            path: w[0].name.clone(),
            child: w[1].name.clone(),
        });
    }
    Ok(resources)
}

/// Whether `model_signing` (default options) leaves `path` out: one of [`IGNORED_PATHS`] or
/// under one of them, relative to the model directory.
pub fn is_ignored(path: &str) -> bool {
    let first = path.split('/').next().unwrap_or_default();
    IGNORED_PATHS.contains(&first)
}

/// The order of `sorted()` over `PurePosixPath`s: component by component, each compared by code
/// point (UTF-8 bytes compare the same way).
pub fn path_order(a: &str, b: &str) -> Ordering {
    a.split('/').cmp(b.split('/'))
}

/// SHA-256 over the raw bytes of every resource digest, in order, lowercase hex (what
/// `Payload.__init__` puts in the subject). Digests that are not hex count as no bytes: a
/// statement read from elsewhere is then inconsistent, never a panic.
pub fn root_digest(resources: &[Resource]) -> String {
    let mut hasher = Sha256::new();
    for r in resources {
        hasher.update(hex::decode(&r.digest).unwrap_or_default());
    }
    hex::encode(hasher.finalize())
}

impl ModelSignatureStatement {
    /// The bytes signed: compact JSON, fields in declaration order.
    pub fn to_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// The sha256 of the single subject, as `model_signing verify` requires it (exactly one).
    pub fn subject_digest(&self) -> Result<&str, String> {
        match self.subject.as_slice() {
            [one] => one
                .digest
                .get(SHA256)
                .map(String::as_str)
                .ok_or_else(|| "the subject has no sha256 digest".to_string()),
            many => Err(format!(
                "expected exactly one subject, found {}",
                many.len()
            )),
        }
    }
}

/// A relative path of normal names: what a model layer's title is, and what `model_signing`
/// records for a file found under the model directory.
fn is_relative_path(path: &str) -> bool {
    !path.is_empty()
        && !path.contains('\0')
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// The hex of `sha256:<64 lowercase hex>`.
fn sha256_hex(digest: &str) -> Option<&str> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

#[cfg(test)]
mod tests;
