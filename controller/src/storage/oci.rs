//! What provenant writes, as bytes: the OCI image-spec / distribution-spec and cosign media
//! types, annotations and tag names, and the documents (docs/registry-layout.md).
//!
//! The OCI 1.1 referrer, which provenant writes whole, is an [`oci_spec`] manifest (so is the
//! model manifest, `model.rs`, and whatever is only read: the referrers API list, referrer
//! manifests). The documents provenant reads, edits and writes back — the cosign `.att` / `.sig`
//! manifests, the referrers fallback index, a layout's `index.json` — are the small
//! [`Manifest`], [`Index`] and [`Descriptor`] below instead, because `oci_spec` 0.10 cannot write
//! them back unchanged: its annotations are a `HashMap`, serialized in a new order per process
//! (the `.att` layer has two, so its digest would change from run to run); its descriptors put
//! `annotations` before `artifactType` (every fallback-index and `index.json` entry would change
//! bytes); and it drops fields it does not know, which other tools' documents may carry.
//!
//! Every document is serialized from typed values: fixed field order, sorted maps, no
//! timestamps, so the same input gives the same digest.

use std::collections::{BTreeMap, HashMap};

use oci_spec::OciSpecError;
use oci_spec::image::{
    Descriptor as SpecDescriptor, Digest, ImageManifest as SpecManifest, ImageManifestBuilder,
    MediaType,
};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::observe::sha256_digest;

pub const OCI_MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST_MEDIA_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
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

/// The minimal OCI image config provenant gives the `.att` / `.sig` manifests it creates (the
/// config media type cosign uses). Constant on purpose: one blob per repository, uploaded once,
/// instead of a new config per append. `diff_ids` stays empty: these manifests are not runnable
/// images and cosign reads the layers from the manifest, not from the config. Bytes rather than
/// an `oci_spec` config, which would write `config` before `rootfs` and so change the digest
/// already stored in registries.
pub const COSIGN_CONFIG: &[u8] =
    br#"{"architecture":"","os":"","rootfs":{"type":"layers","diff_ids":[]},"config":{}}"#;

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

// ----- documents provenant writes whole (oci_spec) -------------------------------------------

/// The `oci_spec` descriptor of `bytes` as `media_type`.
pub fn spec_descriptor(media_type: &str, bytes: &[u8]) -> Result<SpecDescriptor, OciSpecError> {
    Ok(SpecDescriptor::new(
        media_type.into(),
        bytes.len() as u64,
        Digest::try_from(sha256_digest(bytes))?,
    ))
}

/// The OCI 1.1 referrer carrying one DSSE envelope about the subject manifest (`media_type`,
/// `digest`, `size`, as the store resolved it). Each annotation map has one entry, so the
/// `HashMap` order cannot vary.
pub fn referrer(
    subject: (&str, &str, u64),
    envelope: &[u8],
    predicate_type: &str,
) -> Result<SpecManifest, OciSpecError> {
    let (media_type, digest, size) = subject;
    let predicate = HashMap::from([(
        IN_TOTO_PREDICATE_TYPE_ANNOTATION.to_string(),
        predicate_type.to_string(),
    )]);
    let mut layer = spec_descriptor(DSSE_MEDIA_TYPE, envelope)?;
    layer.set_annotations(Some(predicate.clone()));
    ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .artifact_type(MediaType::from(IN_TOTO_ARTIFACT_TYPE))
        .config(spec_descriptor(OCI_EMPTY_MEDIA_TYPE, EMPTY_BLOB)?)
        .layers(vec![layer])
        .subject(SpecDescriptor::new(
            media_type.into(),
            size,
            Digest::try_from(digest)?,
        ))
        .annotations(predicate)
        .build()
}

/// The fallback-index entry for a referrer manifest: its descriptor with `artifactType` and the
/// manifest's annotations, as the referrers API would list it.
pub fn referrer_entry(manifest: &SpecManifest, bytes: &[u8]) -> Descriptor {
    let mut d = Descriptor::of(OCI_MANIFEST_MEDIA_TYPE, bytes);
    let artifact_type = manifest
        .artifact_type()
        .as_ref()
        .unwrap_or(manifest.config().media_type());
    d.artifact_type = Some(artifact_type.to_string());
    d.annotations = manifest
        .annotations()
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    d
}

// ----- documents read, edited and written back (lossless) ------------------------------------

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// An OCI content descriptor that keeps what it does not model.
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

/// An image manifest under a cosign tag (also reads Docker v2 schema 2, which has the same
/// shape), kept whole when provenant appends a layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
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

impl Manifest {
    /// An empty cosign `.att` / `.sig` manifest with the given config.
    pub fn cosign(config: Descriptor) -> Self {
        Manifest {
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

/// An image index: the referrers fallback index, a layout's `index.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
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

impl Index {
    pub fn empty() -> Self {
        Index {
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

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const SLSA: &str = "https://slsa.dev/provenance/v1";
    const ENVELOPE: &[u8] = br#"{"payload":1}"#;

    fn text(bytes: &[u8]) -> &str {
        std::str::from_utf8(bytes).unwrap()
    }

    #[test]
    fn digests_and_tags() {
        assert_eq!(sha256_hex(&format!("sha256:{HEX}")), Some(HEX));
        assert_eq!(sha256_hex(&format!("sha256:{}", HEX.to_uppercase())), None);
        assert_eq!(sha256_hex("sha256:abc"), None);
        assert_eq!(sha256_hex(&format!("sha512:{HEX}")), None);
        assert_eq!(attestation_tag(HEX), format!("sha256-{HEX}.att"));
        assert_eq!(signature_tag(HEX), format!("sha256-{HEX}.sig"));
        assert_eq!(referrers_tag(HEX), format!("sha256-{HEX}"));
    }

    #[test]
    fn media_types_are_the_specs() {
        for (ours, spec) in [
            (OCI_MANIFEST_MEDIA_TYPE, MediaType::ImageManifest),
            (OCI_INDEX_MEDIA_TYPE, MediaType::ImageIndex),
            (OCI_CONFIG_MEDIA_TYPE, MediaType::ImageConfig),
            (OCI_EMPTY_MEDIA_TYPE, MediaType::EmptyJSON),
        ] {
            assert_eq!(ours, spec.to_string());
        }
    }

    /// The bytes provenant has always written: a digest already in a registry must not change.
    #[test]
    fn cosign_manifests_keep_their_bytes() {
        assert_eq!(
            sha256_digest(COSIGN_CONFIG),
            "sha256:9c133b8b94b574a9ee4e1603941fd03fb13edd0949b83c9d0262c15b7345a0fe"
        );
        let config: oci_spec::image::ImageConfiguration =
            serde_json::from_slice(COSIGN_CONFIG).unwrap();
        assert!(config.rootfs().diff_ids().is_empty());

        let mut att = Manifest::cosign(Descriptor::of(OCI_CONFIG_MEDIA_TYPE, COSIGN_CONFIG));
        assert!(att.append_layer(attestation_layer(ENVELOPE, SLSA), same_attestation));
        assert_eq!(
            text(&serde_json::to_vec(&att).unwrap()),
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:9c133b8b94b574a9ee4e1603941fd03fb13edd0949b83c9d0262c15b7345a0fe","size":80},"layers":[{"mediaType":"application/vnd.dsse.envelope.v1+json","digest":"sha256:536d58551392d10c4bc2ad887f1c4f50d5ab021f6c04e62f42a417be26d5bc4c","size":13,"annotations":{"dev.cosignproject.cosign/signature":"","predicateType":"https://slsa.dev/provenance/v1"}}]}"#
        );

        let mut sig = Manifest::cosign(Descriptor::of(OCI_CONFIG_MEDIA_TYPE, COSIGN_CONFIG));
        assert!(sig.append_layer(
            signature_layer(br#"{"critical":{}}"#, "MEQCIB1=="),
            same_signature
        ));
        assert_eq!(
            text(&serde_json::to_vec(&sig).unwrap()),
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:9c133b8b94b574a9ee4e1603941fd03fb13edd0949b83c9d0262c15b7345a0fe","size":80},"layers":[{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","digest":"sha256:39a046f1e0078959a6b16296eac96ad6da16ed5e79c69d398bfe11d975e9afaf","size":15,"annotations":{"dev.cosignproject.cosign/signature":"MEQCIB1=="}}]}"#
        );
    }

    #[test]
    fn referrer_and_fallback_index_keep_their_bytes() {
        let subject = (OCI_MANIFEST_MEDIA_TYPE, &*format!("sha256:{HEX}"), 492);
        let manifest = referrer(subject, ENVELOPE, SLSA).unwrap();
        let bytes = serde_json::to_vec(&manifest).unwrap();
        assert_eq!(
            text(&bytes),
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.in-toto+json","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[{"mediaType":"application/vnd.dsse.envelope.v1+json","digest":"sha256:536d58551392d10c4bc2ad887f1c4f50d5ab021f6c04e62f42a417be26d5bc4c","size":13,"annotations":{"in-toto.io/predicate-type":"https://slsa.dev/provenance/v1"}}],"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef","size":492},"annotations":{"in-toto.io/predicate-type":"https://slsa.dev/provenance/v1"}}"#
        );
        let mut index = Index::empty();
        assert!(index.add(referrer_entry(&manifest, &bytes)));
        assert_eq!(
            text(&serde_json::to_vec(&index).unwrap()),
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:7c3b865b630bf477189d5edb6c355a3eb5e287da343c9f5f171f2821e700a552","size":748,"artifactType":"application/vnd.in-toto+json","annotations":{"in-toto.io/predicate-type":"https://slsa.dev/provenance/v1"}}]}"#
        );

        // A Docker subject keeps its media type.
        let subject = (DOCKER_MANIFEST_MEDIA_TYPE, &*format!("sha256:{HEX}"), 492);
        let bytes = serde_json::to_vec(&referrer(subject, ENVELOPE, SLSA).unwrap()).unwrap();
        assert_eq!(
            sha256_digest(&bytes),
            "sha256:fed125f3f08dfe68e5244703f196a7738140da39c6583a3594bfcdb232658c80"
        );
        assert!(referrer(("x", "sha256:abc", 1), ENVELOPE, SLSA).is_err());
    }

    #[test]
    fn appending_keeps_foreign_layers_and_unknown_fields() {
        let foreign = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:c","size":3},
            "layers":[{"mediaType":"application/vnd.dsse.envelope.v1+json","digest":"sha256:f","size":1,
              "annotations":{"predicateType":"x","dev.sigstore.cosign/bundle":"{}"},"urls":["u"]}],
            "annotations":null,"vendor":{"k":1},"aaa":2}"#;
        let mut m: Manifest = serde_json::from_slice(foreign).unwrap();
        assert!(m.append_layer(attestation_layer(b"mine", "p"), same_attestation));
        assert!(!m.append_layer(attestation_layer(b"mine", "other"), same_attestation));
        assert_eq!(
            text(&serde_json::to_vec(&m).unwrap()),
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:c","size":3},"layers":[{"mediaType":"application/vnd.dsse.envelope.v1+json","digest":"sha256:f","size":1,"annotations":{"dev.sigstore.cosign/bundle":"{}","predicateType":"x"},"urls":["u"]},{"mediaType":"application/vnd.dsse.envelope.v1+json","digest":"sha256:3fd30542fe3f61b14bd4a4b2dc0b6fb30fa6f63ebce52dd1778aaa8c4dc02cff","size":4,"annotations":{"dev.cosignproject.cosign/signature":"","predicateType":"p"}}],"aaa":2,"vendor":{"k":1}}"#
        );
    }

    #[test]
    fn signature_dedup_needs_payload_and_signature() {
        let mut m = Manifest::cosign(Descriptor::of(OCI_CONFIG_MEDIA_TYPE, b"c"));
        assert!(m.append_layer(signature_layer(b"payload", "sig1"), same_signature));
        assert!(!m.append_layer(signature_layer(b"payload", "sig1"), same_signature));
        assert!(m.append_layer(signature_layer(b"payload", "sig2"), same_signature));
        assert_eq!(m.layers.len(), 2);
    }

    #[test]
    fn index_entries_are_unique_and_foreign_entries_kept() {
        let foreign = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:a","size":5,"annotations":{"z":"1","a":"2"},"artifactType":"application/spdx+json","platform":{"os":"linux"}}],"zzz":true,"annotations":{"b":"c"}}"#;
        let mut index: Index = serde_json::from_slice(foreign).unwrap();
        let entry = Descriptor::of(OCI_MANIFEST_MEDIA_TYPE, b"x").with_annotation("k", "v");
        assert!(index.add(entry.clone()));
        assert!(!index.add(entry));
        assert_eq!(
            text(&serde_json::to_vec(&index).unwrap()),
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:a","size":5,"artifactType":"application/spdx+json","annotations":{"a":"2","z":"1"},"platform":{"os":"linux"}},{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881","size":1,"annotations":{"k":"v"}}],"annotations":{"b":"c"},"zzz":true}"#
        );
        assert_eq!(
            text(&serde_json::to_vec(&Index::empty()).unwrap()),
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#
        );
    }
}
