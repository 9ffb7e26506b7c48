//! OCI image-spec / distribution-spec and cosign wire types, with the specs' field names, and the
//! pure functions that build and update the manifests provenant writes (docs/registry-layout.md).
//!
//! Manifests are always produced by serializing these structs: the bytes are deterministic (fixed
//! field order, sorted maps, no timestamps), so the same input gives the same digest. Unknown
//! fields of manifests written by other tools are kept (`extra`) when provenant appends to them.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

pub const OCI_MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST_MEDIA_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST_MEDIA_TYPE: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
/// Config media type of cosign's `.att` / `.sig` manifests.
pub const OCI_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// OCI 1.1 empty descriptor media type; its content is [`EMPTY_BLOB`].
pub const OCI_EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
pub const EMPTY_BLOB: &[u8] = b"{}";
pub const DSSE_MEDIA_TYPE: &str = "application/vnd.dsse.envelope.v1+json";
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// `artifactType` of provenant's OCI 1.1 referrers.
pub const IN_TOTO_ARTIFACT_TYPE: &str = "application/vnd.in-toto+json";
/// cosign's signature annotation (empty on DSSE layers: the signature is inside the envelope).
pub const COSIGN_SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// cosign's predicate type annotation on `.att` layers.
pub const PREDICATE_TYPE_ANNOTATION: &str = "predicateType";
/// Predicate type annotation on the referrer manifest and its layer (the name BuildKit uses for
/// in-toto layers), so `oras discover` / the referrers list can filter without fetching blobs.
pub const IN_TOTO_PREDICATE_TYPE_ANNOTATION: &str = "in-toto.io/predicate-type";

/// Media types asked for when fetching manifests.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The hex part of a well-formed `sha256:<64 lowercase hex>` digest.
pub fn sha256_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then_some(hex)
}

/// cosign's attestation tag for a subject (`sha256-<hex>.att`).
pub fn attestation_tag(hex: &str) -> String {
    format!("sha256-{hex}.att")
}

/// cosign's signature tag for a subject (`sha256-<hex>.sig`).
pub fn signature_tag(hex: &str) -> String {
    format!("sha256-{hex}.sig")
}

/// The OCI 1.1 referrers tag-schema fallback tag (`sha256-<hex>`).
pub fn referrers_tag(hex: &str) -> String {
    format!("sha256-{hex}")
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// An OCI content descriptor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
    /// Fields this code does not model (`urls`, `platform`, `data`, ...), kept as read.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Descriptor {
    /// The descriptor of `bytes` as `media_type`.
    pub fn of(media_type: &str, bytes: &[u8]) -> Self {
        Descriptor::new(media_type, sha256_digest(bytes), bytes.len() as u64)
    }

    pub fn new(media_type: &str, digest: String, size: u64) -> Self {
        Descriptor {
            media_type: media_type.to_string(),
            digest,
            size,
            artifact_type: None,
            annotations: BTreeMap::new(),
            extra: Map::new(),
        }
    }

    pub fn with_annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.to_string(), value.to_string());
        self
    }
}

/// An OCI image manifest (also reads Docker v2 schema 2, which has the same shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    #[serde(default, deserialize_with = "null_as_default")]
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An OCI image index; the referrers API response and the tag-schema fallback are indexes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `rootfs` of an image config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<String>,
}

/// The minimal OCI image config provenant gives the `.att` / `.sig` manifests it creates (the
/// config media type cosign uses). Constant on purpose: one blob per repository, uploaded once,
/// instead of a new config per append. `diff_ids` stays empty: these manifests are not runnable
/// images and cosign reads the layers from the manifest, not from the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub architecture: String,
    pub os: String,
    pub rootfs: RootFs,
    pub config: Map<String, Value>,
}

impl ImageConfig {
    pub fn cosign_empty() -> Self {
        ImageConfig {
            architecture: String::new(),
            os: String::new(),
            rootfs: RootFs {
                kind: "layers".to_string(),
                diff_ids: Vec::new(),
            },
            config: Map::new(),
        }
    }
}

/// The distribution-spec error body: `{"errors":[{"code","message","detail"}]}`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ErrorResponse {
    #[serde(default, deserialize_with = "null_as_default")]
    pub errors: Vec<RegistryError>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RegistryError {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
}

impl ErrorResponse {
    /// The error codes in a registry error body (empty when it is not one).
    pub fn codes(body: &[u8]) -> Vec<String> {
        serde_json::from_slice::<ErrorResponse>(body)
            .map(|r| r.errors.into_iter().map(|e| e.code).collect())
            .unwrap_or_default()
    }

    /// `CODE: message; CODE: message`, or `None` when the body is not a registry error.
    pub fn summary(body: &[u8]) -> Option<String> {
        let parsed: ErrorResponse = serde_json::from_slice(body).ok()?;
        if parsed.errors.is_empty() {
            return None;
        }
        Some(
            parsed
                .errors
                .iter()
                .map(|e| match (e.code.is_empty(), e.message.is_empty()) {
                    (false, false) => format!("{}: {}", e.code, e.message),
                    (false, true) => e.code.clone(),
                    _ => e.message.clone(),
                })
                .collect::<Vec<_>>()
                .join("; "),
        )
    }
}

/// The serialized bytes of a wire type (deterministic for the structs of this module).
pub fn to_bytes<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(value)
}

impl ImageManifest {
    /// An empty cosign `.att` / `.sig` manifest with the given config.
    pub fn cosign(config: Descriptor) -> Self {
        ImageManifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST_MEDIA_TYPE.to_string()),
            artifact_type: None,
            config,
            layers: Vec::new(),
            subject: None,
            annotations: BTreeMap::new(),
            extra: Map::new(),
        }
    }

    /// The OCI 1.1 referrer carrying one DSSE envelope about `subject`.
    pub fn referrer(subject: Descriptor, envelope: &[u8], predicate_type: &str) -> Self {
        ImageManifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST_MEDIA_TYPE.to_string()),
            artifact_type: Some(IN_TOTO_ARTIFACT_TYPE.to_string()),
            config: Descriptor::of(OCI_EMPTY_MEDIA_TYPE, EMPTY_BLOB),
            layers: vec![
                Descriptor::of(DSSE_MEDIA_TYPE, envelope)
                    .with_annotation(IN_TOTO_PREDICATE_TYPE_ANNOTATION, predicate_type),
            ],
            subject: Some(subject),
            annotations: BTreeMap::from([(
                IN_TOTO_PREDICATE_TYPE_ANNOTATION.to_string(),
                predicate_type.to_string(),
            )]),
            extra: Map::new(),
        }
    }

    /// Adds `layer` unless `same` says an existing layer already is it; returns whether it was
    /// added. Existing layers are kept in order.
    pub fn append_layer(
        &mut self,
        layer: Descriptor,
        same: impl Fn(&Descriptor, &Descriptor) -> bool,
    ) -> bool {
        if self.layers.iter().any(|l| same(l, &layer)) {
            return false;
        }
        self.layers.push(layer);
        true
    }
}

/// The `.att` layer for a DSSE envelope (cosign's annotations).
pub fn attestation_layer(envelope: &[u8], predicate_type: &str) -> Descriptor {
    Descriptor::of(DSSE_MEDIA_TYPE, envelope)
        .with_annotation(COSIGN_SIGNATURE_ANNOTATION, "")
        .with_annotation(PREDICATE_TYPE_ANNOTATION, predicate_type)
}

/// Two `.att` layers are the same attestation when their blobs are.
pub fn same_attestation(a: &Descriptor, b: &Descriptor) -> bool {
    a.digest == b.digest
}

/// The `.sig` layer for a simple-signing payload and its base64 signature.
pub fn signature_layer(payload: &[u8], signature: &str) -> Descriptor {
    Descriptor::of(SIMPLE_SIGNING_MEDIA_TYPE, payload)
        .with_annotation(COSIGN_SIGNATURE_ANNOTATION, signature)
}

/// Two `.sig` layers are the same signature when payload and signature both match (one payload
/// may carry several signatures, e.g. by different keys).
pub fn same_signature(a: &Descriptor, b: &Descriptor) -> bool {
    a.digest == b.digest
        && a.annotations.get(COSIGN_SIGNATURE_ANNOTATION)
            == b.annotations.get(COSIGN_SIGNATURE_ANNOTATION)
}

impl ImageIndex {
    pub fn empty() -> Self {
        ImageIndex {
            schema_version: 2,
            media_type: Some(OCI_INDEX_MEDIA_TYPE.to_string()),
            artifact_type: None,
            manifests: Vec::new(),
            subject: None,
            annotations: BTreeMap::new(),
            extra: Map::new(),
        }
    }

    pub fn contains(&self, digest: &str) -> bool {
        self.manifests.iter().any(|m| m.digest == digest)
    }

    /// Adds `entry` unless an entry with its digest is listed; returns whether it was added.
    pub fn add(&mut self, entry: Descriptor) -> bool {
        if self.contains(&entry.digest) {
            return false;
        }
        self.manifests.push(entry);
        true
    }
}

/// The fallback-index entry for a referrer manifest: its descriptor with `artifactType` and the
/// manifest's annotations, as the referrers API would list it.
pub fn referrer_entry(manifest: &ImageManifest, bytes: &[u8]) -> Descriptor {
    let mut d = Descriptor::of(OCI_MANIFEST_MEDIA_TYPE, bytes);
    d.artifact_type = manifest
        .artifact_type
        .clone()
        .or_else(|| Some(manifest.config.media_type.clone()));
    d.annotations = manifest.annotations.clone();
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn digests_and_tags() {
        assert_eq!(
            sha256_digest(b"{}"),
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(sha256_hex(&format!("sha256:{HEX}")), Some(HEX));
        assert_eq!(sha256_hex(&format!("sha256:{}", HEX.to_uppercase())), None);
        assert_eq!(sha256_hex("sha256:abc"), None);
        assert_eq!(sha256_hex(&format!("sha512:{HEX}")), None);
        assert_eq!(attestation_tag(HEX), format!("sha256-{HEX}.att"));
        assert_eq!(signature_tag(HEX), format!("sha256-{HEX}.sig"));
        assert_eq!(referrers_tag(HEX), format!("sha256-{HEX}"));
    }

    #[test]
    fn referrer_manifest_is_deterministic_and_shaped() {
        let subject = Descriptor::new(OCI_MANIFEST_MEDIA_TYPE, format!("sha256:{HEX}"), 42);
        let a = to_bytes(&ImageManifest::referrer(subject.clone(), b"env", "p")).unwrap();
        let b = to_bytes(&ImageManifest::referrer(subject, b"env", "p")).unwrap();
        assert_eq!(a, b);
        let v: Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(v["schemaVersion"], 2);
        assert_eq!(v["mediaType"], OCI_MANIFEST_MEDIA_TYPE);
        assert_eq!(v["artifactType"], IN_TOTO_ARTIFACT_TYPE);
        assert_eq!(v["config"]["mediaType"], OCI_EMPTY_MEDIA_TYPE);
        assert_eq!(v["config"]["size"], 2);
        assert_eq!(v["layers"][0]["mediaType"], DSSE_MEDIA_TYPE);
        assert_eq!(v["layers"][0]["digest"], sha256_digest(b"env"));
        assert_eq!(v["subject"]["digest"], format!("sha256:{HEX}"));
        assert_eq!(v["subject"]["size"], 42);
        assert!(v["subject"].get("artifactType").is_none());
    }

    #[test]
    fn appending_keeps_foreign_layers_and_unknown_fields() {
        let foreign = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:c","size":3},
            "layers":[{"mediaType":"application/vnd.dsse.envelope.v1+json","digest":"sha256:f","size":1,
              "annotations":{"predicateType":"x","dev.sigstore.cosign/bundle":"{}"},"urls":["u"]}],
            "annotations":null,"vendor":{"k":1}}"#;
        let mut m: ImageManifest = serde_json::from_slice(foreign).unwrap();
        assert!(m.append_layer(attestation_layer(b"mine", "p"), same_attestation));
        assert!(!m.append_layer(attestation_layer(b"mine", "other"), same_attestation));
        let v: Value = serde_json::from_slice(&to_bytes(&m).unwrap()).unwrap();
        assert_eq!(v["vendor"]["k"], 1);
        assert_eq!(v["layers"].as_array().unwrap().len(), 2);
        assert_eq!(v["layers"][0]["urls"][0], "u");
        assert_eq!(
            v["layers"][0]["annotations"]["dev.sigstore.cosign/bundle"],
            "{}"
        );
        assert_eq!(
            v["layers"][1]["annotations"][COSIGN_SIGNATURE_ANNOTATION],
            ""
        );
        assert_eq!(
            v["layers"][1]["annotations"][PREDICATE_TYPE_ANNOTATION],
            "p"
        );
    }

    #[test]
    fn signature_dedup_needs_payload_and_signature() {
        let mut m = ImageManifest::cosign(Descriptor::of(OCI_CONFIG_MEDIA_TYPE, b"c"));
        assert!(m.append_layer(signature_layer(b"payload", "sig1"), same_signature));
        assert!(!m.append_layer(signature_layer(b"payload", "sig1"), same_signature));
        assert!(m.append_layer(signature_layer(b"payload", "sig2"), same_signature));
        assert_eq!(m.layers.len(), 2);
    }

    #[test]
    fn index_entries_are_unique_and_carry_artifact_type() {
        let subject = Descriptor::new(OCI_MANIFEST_MEDIA_TYPE, format!("sha256:{HEX}"), 1);
        let referrer = ImageManifest::referrer(subject, b"env", "p");
        let bytes = to_bytes(&referrer).unwrap();
        let entry = referrer_entry(&referrer, &bytes);
        assert_eq!(entry.artifact_type.as_deref(), Some(IN_TOTO_ARTIFACT_TYPE));
        assert_eq!(entry.annotations[IN_TOTO_PREDICATE_TYPE_ANNOTATION], "p");
        let mut index = ImageIndex::empty();
        assert!(index.add(Descriptor::of(OCI_MANIFEST_MEDIA_TYPE, b"other")));
        assert!(index.add(entry.clone()));
        assert!(!index.add(entry));
        assert_eq!(index.manifests.len(), 2);
        let v: Value = serde_json::from_slice(&to_bytes(&index).unwrap()).unwrap();
        assert_eq!(v["mediaType"], OCI_INDEX_MEDIA_TYPE);
        assert_eq!(v["manifests"][1]["artifactType"], IN_TOTO_ARTIFACT_TYPE);
    }

    #[test]
    fn registry_error_summary() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}}]}"#;
        assert_eq!(
            ErrorResponse::summary(body).as_deref(),
            Some("MANIFEST_UNKNOWN: manifest unknown")
        );
        assert_eq!(ErrorResponse::summary(b"<html>"), None);
        assert_eq!(ErrorResponse::summary(b"{}"), None);
    }

    #[test]
    fn cosign_config_is_constant() {
        let a = to_bytes(&ImageConfig::cosign_empty()).unwrap();
        assert_eq!(
            std::str::from_utf8(&a).unwrap(),
            r#"{"architecture":"","os":"","rootfs":{"type":"layers","diff_ids":[]},"config":{}}"#
        );
    }
}
