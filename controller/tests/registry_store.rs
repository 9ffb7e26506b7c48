//! `RegistryStore` against a real distribution registry (Debian's docker-registry 2.8, no
//! referrers API) started per test, plus a small mock registry for auth and error paths.
//! The request counts asserted here are the ones documented in docs/registry-layout.md.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use base64::Engine as _;
use provenant::storage::oci::{
    COSIGN_SIGNATURE_ANNOTATION, DSSE_MEDIA_TYPE, IN_TOTO_ARTIFACT_TYPE, OCI_CONFIG_MEDIA_TYPE,
    OCI_EMPTY_MEDIA_TYPE, OCI_INDEX_MEDIA_TYPE, OCI_MANIFEST_MEDIA_TYPE, PREDICATE_TYPE_ANNOTATION,
    SIMPLE_SIGNING_MEDIA_TYPE,
};
use provenant::storage::{
    ArtifactStore, Attestation, AttestationStore, DockerConfig, ErrorKind, RegistryOptions,
    RegistryStore, RetryPolicy, SimpleSignature, Subject, Via, op,
};
use provenant_testbed::racing_writer::racing_entries;
use provenant_testbed::registry::{Descriptor, ModelRef, Registry, sha256_digest};
use provenant_testbed::registry_proxy::RegistryProxy;
use serde_json::Value;

const SLSA: &str = "https://slsa.dev/provenance/v1";

/// Every request the store made: (op, ok).
#[derive(Clone, Default)]
struct Requests(Arc<Mutex<Vec<(String, bool)>>>);

impl Requests {
    fn take(&self) -> Vec<(String, bool)> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
    fn take_ops(&self) -> Vec<String> {
        self.take().into_iter().map(|(op, _)| op).collect()
    }
}

fn options(hosts: &[&str], requests: &Requests) -> RegistryOptions {
    let requests = requests.clone();
    RegistryOptions {
        insecure_registries: hosts.iter().map(|h| h.to_string()).collect(),
        retry: RetryPolicy {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(20),
            attempts: 3,
        },
        observer: Some(Arc::new(move |op: &str, _: Duration, ok: bool| {
            requests.0.lock().unwrap().push((op.to_string(), ok));
        })),
        ..RegistryOptions::default()
    }
}

fn store(registry: &Registry) -> (Arc<dyn AttestationStore>, Requests) {
    let requests = Requests::default();
    let store = RegistryStore::new(options(&[registry.host()], &requests));
    (Arc::new(store), requests)
}

async fn model(registry: &Registry, name: &str) -> Result<ModelRef> {
    registry
        .push_model(
            &format!("models/{name}"),
            "v1",
            &[("model.safetensors", b"\x00weights".as_slice())],
        )
        .await
}

fn subject(model: &ModelRef) -> Subject {
    Subject::new(&model.repository, &model.digest)
}

/// A DSSE envelope with deliberately odd formatting: the store must keep these exact bytes.
fn envelope(n: u32) -> Vec<u8> {
    let payload = base64::engine::general_purpose::STANDARD.encode(format!(
        r#"{{"_type":"https://in-toto.io/Statement/v1","n":{n}}}"#
    ));
    format!(
        "{{ \"payloadType\": \"application/vnd.in-toto+json\",\n  \"payload\": \"{payload}\",\n  \"signatures\": [{{\"keyid\": \"\", \"sig\": \"MEUCIQ{n}\"}}] }}"
    )
    .into_bytes()
}

fn signature(model: &ModelRef, sig: &str) -> SimpleSignature {
    SimpleSignature {
        payload: format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"{}"}},"image":{{"docker-manifest-digest":"{}"}},"type":"cosign container image signature"}},"optional":null}}"#,
            model.repository, model.digest
        )
        .into_bytes(),
        signature: sig.to_string(),
    }
}

fn attestation(model: &ModelRef, n: u32, signed: bool) -> Attestation {
    Attestation {
        subject: subject(model),
        predicate_type: SLSA.to_string(),
        envelope: envelope(n),
        signature: signed.then(|| signature(model, &format!("MEQCIB{n}=="))),
    }
}

fn hex(model: &ModelRef) -> &str {
    model.digest.trim_start_matches("sha256:")
}

async fn manifest(registry: &Registry, repo: &str, reference: &str) -> Result<Value> {
    registry
        .get_manifest(repo, reference)
        .await?
        .ok_or_else(|| anyhow!("{repo}:{reference} does not exist"))?
        .json()
}

fn array<'a>(v: &'a Value, key: &str) -> Result<&'a Vec<Value>> {
    v[key]
        .as_array()
        .with_context(|| format!("no {key} array in {v}"))
}

#[tokio::test]
async fn resolve_existing_model() -> Result<()> {
    let registry = Registry::start().await?;
    let model = model(&registry, "resolve").await?;
    let (store, requests) = store(&registry);
    let resolved = store.resolve(&subject(&model)).await?;
    assert_eq!(resolved.digest, model.digest);
    assert_eq!(resolved.media_type, OCI_MANIFEST_MEDIA_TYPE);
    assert_eq!(resolved.size, model.manifest.len() as u64);
    assert_eq!(requests.take(), [(op::MANIFEST_GET.to_string(), true)]);
    Ok(())
}

#[tokio::test]
async fn resolve_unknown_digest_is_not_found() -> Result<()> {
    let registry = Registry::start().await?;
    let model = model(&registry, "unknown").await?;
    let (store, _) = store(&registry);
    let missing = Subject::new(&model.repository, sha256_digest(b"nothing"));
    let err = store.resolve(&missing).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert_eq!(err.op(), op::MANIFEST_GET);
    assert_eq!(err.status(), Some(404));
    assert!(err.message().contains("MANIFEST_UNKNOWN"), "{err}");
    // Invalid input never reaches the registry.
    let err = store
        .resolve(&Subject::new(&model.repository, "sha256:abc"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent, "{err}");
    Ok(())
}

#[tokio::test]
async fn resolve_with_registry_down_is_transient_after_retries() -> Result<()> {
    let mut registry = Registry::start().await?;
    let model = model(&registry, "down").await?;
    let (store, requests) = store(&registry);
    registry.stop().await?;
    let err = store.resolve(&subject(&model)).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(
        err.message().contains("Connection refused") && err.message().contains("3 attempts"),
        "{err}"
    );
    assert_eq!(
        requests.take(),
        vec![(op::MANIFEST_GET.to_string(), false); 3]
    );
    Ok(())
}

#[tokio::test]
async fn attach_writes_cosign_and_oci_layouts() -> Result<()> {
    let registry = Registry::start().await?;
    let model = model(&registry, "attach").await?;
    let repo = &model.repo;
    let (store, _) = store(&registry);
    let att = attestation(&model, 1, true);
    let attached = store.attach(&att).await?;
    let hex = hex(&model);

    // cosign attestation.
    let m = manifest(&registry, repo, &format!("sha256-{hex}.att")).await?;
    assert_eq!(m["mediaType"], OCI_MANIFEST_MEDIA_TYPE);
    assert_eq!(m["config"]["mediaType"], OCI_CONFIG_MEDIA_TYPE);
    let layers = array(&m, "layers")?;
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0]["mediaType"], DSSE_MEDIA_TYPE);
    assert_eq!(layers[0]["annotations"][COSIGN_SIGNATURE_ANNOTATION], "");
    assert_eq!(layers[0]["annotations"][PREDICATE_TYPE_ANNOTATION], SLSA);
    let digest = layers[0]["digest"].as_str().context("layer digest")?;
    assert_eq!(
        registry.get_blob(repo, digest).await?,
        Some(att.envelope.clone())
    );
    let config = m["config"]["digest"].as_str().context("config digest")?;
    assert!(registry.blob_exists(repo, config).await?);

    // cosign signature.
    let sig = att.signature.as_ref().context("signed")?;
    let m = manifest(&registry, repo, &format!("sha256-{hex}.sig")).await?;
    let layers = array(&m, "layers")?;
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0]["mediaType"], SIMPLE_SIGNING_MEDIA_TYPE);
    assert_eq!(
        layers[0]["annotations"][COSIGN_SIGNATURE_ANNOTATION],
        sig.signature.as_str()
    );
    let digest = layers[0]["digest"].as_str().context("layer digest")?;
    assert_eq!(
        registry.get_blob(repo, digest).await?,
        Some(sig.payload.clone())
    );

    // OCI 1.1 referrer, pushed by digest.
    let referrer = manifest(&registry, repo, &attached.referrer_digest).await?;
    assert_eq!(referrer["mediaType"], OCI_MANIFEST_MEDIA_TYPE);
    assert_eq!(referrer["artifactType"], IN_TOTO_ARTIFACT_TYPE);
    assert_eq!(referrer["subject"]["mediaType"], OCI_MANIFEST_MEDIA_TYPE);
    assert_eq!(referrer["subject"]["digest"], model.digest.as_str());
    assert_eq!(referrer["subject"]["size"], model.manifest.len());
    assert_eq!(referrer["config"]["mediaType"], OCI_EMPTY_MEDIA_TYPE);
    assert_eq!(referrer["config"]["digest"], sha256_digest(b"{}"));
    let layers = array(&referrer, "layers")?;
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0]["mediaType"], DSSE_MEDIA_TYPE);
    assert_eq!(layers[0]["digest"], sha256_digest(&att.envelope));

    // Referrers tag-schema fallback (distribution 2.8 has no referrers API).
    let fetched = registry
        .get_manifest(repo, &format!("sha256-{hex}"))
        .await?
        .context("fallback index")?;
    assert_eq!(fetched.media_type, OCI_INDEX_MEDIA_TYPE);
    let index = fetched.json()?;
    let entries = array(&index, "manifests")?;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["digest"], attached.referrer_digest.as_str());
    assert_eq!(entries[0]["mediaType"], OCI_MANIFEST_MEDIA_TYPE);
    assert_eq!(entries[0]["artifactType"], IN_TOTO_ARTIFACT_TYPE);

    let r = &model.repository;
    assert_eq!(
        attached.references,
        [
            format!("{r}:sha256-{hex}.att"),
            format!("{r}:sha256-{hex}.sig"),
            format!("{r}@{}", attached.referrer_digest),
        ]
    );
    let mut tags = vec![
        "v1".to_string(),
        format!("sha256-{hex}"),
        format!("sha256-{hex}.att"),
        format!("sha256-{hex}.sig"),
    ];
    tags.sort();
    assert_eq!(registry.list_tags(repo).await?, tags);
    Ok(())
}

async fn counts(registry: &Registry, model: &ModelRef) -> Result<(usize, usize, usize)> {
    let hex = hex(model);
    let layers = |v: Value, key: &str| array(&v, key).map(Vec::len);
    Ok((
        layers(
            manifest(registry, &model.repo, &format!("sha256-{hex}.att")).await?,
            "layers",
        )?,
        layers(
            manifest(registry, &model.repo, &format!("sha256-{hex}.sig")).await?,
            "layers",
        )?,
        layers(
            manifest(registry, &model.repo, &format!("sha256-{hex}")).await?,
            "manifests",
        )?,
    ))
}

#[tokio::test]
async fn attach_twice_is_idempotent() -> Result<()> {
    let registry = Registry::start().await?;
    let model = model(&registry, "twice").await?;
    let att = attestation(&model, 1, true);
    let (store, _) = store(&registry);
    let first = store.attach(&att).await?;
    let second = store.attach(&att).await?;
    assert_eq!(first, second);
    // A restarted controller (fresh store, nothing cached) repeats it too.
    let (fresh, _) = self::store(&registry);
    assert_eq!(fresh.attach(&att).await?, first);
    assert_eq!(counts(&registry, &model).await?, (1, 1, 1));
    Ok(())
}

#[tokio::test]
async fn foreign_layers_and_referrers_are_kept() -> Result<()> {
    let registry = Registry::start().await?;
    let model = model(&registry, "foreign").await?;
    let repo = &model.repo;
    let hex = hex(&model);

    // Another tool's attestation (cosign-style, with its own config and annotations) ...
    let foreign_envelope =
        br#"{"payloadType":"application/vnd.in-toto+json","payload":"e30=","signatures":[]}"#;
    let config =
        br#"{"architecture":"","os":"","rootfs":{"type":"layers","diff_ids":["x"]},"config":{}}"#;
    registry.push_blob(repo, foreign_envelope).await?;
    registry.push_blob(repo, config).await?;
    let foreign_layer = Descriptor::of(DSSE_MEDIA_TYPE, foreign_envelope)
        .with_annotation(COSIGN_SIGNATURE_ANNOTATION, "")
        .with_annotation(PREDICATE_TYPE_ANNOTATION, "https://spdx.dev/Document")
        .with_annotation("dev.sigstore.cosign/bundle", r#"{"x":1}"#);
    let foreign_att = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST_MEDIA_TYPE,
        "config": Descriptor::of(OCI_CONFIG_MEDIA_TYPE, config),
        "layers": [foreign_layer],
        "annotations": {"tool": "other"},
    });
    let att_tag = format!("sha256-{hex}.att");
    registry
        .push_manifest(
            repo,
            &att_tag,
            OCI_MANIFEST_MEDIA_TYPE,
            &serde_json::to_vec(&foreign_att)?,
        )
        .await?;
    // ... and another tool's referrer (an SBOM) listed in the fallback index.
    let sbom = br#"{"spdxVersion":"SPDX-2.3"}"#;
    registry.push_blob(repo, sbom).await?;
    let sbom_manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST_MEDIA_TYPE,
        "artifactType": "application/spdx+json",
        "config": Descriptor::empty(),
        "layers": [Descriptor::of("application/spdx+json", sbom)],
        "subject": Descriptor::of(OCI_MANIFEST_MEDIA_TYPE, &model.manifest),
    }))?;
    let sbom_digest = sha256_digest(&sbom_manifest);
    registry
        .push_manifest(repo, &sbom_digest, OCI_MANIFEST_MEDIA_TYPE, &sbom_manifest)
        .await?;
    let foreign_entry = Descriptor::of(OCI_MANIFEST_MEDIA_TYPE, &sbom_manifest)
        .with_artifact_type("application/spdx+json");
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX_MEDIA_TYPE,
        "manifests": [foreign_entry],
    });
    registry
        .push_manifest(
            repo,
            &format!("sha256-{hex}"),
            OCI_INDEX_MEDIA_TYPE,
            &serde_json::to_vec(&index)?,
        )
        .await?;

    let (store, _) = store(&registry);
    let attached = store.attach(&attestation(&model, 7, false)).await?;

    let m = manifest(&registry, repo, &att_tag).await?;
    assert_eq!(m["annotations"]["tool"], "other");
    assert_eq!(m["config"], foreign_att["config"]);
    let layers = array(&m, "layers")?;
    assert_eq!(layers.len(), 2);
    assert_eq!(layers[0], foreign_att["layers"][0]);
    assert_eq!(layers[1]["digest"], sha256_digest(&envelope(7)));
    let index = manifest(&registry, repo, &format!("sha256-{hex}")).await?;
    let entries = array(&index, "manifests")?;
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0], serde_json::to_value(&foreign_entry)?);
    assert_eq!(entries[1]["digest"], attached.referrer_digest.as_str());
    // Unsigned: no `.sig` written.
    assert!(
        registry
            .get_manifest(repo, &format!("sha256-{hex}.sig"))
            .await?
            .is_none()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_attaches_keep_every_entry() -> Result<()> {
    let registry = Registry::start().await?;
    let model = model(&registry, "concurrent").await?;
    let (store, _) = store(&registry);
    let tasks: Vec<_> = (0..8)
        .map(|n| {
            let store = store.clone();
            let att = attestation(&model, n, true);
            tokio::spawn(async move { store.attach(&att).await })
        })
        .collect();
    let mut referrers = Vec::new();
    for t in tasks {
        referrers.push(t.await??.referrer_digest);
    }
    referrers.sort();
    referrers.dedup();
    assert_eq!(referrers.len(), 8);
    assert_eq!(counts(&registry, &model).await?, (8, 8, 8));
    Ok(())
}

/// Requests per op (the order across `.att`, `.sig` and the referrer is not fixed: they are
/// written concurrently).
fn by_op(ops: &[(String, bool)]) -> BTreeMap<&str, usize> {
    let mut counts = BTreeMap::new();
    for (op, _) in ops {
        *counts.entry(op.as_str()).or_default() += 1;
    }
    counts
}

fn expect(pairs: &[(&'static str, usize)]) -> BTreeMap<&'static str, usize> {
    pairs.iter().copied().collect()
}

/// A model pushed into an existing repository (`models/<name>`), as a training run would.
async fn model_in(registry: &Registry, name: &str, n: u32) -> Result<ModelRef> {
    let weights = format!("weights {n}");
    registry
        .push_model(
            &format!("models/{name}"),
            &format!("v{n}"),
            &[("model.safetensors", weights.as_bytes())],
        )
        .await
}

/// The documented requests of a first attach on distribution 2.8 (fresh store, no `resolve`
/// before, model pushed, so the empty blob `{}` is already in the repository).
const FIRST_ATTACH: [(&str, usize); 6] = [
    // subject manifest; `.att`, `.sig`, fallback index tags (404); each read back after its write
    (op::MANIFEST_GET, 7),
    // cosign config (404, then uploaded), `{}` (present); none for the envelope and payload
    (op::BLOB_HEAD, 2),
    // cosign config, envelope, simple-signing payload
    (op::BLOB_UPLOAD_START, 3),
    (op::BLOB_UPLOAD, 3),
    // `.att`, `.sig`, referrer, fallback index
    (op::MANIFEST_PUT, 4),
    // referrers API probe (once per registry)
    (op::REFERRERS_GET, 1),
];

#[tokio::test]
async fn request_counts_first_and_repeat_attach() -> Result<()> {
    let registry = Registry::start().await?;
    let model = model(&registry, "counted").await?;
    let (store, requests) = store(&registry);
    let att = attestation(&model, 1, true);

    store.attach(&att).await?;
    let first = requests.take();
    assert!(first.iter().all(|(_, ok)| *ok), "{first:?}");
    assert_eq!(by_op(&first), expect(&FIRST_ATTACH), "{first:?}");

    // Repeat: resolve and referrers support are cached, every tag already lists ours.
    store.attach(&att).await?;
    assert_eq!(
        requests.take_ops(),
        [op::MANIFEST_GET, op::MANIFEST_GET, op::MANIFEST_GET]
    );

    // A second attestation of the same model (same signature payload, new signature): the
    // config blobs are known, the payload is listed in `.sig` already; only the envelope is new.
    store.attach(&attestation(&model, 2, true)).await?;
    assert_eq!(
        by_op(&requests.take()),
        expect(&[
            (op::MANIFEST_GET, 6), // three tags read, each read back after its write
            (op::BLOB_UPLOAD_START, 1),
            (op::BLOB_UPLOAD, 1),
            (op::MANIFEST_PUT, 4),
        ])
    );
    assert_eq!(counts(&registry, &model).await?, (2, 2, 2));
    Ok(())
}

/// The controller's flow: `resolve` each output, sign, then `attach`. The subject is fetched
/// once, new blobs are uploaded without a HEAD, and the constant config blobs are checked once
/// per repository for the store's lifetime.
#[tokio::test]
async fn resolve_then_attach_costs_the_documented_requests() -> Result<()> {
    let registry = Registry::start().await?;
    let first = model_in(&registry, "flow", 1).await?;
    let (store, requests) = store(&registry);

    store.resolve(&subject(&first)).await?;
    assert_eq!(requests.take_ops(), [op::MANIFEST_GET]);
    store.attach(&attestation(&first, 1, true)).await?;
    let ops = requests.take();
    assert!(ops.iter().all(|(_, ok)| *ok), "{ops:?}");
    assert_eq!(
        by_op(&ops),
        expect(&[
            (op::MANIFEST_GET, 6),      // .att, .sig, fallback index: 404; each read back
            (op::BLOB_HEAD, 2),         // cosign config (404), {} (present): first time only
            (op::BLOB_UPLOAD_START, 3), // config, envelope, payload
            (op::BLOB_UPLOAD, 3),
            (op::MANIFEST_PUT, 4),  // .att, .sig, referrer, index
            (op::REFERRERS_GET, 1), // probe, once per registry
        ]),
        "{ops:?}"
    );

    // Steady state: another model in the same repository.
    let second = model_in(&registry, "flow", 2).await?;
    store.resolve(&subject(&second)).await?;
    assert_eq!(requests.take_ops(), [op::MANIFEST_GET]);
    let attached = store.attach(&attestation(&second, 2, true)).await?;
    let ops = requests.take();
    assert_eq!(
        by_op(&ops),
        expect(&[
            (op::MANIFEST_GET, 6), // .att, .sig, index read before writing and read back
            (op::BLOB_UPLOAD_START, 2), // envelope, payload: no HEAD
            (op::BLOB_UPLOAD, 2),
            (op::MANIFEST_PUT, 4), // .att, .sig, referrer, index
        ]),
        "{ops:?}"
    );
    assert_eq!(ops.len(), 14);
    assert_eq!(counts(&registry, &second).await?, (1, 1, 1));
    let repo = &second.repo;
    let referrer = manifest(&registry, repo, &attached.referrer_digest).await?;
    assert_eq!(referrer["subject"]["digest"], second.digest.as_str());
    assert_eq!(referrer["subject"]["size"], second.manifest.len());

    // Attaching without `resolve` (e.g. after a restart the store resolves again): one more GET.
    let third = model_in(&registry, "flow", 3).await?;
    store.attach(&attestation(&third, 3, true)).await?;
    assert_eq!(requests.take().len(), 15);
    Ok(())
}

/// Concurrent first attaches in a fresh repository share one check and one upload of the cosign
/// config (concurrent uploads of one blob race in distribution 2.8: MANIFEST_BLOB_UNKNOWN).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_attaches_in_a_fresh_repository() -> Result<()> {
    let registry = Registry::start().await?;
    let mut models = Vec::new();
    for n in 0..8 {
        models.push(model_in(&registry, "fresh", n).await?);
    }
    let (store, requests) = store(&registry);
    let tasks: Vec<_> = models
        .iter()
        .enumerate()
        .map(|(n, model)| {
            let store = store.clone();
            let att = attestation(model, n as u32, true);
            tokio::spawn(async move { store.attach(&att).await })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    for model in &models {
        assert_eq!(counts(&registry, model).await?, (1, 1, 1));
    }
    let taken = requests.take();
    let ops = by_op(&taken);
    assert_eq!(ops[op::BLOB_HEAD], 2, "{ops:?}");
    assert_eq!(ops[op::BLOB_UPLOAD_START], 1 + 8 + 8, "{ops:?}");
    Ok(())
}

/// Constant blobs the store remembers are gone from the registry (wiped, garbage-collected):
/// the manifest PUTs that need them are refused, the store uploads them again and the attach
/// works.
#[tokio::test]
async fn blobs_deleted_behind_the_store_are_uploaded_again() -> Result<()> {
    let registry = Registry::start().await?;
    let first = model_in(&registry, "wiped", 1).await?;
    let second = model_in(&registry, "wiped", 2).await?;
    let requests = Requests::default();
    let store = RegistryStore::new(options(&[registry.host()], &requests));
    store.attach(&attestation(&first, 1, true)).await?;
    let repo = &first.repo;
    let att = manifest(&registry, repo, &format!("sha256-{}.att", hex(&first))).await?;
    let config = att["config"]["digest"]
        .as_str()
        .context("config digest")?
        .to_string();
    let empty = sha256_digest(b"{}");
    for digest in [&config, &empty] {
        let resp = registry
            .http()
            .delete(format!("{}/v2/{repo}/blobs/{digest}", registry.url()))
            .send()
            .await?;
        assert_eq!(resp.status().as_u16(), 202, "deleting {digest}");
        assert!(!registry.blob_exists(repo, digest).await?);
    }
    requests.take();

    let att = attestation(&second, 2, true);
    store.attach(&att).await?;
    assert_eq!(counts(&registry, &second).await?, (1, 1, 1));
    assert!(registry.blob_exists(repo, &config).await?);
    assert!(registry.blob_exists(repo, &empty).await?);
    let found = store.attestations(&subject(&second)).await?;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].envelope, att.envelope);
    assert_eq!(found[0].via, [Via::Att, Via::Referrer]);
    // The refused PUTs are visible to the observer as failed requests.
    let ops = requests.take();
    assert!(
        ops.iter().any(|(op, ok)| op == op::MANIFEST_PUT && !*ok),
        "{ops:?}"
    );
    Ok(())
}

#[tokio::test]
async fn attach_during_outage_is_transient_then_succeeds_after_restart() -> Result<()> {
    let mut registry = Registry::start().await?;
    let model = model(&registry, "outage").await?;
    let (store, _) = store(&registry);
    let att = attestation(&model, 1, true);
    // Warm the store (connections pooled, subject cached), then take the registry down.
    store.resolve(&subject(&model)).await?;
    registry.stop().await?;
    let err = store.attach(&att).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.message().contains("Connection refused"), "{err}");
    registry.restart().await?;
    store.attach(&att).await?;
    assert_eq!(counts(&registry, &model).await?, (1, 1, 1));
    Ok(())
}

// ----- a mock registry for what distribution 2.8 cannot show: token auth, bad content, 503 ------

mod mock {
    use super::*;
    use axum::Router;
    use axum::extract::{Path, Query, State};
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;

    pub const MANIFEST: &[u8] = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;

    #[derive(Clone)]
    struct Mock {
        addr: String,
    }

    async fn manifest(
        State(mock): State<Mock>,
        Path(reference): Path<String>,
        headers: HeaderMap,
    ) -> Response {
        if reference == "unavailable" || reference == sha256_digest(b"unavailable") {
            let body = r#"{"errors":[{"code":"UNAVAILABLE","message":"service unavailable"}]}"#;
            return (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
        }
        let authorized = headers
            .get(header::AUTHORIZATION)
            .is_some_and(|v| v.as_bytes() == b"Bearer token-1");
        if !authorized {
            let challenge = format!(
                r#"Bearer realm="http://{}/token",service="mock",scope="repository:models/m:pull""#,
                mock.addr
            );
            let body =
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#;
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, challenge)],
                body,
            )
                .into_response();
        }
        // Serves the same bytes for every digest: only one of them is honest.
        ([(header::CONTENT_TYPE, OCI_MANIFEST_MEDIA_TYPE)], MANIFEST).into_response()
    }

    async fn token(Query(query): Query<BTreeMap<String, String>>, headers: HeaderMap) -> Response {
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("user:secret")
        );
        let ok_auth = headers
            .get(header::AUTHORIZATION)
            .is_some_and(|v| v.as_bytes() == basic.as_bytes());
        let ok_query = query.get("service").map(String::as_str) == Some("mock")
            && query.get("scope").map(String::as_str) == Some("repository:models/m:pull");
        if !(ok_auth && ok_query) {
            return (StatusCode::UNAUTHORIZED, "bad credentials").into_response();
        }
        (
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"token":"token-1","expires_in":300}"#,
        )
            .into_response()
    }

    /// Starts the mock on a loopback port; returns its `host:port`.
    pub async fn start() -> Result<String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let app = Router::new()
            .route("/v2/models/m/manifests/{reference}", get(manifest))
            .route("/token", get(token))
            .with_state(Mock { addr: addr.clone() });
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(addr)
    }
}

fn mock_store(host: &str, user: &str, password: &str) -> Result<(RegistryStore, Requests)> {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let config = format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#);
    let requests = Requests::default();
    let mut options = options(&[host], &requests);
    options.credentials = Some(DockerConfig::from_json(config.as_bytes())?);
    Ok((RegistryStore::new(options), requests))
}

#[tokio::test]
async fn bearer_token_flow_and_token_cache() -> Result<()> {
    let host = mock::start().await?;
    let (store, requests) = mock_store(&host, "user", "secret")?;
    let honest = Subject::new(format!("{host}/models/m"), sha256_digest(mock::MANIFEST));
    let resolved = store.resolve(&honest).await?;
    assert_eq!(resolved.size, mock::MANIFEST.len() as u64);
    assert_eq!(
        requests.take(),
        [
            (op::MANIFEST_GET.to_string(), false), // 401 challenge
            (op::AUTH.to_string(), true),
            (op::MANIFEST_GET.to_string(), true),
        ]
    );
    // Token cached and sent up front: one request. The content does not match this digest.
    let lying = Subject::new(format!("{host}/models/m"), sha256_digest(b"other"));
    let err = store.resolve(&lying).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DigestMismatch, "{err}");
    assert_eq!(requests.take_ops(), [op::MANIFEST_GET]);

    let (store, _) = mock_store(&host, "user", "wrong")?;
    let err = store.resolve(&honest).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent, "{err}");
    assert_eq!(err.op(), op::AUTH);
    assert!(err.message().contains("401"), "{err}");
    Ok(())
}

#[tokio::test]
async fn server_errors_are_retried_then_transient() -> Result<()> {
    let host = mock::start().await?;
    let (store, requests) = mock_store(&host, "user", "secret")?;
    let subject = Subject::new(format!("{host}/models/m"), sha256_digest(b"unavailable"));
    let err = store.resolve(&subject).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(err.status(), Some(503));
    assert!(
        err.message().contains("UNAVAILABLE: service unavailable"),
        "{err}"
    );
    assert_eq!(requests.take_ops(), [op::MANIFEST_GET; 3]);
    Ok(())
}

// ----- another writer racing ours: it read the tag before our write landed and writes after ------

/// A store writing through the test bed's proxy, whose racing writer can replace a tag right
/// after our write with its own copy read before it (as `cosign attest` or a second controller
/// replica would); and attestation `n` of `model` addressed through the proxy.
async fn behind_racing_proxy(
    registry: &Registry,
    model: &ModelRef,
    n: u32,
) -> Result<(RegistryProxy, RegistryStore, Requests, Attestation)> {
    let proxy = RegistryProxy::start(&registry.url()).await?;
    let requests = Requests::default();
    let store = RegistryStore::new(options(&[proxy.host()], &requests));
    let att = Attestation {
        subject: Subject::new(format!("{}/{}", proxy.host(), model.repo), &model.digest),
        ..attestation(model, n, true)
    };
    Ok((proxy, store, requests, att))
}

/// What each tag lists of ours: the DSSE layer in `.att`, our signature in `.sig`, the referrer
/// in the fallback index; and how many entries of the racing writer each holds.
async fn ours_and_theirs(
    registry: &Registry,
    model: &ModelRef,
    att: &Attestation,
    referrer: &str,
) -> Result<[(String, bool, usize); 3]> {
    let hex = hex(model);
    let repo = &model.repo;
    let signature = &att.signature.as_ref().context("signed")?.signature;
    let att_tag = format!("sha256-{hex}.att");
    let m = manifest(registry, repo, &att_tag).await?;
    let in_att = array(&m, "layers")?
        .iter()
        .any(|l| l["digest"] == sha256_digest(&att.envelope));
    let att_theirs = racing_entries(&m);
    let sig_tag = format!("sha256-{hex}.sig");
    let m = manifest(registry, repo, &sig_tag).await?;
    let in_sig = array(&m, "layers")?
        .iter()
        .any(|l| l["annotations"][COSIGN_SIGNATURE_ANNOTATION] == signature.as_str());
    let sig_theirs = racing_entries(&m);
    let index_tag = format!("sha256-{hex}");
    let m = manifest(registry, repo, &index_tag).await?;
    let in_index = array(&m, "manifests")?
        .iter()
        .any(|e| e["digest"] == referrer);
    let index_theirs = racing_entries(&m);
    Ok([
        (att_tag, in_att, att_theirs),
        (sig_tag, in_sig, sig_theirs),
        (index_tag, in_index, index_theirs),
    ])
}

/// Another writer read `.att`, `.sig` and the fallback index before our writes landed and wrote
/// them right after (distribution has no conditional PUT): each time, ours is gone. The store
/// reads every tag back after writing it and writes ours again beside theirs.
#[tokio::test]
async fn a_layer_dropped_by_a_concurrent_writer_is_written_again() -> Result<()> {
    let registry = Registry::start().await?;
    let model = model(&registry, "raced").await?;
    let (proxy, store, requests, att) = behind_racing_proxy(&registry, &model, 1).await?;
    proxy.race_tag_writes(1);
    let attached = store.attach(&att).await?;
    assert_eq!(
        proxy.raced()?,
        3,
        "the .att, .sig and index writes were raced"
    );

    for (tag, ours, theirs) in
        ours_and_theirs(&registry, &model, &att, &attached.referrer_digest).await?
    {
        assert!(
            ours,
            "attach returned Ok but our entry is missing from {tag}: the racing writer's copy \
             replaced it and nothing read it back"
        );
        assert_eq!(theirs, 1, "{tag} keeps the other writer's entry");
    }
    // What `cosign verify-attestation` and `provenant verify` read: ours, both ways.
    let found = store.attestations(&att.subject).await?;
    let ours = found
        .iter()
        .find(|f| f.envelope == att.envelope)
        .context("ours is found")?;
    assert_eq!(ours.via, [Via::Att, Via::Referrer], "{found:?}");
    let ops = requests.take_ops();
    assert_eq!(
        ops.iter().filter(|o| *o == op::MANIFEST_PUT).count(),
        7,
        ".att, .sig and the index written twice each (after the read-back), the referrer once: \
         {ops:?}"
    );
    Ok(())
}

/// The other writer replaces the tags after every write of ours: after a bounded number of
/// rounds the attach fails with a typed, retryable error naming the tag and our entry, instead
/// of reporting an attestation that is not there. Once it stops, attaching again adds ours.
#[tokio::test]
async fn a_layer_lost_at_every_write_is_a_contended_error() -> Result<()> {
    let registry = Registry::start().await?;
    let model = model(&registry, "contended").await?;
    let (proxy, store, _, att) = behind_racing_proxy(&registry, &model, 1).await?;
    proxy.race_tag_writes(usize::MAX);
    let err = store
        .attach(&att)
        .await
        .err()
        .context("attach reported success although every write of ours was replaced")?;
    assert_eq!(err.kind(), ErrorKind::Contended, "{err}");
    assert!(err.is_transient(), "worth retrying: {err}");
    assert_eq!(err.op(), op::MANIFEST_PUT, "{err}");
    assert!(err.message().contains("after each of 8 writes"), "{err}");
    assert!(proxy.raced()? >= 8);

    proxy.race_tag_writes(0);
    let attached = store.attach(&att).await?;
    let tags = ours_and_theirs(&registry, &model, &att, &attached.referrer_digest).await?;
    for (tag, ours, theirs) in &tags {
        assert!(ours, "ours is in {tag} after attaching again");
        assert!(*theirs >= 1, "{tag} keeps the other writer's entries");
    }
    // The error named the tag that kept losing ours, and our entry in it.
    let hex = hex(&model);
    let payload = &att.signature.as_ref().context("signed")?.payload;
    let entries = [
        (format!("sha256-{hex}.att"), sha256_digest(&att.envelope)),
        (format!("sha256-{hex}.sig"), sha256_digest(payload)),
        (format!("sha256-{hex}"), attached.referrer_digest.clone()),
    ];
    let (_, entry) = entries
        .iter()
        .find(|(tag, _)| err.target() == format!("{}:{tag}", att.subject.repository))
        .with_context(|| format!("the error names one of the three tags: {err}"))?;
    assert!(err.message().contains(entry.as_str()), "{err}");
    Ok(())
}

/// Two writers, as two controller replicas (one that still believes it leads) would be, attach
/// different attestations to the same model at the same time, many times over, on the real
/// registry. Every attestation either reported attached is listed in `.att`, `.sig` and the
/// fallback index afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_writers_attaching_to_one_model_lose_no_layer() -> Result<()> {
    const EACH: u32 = 24;
    let registry = Registry::start().await?;
    let model = model(&registry, "two-writers").await?;
    let writers: Vec<_> = [0, 1000]
        .into_iter()
        .map(|first| {
            let (store, _) = store(&registry);
            let model = model.clone();
            tokio::spawn(async move {
                let tasks: Vec<_> = (first..first + EACH)
                    .map(|n| {
                        let store = store.clone();
                        let att = attestation(&model, n, true);
                        tokio::spawn(async move {
                            let attached = store.attach(&att).await?;
                            Ok::<_, anyhow::Error>((att, attached.referrer_digest))
                        })
                    })
                    .collect();
                let mut done = Vec::new();
                for t in tasks {
                    done.push(t.await??);
                }
                Ok::<_, anyhow::Error>(done)
            })
        })
        .collect();
    let mut attached = Vec::new();
    for w in writers {
        attached.extend(w.await??);
    }
    assert_eq!(attached.len(), 2 * EACH as usize);

    let hex = hex(&model);
    let att_m = manifest(&registry, &model.repo, &format!("sha256-{hex}.att")).await?;
    let sig_m = manifest(&registry, &model.repo, &format!("sha256-{hex}.sig")).await?;
    let index = manifest(&registry, &model.repo, &format!("sha256-{hex}")).await?;
    let mut lost = Vec::new();
    for (att, referrer) in &attached {
        let signature = &att.signature.as_ref().context("signed")?.signature;
        let layers = array(&att_m, "layers")?;
        if !layers
            .iter()
            .any(|l| l["digest"] == sha256_digest(&att.envelope))
        {
            lost.push(format!(".att layer of {}", sha256_digest(&att.envelope)));
        }
        if !array(&sig_m, "layers")?
            .iter()
            .any(|l| l["annotations"][COSIGN_SIGNATURE_ANNOTATION] == signature.as_str())
        {
            lost.push(format!(".sig layer {signature}"));
        }
        if !array(&index, "manifests")?
            .iter()
            .any(|e| e["digest"] == referrer.as_str())
        {
            lost.push(format!("index entry {referrer}"));
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} entries reported attached are gone: {lost:?}",
        lost.len(),
        3 * attached.len()
    );
    let all = 2 * EACH as usize;
    assert_eq!(counts(&registry, &model).await?, (all, all, all));
    Ok(())
}

/// The real other writer: `cosign attest` and `cosign sign` (hack/tools/bin) attach their own
/// attestations and signatures to a model while the store attaches ours, on the real registry.
/// cosign reads the tag, checks what it lists, uploads, then writes it back with its layer
/// (0.1–0.25 s here): every write of ours in between is dropped. Every attestation the store
/// reported attached is listed afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attaching_beside_cosign_loses_none_of_ours() -> Result<()> {
    const COSIGN_RUNS: u32 = 12;
    const COSIGN_TYPE: &str = "https://provenant.dev/test/cosign-writer";
    let cosign = provenant_testbed::tools::path("cosign")?;
    let registry = Registry::start().await?;
    let model = model(&registry, "beside-cosign").await?;
    let home = tempfile::tempdir()?;
    let keys = provenant::signing::keys::generate(b"cosign-test")?;
    let key = home.path().join("cosign.key");
    std::fs::write(&key, &keys.private_pem)?;

    // cosign, one run after another, alternating an attestation and a signature: each a new
    // layer (its own predicate; its own annotation in the signed payload).
    let cosign_runs = {
        let reference = model.reference.clone();
        let home = home.path().to_path_buf();
        tokio::spawn(async move {
            for n in 0..COSIGN_RUNS {
                let predicate = home.join(format!("predicate-{n}.json"));
                std::fs::write(&predicate, format!(r#"{{"cosign-run":{n}}}"#))?;
                let (verb, extra) = if n % 2 == 0 {
                    (
                        "attest",
                        vec![
                            "--type".to_string(),
                            COSIGN_TYPE.to_string(),
                            "--predicate".to_string(),
                            predicate.display().to_string(),
                        ],
                    )
                } else {
                    ("sign", vec!["-a".to_string(), format!("cosign-run={n}")])
                };
                let out = tokio::process::Command::new(&cosign)
                    .arg(verb)
                    .args(extra)
                    .args([
                        "--key",
                        &home.join("cosign.key").display().to_string(),
                        "--new-bundle-format=false",
                        "--use-signing-config=false",
                        "--tlog-upload=false",
                        "--allow-http-registry",
                        "--yes",
                        &reference,
                    ])
                    .env("HOME", &home)
                    .env("COSIGN_PASSWORD", "cosign-test")
                    .output()
                    .await?;
                anyhow::ensure!(
                    out.status.success(),
                    "cosign {verb}: {}\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Ok::<_, anyhow::Error>(())
        })
    };

    // The store attaches ours, two at a time, until cosign is done.
    let (store, requests) = store(&registry);
    let mut attached = Vec::new();
    let mut n = 0;
    while !cosign_runs.is_finished() || n < 8 {
        let pair: Vec<_> = (n..n + 2)
            .map(|n| {
                let store = store.clone();
                let att = attestation(&model, n, true);
                tokio::spawn(async move {
                    let attached = store.attach(&att).await?;
                    Ok::<_, anyhow::Error>((att, attached.referrer_digest))
                })
            })
            .collect();
        for t in pair {
            attached.push(t.await??);
        }
        n += 2;
    }
    cosign_runs.await??;

    let hex = hex(&model);
    let att_m = manifest(&registry, &model.repo, &format!("sha256-{hex}.att")).await?;
    let sig_m = manifest(&registry, &model.repo, &format!("sha256-{hex}.sig")).await?;
    let mut lost = Vec::new();
    for (att, _) in &attached {
        let signature = &att.signature.as_ref().context("signed")?.signature;
        if !array(&att_m, "layers")?
            .iter()
            .any(|l| l["digest"] == sha256_digest(&att.envelope))
        {
            lost.push(format!(".att layer {}", sha256_digest(&att.envelope)));
        }
        if !array(&sig_m, "layers")?
            .iter()
            .any(|l| l["annotations"][COSIGN_SIGNATURE_ANNOTATION] == signature.as_str())
        {
            lost.push(format!(".sig layer {signature}"));
        }
    }
    // cosign does not read back: a write of ours that lands between its read and its write
    // drops its layer (shown, not asserted).
    let ours: Vec<&str> = attached
        .iter()
        .filter_map(|(a, _)| a.signature.as_ref().map(|s| s.signature.as_str()))
        .collect();
    let cosign_att = array(&att_m, "layers")?
        .iter()
        .filter(|l| l["annotations"][PREDICATE_TYPE_ANNOTATION] == COSIGN_TYPE)
        .count();
    let cosign_sig = array(&sig_m, "layers")?
        .iter()
        .filter(|l| {
            let signature = l["annotations"][COSIGN_SIGNATURE_ANNOTATION].as_str();
            !signature.is_some_and(|s| ours.contains(&s))
        })
        .count();
    // Each attach writes 4 manifests unless a read-back found ours gone.
    let puts = by_op(&requests.take())[op::MANIFEST_PUT];
    println!(
        "{} attestations of ours beside {COSIGN_RUNS} cosign runs, {} writes again after a \
         read-back; cosign's layers listed: {cosign_att} in .att, {cosign_sig} in .sig",
        attached.len(),
        puts - 4 * attached.len(),
    );
    assert!(
        lost.is_empty(),
        "{} of {} layers of ours reported attached are gone: {lost:?}",
        lost.len(),
        2 * attached.len()
    );
    Ok(())
}
