//! The `provenant` binary: one entry point, one subcommand per job.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use provenant::api::TrainingRun;
use provenant::api::validation::Admission;
use provenant::client::RateLimit;
use provenant::config::{ControllerConfig, DEFAULT_CONFIG_YAML};
use provenant::execute::placement;
use provenant::telemetry::{self, LogFormat};
use provenant::{controller, crdgen, out, outln};

/// mimalloc rather than glibc's malloc: lineage at scale allocates millions of small strings and
/// answered 35 % faster with it (controller/Cargo.toml, docs/benchmarks.md "Lineage at scale").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for usage, I/O and configuration errors (1 means "checked and refused").
const EXIT_USAGE: u8 = 2;

#[derive(Parser)]
#[command(
    name = "provenant",
    version,
    about = "Run ML training on Kubernetes and attach signed SLSA provenance to the models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller (kubeconfig from KUBECONFIG / ~/.kube/config, or in-cluster).
    Controller(ControllerArgs),
    /// Print the CustomResourceDefinition YAML (what crds/ holds).
    Crds,
    /// Check TrainingRun YAML files as the API server and the controller would.
    Validate {
        /// TrainingRun YAML files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Controller configuration whose accelerator profiles apply (embedded defaults if omitted).
        #[arg(long, env = "PROVENANT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Inspect the controller configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage signing keys (cosign-compatible ECDSA P-256).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Run a TrainingRun's command on this host and attest the model it writes.
    Attest(provenant::cli::AttestArgs),
    /// Verify a model's attestations (registry or OCI layout) with a public key.
    Verify(provenant::cli::VerifyArgs),
    /// Store a model directory as an OCI artifact (layout or registry); prints its digest.
    Package(provenant::cli::PackageArgs),
    /// Which models came from a dataset, image, base model or commit; what went into a model.
    Lineage(provenant::cli::lineage::LineageArgs),
    /// Sign and attach a revocation to every model that depends on a dataset, image or model.
    Revoke(provenant::cli::revoke::RevokeArgs),
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Generate a key pair in cosign's format, as files or as the controller's Secret.
    Generate(KeysGenerateArgs),
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("destination").required(true).args(["output_dir", "secret"])))]
struct KeysGenerateArgs {
    /// Write cosign.key (0600) and cosign.pub (and cosign.password for a generated password) here.
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// Print a Secret manifest with this name (data: cosign.key, cosign.password, cosign.pub).
    #[arg(long)]
    secret: Option<String>,
    /// Namespace of the Secret.
    #[arg(long, conflicts_with = "output_dir")]
    namespace: Option<String>,
    /// Environment variable holding the password; a random one is generated when it is unset.
    #[arg(long, default_value = "COSIGN_PASSWORD")]
    password_env: String,
    /// Replace existing files in --output-dir.
    #[arg(long, conflicts_with = "secret")]
    force: bool,
}

#[derive(clap::Args)]
struct ControllerArgs {
    /// Controller configuration file (the mounted ConfigMap); embedded defaults if omitted.
    #[arg(long, env = "PROVENANT_CONFIG")]
    config: Option<PathBuf>,
    /// Only watch TrainingRuns in this namespace (all namespaces if omitted).
    #[arg(long, env = "PROVENANT_NAMESPACE")]
    namespace: Option<String>,
    /// Address of the HTTP port (/healthz, /readyz, /metrics).
    #[arg(long, env = "PROVENANT_HEALTH_ADDR", default_value = "0.0.0.0:8080")]
    health_addr: SocketAddr,
    /// Client-side limit on Kubernetes API requests per second.
    #[arg(long, env = "PROVENANT_KUBE_API_QPS", default_value_t = 50.0)]
    kube_api_qps: f64,
    /// Requests allowed in a burst above --kube-api-qps.
    #[arg(long, env = "PROVENANT_KUBE_API_BURST", default_value_t = 100)]
    kube_api_burst: u32,
    /// Runs reconciled at most at once (0 = unbounded).
    #[arg(long, env = "PROVENANT_CONCURRENCY", default_value_t = 64)]
    concurrency: u16,
    /// Provenance steps (resolve, sign, attach) at most at once. They run apart from the
    /// reconciles, so a slow registry never delays recording finished workers.
    #[arg(long, env = "PROVENANT_PROVENANCE_WORKERS", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    provenance_workers: u16,
    /// Elect a leader over a Lease so that only one replica acts (off: a single instance).
    #[arg(long, env = "PROVENANT_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// The controller's own namespace: its leader Lease and its Secrets (signing key, registry
    /// credentials) live there.
    #[arg(long, env = "POD_NAMESPACE", default_value = "provenant-system")]
    controller_namespace: String,
    /// Act only on the MaterialRevocations with these labels (a Kubernetes label selector,
    /// e.g. `provenant.dev/install=prod`); all of them if omitted. Set it when more than one
    /// provenant install shares a cluster: each revocation must have exactly one.
    #[arg(long, env = "PROVENANT_REVOCATION_SELECTOR")]
    revocation_selector: Option<String>,
    /// Name of the leader Lease.
    #[arg(long, default_value = "provenant-controller")]
    leader_election_lease: String,
    /// Identity in the Lease (the pod name in a cluster; hostname and pid otherwise).
    #[arg(long, env = "POD_NAME")]
    leader_election_identity: Option<String>,
    /// Seconds the Lease stays valid without renewal; a new leader takes over after this.
    #[arg(long, default_value_t = 15)]
    lease_duration_seconds: u64,
    /// Log format on stderr.
    #[arg(long, env = "PROVENANT_LOG_FORMAT", value_enum, default_value = "json")]
    log_format: LogFormat,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the embedded default configuration.
    Defaults,
    /// Check a configuration file and print its accelerator profiles.
    Check { file: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Controller(args) => run_controller(args),
        Command::Crds => match crdgen::crds_yaml() {
            Ok(yaml) => {
                out!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&anyhow::Error::new(e)),
        },
        Command::Validate { files, config } => match validate(&files, config) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => fail(&e),
        },
        Command::Config(ConfigCommand::Defaults) => {
            out!("{DEFAULT_CONFIG_YAML}");
            ExitCode::SUCCESS
        }
        Command::Config(ConfigCommand::Check { file }) => match ControllerConfig::load(Some(&file))
        {
            Ok(config) => {
                outln!("{}: ok", file.display());
                for (name, profile) in &config.accelerator_profiles {
                    outln!(
                        "  {name}: {} on {:?}",
                        profile.resource_name,
                        profile.node_selector
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(&anyhow::Error::new(e)),
        },
        Command::Keys(KeysCommand::Generate(args)) => keys_generate(args),
        Command::Attest(args) => provenant::cli::attest(args),
        Command::Verify(args) => provenant::cli::verify(args),
        Command::Package(args) => provenant::cli::package(args),
        Command::Lineage(args) => provenant::cli::lineage::lineage(args),
        Command::Revoke(args) => provenant::cli::revoke::revoke(args),
    }
}

fn keys_generate(args: KeysGenerateArgs) -> ExitCode {
    use provenant::signing::keygen;
    let destination = match (args.output_dir, args.secret) {
        (Some(path), _) => keygen::Destination::Directory {
            path,
            force: args.force,
        },
        (None, Some(name)) => keygen::Destination::Secret {
            name,
            namespace: args.namespace,
        },
        (None, None) => return fail(&anyhow::anyhow!("give --output-dir or --secret")),
    };
    let password = keygen::Password::from_env(&args.password_env);
    let result = keygen::run(
        &destination,
        &password,
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    );
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => fail(&anyhow::Error::new(e)),
    }
}

fn fail(error: &anyhow::Error) -> ExitCode {
    // The reader of our output went away (`| head`): not a failure, nothing to say.
    if provenant::terminal::is_broken_pipe(error.as_ref()) {
        return ExitCode::SUCCESS;
    }
    eprintln!("error: {error:#}");
    ExitCode::from(EXIT_USAGE)
}

fn run_controller(args: ControllerArgs) -> ExitCode {
    telemetry::init(args.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(&anyhow::Error::new(e).context("cannot start the async runtime")),
    };
    if !args.kube_api_qps.is_finite() || args.kube_api_qps <= 0.0 || args.kube_api_burst == 0 {
        return fail(&anyhow::anyhow!(
            "--kube-api-qps and --kube-api-burst must be positive"
        ));
    }
    let identity = args.leader_election_identity.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_else(|_| "provenant".into());
        format!("{}-{}", host.trim(), std::process::id())
    });
    let options = controller::Options {
        config: args.config,
        namespace: args.namespace,
        health_addr: args.health_addr,
        rate_limit: RateLimit {
            qps: args.kube_api_qps,
            burst: args.kube_api_burst,
        },
        leader_election: args.leader_elect.then(|| controller::LeaderElection {
            namespace: args.controller_namespace.clone(),
            lease_name: args.leader_election_lease,
            identity,
            lease_duration: args.lease_duration_seconds.max(2),
        }),
        concurrency: args.concurrency,
        provenance_workers: args.provenance_workers,
        controller_namespace: args.controller_namespace,
        revocation_selector: args.revocation_selector.filter(|s| !s.trim().is_empty()),
    };
    match runtime.block_on(controller::run(options, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "controller failed");
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// SIGTERM (the kubelet stopping the pod) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Check each file; print a line per file. Ok(false) when any file is refused.
fn validate(files: &[PathBuf], config: Option<PathBuf>) -> anyhow::Result<bool> {
    let config = ControllerConfig::load(config.as_deref())?;
    let admission = Admission::new()?;
    let mut all_ok = true;
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let problems = check_document(&admission, &config, &text);
        if problems.is_empty() {
            outln!("{}: ok", file.display());
        } else {
            all_ok = false;
            outln!("{}: refused", file.display());
            for p in problems {
                outln!("  {p}");
            }
        }
    }
    Ok(all_ok)
}

fn check_document(admission: &Admission, config: &ControllerConfig, text: &str) -> Vec<String> {
    let value: serde_json::Value = match serde_saphyr::from_str(text) {
        Ok(v) => v,
        Err(e) => return vec![format!("not valid YAML: {e}")],
    };
    let api_version = value
        .get("apiVersion")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    let kind = value
        .get("kind")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    if api_version != "provenant.dev/v1alpha1" || kind != "TrainingRun" {
        return vec![format!(
            "apiVersion/kind: expected provenant.dev/v1alpha1 TrainingRun, got {api_version:?} {kind:?}"
        )];
    }
    if let Err(invalid) = admission.check(&value, None) {
        return invalid.errors.iter().map(ToString::to_string).collect();
    }
    let run: TrainingRun = match serde_json::from_value(value) {
        Ok(run) => run,
        Err(e) => return vec![format!("does not match the TrainingRun API: {e}")],
    };
    match placement(config, run.spec.accelerator.as_ref()) {
        Ok(_) => vec![],
        Err(e) => vec![e.to_string()],
    }
}
