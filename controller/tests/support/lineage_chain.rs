//! A base → fine-tune → fine-tune-of-the-fine-tune chain plus an unrelated model, as the
//! controller would record it: the fixture run's statement (tests/fixtures/succeeded-run.yaml)
//! per run, with its own UID, model, dataset digest and base model, signed with a test key and
//! attached to the model in a real registry or an OCI layout (the lineage CLI tests).
#![allow(dead_code)]

use std::path::Path;
use std::process::Output;

use provenant::api::{OutputRecord, TrainingRun};
use provenant::config::ControllerConfig;
use provenant::engine::{self, SignedRecord};
use provenant::execute::placement::placement;
use provenant::provenance::{self, BuilderIdentity};
use provenant::signing::CosignKey;
use provenant::storage::{ArtifactStore, Encoding, LayoutStore, RegistryOptions, RegistryStore};
use provenant_testbed::registry::Registry;

// The test crate declares `mod attest_cmd` (support/attest_cmd.rs) beside this module.
#[allow(unused_imports)] // each test crate uses some of them
pub use crate::attest_cmd::{provenant, provenant_env, repo_root, text};

pub const DATASET_D: &str =
    "sha256:dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd";
pub const DATASET_E: &str =
    "sha256:eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee";
/// The image the fixture run's workers ran (observed).
pub const IMAGE: &str = "sha256:4f1c1a8e8f0a7c1d2f3e4d5c6b7a8f9e0d1c2b3a4f5e6d7c8b9a0f1e2d3c4b5a";
/// The fixture run's declared code revision.
pub const COMMIT: &str = "3f2c7e9a1b4d5c6e7f8091a2b3c4d5e6f7a8b9c0";

/// One recorded run.
#[derive(Debug, Clone)]
pub struct Run {
    pub uid: String,
    pub name: String,
    pub repository: String,
    pub digest: String,
    pub dataset: &'static str,
    /// The base model's `repository@digest` and digest.
    pub base: Option<(String, String)>,
}

impl Run {
    pub fn reference(&self) -> String {
        format!("{}@{}", self.repository, self.digest)
    }

    /// The TrainingRun as the controller holds it once it succeeded.
    pub fn training_run(&self) -> TrainingRun {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/succeeded-run.yaml"
        ))
        .unwrap();
        let mut run: TrainingRun = serde_saphyr::from_str(&text).unwrap();
        run.metadata.uid = Some(self.uid.clone());
        run.metadata.name = Some(self.name.clone());
        run.spec.output.repository = self.repository.clone();
        run.spec.datasets[0].digest = Some(self.dataset.to_string());
        run.spec.base_model = self.base.as_ref().map(|(uri, digest)| {
            serde_json::from_value(serde_json::json!({"uri": uri, "digest": digest})).unwrap()
        });
        let status = run.status.as_mut().unwrap();
        status.materials.as_mut().unwrap().datasets[0].digest = Some(self.dataset.to_string());
        status.outputs = vec![OutputRecord {
            uri: format!("{}:v1@{}", self.repository, self.digest),
            repository: self.repository.clone(),
            digest: self.digest.clone(),
            verified: true,
        }];
        run
    }

    pub fn signed(&self, key: &CosignKey) -> SignedRecord {
        let run = self.training_run();
        let placement =
            placement(&ControllerConfig::defaults(), run.spec.accelerator.as_ref()).unwrap();
        let builder = BuilderIdentity::controller(provenance::DEFAULT_BUILDER_ID, None);
        let statement = provenance::statement_for_run(&run, &placement, &builder).unwrap();
        engine::sign(&statement, key).unwrap()
    }
}

/// base (dataset D) ← ft (dataset E) ← ftft (dataset E); other (dataset E), given the models'
/// repositories and digests in that order.
pub fn chain(models: [(String, String); 4]) -> [Run; 4] {
    let [base, ft, ftft, other] = models;
    let run = |n: &str, (repository, digest): (String, String), dataset, base: Option<&Run>| Run {
        uid: format!("uid-{n}"),
        name: n.to_string(),
        repository,
        digest,
        dataset,
        base: base.map(|b| (b.reference(), b.digest.clone())),
    };
    let base = run("base", base, DATASET_D, None);
    let ft = run("ft", ft, DATASET_E, Some(&base));
    let ftft = run("ftft", ftft, DATASET_E, Some(&ft));
    let other = run("other", other, DATASET_E, None);
    [base, ft, ftft, other]
}

pub const NAMES: [&str; 4] = ["base", "ft", "ftft", "other"];

/// The chain in a real registry: each model pushed to `models/<name>`, its statement attached.
pub async fn in_registry(registry: &Registry, key: &CosignKey) -> [Run; 4] {
    let mut models = Vec::new();
    for name in NAMES {
        let model = registry
            .push_model(
                &format!("models/{name}"),
                "v1",
                &[("model.bin", name.as_bytes())],
            )
            .await
            .unwrap();
        models.push((model.repository, model.digest));
    }
    let runs = chain(models.try_into().unwrap());
    let store = registry_store(registry);
    for run in &runs {
        engine::attach(&run.signed(key), &store, Encoding::Dsse)
            .await
            .unwrap();
    }
    runs
}

pub fn registry_store(registry: &Registry) -> RegistryStore {
    RegistryStore::new(RegistryOptions {
        insecure_registries: vec![registry.host().to_string()],
        ..RegistryOptions::default()
    })
}

/// The chain in the OCI layout `dir`: each model stored there (as `models/<name>`), its
/// statement attached.
pub async fn in_layout(dir: &Path, key: &CosignKey) -> [Run; 4] {
    let layout = LayoutStore::new(dir);
    let mut models = Vec::new();
    for name in NAMES {
        let files = tempfile::tempdir().unwrap();
        std::fs::write(files.path().join("model.bin"), name).unwrap();
        let hashed = provenant::hashing::hash_tree(files.path()).unwrap();
        let repository = format!("reg.example.com/models/{name}");
        let pushed = layout
            .push_model(&repository, Some(name), files.path(), &hashed)
            .await
            .unwrap();
        models.push((repository, pushed.digest));
    }
    let runs = chain(models.try_into().unwrap());
    for run in &runs {
        engine::attach(&run.signed(key), &layout, Encoding::Dsse)
            .await
            .unwrap();
    }
    runs
}

/// A key pair made by `provenant keys generate` (password `test`): cosign.key and cosign.pub in
/// the directory, and the private key loaded.
pub struct Keys {
    pub dir: tempfile::TempDir,
    pub key: CosignKey,
}

impl Keys {
    pub fn generate() -> Keys {
        let dir = tempfile::tempdir().unwrap();
        let out = provenant(&["keys", "generate", "--output-dir", &path(dir.path())]);
        assert!(out.status.success(), "{}", text(&out));
        let pem = std::fs::read(dir.path().join("cosign.key")).unwrap();
        let key = CosignKey::from_pem("cosign.key", &pem, b"test").unwrap();
        Keys { dir, key }
    }

    pub fn private(&self) -> String {
        path(&self.dir.path().join("cosign.key"))
    }

    pub fn public(&self) -> String {
        path(&self.dir.path().join("cosign.pub"))
    }
}

pub fn path(p: &Path) -> String {
    p.display().to_string()
}

pub fn stdout_json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", text(out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(out)))
}

/// The models of a JSON answer, by name (the last path of their repository).
pub fn model_names(answer: &serde_json::Value) -> Vec<String> {
    answer["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let repository = m["model"]["repository"].as_str().unwrap();
            repository.rsplit('/').next().unwrap().to_string()
        })
        .collect()
}

/// `provenant lineage SOURCE --key <public> --output json QUESTION`, parsed.
pub fn ask(source: &[&str], keys: &Keys, question: &[&str]) -> serde_json::Value {
    let mut args = vec!["lineage"];
    args.extend_from_slice(source);
    let public = keys.public();
    args.extend_from_slice(&["--key", &public, "--output", "json"]);
    args.extend_from_slice(question);
    stdout_json(&provenant(&args))
}
