//! `provenant attest`: a TrainingRun executed on this host (a notebook server, a CI job, a
//! workstation) instead of a cluster. Same API, same engine: the run's command runs here with the
//! same environment contract, the materials observable here are recorded (dataset and model
//! digests by hashing, the code's git commit, the host's accelerators), and the statement is
//! signed and stored like the controller's — in an OCI image layout directory by default, or in a
//! registry.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::Value;

use crate::api::validation::Admission;
use crate::api::{
    DatasetMaterial, Materials, NamedDigest, OutputRecord, Phase, ReportRecord, Source,
    TrainingRun, TrainingRunSpec, TrainingRunStatus, WorkerRecord,
};
use crate::engine::{self, SignedRecord};
use crate::hashing::{self, FileDigest};
use crate::labels;
use crate::observe::{self, host, materials, report};
use crate::provenance::{self, BuilderIdentity, LocalInvocation};
use crate::signing::{CosignKey, Signer};
use crate::storage::{
    ArtifactStore, Encoding, LayoutStore, RegistryOptions, RegistryStore, ResolvedArtifact, Subject,
};
use crate::terminal::Progress;

/// Where `attest` stores the model and its attestations.
#[derive(Debug, Clone)]
pub enum Destination {
    /// An OCI image layout directory (the embedded store).
    Layout(PathBuf),
    /// The registry named by `spec.output.repository`; hosts in the list are plain HTTP.
    Registry { insecure: Vec<String> },
}

/// Options of `provenant attest`.
#[derive(Debug, Clone)]
pub struct Options {
    pub file: PathBuf,
    pub key: PathBuf,
    pub password: Vec<u8>,
    pub destination: Destination,
    /// Directory the training writes its model to (`PROVENANT_OUTPUT_DIR`); must be empty.
    pub model_dir: PathBuf,
    pub builder_id: String,
    /// Registry credentials (the user's Docker config), for `Destination::Registry`.
    pub credentials: Option<crate::storage::DockerConfig>,
    /// No progress bars (they are drawn only on a terminal anyway).
    pub quiet: bool,
    /// How the attestation is written (`--encoding`, the controller's `provenance.encoding`).
    pub encoding: Encoding,
}

/// What `attest` produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub subject: Subject,
    pub record: SignedRecord,
    pub references: Vec<String>,
    pub files: Vec<FileDigest>,
    pub statement: Value,
}

/// Why `attest` stopped. Usage errors (exit 2) are distinguished from a failed training (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("{0}")]
    Usage(String),
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
    #[error("the training command failed: {0}")]
    Training(String),
    #[error("{0}")]
    Material(String),
    #[error("{0}")]
    Attest(#[from] engine::EngineError),
    #[error("storing: {0}")]
    Storage(#[from] crate::storage::StorageError),
}

impl LocalError {
    /// Exit code of `provenant attest`: 1 for a refused or failed run, 2 for usage and I/O.
    pub fn exit_code(&self) -> u8 {
        match self {
            LocalError::Usage(_) | LocalError::Storage(_) => 2,
            _ => 1,
        }
    }
}

fn usage(message: impl Into<String>) -> LocalError {
    LocalError::Usage(message.into())
}

/// Read and check a TrainingRun file exactly as the API server would.
pub fn load_run(path: &Path) -> Result<TrainingRun, LocalError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
    let mut value: Value = serde_saphyr::from_str(&text).map_err(|e| LocalError::Invalid {
        path: path.display().to_string(),
        reason: format!("not valid YAML: {e}"),
    })?;
    // As the API server would store it, so a file gives the same hyperparameters in a cluster.
    crate::api::numbers::normalise(&mut value);
    let admission = Admission::new().map_err(|e| usage(e.to_string()))?;
    admission
        .check(&value, None)
        .map_err(|e| LocalError::Invalid {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    serde_json::from_value(value).map_err(|e| LocalError::Invalid {
        path: path.display().to_string(),
        reason: format!("does not match the TrainingRun API: {e}"),
    })
}

/// A dataset URI this host can hash: `file://...` or a path without scheme.
fn local_path(uri: &str) -> Option<PathBuf> {
    if let Some(path) = uri.strip_prefix("file://") {
        return Some(PathBuf::from(path));
    }
    (!uri.contains("://")).then(|| PathBuf::from(uri))
}

/// Run the TrainingRun here and attest its model: check the run and load the key, observe the
/// code and hash the local datasets, train, take in the workload's report, package and store the
/// model, then build, sign and store the statement of the run as the controller would record it.
pub async fn run(options: &Options) -> Result<Outcome, LocalError> {
    let mut run = load_run(&options.file)?;
    check_runnable_here(&run, &options.file)?;
    // The signing key first: a wrong password must not cost a training run.
    let key = load_key(options)?;
    let work_dir =
        std::env::current_dir().map_err(|e| usage(format!("no working directory: {e}")))?;
    let git = observe_code(&run.spec, &work_dir)?;
    let mut datasets = hash_datasets(&run.spec, options.quiet)?;
    let training = train(&run, options).await?;
    let report = take_report(&training.report, &run.spec, &mut datasets)?;
    let (store, files, model) = store_model(&run, options).await?;

    // The run as the controller would have recorded it, with this host as its only worker.
    let host_facts = host::host_facts();
    run.metadata.uid = Some(uuid::Uuid::new_v4().to_string());
    run.status = Some(recorded_status(
        &run,
        &training,
        &host_facts,
        datasets,
        report,
        &model.digest,
    ));
    let invocation = LocalInvocation {
        host: serde_json::to_value(&host_facts).unwrap_or(Value::Null),
        working_directory: work_dir.display().to_string(),
        command: training.argv.clone(),
        code: git.map(|g| {
            let uri = run
                .spec
                .code
                .as_ref()
                .map(|c| c.uri.clone())
                .or(g.remote.clone())
                .unwrap_or_else(|| format!("file://{}", work_dir.display()));
            (uri, g.commit, g.dirty)
        }),
    };
    let builder = BuilderIdentity {
        id: options.builder_id.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let statement = provenance::statement_for_local_run(&run, &invocation, &builder)
        .map_err(|e| LocalError::Material(e.to_string()))?;
    let mut record = engine::sign(&statement, &key)?;
    // The model signature from the model's files as stored, as the controller does for an output.
    let subject = Subject::new(run.spec.output.repository.clone(), model.digest);
    if let Some(files) = store.model_files(&subject).await? {
        let model = engine::Model {
            subject: subject.clone(),
            files,
        };
        record.model_signatures = engine::sign_models(&[model], &key)?;
    }
    let references = engine::attach(&record, store.as_ref(), options.encoding).await?;
    Ok(Outcome {
        subject,
        record,
        references,
        files,
        statement: serde_json::to_value(&statement).map_err(engine::EngineError::Statement)?,
    })
}

/// What only a cluster can run is refused: no command (the image's entrypoint), `valueFrom` env.
fn check_runnable_here(run: &TrainingRun, file: &Path) -> Result<(), LocalError> {
    let invalid = |reason: String| LocalError::Invalid {
        path: file.display().to_string(),
        reason,
    };
    if run.spec.command.is_empty() {
        return Err(invalid(
            "spec.command: attest runs the command on this host (not the image's entrypoint); give one".into(),
        ));
    }
    if let Some(e) = run.spec.env.iter().find(|e| e.value_from.is_some()) {
        return Err(invalid(format!(
            "spec.env {}: valueFrom needs a cluster; give a value to run it locally",
            e.name
        )));
    }
    Ok(())
}

fn load_key(options: &Options) -> Result<CosignKey, LocalError> {
    let key_pem = std::fs::read(&options.key)
        .map_err(|e| usage(format!("cannot read key {}: {e}", options.key.display())))?;
    CosignKey::from_pem(
        &options.key.display().to_string(),
        &key_pem,
        &options.password,
    )
    .map_err(|e| usage(e.to_string()))
}

/// The code: the working tree's commit, which must be the declared revision when there is one.
fn observe_code(
    spec: &TrainingRunSpec,
    work_dir: &Path,
) -> Result<Option<host::GitRevision>, LocalError> {
    let git = host::git_revision(work_dir);
    if let (Some(declared), Some(git)) = (
        spec.code.as_ref().and_then(|c| c.revision.as_ref()),
        git.as_ref(),
    ) && declared != &git.commit
    {
        return Err(LocalError::Material(format!(
            "spec.code.revision is {declared}, but the working directory is at {}",
            git.commit
        )));
    }
    Ok(git)
}

/// Datasets on this host are hashed (observed); remote ones stay as declared. As in the cluster,
/// each dataset's sources are exactly who gave its digest (`observe::materials::vouch`).
fn hash_datasets(spec: &TrainingRunSpec, quiet: bool) -> Result<Vec<DatasetMaterial>, LocalError> {
    let mut datasets = Vec::new();
    for d in &spec.datasets {
        let mut material = materials::declared_material(d);
        if let Some(path) = local_path(&d.uri) {
            let progress = Progress::bytes(&format!("hashing {}", d.name), None, quiet);
            let hashed = hashing::dataset_digest_with(&path, &progress);
            progress.finish();
            let (digest, _) = hashed.map_err(|e| {
                LocalError::Material(format!("dataset {} ({}): {e}", d.name, path.display()))
            })?;
            materials::vouch(&mut material, Source::Observed, &digest).map_err(|declared| {
                LocalError::Material(format!(
                    "dataset {}: spec.datasets declares {declared}, but {} hashes to {digest}",
                    d.name,
                    path.display()
                ))
            })?;
        }
        datasets.push(material);
    }
    Ok(datasets)
}

/// What the training on this host did.
struct Training {
    argv: Vec<String>,
    started: Timestamp,
    finished: Timestamp,
    exit_code: i32,
    /// What the workload wrote to its report file (`PROVENANT_REPORT_PATH`).
    report: String,
}

/// Run the command with the same environment contract as a worker pod; a failure is the run's.
async fn train(run: &TrainingRun, options: &Options) -> Result<Training, LocalError> {
    let spec = &run.spec;
    prepare_model_dir(&options.model_dir)?;
    let report_file = tempfile::NamedTempFile::new()
        .map_err(|e| usage(format!("cannot create the report file: {e}")))?;
    let hyperparameters = serde_json::to_string(&spec.hyperparameters.clone().unwrap_or_default())
        .map_err(|e| LocalError::Material(format!("spec.hyperparameters: {e}")))?;
    let name = run.metadata.name.clone().unwrap_or_else(|| "local".into());
    // One worker of the run's framework, as a single-replica run in a cluster gets it.
    let rendezvous =
        crate::execute::rendezvous(&name, 1, spec.framework, &Default::default()).env(0);
    let mut command = tokio::process::Command::new(&spec.command[0]);
    command
        .args(&spec.command[1..])
        .args(&spec.args)
        .envs(
            rendezvous
                .into_iter()
                .map(|e| (e.name, e.value.unwrap_or_default())),
        )
        .env(labels::env::SEED, spec.seed.to_string())
        .env(labels::env::HYPERPARAMETERS, &hyperparameters)
        .env(labels::env::OUTPUT_REPOSITORY, &spec.output.repository)
        .env(labels::env::RUN_NAME, &name)
        .env(labels::env::REPORT_PATH, report_file.path())
        .env("PROVENANT_OUTPUT_DIR", &options.model_dir)
        .stdin(Stdio::null());
    for e in &spec.env {
        command.env(&e.name, e.value.clone().unwrap_or_default());
    }
    let argv: Vec<String> = spec
        .command
        .iter()
        .chain(spec.args.iter())
        .cloned()
        .collect();
    let started = Timestamp::now();
    let status = command
        .status()
        .await
        .map_err(|e| LocalError::Training(format!("cannot start {:?}: {e}", spec.command[0])))?;
    let finished = Timestamp::now();
    if !status.success() {
        return Err(LocalError::Training(format!(
            "{} exited with {status}",
            argv.join(" ")
        )));
    }
    Ok(Training {
        argv,
        started,
        finished,
        exit_code: status.code().unwrap_or(-1),
        report: std::fs::read_to_string(report_file.path()).unwrap_or_default(),
    })
}

/// What the workload reported (metrics, dataset digests), merged into `datasets`: a reported
/// digest that contradicts one recorded is refused. Outputs are what attest packages itself.
fn take_report(
    message: &str,
    spec: &TrainingRunSpec,
    datasets: &mut Vec<DatasetMaterial>,
) -> Result<Option<ReportRecord>, LocalError> {
    let Some((parsed, _outputs)) = report::parse(message, &spec.output.repository)
        .map_err(|e| LocalError::Material(format!("workload report: {e}")))?
    else {
        return Ok(None);
    };
    for r in &parsed.datasets {
        match datasets.iter_mut().find(|d| d.name == r.name) {
            Some(d) => {
                materials::vouch(d, Source::Reported, &r.digest).map_err(|recorded| {
                    LocalError::Material(format!(
                        "dataset {}: the workload reported {}, but {recorded} was recorded",
                        r.name, r.digest
                    ))
                })?;
            }
            None => datasets.push(DatasetMaterial {
                name: r.name.clone(),
                uri: None,
                digest: Some(r.digest.clone()),
                sources: vec![Source::Reported],
            }),
        }
    }
    Ok(Some(ReportRecord {
        outputs: vec![],
        datasets: parsed
            .datasets
            .iter()
            .map(|d| NamedDigest {
                name: d.name.clone(),
                digest: d.digest.clone(),
            })
            .collect(),
        metrics: parsed.metrics.clone(),
    }))
}

/// Hash the model directory, package it as an OCI artifact and store it (tagged with the run's
/// name). Returns the store (the attestations go there too), the files and the stored model.
async fn store_model(
    run: &TrainingRun,
    options: &Options,
) -> Result<(Arc<dyn ArtifactStore>, Vec<FileDigest>, ResolvedArtifact), LocalError> {
    let progress = Progress::bytes("hashing model", None, options.quiet);
    let hashed = hashing::hash_tree_with(&options.model_dir, 0, &progress);
    progress.finish();
    let files = hashed.map_err(|e| LocalError::Material(format!("model directory: {e}")))?;
    if files.is_empty() {
        return Err(LocalError::Training(format!(
            "the training wrote nothing to {} (PROVENANT_OUTPUT_DIR)",
            options.model_dir.display()
        )));
    }
    let store: Arc<dyn ArtifactStore> = match &options.destination {
        Destination::Layout(dir) => Arc::new(LayoutStore::new(dir.clone())),
        Destination::Registry { insecure } => Arc::new(RegistryStore::new(RegistryOptions {
            insecure_registries: insecure.clone(),
            credentials: options.credentials.clone(),
            ..RegistryOptions::default()
        })),
    };
    let name = run.metadata.name.clone().unwrap_or_else(|| "local".into());
    let model = store
        .push_model(
            &run.spec.output.repository,
            Some(&name),
            &options.model_dir,
            &files,
        )
        .await?;
    Ok((store, files, model))
}

/// The status the controller would have recorded: one worker, this host, and the model stored.
fn recorded_status(
    run: &TrainingRun,
    training: &Training,
    host_facts: &host::HostFacts,
    datasets: Vec<DatasetMaterial>,
    report: Option<ReportRecord>,
    model_digest: &str,
) -> TrainingRunStatus {
    let repository = &run.spec.output.repository;
    let report_digest = (!training.report.trim().is_empty())
        .then(|| observe::sha256_digest(training.report.as_bytes()));
    TrainingRunStatus {
        phase: Some(Phase::Succeeded),
        start_time: Some(Time(training.started)),
        completion_time: Some(Time(training.finished)),
        workers: vec![WorkerRecord {
            attempt: 0,
            pod_name: "local".into(),
            rank: 0,
            node_name: Some(host_facts.hostname.clone()),
            phase: Some("Succeeded".into()),
            exit_code: Some(training.exit_code),
            reason: Some("Completed".into()),
            started_at: Some(Time(training.started)),
            finished_at: Some(Time(training.finished)),
            containers: vec![],
            accelerator: host::host_accelerator(),
            report_digest,
            report,
            report_error: None,
        }],
        materials: Some(Materials {
            datasets,
            images: vec![],
        }),
        outputs: vec![OutputRecord {
            uri: format!("{repository}@{model_digest}"),
            repository: repository.clone(),
            digest: model_digest.to_string(),
            verified: true,
        }],
        ..Default::default()
    }
}

/// The model directory must not hold anything the training did not write.
fn prepare_model_dir(dir: &Path) -> Result<(), LocalError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(usage(format!(
                    "{} is not empty: give an empty or new --model-dir so that only what the training writes is attested",
                    dir.display()
                )));
            }
            Ok(())
        }
        Err(_) => std::fs::create_dir_all(dir)
            .map_err(|e| usage(format!("cannot create {}: {e}", dir.display()))),
    }
}

/// Key id of the signing key (for messages).
pub fn key_id(key: &CosignKey) -> String {
    key.key_id().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_and_remote_uris() {
        assert_eq!(local_path("data/x.csv"), Some(PathBuf::from("data/x.csv")));
        assert_eq!(
            local_path("file:///data/x.csv"),
            Some(PathBuf::from("/data/x.csv"))
        );
        assert_eq!(local_path("gs://bucket/x"), None);
    }
}
