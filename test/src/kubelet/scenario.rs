//! What the simulated cluster looks like ([`SimNode`]) and what happens to pods ([`PodOutcome`]),
//! bundled in a [`Scenario`].

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Pod, Taint};

/// Hook run just before a pod's main container terminates; returns the termination message.
pub type BeforeExitHook =
    Arc<dyn Fn(Pod) -> BoxFuture<'static, anyhow::Result<String>> + Send + Sync>;
/// Decides a pod's outcome.
pub type OutcomeFn = Arc<dyn Fn(&Pod) -> PodOutcome + Send + Sync>;
/// Selects pods.
pub type PodPredicate = Arc<dyn Fn(&Pod) -> bool + Send + Sync>;

/// Label set by the simulator on its nodes, value = the simulator's node-name prefix.
pub const SIM_NODE_LABEL: &str = "testbed.provenant.dev/kubelet-sim";

// ---------------------------------------------------------------------------------------------
// Nodes

/// A node of the simulated cluster. Its full name is `<simulator prefix>-<name>`.
///
/// Defaults: `cpu: 32`, `memory: 128Gi`, `pods: 110`, `ephemeral-storage: 500Gi`, labels
/// `kubernetes.io/os=linux`, `kubernetes.io/arch=amd64` (plus `kubernetes.io/hostname` = full
/// name and [`SIM_NODE_LABEL`], set at start), no taints. Allocatable = capacity.
#[derive(Debug, Clone)]
pub struct SimNode {
    pub(crate) name: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) capacity: BTreeMap<String, String>,
    pub(crate) taints: Vec<Taint>,
}

/// GPU memory in MiB (as GPU feature discovery labels it) for a few well-known products.
fn known_gpu_memory_mib(product: &str) -> Option<u32> {
    Some(match product {
        "NVIDIA-A100-SXM4-80GB" | "NVIDIA-A100-80GB-PCIe" => 81920,
        "NVIDIA-A100-SXM4-40GB" | "NVIDIA-A100-PCIE-40GB" => 40960,
        "NVIDIA-H100-80GB-HBM3" => 81559,
        "NVIDIA-L4" => 23034,
        "Tesla-T4" => 15360,
        _ => return None,
    })
}

impl SimNode {
    /// A plain node with the defaults above.
    pub fn new(name: impl Into<String>) -> Self {
        let s = |a: &str, b: &str| (a.to_string(), b.to_string());
        SimNode {
            name: name.into(),
            labels: BTreeMap::from([
                s("kubernetes.io/os", "linux"),
                s("kubernetes.io/arch", "amd64"),
            ]),
            capacity: BTreeMap::from([
                s("cpu", "32"),
                s("memory", "128Gi"),
                s("pods", "110"),
                s("ephemeral-storage", "500Gi"),
            ]),
            taints: Vec::new(),
        }
    }

    /// A node with `count` NVIDIA GPUs as the NVIDIA GPU operator (GPU feature discovery) labels
    /// it: `nvidia.com/gpu.present`, `nvidia.com/gpu.product`, `nvidia.com/gpu.count`,
    /// `nvidia.com/gpu.memory` (known products), CUDA driver `535.104.05` and runtime `12.2`
    /// (`nvidia.com/cuda.driver.major|minor|rev`, `nvidia.com/cuda.runtime.major|minor`), and
    /// capacity `nvidia.com/gpu: count`. Products use GFD spelling, e.g. `NVIDIA-A100-SXM4-80GB`.
    pub fn nvidia(name: impl Into<String>, product: &str, count: u32) -> Self {
        let mut n = SimNode::new(name)
            .label("nvidia.com/gpu.present", "true")
            .label("nvidia.com/gpu.product", product)
            .label("nvidia.com/gpu.count", &count.to_string())
            .capacity("nvidia.com/gpu", &count.to_string())
            .cuda_driver("535.104.05")
            .cuda_runtime("12.2");
        if let Some(mib) = known_gpu_memory_mib(product) {
            n = n.gpu_memory_mib(mib);
        }
        n
    }

    /// A GKE GPU node: `cloud.google.com/gke-accelerator` (e.g. `nvidia-tesla-a100`), capacity
    /// `nvidia.com/gpu: count`, and the `nvidia.com/gpu=present:NoSchedule` taint GKE puts on GPU
    /// pools.
    pub fn gke_gpu(name: impl Into<String>, accelerator: &str, count: u32) -> Self {
        SimNode::new(name)
            .label("cloud.google.com/gke-accelerator", accelerator)
            .capacity("nvidia.com/gpu", &count.to_string())
            .taint("nvidia.com/gpu", "present", "NoSchedule")
    }

    /// A GKE TPU node: `cloud.google.com/gke-tpu-accelerator` (e.g. `tpu-v5-lite-podslice`),
    /// `cloud.google.com/gke-tpu-topology` (e.g. `2x4`), capacity `google.com/tpu: chips`, and the
    /// `google.com/tpu=present:NoSchedule` taint.
    pub fn gke_tpu(name: impl Into<String>, accelerator: &str, topology: &str, chips: u32) -> Self {
        SimNode::new(name)
            .label("cloud.google.com/gke-tpu-accelerator", accelerator)
            .label("cloud.google.com/gke-tpu-topology", topology)
            .capacity("google.com/tpu", &chips.to_string())
            .taint("google.com/tpu", "present", "NoSchedule")
    }

    /// Sets a label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_string(), value.to_string());
        self
    }

    /// Removes a label (e.g. a default).
    pub fn without_label(mut self, key: &str) -> Self {
        self.labels.remove(key);
        self
    }

    /// Sets capacity (= allocatable) of a resource, e.g. `("nvidia.com/gpu", "8")`, `("cpu", "96")`.
    pub fn capacity(mut self, resource: &str, quantity: &str) -> Self {
        self.capacity
            .insert(resource.to_string(), quantity.to_string());
        self
    }

    /// Adds a taint (`effect`: `NoSchedule`, `PreferNoSchedule`, `NoExecute`); empty value = none.
    pub fn taint(mut self, key: &str, value: &str, effect: &str) -> Self {
        self.taints.push(Taint {
            key: key.to_string(),
            value: (!value.is_empty()).then(|| value.to_string()),
            effect: effect.to_string(),
            time_added: None,
        });
        self
    }

    /// `node.kubernetes.io/instance-type`.
    pub fn instance_type(self, instance_type: &str) -> Self {
        self.label("node.kubernetes.io/instance-type", instance_type)
    }

    /// `nvidia.com/gpu.memory` in MiB.
    pub fn gpu_memory_mib(self, mib: u32) -> Self {
        self.label("nvidia.com/gpu.memory", &mib.to_string())
    }

    /// `nvidia.com/cuda.driver.major|minor|rev` from e.g. `535.104.05`.
    pub fn cuda_driver(mut self, version: &str) -> Self {
        for (part, key) in version.split('.').zip(["major", "minor", "rev"]) {
            self = self.label(&format!("nvidia.com/cuda.driver.{key}"), part);
        }
        self
    }

    /// `nvidia.com/cuda.runtime.major|minor` from e.g. `12.2`.
    pub fn cuda_runtime(mut self, version: &str) -> Self {
        for (part, key) in version.split('.').zip(["major", "minor"]) {
            self = self.label(&format!("nvidia.com/cuda.runtime.{key}"), part);
        }
        self
    }

    /// The node's short name (without the simulator prefix).
    pub fn name(&self) -> &str {
        &self.name
    }
}

// ---------------------------------------------------------------------------------------------
// Outcomes

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Behaviour {
    Exit(i32),
    RunForever,
    ImagePullBackOff,
}

/// What happens to a pod once it is on a node.
///
/// ```
/// # use std::time::Duration;
/// # use provenant_testbed::kubelet::PodOutcome;
/// PodOutcome::succeed().after(Duration::from_millis(300)).message(r#"{"model":"..."}"#);
/// PodOutcome::fail(3).message("CUDA error: out of memory");
/// PodOutcome::oom_killed();
/// PodOutcome::run_forever();
/// ```
///
/// The exit code, reason and termination message apply to the *main* container (the first one,
/// or [`PodOutcome::in_container`]); other containers exit 0 (`Completed`) at the same time.
#[derive(Clone)]
pub struct PodOutcome {
    pub(crate) behaviour: Behaviour,
    pub(crate) start_after: Duration,
    pub(crate) run_for: Duration,
    pub(crate) reason: Option<String>,
    pub(crate) message: Option<String>,
    pub(crate) container: Option<String>,
    pub(crate) image_digests: BTreeMap<String, String>,
    pub(crate) before_exit: Option<BeforeExitHook>,
    pub(crate) kill_exit_code: i32,
    /// The pod's reason and message when the kubelet ends it (eviction, node shutdown).
    pub(crate) disruption: Option<(String, String)>,
}

impl fmt::Debug for PodOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PodOutcome")
            .field("behaviour", &self.behaviour)
            .field("start_after", &self.start_after)
            .field("run_for", &self.run_for)
            .field("reason", &self.reason)
            .field("message", &self.message.as_ref().map(|m| m.len()))
            .field("container", &self.container)
            .field("image_digests", &self.image_digests)
            .field("before_exit", &self.before_exit.is_some())
            .field("disruption", &self.disruption)
            .finish()
    }
}

impl Default for PodOutcome {
    fn default() -> Self {
        PodOutcome::succeed()
    }
}

/// Normalizes `hex` or `sha256:hex` to `sha256:hex`.
fn normalize_digest(d: &str) -> String {
    if d.contains(':') {
        d.to_string()
    } else {
        format!("sha256:{d}")
    }
}

impl PodOutcome {
    fn exit(behaviour: Behaviour) -> Self {
        PodOutcome {
            behaviour,
            start_after: Duration::from_millis(20),
            run_for: Duration::from_millis(100),
            reason: None,
            message: None,
            container: None,
            image_digests: BTreeMap::new(),
            before_exit: None,
            kill_exit_code: 137,
            disruption: None,
        }
    }

    /// Exits 0 after the run time (default 100 ms): phase `Succeeded`, reason `Completed`.
    pub fn succeed() -> Self {
        PodOutcome::exit(Behaviour::Exit(0))
    }

    /// Exits with `exit_code` after the run time: phase `Failed` (if non-zero), reason `Error`.
    pub fn fail(exit_code: i32) -> Self {
        PodOutcome::exit(Behaviour::Exit(exit_code))
    }

    /// Exit code 137, reason `OOMKilled`.
    pub fn oom_killed() -> Self {
        PodOutcome::fail(137).reason("OOMKilled")
    }

    /// A spot VM reclaimed mid-run: after the run time the node shuts down and its kubelet ends the
    /// pod as graceful node shutdown does: containers killed (`killed_with`, default 137), phase
    /// `Failed`, pod reason `Terminated`, message `Pod was terminated in response to imminent
    /// node shutdown.`, condition `DisruptionTarget=True` (`TerminationByKubelet`). The pod stays
    /// (terminated) until deleted.
    pub fn preempted() -> Self {
        let mut o = PodOutcome::exit(Behaviour::Exit(137));
        o.disruption = Some((
            "Terminated".into(),
            "Pod was terminated in response to imminent node shutdown.".into(),
        ));
        o
    }

    /// Evicted by the kubelet under node pressure after the run time: as [`PodOutcome::preempted`]
    /// with pod reason `Evicted` and message `The node was low on resource: memory.`.
    pub fn evicted() -> Self {
        let mut o = PodOutcome::preempted();
        o.disruption = Some((
            "Evicted".into(),
            "The node was low on resource: memory.".into(),
        ));
        o
    }

    /// Runs until deleted (or `activeDeadlineSeconds`).
    pub fn run_forever() -> Self {
        PodOutcome::exit(Behaviour::RunForever)
    }

    /// Never starts: stays `Pending` with container state waiting `ErrImagePull`, then
    /// `ImagePullBackOff` (until deleted or `activeDeadlineSeconds`).
    pub fn image_pull_backoff() -> Self {
        PodOutcome::exit(Behaviour::ImagePullBackOff)
    }

    /// How long the containers run before exiting (default 100 ms).
    pub fn after(mut self, run_for: Duration) -> Self {
        self.run_for = run_for;
        self
    }

    /// How long the pod stays `Pending`/`ContainerCreating` on its node before `Running`
    /// (default 20 ms).
    pub fn starting_for(mut self, d: Duration) -> Self {
        self.start_after = d;
        self
    }

    /// Termination reason of the main container (default `Completed` for 0, `Error` otherwise).
    pub fn reason(mut self, reason: &str) -> Self {
        self.reason = Some(reason.to_string());
        self
    }

    /// Termination message of the main container, passed verbatim (even beyond the 4096 bytes a
    /// real kubelet would keep).
    pub fn message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    /// Which container the exit code, reason and message apply to (default: the first).
    pub fn in_container(mut self, container: &str) -> Self {
        self.container = Some(container.to_string());
        self
    }

    /// Image digest reported in `imageID` of `container` (`sha256:<hex>` or bare hex). Default: the
    /// digest pinned in the image reference, else sha256 of the image string.
    pub fn image_digest(mut self, container: &str, digest: &str) -> Self {
        self.image_digests
            .insert(container.to_string(), normalize_digest(digest));
        self
    }

    /// Exit code used when the pod is deleted while running (default 137, SIGKILL; 143 models a
    /// workload that exits on SIGTERM).
    pub fn killed_with(mut self, exit_code: i32) -> Self {
        self.kill_exit_code = exit_code;
        self
    }

    /// Async hook run just before the main container terminates (after the run time); its `Ok`
    /// value becomes the termination message (e.g. the digest of a model it just pushed). An
    /// `Err` makes the pod fail: exit code 1, reason `Error`, message `before_exit hook failed:
    /// <error>`. The hook is cancelled if the pod is deleted or hits its deadline meanwhile.
    pub fn before_exit<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(Pod) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<String>> + Send + 'static,
    {
        self.before_exit = Some(Arc::new(move |pod| Box::pin(hook(pod))));
        self
    }
}

// ---------------------------------------------------------------------------------------------
// Scenario

#[derive(Clone)]
enum PodMatch {
    Name(String),
    Label(String, String),
    Predicate(PodPredicate),
}

impl PodMatch {
    fn matches(&self, pod: &Pod) -> bool {
        match self {
            PodMatch::Name(n) => pod.metadata.name.as_deref() == Some(n.as_str()),
            PodMatch::Label(k, v) => pod
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(k))
                .is_some_and(|x| x == v),
            PodMatch::Predicate(p) => p(pod),
        }
    }
}

/// The simulated cluster: nodes, which pods to watch, and per-pod outcomes (first matching
/// rule wins, then the fallback; default fallback: [`PodOutcome::succeed`]).
///
/// ```
/// # use std::time::Duration;
/// # use provenant_testbed::kubelet::{PodOutcome, Scenario, SimNode};
/// let scenario = Scenario::new()
///     .namespace("test-ns")
///     .nodes(2, |i| SimNode::nvidia(format!("a100-{i}"), "NVIDIA-A100-SXM4-80GB", 4))
///     .node(SimNode::new("cpu"))
///     .pod("train-0", PodOutcome::succeed().message(r#"{"loss":0.1}"#))
///     .pods_labeled("role", "eval", PodOutcome::fail(2))
///     .pods_where(|p| p.metadata.name.as_deref().is_some_and(|n| n.ends_with("-oom")), PodOutcome::oom_killed());
/// ```
#[derive(Clone)]
pub struct Scenario {
    pub(crate) nodes: Vec<SimNode>,
    pub(crate) namespace: Option<String>,
    pub(crate) label_selector: Option<String>,
    pub(crate) node_prefix: Option<String>,
    pub(crate) report_unschedulable: bool,
    rules: Vec<(PodMatch, PodOutcome)>,
    fallback: OutcomeFn,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario::new()
    }
}

impl fmt::Debug for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scenario")
            .field("nodes", &self.nodes)
            .field("namespace", &self.namespace)
            .field("label_selector", &self.label_selector)
            .field("rules", &self.rules.len())
            .finish()
    }
}

impl Scenario {
    /// No nodes, all namespaces, every pod succeeds.
    pub fn new() -> Self {
        Scenario {
            nodes: Vec::new(),
            namespace: None,
            label_selector: None,
            node_prefix: None,
            report_unschedulable: true,
            rules: Vec::new(),
            fallback: Arc::new(|_| PodOutcome::succeed()),
        }
    }

    /// Adds a node.
    pub fn node(mut self, node: SimNode) -> Self {
        self.nodes.push(node);
        self
    }

    /// Adds `count` nodes built by `make(i)`.
    pub fn nodes(mut self, count: usize, make: impl Fn(usize) -> SimNode) -> Self {
        self.nodes.extend((0..count).map(make));
        self
    }

    /// Only watch (and schedule/run) pods of this namespace (default: all namespaces).
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.to_string());
        self
    }

    /// Only watch pods matching this label selector, e.g. `app.kubernetes.io/managed-by=provenant`.
    pub fn label_selector(mut self, selector: &str) -> Self {
        self.label_selector = Some(selector.to_string());
        self
    }

    /// Node-name prefix (default `sim-<random>`): node `gpu-0` becomes `<prefix>-gpu-0`.
    pub fn node_prefix(mut self, prefix: &str) -> Self {
        self.node_prefix = Some(prefix.to_string());
        self
    }

    /// Whether unschedulable pods get a `PodScheduled=False` / `Unschedulable` condition like the
    /// scheduler sets (default true).
    pub fn report_unschedulable(mut self, yes: bool) -> Self {
        self.report_unschedulable = yes;
        self
    }

    /// Outcome of the pod named `name`.
    pub fn pod(mut self, name: &str, outcome: PodOutcome) -> Self {
        self.rules.push((PodMatch::Name(name.to_string()), outcome));
        self
    }

    /// Outcome of pods labelled `key=value`.
    pub fn pods_labeled(mut self, key: &str, value: &str, outcome: PodOutcome) -> Self {
        self.rules
            .push((PodMatch::Label(key.to_string(), value.to_string()), outcome));
        self
    }

    /// Outcome of pods matching `predicate`.
    pub fn pods_where(
        mut self,
        predicate: impl Fn(&Pod) -> bool + Send + Sync + 'static,
        outcome: PodOutcome,
    ) -> Self {
        self.rules
            .push((PodMatch::Predicate(Arc::new(predicate)), outcome));
        self
    }

    /// Outcome of pods no rule matched (default [`PodOutcome::succeed`]).
    pub fn default_outcome(mut self, outcome: PodOutcome) -> Self {
        self.fallback = Arc::new(move |_| outcome.clone());
        self
    }

    /// Computes the outcome of pods no rule matched, e.g. from their labels or env.
    pub fn outcome_fn(mut self, f: impl Fn(&Pod) -> PodOutcome + Send + Sync + 'static) -> Self {
        self.fallback = Arc::new(f);
        self
    }

    /// The outcome the simulator applies to `pod`.
    pub fn outcome_for(&self, pod: &Pod) -> PodOutcome {
        self.rules
            .iter()
            .find(|(m, _)| m.matches(pod))
            .map(|(_, o)| o.clone())
            .unwrap_or_else(|| (self.fallback)(pod))
    }
}
