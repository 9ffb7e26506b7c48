//! Issue 18 (3, 4): the shipped GPU and multi-host TPU samples run as written. The simulated
//! workload plays the runtime each sample's image holds: on TPU `jax.distributed.initialize` (with
//! GKE's TPU slice detection), on GPU torchrun / `init_process_group("env://")`. It reads only its
//! pod's environment and resolves addresses the way cluster DNS does (a headless Service named the
//! subdomain that selects a pod with that hostname), waits for every process at the coordinator,
//! and fails the pod with a message if anything is off, so a wrong environment fails the run. The
//! pods carry the samples' podTemplate, and the signed statement records both.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use k8s_openapi::api::core::v1::{Pod, Service, ServiceAccount};
use kube::ResourceExt;
use kube::api::{ListParams, PostParams};
use provenant::api::{Framework, Phase, ProvenanceState, TrainingRun};
use provenant::signing::{Envelope, PublicKey, verify_envelope};
use provenant_testbed::cluster::{Cluster, eventually};
use provenant_testbed::kubelet::{KubeletSim, PodOutcome, Scenario, SimNode};
use serde_json::{Value, json};

use crate::provenance::{World, push_and_report};
use crate::support::*;

const TPU_SAMPLE: &str = "tpu-multihost-trainingrun.yaml";
const GPU_SAMPLE: &str = "gpu-trainingrun.yaml";

/// A shipped sample, changed only where this cluster differs: namespace, output repository and
/// image (the test registry's).
fn sample(world: &World, file: &str) -> Result<TrainingRun> {
    let path = format!("{}/../config/samples/{file}", env!("CARGO_MANIFEST_DIR"));
    let mut run: TrainingRun = serde_saphyr::from_str(&std::fs::read_to_string(&path)?)?;
    run.metadata.namespace = Some(world.cluster.namespace.clone());
    run.spec.output.repository = world.repository();
    run.spec.image = format!("{}/acme/train@{IMAGE_DIGEST}", world.proxy.host());
    Ok(run)
}

fn env_of(pod: &Pod) -> BTreeMap<String, String> {
    pod.spec
        .iter()
        .flat_map(|s| s.containers.first())
        .flat_map(|c| c.env.iter().flatten())
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect()
}

fn int(env: &BTreeMap<String, String>, name: &str) -> Result<i64> {
    let value = env
        .get(name)
        .with_context(|| format!("{name} is not set"))?;
    value
        .parse()
        .map_err(|_| anyhow!("{name}={value:?} is not an integer"))
}

/// The processes that reached each run's coordinator: run UID → process id → (pod, N it saw).
type Joined = Arc<Mutex<BTreeMap<String, BTreeMap<i64, (String, i64)>>>>;

/// The workload of the simulated pods: which runtime, the cluster to resolve names in, and what
/// rank 0 pushes.
#[derive(Clone)]
struct Runtime {
    client: kube::Client,
    namespace: String,
    world_registry: Arc<provenant_testbed::registry::Registry>,
    repository: String,
    joined: Joined,
}

impl Runtime {
    /// Resolves `host.subdomain` as cluster DNS does, to the one pod it names.
    async fn resolve(&self, address: &str) -> Result<Pod> {
        let (host, subdomain) = address
            .split_once('.')
            .with_context(|| format!("{address:?} is not <hostname>.<subdomain>"))?;
        let services = kube::Api::<Service>::namespaced(self.client.clone(), &self.namespace);
        let service = services
            .get_opt(subdomain)
            .await?
            .with_context(|| format!("{address}: no Service {subdomain:?}: NXDOMAIN"))?;
        let spec = service.spec.clone().unwrap_or_default();
        ensure!(
            spec.cluster_ip.as_deref() == Some("None"),
            "{address}: Service {subdomain} is not headless: no per-pod records"
        );
        let selector = spec
            .selector
            .filter(|s| !s.is_empty())
            .with_context(|| format!("{address}: Service {subdomain} selects no pods"))?;
        let selector: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let pods = kube::Api::<Pod>::namespaced(self.client.clone(), &self.namespace)
            .list(&ListParams::default().labels(&selector.join(",")))
            .await?;
        let mut named: Vec<Pod> = pods
            .items
            .into_iter()
            .filter(|p| {
                let s = p.spec.as_ref();
                s.and_then(|s| s.hostname.as_deref()) == Some(host)
                    && s.and_then(|s| s.subdomain.as_deref()) == Some(subdomain)
            })
            .collect();
        ensure!(named.len() == 1, "{address}: {} pods answer", named.len());
        // Workers rendezvous before they are ready: only then does DNS already list them.
        ensure!(
            spec.publish_not_ready_addresses == Some(true),
            "{address}: Service {subdomain} hides workers that are not ready yet"
        );
        Ok(named.remove(0))
    }

    /// The Service behind `address` exposes `port`.
    async fn exposes(&self, address: &str, port: i64) -> Result<()> {
        let subdomain = address.split_once('.').map_or(address, |(_, s)| s);
        let services = kube::Api::<Service>::namespaced(self.client.clone(), &self.namespace);
        let ports = services.get(subdomain).await?.spec.and_then(|s| s.ports);
        ensure!(
            ports.iter().flatten().any(|p| i64::from(p.port) == port),
            "{address}: Service {subdomain} does not expose port {port}"
        );
        Ok(())
    }

    /// `jax.distributed.initialize()` on a GKE TPU slice: the coordinator is process 0, and
    /// TPU_WORKER_HOSTNAMES lists every host of the slice by TPU_WORKER_ID.
    async fn jax(&self, pod: &Pod, env: &BTreeMap<String, String>) -> Result<(i64, i64)> {
        let coordinator = env
            .get("JAX_COORDINATOR_ADDRESS")
            .context("JAX_COORDINATOR_ADDRESS is not set")?;
        let n = int(env, "JAX_NUM_PROCESSES")?;
        let id = int(env, "JAX_PROCESS_ID")?;
        ensure!((0..n).contains(&id), "JAX_PROCESS_ID {id} not in 0..{n}");
        let (host, port) = coordinator
            .rsplit_once(':')
            .with_context(|| format!("JAX_COORDINATOR_ADDRESS={coordinator:?} has no port"))?;
        let port: i64 = port.parse().context("coordinator port")?;
        if n > 1 {
            let process0 = self.resolve(host).await?;
            ensure!(
                int(&env_of(&process0), "JAX_PROCESS_ID")? == 0,
                "the coordinator {host} is not process 0"
            );
            self.exposes(host, port).await?;
        }
        // TPU runtime: this host's place in the slice, and every host by id.
        let worker = int(env, "TPU_WORKER_ID")?;
        ensure!(
            worker == id,
            "TPU_WORKER_ID {worker} != JAX_PROCESS_ID {id}"
        );
        let hosts = env
            .get("TPU_WORKER_HOSTNAMES")
            .context("TPU_WORKER_HOSTNAMES is not set")?;
        let hosts: Vec<&str> = hosts.split(',').collect();
        ensure!(
            hosts.len() as i64 == n,
            "TPU_WORKER_HOSTNAMES has {} hosts, not {n}",
            hosts.len()
        );
        for (i, host) in hosts.iter().enumerate() {
            let resolved = self.resolve(host).await?;
            ensure!(
                int(&env_of(&resolved), "TPU_WORKER_ID")? == i as i64,
                "TPU_WORKER_HOSTNAMES[{i}] = {host} is not TPU worker {i}"
            );
            if i as i64 == worker {
                ensure!(
                    resolved.uid() == pod.uid(),
                    "my own entry {host} is another pod"
                );
            }
        }
        Ok((id, n))
    }

    /// torchrun / `init_process_group("env://")`: one process per pod, rank 0 listens on
    /// MASTER_ADDR:MASTER_PORT; torchrun's PET_* defaults agree.
    async fn torch(&self, env: &BTreeMap<String, String>) -> Result<(i64, i64)> {
        let (rank, world) = (int(env, "RANK")?, int(env, "WORLD_SIZE")?);
        ensure!((0..world).contains(&rank), "RANK {rank} not in 0..{world}");
        ensure!(int(env, "LOCAL_RANK")? == 0, "LOCAL_RANK is not 0");
        for (name, same_as) in [
            ("NNODES", "WORLD_SIZE"),
            ("NODE_RANK", "RANK"),
            ("PET_NNODES", "WORLD_SIZE"),
            ("PET_NODE_RANK", "RANK"),
            ("PET_MASTER_ADDR", "MASTER_ADDR"),
            ("PET_MASTER_PORT", "MASTER_PORT"),
        ] {
            ensure!(
                env.get(name).is_some() && env.get(name) == env.get(same_as),
                "{name} is not {same_as}"
            );
        }
        let master = env.get("MASTER_ADDR").context("MASTER_ADDR is not set")?;
        let port = int(env, "MASTER_PORT")?;
        if world == 1 {
            ensure!(
                master == "localhost",
                "a single process listens on localhost"
            );
        } else {
            let rank0 = self.resolve(master).await?;
            ensure!(int(&env_of(&rank0), "RANK")? == 0, "{master} is not rank 0");
            self.exposes(master, port).await?;
        }
        Ok((rank, world))
    }

    /// Join the coordinator and wait for all `n` processes, as both runtimes' barriers do.
    async fn barrier(&self, pod: &Pod, id: i64, n: i64) -> Result<()> {
        let run = pod.labels().get("provenant.dev/run-uid").cloned();
        let run = run.context("no run UID label")?;
        {
            let mut joined = self.joined.lock().unwrap();
            let processes = joined.entry(run.clone()).or_default();
            if let Some((other, _)) = processes.get(&id).filter(|(p, _)| *p != pod.name_any()) {
                bail!("process id {id} is taken by {other}");
            }
            processes.insert(id, (pod.name_any(), n));
        }
        let start = Instant::now();
        loop {
            {
                let joined = self.joined.lock().unwrap();
                let processes = &joined[&run];
                if let Some((p, m)) = processes.values().find(|(_, m)| *m != n) {
                    bail!("{p} expects {m} processes, I expect {n}");
                }
                if processes.len() as i64 == n {
                    return Ok(());
                }
            }
            ensure!(
                start.elapsed() < Duration::from_secs(30),
                "only {} of {n} processes joined",
                self.joined.lock().unwrap()[&run].len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The workload of `pod`: initialize, train, and on process 0 push the model.
    async fn train(self, pod: Pod) -> Result<String> {
        let env = env_of(&pod);
        let tpu = pod
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .flat_map(|c| c.resources.as_ref()?.limits.as_ref())
            .any(|l| l.contains_key("google.com/tpu"));
        let (id, n) = if tpu {
            self.jax(&pod, &env).await
        } else {
            self.torch(&env).await
        }
        .map_err(|e| anyhow!("distributed initialization failed: {e}"))?;
        self.barrier(&pod, id, n).await?;
        if id != 0 {
            return Ok(String::new());
        }
        let run = env.get("PROVENANT_RUN_NAME").cloned().unwrap_or_default();
        push_and_report(
            &self.world_registry,
            &self.repository,
            &run,
            &format!("weights of {run}"),
            json!({}),
        )
        .await
    }
}

/// Four v5e hosts of a 4x4 slice (4 chips each), a spot one, and two A100 nodes.
async fn kubelet(world: &World) -> Result<KubeletSim> {
    let runtime = Runtime {
        client: world.cluster.client.clone(),
        namespace: world.cluster.namespace.clone(),
        world_registry: world.registry.clone(),
        repository: world.repository(),
        joined: Arc::default(),
    };
    let tpu = |name: String| SimNode::gke_tpu(name, "tpu-v5-lite-podslice", "4x4", 4);
    let scenario = Scenario::new()
        .namespace(&world.cluster.namespace)
        // First, so that a worker that ignored the sample's affinity would land on it.
        .node(tpu("tpu-spot".into()).label("cloud.google.com/gke-spot", "true"))
        .nodes(4, |i| tpu(format!("tpu-{i}")))
        .nodes(2, |i| {
            SimNode::nvidia(format!("a100-{i}"), "NVIDIA-A100-SXM4-80GB", 8)
        })
        .outcome_fn(move |_| {
            let runtime = runtime.clone();
            PodOutcome::succeed()
                .after(Duration::from_millis(100))
                .image_digest("trainer", IMAGE_DIGEST)
                .before_exit(move |pod| runtime.clone().train(pod))
        });
    KubeletSim::start(world.cluster.client.clone(), scenario).await
}

/// The statement the controller signed for `run`, checked with its key.
async fn signed_statement(world: &World, run: &TrainingRun) -> Result<Value> {
    let envelopes = world.att_envelopes(&World::model_digest(run)).await?;
    let key = PublicKey::from_pem(&world.public_pem)?;
    let envelope = envelopes.first().context("no attestation")?;
    let payload = verify_envelope(&Envelope::from_json(envelope)?, &key)?;
    Ok(serde_json::from_slice(&payload)?)
}

/// Waits for `name` to succeed and its provenance to be attached; if it fails, says what its
/// workers said (the simulated runtime's message).
async fn succeeded(world: &World, name: &str) -> Result<TrainingRun> {
    let api = world.cluster.api::<TrainingRun>();
    let run = eventually(TIMEOUT, &format!("run {name} to finish"), || {
        let api = api.clone();
        async move {
            let run = api.get(name).await?;
            let phase = run.status.as_ref().and_then(|s| s.phase);
            Ok(matches!(phase, Some(Phase::Succeeded | Phase::Failed)).then_some(run))
        }
    })
    .await?;
    if run.status.as_ref().and_then(|s| s.phase) == Some(Phase::Failed) {
        bail!(
            "{name} failed: {:?}",
            termination_messages(world, name).await?
        );
    }
    world.wait_provenance(name, ProvenanceState::Attached).await
}

/// What each worker's training container said when it terminated.
async fn termination_messages(world: &World, name: &str) -> Result<Vec<String>> {
    Ok(workers(world, name)
        .await?
        .values()
        .filter_map(|p| {
            let status = p.status.as_ref()?.container_statuses.as_ref()?.first()?;
            status.state.as_ref()?.terminated.as_ref()?.message.clone()
        })
        .collect())
}

/// Pods of `run`, by rank.
async fn workers(world: &World, run: &str) -> Result<BTreeMap<i64, Pod>> {
    let mut out = BTreeMap::new();
    for pod in pods_of(&world.cluster, run).await? {
        let rank = pod.labels().get("provenant.dev/rank").cloned();
        out.insert(rank.context("rank label")?.parse()?, pod);
    }
    Ok(out)
}

/// The rendezvous variables of a worker (the names provenant may set), as the pod has them.
fn rendezvous_env(pod: &Pod) -> BTreeMap<String, String> {
    let reserved = provenant::api::RESERVED_ENV;
    env_of(pod)
        .into_iter()
        .filter(|(k, _)| reserved.contains(&k.as_str()))
        .collect()
}

fn strings(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

async fn create_service_account(cluster: &Cluster, name: &str) -> Result<()> {
    let account = ServiceAccount {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    cluster
        .api::<ServiceAccount>()
        .create(&PostParams::default(), &account)
        .await?;
    Ok(())
}

#[tokio::test]
async fn the_multi_host_tpu_sample_runs_as_written_with_jax() -> Result<()> {
    let world = World::start(true).await?;
    let sim = kubelet(&world).await?;
    let _controller = world.controller("a").await?;
    // The sample's service account, as the team that runs it has it.
    create_service_account(&world.cluster, "tpu-trainer").await?;
    let run = sample(&world, TPU_SAMPLE)?;
    assert_eq!(run.spec.framework, Framework::Jax);
    let name = run.name_any();
    create(&world.cluster, &run).await?;

    let done = succeeded(&world, &name).await?;

    let template = run.spec.pod_template.clone().unwrap();
    let placement = serde_json::to_value(template.spec.clone().unwrap())?;
    let hosts: Vec<String> = (0..4).map(|i| format!("{name}-{i}.{name}")).collect();
    let pods = workers(&world, &name).await?;
    assert_eq!(pods.keys().copied().collect::<Vec<_>>(), [0, 1, 2, 3]);
    for (rank, pod) in &pods {
        let r = rank.to_string();
        assert_eq!(
            rendezvous_env(pod),
            strings(&[
                ("JAX_COORDINATOR_ADDRESS", format!("{name}-0.{name}:8476")),
                ("JAX_NUM_PROCESSES", "4".into()),
                ("JAX_PROCESS_ID", r.clone()),
                ("TPU_WORKER_HOSTNAMES", hosts.join(",")),
                ("TPU_WORKER_ID", r.clone()),
            ]),
            "worker {rank}"
        );
        assert_eq!(pod.labels()["team"], "llm");
        assert_eq!(pod.annotations()["gke-gcsfuse/volumes"], "true");
        let spec = serde_json::to_value(pod.spec.clone().unwrap())?;
        assert_eq!(spec["affinity"], placement["affinity"], "worker {rank}");
        assert_eq!(
            spec["topologySpreadConstraints"], placement["topologySpreadConstraints"],
            "worker {rank}"
        );
        let node = pod.spec.as_ref().unwrap().node_name.clone().unwrap();
        assert!(
            !node.ends_with("tpu-spot"),
            "worker {rank} on the spot node"
        );
    }
    let service = world
        .cluster
        .api::<Service>()
        .get(&name)
        .await?
        .spec
        .unwrap();
    assert_eq!(service.ports.unwrap()[0].port, 8476);

    let statement = signed_statement(&world, &done).await?;
    let internal = &statement["predicate"]["buildDefinition"]["internalParameters"];
    let scheduling = &internal["scheduling"];
    assert_eq!(scheduling["podLabels"], json!({"team": "llm"}));
    assert_eq!(
        scheduling["podAnnotations"],
        json!({"gke-gcsfuse/volumes": "true"})
    );
    assert_eq!(scheduling["affinity"], placement["affinity"]);
    assert_eq!(
        scheduling["topologySpreadConstraints"],
        placement["topologySpreadConstraints"]
    );
    assert_eq!(
        internal["rendezvous"],
        json!({
            "framework": "jax",
            "environment": {
                "JAX_COORDINATOR_ADDRESS": format!("{name}-0.{name}:8476"),
                "JAX_NUM_PROCESSES": "4",
                "TPU_WORKER_HOSTNAMES": hosts.join(","),
            },
            "rankEnvironment": ["JAX_PROCESS_ID", "TPU_WORKER_ID"],
        })
    );
    sim.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn the_gpu_sample_runs_as_written_with_pytorch() -> Result<()> {
    let world = World::start(true).await?;
    let sim = kubelet(&world).await?;
    let _controller = world.controller("a").await?;
    let run = sample(&world, GPU_SAMPLE)?;
    assert_eq!(run.spec.framework, Framework::Pytorch);
    let name = run.name_any();
    create(&world.cluster, &run).await?;
    let done = succeeded(&world, &name).await?;

    let pods = workers(&world, &name).await?;
    let expected: BTreeMap<String, String> = [
        ("RANK", "0"),
        ("NODE_RANK", "0"),
        ("PET_NODE_RANK", "0"),
        ("LOCAL_RANK", "0"),
        ("WORLD_SIZE", "1"),
        ("NNODES", "1"),
        ("PET_NNODES", "1"),
        ("MASTER_ADDR", "localhost"),
        ("PET_MASTER_ADDR", "localhost"),
        ("MASTER_PORT", "29500"),
        ("PET_MASTER_PORT", "29500"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(pods.len(), 1);
    assert_eq!(rendezvous_env(&pods[&0]), expected);
    // The sample's own environment is still there.
    assert_eq!(env_of(&pods[&0])["NCCL_DEBUG"], "WARN");

    let statement = signed_statement(&world, &done).await?;
    let internal = &statement["predicate"]["buildDefinition"]["internalParameters"];
    let mut shared = expected.clone();
    for per_rank in ["RANK", "NODE_RANK", "PET_NODE_RANK"] {
        shared.remove(per_rank);
    }
    assert_eq!(
        internal["rendezvous"],
        json!({"framework": "pytorch", "environment": shared,
               "rankEnvironment": ["RANK", "NODE_RANK", "PET_NODE_RANK"]})
    );
    // No podTemplate: nothing of it recorded.
    for key in [
        "podLabels",
        "podAnnotations",
        "affinity",
        "topologySpreadConstraints",
    ] {
        assert!(internal["scheduling"].get(key).is_none(), "{key}");
    }

    // The same sample on two workers (data-parallel): torch rendezvous at rank 0 through the
    // headless Service.
    let mut ddp = sample(&world, GPU_SAMPLE)?;
    ddp.metadata.name = Some("resnet50-ddp".into());
    ddp.spec.replicas = 2;
    create(&world.cluster, &ddp).await?;
    succeeded(&world, "resnet50-ddp").await?;
    let master = "resnet50-ddp-0.resnet50-ddp";
    for (rank, pod) in workers(&world, "resnet50-ddp").await? {
        let env = rendezvous_env(&pod);
        let r = rank.to_string();
        for (name, value) in [
            ("RANK", r.as_str()),
            ("NODE_RANK", &r),
            ("PET_NODE_RANK", &r),
            ("WORLD_SIZE", "2"),
            ("NNODES", "2"),
            ("PET_NNODES", "2"),
            ("LOCAL_RANK", "0"),
            ("MASTER_ADDR", master),
            ("PET_MASTER_ADDR", master),
            ("MASTER_PORT", "29500"),
        ] {
            assert_eq!(env[name], value, "worker {rank}: {name}");
        }
    }
    sim.shutdown().await?;
    Ok(())
}

/// The runtime checks bite: the TPU sample without its framework gives JAX nothing to initialize
/// from, and the run fails with the runtime's message.
#[tokio::test]
async fn a_jax_workload_without_the_jax_environment_fails_the_run() -> Result<()> {
    let world = World::start(true).await?;
    let sim = kubelet(&world).await?;
    let _controller = world.controller("a").await?;
    create_service_account(&world.cluster, "tpu-trainer").await?;
    let mut run = sample(&world, TPU_SAMPLE)?;
    run.spec.framework = Framework::None;
    create(&world.cluster, &run).await?;
    wait_phase(&world.cluster, &run.name_any(), Phase::Failed).await?;
    let messages = termination_messages(&world, &run.name_any()).await?;
    assert!(
        messages
            .iter()
            .any(|m| m.contains("JAX_COORDINATOR_ADDRESS is not set")),
        "{messages:?}"
    );
    let pods = workers(&world, &run.name_any()).await?;
    // TPU_WORKER_* are there whatever the framework; the JAX names are not.
    for pod in pods.values() {
        let env = rendezvous_env(pod);
        assert_eq!(
            env.keys().collect::<Vec<_>>(),
            ["TPU_WORKER_HOSTNAMES", "TPU_WORKER_ID"]
        );
    }
    sim.shutdown().await?;
    Ok(())
}

/// A tenant cannot give workers provenant's, Kueue's or the kubelet's security keys, nor a
/// rendezvous variable: the real API server refuses the run, naming the field.
#[tokio::test]
async fn reserved_pod_keys_and_rendezvous_names_are_refused_by_the_api_server() -> Result<()> {
    let Some(cluster) = Cluster::start_real().await? else {
        return Ok(());
    };
    let path = format!(
        "{}/../config/samples/{TPU_SAMPLE}",
        env!("CARGO_MANIFEST_DIR")
    );
    let base: Value = serde_saphyr::from_str(&std::fs::read_to_string(path)?)?;
    let cases: [(&str, Value, &str, &str); 4] = [
        (
            "label",
            json!({"podTemplate": {"metadata": {"labels": {"provenant.dev/rank": "0"}}}}),
            "spec.podTemplate.metadata.labels",
            "provenant.dev/rank: keys under provenant.dev/",
        ),
        (
            "kueue",
            json!({"podTemplate": {"metadata": {"labels": {"kueue.x-k8s.io/queue-name": "q"}}}}),
            "spec.podTemplate.metadata.labels",
            "kueue.x-k8s.io/queue-name: set by provenant from spec.queueName",
        ),
        (
            "apparmor",
            json!({"podTemplate": {"metadata": {"annotations": {
                "container.apparmor.security.beta.kubernetes.io/trainer": "unconfined"}}}}),
            "spec.podTemplate.metadata.annotations",
            "container.apparmor.security.beta.kubernetes.io/trainer: AppArmor",
        ),
        (
            "env",
            json!({"env": [{"name": "TPU_WORKER_HOSTNAMES", "value": "evil-0.evil"}]}),
            "spec.env",
            "TPU_WORKER_HOSTNAMES",
        ),
    ];
    for (case, patch, field, says) in cases {
        let mut object = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            object["spec"][k] = v.clone();
        }
        object["metadata"]["name"] = json!(format!("refused-{case}"));
        let run: TrainingRun = serde_json::from_value(object)?;
        let err = cluster
            .api::<TrainingRun>()
            .create(&PostParams::default(), &run)
            .await
            .expect_err(case);
        let kube::Error::Api(status) = err else {
            bail!("{case}: {err}");
        };
        assert_eq!(status.code, 422, "{case}: {status:?}");
        assert!(
            status.message.contains(field) && status.message.contains(says),
            "{case}: {}",
            status.message
        );
    }
    Ok(())
}
