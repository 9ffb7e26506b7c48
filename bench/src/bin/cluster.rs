//! `provenant-bench-cluster [--short|--full] [e2e] [scale]`: benchmarks 3 (end to end) and 4
//! (scale of the cache) of issue 7, against the release `provenant controller` binary
//! (`target/release/provenant`, or `PROVENANT_BIN`) run as a process on the test bed: the
//! API-server double, the kubelet simulator and the real distribution registry fixture.
//!
//! - `e2e`: N TrainingRuns (short 100, full 1,000) submitted at a steady rate (`--rate`, default
//!   10/s = 36,000 runs an hour, 36× the ~1k/hour of the Tekton Chains reports in issue 7, and
//!   about half of what the loopback registry sustains here for a run's ~20 requests: its model
//!   push and its attestation), 1 CPU replica each, whose pod pushes a distinct 4 KiB model in its `before_exit` hook and
//!   reports it. Completion (the hook returned) → `Attached` (seen by a watcher in this process)
//!   lag p50/p95/p99/max, attestations/s, the backlog every 500 ms from /metrics, the controller's
//!   peak RSS and CPU seconds. Baselines in the same run: one attestation resolved + attached by
//!   `RegistryStore` from this process, and the API double's round trip of a status patch.
//! - `burst`: the same N runs submitted at once (as fast as the API double takes them): a
//!   capacity test. Completions then arrive faster than any registry can take attestations, so
//!   the lag and backlog targets (which assume runs finish no faster than they can be attested)
//!   are reported for information; the figures are the drain rate and the time to drain.
//! - `blackhole` (issue 14, point 5): the `e2e` runs again with every other run writing to a
//!   registry host that accepts connections and never answers; the healthy half's completion →
//!   attached p99 against the clean `e2e` run's p99 (target: at most 2×). The dead runs stay
//!   `Pending`; the controller's per-host bound keeps them from holding every provenance worker.
//! - `scale`: controller RSS with M finished runs and their succeeded pods in the API double
//!   (short 2,000 extrapolated linearly to 10,000, full 10,000), beside the same binary's RSS with 0
//!   runs, same run.
//!
//! Tables on stdout, raw numbers in `target/bench/e2e.json` and `target/bench/scale.json`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::ResourceExt;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use provenant::api::{Phase, ProvenanceState, TrainingRun};
use provenant::config::ControllerConfig;
use provenant::execute::placement;
use provenant::provenance::{self, BuilderIdentity};
use provenant::signing::CosignKey;
use provenant::storage::{AttestationStore, RegistryOptions, RegistryStore, Subject};
use provenant_bench::table::{Row, median, percentile, print_table, write_report};
use provenant_testbed::cluster::{Cluster, ControllerProcess};
use provenant_testbed::kubelet::{KubeletSim, PodOutcome, Scenario, SimNode};
use provenant_testbed::registry::Registry;
use serde_json::{Value, json};

#[path = "cluster/fairness.rs"]
mod fairness;

const IMAGE: &str = "registry.example.com/train@sha256:1111111111111111111111111111111111111111111111111111111111111111";
const MODEL_REPO: &str = "models/bench";
const KEY_PASSWORD: &[u8] = b"bench-password";
/// `--kube-api-qps` / `--kube-api-burst` given to the controller (the defaults, 50/100, would
/// make the client-side limiter the bottleneck of a 1,000-run burst).
const QPS: u32 = 500;
const BURST: u32 = 1000;
const LAG_TARGET_MS: f64 = 2000.0;
const RSS_TARGET_MIB: f64 = 150.0;
const RSS_TARGET_RUNS: usize = 10_000;
const SAMPLE_EVERY: Duration = Duration::from_millis(500);

#[derive(Parser)]
#[command(
    name = "provenant-bench-cluster",
    about = "provenant benchmarks 3 (end to end) and 4 (cache scale)"
)]
struct Args {
    /// Short mode (the default): 100 runs end to end, 2,000 runs in the cache (< 2 minutes).
    #[arg(long, conflicts_with = "full")]
    short: bool,
    /// Full mode: 1,000 runs end to end, 10,000 runs in the cache.
    #[arg(long)]
    full: bool,
    /// Submission rate of `e2e`, runs per second.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Which benchmarks: e2e, burst, blackhole, scale (default: e2e, blackhole and scale; full
    /// mode adds burst).
    #[arg(value_name = "BENCH")]
    benches: Vec<String>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !(args.rate.is_finite() && args.rate > 0.0) {
        bail!(
            "--rate must be a positive number of runs per second, got {}",
            args.rate
        );
    }
    for b in &args.benches {
        if !["e2e", "burst", "blackhole", "scale"].contains(&b.as_str()) {
            bail!("unknown benchmark {b:?} (e2e, burst, blackhole, scale)");
        }
    }
    let wants = |name: &str| {
        if args.benches.is_empty() {
            name != "burst" || args.full
        } else {
            args.benches.iter().any(|b| b == name)
        }
    };
    let binary = controller_binary()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut clean_p99 = None;
        if wants("e2e") {
            clean_p99 = Some(e2e(args.full, Some(args.rate), &binary, false).await?);
        }
        if wants("burst") {
            e2e(args.full, None, &binary, false).await?;
        }
        if wants("blackhole") {
            // Baselines: the same healthy runs alone (the dead half not submitted), and the
            // full clean e2e run when it ran.
            let alone = e2e_runs(args.full, Some(args.rate), &binary, Half::Skipped).await?;
            let dead = e2e_runs(args.full, Some(args.rate), &binary, Half::Blackholed).await?;
            fairness::report(args.full, args.rate, alone, clean_p99, dead)?;
        }
        if wants("scale") {
            scale(args.full, &binary).await?;
        }
        Ok(())
    })
}

/// The release binary: `PROVENANT_BIN`, else `target/release/provenant` of the workspace.
fn controller_binary() -> Result<PathBuf> {
    let path = match std::env::var_os("PROVENANT_BIN") {
        Some(p) => PathBuf::from(p),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
            .join("release/provenant"),
    };
    if !path.is_file() {
        bail!(
            "{} not found: build it with `cargo build --release -p provenant` (or set PROVENANT_BIN)",
            path.display()
        );
    }
    Ok(path)
}

// ---------------------------------------------------------------------------------------------
// Shared helpers

/// Memory and CPU of a process, from /proc.
#[derive(Debug, Clone, Copy, Default)]
struct ProcStats {
    vm_hwm_kib: u64,
    vm_rss_kib: u64,
    cpu_s: f64,
}

fn proc_stats(pid: u32) -> Result<ProcStats> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(ProcStats {
        vm_hwm_kib: kib("VmHWM:"),
        vm_rss_kib: kib("VmRSS:"),
        cpu_s: cpu_seconds(&format!("/proc/{pid}/stat"))?,
    })
}

/// utime + stime of `/proc/<pid>/stat`, in seconds.
fn cpu_seconds(stat_path: &str) -> Result<f64> {
    let stat =
        std::fs::read_to_string(stat_path).with_context(|| format!("reading {stat_path}"))?;
    // Fields after the command name (which may contain spaces) start at field 3 (state);
    // utime and stime are fields 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("unexpected {stat_path}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // SAFETY: sysconf has no preconditions.
    let clk_tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let clk_tck = if clk_tck > 0 { clk_tck as f64 } else { 100.0 };
    Ok((ticks(11) + ticks(12)) as f64 / clk_tck)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The value of one exact series (`name` or `name{labels}`) in Prometheus text.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Every series whose name starts with `prefix`, e.g. `provenant_registry_request_duration_seconds_count`.
fn series(text: &str, prefix: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && l.starts_with(prefix))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

async fn get_metrics(http: &reqwest::Client, port: u16) -> Result<String> {
    Ok(http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await?
        .text()
        .await?)
}

/// A controller configuration: the shipped accelerator profiles plus `provenance_yaml`.
fn write_config(cluster: &Cluster, name: &str, provenance_yaml: &str) -> Result<PathBuf> {
    let defaults = provenant::config::DEFAULT_CONFIG_YAML;
    let end = defaults
        .find("\nprovenance:")
        .ok_or_else(|| anyhow!("the embedded defaults have no provenance block"))?;
    let path = cluster.dir().join(format!("{name}.yaml"));
    std::fs::write(&path, format!("{}\n{provenance_yaml}\n", &defaults[..end]))?;
    Ok(path)
}

/// The signing-key Secret in the controller's namespace (`Cluster::controller_namespace`), as the
/// provenance scenarios create it.
async fn create_key_secret(cluster: &Cluster) -> Result<()> {
    let keys = provenant::signing::keys::generate(KEY_PASSWORD)?;
    let data = BTreeMap::from([
        (
            "cosign.key".to_string(),
            ByteString(keys.private_pem.into_bytes()),
        ),
        (
            "cosign.password".to_string(),
            ByteString(KEY_PASSWORD.to_vec()),
        ),
        (
            "cosign.pub".to_string(),
            ByteString(keys.public_pem.into_bytes()),
        ),
    ]);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("provenant-signing-key".into()),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    };
    cluster
        .controller_api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .context("creating the signing-key Secret")?;
    Ok(())
}

/// A 1-replica CPU TrainingRun writing to `repository`.
fn training_run(name: &str, seed: u64, repository: &str) -> Result<TrainingRun> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "provenant.dev/v1alpha1",
        "kind": "TrainingRun",
        "metadata": {"name": name},
        "spec": {
            "image": IMAGE,
            "command": ["python", "train.py"],
            "hyperparameters": {"lr": 0.001, "epochs": 3},
            "seed": seed,
            "datasets": [{"name": "churn", "uri": "s3://acme/churn.csv",
                "digest": "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}],
            "output": {"repository": repository},
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                          "limits": {"cpu": "100m", "memory": "128Mi"}},
        },
    }))?)
}

fn fmt_ms(v: f64) -> String {
    format!("{v:.1} ms")
}

// ---------------------------------------------------------------------------------------------
// Benchmark 3: end to end

/// Per-run timestamps, ms since the benchmark's epoch.
#[derive(Default)]
struct Times {
    submitted: HashMap<String, f64>,
    finished: HashMap<String, f64>,
    /// Phase `Succeeded` first seen (the controller recorded the worker).
    succeeded: HashMap<String, f64>,
    /// Provenance `Signed` first seen (signed and persisted in the ConfigMap).
    signed: HashMap<String, f64>,
    attached: HashMap<String, f64>,
    /// Runs that ended without provenance: name → why.
    failed: HashMap<String, String>,
}

type Shared = Arc<Mutex<Times>>;

fn lock(times: &Shared) -> std::sync::MutexGuard<'_, Times> {
    times.lock().unwrap_or_else(|p| p.into_inner())
}

fn ms_since(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64() * 1e3
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Sample {
    t_ms: f64,
    backlog: Option<f64>,
    rss_mib: f64,
    attached: usize,
}

/// Bare cost of one attestation from this process: resolve the model + attach the signed
/// envelope with `RegistryStore` (the registry work the controller does per run), sequentially.
/// Returns (latencies ms, CPU ms of this process per op incl. signing).
async fn bare_attach(registry: &Registry, n: usize) -> Result<(Vec<f64>, f64)> {
    let fixture = provenant_bench::engine::load_fixture()?;
    let placement = placement(
        &ControllerConfig::defaults(),
        fixture.spec.accelerator.as_ref(),
    )
    .map_err(|e| anyhow!("placement: {e}"))?;
    let builder = BuilderIdentity {
        id: provenance::DEFAULT_BUILDER_ID.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let base = provenance::statement_for_run(&fixture, &placement, &builder)?;
    let key = CosignKey::ephemeral()?;
    let store = RegistryStore::new(RegistryOptions {
        insecure_registries: vec![registry.host().to_string()],
        ..Default::default()
    });
    let mut models = Vec::with_capacity(n);
    for i in 0..n {
        let weights = model_bytes(&format!("baseline {i}"));
        models.push(
            registry
                .push_model(
                    "models/baseline",
                    &format!("b{i}"),
                    &[("model.safetensors", &weights)],
                )
                .await?,
        );
    }
    let mut latencies = Vec::with_capacity(n);
    let cpu_before = cpu_seconds("/proc/self/stat")?;
    for model in &models {
        let mut statement = base.clone();
        let subject = statement
            .subject
            .first_mut()
            .ok_or_else(|| anyhow!("statement has no subject"))?;
        subject.name = Some(model.repository.clone());
        let hex = model
            .digest
            .strip_prefix("sha256:")
            .ok_or_else(|| anyhow!("model digest {} is not sha256", model.digest))?;
        subject.digest = BTreeMap::from([("sha256".to_string(), hex.to_string())]);
        statement.subject.truncate(1);
        let record = provenant::engine::sign(&statement, &key)?;
        let attestation = record
            .attestations()?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("record has no attestation"))?;
        let t = Instant::now();
        store
            .resolve(&Subject::new(
                model.repository.clone(),
                model.digest.clone(),
            ))
            .await?;
        store.attach(&attestation).await?;
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let cpu_ms = (cpu_seconds("/proc/self/stat")? - cpu_before) * 1e3 / n.max(1) as f64;
    Ok((latencies, cpu_ms))
}

/// Round trip of a status merge patch on a TrainingRun through the API double, in a namespace
/// the controller does not watch.
async fn status_patch_rtt(cluster: &Cluster, n: usize) -> Result<Vec<f64>> {
    let ns = format!("{}-baseline", cluster.namespace);
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}}))?;
    Api::<Namespace>::all(cluster.client.clone())
        .create(&PostParams::default(), &namespace)
        .await?;
    let api: Api<TrainingRun> = Api::namespaced(cluster.client.clone(), &ns);
    api.create(
        &PostParams::default(),
        &training_run("probe", 1, "registry.example.com/models/probe")?,
    )
    .await?;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let patch = json!({"status": {"phase": "Running", "observedGeneration": i,
            "startTime": "2026-11-20T10:00:00Z"}});
        let t = Instant::now();
        api.patch_status("probe", &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        out.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(out)
}

/// 4 KiB of model weights, distinct per `seed`.
fn model_bytes(seed: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(4096 + seed.len());
    while bytes.len() < 4096 {
        bytes.extend_from_slice(seed.as_bytes());
        bytes.push(b'\n');
    }
    bytes.truncate(4096);
    bytes
}

/// The kubelet simulator: every pod runs 100 ms, then pushes its model and reports it; with a
/// `dead_host`, the pods of `dead-*` runs report a model there instead (nothing to push: that
/// host never answers).
async fn kubelet(
    cluster: &Cluster,
    registry: Arc<Registry>,
    times: Shared,
    t0: Instant,
    dead_host: Option<String>,
) -> Result<KubeletSim> {
    let repository = format!("{}/{MODEL_REPO}", registry.host());
    let scenario = Scenario::new()
        .namespace(&cluster.namespace)
        .nodes(10, |i| {
            SimNode::new(format!("cpu-{i}")).capacity("pods", "250")
        })
        .outcome_fn(move |_pod| {
            let registry = registry.clone();
            let repository = repository.clone();
            let times = times.clone();
            let dead_host = dead_host.clone();
            PodOutcome::succeed()
                .after(Duration::from_millis(100))
                .before_exit(move |pod| {
                    let registry = registry.clone();
                    let repository = repository.clone();
                    let times = times.clone();
                    let dead_host = dead_host.clone();
                    async move {
                        let run = pod
                            .labels()
                            .get(provenant::labels::RUN)
                            .cloned()
                            .unwrap_or_else(|| pod.name_any());
                        if let Some(dead) = dead_host.as_ref().filter(|_| run.starts_with("dead-"))
                        {
                            let uri = format!(
                                "{}@{}",
                                fairness::dead_repository(dead),
                                fairness::DEAD_DIGEST
                            );
                            lock(&times).finished.insert(run, ms_since(t0));
                            return Ok(json!({"outputs": [{"uri": uri}]}).to_string());
                        }
                        let weights = model_bytes(&format!("weights of {}", pod.name_any()));
                        let model = registry
                            .push_model(MODEL_REPO, &run, &[("model.safetensors", &weights)])
                            .await?;
                        let report = json!({
                            "outputs": [{"uri": format!("{repository}:{run}@{}", model.digest)}],
                        })
                        .to_string();
                        lock(&times).finished.insert(run, ms_since(t0));
                        Ok(report)
                    }
                })
        });
    KubeletSim::start(cluster.client.clone(), scenario).await
}

/// Records when each run's provenance is seen `Attached` (or the run ends without it).
async fn watch_runs(api: Api<TrainingRun>, times: Shared, t0: Instant) {
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .applied_objects();
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        let Ok(run) = event else { continue };
        let now = ms_since(t0);
        let name = run.name_any();
        let status = run.status.as_ref();
        let state = status.and_then(|s| s.provenance.as_ref()).map(|p| p.state);
        let mut t = lock(&times);
        if status.and_then(|s| s.phase) == Some(Phase::Succeeded) {
            t.succeeded.entry(name.clone()).or_insert(now);
        }
        if matches!(
            state,
            Some(ProvenanceState::Signed | ProvenanceState::Attached)
        ) {
            t.signed.entry(name.clone()).or_insert(now);
        }
        match state {
            Some(ProvenanceState::Attached) => {
                t.attached.entry(name).or_insert(now);
            }
            _ if status.and_then(|s| s.phase) == Some(Phase::Failed) => {
                // The run failed (e.g. its worker's push failed): say why.
                let why = status
                    .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Succeeded"))
                    .map(|c| format!("run failed, {}: {}", c.reason, c.message))
                    .unwrap_or_else(|| "run failed".to_string());
                t.failed.entry(name).or_insert(why);
            }
            Some(ProvenanceState::Failed | ProvenanceState::Disabled) => {
                let why = status
                    .and_then(|s| {
                        s.conditions
                            .iter()
                            .find(|c| c.type_ == "ProvenanceAttached" && c.status == "False")
                    })
                    .map(|c| format!("provenance {state:?}, {}: {}", c.reason, c.message))
                    .unwrap_or_else(|| format!("provenance {state:?}"));
                t.failed.entry(name).or_insert(why);
            }
            _ => {}
        }
    }
}

/// What becomes of every other run (odd numbers) in the `blackhole` benchmark.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Half {
    /// Submitted like the others (plain `e2e`, `burst`).
    Healthy,
    /// Not submitted: the healthy half alone, the fair baseline of `Blackholed`.
    Skipped,
    /// Written to a registry host that never answers.
    Blackholed,
}

/// Returns the completion → attached p99 (ms) of the runs that were attached.
async fn e2e(full: bool, rate: Option<f64>, binary: &Path, blackholed: bool) -> Result<f64> {
    let half = if blackholed {
        Half::Blackholed
    } else {
        Half::Healthy
    };
    e2e_runs(full, rate, binary, half).await
}

async fn e2e_runs(full: bool, rate: Option<f64>, binary: &Path, half: Half) -> Result<f64> {
    let n: usize = if full { 1000 } else { 100 };
    let blackholed = half == Half::Blackholed;
    // A steady rate; a burst (None): as fast as the API double takes them (32 creates in flight).
    let burst = rate.is_none();
    let name = match (burst, half) {
        (true, _) => "burst",
        (false, Half::Blackholed) => "blackhole",
        (false, Half::Skipped) => "blackhole-baseline",
        (false, Half::Healthy) => "e2e",
    };
    let dead = if blackholed {
        Some(fairness::Blackhole::start().await?)
    } else {
        None
    };
    let dead_host = dead.as_ref().map(|d| d.host.clone());
    // Odd runs go to the dead host (or are not submitted).
    let is_dead = |i: usize| half != Half::Healthy && i % 2 == 1;
    let healthy_n = (0..n).filter(|&i| !is_dead(i)).count();
    let timeout = Duration::from_secs(if full { 300 } else { 60 });
    println!(
        "{name}: {n} runs ({}), controller {} --kube-api-qps={QPS} --kube-api-burst={BURST}",
        rate.map_or("as fast as the API takes them".to_string(), |r| format!(
            "{r}/s"
        )),
        binary.display()
    );
    let cluster = Cluster::start().await?;
    let registry = Arc::new(Registry::start().await?);
    create_key_secret(&cluster).await?;

    // Baselines, before anything else loads the machine.
    let baseline_n = if full { 100 } else { 30 };
    let (bare_ms, bare_cpu_ms) = bare_attach(&registry, baseline_n).await?;
    let patch_ms = status_patch_rtt(&cluster, 100).await?;

    let t0 = Instant::now();
    let times: Shared = Arc::default();
    let sim = kubelet(
        &cluster,
        registry.clone(),
        times.clone(),
        t0,
        dead_host.clone(),
    )
    .await?;
    let watch = tokio::spawn(watch_runs(cluster.api::<TrainingRun>(), times.clone(), t0));

    let config = write_config(
        &cluster,
        "bench-e2e",
        &format!(
            "provenance:\n  enabled: true\n  registry:\n    insecure: [\"{}\"{}]\n",
            registry.host(),
            dead_host
                .as_ref()
                .map(|h| format!(", \"{h}\""))
                .unwrap_or_default()
        ),
    )?;
    let flags = [
        format!("--config={}", config.display()),
        format!("--kube-api-qps={QPS}"),
        format!("--kube-api-burst={BURST}"),
    ];
    let flag_refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut controller = ControllerProcess::start(binary, &cluster, "bench-e2e", &flag_refs)?;
    controller.wait_ready(Duration::from_secs(30)).await?;
    let pid = controller
        .pid()
        .ok_or_else(|| anyhow!("controller has no pid"))?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = proc_stats(pid)?;

    // Backlog and RSS every 500 ms.
    let http = reqwest::Client::new();
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (samples, stop, http, times) =
            (samples.clone(), stop.clone(), http.clone(), times.clone());
        let port = controller.port;
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let text = get_metrics(&http, port).await.unwrap_or_default();
                let sample = Sample {
                    t_ms: ms_since(t0),
                    backlog: metric(&text, "provenant_provenance_backlog"),
                    rss_mib: proc_stats(pid).map_or(0.0, |s| mib(s.vm_rss_kib)),
                    attached: lock(&times).attached.len(),
                };
                samples
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(sample);
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
        })
    };

    // Submit.
    let api = cluster.api::<TrainingRun>();
    let repository = format!("{}/{MODEL_REPO}", registry.host());
    let submit_start = ms_since(t0);
    let created: Vec<Result<()>> =
        futures::stream::iter((0..n).filter(|&i| half != Half::Skipped || !is_dead(i)))
            .map(|i| {
                let (api, times) = (api.clone(), times.clone());
                let (name, repository) = match dead_host.as_deref().filter(|_| is_dead(i)) {
                    Some(dead) => (format!("dead-{i:04}"), fairness::dead_repository(dead)),
                    None => (format!("e2e-{i:04}"), repository.clone()),
                };
                async move {
                    if let Some(rate) = rate {
                        let at = submit_start + i as f64 * 1e3 / rate;
                        let wait = at - ms_since(t0);
                        if wait > 0.0 {
                            tokio::time::sleep(Duration::from_secs_f64(wait / 1e3)).await;
                        }
                    }
                    let run = training_run(&name, i as u64, &repository)?;
                    api.create(&PostParams::default(), &run)
                        .await
                        .with_context(|| format!("creating {name}"))?;
                    lock(&times).submitted.insert(name, ms_since(t0));
                    Ok(())
                }
            })
            .buffer_unordered(32)
            .collect()
            .await;
    let submit_end = ms_since(t0);
    let create_errors = created.iter().filter(|r| r.is_err()).count();
    if let Some(Err(e)) = created.into_iter().find(Result::is_err) {
        eprintln!("e2e: {create_errors} creates failed, first: {e:#}");
    }

    // Wait until every run is attached (or ended without provenance).
    let deadline = Instant::now() + timeout;
    loop {
        let done = {
            let t = lock(&times);
            t.attached.len() + t.failed.len()
        };
        // Dead runs are never attached: only the healthy ones are waited for.
        if done >= healthy_n.saturating_sub(create_errors) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let end = ms_since(t0);
    tokio::time::sleep(SAMPLE_EVERY).await;
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    let stats = proc_stats(pid)?;
    let final_metrics = get_metrics(&http, controller.port)
        .await
        .unwrap_or_default();
    let incomplete = lock(&times).attached.len() < healthy_n;
    if incomplete {
        let log = controller.log_text();
        // Warnings, errors and provenance lines first: they say why.
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| {
                !l.contains("\"level\":\"INFO\"") || l.contains("provenance") || l.contains("key")
            })
            .collect();
        eprintln!(
            "e2e: not every run was attached; controller log tail:\n{}",
            lines[lines.len().saturating_sub(30)..].join("\n")
        );
    }
    // Every warning of the controller goes into the report: retries and errors explain outliers.
    let warnings: Vec<String> = controller
        .log_text()
        .lines()
        .filter(|l| l.contains("\"level\":\"WARN") || l.contains("\"level\":\"ERROR"))
        .map(str::to_string)
        .collect();
    if !warnings.is_empty() {
        println!("controller warnings: {} (in the report)", warnings.len());
    }
    watch.abort();
    let _ = controller.terminate(Duration::from_secs(20)).await;
    let _ = sim.shutdown().await;

    // Figures.
    let t = lock(&times);
    let mut lags = Vec::new();
    let mut per_run = Vec::new();
    for (name, finished) in &t.finished {
        if let Some(attached) = t.attached.get(name) {
            lags.push(attached - finished);
            per_run.push(json!({"run": name, "submitted_ms": t.submitted.get(name),
                "finished_ms": finished, "attached_ms": attached}));
        }
    }
    // Where the lag goes: finished → Succeeded seen → Signed seen → Attached seen.
    let segment = |from: &HashMap<String, f64>, to: &HashMap<String, f64>| -> Vec<f64> {
        from.iter()
            .filter_map(|(k, a)| to.get(k).map(|b| b - a))
            .collect()
    };
    let seg_observe = segment(&t.finished, &t.succeeded);
    let seg_sign = segment(&t.succeeded, &t.signed);
    let seg_attach = segment(&t.signed, &t.attached);
    let attached = t.attached.len();
    let failed: BTreeMap<String, String> = t.failed.clone().into_iter().collect();
    let first_submit = t.submitted.values().copied().fold(f64::INFINITY, f64::min);
    let last_attached = t.attached.values().copied().fold(0.0, f64::max);
    drop(t);
    let span_s = ((last_attached - first_submit) / 1e3).max(1e-3);
    let attest_per_s = attached as f64 / span_s;
    let submit_per_s = n as f64 / ((submit_end - submit_start) / 1e3).max(1e-3);
    let samples = samples.lock().unwrap_or_else(|p| p.into_inner()).clone();
    // Drains continuously: after the last submission, the backlog never rises between samples.
    let after: Vec<f64> = samples
        .iter()
        .filter(|s| s.t_ms >= submit_end)
        .filter_map(|s| s.backlog)
        .collect();
    let rises = after.windows(2).filter(|w| w[1] > w[0]).count();
    let drains = !after.is_empty() && rises == 0 && after.last().copied() == Some(0.0);
    let series_text: Vec<String> = samples
        .iter()
        .map(|s| format!("{}", s.backlog.map_or(-1.0, |b| b)))
        .collect();
    println!(
        "backlog every {} ms (submission ended at sample {}): {}",
        SAMPLE_EVERY.as_millis(),
        samples.iter().take_while(|s| s.t_ms < submit_end).count(),
        series_text.join(" ")
    );

    let p = |v: &[f64], q: f64| percentile(v, q);
    let patch_p50 = median(&patch_ms);
    let base = |q: f64| p(&bare_ms, q) + p(&patch_ms, q);
    let mut rows = Vec::new();
    for (label, q) in [("p50", 50.0), ("p95", 95.0), ("p99", 99.0)] {
        let fig = p(&lags, q);
        let b = base(q);
        // A burst outruns any registry by construction: its targets are information only.
        let target = if q == 99.0 && !burst {
            Some(("< 2000 ms", !lags.is_empty() && fig < LAG_TARGET_MS))
        } else {
            None
        };
        rows.push(Row {
            metric: format!("completion → attached {label}"),
            figure: fmt_ms(fig),
            baseline: format!(
                "{} (bare resolve+attach + status patch, {label})",
                fmt_ms(b)
            ),
            ratio: Some(fig / b.max(1e-9)),
            target: target.map(|t| t.0.to_string()).unwrap_or_default(),
            met: target.map(|t| t.1),
        });
    }
    let max_lag = lags.iter().copied().fold(0.0, f64::max);
    rows.push(Row {
        metric: "completion → attached max".into(),
        figure: fmt_ms(max_lag),
        baseline: format!("{} (max)", fmt_ms(base(100.0))),
        ratio: Some(max_lag / base(100.0).max(1e-9)),
        target: String::new(),
        met: None,
    });
    rows.push(Row {
        metric: "attestations/s (first submit → last attached)".into(),
        figure: format!("{attest_per_s:.1}/s ({attached}/{n} attached)"),
        baseline: format!("{submit_per_s:.1}/s submitted"),
        ratio: Some(attest_per_s / submit_per_s.max(1e-9)),
        target: format!("all {healthy_n} attached"),
        met: Some(attached == healthy_n),
    });
    rows.push(Row {
        metric: "backlog after submission ended".into(),
        figure: format!(
            "max {} during, {} rises after, last {}",
            samples.iter().filter_map(|s| s.backlog).fold(0.0, f64::max),
            rises,
            after.last().copied().unwrap_or(-1.0)
        ),
        baseline: String::new(),
        ratio: None,
        target: if burst {
            "(burst: information)".into()
        } else if blackholed {
            "(dead runs stay queued: information)".into()
        } else {
            "never grows, drains to 0".into()
        },
        met: (!burst && !blackholed).then_some(drains),
    });
    rows.push(Row::info(
        "last submission → last attached",
        fmt_ms(last_attached - submit_end),
    ));
    rows.push(Row {
        metric: "controller peak RSS (VmHWM)".into(),
        figure: format!("{:.1} MiB", mib(stats.vm_hwm_kib)),
        baseline: format!("{:.1} MiB idle (ready, 0 runs)", mib(idle.vm_rss_kib)),
        ratio: Some(mib(stats.vm_hwm_kib) / mib(idle.vm_rss_kib).max(1e-9)),
        target: String::new(),
        met: None,
    });
    let cpu_s = stats.cpu_s - idle.cpu_s;
    let cpu_ms_per_run = cpu_s * 1e3 / attached.max(1) as f64;
    rows.push(Row {
        metric: "controller CPU".into(),
        figure: format!("{cpu_s:.2} s ({cpu_ms_per_run:.2} ms/run)"),
        baseline: format!("{bare_cpu_ms:.2} ms/op bare sign+resolve+attach"),
        ratio: Some(cpu_ms_per_run / bare_cpu_ms.max(1e-9)),
        target: String::new(),
        met: None,
    });
    let seg = |v: &[f64]| {
        format!(
            "p50 {:.0} / p99 {:.0} ms",
            percentile(v, 50.0),
            percentile(v, 99.0)
        )
    };
    rows.push(Row::info(
        "lag split: pod done → Succeeded seen",
        seg(&seg_observe),
    ));
    rows.push(Row::info(
        "lag split: Succeeded → Signed (resolve, sign, persist)",
        seg(&seg_sign),
    ));
    rows.push(Row::info(
        "lag split: Signed → Attached (registry writes)",
        seg(&seg_attach),
    ));
    print_table(
        &format!(
            "Benchmark 3: end to end, {n} runs {}{} (controller --kube-api-qps={QPS} --kube-api-burst={BURST})",
            rate.map_or("in one burst".to_string(), |r| format!("at {r}/s")),
            match half {
                Half::Blackholed =>
                    format!(", {} of them to a blackholed registry host", n - healthy_n),
                Half::Skipped => format!(", {} of them not submitted (baseline)", n - healthy_n),
                Half::Healthy => String::new(),
            }
        ),
        &rows,
    );
    if !failed.is_empty() {
        println!("runs without provenance: {failed:?}");
    }

    let raw = json!({
        "runs": n,
        "burst": burst,
        "blackholed_runs": n - healthy_n,
        "submit_rate_per_s": rate,
        "kube_api_qps": QPS,
        "kube_api_burst": BURST,
        "controller_binary": binary.display().to_string(),
        "create_errors": create_errors,
        "attached": attached,
        "without_provenance": failed,
        "lag_ms": {"p50": p(&lags, 50.0), "p95": p(&lags, 95.0), "p99": p(&lags, 99.0),
                   "max": max_lag, "count": lags.len()},
        "baseline": {
            "bare_resolve_attach_ms": {"p50": median(&bare_ms), "p95": p(&bare_ms, 95.0),
                "p99": p(&bare_ms, 99.0), "max": p(&bare_ms, 100.0), "n": bare_ms.len()},
            "bare_cpu_ms_per_op_incl_signing": bare_cpu_ms,
            "status_patch_ms": {"p50": patch_p50, "p95": p(&patch_ms, 95.0),
                "p99": p(&patch_ms, 99.0), "max": p(&patch_ms, 100.0), "n": patch_ms.len()},
        },
        "lag_split_ms": {
            "finished_to_succeeded": {"p50": p(&seg_observe, 50.0), "p99": p(&seg_observe, 99.0)},
            "succeeded_to_signed": {"p50": p(&seg_sign, 50.0), "p99": p(&seg_sign, 99.0)},
            "signed_to_attached": {"p50": p(&seg_attach, 50.0), "p99": p(&seg_attach, 99.0)},
        },
        "attestations_per_s": attest_per_s,
        "submitted_per_s": submit_per_s,
        "submit_window_ms": [submit_start, submit_end],
        "end_ms": end,
        "backlog": {"sample_every_ms": SAMPLE_EVERY.as_millis() as u64, "drains_continuously": drains,
                    "rises_after_submission": rises, "samples": samples},
        "controller": {"idle_rss_mib": mib(idle.vm_rss_kib), "vm_hwm_mib": mib(stats.vm_hwm_kib),
                       "vm_rss_mib": mib(stats.vm_rss_kib), "cpu_s": cpu_s,
                       "cpu_ms_per_run": cpu_ms_per_run},
        "controller_metrics": {
            "reconcile_duration": series(&final_metrics, "provenant_reconcile_duration_seconds_"),
            "reconcile_errors": series(&final_metrics, "provenant_reconcile_errors_total"),
            "registry_requests": series(&final_metrics, "provenant_registry_request_duration_seconds_count"),
            "registry_seconds": series(&final_metrics, "provenant_registry_request_duration_seconds_sum"),
            "signing": series(&final_metrics, "provenant_signing_duration_seconds_"),
            "provenance_lag": series(&final_metrics, "provenant_provenance_lag_seconds_"),
            "attestations": series(&final_metrics, "provenant_attestations_total"),
        },
        "controller_warnings": warnings,
        "per_run": per_run,
    });
    let report = match name {
        "burst" => "e2e-burst",
        "blackhole" => "e2e-blackhole",
        "blackhole-baseline" => "e2e-blackhole-baseline",
        _ => "e2e",
    };
    write_report(report, if full { "full" } else { "short" }, &rows, raw)?;
    if let Some(dead) = &dead {
        println!(
            "blackholed host {}: {} connections accepted, none answered",
            dead.host,
            dead.accepted()
        );
    }
    Ok(p(&lags, 99.0))
}

// ---------------------------------------------------------------------------------------------
// Benchmark 4: scale of the cache

const T_START: &str = "2026-11-20T10:00:00Z";
const T_END: &str = "2026-11-20T10:05:00Z";

/// The status of a run that finished long ago: Succeeded, 1 worker, provenance Attached.
fn finished_status(name: &str, repository: &str, i: usize) -> Value {
    let digest = format!("sha256:{i:064x}");
    let tag = digest.replace(':', "-");
    let uri = format!("{repository}:{name}@{digest}");
    let condition = |type_: &str, reason: &str| {
        json!({"type": type_, "status": "True", "reason": reason, "message": "",
               "lastTransitionTime": T_END, "observedGeneration": 1})
    };
    json!({
        "phase": "Succeeded",
        "startTime": T_START,
        "completionTime": T_END,
        "observedGeneration": 1,
        "conditions": [
            condition("Succeeded", "AllWorkersSucceeded"),
            condition("MaterialsRecorded", "Recorded"),
            condition("ProvenanceSigned", "Signed"),
            condition("ProvenanceAttached", "Attached"),
        ],
        "workers": [{
            "podName": format!("{name}-0"), "rank": 0, "nodeName": "cpu-0",
            "phase": "Succeeded", "exitCode": 0, "reason": "Completed",
            "startedAt": T_START, "finishedAt": T_END,
            "containers": [{"name": "trainer", "image": IMAGE,
                "digest": IMAGE.split_once('@').map_or("", |(_, d)| d),
                "imageId": IMAGE}],
            "reportDigest": format!("sha256:{:064x}", i + 1),
            "report": {"outputs": [uri.clone()], "metrics": {"accuracy": 0.93}},
        }],
        "materials": {
            "datasets": [{"name": "churn", "uri": "s3://acme/churn.csv",
                "digest": "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                "sources": ["Declared"]}],
            "images": [{"image": IMAGE, "digest": IMAGE.split_once('@').map_or("", |(_, d)| d)}],
        },
        "outputs": [{"uri": uri, "repository": repository, "digest": digest, "verified": true}],
        "provenance": {
            "state": "Attached",
            "predicateType": "https://slsa.dev/provenance/v1",
            "envelopeDigest": format!("sha256:{:064x}", i + 2),
            "keyId": "bench",
            "envelopeConfigMap": format!("{name}-provenance"),
            "attestations": [format!("{repository}:{tag}.att"), format!("{repository}:{tag}.sig"),
                             format!("{repository}@sha256:{:064x}", i + 3)],
            "signedAt": T_END,
            "attachedAt": T_END,
        },
    })
}

/// Creates run `i` (status Succeeded, Attached, no finalizer) and its succeeded worker pod (the
/// controller's own pod plan, so labels, ownerReference and spec are what it would create).
async fn create_finished(
    cluster: &Cluster,
    config: &ControllerConfig,
    repository: &str,
    i: usize,
) -> Result<()> {
    let runs = cluster.api::<TrainingRun>();
    let pods = cluster.api::<Pod>();
    let name = format!("done-{i:05}");
    let created = runs
        .create(
            &PostParams::default(),
            &training_run(&name, i as u64, repository)?,
        )
        .await
        .with_context(|| format!("creating {name}"))?;
    let status = json!({"status": finished_status(&name, repository, i)});
    runs.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .with_context(|| format!("status of {name}"))?;
    let plan =
        provenant::execute::plan(&created, config).map_err(|e| anyhow!("plan {name}: {e}"))?;
    let mut pod = plan
        .pods
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("plan of {name} has no pod"))?;
    if let Some(spec) = pod.spec.as_mut() {
        spec.node_name = Some("cpu-0".into());
    }
    let pod_name = pod.name_any();
    pods.create(&PostParams::default(), &pod)
        .await
        .with_context(|| format!("creating pod {pod_name}"))?;
    let pod_status = json!({"status": {
        "phase": "Succeeded",
        "startTime": T_START,
        "hostIP": "10.0.0.1",
        "podIP": "10.1.0.1",
        "conditions": [
            {"type": "Initialized", "status": "True", "lastTransitionTime": T_START},
            {"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": T_END},
            {"type": "ContainersReady", "status": "False", "reason": "PodCompleted", "lastTransitionTime": T_END},
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": T_START},
        ],
        "containerStatuses": [{
            "name": "trainer", "image": IMAGE, "imageID": IMAGE,
            "containerID": format!("containerd://{i:064x}"),
            "ready": false, "started": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                "message": format!("{{\"outputs\":[{{\"uri\":\"{repository}:{name}@sha256:{i:064x}\"}}]}}"),
                "startedAt": T_START, "finishedAt": T_END,
                "containerID": format!("containerd://{i:064x}")}},
        }],
    }});
    pods.patch_status(
        &pod_name,
        &PatchParams::default(),
        &Patch::Merge(&pod_status),
    )
    .await
    .with_context(|| format!("status of pod {pod_name}"))?;
    Ok(())
}

/// Starts the controller, waits until it counts `runs` Succeeded runs in its cache and its
/// reconciles have settled; returns (stats, seconds from start to everything listed, metrics).
async fn measure_controller(
    binary: &Path,
    cluster: &Cluster,
    identity: &str,
    flags: &[&str],
    runs: usize,
) -> Result<(ProcStats, f64, String)> {
    let started = Instant::now();
    let mut controller = ControllerProcess::start(binary, cluster, identity, flags)?;
    controller.wait_ready(Duration::from_secs(60)).await?;
    let pid = controller
        .pid()
        .ok_or_else(|| anyhow!("controller has no pid"))?;
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    let series_name = "provenant_trainingruns{phase=\"Succeeded\"}";
    let listed_s = loop {
        let text = get_metrics(&http, controller.port)
            .await
            .unwrap_or_default();
        let have = metric(&text, series_name).unwrap_or(0.0);
        if have >= runs as f64 && (runs > 0 || text.contains("provenant_")) {
            break started.elapsed().as_secs_f64();
        }
        if Instant::now() > deadline {
            bail!(
                "controller listed {have} of {runs} runs after 300 s:\n{}",
                controller.log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Let the initial reconcile of every run finish: the reconcile count stops moving.
    let mut last = -1.0;
    for _ in 0..120 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let text = get_metrics(&http, controller.port)
            .await
            .unwrap_or_default();
        let count = metric(&text, "provenant_reconcile_duration_seconds_count").unwrap_or(0.0);
        if count == last && count >= runs as f64 {
            break;
        }
        last = count;
    }
    let stats = proc_stats(pid)?;
    let text = get_metrics(&http, controller.port)
        .await
        .unwrap_or_default();
    controller
        .terminate(Duration::from_secs(20))
        .await
        .context("stopping the controller")?;
    Ok((stats, listed_s, text))
}

async fn scale(full: bool, binary: &Path) -> Result<()> {
    let m: usize = if full { RSS_TARGET_RUNS } else { 2_000 };
    println!(
        "scale: {m} finished runs + {m} succeeded pods, controller {}",
        binary.display()
    );
    let cluster = Cluster::start().await?;
    create_key_secret(&cluster).await?;
    let repository = "registry.example.com/models/bench";
    let config_path = write_config(
        &cluster,
        "bench-scale",
        "provenance:\n  enabled: true\n  registry:\n    insecure: [\"registry.example.com\"]\n",
    )?;
    let flags = [
        format!("--config={}", config_path.display()),
        format!("--kube-api-qps={QPS}"),
        format!("--kube-api-burst={BURST}"),
    ];
    let flag_refs: Vec<&str> = flags.iter().map(String::as_str).collect();

    // Baseline: the same binary, same flags, with no runs.
    let (empty, _, _) = measure_controller(binary, &cluster, "bench-empty", &flag_refs, 0).await?;

    let config = ControllerConfig::defaults();
    let t = Instant::now();
    let results: Vec<Result<()>> = futures::stream::iter(0..m)
        .map(|i| create_finished(&cluster, &config, repository, i))
        .buffer_unordered(32)
        .collect()
        .await;
    let populate_s = t.elapsed().as_secs_f64();
    let errors = results.iter().filter(|r| r.is_err()).count();
    if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
        bail!("{errors} of {m} runs could not be created; first: {e:#}");
    }
    println!("scale: created {m} runs + {m} pods in {populate_s:.1} s");

    let (loaded, listed_s, text) =
        measure_controller(binary, &cluster, "bench-loaded", &flag_refs, m).await?;
    let rss0 = mib(empty.vm_rss_kib);
    let rss = mib(loaded.vm_rss_kib);
    let hwm = mib(loaded.vm_hwm_kib);
    let per_run_kib = (loaded.vm_rss_kib as f64 - empty.vm_rss_kib as f64) / m as f64;
    let per_run_hwm_kib = (loaded.vm_hwm_kib as f64 - empty.vm_hwm_kib as f64) / m as f64;
    let at_target = |base: f64, per: f64| base + per * RSS_TARGET_RUNS as f64 / 1024.0;
    let (rss_10k, hwm_10k) = if m == RSS_TARGET_RUNS {
        (rss, hwm)
    } else {
        (
            at_target(rss0, per_run_kib),
            at_target(mib(empty.vm_hwm_kib), per_run_hwm_kib),
        )
    };
    let how = if m == RSS_TARGET_RUNS {
        "measured".to_string()
    } else {
        format!("extrapolated linearly from {m}")
    };
    let rows = vec![
        Row::check(
            format!("controller RSS (VmRSS) at {RSS_TARGET_RUNS} runs ({how})"),
            format!("{rss_10k:.1} MiB"),
            format!("{rss0:.1} MiB with 0 runs"),
            rss_10k / rss0.max(1e-9),
            "< 150 MiB",
            rss_10k < RSS_TARGET_MIB,
        ),
        Row {
            metric: format!("controller peak RSS (VmHWM) at {RSS_TARGET_RUNS} runs ({how})"),
            figure: format!("{hwm_10k:.1} MiB"),
            baseline: format!("{:.1} MiB with 0 runs", mib(empty.vm_hwm_kib)),
            ratio: Some(hwm_10k / mib(empty.vm_hwm_kib).max(1e-9)),
            target: "(info: includes the start-up peak)".into(),
            met: None,
        },
        Row::info(
            format!("measured at {m} runs: VmRSS / VmHWM"),
            format!("{rss:.1} / {hwm:.1} MiB ({per_run_kib:.2} KiB/run RSS)"),
        ),
        Row::info(
            "start → all runs counted in the cache",
            format!("{listed_s:.2} s"),
        ),
    ];
    print_table(
        &format!("Benchmark 4: cache scale, {m} finished runs + {m} pods in the API double"),
        &rows,
    );
    let raw = json!({
        "runs": m,
        "pods": m,
        "extrapolated": m != RSS_TARGET_RUNS,
        "populate_s": populate_s,
        "empty": {"vm_rss_mib": rss0, "vm_hwm_mib": mib(empty.vm_hwm_kib), "cpu_s": empty.cpu_s},
        "loaded": {"vm_rss_mib": rss, "vm_hwm_mib": hwm, "cpu_s": loaded.cpu_s, "listed_s": listed_s},
        "per_run_kib": {"rss": per_run_kib, "hwm": per_run_hwm_kib},
        "at_10000": {"vm_rss_mib": rss_10k, "vm_hwm_mib": hwm_10k},
        "controller_binary": binary.display().to_string(),
        "kube_api_qps": QPS,
        "kube_api_burst": BURST,
        "controller_metrics": {
            "trainingruns": series(&text, "provenant_trainingruns"),
            "reconcile_duration": series(&text, "provenant_reconcile_duration_seconds_"),
        },
    });
    write_report("scale", if full { "full" } else { "short" }, &rows, raw)?;
    Ok(())
}
