//! Kubelet simulator: plays the scheduler and the kubelets of a set of simulated nodes, using only
//! the public Kubernetes API through [`kube::Client`] — so it drives the API-server double and a
//! real kube-apiserver (+ etcd, no nodes, no kubelet, no scheduler) alike. See `test/README.md`
//! ("Kubelet simulator").
//!
//! ```no_run
//! # async fn demo(client: kube::Client) -> anyhow::Result<()> {
//! use provenant_testbed::kubelet::{KubeletSim, PodOutcome, Scenario, SimNode};
//! let sim = KubeletSim::start(
//!     client,
//!     Scenario::new()
//!         .namespace("t1")
//!         .nodes(2, |i| SimNode::nvidia(format!("gpu-{i}"), "NVIDIA-A100-SXM4-80GB", 4))
//!         .pod("train-0", PodOutcome::succeed().message(r#"{"loss":0.1}"#)),
//! )
//! .await?;
//! // ... create pods, watch them ...
//! sim.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! Structure: one main task consumes a pod watcher, keeps the scheduler's books (which pod uses
//! how much of which node) and decides bindings; one task per pod performs every write to that
//! pod (binding, status patches, final deletion) in order.

mod pod;
mod scenario;
pub mod scheduling;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

pub use scenario::{
    BeforeExitHook, OutcomeFn, PodOutcome, PodPredicate, SIM_NODE_LABEL, Scenario, SimNode,
};

use pod::{PodTask, ToMain, ToPod, retry, ts};
use scheduling::{NodeView, Resources};

/// A simulated node as created in the API.
#[derive(Debug, Clone)]
pub(crate) struct NodeState {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub capacity: BTreeMap<String, String>,
    pub allocatable: Resources,
    pub ip: String,
}

pub(crate) struct Shared {
    pub client: Client,
    pub scenario: Scenario,
    pub nodes: Vec<NodeState>,
}

impl Shared {
    pub(crate) fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }
}

/// A running simulator. Stop it with [`KubeletSim::shutdown`] (also deletes its Nodes); dropping
/// it stops the simulation too (Node deletion is then best effort).
pub struct KubeletSim {
    prefix: String,
    node_names: Vec<String>,
    client: Client,
    stop: Option<oneshot::Sender<()>>,
    main: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for KubeletSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeletSim")
            .field("prefix", &self.prefix)
            .field("nodes", &self.node_names)
            .finish()
    }
}

impl KubeletSim {
    /// Creates the scenario's Nodes (Ready, `not-ready` taint removed), starts watching pods, and
    /// returns once the first pod list was processed (so pods created afterwards are handled, and
    /// pods that already exist were seen).
    pub async fn start(client: Client, scenario: Scenario) -> Result<KubeletSim> {
        let prefix = scenario
            .node_prefix
            .clone()
            .unwrap_or_else(|| format!("sim-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]));
        let mut nodes = Vec::with_capacity(scenario.nodes.len());
        let mut seen = HashSet::new();
        for (i, n) in scenario.nodes.iter().enumerate() {
            let name = format!("{prefix}-{}", n.name);
            if !seen.insert(name.clone()) {
                bail!("duplicate node name {name} in scenario");
            }
            let mut labels = n.labels.clone();
            labels.insert("kubernetes.io/hostname".into(), name.clone());
            labels.insert(SIM_NODE_LABEL.into(), prefix.clone());
            let mut allocatable = Resources::new();
            for (k, q) in &n.capacity {
                let v = scheduling::parse_quantity(q)
                    .with_context(|| format!("node {name}: bad quantity {k}={q}"))?;
                allocatable.insert(k.clone(), v);
            }
            nodes.push(NodeState {
                name,
                labels,
                taints: n.taints.clone(),
                capacity: n.capacity.clone(),
                allocatable,
                ip: format!(
                    "10.{}.{}.{}",
                    200 + (i / 65536) % 50,
                    (i / 256) % 256,
                    10 + i % 240
                ),
            });
        }
        let node_api: Api<Node> = Api::all(client.clone());
        for (i, n) in nodes.iter().enumerate() {
            if let Err(e) = register_node(&node_api, n).await {
                let created = nodes[..=i].iter().map(|n| n.name.clone()).collect();
                let _ = delete_nodes(client.clone(), created).await;
                return Err(e);
            }
        }

        let shared = Arc::new(Shared {
            client: client.clone(),
            scenario,
            nodes,
        });
        let (stop_tx, stop_rx) = oneshot::channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let main = tokio::spawn(MainLoop::new(shared.clone()).run(stop_rx, ready_tx));
        let sim = KubeletSim {
            prefix,
            node_names: shared.nodes.iter().map(|n| n.name.clone()).collect(),
            client,
            stop: Some(stop_tx),
            main: Some(main),
        };
        match tokio::time::timeout(Duration::from_secs(30), ready_rx).await {
            Ok(Ok(())) => Ok(sim),
            _ => {
                let _ = sim.shutdown().await;
                bail!(
                    "kubelet simulator: the pod watch did not deliver its initial list within 30s"
                )
            }
        }
    }

    /// Prefix of the simulator's node names (`sim-xxxxxx` unless set in the scenario).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Full names of the simulated nodes, in scenario order.
    pub fn node_names(&self) -> &[String] {
        &self.node_names
    }

    /// Full name of the node the scenario calls `short` (`<prefix>-<short>`).
    pub fn node_name(&self, short: &str) -> String {
        format!("{}-{short}", self.prefix)
    }

    /// Stops the simulation (pods are left as they are) and deletes the simulated Nodes.
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(main) = self.main.take() {
            let _ = main.await;
        }
        delete_nodes(self.client.clone(), std::mem::take(&mut self.node_names)).await
    }
}

impl Drop for KubeletSim {
    fn drop(&mut self) {
        if let Some(main) = self.main.take() {
            main.abort();
        }
        let names = std::mem::take(&mut self.node_names);
        if !names.is_empty()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let client = self.client.clone();
            rt.spawn(async move {
                let _ = delete_nodes(client, names).await;
            });
        }
    }
}

async fn delete_nodes(client: Client, names: Vec<String>) -> Result<()> {
    let api: Api<Node> = Api::all(client);
    let mut failed = Vec::new();
    for n in names {
        let dp = DeleteParams::default();
        match retry("delete node", || api.delete(&n, &dp)).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => failed.push(format!("{n}: {e}")),
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        bail!("deleting simulated nodes: {}", failed.join("; "))
    }
}

/// Creates a Node, removes the taints a real API server adds at registration
/// (`node.kubernetes.io/not-ready`), and reports it Ready through `nodes/{name}/status`.
async fn register_node(api: &Api<Node>, n: &NodeState) -> Result<()> {
    let now = ts(pod::now());
    let status = json!({
        "capacity": n.capacity,
        "allocatable": n.capacity,
        "conditions": [
            {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory",
             "message": "kubelet has sufficient memory available", "lastHeartbeatTime": now, "lastTransitionTime": now},
            {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure",
             "message": "kubelet has no disk pressure", "lastHeartbeatTime": now, "lastTransitionTime": now},
            {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID",
             "message": "kubelet has sufficient PID available", "lastHeartbeatTime": now, "lastTransitionTime": now},
            {"type": "Ready", "status": "True", "reason": "KubeletReady",
             "message": "kubelet is posting ready status (simulated)", "lastHeartbeatTime": now, "lastTransitionTime": now},
        ],
        "addresses": [
            {"type": "InternalIP", "address": n.ip},
            {"type": "Hostname", "address": n.name},
        ],
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": "",
            "kernelVersion": "6.1.0-sim", "osImage": "provenant kubelet simulator",
            "containerRuntimeVersion": "containerd://1.7.0-sim", "kubeletVersion": "v1.33.0-sim",
            "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64",
        },
    });
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": n.name, "labels": n.labels},
        "spec": {"taints": n.taints},
        "status": status,
    }))
    .context("building Node")?;
    let pp = PostParams::default();
    let patch_params = PatchParams::default();
    match retry("create node", || api.create(&pp, &node)).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {
            // Left over from an earlier run with the same prefix: take it over.
            let patch = Patch::Merge(json!({"metadata": {"labels": n.labels}}));
            retry("relabel node", || api.patch(&n.name, &patch_params, &patch))
                .await
                .with_context(|| format!("relabelling existing node {}", n.name))?;
        }
        Err(e) => return Err(e).with_context(|| format!("creating node {}", n.name)),
    }
    // Exactly the scenario's taints: drops node.kubernetes.io/not-ready added at registration.
    let taints = if n.taints.is_empty() {
        serde_json::Value::Null
    } else {
        json!(n.taints)
    };
    let patch = Patch::Merge(json!({"spec": {"taints": taints}}));
    retry("set node taints", || {
        api.patch(&n.name, &patch_params, &patch)
    })
    .await
    .with_context(|| format!("setting taints of node {}", n.name))?;
    let patch = Patch::Merge(json!({"status": status}));
    retry("node status", || {
        api.patch_status(&n.name, &patch_params, &patch)
    })
    .await
    .with_context(|| format!("patching status of node {}", n.name))?;
    tracing::info!(node = %n.name, "kubelet-sim: node registered and Ready");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Main loop

struct Tracked {
    pod: Pod,
    tx: mpsc::UnboundedSender<ToPod>,
    /// Node index and requests counted against it (bound, or reserved while binding).
    alloc: Option<(usize, Resources)>,
    /// Binding in flight (the watch does not show `nodeName` yet).
    reserved: bool,
    /// Last unschedulable message sent to the task.
    unschedulable: Option<String>,
    /// After a failed binding: not before this instant again.
    retry_after: Option<tokio::time::Instant>,
}

struct MainLoop {
    shared: Arc<Shared>,
    pods: HashMap<String, Tracked>,
    tasks: JoinSet<()>,
    to_main_tx: mpsc::UnboundedSender<ToMain>,
    to_main_rx: mpsc::UnboundedReceiver<ToMain>,
    /// UIDs listed since the last watcher (re)start, `None` outside of an initial list.
    init_seen: Option<HashSet<String>>,
}

fn uid_of(pod: &Pod) -> Option<String> {
    pod.metadata.uid.clone()
}

fn phase_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Whether the default scheduler would consider the pod.
fn wants_scheduling(pod: &Pod) -> bool {
    let Some(spec) = &pod.spec else { return false };
    spec.node_name.is_none()
        && pod.metadata.deletion_timestamp.is_none()
        && !phase_terminal(pod)
        && spec
            .scheduler_name
            .as_deref()
            .is_none_or(|s| s.is_empty() || s == "default-scheduler")
        && spec.scheduling_gates.as_ref().is_none_or(|g| g.is_empty())
}

impl MainLoop {
    fn new(shared: Arc<Shared>) -> Self {
        let (to_main_tx, to_main_rx) = mpsc::unbounded_channel();
        MainLoop {
            shared,
            pods: HashMap::new(),
            tasks: JoinSet::new(),
            to_main_tx,
            to_main_rx,
            init_seen: None,
        }
    }

    async fn run(mut self, mut stop: oneshot::Receiver<()>, ready: oneshot::Sender<()>) {
        let api: Api<Pod> = match &self.shared.scenario.namespace {
            Some(ns) => Api::namespaced(self.shared.client.clone(), ns),
            None => Api::all(self.shared.client.clone()),
        };
        let mut config = watcher::Config::default();
        if let Some(sel) = &self.shared.scenario.label_selector {
            config = config.labels(sel);
        }
        let mut events = watcher::watcher(api, config).default_backoff().boxed();
        let mut ready = Some(ready);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                ev = events.next() => match ev {
                    Some(Ok(ev)) => {
                        let init_done = matches!(ev, Event::InitDone);
                        self.on_event(ev);
                        if init_done && let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    Some(Err(e)) => tracing::warn!(error = %e, "kubelet-sim: pod watch error (retrying)"),
                    None => {
                        tracing::warn!("kubelet-sim: pod watch ended; simulator stops");
                        break;
                    }
                },
                Some(msg) = self.to_main_rx.recv() => self.on_task_message(msg),
                Some(res) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    if let Err(e) = res && e.is_panic() {
                        tracing::error!(error = %e, "kubelet-sim: pod task panicked");
                    }
                }
                _ = tick.tick() => {}
            }
            self.schedule_pending();
        }
        self.tasks.shutdown().await;
    }

    fn on_event(&mut self, ev: Event<Pod>) {
        match ev {
            Event::Init => self.init_seen = Some(HashSet::new()),
            Event::InitApply(pod) => {
                if let (Some(seen), Some(uid)) = (&mut self.init_seen, uid_of(&pod)) {
                    seen.insert(uid);
                }
                self.on_apply(pod);
            }
            Event::InitDone => {
                if let Some(seen) = self.init_seen.take() {
                    let gone: Vec<String> = self
                        .pods
                        .keys()
                        .filter(|uid| !seen.contains(*uid))
                        .cloned()
                        .collect();
                    for uid in gone {
                        self.forget(&uid);
                    }
                }
            }
            Event::Apply(pod) => self.on_apply(pod),
            Event::Delete(pod) => {
                if let Some(uid) = uid_of(&pod) {
                    self.forget(&uid);
                }
            }
        }
    }

    fn forget(&mut self, uid: &str) {
        if let Some(t) = self.pods.remove(uid) {
            let _ = t.tx.send(ToPod::Gone);
        }
    }

    fn on_apply(&mut self, pod: Pod) {
        let Some(uid) = uid_of(&pod) else {
            tracing::warn!(pod = ?pod.metadata.name, "kubelet-sim: pod without uid ignored");
            return;
        };
        if pod.metadata.name.is_none() || pod.spec.is_none() {
            tracing::warn!(%uid, "kubelet-sim: pod without name or spec ignored");
            return;
        }
        let node_name = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let node_index = node_name.as_deref().map(|n| self.shared.node_index(n));
        if let Some(None) = node_index {
            // Bound to a node that is not ours: not our business.
            self.forget(&uid);
            return;
        }
        if !self.pods.contains_key(&uid) {
            if node_index.is_none() && !wants_scheduling(&pod) {
                return; // gated, other scheduler, terminal, or being deleted: nothing to do
            }
            let (tx, rx) = mpsc::unbounded_channel();
            let task = PodTask::new(
                self.shared.clone(),
                pod.clone(),
                rx,
                self.to_main_tx.clone(),
            );
            self.tasks.spawn(task.run());
            self.pods.insert(
                uid.clone(),
                Tracked {
                    pod: pod.clone(),
                    tx,
                    alloc: None,
                    reserved: false,
                    unschedulable: None,
                    retry_after: None,
                },
            );
        }
        let Some(t) = self.pods.get_mut(&uid) else {
            return;
        };
        match node_index {
            Some(Some(i)) if !phase_terminal(&pod) => {
                t.alloc = Some((i, scheduling::pod_requests(&pod)));
                t.reserved = false;
            }
            Some(Some(_)) => {
                t.alloc = None;
                t.reserved = false;
            }
            _ if phase_terminal(&pod) => t.alloc = None,
            _ => {}
        }
        t.pod = pod.clone();
        let _ = t.tx.send(ToPod::Observed(Box::new(pod)));
    }

    fn on_task_message(&mut self, msg: ToMain) {
        match msg {
            ToMain::BindFailed(uid) => {
                if let Some(t) = self.pods.get_mut(&uid)
                    && t.reserved
                {
                    t.alloc = None;
                    t.reserved = false;
                    t.retry_after = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                }
            }
        }
    }

    /// Binds every pod waiting for a node that now fits (creation order, first-fit over the
    /// scenario's nodes); reports the others unschedulable (once per distinct message).
    fn schedule_pending(&mut self) {
        let n = self.shared.nodes.len();
        let mut used = vec![Resources::new(); n];
        for t in self.pods.values() {
            if let Some((i, r)) = &t.alloc {
                scheduling::add(&mut used[*i], r);
            }
        }
        let now = tokio::time::Instant::now();
        let mut waiting: Vec<(&String, &Tracked)> = self
            .pods
            .iter()
            .filter(|(_, t)| {
                t.alloc.is_none()
                    && wants_scheduling(&t.pod)
                    && t.retry_after.is_none_or(|r| r <= now)
            })
            .collect();
        if waiting.is_empty() {
            return;
        }
        waiting.sort_by(|a, b| {
            let key = |t: &Tracked| {
                (
                    t.pod.metadata.creation_timestamp.as_ref().map(|c| c.0),
                    t.pod.metadata.name.clone(),
                )
            };
            key(a.1).cmp(&key(b.1))
        });
        let waiting: Vec<String> = waiting.into_iter().map(|(uid, _)| uid.clone()).collect();
        let views: Vec<NodeView<'_>> = self
            .shared
            .nodes
            .iter()
            .map(|n| NodeView {
                name: &n.name,
                labels: &n.labels,
                taints: &n.taints,
                allocatable: &n.allocatable,
            })
            .collect();
        let report = self.shared.scenario.report_unschedulable;
        for uid in waiting {
            let Some(t) = self.pods.get_mut(&uid) else {
                continue;
            };
            let requests = scheduling::pod_requests(&t.pod);
            match scheduling::pick_node(&t.pod, &requests, &views, &used) {
                Ok(i) => {
                    scheduling::add(&mut used[i], &requests);
                    t.alloc = Some((i, requests));
                    t.reserved = true;
                    t.unschedulable = None;
                    let _ = t.tx.send(ToPod::Bind(i));
                }
                Err(msg) => {
                    if report && t.unschedulable.as_deref() != Some(msg.as_str()) {
                        t.unschedulable = Some(msg.clone());
                        let _ = t.tx.send(ToPod::Unschedulable(msg));
                    }
                }
            }
        }
    }
}
