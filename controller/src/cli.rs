//! The local subcommands: `attest` (train here and attest), `verify` (check a model's
//! attestations), `package` (store a model directory as an OCI artifact), `lineage` (which
//! models came from what) and `revoke` (sign and attach a revocation). Thin front-ends on the
//! engine: `local`, `verify`, `storage`, `lineage`.

pub mod lineage;
pub mod revoke;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};

use crate::hashing;
use crate::local::{self, Destination};
use crate::signing::PublicKey;
use crate::storage::{
    self, ArtifactStore, DockerConfig, LayoutStore, RegistryOptions, RegistryStore, Subject,
};
use crate::terminal::Progress;
use crate::verify::{self, DatasetRequirement, Policy, rego};
use crate::{out, outln};

/// `provenant attest`.
#[derive(clap::Args, Debug)]
pub struct AttestArgs {
    /// The TrainingRun YAML (the same API as in a cluster).
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Cosign private key (cosign.key); its password comes from --password-env.
    #[arg(long)]
    pub key: PathBuf,
    /// Environment variable holding the key's password (empty when unset).
    #[arg(long, default_value = "COSIGN_PASSWORD")]
    pub password_env: String,
    /// OCI image layout directory for the model and its attestations (the default store).
    #[arg(long, default_value = "provenant-layout", conflicts_with = "registry")]
    pub layout: PathBuf,
    /// Push model and attestations to the registry in spec.output.repository instead.
    #[arg(long)]
    pub registry: bool,
    /// Registries (host:port) reached over plain HTTP.
    #[arg(long = "insecure-registry")]
    pub insecure: Vec<String>,
    /// Where the training writes its model (PROVENANT_OUTPUT_DIR); must be empty or absent.
    #[arg(long, default_value = "model")]
    pub model_dir: PathBuf,
    /// runDetails.builder.id of the statement.
    #[arg(long, default_value = crate::provenance::DEFAULT_LOCAL_BUILDER_ID)]
    pub builder_id: String,
    /// How the attestation is written: dsse (cosign .att/.sig and an in-toto referrer),
    /// sigstore-bundle (a Sigstore bundle referrer, cosign v3's format) or both.
    #[arg(long, default_value = "dsse", value_parser = clap::builder::ValueParser::new(str::parse::<storage::Encoding>))]
    pub encoding: storage::Encoding,
    /// Also write the model's digest to this file (for scripts).
    #[arg(long)]
    pub output_digest: Option<PathBuf>,
    /// No progress bars while hashing (they are shown only on a terminal).
    #[arg(short, long)]
    pub quiet: bool,
}

/// `provenant verify`.
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// The model: `host/repo@sha256:..`, `host/repo:tag`, or `oci:<layout dir>[:tag|@sha256:..]`.
    pub reference: String,
    /// Public key (cosign.pub).
    #[arg(long)]
    pub key: PathBuf,
    /// Require this builder id.
    #[arg(long)]
    pub builder_id: Option<String>,
    /// Require a dataset digest the spec declared or provenant observed: `sha256:<hex>` (any
    /// dataset) or `NAME=sha256:<hex>` (the dataset NAME) (repeatable).
    #[arg(long = "require-dataset", value_name = "[NAME=]DIGEST", value_parser = DatasetRequirement::parse)]
    pub datasets: Vec<DatasetRequirement>,
    /// Let --require-dataset also accept a digest only the training workload reported (neither
    /// declared in the spec nor observed).
    #[arg(long)]
    pub allow_reported_datasets: bool,
    /// Require a training image with this digest (repeatable).
    #[arg(long = "require-image")]
    pub images: Vec<String>,
    /// Require the run to have finished at most this long ago (e.g. 90m, 36h, 30d).
    #[arg(long)]
    pub max_age: Option<String>,
    /// Require the model's OpenSSF model signature (model.sig) by --key over exactly its files;
    /// without it, a model with none passes (one it has must pass).
    #[arg(long)]
    pub require_model_signature: bool,
    /// Require a Rego policy to admit the statement: each message of its `deny` rules (package
    /// `provenant`) is a reason to refuse (repeatable; docs/verify.md, "Policies in Rego").
    #[arg(long = "policy", value_name = "FILE.rego")]
    pub policies: Vec<PathBuf>,
    /// A JSON object merged into the policies' `data` (repeatable).
    #[arg(long = "policy-data", value_name = "FILE.json")]
    pub policy_data: Vec<PathBuf>,
    /// Once the model verifies, write its files into DIR (absent or empty; nothing is written
    /// unless it verifies and every file matches the attested manifest).
    #[arg(long, value_name = "DIR")]
    pub pull: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
    /// Registries (host:port) reached over plain HTTP.
    #[arg(long = "insecure-registry")]
    pub insecure: Vec<String>,
    /// No progress bar while re-hashing a layout's model files (shown only on a terminal).
    #[arg(short, long)]
    pub quiet: bool,
}

/// `provenant package`.
#[derive(clap::Args, Debug)]
pub struct PackageArgs {
    /// The model directory.
    pub dir: PathBuf,
    /// OCI image layout directory to store it in.
    #[arg(long, conflicts_with = "registry")]
    pub layout: Option<PathBuf>,
    /// Push to the registry named by --repository instead.
    #[arg(long)]
    pub registry: bool,
    /// Repository of the model (`host/path` for a registry).
    #[arg(long)]
    pub repository: String,
    /// Tag.
    #[arg(long)]
    pub tag: Option<String>,
    /// Registries (host:port) reached over plain HTTP.
    #[arg(long = "insecure-registry")]
    pub insecure: Vec<String>,
    /// No progress bar while hashing (shown only on a terminal).
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Text,
    Json,
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Runtime::new().map_err(|e| {
        eprintln!("error: cannot start the async runtime: {e}");
        ExitCode::from(2)
    })
}

/// `provenant attest`: 0 attested, 1 refused or the training failed, 2 usage/IO.
pub fn attest(args: AttestArgs) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let options = local::Options {
        file: args.file,
        key: args.key,
        password: std::env::var(&args.password_env)
            .unwrap_or_default()
            .into_bytes(),
        destination: if args.registry {
            Destination::Registry {
                insecure: args.insecure,
            }
        } else {
            Destination::Layout(args.layout.clone())
        },
        model_dir: args.model_dir,
        builder_id: args.builder_id,
        credentials: docker_config(),
        quiet: args.quiet,
        encoding: args.encoding,
    };
    match rt.block_on(local::run(&options)) {
        Ok(outcome) => {
            let total: u64 = outcome.files.iter().map(|f| f.size).sum();
            outln!(
                "model       {} ({} files, {} bytes)",
                outcome.subject,
                outcome.files.len(),
                total
            );
            outln!(
                "attested    envelope {} signed with key {}",
                outcome.record.envelope_digest(),
                outcome.record.key_id
            );
            if !outcome.record.model_signatures.is_empty() {
                outln!("signed      the model's files (OpenSSF model signing, model.sig)");
            }
            match &options.destination {
                Destination::Layout(dir) => {
                    outln!("stored in   oci:{} (OCI image layout)", dir.display())
                }
                Destination::Registry { .. } => {
                    outln!("stored in   {}", outcome.subject.repository)
                }
            }
            for r in &outcome.references {
                outln!("            {r}");
            }
            if let Some(path) = args.output_digest
                && let Err(e) = std::fs::write(&path, &outcome.subject.digest)
            {
                eprintln!("error: cannot write {}: {e}", path.display());
                return ExitCode::from(2);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// `provenant verify`: 0 verified, 1 not verified, 2 usage/IO.
pub fn verify(args: VerifyArgs) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(verify_async(&args)) {
        Ok(verdict) => {
            match args.output {
                OutputFormat::Json => outln!(
                    "{}",
                    serde_json::to_string_pretty(&verdict).unwrap_or_default()
                ),
                OutputFormat::Text => out!("{}", verify::render(&verdict)),
            }
            if verdict.verified {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

/// Parse `90m`, `36h`, `30d`, `45s`.
pub fn parse_age(text: &str) -> Result<SignedDuration, String> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: i64 = number
        .parse()
        .map_err(|_| format!("--max-age {text:?}: expected a number and a unit (s, m, h, d)"))?;
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("--max-age {text:?}: unit must be s, m, h or d")),
    };
    let secs = n
        .checked_mul(factor)
        .ok_or_else(|| format!("--max-age {text:?} is too large"))?;
    Ok(SignedDuration::from_secs(secs))
}

/// The user's registry credentials: `REGISTRY_AUTH_FILE`, `$DOCKER_CONFIG/config.json` or
/// `~/.docker/config.json` (the files `docker login` / `podman login` write).
fn docker_config() -> Option<DockerConfig> {
    let path = std::env::var_os("REGISTRY_AUTH_FILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("DOCKER_CONFIG").map(|d| PathBuf::from(d).join("config.json")))
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
        })?;
    let bytes = std::fs::read(path).ok()?;
    DockerConfig::from_json(&bytes).ok()
}

pub(crate) fn registry_options(insecure: &[String]) -> RegistryOptions {
    RegistryOptions {
        insecure_registries: insecure.to_vec(),
        credentials: docker_config(),
        ..RegistryOptions::default()
    }
}

async fn verify_async(args: &VerifyArgs) -> Result<verify::Verdict, String> {
    let pem = std::fs::read(&args.key)
        .map_err(|e| format!("cannot read key {}: {e}", args.key.display()))?;
    let key = PublicKey::from_pem_named(&args.key.display().to_string(), &pem)
        .map_err(|e| e.to_string())?;
    let policy = Policy {
        builder_id: args.builder_id.clone(),
        datasets: args.datasets.clone(),
        allow_reported_datasets: args.allow_reported_datasets,
        images: args.images.clone(),
        max_age: args.max_age.as_deref().map(parse_age).transpose()?,
    };
    let policies = rego::load_all(&args.policies, &args.policy_data).map_err(|e| e.to_string())?;
    if let Some(dir) = &args.pull {
        storage::pull::prepare_destination(dir).map_err(|e| e.to_string())?;
    }
    let reference = storage::parse_reference(&args.reference).map_err(|e| e.to_string())?;
    let store = storage::open_store(&reference, registry_options(&args.insecure));
    let resolved = store
        .resolve_reference(&args.reference)
        .await
        .map_err(|e| e.to_string())?;
    let subject = Subject::new(reference.repository(), resolved.digest.clone());
    let found = store
        .attestations(&subject)
        .await
        .map_err(|e| e.to_string())?;
    let found: Vec<(String, Vec<u8>)> = found
        .into_iter()
        .map(|f| (f.found_at(), f.envelope))
        .collect();
    let mut verdict = verify::verify(
        &reference.repository(),
        &resolved.digest,
        &found,
        &key,
        &policy,
        Timestamp::now(),
    );
    // The manifest (its digest is the verified subject's): the annotations policies read, the
    // files `--pull` writes.
    let manifest = match policies.is_empty() && args.pull.is_none() {
        true => None,
        false => Some(store.manifest(&subject).await.map_err(|e| e.to_string())?),
    };
    if let Some(m) = &manifest {
        let facts = rego::ArtifactFacts::from_manifest(&m.bytes, Some(m.media_type.clone()));
        verdict = rego::apply(verdict, &policies, &facts).map_err(|e| e.to_string())?;
    }
    // In a layout the model's files sit on disk: check them against the manifest that was
    // attested. (A registry checks blob digests itself on upload, and clients on pull.)
    let content = match &reference.location {
        storage::Location::Layout(dir) => {
            layout_content_failures(dir, &resolved.digest, args.quiet)?
        }
        storage::Location::Registry(_) => Vec::new(),
    };
    let files = store
        .model_files(&subject)
        .await
        .map_err(|e| e.to_string())?;
    let model_signatures = store
        .model_signatures(&subject)
        .await
        .map_err(|e| e.to_string())?;
    let model_signature = verify::model_signature::check(
        files.as_deref(),
        &model_signatures,
        &key,
        args.require_model_signature,
    );
    let verdict = verdict
        .with_content_failures(content)
        .with_model_signature(model_signature);
    match (&args.pull, &manifest) {
        (Some(dir), Some(m)) => {
            verify::pull::if_verified(verdict, store.as_ref(), &subject, m, dir).await
        }
        _ => Ok(verdict),
    }
}

/// Every layer of the manifest `digest` in the layout `dir`, re-hashed against its descriptor.
/// The layout is input (storage::oci_layout::untrusted): a layer digest becomes a path only
/// when it is one, and only regular files inside the layout are read.
fn layout_content_failures(
    dir: &std::path::Path,
    digest: &str,
    quiet: bool,
) -> Result<Vec<String>, String> {
    use storage::oci_layout::untrusted;
    let manifest_path = untrusted::blob_path(dir, digest)?;
    untrusted::check_blob_dirs(dir).map_err(|e| format!("cannot read manifest {digest}: {e}"))?;
    let manifest = untrusted::read_capped(&manifest_path, untrusted::MAX_DOCUMENT_BYTES)
        .map_err(|e| format!("cannot read manifest {digest}: {e}"))?
        .ok_or_else(|| format!("cannot read manifest {digest}: not in the layout"))?;
    let manifest: serde_json::Value = serde_json::from_slice(&manifest)
        .map_err(|e| format!("manifest {digest} is not JSON: {e}"))?;
    let layers: Vec<&serde_json::Value> = manifest["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    // Sizes are the layout's numbers: added without overflow (the total only sizes a progress bar).
    let total = layers
        .iter()
        .filter_map(|l| l["size"].as_u64())
        .fold(0u64, u64::saturating_add);
    let progress = Progress::bytes("re-hashing model", Some(total), quiet);
    let mut failures = Vec::new();
    for layer in layers {
        let want = layer["digest"].as_str().unwrap_or_default();
        let title = layer["annotations"]["org.opencontainers.image.title"]
            .as_str()
            .unwrap_or(want);
        let path = match untrusted::blob_path(dir, want) {
            Ok(path) => path,
            Err(why) => {
                failures.push(format!("model file {title} has an {why}"));
                continue;
            }
        };
        // Hashed from the file opened without following a link: what is checked is what is read.
        let file = match untrusted::open_regular(&path) {
            Ok(file) => file,
            Err(e) => {
                failures.push(format!(
                    "model file {title} ({want}) cannot be read: {}: {e}",
                    path.display()
                ));
                continue;
            }
        };
        match hashing::hash_opened_file_with(file, &path, &progress.counter()) {
            Ok(found) if found.digest == want && Some(found.size) == layer["size"].as_u64() => {}
            Ok(found) => failures.push(format!(
                "model file {title} was modified in the layout: it hashes to {} ({} bytes), the attested manifest says {want}",
                found.digest, found.size
            )),
            Err(e) => failures.push(format!("model file {title} ({want}) cannot be read: {e}")),
        }
    }
    progress.finish();
    Ok(failures)
}

/// `provenant package`: print the manifest digest of the stored model.
pub fn package(args: PackageArgs) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let result: Result<String, String> = rt.block_on(async {
        let progress = Progress::bytes("hashing model", None, args.quiet);
        let hashed = hashing::hash_tree_with(&args.dir, 0, &progress);
        progress.finish();
        let files = hashed.map_err(|e| format!("{}: {e}", args.dir.display()))?;
        let store: Arc<dyn ArtifactStore> = match (&args.layout, args.registry) {
            (Some(dir), _) => Arc::new(LayoutStore::new(dir.clone())),
            (None, true) => Arc::new(RegistryStore::new(registry_options(&args.insecure))),
            (None, false) => return Err("give --layout DIR or --registry".into()),
        };
        let resolved = store
            .push_model(&args.repository, args.tag.as_deref(), &args.dir, &files)
            .await
            .map_err(|e| e.to_string())?;
        Ok(resolved.digest)
    });
    match result {
        Ok(digest) => {
            outln!("{digest}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
