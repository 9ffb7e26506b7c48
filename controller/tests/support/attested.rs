//! Attested output for the CLI tests of `provenant verify` (rego.rs, pull.rs): keys, the
//! controller's statement for the fixture run attached to a model in the registry fixture, and
//! the CLI itself.

#![allow(dead_code)] // each test target uses its part

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use provenant::api::{ImageMaterial, OutputRecord, TrainingRun};
use provenant::config::ControllerConfig;
use provenant::engine;
use provenant::execute::placement::placement;
use provenant::provenance::{self, BuilderIdentity};
use provenant::signing::CosignKey;
use provenant::storage::{AttestationStore, Encoding, RegistryOptions, RegistryStore};
use provenant_testbed::registry::{ModelRef, Registry};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// A shipped policy, as a user in the repository names it (the CLI runs from its root).
pub fn policy(name: &str) -> String {
    format!("config/policies/{name}")
}

/// Runs the CLI from the repository's root. The command, its output and exit code go to the
/// test's output (`-- --nocapture` shows them: the transcripts in docs/verify.md are these).
pub fn provenant(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_provenant"))
        .args(args)
        .current_dir(repo_root())
        .env("COSIGN_PASSWORD", "test")
        .output()
        .unwrap();
    eprintln!(
        "$ provenant {}\n{}$ echo $?\n{}\n",
        args.join(" "),
        text(&out),
        out.status.code().unwrap_or(-1)
    );
    out
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A signing key and its public key file.
pub struct Keys {
    pub dir: tempfile::TempDir,
    pub key: CosignKey,
}

impl Keys {
    pub fn new() -> Keys {
        let dir = tempfile::tempdir().unwrap();
        let key = CosignKey::ephemeral().unwrap();
        std::fs::write(dir.path().join("cosign.pub"), key.public_key().pem()).unwrap();
        Keys { dir, key }
    }

    pub fn public(&self) -> String {
        self.dir.path().join("cosign.pub").display().to_string()
    }
}

/// The controller's statement for the fixture run, made about `model`, with the workers having
/// run `image` and the spec declaring `licenses` (per dataset name), signed with `key` and
/// attached to `model` in the registry (the `.att`/`.sig` tags and the OCI 1.1 referrer).
pub async fn attest_cluster_run(
    registry: &Registry,
    model: &ModelRef,
    image: &str,
    licenses: &[(&str, &str)],
    key: &CosignKey,
) {
    let store = RegistryStore::new(RegistryOptions {
        insecure_registries: vec![registry.host().to_string()],
        ..RegistryOptions::default()
    });
    let output = (model.repository.as_str(), model.digest.as_str());
    attest_into(&store, output, image, licenses, key).await;
}

/// As [`attest_cluster_run`], into any store (an OCI image layout, say): the model is
/// `(repository, digest)`.
pub async fn attest_into(
    store: &dyn AttestationStore,
    (repository, digest): (&str, &str),
    image: &str,
    licenses: &[(&str, &str)],
    key: &CosignKey,
) {
    let model_digest = digest;
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/succeeded-run.yaml"
    ))
    .unwrap();
    let mut run: TrainingRun = serde_saphyr::from_str(&text).unwrap();
    run.spec.output.repository = repository.to_string();
    for dataset in &mut run.spec.datasets {
        dataset.license = licenses
            .iter()
            .find(|(name, _)| *name == dataset.name)
            .map(|(_, license)| license.to_string());
    }
    let status = run.status.as_mut().unwrap();
    status.outputs = vec![OutputRecord {
        uri: format!("{repository}:v1@{model_digest}"),
        repository: repository.to_string(),
        digest: model_digest.to_string(),
        verified: true,
    }];
    let digest = "sha256:4f1c1a8e8f0a7c1d2f3e4d5c6b7a8f9e0d1c2b3a4f5e6d7c8b9a0f1e2d3c4b5a";
    status.materials.as_mut().unwrap().images = vec![ImageMaterial {
        image: format!("{image}@{digest}"),
        digest: digest.into(),
    }];
    let placement =
        placement(&ControllerConfig::defaults(), run.spec.accelerator.as_ref()).unwrap();
    let builder = BuilderIdentity::controller(provenance::DEFAULT_BUILDER_ID, None);
    let statement = provenance::statement_for_run(&run, &placement, &builder).unwrap();
    let record = engine::sign(&statement, key).unwrap();
    engine::attach(&record, store, Encoding::Dsse)
        .await
        .unwrap();
}

pub async fn push_model(registry: &Registry, name: &str, files: &[(&str, &[u8])]) -> ModelRef {
    registry
        .push_model(&format!("models/{name}"), "v1", files)
        .await
        .unwrap()
}
