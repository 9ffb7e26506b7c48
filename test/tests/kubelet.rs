//! Kubelet simulator against the API-server double — or against a real cluster when
//! `E2E_KUBECONFIG` names a kubeconfig (each test then uses its own fresh namespace).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use kube::api::{DeleteParams, PostParams};
use kube::runtime::wait::await_condition;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use provenant_testbed::apiserver::ApiServer;
use provenant_testbed::kubelet::{KubeletSim, PodOutcome, Scenario, SimNode};
use provenant_testbed::registry::Registry;
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(30);

/// A cluster for one test: the API-server double, or `E2E_KUBECONFIG`'s cluster.
struct Cluster {
    client: Client,
    ns: String,
    server: Option<ApiServer>,
}

impl Cluster {
    async fn new() -> Result<Cluster> {
        Self::on(std::env::var_os("E2E_KUBECONFIG")).await
    }

    /// The double whatever `E2E_KUBECONFIG` says: for faults a real server cannot make on demand.
    async fn double() -> Result<Cluster> {
        Self::on(None).await
    }

    async fn on(kubeconfig: Option<std::ffi::OsString>) -> Result<Cluster> {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let (client, server, e2e) = match kubeconfig {
            Some(path) => {
                let kubeconfig = kube::config::Kubeconfig::read_from(&path).with_context(|| {
                    format!("reading E2E_KUBECONFIG={}", path.to_string_lossy())
                })?;
                let config = kube::Config::from_custom_kubeconfig(
                    kubeconfig,
                    &kube::config::KubeConfigOptions::default(),
                )
                .await?;
                (Client::try_from(config)?, None, true)
            }
            None => {
                let server = ApiServer::start().await?;
                (server.client().await?, Some(server), false)
            }
        };
        let ns = format!(
            "kubelet-sim-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}}))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await?;
        if e2e {
            // No controller-manager: the ServiceAccount admission plugin needs `default` to exist.
            let sa: ServiceAccount =
                serde_json::from_value(json!({"metadata": {"name": "default"}}))?;
            match Api::<ServiceAccount>::namespaced(client.clone(), &ns)
                .create(&PostParams::default(), &sa)
                .await
            {
                Ok(_) | Err(kube::Error::Api(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Cluster { client, ns, server })
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn sim(&self, scenario: Scenario) -> Result<KubeletSim> {
        KubeletSim::start(self.client.clone(), scenario.namespace(&self.ns)).await
    }

    async fn create(&self, pod: serde_json::Value) -> Result<Pod> {
        let pod: Pod = serde_json::from_value(pod)?;
        Ok(self.pods().create(&PostParams::default(), &pod).await?)
    }

    /// Waits until `cond` holds for the pod (or fails after [`TIMEOUT`]).
    async fn wait_for(&self, name: &str, what: &str, cond: impl Fn(&Pod) -> bool) -> Result<Pod> {
        let fut = await_condition(self.pods(), name, move |p: Option<&Pod>| {
            p.is_some_and(&cond)
        });
        match tokio::time::timeout(TIMEOUT, fut).await {
            Ok(res) => res?.with_context(|| format!("pod {name} disappeared waiting for {what}")),
            Err(_) => {
                let now = self.pods().get_opt(name).await?;
                bail!(
                    "timed out waiting for pod {name} to be {what}; now: {}",
                    serde_json::to_string_pretty(&now.map(|p| p.status))?
                )
            }
        }
    }

    async fn wait_phase(&self, name: &str, phase: &str) -> Result<Pod> {
        self.wait_for(name, phase, |p| phase_of(p) == phase).await
    }
}

fn phase_of(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn node_of(p: &Pod) -> Option<&str> {
    p.spec.as_ref()?.node_name.as_deref()
}

fn pod(name: &str, image: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "training"}},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "trainer", "image": image}],
        },
    })
}

fn gpu_pod(name: &str, gpus: u32) -> serde_json::Value {
    let mut p = pod(name, "ghcr.io/acme/trainer:v1");
    p["spec"]["containers"][0]["resources"] =
        json!({"limits": {"nvidia.com/gpu": gpus.to_string()}});
    p["spec"]["nodeSelector"] = json!({"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"});
    p
}

fn terminated(p: &Pod) -> serde_json::Value {
    let cs = &p
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default();
    serde_json::to_value(
        cs.first()
            .and_then(|c| c.state.as_ref()?.terminated.clone()),
    )
    .unwrap_or_default()
}

#[tokio::test]
async fn pod_completes_with_image_digest_and_termination_message() -> Result<()> {
    let cluster = Cluster::new().await?;
    let digest = format!("sha256:{}", "ab".repeat(32));
    let message =
        r#"{"model":"registry.example/models/mnist@sha256:00","metrics":{"accuracy":0.98}}"#;
    let sim = cluster
        .sim(
            Scenario::new()
                .node(SimNode::new("cpu-0").instance_type("n2-standard-8"))
                .pod(
                    "train",
                    PodOutcome::succeed()
                        .after(Duration::from_millis(300))
                        .image_digest("trainer", &digest)
                        .message(message),
                ),
        )
        .await?;

    // Watch the phases from before creation.
    let watch = watcher::watcher(
        cluster.pods(),
        watcher::Config::default().fields("metadata.name=train"),
    );
    let (listed, watching) = tokio::sync::oneshot::channel();
    let phases = tokio::spawn(async move {
        let mut phases: Vec<String> = Vec::new();
        let mut listed = Some(listed);
        let mut watch = std::pin::pin!(watch);
        while let Some(ev) = watch.next().await {
            if let Ok(Event::InitDone) = ev
                && let Some(listed) = listed.take()
            {
                let _ = listed.send(());
            }
            if let Ok(Event::Apply(p) | Event::InitApply(p)) = ev {
                let phase = phase_of(&p).to_string();
                if phases.last() != Some(&phase) {
                    phases.push(phase.clone());
                }
                if phase == "Succeeded" || phase == "Failed" {
                    break;
                }
            }
        }
        phases
    });
    // Created once the watch has listed, so that it sees every phase.
    tokio::time::timeout(TIMEOUT, watching).await??;
    cluster
        .create(pod("train", "ghcr.io/acme/trainer:v1"))
        .await?;
    let phases = tokio::time::timeout(TIMEOUT, phases).await??;
    assert_eq!(phases, ["Pending", "Running", "Succeeded"]);

    let p = cluster.pods().get("train").await?;
    assert_eq!(node_of(&p), Some(sim.node_name("cpu-0").as_str()));
    let status = p.status.clone().expect("status");
    assert!(status.start_time.is_some());
    assert!(status.host_ip.is_some() && status.pod_ip.is_some());
    let cs = &status.container_statuses.expect("container statuses")[0];
    assert_eq!(cs.name, "trainer");
    assert_eq!(cs.image, "ghcr.io/acme/trainer:v1");
    assert_eq!(cs.image_id, format!("ghcr.io/acme/trainer@{digest}"));
    assert!(
        cs.container_id
            .as_deref()
            .is_some_and(|c| c.starts_with("containerd://"))
    );
    assert!(!cs.ready);
    let t = terminated(&p);
    assert_eq!(t["exitCode"], 0);
    assert_eq!(t["reason"], "Completed");
    assert_eq!(t["message"], message);
    assert!(
        t["startedAt"].is_string() && t["finishedAt"].is_string() && t["containerID"].is_string()
    );
    let conditions = status.conditions.unwrap_or_default();
    let ready = conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready condition");
    assert_eq!(ready.status, "False");
    assert_eq!(ready.reason.as_deref(), Some("PodCompleted"));
    sim.shutdown().await
}

#[tokio::test]
async fn failing_pods_report_exit_code_reason_and_oversized_message() -> Result<()> {
    let cluster = Cluster::new().await?;
    let huge = "x".repeat(10_000);
    let sim = cluster
        .sim(
            Scenario::new()
                .node(SimNode::new("cpu-0"))
                .pod(
                    "crash",
                    PodOutcome::fail(3).message("Traceback: CUDA error"),
                )
                .pods_labeled("kind", "oom", PodOutcome::oom_killed())
                .pods_where(
                    |p| p.metadata.name.as_deref() == Some("chatty"),
                    PodOutcome::fail(1).message(huge.clone()),
                )
                // Default image digest = sha256 of the image string.
                .default_outcome(PodOutcome::succeed()),
        )
        .await?;
    cluster.create(pod("crash", "busybox")).await?;
    let mut oom = pod("oom", "busybox");
    oom["metadata"]["labels"]["kind"] = json!("oom");
    cluster.create(oom).await?;
    cluster.create(pod("chatty", "busybox")).await?;
    cluster.create(pod("fine", "busybox:1.36")).await?;

    let crash = cluster.wait_phase("crash", "Failed").await?;
    let t = terminated(&crash);
    assert_eq!(
        (t["exitCode"].as_i64(), t["reason"].as_str()),
        (Some(3), Some("Error"))
    );
    assert_eq!(t["message"], "Traceback: CUDA error");

    let oom = cluster.wait_phase("oom", "Failed").await?;
    let t = terminated(&oom);
    assert_eq!(
        (t["exitCode"].as_i64(), t["reason"].as_str()),
        (Some(137), Some("OOMKilled"))
    );

    let chatty = cluster.wait_phase("chatty", "Failed").await?;
    assert_eq!(
        terminated(&chatty)["message"].as_str().map(str::len),
        Some(10_000),
        "passed verbatim"
    );

    let fine = cluster.wait_phase("fine", "Succeeded").await?;
    let cs = &fine
        .status
        .and_then(|s| s.container_statuses)
        .expect("statuses")[0];
    use sha2::Digest as _;
    let expected = hex::encode(sha2::Sha256::digest(b"busybox:1.36"));
    assert_eq!(
        cs.image, "docker.io/library/busybox:1.36",
        "normalized like containerd"
    );
    assert_eq!(
        cs.image_id,
        format!("docker.io/library/busybox@sha256:{expected}")
    );
    sim.shutdown().await
}

#[tokio::test]
async fn pods_that_fit_no_node_stay_pending() -> Result<()> {
    let cluster = Cluster::new().await?;
    let sim = cluster
        .sim(
            Scenario::new()
                .node(SimNode::nvidia("a100", "NVIDIA-A100-SXM4-80GB", 8))
                .node(SimNode::gke_tpu("tpu", "tpu-v5-lite-podslice", "2x4", 8)),
        )
        .await?;
    let mut h100 = gpu_pod("wants-h100", 1);
    h100["spec"]["nodeSelector"] = json!({"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"});
    cluster.create(h100).await?;
    // The TPU node is tainted google.com/tpu=present:NoSchedule; no toleration → not schedulable.
    let mut tpu = pod("wants-tpu", "ghcr.io/acme/jax:v1");
    tpu["spec"]["containers"][0]["resources"] = json!({"limits": {"google.com/tpu": "8"}});
    tpu["spec"]["nodeSelector"] =
        json!({"cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice"});
    cluster.create(tpu.clone()).await?;
    // The same with a toleration runs.
    tpu["metadata"]["name"] = json!("tolerates-tpu");
    tpu["spec"]["tolerations"] =
        json!([{"key": "google.com/tpu", "operator": "Exists", "effect": "NoSchedule"}]);
    cluster.create(tpu).await?;

    let unschedulable = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.type_ == "PodScheduled"
                        && c.status == "False"
                        && c.reason.as_deref() == Some("Unschedulable")
                })
            })
    };
    let p = cluster
        .wait_for("wants-h100", "Unschedulable", unschedulable)
        .await?;
    let msg = p.status.and_then(|s| s.conditions).unwrap_or_default()[0]
        .message
        .clone()
        .unwrap_or_default();
    assert_eq!(
        msg,
        "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
    );
    let p = cluster
        .wait_for("wants-tpu", "Unschedulable", unschedulable)
        .await?;
    let msg = p.status.and_then(|s| s.conditions).unwrap_or_default()[0]
        .message
        .clone()
        .unwrap_or_default();
    assert!(
        msg.contains("1 node(s) had untolerated taint {google.com/tpu: present}"),
        "{msg}"
    );

    let ok = cluster.wait_phase("tolerates-tpu", "Succeeded").await?;
    assert_eq!(node_of(&ok), Some(sim.node_name("tpu").as_str()));

    // The scheduler's verdict on each: Unschedulable, never bound.
    for name in ["wants-h100", "wants-tpu"] {
        let p = cluster
            .wait_for(name, "PodScheduled=False (Unschedulable)", |p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| {
                        c.iter().any(|c| {
                            c.type_ == "PodScheduled"
                                && c.status == "False"
                                && c.reason.as_deref() == Some("Unschedulable")
                        })
                    })
            })
            .await?;
        assert_eq!(phase_of(&p), "Pending", "{name}");
        assert_eq!(node_of(&p), None, "{name}");
    }
    sim.shutdown().await
}

#[tokio::test]
async fn gpu_capacity_is_respected() -> Result<()> {
    let cluster = Cluster::new().await?;
    let sim = cluster
        .sim(
            Scenario::new()
                .nodes(2, |i| {
                    SimNode::nvidia(format!("gpu-{i}"), "NVIDIA-A100-SXM4-80GB", 4)
                })
                .pod(
                    "first",
                    PodOutcome::succeed().after(Duration::from_millis(1500)),
                )
                .pod("second", PodOutcome::run_forever())
                .pod("third", PodOutcome::succeed()),
        )
        .await?;
    cluster.create(gpu_pod("first", 4)).await?;
    cluster.create(gpu_pod("second", 4)).await?;
    let first = cluster.wait_phase("first", "Running").await?;
    let second = cluster.wait_phase("second", "Running").await?;
    assert_ne!(
        node_of(&first),
        node_of(&second),
        "4 GPUs each: one pod per node"
    );

    cluster.create(gpu_pod("third", 4)).await?;
    let p = cluster
        .wait_for("third", "Unschedulable", |p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.reason.as_deref() == Some("Unschedulable"))
                })
        })
        .await?;
    assert_eq!(node_of(&p), None);
    let msg = p.status.and_then(|s| s.conditions).unwrap_or_default()[0]
        .message
        .clone();
    assert_eq!(
        msg.as_deref(),
        Some("0/2 nodes are available: 2 Insufficient nvidia.com/gpu.")
    );
    assert_eq!(
        phase_of(&cluster.pods().get("first").await?),
        "Running",
        "still pending while both run"
    );

    // When `first` finishes, its GPUs go to `third`.
    let first = cluster.wait_phase("first", "Succeeded").await?;
    let third = cluster.wait_phase("third", "Succeeded").await?;
    assert_eq!(node_of(&third), node_of(&first));
    assert_eq!(phase_of(&cluster.pods().get("second").await?), "Running");
    sim.shutdown().await
}

/// A pod with scheduling gates (Kueue's `kueue.x-k8s.io/admission`) is never bound while it has
/// any: the scheduler skips it. Once the gates are removed it is scheduled as usual.
#[tokio::test]
async fn gated_pods_wait_until_their_gates_are_removed() -> Result<()> {
    let cluster = Cluster::new().await?;
    let sim = cluster
        .sim(
            Scenario::new()
                .nodes(1, |i| {
                    SimNode::nvidia(format!("gpu-{i}"), "NVIDIA-A100-SXM4-80GB", 4)
                })
                .pod("gated", PodOutcome::succeed())
                .pod("free", PodOutcome::succeed()),
        )
        .await?;
    let mut gated = gpu_pod("gated", 2);
    gated["spec"]["schedulingGates"] = json!([{"name": "kueue.x-k8s.io/admission"}]);
    cluster.create(gated).await?;
    // Created after the gated pod, on the same node with room for both: its completion shows
    // the scheduler has passed over the gated pod, more than once.
    cluster.create(gpu_pod("free", 2)).await?;
    cluster.wait_phase("free", "Succeeded").await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let p = cluster.pods().get("gated").await?;
    assert_eq!(node_of(&p), None, "a gated pod is never bound");
    assert_eq!(phase_of(&p), "Pending");

    cluster
        .pods()
        .patch(
            "gated",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"schedulingGates": null}})),
        )
        .await?;
    let p = cluster.wait_phase("gated", "Succeeded").await?;
    assert_eq!(node_of(&p), Some(sim.node_name("gpu-0").as_str()));
    sim.shutdown().await
}

#[tokio::test]
async fn deleting_a_running_pod_makes_it_go_away() -> Result<()> {
    let cluster = Cluster::new().await?;
    let sim = cluster
        .sim(
            Scenario::new()
                .node(SimNode::new("cpu-0"))
                .default_outcome(PodOutcome::run_forever()),
        )
        .await?;
    let created = cluster
        .create(pod("long", "ghcr.io/acme/trainer:v1"))
        .await?;
    let uid = created.metadata.uid.clone().expect("uid");
    cluster.wait_phase("long", "Running").await?;

    // Watch the pod's last states until it is deleted.
    let watch = watcher::watcher(
        cluster.pods(),
        watcher::Config::default().fields("metadata.name=long"),
    );
    let (listed, watching) = tokio::sync::oneshot::channel();
    let last = tokio::spawn(async move {
        let mut last = None;
        let mut listed = Some(listed);
        let mut watch = std::pin::pin!(watch);
        while let Some(ev) = watch.next().await {
            match ev {
                Ok(Event::InitDone) => {
                    if let Some(listed) = listed.take() {
                        let _ = listed.send(());
                    }
                }
                Ok(Event::Apply(p)) => last = Some(p),
                Ok(Event::Delete(_)) => return last,
                _ => {}
            }
        }
        last
    });
    // Deleted once the watch has listed, so that it sees the kill.
    tokio::time::timeout(TIMEOUT, watching).await??;
    cluster
        .pods()
        .delete("long", &DeleteParams::default())
        .await?;
    let gone = await_condition(
        cluster.pods(),
        "long",
        kube::runtime::conditions::is_deleted(&uid),
    );
    tokio::time::timeout(TIMEOUT, gone).await??;
    let last = tokio::time::timeout(TIMEOUT, last)
        .await??
        .expect("saw the pod before deletion");
    assert_eq!(phase_of(&last), "Failed");
    let t = terminated(&last);
    assert_eq!(
        (t["exitCode"].as_i64(), t["reason"].as_str()),
        (Some(137), Some("Error"))
    );
    sim.shutdown().await
}

#[tokio::test]
async fn active_deadline_seconds_fails_the_pod() -> Result<()> {
    let cluster = Cluster::new().await?;
    let sim = cluster
        .sim(
            Scenario::new()
                .node(SimNode::new("cpu-0"))
                .default_outcome(PodOutcome::run_forever()),
        )
        .await?;
    let mut p = pod("bounded", "ghcr.io/acme/trainer:v1");
    p["spec"]["activeDeadlineSeconds"] = json!(1);
    cluster.create(p).await?;
    let p = cluster.wait_phase("bounded", "Failed").await?;
    let status = p.status.clone().expect("status");
    assert_eq!(status.reason.as_deref(), Some("DeadlineExceeded"));
    assert_eq!(terminated(&p)["exitCode"], 137);
    sim.shutdown().await
}

#[tokio::test]
async fn before_exit_hook_pushes_a_model_and_reports_its_digest() -> Result<()> {
    let cluster = Cluster::new().await?;
    let registry = std::sync::Arc::new(Registry::from_env_or_start().await?);
    let reg = registry.clone();
    let sim = cluster
        .sim(
            Scenario::new()
                .node(SimNode::nvidia("gpu", "Tesla-T4", 1))
                .pod(
                    "train",
                    PodOutcome::succeed().before_exit(move |pod| {
                        let reg = reg.clone();
                        async move {
                            let name = pod.metadata.name.unwrap_or_default();
                            let model = reg
                                .push_model(
                                    "models/hooked",
                                    &name,
                                    &[("model.bin", name.as_bytes())],
                                )
                                .await?;
                            Ok(json!({"model": model.reference}).to_string())
                        }
                    }),
                ),
        )
        .await?;
    let mut train = gpu_pod("train", 1);
    train["spec"]["nodeSelector"] = json!({"nvidia.com/gpu.product": "Tesla-T4"});
    cluster.create(train).await?;
    let p = cluster.wait_phase("train", "Succeeded").await?;
    let message: serde_json::Value =
        serde_json::from_str(terminated(&p)["message"].as_str().expect("message"))?;
    let reference = message["model"].as_str().expect("model reference");
    let digest = reference.rsplit_once('@').expect("digest").1;
    let manifest = registry
        .get_manifest("models/hooked", digest)
        .await?
        .expect("pushed");
    assert_eq!(manifest.digest, digest);
    assert_eq!(registry.list_tags("models/hooked").await?, ["train"]);

    // A failing hook fails the pod.
    sim.shutdown().await?;
    let sim = cluster
        .sim(Scenario::new().node(SimNode::new("cpu")).default_outcome(
            PodOutcome::succeed().before_exit(|_| async { anyhow::bail!("registry unreachable") }),
        ))
        .await?;
    cluster.create(pod("broken", "x")).await?;
    let p = cluster.wait_phase("broken", "Failed").await?;
    let t = terminated(&p);
    assert_eq!(t["exitCode"], 1);
    assert_eq!(
        t["message"],
        "before_exit hook failed: registry unreachable"
    );
    sim.shutdown().await
}

#[tokio::test]
async fn nodes_are_registered_ready_and_removed_on_shutdown() -> Result<()> {
    let cluster = Cluster::new().await?;
    let sim = cluster
        .sim(
            Scenario::new()
                .node(
                    SimNode::nvidia("a100", "NVIDIA-A100-SXM4-80GB", 8)
                        .instance_type("a2-ultragpu-8g"),
                )
                .node(SimNode::gke_gpu("l4", "nvidia-l4", 2))
                .node(SimNode::gke_tpu("tpu", "tpu-v5-lite-podslice", "2x4", 8)),
        )
        .await?;
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    let a100 = nodes.get(&sim.node_name("a100")).await?;
    let labels = a100.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels["nvidia.com/gpu.product"], "NVIDIA-A100-SXM4-80GB");
    assert_eq!(labels["nvidia.com/gpu.count"], "8");
    assert_eq!(labels["nvidia.com/gpu.memory"], "81920");
    assert_eq!(labels["nvidia.com/cuda.driver.major"], "535");
    assert_eq!(labels["node.kubernetes.io/instance-type"], "a2-ultragpu-8g");
    assert_eq!(labels["kubernetes.io/hostname"], sim.node_name("a100"));
    let status = a100.status.clone().expect("status");
    assert_eq!(
        status.capacity.as_ref().expect("capacity")["nvidia.com/gpu"].0,
        "8"
    );
    assert_eq!(
        status.allocatable.as_ref().expect("allocatable")["nvidia.com/gpu"].0,
        "8"
    );
    let ready = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    assert_eq!(ready.status, "True");
    let taints = a100.spec.and_then(|s| s.taints).unwrap_or_default();
    assert!(
        taints
            .iter()
            .all(|t| t.key != "node.kubernetes.io/not-ready"),
        "{taints:?}"
    );

    let tpu = nodes.get(&sim.node_name("tpu")).await?;
    let labels = tpu.metadata.labels.unwrap_or_default();
    assert_eq!(labels["cloud.google.com/gke-tpu-topology"], "2x4");
    let taints = tpu.spec.and_then(|s| s.taints).unwrap_or_default();
    assert_eq!(taints.len(), 1);
    assert_eq!(
        (taints[0].key.as_str(), taints[0].effect.as_str()),
        ("google.com/tpu", "NoSchedule")
    );

    let names = sim.node_names().to_vec();
    assert_eq!(names.len(), 3);
    sim.shutdown().await?;
    for n in names {
        assert!(nodes.get_opt(&n).await?.is_none(), "{n} deleted");
    }
    Ok(())
}

#[tokio::test]
async fn survives_watch_restarts_and_expired_resource_versions() -> Result<()> {
    // A forced 410 and dropped watches: only the double makes them on demand.
    let cluster = Cluster::double().await?;
    let server = cluster.server.as_ref().context("the double")?;
    let sim = cluster
        .sim(
            Scenario::new()
                .node(SimNode::new("cpu-0"))
                .default_outcome(PodOutcome::succeed().after(Duration::from_millis(800))),
        )
        .await?;
    cluster.create(pod("before", "busybox")).await?;
    cluster.wait_phase("before", "Running").await?;
    server.compact();
    server.close_watches();
    cluster.create(pod("after", "busybox")).await?;
    cluster.wait_phase("before", "Succeeded").await?;
    cluster.wait_phase("after", "Succeeded").await?;
    sim.shutdown().await
}

#[tokio::test]
async fn a_preempted_or_evicted_pod_fails_marked_as_a_disruption() -> Result<()> {
    let cluster = Cluster::new().await?;
    let sim = cluster
        .sim(
            Scenario::new()
                .node(SimNode::new("spot-0").label("cloud.google.com/gke-spot", "true"))
                .pod(
                    "spot",
                    PodOutcome::preempted().after(Duration::from_millis(200)),
                )
                .pod("pressed", PodOutcome::evicted()),
        )
        .await?;
    cluster
        .create(pod("spot", "ghcr.io/acme/trainer:v1"))
        .await?;
    cluster
        .create(pod("pressed", "ghcr.io/acme/trainer:v1"))
        .await?;
    for (name, reason, message) in [
        (
            "spot",
            "Terminated",
            "Pod was terminated in response to imminent node shutdown.",
        ),
        (
            "pressed",
            "Evicted",
            "The node was low on resource: memory.",
        ),
    ] {
        let p = cluster.wait_phase(name, "Failed").await?;
        let status = p.status.clone().expect("status");
        assert_eq!(
            (status.reason.as_deref(), status.message.as_deref()),
            (Some(reason), Some(message)),
            "{name}"
        );
        let disruption = status
            .conditions
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "DisruptionTarget")
            .expect("a DisruptionTarget condition");
        assert_eq!(
            (disruption.status.as_str(), disruption.reason.as_deref()),
            ("True", Some("TerminationByKubelet"))
        );
        let t = terminated(&p);
        assert_eq!(t["exitCode"].as_i64(), Some(137), "{name}");
        // It ran before it was ended (a started container, an image digest).
        assert!(t["startedAt"].is_string(), "{name}: {t}");
    }
    // Ended, not deleted: the pod stays for its owner to observe.
    assert_eq!(phase_of(&cluster.pods().get("spot").await?), "Failed");
    sim.shutdown().await
}
