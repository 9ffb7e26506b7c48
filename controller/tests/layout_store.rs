//! `LayoutStore` (OCI image layout directory), model packaging and the read side of `verify`, in a
//! layout and against a real distribution registry (the test bed's fixture). A layout written here
//! is checked from the outside: by walking the files, and with skopeo.

use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result, anyhow, bail, ensure};
use provenant::hashing::FileDigest;
use provenant::signing::{self, CosignKey};
use provenant::storage::oci::{
    COSIGN_SIGNATURE_ANNOTATION, DSSE_MEDIA_TYPE, IN_TOTO_ARTIFACT_TYPE, OCI_CONFIG_MEDIA_TYPE,
    OCI_INDEX_MEDIA_TYPE, OCI_MANIFEST_MEDIA_TYPE, PREDICATE_TYPE_ANNOTATION,
};
use provenant::storage::{
    ArtifactStore, Attestation, AttestationStore, ErrorKind, LayoutStore, RegistryOptions,
    RegistryStore, ResolvedArtifact, SimpleSignature, Subject, Via, open_store, parse_reference,
};
use provenant_testbed::registry::{Descriptor, Registry, sha256_digest};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

const SLSA: &str = "https://slsa.dev/provenance/v1";
const REF_NAME: &str = "org.opencontainers.image.ref.name";

// ----- helpers -------------------------------------------------------------------------------

/// A model directory and its file digests (computed here, streamed, as `provenant attest` does).
fn model_dir(files: &[(&str, &[u8])]) -> Result<(tempfile::TempDir, Vec<FileDigest>)> {
    let dir = tempfile::tempdir()?;
    for (name, content) in files {
        let path = dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, content)?;
    }
    let digests = digests(dir.path(), files.iter().map(|(n, _)| *n))?;
    Ok((dir, digests))
}

fn digests<'a>(root: &Path, names: impl Iterator<Item = &'a str>) -> Result<Vec<FileDigest>> {
    names
        .map(|name| {
            let (digest, size) = hash_file(&root.join(name))?;
            Ok(FileDigest {
                path: PathBuf::from(name),
                digest,
                size,
            })
        })
        .collect()
}

fn hash_file(path: &Path) -> Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((format!("sha256:{}", hex::encode(hasher.finalize())), size))
}

const MODEL_FILES: [(&str, &[u8]); 3] = [
    ("weights/model.safetensors", b"\x00weights"),
    ("config.json", br#"{"layers":2}"#),
    ("tokenizer.json", b"{}"),
];

fn layout_subject(dir: &Path, digest: &str) -> Subject {
    Subject::new(format!("oci:{}", dir.display()), digest)
}

/// The signing key of this test process (in memory, no password).
fn key() -> Result<&'static CosignKey> {
    static KEY: OnceLock<Result<CosignKey, String>> = OnceLock::new();
    KEY.get_or_init(|| CosignKey::ephemeral().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| anyhow!("{e}"))
}

/// A really signed attestation (DSSE envelope over a small statement, numbered `n`, and a cosign
/// simple signature over the subject), as `provenant attest` produces it.
fn attestation(subject: &Subject, n: u32) -> Result<Attestation> {
    let key = key()?;
    let statement = serde_json::to_vec(&json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": subject.repository, "digest": {"sha256": hex(&subject.digest)}}],
        "predicateType": SLSA,
        "predicate": {"n": n},
    }))?;
    let envelope = signing::sign_envelope(key, signing::IN_TOTO_PAYLOAD_TYPE, &statement)?;
    let (payload, signature) =
        signing::simple_signing::sign_simple(key, &subject.repository, &subject.digest)?;
    Ok(Attestation {
        subject: subject.clone(),
        predicate_type: SLSA.to_string(),
        envelope: envelope.to_json()?,
        signature: Some(SimpleSignature { payload, signature }),
    })
}

fn hex(digest: &str) -> &str {
    digest.trim_start_matches("sha256:")
}

fn registry_store(registry: &Registry) -> RegistryStore {
    RegistryStore::new(RegistryOptions {
        insecure_registries: vec![registry.host().to_string()],
        ..RegistryOptions::default()
    })
}

fn array<'a>(v: &'a Value, key: &str) -> Result<&'a Vec<Value>> {
    v[key]
        .as_array()
        .with_context(|| format!("no {key} array in {v}"))
}

fn digests_of(v: &Value, key: &str) -> Result<Vec<String>> {
    Ok(array(v, key)?
        .iter()
        .map(|d| d["digest"].as_str().unwrap_or_default().to_string())
        .collect())
}

/// Writes straight into a layout or a registry, the way another tool would.
enum Raw<'a> {
    Layout(&'a Path),
    Registry {
        registry: &'a Registry,
        repo: &'a str,
    },
}

impl Raw<'_> {
    async fn blob(&self, bytes: &[u8]) -> Result<String> {
        match self {
            Raw::Layout(dir) => {
                let digest = sha256_digest(bytes);
                std::fs::write(dir.join("blobs/sha256").join(hex(&digest)), bytes)?;
                Ok(digest)
            }
            Raw::Registry { registry, repo } => registry.push_blob(repo, bytes).await,
        }
    }

    /// A manifest under a tag or its digest.
    async fn manifest(&self, reference: &str, media_type: &str, doc: &Value) -> Result<String> {
        let bytes = serde_json::to_vec(doc)?;
        match self {
            Raw::Layout(dir) => {
                let digest = self.blob(&bytes).await?;
                let mut index = read_json(&dir.join("index.json"))?;
                let mut entry =
                    json!({"mediaType": media_type, "digest": digest, "size": bytes.len()});
                if !reference.starts_with("sha256:") {
                    entry["annotations"] = json!({ REF_NAME: reference });
                }
                index["manifests"]
                    .as_array_mut()
                    .context("index.json manifests")?
                    .push(entry);
                std::fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
                Ok(digest)
            }
            Raw::Registry { registry, repo } => {
                registry
                    .push_manifest(repo, reference, media_type, &bytes)
                    .await
            }
        }
    }

    /// A manifest by tag or digest, as JSON.
    async fn get(&self, reference: &str) -> Result<Value> {
        match self {
            Raw::Layout(dir) => {
                let digest = if reference.starts_with("sha256:") {
                    reference.to_string()
                } else {
                    layout_tag(dir, reference)?.context(format!("no tag {reference}"))?
                };
                read_json(&dir.join("blobs/sha256").join(hex(&digest)))
            }
            Raw::Registry { registry, repo } => registry
                .get_manifest(repo, reference)
                .await?
                .ok_or_else(|| anyhow!("{repo}:{reference} does not exist"))?
                .json(),
        }
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not JSON", path.display()))
}

/// The digest `tag` names in the layout's index.json.
fn layout_tag(dir: &Path, tag: &str) -> Result<Option<String>> {
    let index = read_json(&dir.join("index.json"))?;
    let tagged: Vec<_> = array(&index, "manifests")?
        .iter()
        .filter(|d| d["annotations"][REF_NAME] == tag)
        .collect();
    ensure!(tagged.len() <= 1, "tag {tag} listed {} times", tagged.len());
    Ok(tagged
        .first()
        .and_then(|d| d["digest"].as_str())
        .map(str::to_string))
}

/// Checks a layout from the outside: `oci-layout`, a well-formed `index.json`, every blob named by
/// its digest, every descriptor reachable from `index.json` present with its size and digest, no
/// temporary files left. Returns the tags.
fn validate_layout(dir: &Path) -> Result<Vec<String>> {
    ensure!(
        read_json(&dir.join("oci-layout"))? == json!({"imageLayoutVersion": "1.0.0"}),
        "oci-layout"
    );
    let blobs = dir.join("blobs/sha256");
    for entry in std::fs::read_dir(&blobs)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        let (digest, _) = hash_file(&entry.path())?;
        ensure!(
            digest == format!("sha256:{name}"),
            "blob {name} hashes to {digest}"
        );
    }
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().to_string();
        ensure!(
            ["oci-layout", "index.json", "blobs"].contains(&name.as_str()),
            "unexpected file {name} in the layout"
        );
    }
    let index = read_json(&dir.join("index.json"))?;
    ensure!(index["schemaVersion"] == 2, "index.json schemaVersion");
    ensure!(
        index["mediaType"] == OCI_INDEX_MEDIA_TYPE,
        "index.json mediaType"
    );
    let mut tags = Vec::new();
    let mut pending: Vec<Value> = array(&index, "manifests")?.clone();
    for d in &pending {
        if let Some(tag) = d["annotations"][REF_NAME].as_str() {
            tags.push(tag.to_string());
        }
    }
    while let Some(d) = pending.pop() {
        let digest = d["digest"].as_str().context("descriptor digest")?;
        let path = blobs.join(hex(digest));
        let size = std::fs::metadata(&path)
            .with_context(|| format!("blob {digest} referenced but missing"))?
            .len();
        ensure!(Some(size) == d["size"].as_u64(), "size of {digest}");
        match d["mediaType"].as_str() {
            Some(OCI_MANIFEST_MEDIA_TYPE) => {
                let m = read_json(&path)?;
                ensure!(m["schemaVersion"] == 2, "{digest} schemaVersion");
                pending.push(m["config"].clone());
                pending.extend(array(&m, "layers")?.iter().cloned());
                if !m["subject"].is_null() {
                    pending.push(m["subject"].clone());
                }
            }
            Some(OCI_INDEX_MEDIA_TYPE) => {
                pending.extend(array(&read_json(&path)?, "manifests")?.iter().cloned());
            }
            _ => {}
        }
    }
    tags.sort();
    Ok(tags)
}

/// Peak RSS of this process in KiB.
fn vm_hwm_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc/self/status")
}

async fn skopeo(args: &[&str]) -> Result<Vec<u8>> {
    let out = match tokio::process::Command::new("skopeo")
        .args(args)
        .output()
        .await
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("skopeo not found: install skopeo (.ci/install-registry.sh)")
        }
        Err(e) => return Err(e.into()),
    };
    ensure!(
        out.status.success(),
        "skopeo {}: {}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out.stdout)
}

// ----- tests ---------------------------------------------------------------------------------

#[tokio::test]
async fn attach_into_a_fresh_layout_writes_a_valid_layout() -> Result<()> {
    let (model, files) = model_dir(&MODEL_FILES)?;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("out/layout");
    let store = LayoutStore::new(&dir);
    let pushed = store
        .push_model("ignored", Some("v1"), model.path(), &files)
        .await?;
    let subject = layout_subject(&dir, &pushed.digest);
    let att = attestation(&subject, 1)?;
    let attached = store.attach(&att).await?;
    let h = hex(&pushed.digest);

    // References name the layout the way skopeo and oras do.
    let name = format!("oci:{}", dir.display());
    let mut expected: Vec<_> = [".att", ".sig"]
        .iter()
        .map(|suffix| format!("{name}:sha256-{h}{suffix}"))
        .collect();
    expected.push(format!("{name}@{}", attached.referrer_digest));
    assert_eq!(attached.references, expected);
    // Four tags: the model, `.att`, `.sig` and the fallback index.
    let tags = validate_layout(&dir)?;
    assert_eq!(tags.len(), 4, "{tags:?}");
    for suffix in ["", ".att", ".sig"] {
        assert!(tags.contains(&format!("sha256-{h}{suffix}")), "{tags:?}");
    }
    assert!(tags.contains(&"v1".to_string()));

    let raw = Raw::Layout(&dir);
    let model_manifest = raw.get("v1").await?;
    assert_eq!(
        model_manifest["artifactType"],
        "application/vnd.provenant.model.v1"
    );
    let titles: Vec<_> = array(&model_manifest, "layers")?
        .iter()
        .map(|l| l["annotations"]["org.opencontainers.image.title"].clone())
        .collect();
    assert_eq!(
        titles,
        ["config.json", "tokenizer.json", "weights/model.safetensors"]
    );

    // The `.att`, `.sig` and index contents are the registry store's (compared byte for byte in
    // layout_and_registry_hold_identical_attestations); here: the envelope is stored as given.
    assert_eq!(
        std::fs::read(
            dir.join("blobs/sha256")
                .join(hex(&sha256_digest(&att.envelope)))
        )?,
        att.envelope
    );
    let referrer = raw.get(&attached.referrer_digest).await?;
    assert_eq!(referrer["artifactType"], IN_TOTO_ARTIFACT_TYPE);
    assert_eq!(referrer["subject"]["digest"], pushed.digest.as_str());
    assert_eq!(referrer["subject"]["size"], pushed.size);
    let index = raw.get(&format!("sha256-{h}")).await?;
    assert_eq!(
        index["manifests"][0]["digest"],
        attached.referrer_digest.as_str()
    );
    assert_eq!(index["manifests"][0]["artifactType"], IN_TOTO_ARTIFACT_TYPE);
    // The referrer is also listed untagged in index.json (reachable for layout tools).
    let top = read_json(&dir.join("index.json"))?;
    assert!(digests_of(&top, "manifests")?.contains(&attached.referrer_digest));

    assert_eq!(store.resolve(&subject).await?, pushed);
    Ok(())
}

/// A registry fixture with [`MODEL_FILES`] pushed by `RegistryStore::push_model` to `repo:v1`.
struct Pushed {
    registry: Registry,
    store: RegistryStore,
    model: tempfile::TempDir,
    files: Vec<FileDigest>,
    repository: String,
    resolved: ResolvedArtifact,
}

async fn pushed_to_registry(repo: &str) -> Result<Pushed> {
    let registry = Registry::start().await?;
    let (model, files) = model_dir(&MODEL_FILES)?;
    let store = registry_store(&registry);
    let repository = format!("{}/{repo}", registry.host());
    let resolved = store
        .push_model(&repository, Some("v1"), model.path(), &files)
        .await?;
    Ok(Pushed {
        registry,
        store,
        model,
        files,
        repository,
        resolved,
    })
}

#[tokio::test]
async fn push_model_matches_the_fixture_and_is_reproducible() -> Result<()> {
    let p = pushed_to_registry("models/ours").await?;
    let (registry, store, model, files) = (&p.registry, &p.store, &p.model, &p.files);
    let (repository, ours) = (&p.repository, p.resolved.clone());
    // The fixture's format, with the files in sorted order.
    let mut sorted = MODEL_FILES.to_vec();
    sorted.sort();
    let theirs = registry.push_model("models/theirs", "v1", &sorted).await?;
    assert_eq!(ours.digest, theirs.digest);
    assert_eq!(ours.size, theirs.manifest.len() as u64);
    assert_eq!(ours.media_type, OCI_MANIFEST_MEDIA_TYPE);
    // Stored as computed.
    assert_eq!(
        registry.resolve("models/ours", "v1").await?,
        Some(ours.digest.clone())
    );
    for (name, content) in MODEL_FILES {
        assert!(
            registry
                .blob_exists("models/ours", &sha256_digest(content))
                .await?,
            "{name}"
        );
    }
    // Again, untagged, and from a layout: the same digest.
    assert_eq!(
        store
            .push_model(repository, None, model.path(), files)
            .await?,
        ours
    );
    let tmp = tempfile::tempdir()?;
    let layout = LayoutStore::new(tmp.path());
    assert_eq!(
        layout
            .push_model("", Some("v1"), model.path(), files)
            .await?,
        ours
    );
    assert_eq!(
        layout
            .push_model("", Some("v1"), model.path(), files)
            .await?,
        ours
    );
    assert_eq!(layout_tag(tmp.path(), "v1")?, Some(ours.digest.clone()));
    // A file changed since it was hashed is refused, not stored under the old digest.
    std::fs::write(model.path().join("config.json"), br#"{"layers":3}"#)?;
    let other = tempfile::tempdir()?;
    let err = LayoutStore::new(other.path())
        .push_model("", Some("v1"), model.path(), files)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DigestMismatch, "{err}");
    validate_layout(other.path())?;
    Ok(())
}

#[tokio::test]
async fn layout_and_registry_hold_identical_attestations() -> Result<()> {
    let p = pushed_to_registry("models/same").await?;
    let (registry, store, model, files) = (&p.registry, &p.store, &p.model, &p.files);
    let (repository, pushed) = (&p.repository, &p.resolved);
    let tmp = tempfile::tempdir()?;
    let layout = LayoutStore::new(tmp.path());
    layout
        .push_model("", Some("v1"), model.path(), files)
        .await?;
    // One attestation (same envelope, same signature) attached to both.
    let att = attestation(&Subject::new(repository, &pushed.digest), 1)?;
    let in_registry = store.attach(&att).await?;
    let in_layout = layout.attach(&att).await?;
    assert_eq!(in_registry.referrer_digest, in_layout.referrer_digest);
    let h = hex(&pushed.digest);
    let raw = Raw::Layout(tmp.path());
    for tag in [
        format!("sha256-{h}.att"),
        format!("sha256-{h}.sig"),
        format!("sha256-{h}"),
    ] {
        let from_registry = registry
            .get_manifest("models/same", &tag)
            .await?
            .context("tag in registry")?;
        let digest = layout_tag(tmp.path(), &tag)?.context("tag in layout")?;
        assert_eq!(from_registry.digest, digest, "{tag}");
        assert_eq!(from_registry.json()?, raw.get(&tag).await?, "{tag}");
    }
    Ok(())
}

/// Another tool's `.att` layer, its in-toto referrer and an SBOM referrer are there first; we
/// attach twice; everything is kept once, and the read side finds all three envelopes. Returns
/// what we attached.
async fn foreign_entries_kept_and_all_found(
    store: &dyn ArtifactStore,
    raw: Raw<'_>,
    subject: &Subject,
    model_manifest: &[u8],
) -> Result<Attestation> {
    let h = hex(&subject.digest);
    let att_tag = format!("sha256-{h}.att");
    let index_tag = format!("sha256-{h}");

    let cosign_env =
        br#"{"payloadType":"application/vnd.in-toto+json","payload":"e30=","signatures":[]}"#;
    let config =
        br#"{"architecture":"","os":"","rootfs":{"type":"layers","diff_ids":["x"]},"config":{}}"#;
    raw.blob(cosign_env).await?;
    raw.blob(config).await?;
    let foreign_att = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST_MEDIA_TYPE,
        "config": Descriptor::of(OCI_CONFIG_MEDIA_TYPE, config),
        "layers": [Descriptor::of(DSSE_MEDIA_TYPE, cosign_env)
            .with_annotation(COSIGN_SIGNATURE_ANNOTATION, "")
            .with_annotation(PREDICATE_TYPE_ANNOTATION, "https://spdx.dev/Document")],
    });
    raw.manifest(&att_tag, OCI_MANIFEST_MEDIA_TYPE, &foreign_att)
        .await?;

    let vsa_env =
        br#"{"payloadType":"application/vnd.in-toto+json","payload":"e30K","signatures":[]}"#;
    let sbom = br#"{"spdxVersion":"SPDX-2.3"}"#;
    raw.blob(vsa_env).await?;
    raw.blob(sbom).await?;
    raw.blob(b"{}").await?;
    let referrer = |artifact_type: &str, layer: Descriptor| {
        json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST_MEDIA_TYPE,
            "artifactType": artifact_type,
            "config": Descriptor::empty(),
            "layers": [layer],
            "subject": Descriptor::of(OCI_MANIFEST_MEDIA_TYPE, model_manifest),
        })
    };
    let vsa = referrer(
        IN_TOTO_ARTIFACT_TYPE,
        Descriptor::of(DSSE_MEDIA_TYPE, vsa_env).with_annotation(
            "in-toto.io/predicate-type",
            "https://slsa.dev/verification_summary/v1",
        ),
    );
    let sbom_referrer = referrer(
        "application/spdx+json",
        Descriptor::of("application/spdx+json", sbom),
    );
    let vsa_digest = sha256_digest(&serde_json::to_vec(&vsa)?);
    let sbom_digest = sha256_digest(&serde_json::to_vec(&sbom_referrer)?);
    raw.manifest(&vsa_digest, OCI_MANIFEST_MEDIA_TYPE, &vsa)
        .await?;
    raw.manifest(&sbom_digest, OCI_MANIFEST_MEDIA_TYPE, &sbom_referrer)
        .await?;
    let entry = |doc: &Value, artifact_type: &str| -> Result<Descriptor> {
        Ok(
            Descriptor::of(OCI_MANIFEST_MEDIA_TYPE, &serde_json::to_vec(doc)?)
                .with_artifact_type(artifact_type),
        )
    };
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX_MEDIA_TYPE,
        "manifests": [entry(&sbom_referrer, "application/spdx+json")?, entry(&vsa, IN_TOTO_ARTIFACT_TYPE)?],
    });
    raw.manifest(&index_tag, OCI_INDEX_MEDIA_TYPE, &index)
        .await?;

    let att = attestation(subject, 1)?;
    let first = store.attach(&att).await?;
    assert_eq!(store.attach(&att).await?, first);

    let m = raw.get(&att_tag).await?;
    assert_eq!(m["config"], foreign_att["config"]);
    assert_eq!(m["layers"][0], foreign_att["layers"][0]);
    assert_eq!(
        digests_of(&m, "layers")?,
        [sha256_digest(cosign_env), sha256_digest(&att.envelope)]
    );
    assert_eq!(
        digests_of(&raw.get(&index_tag).await?, "manifests")?,
        [
            sbom_digest,
            vsa_digest.clone(),
            first.referrer_digest.clone()
        ]
    );
    assert_eq!(
        array(&raw.get(&format!("sha256-{h}.sig")).await?, "layers")?.len(),
        1
    );

    let found = store.attestations(subject).await?;
    let summary: Vec<_> = found
        .iter()
        .map(|f| (f.envelope.clone(), f.via.clone(), f.predicate_type.clone()))
        .collect();
    assert_eq!(
        summary,
        [
            (
                cosign_env.to_vec(),
                vec![Via::Att],
                Some("https://spdx.dev/Document".to_string())
            ),
            (
                att.envelope.clone(),
                vec![Via::Att, Via::Referrer],
                Some(SLSA.to_string())
            ),
            (
                vsa_env.to_vec(),
                vec![Via::Referrer],
                Some("https://slsa.dev/verification_summary/v1".to_string())
            ),
        ]
    );
    assert!(
        found[1].reference.ends_with(&format!(":{att_tag}")),
        "{}",
        found[1].reference
    );
    assert!(
        found[2].reference.ends_with(&format!("@{vsa_digest}")),
        "{}",
        found[2].reference
    );
    assert_eq!(found[1].digest, sha256_digest(&att.envelope));

    let unrelated = Subject::new(&subject.repository, sha256_digest(b"unrelated"));
    assert!(store.attestations(&unrelated).await?.is_empty());
    Ok(att)
}

#[tokio::test]
async fn layout_keeps_foreign_entries_and_finds_every_attestation() -> Result<()> {
    let (model, files) = model_dir(&MODEL_FILES)?;
    let tmp = tempfile::tempdir()?;
    let store = LayoutStore::new(tmp.path());
    let pushed = store
        .push_model("", Some("v1"), model.path(), &files)
        .await?;
    let manifest = std::fs::read(tmp.path().join("blobs/sha256").join(hex(&pushed.digest)))?;
    let subject = layout_subject(tmp.path(), &pushed.digest);
    let att =
        foreign_entries_kept_and_all_found(&store, Raw::Layout(tmp.path()), &subject, &manifest)
            .await?;
    validate_layout(tmp.path())?;
    // A fresh store (another process) attaches nothing twice either.
    let again = LayoutStore::new(tmp.path());
    again.attach(&att).await?;
    assert_eq!(again.attestations(&subject).await?.len(), 3);
    Ok(())
}

#[tokio::test]
async fn registry_keeps_foreign_entries_and_finds_every_attestation() -> Result<()> {
    let registry = Registry::start().await?;
    let model = registry
        .push_model(
            "models/found",
            "v1",
            &[("model.bin", b"\x00weights".as_slice())],
        )
        .await?;
    let store = registry_store(&registry);
    let raw = Raw::Registry {
        registry: &registry,
        repo: "models/found",
    };
    let subject = Subject::new(&model.repository, &model.digest);
    foreign_entries_kept_and_all_found(&store, raw, &subject, &model.manifest).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_attaches_into_one_layout_keep_every_entry() -> Result<()> {
    let (model, files) = model_dir(&MODEL_FILES)?;
    let tmp = tempfile::tempdir()?;
    let pushed = LayoutStore::new(tmp.path())
        .push_model("", Some("v1"), model.path(), &files)
        .await?;
    let subject = layout_subject(tmp.path(), &pushed.digest);
    // Two stores on the same directory, as two parts of one process would have.
    let stores: Vec<Arc<dyn ArtifactStore>> = vec![
        Arc::new(LayoutStore::new(tmp.path())),
        Arc::new(LayoutStore::new(tmp.path())),
    ];
    let tasks: Vec<_> = (0..8)
        .map(|n| {
            let store = stores[n as usize % 2].clone();
            let att = attestation(&subject, n);
            tokio::spawn(async move { Ok::<_, anyhow::Error>(store.attach(&att?).await?) })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    let raw = Raw::Layout(tmp.path());
    let h = hex(&pushed.digest);
    for (tag, key) in [
        (format!("sha256-{h}.att"), "layers"),
        (format!("sha256-{h}.sig"), "layers"),
        (format!("sha256-{h}"), "manifests"),
    ] {
        assert_eq!(array(&raw.get(&tag).await?, key)?.len(), 8, "{tag}");
    }
    validate_layout(tmp.path())?;
    Ok(())
}

#[tokio::test]
async fn resolve_reference_by_tag_and_digest() -> Result<()> {
    let (model, files) = model_dir(&MODEL_FILES)?;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("layout");
    let reference = parse_reference(&format!("oci:{}:v1", dir.display()))?;
    let store = open_store(&reference, RegistryOptions::default());
    let pushed = store
        .push_model(
            &reference.repository(),
            reference.tag.as_deref(),
            model.path(),
            &files,
        )
        .await?;
    let name = format!("oci:{}", dir.display());
    for r in [
        format!("{name}:v1"),
        format!("{name}@{}", pushed.digest),
        "v1".to_string(),
        pushed.digest.clone(),
    ] {
        assert_eq!(store.resolve_reference(&r).await?, pushed, "{r}");
    }
    let err = store.resolve_reference("v2").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let err = store
        .resolve_reference(&format!("oci:{}/elsewhere:v1", tmp.path().display()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("another layout"), "{err}");

    // Content that does not hash to its name is detected, by tag and by digest.
    let blob = dir.join("blobs/sha256").join(hex(&pushed.digest));
    let mut f = std::fs::OpenOptions::new().write(true).open(&blob)?;
    f.seek(SeekFrom::Start(0))?;
    f.write_all(b" ")?;
    drop(f);
    for r in ["v1", pushed.digest.as_str()] {
        let err = store.resolve_reference(r).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DigestMismatch, "{r}: {err}");
    }

    // The registry store takes full references.
    let registry = Registry::start().await?;
    let theirs = registry
        .push_model("models/r", "v1", &[("m.bin", b"m".as_slice())])
        .await?;
    let store = registry_store(&registry);
    let by_tag = store
        .resolve_reference(&format!("{}:v1", theirs.repository))
        .await?;
    assert_eq!(by_tag.digest, theirs.digest);
    assert_eq!(store.resolve_reference(&theirs.reference).await?, by_tag);
    let err = store
        .resolve_reference(&format!("{}:v2", theirs.repository))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let err = store.resolve_reference("oci:x:v1").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent, "{err}");
    Ok(())
}

#[tokio::test]
async fn a_directory_that_is_not_a_layout_is_refused() -> Result<()> {
    let (model, files) = model_dir(&MODEL_FILES)?;
    let tmp = tempfile::tempdir()?;
    std::fs::write(tmp.path().join("notes.txt"), "mine")?;
    let store = LayoutStore::new(tmp.path());
    let err = store
        .push_model("", Some("v1"), model.path(), &files)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent, "{err}");
    assert!(err.to_string().contains("not an OCI image layout"), "{err}");
    assert_eq!(std::fs::read_dir(tmp.path())?.count(), 1);
    // Reads say there is no layout rather than finding nothing.
    let subject = layout_subject(tmp.path(), &sha256_digest(b"x"));
    let err = store.attestations(&subject).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("no OCI image layout"), "{err}");

    // A layout whose creation stopped after `oci-layout` is completed by the next write.
    let half = tempfile::tempdir()?;
    std::fs::write(
        half.path().join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    LayoutStore::new(half.path())
        .push_model("", Some("v1"), model.path(), &files)
        .await?;
    assert_eq!(validate_layout(half.path())?, ["v1"]);
    Ok(())
}

const PEAK_CHILD_ENV: &str = "PROVENANT_TEST_PEAK_CHILD";

/// Run by `a_large_model_is_streamed_not_buffered` in a fresh process, so that the tests running
/// beside it in this one do not move its peak RSS.
#[tokio::test]
#[ignore = "run by a_large_model_is_streamed_not_buffered in a child process"]
async fn large_model_child() -> Result<()> {
    if std::env::var_os(PEAK_CHILD_ENV).is_none() {
        return Ok(());
    }
    const SIZE: u64 = 200 << 20;
    let model = tempfile::tempdir()?;
    let path = model.path().join("model.bin");
    let mut f = std::fs::File::create(&path)?;
    f.write_all(b"head")?;
    f.set_len(SIZE)?;
    f.seek(SeekFrom::End(-4))?;
    f.write_all(b"tail")?;
    drop(f);
    let files = digests(model.path(), ["model.bin"].into_iter())?;
    let registry = Registry::start().await?;
    let store = registry_store(&registry);
    let tmp = tempfile::tempdir()?;
    let layout = LayoutStore::new(tmp.path());

    let before = vm_hwm_kib()?;
    let in_layout = layout
        .push_model("", Some("v1"), model.path(), &files)
        .await?;
    let repository = format!("{}/models/big", registry.host());
    let in_registry = store
        .push_model(&repository, Some("v1"), model.path(), &files)
        .await?;
    let growth = vm_hwm_kib()?.saturating_sub(before);

    assert_eq!(in_layout, in_registry);
    let blob = tmp.path().join("blobs/sha256").join(hex(&files[0].digest));
    assert_eq!(std::fs::metadata(&blob)?.len(), SIZE);
    assert!(registry.blob_exists("models/big", &files[0].digest).await?);
    println!("PEAK_GROWTH_KIB={growth}");
    Ok(())
}

#[test]
fn a_large_model_is_streamed_not_buffered() -> Result<()> {
    let child = std::process::Command::new(std::env::current_exe()?)
        .args(["--exact", "large_model_child", "--ignored", "--nocapture"])
        .env(PEAK_CHILD_ENV, "1")
        .output()?;
    let stdout = String::from_utf8_lossy(&child.stdout);
    assert!(
        child.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&child.stderr)
    );
    let growth: u64 = stdout
        .split_once("PEAK_GROWTH_KIB=")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .context("the child ran")?
        .parse()?;
    // 200 MiB stored twice: streamed, the peak grows by buffers, not by the model.
    assert!(growth < 64 << 10, "peak RSS grew by {growth} KiB");
    Ok(())
}

#[tokio::test]
async fn skopeo_reads_the_layout_and_copies_it_to_a_registry() -> Result<()> {
    let (model, files) = model_dir(&MODEL_FILES)?;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let store = LayoutStore::new(dir);
    let pushed = store
        .push_model("", Some("v1"), model.path(), &files)
        .await?;
    let subject = layout_subject(dir, &pushed.digest);
    let att = attestation(&subject, 1)?;
    store.attach(&att).await?;
    let h = hex(&pushed.digest);
    let att_tag = format!("sha256-{h}.att");
    let att_digest = layout_tag(dir, &att_tag)?.context("att tag")?;

    // The model is an artifact (empty config): skopeo shows its manifest as stored.
    let raw = skopeo(&["inspect", "--raw", &format!("oci:{}:v1", dir.display())]).await?;
    assert_eq!(sha256_digest(&raw), pushed.digest);
    // The .att manifest has an image config: the full inspect works on it.
    let inspected: Value = serde_json::from_slice(
        &skopeo(&["inspect", &format!("oci:{}:{att_tag}", dir.display())]).await?,
    )?;
    assert_eq!(inspected["Digest"], att_digest.as_str());

    let registry = Registry::start().await?;
    for tag in ["v1", att_tag.as_str()] {
        skopeo(&[
            "copy",
            "--insecure-policy",
            "--dest-tls-verify=false",
            &format!("oci:{}:{tag}", dir.display()),
            &format!("docker://{}/models/copied:{tag}", registry.host()),
        ])
        .await?;
    }
    assert_eq!(
        registry.resolve("models/copied", "v1").await?,
        Some(pushed.digest.clone())
    );
    assert_eq!(
        registry.resolve("models/copied", &att_tag).await?,
        Some(att_digest)
    );
    // And the registry's read side finds the attestation that was written to the layout.
    let in_registry = Subject::new(format!("{}/models/copied", registry.host()), &pushed.digest);
    let found = registry_store(&registry).attestations(&in_registry).await?;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].envelope, att.envelope);
    assert_eq!(found[0].via, [Via::Att]);
    let envelope = signing::Envelope::from_json(&found[0].envelope)?;
    signing::verify_envelope(&envelope, key()?.public_key())?;
    Ok(())
}
