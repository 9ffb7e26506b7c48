//! Benchmark 2, attach: attestations attached per second to a loopback distribution 2.8 registry
//! (the test bed's real `docker-registry`) through `provenant::storage::RegistryStore`, at
//! concurrency 1, 8 and 32, every request counted through `RegistryOptions::observer`; beside
//! the registry's own ceiling for the same writes, measured in the same run by a minimal reqwest
//! client that sends only the requests the protocol needs.
//!
//! What one attestation (DSSE envelope + simple signature, new model) writes, and the protocol
//! minimum for it (distribution 2.8: POST + PUT per new blob, PUT per manifest, HEAD per existing
//! blob; no referrers API, so the OCI 1.1 fallback index is a tag):
//!
//! | write | requests |
//! | --- | --- |
//! | cosign config blob (exists) | HEAD |
//! | DSSE envelope blob (new) | POST + PUT |
//! | `sha256-<hex>.att` manifest | PUT |
//! | simple-signing payload blob (new) | POST + PUT |
//! | `sha256-<hex>.sig` manifest | PUT |
//! | empty config `{}` (exists) | HEAD |
//! | referrer manifest (by digest) | PUT |
//! | fallback index `sha256-<hex>` | PUT |
//!
//! = 10 requests.
//!
//! The store is driven as the controller drives it: `resolve` of the subject (the controller
//! checks every output exists before signing), then `attach`. Both are counted, separately: the
//! `attach` requests are compared with the minimum above (same writes), `resolve + attach` is
//! what the registry serves per attestation in the controller. Timing: per round, the resolves
//! (untimed for the ceiling comparison, timed and reported on their own), then the attaches
//! (timed, compared with the minimal client).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use provenant::config::ControllerConfig;
use provenant::engine;
use provenant::execute::placement;
use provenant::provenance::{self, BuilderIdentity};
use provenant::signing::CosignKey;
use provenant::storage::{Attestation, AttestationStore, RegistryOptions, RegistryStore, Subject};
use provenant_testbed::registry::{ModelRef, Registry, sha256_digest};
use serde_json::{Value, json};

use crate::table::{Row, median, percentile, print_table, write_report};

/// Requests the protocol needs for one attestation (see the module docs).
pub const PROTOCOL_MINIMUM: u64 = 10;
/// Target: store throughput ≥ 0.8 × the ceiling.
const TARGET: f64 = 0.8;
const CONCURRENCY: [usize; 3] = [1, 8, 32];
/// Store and minimal client alternate in this many rounds per concurrency level.
const ROUNDS: usize = 4;

/// cosign's constant config of `.att`/`.sig` manifests (docs/registry-layout.md).
const COSIGN_CONFIG: &[u8] =
    br#"{"architecture":"","os":"","rootfs":{"type":"layers","diff_ids":[]},"config":{}}"#;
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DSSE_LAYER: &str = "application/vnd.dsse.envelope.v1+json";
const SIMPLE_SIGNING_LAYER: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const IN_TOTO: &str = "application/vnd.in-toto+json";

/// Requests per op, counted by the store's observer.
#[derive(Default)]
struct Counter(Mutex<BTreeMap<String, u64>>);

impl Counter {
    fn add(&self, op: &str) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry(op.to_string()).or_default() += 1;
    }
    fn take(&self) -> BTreeMap<String, u64> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

fn merge(into: &mut BTreeMap<String, u64>, from: BTreeMap<String, u64>) {
    for (op, n) in from {
        *into.entry(op).or_default() += n;
    }
}

fn per_attestation(ops: &BTreeMap<String, u64>, n: usize) -> String {
    ops.iter()
        .map(|(op, k)| format!("{op} {:.2}", *k as f64 / n as f64))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A model with the attestation to attach to it.
struct Job {
    model: ModelRef,
    attestation: Attestation,
}

async fn prepare(
    registry: &Registry,
    repo: &str,
    n: usize,
    key: &CosignKey,
    salt: &str,
) -> Result<Vec<Job>> {
    let run = crate::engine::load_fixture()?;
    let placement = placement(&ControllerConfig::defaults(), run.spec.accelerator.as_ref())
        .map_err(|e| anyhow!("placement: {e}"))?;
    let builder = BuilderIdentity {
        id: provenance::DEFAULT_BUILDER_ID.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let base = provenance::statement_for_run(&run, &placement, &builder)?;
    // The empty config first: concurrent first uploads of one blob race in distribution 2.8.
    registry
        .push_blob(repo, provenant_testbed::registry::OCI_EMPTY_BLOB)
        .await?;
    let models: Vec<Result<ModelRef>> = futures::stream::iter(0..n)
        .map(|i| async move {
            let content = format!("{salt} model {i} weights");
            registry
                .push_model(
                    repo,
                    &format!("v{i}"),
                    &[("model.safetensors", content.as_bytes())],
                )
                .await
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut jobs = Vec::with_capacity(n);
    for model in models {
        let model = model?;
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
        let record = engine::sign(&statement, key)?;
        let attestation = record
            .attestations()?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("record has no attestation"))?;
        jobs.push(Job { model, attestation });
    }
    Ok(jobs)
}

struct Measured {
    wall: Duration,
    latencies_ms: Vec<f64>,
}

impl Measured {
    fn add(&mut self, other: Measured) {
        self.wall += other.wall;
        self.latencies_ms.extend(other.latencies_ms);
    }
    fn per_s(&self, n: usize) -> f64 {
        n as f64 / self.wall.as_secs_f64()
    }
}

/// The controller's check before signing: every subject resolves (the store remembers the
/// descriptor for the `attach` that follows).
async fn run_resolve(store: &RegistryStore, jobs: &[Job], concurrency: usize) -> Result<Duration> {
    let start = Instant::now();
    let results: Vec<Result<()>> = futures::stream::iter(jobs)
        .map(|job| async move {
            let subject = Subject::new(&job.model.repository, &job.model.digest);
            store.resolve(&subject).await?;
            Ok(())
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<_>>>()?;
    Ok(start.elapsed())
}

async fn run_store(store: &RegistryStore, jobs: &[Job], concurrency: usize) -> Result<Measured> {
    let start = Instant::now();
    let results: Vec<Result<f64>> = futures::stream::iter(jobs)
        .map(|job| async move {
            let t = Instant::now();
            store.attach(&job.attestation).await?;
            Ok(t.elapsed().as_secs_f64() * 1e3)
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let wall = start.elapsed();
    let latencies_ms = results.into_iter().collect::<Result<Vec<_>>>()?;
    Ok(Measured { wall, latencies_ms })
}

/// The minimal client: exactly [`PROTOCOL_MINIMUM`] requests per attestation.
struct Minimal {
    http: reqwest::Client,
    base: String,
}

impl Minimal {
    fn url(&self, repo: &str, rest: &str) -> String {
        format!("{}/v2/{repo}/{rest}", self.base)
    }

    async fn head_blob(&self, repo: &str, digest: &str) -> Result<()> {
        let r = self
            .http
            .head(self.url(repo, &format!("blobs/{digest}")))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("HEAD blob {digest}: {}", r.status());
        }
        Ok(())
    }

    async fn upload(&self, repo: &str, bytes: &[u8]) -> Result<String> {
        let digest = sha256_digest(bytes);
        let r = self
            .http
            .post(self.url(repo, "blobs/uploads/"))
            .header("content-length", "0")
            .send()
            .await?;
        if r.status().as_u16() != 202 {
            bail!("POST upload: {}", r.status());
        }
        let location = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| anyhow!("no Location"))?;
        let mut url = if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            location.to_string()
        };
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str("digest=");
        url.push_str(&digest);
        let r = self
            .http
            .put(url)
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await?;
        if r.status().as_u16() != 201 {
            bail!("PUT blob: {}", r.status());
        }
        Ok(digest)
    }

    async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: Vec<u8>,
    ) -> Result<()> {
        let r = self
            .http
            .put(self.url(repo, &format!("manifests/{reference}")))
            .header("content-type", media_type)
            .body(body)
            .send()
            .await?;
        if r.status().as_u16() != 201 {
            bail!("PUT manifest {reference}: {}", r.status());
        }
        Ok(())
    }

    /// The same writes as one `attach` of a new model, in [`PROTOCOL_MINIMUM`] requests.
    async fn attach(&self, job: &Job) -> Result<()> {
        let repo = &job.model.repo;
        let hex = job.model.digest.trim_start_matches("sha256:");
        let a = &job.attestation;
        let sig = a
            .signature
            .as_ref()
            .ok_or_else(|| anyhow!("attestation without signature"))?;
        let config = json!({"mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha256_digest(COSIGN_CONFIG), "size": COSIGN_CONFIG.len()});
        let empty = json!({"mediaType": "application/vnd.oci.empty.v1+json",
            "digest": sha256_digest(b"{}"), "size": 2});

        self.head_blob(repo, &sha256_digest(COSIGN_CONFIG)).await?;
        let env_digest = self.upload(repo, &a.envelope).await?;
        let dsse = json!({"mediaType": DSSE_LAYER, "digest": env_digest, "size": a.envelope.len(),
            "annotations": {"dev.cosignproject.cosign/signature": "", "predicateType": a.predicate_type}});
        let att = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config,
            "layers": [dsse]});
        self.put_manifest(
            repo,
            &format!("sha256-{hex}.att"),
            OCI_MANIFEST,
            serde_json::to_vec(&att)?,
        )
        .await?;

        let payload_digest = self.upload(repo, &sig.payload).await?;
        let sig_manifest = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config,
            "layers": [{"mediaType": SIMPLE_SIGNING_LAYER, "digest": payload_digest,
                "size": sig.payload.len(),
                "annotations": {"dev.cosignproject.cosign/signature": sig.signature}}]});
        self.put_manifest(
            repo,
            &format!("sha256-{hex}.sig"),
            OCI_MANIFEST,
            serde_json::to_vec(&sig_manifest)?,
        )
        .await?;

        self.head_blob(repo, &sha256_digest(b"{}")).await?;
        let referrer = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": IN_TOTO,
            "config": empty, "layers": [dsse],
            "subject": {"mediaType": OCI_MANIFEST, "digest": job.model.digest,
                "size": job.model.manifest.len()}});
        let referrer = serde_json::to_vec(&referrer)?;
        let referrer_digest = sha256_digest(&referrer);
        let referrer_size = referrer.len();
        self.put_manifest(repo, &referrer_digest, OCI_MANIFEST, referrer)
            .await?;
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": referrer_digest, "size": referrer_size,
             "artifactType": IN_TOTO}]});
        self.put_manifest(
            repo,
            &format!("sha256-{hex}"),
            OCI_INDEX,
            serde_json::to_vec(&index)?,
        )
        .await?;
        Ok(())
    }
}

async fn run_minimal(client: &Minimal, jobs: &[Job], concurrency: usize) -> Result<Measured> {
    let start = Instant::now();
    let results: Vec<Result<f64>> = futures::stream::iter(jobs)
        .map(|job| async move {
            let t = Instant::now();
            client.attach(job).await?;
            Ok(t.elapsed().as_secs_f64() * 1e3)
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let wall = start.elapsed();
    let latencies_ms = results.into_iter().collect::<Result<Vec<_>>>()?;
    Ok(Measured { wall, latencies_ms })
}

pub fn run(full: bool) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(run_async(full))
}

async fn run_async(full: bool) -> Result<()> {
    let mode = if full { "full" } else { "short" };
    let registry = Registry::start()
        .await
        .context("starting the registry fixture (docker-registry)")?;
    let host = registry.host().to_string();
    let key = CosignKey::ephemeral()?;
    let counter = Arc::new(Counter::default());
    let observed = Arc::clone(&counter);
    let store = RegistryStore::new(RegistryOptions {
        insecure_registries: vec![host.clone()],
        observer: Some(Arc::new(move |op: &str, _elapsed: Duration, ok: bool| {
            if ok {
                observed.add(op)
            } else {
                observed.add(&format!("{op} (failed)"))
            }
        })),
        ..RegistryOptions::default()
    });
    let minimal = Minimal {
        http: reqwest::Client::new(),
        base: format!("http://{host}"),
    };

    let mut rows = Vec::new();
    let mut raw = Vec::new();
    for (level, &c) in CONCURRENCY.iter().enumerate() {
        let n = match (full, c) {
            (false, 1) => 60,
            (false, 8) => 200,
            (false, _) => 320,
            (true, 1) => 300,
            (true, 8) => 1000,
            (true, _) => 2000,
        };
        let store_repo = format!("bench/attach-c{c}");
        let min_repo = format!("bench/minimal-c{c}");
        let mut store_jobs = prepare(
            &registry,
            &store_repo,
            n + 1,
            &key,
            &format!("store{level}"),
        )
        .await?;
        let mut min_jobs = prepare(
            &registry,
            &min_repo,
            n + 1,
            &key,
            &format!("minimal{level}"),
        )
        .await?;
        // Steady state, outside the timed part: one attestation already in each repository (so
        // the cosign config blob exists, as after the first attestation in a repository; the
        // first concurrent attaches to a fresh repository race on it, see docs/benchmarks.md),
        // both clients' connection pools warm, the store's referrers-API probe done.
        let store_warm = store_jobs.pop().ok_or_else(|| anyhow!("no jobs"))?;
        let min_warm = min_jobs.pop().ok_or_else(|| anyhow!("no jobs"))?;
        run_resolve(&store, std::slice::from_ref(&store_warm), 1).await?;
        store.attach(&store_warm.attestation).await?;
        registry.push_blob(&min_repo, COSIGN_CONFIG).await?;
        minimal.attach(&min_warm).await?;
        counter.take();

        // Interleaved in rounds, alternating which goes first, so both see the same machine
        // and registry state (shared, noisy machines).
        let mut store_m = Measured {
            wall: Duration::ZERO,
            latencies_ms: Vec::new(),
        };
        let mut min_m = Measured {
            wall: Duration::ZERO,
            latencies_ms: Vec::new(),
        };
        let mut resolve_wall = Duration::ZERO;
        let mut resolve_ops = BTreeMap::new();
        let mut ops = BTreeMap::new();
        // Resolve (as the controller does before signing), then the timed attaches.
        let mut store_round = async |jobs: &[Job]| -> Result<Measured> {
            resolve_wall += run_resolve(&store, jobs, c).await?;
            merge(&mut resolve_ops, counter.take());
            let m = run_store(&store, jobs, c).await?;
            merge(&mut ops, counter.take());
            Ok(m)
        };
        let chunk = n.div_ceil(ROUNDS);
        for (round, (s_jobs, m_jobs)) in store_jobs
            .chunks(chunk)
            .zip(min_jobs.chunks(chunk))
            .enumerate()
        {
            if round % 2 == 0 {
                store_m.add(store_round(s_jobs).await?);
                min_m.add(run_minimal(&minimal, m_jobs, c).await?);
            } else {
                min_m.add(run_minimal(&minimal, m_jobs, c).await?);
                store_m.add(store_round(s_jobs).await?);
            }
        }
        let store_requests: u64 = ops.values().sum();
        let resolve_requests: u64 = resolve_ops.values().sum();
        let per_att = store_requests as f64 / n as f64;
        let per_resolve_att = (store_requests + resolve_requests) as f64 / n as f64;
        let pipeline_rate = n as f64 / (store_m.wall + resolve_wall).as_secs_f64();
        let store_rate = store_m.per_s(n);
        let min_req_rate = (n as u64 * PROTOCOL_MINIMUM) as f64 / min_m.wall.as_secs_f64();
        let ceiling = min_req_rate / PROTOCOL_MINIMUM as f64;
        let ratio = store_rate / ceiling;
        rows.push(Row::check(
            format!("attach/s, concurrency {c} ({n} attestations)"),
            format!(
                "{store_rate:.0}/s, p50 {:.1} ms, p99 {:.1} ms",
                median(&store_m.latencies_ms),
                percentile(&store_m.latencies_ms, 99.0)
            ),
            format!(
                "ceiling {ceiling:.0}/s ({min_req_rate:.0} req/s ÷ {PROTOCOL_MINIMUM}), p50 {:.1} ms, p99 {:.1} ms",
                median(&min_m.latencies_ms),
                percentile(&min_m.latencies_ms, 99.0)
            ),
            ratio,
            format!("≥ {TARGET}×"),
            ratio >= TARGET,
        ));
        let req_ratio = per_att / PROTOCOL_MINIMUM as f64;
        rows.push(Row::check(
            format!("requests/attestation (attach), concurrency {c}"),
            format!("{per_att:.2}"),
            format!("{PROTOCOL_MINIMUM} (protocol minimum, same writes)"),
            req_ratio,
            "= minimum",
            per_att <= PROTOCOL_MINIMUM as f64 + 1e-9,
        ));
        rows.push(Row::info(
            format!("  attach requests by op, concurrency {c}"),
            per_attestation(&ops, n),
        ));
        rows.push(Row::info(
            format!("requests/attestation (resolve + attach), concurrency {c}"),
            format!(
                "{per_resolve_att:.2} (resolve: {})",
                per_attestation(&resolve_ops, n)
            ),
        ));
        rows.push(Row::info(
            format!("resolve + attach/s, concurrency {c}"),
            format!(
                "{pipeline_rate:.0}/s (resolves {:.2} s + attaches {:.2} s)",
                resolve_wall.as_secs_f64(),
                store_m.wall.as_secs_f64()
            ),
        ));
        raw.push(json!({
            "concurrency": c,
            "attestations": n,
            "store": {
                "wall_s": store_m.wall.as_secs_f64(),
                "attestations_per_s": store_rate,
                "latency_ms_p50": median(&store_m.latencies_ms),
                "latency_ms_p99": percentile(&store_m.latencies_ms, 99.0),
                "requests": store_requests,
                "requests_per_attestation": per_att,
                "requests_by_op": ops,
                "resolve_wall_s": resolve_wall.as_secs_f64(),
                "resolve_requests": resolve_requests,
                "resolve_requests_by_op": resolve_ops,
                "resolve_and_attach_requests_per_attestation": per_resolve_att,
                "resolve_and_attach_per_s": pipeline_rate,
            },
            "minimal_client": {
                "wall_s": min_m.wall.as_secs_f64(),
                "requests": n as u64 * PROTOCOL_MINIMUM,
                "requests_per_s": min_req_rate,
                "attestations_per_s_ceiling": ceiling,
                "latency_ms_p50": median(&min_m.latencies_ms),
                "latency_ms_p99": percentile(&min_m.latencies_ms, 99.0),
            },
            "protocol_minimum_requests": PROTOCOL_MINIMUM,
            "ratio_to_ceiling": ratio,
            "target_ratio": TARGET,
            "met_throughput": ratio >= TARGET,
            "met_requests": per_att <= PROTOCOL_MINIMUM as f64 + 1e-9,
        }));
    }
    print_table(&format!("2. Attach ({mode}, registry {host})"), &rows);
    write_report("attach", mode, &rows, Value::Array(raw))?;
    Ok(())
}
