//! The OpenSSF model signature (`model.sig`) of a model in a real registry (Debian's
//! docker-registry 2.8, no referrers API), attached by provenant's registry store through the
//! engine the controller runs: the pinned `oras` pulls the model's files and `model.sig`, the
//! real `model_signing verify key` (PyPI model-signing) accepts them and refuses a changed file or
//! a changed signature; `provenant verify` accepts the model and refuses the same signature
//! copied onto a model with one changed file, naming the file.

#[path = "support/model_signing.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Output};

use anyhow::Result;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use provenant::api::TrainingRun;
use provenant::config::ControllerConfig;
use provenant::engine::{self, Model};
use provenant::execute::placement;
use provenant::provenance::statement::ResourceDescriptor;
use provenant::provenance::{self, BuilderIdentity};
use provenant::signing::{CosignKey, Signer};
use provenant::storage::{
    ArtifactStore, AttestationStore, Encoding, RegistryOptions, RegistryStore, Subject,
};
use provenant_testbed::registry::{ModelRef, Registry};
use serde_json::Value;
use support::{Place, describe, flip_one_byte, model_signing_verify, pull_model_and_signature};

/// The model's files: nested paths, and a file model_signing skips by default.
const FILES: [(&str, &[u8]); 4] = [
    ("model.safetensors", b"\x00\x01weights of the model\x02"),
    ("config/params.json", br#"{"layers": 4}"#),
    ("tokenizer/vocab.txt", b"a\nb\nc\n"),
    (".gitattributes", b"*.safetensors filter=lfs\n"),
];

fn store(registry: &Registry) -> RegistryStore {
    RegistryStore::new(RegistryOptions {
        insecure_registries: vec![registry.host().to_string()],
        ..RegistryOptions::default()
    })
}

/// The fixture run's SLSA statement, about `model`.
fn statement(model: &ModelRef) -> provenance::statement::Statement {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/succeeded-run.yaml"
    ))
    .unwrap();
    let run: TrainingRun = serde_saphyr::from_str(&text).unwrap();
    let placement =
        placement(&ControllerConfig::defaults(), run.spec.accelerator.as_ref()).unwrap();
    let builder = BuilderIdentity::controller(provenance::DEFAULT_BUILDER_ID, None);
    let mut statement = provenance::statement_for_run(&run, &placement, &builder).unwrap();
    statement.subject = vec![ResourceDescriptor {
        name: Some(model.repository.clone()),
        digest: provenance::digest_map(&model.digest),
        ..Default::default()
    }];
    statement
}

/// What the controller's publish step does for one output: read the model's files back from
/// the registry, sign the provenance and the model signature, attach both.
async fn attest(
    store: &RegistryStore,
    model: &ModelRef,
    key: &CosignKey,
    with_model_signature: bool,
) -> Result<()> {
    let subject = Subject::new(&model.repository, &model.digest);
    let files = store
        .model_files(&subject)
        .await?
        .expect("a provenant model");
    let mut record = engine::sign(&statement(model), key)?;
    if with_model_signature {
        record.model_signatures = engine::sign_models(&[Model { subject, files }], key)?;
    }
    engine::attach(&record, store, Encoding::Dsse).await?;
    Ok(())
}

fn provenant_verify(reference: &str, key: &Path, insecure: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_provenant"))
        .args(["verify", reference, "--key"])
        .arg(key)
        .args(["--insecure-registry", insecure])
        .args(extra)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn model_signing_verifies_the_pulled_model_and_refuses_a_changed_file() -> Result<()> {
    let registry = Registry::start().await?;
    let model = registry.push_model("models/churn", "v1", &FILES).await?;
    let key = CosignKey::ephemeral()?;
    let store = store(&registry);
    attest(&store, &model, &key, true).await?;

    let tmp = tempfile::tempdir()?;
    let public_key = tmp.path().join("cosign.pub");
    std::fs::write(&public_key, key.public_key_pem())?;
    let place = Place::Registry {
        repository: &model.repository,
    };
    let dir = pull_model_and_signature(&place, tmp.path(), &model.digest, tmp.path(), "churn");
    for (name, content) in FILES {
        assert_eq!(std::fs::read(dir.join(name))?, content, "{name} as pulled");
    }
    let signature = dir.join("model.sig");

    let out = model_signing_verify(&signature, &public_key, &dir);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Verification succeeded"),
        "{}",
        describe(&out)
    );

    // Another key: refused, before any file is read.
    let other = tmp.path().join("other.pub");
    std::fs::write(&other, CosignKey::ephemeral()?.public_key_pem())?;
    let out = model_signing_verify(&signature, &other, &dir);
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Key mismatch"),
        "{}",
        describe(&out)
    );

    // One byte of one file changed: refused, naming the file.
    flip_one_byte(&dir.join("tokenizer/vocab.txt"));
    let out = model_signing_verify(&signature, &public_key, &dir);
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
    // (model_signing prints the list of mismatches with Python's repr: the quotes are escaped.)
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Hash mismatch for") && stderr.contains("tokenizer/vocab.txt"),
        "{}",
        describe(&out)
    );
    flip_one_byte(&dir.join("tokenizer/vocab.txt"));
    let out = model_signing_verify(&signature, &public_key, &dir);
    assert_eq!(out.status.code(), Some(0), "restored: {}", describe(&out));

    // A file added to the directory: refused (the signature lists every file).
    std::fs::write(dir.join("extra.bin"), b"planted")?;
    let out = model_signing_verify(&signature, &public_key, &dir);
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Extra files found"),
        "{}",
        describe(&out)
    );
    std::fs::remove_file(dir.join("extra.bin"))?;

    // The signed statement edited in model.sig (a file's digest swapped), signature kept.
    let mut bundle: Value = serde_json::from_slice(&std::fs::read(&signature)?)?;
    let payload = STANDARD.decode(bundle["dsseEnvelope"]["payload"].as_str().unwrap())?;
    let mut statement: Value = serde_json::from_slice(&payload)?;
    statement["predicate"]["resources"][0]["digest"] = "0".repeat(64).into();
    bundle["dsseEnvelope"]["payload"] = STANDARD.encode(serde_json::to_vec(&statement)?).into();
    let edited = tmp.path().join("edited.sig");
    std::fs::write(&edited, serde_json::to_vec(&bundle)?)?;
    let out = model_signing_verify(&edited, &public_key, &dir);
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Verification failed"),
        "{}",
        describe(&out)
    );
    Ok(())
}

#[tokio::test]
async fn provenant_verify_checks_the_model_signature() -> Result<()> {
    let registry = Registry::start().await?;
    let host = registry.host().to_string();
    let model = registry.push_model("models/churn", "v1", &FILES).await?;
    let key = CosignKey::ephemeral()?;
    let store = store(&registry);
    attest(&store, &model, &key, true).await?;
    let tmp = tempfile::tempdir()?;
    let public_key = tmp.path().join("cosign.pub");
    std::fs::write(&public_key, key.public_key_pem())?;

    let out = provenant_verify(
        &model.reference,
        &public_key,
        &host,
        &["--require-model-signature"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("model.sig     verified (OpenSSF model signing, 3 files)"),
        "{}",
        text(&out)
    );
    // Only the provenance is listed as an attestation: the model signature is not one.
    let out = provenant_verify(&model.reference, &public_key, &host, &["--output", "json"]);
    let verdict: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(
        verdict["attestations"].as_array().map(Vec::len),
        Some(1),
        "{verdict}"
    );
    assert_eq!(verdict["modelSignature"]["status"], "verified", "{verdict}");

    // An attacker with push rights copies the model signature onto a model with one changed
    // file (and the provenance: its subject digest then fails too).
    let mut changed = FILES;
    changed[1] = ("config/params.json", br#"{"layers": 5}"#);
    let tampered = registry.push_model("models/churn", "v2", &changed).await?;
    let found = store
        .model_signatures(&Subject::new(&model.repository, &model.digest))
        .await?;
    let [signature] = found.as_slice() else {
        panic!("one model signature expected, found {found:?}");
    };
    store
        .attach_model_signature(
            &Subject::new(&tampered.repository, &tampered.digest),
            &signature.bundle,
        )
        .await?;
    let out = provenant_verify(&tampered.reference, &public_key, &host, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("model file config/params.json is sha256:"),
        "{}",
        text(&out)
    );

    // Another key: the model signature fails with the provenance.
    let other = tmp.path().join("other.pub");
    std::fs::write(&other, CosignKey::ephemeral()?.public_key_pem())?;
    let out = provenant_verify(&model.reference, &other, &host, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("model signature"), "{}", text(&out));
    Ok(())
}

#[tokio::test]
async fn a_model_attested_without_a_model_signature_passes_unless_required() -> Result<()> {
    let registry = Registry::start().await?;
    let host = registry.host().to_string();
    let model = registry.push_model("models/old", "v1", &FILES).await?;
    let key = CosignKey::ephemeral()?;
    attest(&store(&registry), &model, &key, false).await?;
    let tmp = tempfile::tempdir()?;
    let public_key = tmp.path().join("cosign.pub");
    std::fs::write(&public_key, key.public_key_pem())?;

    let out = provenant_verify(&model.reference, &public_key, &host, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains(
            "model.sig     none attached (not required; --require-model-signature requires one)"
        ),
        "{}",
        text(&out)
    );
    let out = provenant_verify(
        &model.reference,
        &public_key,
        &host,
        &["--require-model-signature"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("model signature: none attached"),
        "{}",
        text(&out)
    );
    Ok(())
}

/// cosign v3 takes any referrer whose layer is a Sigstore bundle for an attestation of the
/// image, and then refuses a model whose bundles name something else; the model signature
/// referrer is not one (storage/model_signature.rs), so the provenance still verifies with
/// cosign as docs/verify.md shows, the model signature attached.
#[tokio::test]
async fn cosign_still_verifies_a_model_with_a_model_signature() -> Result<()> {
    let registry = Registry::start().await?;
    let model = registry.push_model("models/churn", "v1", &FILES).await?;
    let key = CosignKey::ephemeral()?;
    attest(&store(&registry), &model, &key, true).await?;
    let tmp = tempfile::tempdir()?;
    let public_key = tmp.path().join("cosign.pub");
    std::fs::write(&public_key, key.public_key_pem())?;
    let cosign = provenant_testbed::tools::path("cosign")?;
    for args in [
        &["verify"][..],
        &["verify-attestation", "--type", "slsaprovenance1"],
    ] {
        let out = Command::new(&cosign)
            .args(args)
            .arg("--key")
            .arg(&public_key)
            .args(["--insecure-ignore-tlog=true", &model.reference])
            .env("HOME", tmp.path())
            .output()?;
        assert_eq!(
            out.status.code(),
            Some(0),
            "cosign {args:?}: {}",
            describe(&out)
        );
    }
    Ok(())
}

/// What the model signature adds to the controller's flow on a registry without the referrers
/// API (docs/registry-layout.md, "Requests"): one `manifest_get` of the model for its files,
/// and, after the provenance's attach, the model signature referrer through the fallback index.
#[tokio::test]
async fn the_model_signature_costs_the_documented_requests() -> Result<()> {
    use provenant::storage::op;
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    let registry = Registry::start().await?;
    let key = CosignKey::ephemeral()?;
    let ops: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = ops.clone();
    let store = RegistryStore::new(RegistryOptions {
        insecure_registries: vec![registry.host().to_string()],
        observer: Some(Arc::new(move |op: &str, _, _| {
            seen.lock().unwrap().push(op.to_string())
        })),
        ..RegistryOptions::default()
    });
    let take = || -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for op in std::mem::take(&mut *ops.lock().unwrap()) {
            *counts.entry(op).or_default() += 1;
        }
        counts
    };
    let expect = |pairs: &[(&str, usize)]| -> BTreeMap<String, usize> {
        pairs.iter().map(|(op, n)| (op.to_string(), *n)).collect()
    };
    // A first model settles the once-per-store requests (referrers probe, config blobs).
    let first = registry.push_model("models/churn", "v1", &FILES).await?;
    attest(&store, &first, &key, true).await?;
    take();

    let model = registry
        .push_model("models/churn", "v2", &FILES[..2])
        .await?;
    let subject = Subject::new(&model.repository, &model.digest);
    store.resolve(&subject).await?;
    assert_eq!(take(), expect(&[(op::MANIFEST_GET, 1)]));
    let files = store.model_files(&subject).await?.expect("a model");
    assert_eq!(
        take(),
        expect(&[(op::MANIFEST_GET, 1)]),
        "the model's files"
    );
    let mut record = engine::sign(&statement(&model), &key)?;
    record.model_signatures = engine::sign_models(&[Model { subject, files }], &key)?;
    let signature = record.model_signatures[0].clone();
    record.model_signatures.clear();
    engine::attach(&record, &store, Encoding::Dsse).await?;
    assert_eq!(
        take().values().sum::<usize>(),
        14,
        "the provenance, as before"
    );
    store
        .attach_model_signature(&signature.subject(), &signature.bundle()?)
        .await?;
    assert_eq!(
        take(),
        expect(&[
            (op::MANIFEST_GET, 2), // the fallback index, read before writing and read back
            (op::BLOB_UPLOAD_START, 1), // the bundle
            (op::BLOB_UPLOAD, 1),
            (op::MANIFEST_PUT, 2), // the referrer, the index
        ])
    );
    // Again: the index lists it already.
    store
        .attach_model_signature(&signature.subject(), &signature.bundle()?)
        .await?;
    assert_eq!(take(), expect(&[(op::MANIFEST_GET, 1)]));
    Ok(())
}
