//! An OCI image layout someone else wrote, read as `provenant verify oci:<dir>` reads it: the
//! store resolves a tag (`index.json`, the manifest), finds the attestations (the `.att`
//! manifest, the referrers fallback index, the DSSE envelopes) and `verify` checks them. The
//! pieces are the fuzzer's; blobs are stored under their real digests so the reads get past the
//! digest checks, and an envelope may be signed with the verifying key so the statement checks
//! are reached too.
#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use provenant::signing::{CosignKey, sign_envelope};
use provenant::storage::{ArtifactStore, LayoutStore, Subject};
use sha2::{Digest as _, Sha256};

#[derive(Arbitrary, Debug)]
struct Input {
    /// `index.json` as given; when `None`, one that lists the pieces below under their tags.
    index: Option<Vec<u8>>,
    /// The model manifest (tagged `model`).
    model: Vec<u8>,
    /// Under the model's `.att` tag.
    att: Att,
    /// Under the referrers fallback tag `sha256-<hex>`.
    referrers: Option<Vec<u8>>,
}

#[derive(Arbitrary, Debug)]
enum Att {
    None,
    /// The `.att` manifest's bytes.
    Manifest(Vec<u8>),
    /// A cosign `.att` manifest with this envelope as its DSSE layer.
    Envelope(Vec<u8>),
    /// As `Envelope`, an envelope over this payload signed with the verifying key.
    Signed(Vec<u8>),
}

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";

static KEY: LazyLock<CosignKey> = LazyLock::new(|| CosignKey::ephemeral().expect("a key"));
static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime")
});
/// One directory for every input: the store's per-directory state is kept for the process.
static DIR: LazyLock<(tempfile::TempDir, PathBuf)> = LazyLock::new(|| {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let layout = dir.path().join("layout");
    (dir, layout)
});

fn hex_of(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn put(root: &std::path::Path, bytes: &[u8]) -> String {
    let hex = hex_of(bytes);
    std::fs::write(root.join("blobs/sha256").join(&hex), bytes).expect("write a blob");
    format!("sha256:{hex}")
}

fn entry(media_type: &str, digest: &str, size: usize, tag: &str) -> serde_json::Value {
    serde_json::json!({
        "mediaType": media_type, "digest": digest, "size": size,
        "annotations": {"org.opencontainers.image.ref.name": tag},
    })
}

fuzz_target!(|input: Input| {
    let root = &DIR.1;
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(root.join("blobs/sha256")).expect("create the layout");
    std::fs::write(
        root.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("write oci-layout");

    let model_digest = put(root, &input.model);
    let model_hex = &model_digest[7..];
    let mut entries = vec![entry(MANIFEST, &model_digest, input.model.len(), "model")];
    let att = match input.att {
        Att::None => None,
        Att::Manifest(bytes) => Some(bytes),
        Att::Envelope(_) | Att::Signed(_) => {
            let envelope = match input.att {
                Att::Signed(payload) => {
                    sign_envelope(&*KEY, "application/vnd.in-toto+json", &payload)
                        .expect("sign")
                        .to_json()
                        .expect("envelope JSON")
                }
                Att::Envelope(bytes) => bytes,
                _ => unreachable!(),
            };
            let digest = put(root, &envelope);
            let config = put(root, b"{}");
            Some(
                serde_json::to_vec(&serde_json::json!({
                    "schemaVersion": 2, "mediaType": MANIFEST,
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
                    "layers": [{
                        "mediaType": "application/vnd.dsse.envelope.v1+json", "digest": digest,
                        "size": envelope.len(),
                        "annotations": {"predicateType": "https://slsa.dev/provenance/v1"},
                    }],
                }))
                .expect("JSON"),
            )
        }
    };
    if let Some(att) = att {
        let digest = put(root, &att);
        entries.push(entry(
            MANIFEST,
            &digest,
            att.len(),
            &format!("sha256-{model_hex}.att"),
        ));
    }
    if let Some(referrers) = input.referrers {
        let digest = put(root, &referrers);
        entries.push(entry(
            INDEX,
            &digest,
            referrers.len(),
            &format!("sha256-{model_hex}"),
        ));
    }
    let index = input.index.unwrap_or_else(|| {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": INDEX, "manifests": entries,
        }))
        .expect("JSON")
    });
    std::fs::write(root.join("index.json"), &index).expect("write index.json");

    let store = LayoutStore::new(root.clone());
    RUNTIME.block_on(async {
        let Ok(resolved) = store.resolve_reference("model").await else {
            return;
        };
        let subject = Subject::new("fuzz/model", resolved.digest.clone());
        let Ok(found) = store.attestations(&subject).await else {
            return;
        };
        let found: Vec<(String, Vec<u8>)> = found
            .into_iter()
            .map(|f| (f.reference, f.envelope))
            .collect();
        let verdict = provenant::verify::verify(
            "fuzz/model",
            &resolved.digest,
            &found,
            KEY.public_key(),
            &provenant::verify::Policy::default(),
            jiff::Timestamp::now(),
        );
        let _ = provenant::verify::render(&verdict);
    });
});
