//! Models in the registry fixture (Debian's docker-registry 2.8 on loopback, plain HTTP), each
//! attested — or not — as one admission case: the controller's provenance through provenant's
//! engine and registry store, and the ways a model can fall short of the shipped policies. Used
//! by admission_policies.rs (policy-controller's tester) and admission_kyverno.rs (the Kyverno
//! CLI), so both judge the same models.

#![allow(dead_code)] // each test target uses its part

use anyhow::Result;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use provenant::api::TrainingRun;
use provenant::config::ControllerConfig;
use provenant::engine;
use provenant::execute::placement::placement;
use provenant::lineage::{LineageEntry, LineageIndex, Query};
use provenant::provenance::revocation::{
    Material, MaterialType, RevocationRef, RevocationStatement, State,
};
use provenant::provenance::statement::Statement;
use provenant::provenance::{self, BuilderIdentity, LocalInvocation};
use provenant::signing::CosignKey;
use provenant::storage::{
    Attestation, AttestationStore, Encoding, RegistryOptions, RegistryStore, Subject,
};
use provenant_testbed::registry::{ModelRef, Registry};
use serde_json::{Value, json};

const RUN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/succeeded-run.yaml"
);

/// How a case's model is attested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    /// The controller's provenance, signed with its key: the one case to admit.
    Attested,
    /// Nothing attached.
    Unattested,
    /// The controller's statement, signed with another key.
    OtherKey,
    /// The controller's statement of a run whose every dataset digest only the training
    /// workload reported (the spec declared none).
    OnlyReportedDatasets,
    /// What `provenant attest` signs (buildType `TrainingRun/local/v1`), with the controller's
    /// key.
    LocalAttest,
    /// The controller's attestation of another model, attached to this one.
    CopiedFromAnotherModel,
    /// A signed statement with only reported datasets, its payload edited so that the spec
    /// "declares" them; the signature kept.
    EditedPayload,
}

impl Case {
    pub const ALL: [Case; 7] = [
        Case::Attested,
        Case::Unattested,
        Case::OtherKey,
        Case::OnlyReportedDatasets,
        Case::LocalAttest,
        Case::CopiedFromAnotherModel,
        Case::EditedPayload,
    ];

    fn slug(self) -> String {
        format!("{self:?}").to_lowercase()
    }
}

/// A registry, provenant's store on it, and the controller's key.
pub struct Bed {
    pub registry: Registry,
    pub store: RegistryStore,
    pub key: CosignKey,
    /// HOME of the tools run: no Docker credentials, nothing of the user's.
    pub dir: tempfile::TempDir,
}

impl Bed {
    pub async fn start() -> Result<Bed> {
        let registry = Registry::start().await?;
        let store = RegistryStore::new(RegistryOptions {
            insecure_registries: vec![registry.host().to_string()],
            ..RegistryOptions::default()
        });
        Ok(Bed {
            registry,
            store,
            key: CosignKey::ephemeral()?,
            dir: tempfile::tempdir()?,
        })
    }

    /// A model of its own (its files name it, so every model has its own digest).
    pub async fn model(&self, name: &str) -> Result<ModelRef> {
        let weights = format!("weights of {name}");
        self.registry
            .push_model(
                &format!("models/{name}"),
                "v1",
                &[
                    ("config.json", br#"{"layers":2}"#.as_slice()),
                    ("model.safetensors", weights.as_bytes()),
                ],
            )
            .await
    }

    /// Signs `statement` with `key` and attaches it with provenant's registry store: the
    /// `.att`/`.sig` tags and the OCI 1.1 referrer, as the controller does.
    async fn attest(&self, statement: &Statement, key: &CosignKey) -> Result<()> {
        let record = engine::sign(statement, key)?;
        engine::attach(&record, &self.store, Encoding::Dsse).await?;
        Ok(())
    }

    /// Attaches an envelope as it is (no `.sig`), as someone with push rights could.
    async fn attach_envelope(&self, model: &ModelRef, envelope: Vec<u8>) -> Result<()> {
        self.store
            .attach(&Attestation {
                subject: Subject::new(&model.repository, &model.digest),
                predicate_type: provenance::statement::SLSA_PROVENANCE_V1.into(),
                envelope,
                signature: None,
            })
            .await?;
        Ok(())
    }

    /// The model of `case`, attested as the case says.
    pub async fn prepare(&self, case: Case) -> Result<ModelRef> {
        let model = self.model(&case.slug()).await?;
        match case {
            Case::Attested => {
                let statement = controller_statement(&run_for(&model, |_| {})?)?;
                self.attest(&statement, &self.key).await?;
            }
            Case::Unattested => {}
            Case::OtherKey => {
                let statement = controller_statement(&run_for(&model, |_| {})?)?;
                self.attest(&statement, &CosignKey::ephemeral()?).await?;
            }
            Case::OnlyReportedDatasets => {
                let run = run_for(&model, only_reported_datasets)?;
                self.attest(&controller_statement(&run)?, &self.key).await?;
            }
            Case::LocalAttest => {
                let local = LocalInvocation {
                    host: json!({"hostname": "laptop", "os": "linux", "arch": "x86_64", "cpus": 8}),
                    working_directory: "/home/me/train".into(),
                    command: vec!["python".into(), "-m".into(), "train".into()],
                    code: None,
                };
                let builder = BuilderIdentity {
                    id: provenance::DEFAULT_LOCAL_BUILDER_ID.into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                };
                let run = run_for(&model, |_| {})?;
                let statement = provenance::statement_for_local_run(&run, &local, &builder)?;
                self.attest(&statement, &self.key).await?;
            }
            Case::CopiedFromAnotherModel => {
                let original = self.model("original").await?;
                let statement = controller_statement(&run_for(&original, |_| {})?)?;
                let record = engine::sign(&statement, &self.key)?;
                self.attach_envelope(&model, record.envelope).await?;
            }
            Case::EditedPayload => {
                let run = run_for(&model, only_reported_datasets)?;
                let record = engine::sign(&controller_statement(&run)?, &self.key)?;
                self.attach_envelope(&model, declare_reported_datasets(&record.envelope)?)
                    .await?;
            }
        }
        Ok(model)
    }
}

/// `imagenet-subset` of the fixture run, declared with this digest.
pub const DATASET: &str = "sha256:9b2f0a6e3c1d4b5a69788f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d7c";

impl Bed {
    /// Attaches to `model` (attested as [`Case::Attested`]) the controller's revocation of
    /// [`DATASET`] (or, with [`State::Reinstated`], its withdrawal), signed with `key`, through
    /// `engine::revocation` as the controller does; the path is the lineage index's.
    pub async fn revoke(
        &self,
        model: &ModelRef,
        uid: &str,
        state: State,
        key: &CosignKey,
    ) -> Result<()> {
        let statement = serde_json::to_value(controller_statement(&run_for(model, |_| {})?)?)?;
        let index = LineageIndex::new([LineageEntry::from_statement(&statement)?]);
        let hits = index.find(&Query::Dataset(DATASET.into()), true);
        let hit = hits
            .first()
            .ok_or_else(|| anyhow::anyhow!("the run used {DATASET}"))?;
        let revocation = RevocationStatement::new(
            hit,
            state,
            RevocationRef {
                name: "poisoned-imagenet".into(),
                uid: uid.into(),
                reason: "label poisoning".into(),
                advisory: Some("https://example.com/advisories/7".into()),
            },
            Material {
                type_: MaterialType::Dataset,
                digest: DATASET.into(),
            },
            provenance::DEFAULT_BUILDER_ID,
            "2026-11-20T10:00:00Z",
        );
        let attestation = engine::revocation::sign(&revocation, key)?;
        engine::revocation::attach(&attestation, &self.store).await?;
        Ok(())
    }
}

/// The lineage entry of the controller's statement for the fixture run producing `model`, the
/// run changed by `edit` first: what the controller records for it.
pub fn lineage_entry(model: &ModelRef, edit: impl FnOnce(&mut Value)) -> Result<LineageEntry> {
    let statement = serde_json::to_value(controller_statement(&run_for(model, edit)?)?)?;
    Ok(LineageEntry::from_statement(&statement)?)
}

/// The fixture run (two A100 workers; `imagenet-subset` declared with its digest,
/// `augment-cache` only reported by the workload), its output being `model`; `edit` changes the
/// run before the statement is built.
fn run_for(model: &ModelRef, edit: impl FnOnce(&mut Value)) -> Result<TrainingRun> {
    let mut run: Value = serde_saphyr::from_str(&std::fs::read_to_string(RUN)?)?;
    run["spec"]["output"]["repository"] = json!(model.repository);
    run["status"]["outputs"] = json!([{
        "uri": format!("{}:{}@{}", model.repository, model.tag, model.digest),
        "repository": model.repository,
        "digest": model.digest,
        "verified": true,
    }]);
    edit(&mut run);
    Ok(serde_json::from_value(run)?)
}

/// What the controller signs for `run`.
fn controller_statement(run: &TrainingRun) -> Result<Statement> {
    let placement = placement(&ControllerConfig::defaults(), run.spec.accelerator.as_ref())?;
    let builder = BuilderIdentity::controller(provenance::DEFAULT_BUILDER_ID, None);
    Ok(provenance::statement_for_run(run, &placement, &builder)?)
}

/// No dataset digest in the spec: every digest is only the workload's word.
fn only_reported_datasets(run: &mut Value) {
    for dataset in run["spec"]["datasets"].as_array_mut().unwrap() {
        dataset.as_object_mut().unwrap().remove("digest");
    }
    for dataset in run["status"]["materials"]["datasets"]
        .as_array_mut()
        .unwrap()
    {
        dataset["sources"] = json!(["Reported"]);
    }
}

/// The envelope with its statement edited to pass the policies: each reported dataset digest
/// copied into `externalParameters.datasets` and `declaredDigest`, as if the spec had declared
/// it. The signature is kept.
fn declare_reported_datasets(envelope: &[u8]) -> Result<Vec<u8>> {
    let mut envelope: Value = serde_json::from_slice(envelope)?;
    let payload = STANDARD.decode(envelope["payload"].as_str().unwrap_or_default())?;
    let mut statement: Value = serde_json::from_slice(&payload)?;
    let definition = &mut statement["predicate"]["buildDefinition"];
    let mut declared = Vec::new();
    for dep in definition["resolvedDependencies"].as_array_mut().unwrap() {
        let (Some(name), Some(hex)) = (
            dep["name"]
                .as_str()
                .and_then(|n| n.strip_prefix("dataset:")),
            dep["digest"]["sha256"].as_str(),
        ) else {
            continue;
        };
        let digest = format!("sha256:{hex}");
        declared.push((name.to_string(), digest.clone()));
        dep["annotations"]["declaredDigest"] = json!(digest);
        dep["annotations"]["source"] = json!(["declared", "reported"]);
    }
    for dataset in definition["externalParameters"]["datasets"]
        .as_array_mut()
        .unwrap()
    {
        if let Some((_, digest)) = declared.iter().find(|(n, _)| dataset["name"] == *n) {
            dataset["digest"] = json!(digest);
        }
    }
    envelope["payload"] = json!(STANDARD.encode(serde_json::to_vec(&statement)?));
    Ok(serde_json::to_vec(&envelope)?)
}
