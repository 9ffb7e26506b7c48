//! Another writer racing ours on a registry's read-modify-write tags, as `cosign attest`,
//! `cosign sign` or a second controller replica would: it read the tag before our write landed
//! and writes it after, with its own entry added to what it read, so ours is gone. A real
//! registry cannot produce this interleaving on demand; the registry proxy does it
//! ([`RegistryProxy::race_tag_writes`](crate::registry_proxy::RegistryProxy::race_tag_writes)).
//!
//! Its entries are marked with [`RACING_WRITER`] (the predicate type of its attestations and
//! referrers, the signature annotation of its `.sig` layers), so a test can tell them apart.

use anyhow::{Context, Result};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::registry::{
    Descriptor, FetchedManifest, OCI_EMPTY_BLOB, OCI_INDEX_MEDIA_TYPE, OCI_MANIFEST_MEDIA_TYPE,
    Registry,
};

/// The racing writer's predicate type (and the prefix of its `.sig` signature annotations).
pub const RACING_WRITER: &str = "https://provenant.dev/test/racing-writer";

const DSSE: &str = "application/vnd.dsse.envelope.v1+json";
const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const IMAGE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const IN_TOTO: &str = "application/vnd.in-toto+json";
const COSIGN_SIGNATURE: &str = "dev.cosignproject.cosign/signature";
const PREDICATE_TYPE: &str = "predicateType";
const IN_TOTO_PREDICATE_TYPE: &str = "in-toto.io/predicate-type";
/// cosign's config for a `.att` / `.sig` manifest it creates (other bytes than provenant's).
const COSIGN_CONFIG: &[u8] =
    br#"{"architecture":"","created":"0001-01-01T00:00:00Z","os":"","rootfs":{"type":"layers","diff_ids":[]},"config":{}}"#;

/// The tags written by read-modify-write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagKind {
    /// `sha256-<hex>.att`: cosign attestations.
    Attestation,
    /// `sha256-<hex>.sig`: cosign signatures.
    Signature,
    /// `sha256-<hex>`: the OCI 1.1 referrers fallback index.
    ReferrersIndex,
}

impl TagKind {
    /// The kind of tag `reference` is, if it is one of them.
    pub fn of(reference: &str) -> Option<TagKind> {
        let hex = reference.strip_prefix("sha256-")?;
        let (hex, kind) = match hex.split_once('.') {
            Some((hex, "att")) => (hex, TagKind::Attestation),
            Some((hex, "sig")) => (hex, TagKind::Signature),
            Some(_) => return None,
            None => (hex, TagKind::ReferrersIndex),
        };
        let is_hex = hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
        is_hex.then_some(kind)
    }
}

/// Writes tag `reference` of `repo` as the racing writer would after reading `read` (the tag as
/// it was before our write; `None`: absent): what it read plus its own entry number `n`.
pub async fn write_after(
    registry: &Registry,
    repo: &str,
    reference: &str,
    read: Option<FetchedManifest>,
    n: usize,
) -> Result<()> {
    let kind = TagKind::of(reference).context("not a read-modify-write tag")?;
    let statement = json!({
        "_type": "https://in-toto.io/Statement/v1",
        "predicateType": RACING_WRITER,
        "predicate": {"n": n},
    });
    let envelope = serde_json::to_vec(&json!({
        "payloadType": IN_TOTO,
        "payload": STANDARD.encode(serde_json::to_vec(&statement)?),
        "signatures": [],
    }))?;
    let (mut doc, media_type) = match read {
        Some(read) => (read.json()?, read.media_type),
        None if kind == TagKind::ReferrersIndex => (
            json!({"schemaVersion": 2, "mediaType": OCI_INDEX_MEDIA_TYPE, "manifests": []}),
            OCI_INDEX_MEDIA_TYPE.to_string(),
        ),
        None => {
            registry.push_blob(repo, COSIGN_CONFIG).await?;
            (
                json!({
                    "schemaVersion": 2,
                    "mediaType": OCI_MANIFEST_MEDIA_TYPE,
                    "config": Descriptor::of(IMAGE_CONFIG, COSIGN_CONFIG),
                    "layers": [],
                }),
                OCI_MANIFEST_MEDIA_TYPE.to_string(),
            )
        }
    };
    let (list, entry) = match kind {
        TagKind::Attestation => {
            registry.push_blob(repo, &envelope).await?;
            let layer = Descriptor::of(DSSE, &envelope)
                .with_annotation(COSIGN_SIGNATURE, "")
                .with_annotation(PREDICATE_TYPE, RACING_WRITER);
            ("layers", layer)
        }
        TagKind::Signature => {
            let payload = serde_json::to_vec(&json!({
                "critical": {"type": "cosign container image signature"},
                "optional": {"writer": RACING_WRITER, "n": n},
            }))?;
            registry.push_blob(repo, &payload).await?;
            let layer = Descriptor::of(SIMPLE_SIGNING, &payload)
                .with_annotation(COSIGN_SIGNATURE, &format!("{RACING_WRITER}/{n}"));
            ("layers", layer)
        }
        TagKind::ReferrersIndex => {
            let subject = reference.replacen("sha256-", "sha256:", 1);
            let model = registry
                .get_manifest(repo, &subject)
                .await?
                .with_context(|| format!("the subject {subject} of {reference}"))?;
            registry.push_blob(repo, &envelope).await?;
            registry.push_blob(repo, OCI_EMPTY_BLOB).await?;
            let referrer = serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST_MEDIA_TYPE,
                "artifactType": IN_TOTO,
                "config": Descriptor::empty(),
                "layers": [Descriptor::of(DSSE, &envelope)
                    .with_annotation(IN_TOTO_PREDICATE_TYPE, RACING_WRITER)],
                "subject": Descriptor::of(&model.media_type, &model.bytes),
                "annotations": {IN_TOTO_PREDICATE_TYPE: RACING_WRITER},
            }))?;
            let entry = Descriptor::of(OCI_MANIFEST_MEDIA_TYPE, &referrer)
                .with_artifact_type(IN_TOTO)
                .with_annotation(IN_TOTO_PREDICATE_TYPE, RACING_WRITER);
            registry
                .push_manifest(repo, &entry.digest, OCI_MANIFEST_MEDIA_TYPE, &referrer)
                .await?;
            ("manifests", entry)
        }
    };
    doc[list]
        .as_array_mut()
        .with_context(|| format!("{repo}:{reference} has no {list} array"))?
        .push(serde_json::to_value(entry)?);
    registry
        .push_manifest(repo, reference, &media_type, &serde_json::to_vec(&doc)?)
        .await?;
    Ok(())
}

/// Every entry of a `.att` / `.sig` manifest (`layers`) or an index (`manifests`) that the racing
/// writer put there.
pub fn racing_entries(doc: &Value) -> usize {
    let entries = doc["layers"]
        .as_array()
        .or_else(|| doc["manifests"].as_array())
        .cloned()
        .unwrap_or_default();
    entries
        .iter()
        .filter(|e| {
            let a = &e["annotations"];
            a[PREDICATE_TYPE] == RACING_WRITER
                || a[IN_TOTO_PREDICATE_TYPE] == RACING_WRITER
                || a[COSIGN_SIGNATURE]
                    .as_str()
                    .is_some_and(|s| s.starts_with(RACING_WRITER))
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_read_modify_write_tags_are_raced() {
        let hex = "a".repeat(64);
        assert_eq!(
            TagKind::of(&format!("sha256-{hex}.att")),
            Some(TagKind::Attestation)
        );
        assert_eq!(
            TagKind::of(&format!("sha256-{hex}.sig")),
            Some(TagKind::Signature)
        );
        assert_eq!(
            TagKind::of(&format!("sha256-{hex}")),
            Some(TagKind::ReferrersIndex)
        );
        for other in [
            "v1".to_string(),
            format!("sha256:{hex}"),
            format!("sha256-{hex}.sbom"),
            "sha256-abc.att".to_string(),
        ] {
            assert_eq!(TagKind::of(&other), None, "{other}");
        }
    }
}
