//! Issue 13, item 5: large runs get their provenance. A 1,024-worker run on GPU nodes labelled as
//! the NVIDIA GPU operator labels them is accepted, recorded (its status must fit etcd's 1.5 MiB
//! request limit), signed and attached, with every worker's node facts in the statement; a run
//! whose signed record cannot fit a ConfigMap fails its provenance for good, with the size and the
//! limit, and releases its finalizer.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject};
use provenant::api::{Phase, ProvenanceState, TrainingRun};
use provenant::provenance::statement::Statement;
use provenant::signing::{Envelope, PublicKey, verify_envelope};
use provenant_testbed::cluster::{ControllerProcess, eventually};
use provenant_testbed::kubelet::{KubeletSim, PodOutcome, Scenario, SimNode};
use serde_json::{Value, json};

use crate::provenance::{MODEL_REPO, World};
use crate::support::*;

const WORKERS: usize = 1024;
const GPUS_PER_NODE: usize = 8;
/// Long enough for 1,024 pods through a real API server on a small machine.
const LARGE_TIMEOUT: Duration = Duration::from_secs(240);

/// The node's GPU feature discovery timestamp: it differs from node to node, as in a cluster.
fn gfd_timestamp(node: usize) -> String {
    (1_732_099_200 + node * 37).to_string()
}

/// An H100 node as the NVIDIA GPU operator labels it: GPU feature discovery's labels (about 40)
/// and the operator's `gpu.deploy.*` ones.
fn gpu_operator_node(i: usize) -> SimNode {
    let mut node = SimNode::nvidia(
        format!("gpu-{i}"),
        "NVIDIA-H100-80GB-HBM3",
        GPUS_PER_NODE as u32,
    )
    .instance_type("p5.48xlarge")
    .label("nvidia.com/gfd.timestamp", &gfd_timestamp(i));
    for (key, value) in [
        ("cuda.driver-version.full", "535.104.05"),
        ("cuda.driver-version.major", "535"),
        ("cuda.driver-version.minor", "104"),
        ("cuda.driver-version.revision", "05"),
        ("cuda.runtime-version.full", "12.2"),
        ("cuda.runtime-version.major", "12"),
        ("cuda.runtime-version.minor", "2"),
        ("gpu.compute.major", "9"),
        ("gpu.compute.minor", "0"),
        ("gpu.family", "hopper"),
        ("gpu.machine", "p5.48xlarge"),
        ("gpu.mode", "compute"),
        ("gpu.replicas", "1"),
        ("gpu.sharing-strategy", "none"),
        ("mig.capable", "true"),
        ("mig.config", "all-disabled"),
        ("mig.config.state", "success"),
        ("mig.strategy", "single"),
        ("mps.capable", "false"),
        ("vgpu.present", "false"),
        ("gpu.deploy.container-toolkit", "true"),
        ("gpu.deploy.dcgm", "true"),
        ("gpu.deploy.dcgm-exporter", "true"),
        ("gpu.deploy.device-plugin", "true"),
        ("gpu.deploy.driver", "true"),
        ("gpu.deploy.gpu-feature-discovery", "true"),
        ("gpu.deploy.mig-manager", "true"),
        ("gpu.deploy.node-status-exporter", "true"),
        ("gpu.deploy.operator-validator", "true"),
        ("gpu-driver-upgrade-state", "upgrade-done"),
    ] {
        node = node.label(&format!("nvidia.com/{key}"), value);
    }
    node
}

/// Nodes enough for `WORKERS` one-GPU workers; rank 0 pushes the model and reports it, every
/// other worker reports its metrics.
async fn gpu_cluster_kubelet(world: &World) -> Result<KubeletSim> {
    let registry = world.registry.clone();
    let repository = world.repository();
    let scenario = Scenario::new()
        .namespace(&world.cluster.namespace)
        .nodes(WORKERS / GPUS_PER_NODE, gpu_operator_node)
        .outcome_fn(move |pod| {
            let rank: usize = pod
                .labels()
                .get("provenant.dev/rank")
                .and_then(|r| r.parse().ok())
                .unwrap_or(usize::MAX);
            let outcome = PodOutcome::succeed()
                .after(Duration::from_millis(200))
                .image_digest("trainer", IMAGE_DIGEST);
            if rank != 0 {
                let loss = 1.0 + rank as f64 / 4096.0;
                return outcome.message(json!({"metrics": {"loss": loss}}).to_string());
            }
            let registry = registry.clone();
            let repository = repository.clone();
            outcome.before_exit(move |_pod| {
                let registry = registry.clone();
                let repository = repository.clone();
                async move {
                    let model = registry
                        .push_model(MODEL_REPO, "v1", &[("model.safetensors", b"weights")])
                        .await?;
                    Ok(json!({
                        "outputs": [{"uri": format!("{repository}:v1@{}", model.digest)}],
                        "metrics": {"loss": 1.0},
                    })
                    .to_string())
                }
            })
        });
    KubeletSim::start(world.cluster.client.clone(), scenario).await
}

/// The run as the API server stores it (managedFields included), in bytes of JSON.
async fn stored_size(world: &World, name: &str) -> Result<usize> {
    let resource = ApiResource::erase::<TrainingRun>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(
        world.cluster.client.clone(),
        &world.cluster.namespace,
        &resource,
    );
    Ok(serde_json::to_vec(&api.get(name).await?)?.len())
}

/// Wait (polling every second: the object is large) for the run's provenance to be Attached;
/// fail at once on a failure, and say where the run stood on a timeout.
async fn wait_attached(
    world: &World,
    name: &str,
    controller: &ControllerProcess,
) -> Result<TrainingRun> {
    let api = world.cluster.api::<TrainingRun>();
    let start = Instant::now();
    let deadline = start + LARGE_TIMEOUT;
    let mut succeeded = None;
    loop {
        let run = api.get(name).await?;
        let status = run.status.clone().unwrap_or_default();
        let state = status.provenance.as_ref().map(|p| p.state);
        if status.phase == Some(Phase::Succeeded) && succeeded.is_none() {
            succeeded = Some(start.elapsed());
        }
        if state == Some(ProvenanceState::Attached) {
            eprintln!(
                "{name}: Succeeded after {:.1} s, Attached after {:.1} s",
                succeeded.unwrap_or_default().as_secs_f64(),
                start.elapsed().as_secs_f64()
            );
            return Ok(run);
        }
        let failed = status.phase == Some(Phase::Failed) || state == Some(ProvenanceState::Failed);
        if failed || Instant::now() > deadline {
            let log = controller.log_text();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            bail!(
                "{name}: phase {:?}, provenance {state:?}, {} workers recorded, conditions {:?}\n\
                 controller log (last lines, newest first):\n{}",
                status.phase,
                status.workers.len(),
                status.conditions,
                tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn a_1024_worker_gpu_run_gets_its_provenance() -> Result<()> {
    let world = World::start(true).await?;
    let sim = gpu_cluster_kubelet(&world).await?;
    let controller = world
        .controller_with("a", &["--kube-api-qps=500", "--kube-api-burst=1000"])
        .await?;
    let mut run = world.run("llm");
    run.spec.replicas = WORKERS as i32;
    run.spec.accelerator.as_mut().context("accelerator")?.count = 1;
    create(&world.cluster, &run)
        .await
        .context("the API server accepts a 1,024-worker run")?;

    let attached = wait_attached(&world, "llm", &controller).await?;
    let size = stored_size(&world, "llm").await?;
    let record = world
        .cluster
        .controller_api::<ConfigMap>()
        .get(&format!("provenance-{}", attached.uid().context("uid")?))
        .await?;
    let record_size: usize = record
        .binary_data
        .iter()
        .flatten()
        .map(|(_, v)| v.0.len())
        .sum::<usize>()
        + record
            .data
            .iter()
            .flatten()
            .map(|(_, v)| v.len())
            .sum::<usize>();
    eprintln!(
        "1,024 workers: the run takes {size} bytes in the API server, its signed record \
         {record_size} bytes (envelope {} bytes before compression)",
        world.att_envelopes(&World::model_digest(&attached)).await?[0].len(),
    );
    let status = attached.status.clone().context("status")?;
    assert_eq!(status.phase, Some(Phase::Succeeded));
    assert_eq!(status.workers.len(), WORKERS, "every worker recorded");
    assert!(
        size < 1024 * 1024,
        "the run takes {size} bytes, too close to etcd's 1.5 MiB"
    );

    // The attached envelope is the controller's, and names every worker with its node's facts.
    let envelopes = world.att_envelopes(&World::model_digest(&attached)).await?;
    assert_eq!(envelopes.len(), 1);
    let key = PublicKey::from_pem(&world.public_pem)?;
    let payload = verify_envelope(&Envelope::from_json(&envelopes[0])?, &key)
        .context("the envelope verifies with the controller's key")?;
    let statement: Statement = serde_json::from_slice(&payload)?;
    let byproducts = &statement.predicate.run_details.byproducts;
    assert_eq!(byproducts.len(), WORKERS, "one byproduct per worker");
    let node_index: BTreeMap<String, usize> = sim
        .node_names()
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), i))
        .collect();
    let mut ranks = Vec::new();
    for b in byproducts {
        let annotations: Value = serde_json::from_str(b.annotations.as_str())?;
        let observed = &annotations["observed"];
        let node = observed["node"].as_str().context("a node")?;
        let i = *node_index.get(node).context("a node of the cluster")?;
        let accelerator = &observed["accelerator"];
        assert_eq!(accelerator["product"], "NVIDIA-H100-80GB-HBM3", "{b:?}");
        assert_eq!(accelerator["allocated"], 1, "{b:?}");
        assert_eq!(
            accelerator["labels"]["nvidia.com/gfd.timestamp"],
            gfd_timestamp(i).as_str(),
            "{node}: its own labels"
        );
        assert_eq!(accelerator["labels"].as_object().map(|l| l.len()), Some(41));
        assert_eq!(observed["exitCode"], 0);
        assert_eq!(observed["containers"][0]["digest"], IMAGE_DIGEST);
        assert!(
            annotations["reported"]["metrics"]["loss"].is_number(),
            "{b:?}"
        );
        ranks.push(observed["rank"].as_u64().context("a rank")?);
    }
    ranks.sort_unstable();
    assert_eq!(ranks, (0..WORKERS as u64).collect::<Vec<_>>());
    sim.shutdown().await?;
    Ok(())
}

/// Incompressible text: what gzip cannot shrink, as a tenant would choose it.
fn noise(len: usize) -> String {
    const ALPHABET: &[u8] =
        b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&()*+,-./:;<=>?@[]^_{|}~";
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            // xorshift64*
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let x = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
            ALPHABET[(x >> 33) as usize % ALPHABET.len()] as char
        })
        .collect()
}

#[tokio::test]
async fn a_record_too_large_to_store_fails_the_provenance_for_good() -> Result<()> {
    let world = World::start(true).await?;
    let sim = world.kubelet(|| {}).await?;
    let _controller = world.controller("a").await?;
    // 1.2 MB of incompressible hyperparameters: the run fits etcd, its signed record (the
    // statement records them) cannot fit a ConfigMap even gzip-compressed.
    let mut run = world.run("huge");
    run.spec.replicas = 1;
    run.spec.hyperparameters = Some(serde_json::Map::from_iter([(
        "vocabulary".to_string(),
        Value::String(noise(1_200_000)),
    )]));
    let created = create(&world.cluster, &run).await?;
    let failed = world
        .wait_provenance("huge", ProvenanceState::Failed)
        .await?;
    assert_eq!(
        failed.status.as_ref().and_then(|s| s.phase),
        Some(Phase::Succeeded),
        "the run itself succeeded"
    );
    let (value, reason, message) =
        condition(&failed, "ProvenanceSigned").context("ProvenanceSigned")?;
    assert_eq!(
        (value.as_str(), reason.as_str()),
        ("False", "ProvenanceTooLarge")
    );
    let size: usize = message
        .split_once("takes ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("the size in {message:?}"))?;
    assert!(size > 1024 * 1024, "{message}");
    assert!(message.contains("limit of 1048576 bytes"), "{message}");

    // For good: the finalizer is released, nothing is persisted or attached, and it stays so.
    let api = world.cluster.api::<TrainingRun>();
    eventually(TIMEOUT, "the finalizer released", || {
        let api = api.clone();
        async move {
            let run = api.get("huge").await?;
            Ok((!run
                .finalizers()
                .iter()
                .any(|f| f == "provenant.dev/provenance"))
            .then_some(()))
        }
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = api.get("huge").await?;
    assert_eq!(
        later.status.and_then(|s| s.provenance).map(|p| p.state),
        Some(ProvenanceState::Failed)
    );
    let uid = created.uid().context("uid")?;
    let records = world.cluster.controller_api::<ConfigMap>();
    assert!(
        records
            .get_opt(&format!("provenance-{uid}"))
            .await?
            .is_none()
    );
    let tags = world.registry.list_tags(MODEL_REPO).await?;
    assert!(!tags.iter().any(|t| t.ends_with(".att")), "{tags:?}");
    sim.shutdown().await?;
    Ok(())
}

/// Worker reports are the workload's: up to 4 KB each. Reports large and distinct enough that the
/// run's status cannot be stored (etcd's 1.5 MiB request limit) used to leave the run `Pending`,
/// nothing recorded, retried forever; it now fails for good, with what was stored before, naming
/// why. Real server only: the double does not limit object sizes.
#[tokio::test]
async fn a_status_too_large_to_store_fails_the_run_for_good() -> Result<()> {
    const BIG: usize = 512;
    let world = World::start(true).await?;
    if !world.cluster.is_real() {
        eprintln!("skipped: the API-server double does not limit object sizes");
        return Ok(());
    }
    let scenario = Scenario::new()
        .namespace(&world.cluster.namespace)
        .nodes(16, |i| SimNode::new(format!("cpu-{i}")))
        .outcome_fn(move |pod| {
            let rank: usize = pod
                .labels()
                .get("provenant.dev/rank")
                .and_then(|r| r.parse().ok())
                .unwrap_or(0);
            // ~3.7 KB of distinct metric names per worker: nothing two records share.
            let names = noise(30 * 120 + rank * 7);
            let names = &names[rank * 7..];
            let metrics: serde_json::Map<String, Value> = (0..30)
                .map(|k| (format!("m{k}-{}", &names[k * 120..k * 120 + 110]), json!(k)))
                .collect();
            PodOutcome::succeed()
                .after(Duration::from_millis(200))
                .image_digest("trainer", IMAGE_DIGEST)
                .message(json!({ "metrics": metrics }).to_string())
        });
    let sim = KubeletSim::start(world.cluster.client.clone(), scenario).await?;
    let _controller = world
        .controller_with("a", &["--kube-api-qps=500", "--kube-api-burst=1000"])
        .await?;
    let mut run = world.run("chatty");
    run.spec.replicas = BIG as i32;
    run.spec.accelerator = None;
    create(&world.cluster, &run).await?;
    let api = world.cluster.api::<TrainingRun>();
    let failed = eventually(LARGE_TIMEOUT, "the run to fail", || {
        let api = api.clone();
        async move {
            let run = api.get("chatty").await?;
            let phase = run.status.as_ref().and_then(|s| s.phase);
            Ok((phase == Some(Phase::Failed)).then_some(run))
        }
    })
    .await?;
    let (_, reason, message) = condition(&failed, "Succeeded").context("Succeeded")?;
    assert_eq!(reason, "StatusTooLarge", "{message}");
    assert!(message.contains("too large to store"), "{message}");
    let recorded = failed.status.as_ref().map_or(0, |s| s.workers.len());
    assert!(
        recorded < BIG,
        "{recorded} workers recorded before the status outgrew etcd"
    );
    assert_eq!(
        failed.status.and_then(|s| s.provenance).map(|p| p.state),
        Some(ProvenanceState::Disabled),
        "a failed run owes no provenance"
    );
    sim.shutdown().await?;
    Ok(())
}
