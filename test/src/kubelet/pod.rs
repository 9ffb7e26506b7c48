//! One task per pod: binds it (scheduler role) and drives its status (kubelet role). All writes to
//! a pod go through its task, so they are serialized; every patch sets absolute values
//! (idempotent, safe to retry).

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::time::Instant;

use super::Shared;
use super::scenario::{Behaviour, PodOutcome};

/// Main loop → pod task.
#[derive(Debug)]
pub(crate) enum ToPod {
    /// The latest version of the pod seen by the watcher.
    Observed(Box<Pod>),
    /// Scheduler decision: bind to node `index` (capacity already reserved).
    Bind(usize),
    /// Scheduler decision: no node fits (message as the scheduler words it).
    Unschedulable(String),
    /// The pod was deleted from the API.
    Gone,
}

/// Pod task → main loop.
#[derive(Debug)]
pub(crate) enum ToMain {
    /// Binding failed; release the reservation and reconsider the pod.
    BindFailed(String),
}

const DELETE_REASON_MESSAGE: &str =
    "The container could not be located when the pod was terminated";

pub(crate) fn now() -> Timestamp {
    Timestamp::now()
}

/// RFC 3339 at second precision, as the API server serializes `metav1.Time`.
pub(crate) fn ts(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn is_transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code >= 500 || s.code == 429 || s.code == 0,
        kube::Error::SerdeError(_) | kube::Error::BuildRequest(_) => false,
        _ => true,
    }
}

fn code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// Retries `op` on transient errors (connection problems, 5xx, 429) with exponential backoff.
pub(crate) async fn retry<T, F, Fut>(what: &str, mut op: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut delay = Duration::from_millis(50);
    let mut attempt = 0;
    loop {
        attempt += 1;
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if is_transient(&e) && attempt < 15 => {
                tracing::debug!(%what, attempt, error = %e, "kubelet-sim: retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Images

/// Splits an image reference the way containerd reports it: (`repository` fully qualified,
/// `tag`, `digest`). `busybox:1.36` → (`docker.io/library/busybox`, `1.36`, None).
pub(crate) fn parse_image(image: &str) -> (String, Option<String>, Option<String>) {
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d.to_string())),
        None => (image, None),
    };
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name[last_slash..].rfind(':') {
        Some(i) => (
            &name[..last_slash + i],
            Some(name[last_slash + i + 1..].to_string()),
        ),
        None => (name, None),
    };
    let repo = match name.split_once('/') {
        Some((domain, _)) if domain.contains(['.', ':']) || domain == "localhost" => {
            name.to_string()
        }
        Some(_) => format!("docker.io/{name}"),
        None => format!("docker.io/library/{name}"),
    };
    (repo, tag, digest)
}

/// What a container status says about a container.
#[derive(Debug, Clone)]
pub(crate) struct ContainerFacts {
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub container_id: String,
}

pub(crate) fn container_facts(pod: &Pod, outcome: &PodOutcome) -> Vec<ContainerFacts> {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    containers
        .iter()
        .map(|c| {
            let spec_image = c.image.clone().unwrap_or_default();
            let (repo, tag, pinned) = parse_image(&spec_image);
            let digest = outcome
                .image_digests
                .get(&c.name)
                .cloned()
                .or(pinned.clone())
                .unwrap_or_else(|| {
                    format!(
                        "sha256:{}",
                        hex::encode(Sha256::digest(spec_image.as_bytes()))
                    )
                });
            let image = match (&pinned, &tag) {
                (Some(d), _) => format!("{repo}@{d}"),
                (None, Some(t)) => format!("{repo}:{t}"),
                (None, None) => format!("{repo}:latest"),
            };
            let cid = hex::encode(Sha256::digest(format!("{uid}/{}", c.name).as_bytes()));
            ContainerFacts {
                name: c.name.clone(),
                image,
                image_id: format!("{repo}@{digest}"),
                container_id: format!("containerd://{cid}"),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Status documents

fn condition(
    kind: &str,
    status: bool,
    reason: Option<&str>,
    message: Option<&str>,
    at: &str,
) -> Value {
    let mut c = json!({
        "type": kind,
        "status": if status { "True" } else { "False" },
        "lastProbeTime": null,
        "lastTransitionTime": at,
    });
    if let Some(r) = reason {
        c["reason"] = json!(r);
    }
    if let Some(m) = message {
        c["message"] = json!(m);
    }
    c
}

fn conditions(
    sandbox: bool,
    ready: bool,
    reason: Option<&str>,
    message: Option<&str>,
    at: &str,
) -> Value {
    json!([
        condition("PodReadyToStartContainers", sandbox, None, None, at),
        condition("Initialized", true, None, None, at),
        condition("Ready", ready, reason, message, at),
        condition("ContainersReady", ready, reason, message, at),
        condition("PodScheduled", true, None, None, at),
    ])
}

fn unready_message(facts: &[ContainerFacts]) -> String {
    let names: Vec<&str> = facts.iter().map(|f| f.name.as_str()).collect();
    format!("containers with unready status: [{}]", names.join(" "))
}

/// How one container ended.
#[derive(Debug, Clone)]
struct Exit {
    code: i32,
    reason: String,
    message: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// The task

enum Wake {
    Timer,
    Deleted,
    Gone,
}

fn deletion_requested(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `Instant` corresponding to a wall-clock timestamp (for timers relative to `startTime`).
fn instant_of(t: Timestamp) -> Instant {
    let ago = now().duration_since(t);
    let ago = Duration::try_from(ago).unwrap_or(Duration::ZERO);
    Instant::now().checked_sub(ago).unwrap_or_else(Instant::now)
}

pub(crate) struct PodTask {
    shared: Arc<Shared>,
    api: Api<Pod>,
    name: String,
    uid: String,
    pod: Pod,
    rx: UnboundedReceiver<ToPod>,
    main: UnboundedSender<ToMain>,
}

impl PodTask {
    pub(crate) fn new(
        shared: Arc<Shared>,
        pod: Pod,
        rx: UnboundedReceiver<ToPod>,
        main: UnboundedSender<ToMain>,
    ) -> Self {
        let ns = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        PodTask {
            api: Api::namespaced(shared.client.clone(), &ns),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            shared,
            pod,
            rx,
            main,
        }
    }

    fn key(&self) -> String {
        format!(
            "{}/{}",
            self.pod.metadata.namespace.as_deref().unwrap_or_default(),
            self.name
        )
    }

    pub(crate) async fn run(mut self) {
        let Some(node) = self.until_bound().await else {
            return;
        };
        self.kubelet(node).await;
    }

    // ----- scheduler role

    async fn until_bound(&mut self) -> Option<usize> {
        let mut delete_sent = false;
        loop {
            if let Some(n) = self.pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
                return self.shared.node_index(n);
            }
            if deletion_requested(&self.pod) && !delete_sent {
                // Unscheduled pods go away at once on a real API server; help doubles that wait.
                self.force_delete().await;
                delete_sent = true;
            }
            match self.rx.recv().await {
                None | Some(ToPod::Gone) => return None,
                Some(ToPod::Observed(p)) => self.pod = *p,
                Some(ToPod::Unschedulable(msg)) => self.patch_unschedulable(&msg).await,
                Some(ToPod::Bind(i)) => {
                    if let Some(bound) = self.bind(i).await {
                        return bound;
                    }
                }
            }
        }
    }

    /// `Some(Some(i))` bound to our node `i`, `Some(None)` bound elsewhere (not ours), `None`
    /// failed (reservation released; the main loop retries).
    async fn bind(&mut self, index: usize) -> Option<Option<usize>> {
        let node = self.shared.nodes[index].name.clone();
        let binding = json!({
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": self.name, "namespace": self.pod.metadata.namespace, "uid": self.uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        });
        let pp = PostParams::default();
        let res = retry("bind", || {
            self.api
                .create_subresource::<_, Value>("binding", &self.name, &pp, &binding)
        })
        .await;
        match res {
            Ok(_) => {
                tracing::info!(pod = %self.key(), %node, "kubelet-sim: bound");
                if let Some(spec) = self.pod.spec.as_mut() {
                    spec.node_name = Some(node);
                }
                Some(Some(index))
            }
            Err(e) if code(&e) == Some(409) => {
                // Already bound (by us earlier, or by someone else): look at the pod.
                match self.api.get_opt(&self.name).await {
                    Ok(Some(p)) if p.metadata.uid.as_deref() == Some(self.uid.as_str()) => {
                        let bound = p.spec.as_ref().and_then(|s| s.node_name.clone());
                        self.pod = p;
                        match bound {
                            Some(n) => Some(self.shared.node_index(&n)),
                            None => {
                                tracing::warn!(pod = %self.key(), error = %e, "kubelet-sim: binding conflict");
                                let _ = self.main.send(ToMain::BindFailed(self.uid.clone()));
                                None
                            }
                        }
                    }
                    _ => {
                        let _ = self.main.send(ToMain::BindFailed(self.uid.clone()));
                        None
                    }
                }
            }
            Err(e) => {
                if code(&e) != Some(404) {
                    tracing::warn!(pod = %self.key(), %node, error = %e, "kubelet-sim: binding failed");
                }
                let _ = self.main.send(ToMain::BindFailed(self.uid.clone()));
                None
            }
        }
    }

    async fn patch_unschedulable(&mut self, message: &str) {
        if self
            .pod
            .spec
            .as_ref()
            .is_some_and(|s| s.node_name.is_some())
        {
            return;
        }
        let at = ts(now());
        let status = json!({
            "phase": "Pending",
            "conditions": [condition("PodScheduled", false, Some("Unschedulable"), Some(message), &at)],
        });
        tracing::info!(pod = %self.key(), %message, "kubelet-sim: unschedulable");
        self.patch_status(status).await;
    }

    // ----- kubelet role

    async fn kubelet(&mut self, node: usize) {
        let outcome = self.shared.scenario.outcome_for(&self.pod);
        let facts = container_facts(&self.pod, &outcome);
        if is_terminal(&self.pod) {
            return self.idle(false).await;
        }
        let status = self.pod.status.clone().unwrap_or_default();
        let start = status.start_time.as_ref().map(|t| t.0).unwrap_or_else(now);
        let deadline = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.active_deadline_seconds)
            .and_then(|s| instant_of(start).checked_add(Duration::from_secs(s.max(0) as u64)));

        let running_since = if status.phase.as_deref() == Some("Running") {
            // Resuming a pod some kubelet already started.
            status
                .container_statuses
                .iter()
                .flatten()
                .find_map(|c| c.state.as_ref()?.running.as_ref()?.started_at.as_ref())
                .map(|t| t.0)
                .unwrap_or(start)
        } else {
            if deletion_requested(&self.pod) {
                return self.kill(&outcome, &facts, node, start, None).await;
            }
            self.patch_creating(&facts, node, start).await;
            if outcome.behaviour == Behaviour::ImagePullBackOff {
                return self
                    .image_pull_backoff(&outcome, &facts, node, start, deadline)
                    .await;
            }
            let ready_at = Instant::now().checked_add(outcome.start_after);
            match self.wait(earliest(ready_at, deadline)).await {
                Wake::Gone => return,
                Wake::Deleted => return self.kill(&outcome, &facts, node, start, None).await,
                Wake::Timer if deadline.is_some_and(|d| d <= Instant::now()) => {
                    return self
                        .deadline_exceeded(&outcome, &facts, node, start, None)
                        .await;
                }
                Wake::Timer => {}
            }
            let t = now();
            self.patch_running(&facts, node, start, t).await;
            t
        };

        let finish = match outcome.behaviour {
            Behaviour::Exit(_) => instant_of(running_since).checked_add(outcome.run_for),
            _ => None,
        };
        match self.wait(earliest(finish, deadline)).await {
            Wake::Gone => return,
            Wake::Deleted => {
                return self
                    .kill(&outcome, &facts, node, start, Some(running_since))
                    .await;
            }
            Wake::Timer if deadline.is_some_and(|d| d <= Instant::now()) => {
                return self
                    .deadline_exceeded(&outcome, &facts, node, start, Some(running_since))
                    .await;
            }
            Wake::Timer => {}
        }

        let Behaviour::Exit(exit_code) = outcome.behaviour else {
            return self.idle(false).await;
        };
        if let Some((reason, message)) = &outcome.disruption {
            tracing::info!(pod = %self.key(), %reason, "kubelet-sim: disrupted (eviction or node shutdown)");
            let exits = self.killed_exits(&outcome, &facts, Some(running_since));
            let pod_reason = Some((reason.as_str(), message.as_str()));
            self.patch_terminated(&facts, node, start, Some(running_since), &exits, pod_reason)
                .await;
            return self.idle(false).await;
        }
        let mut main_exit = Exit {
            code: exit_code,
            reason: outcome
                .reason
                .clone()
                .unwrap_or_else(|| if exit_code == 0 { "Completed" } else { "Error" }.to_string()),
            message: outcome.message.clone(),
        };
        if let Some(hook) = outcome.before_exit.clone() {
            let fut = hook(self.pod.clone());
            tokio::pin!(fut);
            let res = tokio::select! {
                res = &mut fut => res,
                wake = self.wait(deadline) => {
                    return match wake {
                        Wake::Gone => {}
                        Wake::Deleted => self.kill(&outcome, &facts, node, start, Some(running_since)).await,
                        Wake::Timer => self.deadline_exceeded(&outcome, &facts, node, start, Some(running_since)).await,
                    };
                }
            };
            match res {
                Ok(message) => main_exit.message = Some(message),
                Err(e) => {
                    tracing::warn!(pod = %self.key(), error = %format!("{e:#}"), "kubelet-sim: before_exit hook failed");
                    main_exit = Exit {
                        code: 1,
                        reason: "Error".into(),
                        message: Some(format!("before_exit hook failed: {e:#}")),
                    };
                }
            }
        }
        let main_name = outcome
            .container
            .clone()
            .or_else(|| facts.first().map(|f| f.name.clone()));
        let exits: Vec<Exit> = facts
            .iter()
            .map(|f| {
                if Some(&f.name) == main_name.as_ref() {
                    main_exit.clone()
                } else {
                    Exit {
                        code: 0,
                        reason: "Completed".into(),
                        message: None,
                    }
                }
            })
            .collect();
        self.patch_terminated(&facts, node, start, Some(running_since), &exits, None)
            .await;
        self.idle(false).await
    }

    async fn image_pull_backoff(
        &mut self,
        outcome: &PodOutcome,
        facts: &[ContainerFacts],
        node: usize,
        start: Timestamp,
        deadline: Option<Instant>,
    ) {
        for (i, reason) in ["ErrImagePull", "ImagePullBackOff"].into_iter().enumerate() {
            let message = format!(
                "failed to pull and unpack image: {}: not found (simulated)",
                facts.first().map(|f| f.image.as_str()).unwrap_or_default()
            );
            let statuses: Vec<Value> = facts
                .iter()
                .map(|f| {
                    json!({
                        "name": f.name, "image": f.image, "imageID": "", "ready": false, "started": false,
                        "restartCount": 0,
                        "state": {"waiting": {"reason": reason, "message": message}},
                    })
                })
                .collect();
            self.patch_pending(facts, node, start, statuses).await;
            let next = if i == 0 {
                Some(Instant::now() + Duration::from_millis(200))
            } else {
                None
            };
            match self.wait(earliest(next, deadline)).await {
                Wake::Gone => return,
                Wake::Deleted => return self.kill(outcome, facts, node, start, None).await,
                Wake::Timer if deadline.is_some_and(|d| d <= Instant::now()) => {
                    return self
                        .deadline_exceeded(outcome, facts, node, start, None)
                        .await;
                }
                Wake::Timer => {}
            }
        }
    }

    /// Deleted while on the node: stop the containers like a kubelet (terminated, exit code
    /// `killed_with`, reason `Error`; never-started containers `ContainerStatusUnknown`), phase
    /// `Failed`, then confirm the deletion (`gracePeriodSeconds=0`).
    async fn kill(
        &mut self,
        outcome: &PodOutcome,
        facts: &[ContainerFacts],
        node: usize,
        start: Timestamp,
        running_since: Option<Timestamp>,
    ) {
        tracing::info!(pod = %self.key(), "kubelet-sim: killing deleted pod");
        let exits = self.killed_exits(outcome, facts, running_since);
        self.patch_terminated(facts, node, start, running_since, &exits, None)
            .await;
        self.force_delete().await;
        self.idle(true).await
    }

    async fn deadline_exceeded(
        &mut self,
        outcome: &PodOutcome,
        facts: &[ContainerFacts],
        node: usize,
        start: Timestamp,
        running_since: Option<Timestamp>,
    ) {
        tracing::info!(pod = %self.key(), "kubelet-sim: activeDeadlineSeconds exceeded");
        let exits = self.killed_exits(outcome, facts, running_since);
        let pod_reason = (
            "DeadlineExceeded",
            "Pod was active on the node longer than the specified deadline",
        );
        self.patch_terminated(facts, node, start, running_since, &exits, Some(pod_reason))
            .await;
        self.idle(false).await
    }

    fn killed_exits(
        &self,
        outcome: &PodOutcome,
        facts: &[ContainerFacts],
        running_since: Option<Timestamp>,
    ) -> Vec<Exit> {
        facts
            .iter()
            .map(|_| match running_since {
                Some(_) => Exit {
                    code: outcome.kill_exit_code,
                    reason: "Error".into(),
                    message: None,
                },
                None => Exit {
                    code: 137,
                    reason: "ContainerStatusUnknown".into(),
                    message: Some(DELETE_REASON_MESSAGE.into()),
                },
            })
            .collect()
    }

    /// Waits for a timer, the pod's deletion (`deletionTimestamp`), or its disappearance.
    async fn wait(&mut self, until: Option<Instant>) -> Wake {
        loop {
            if deletion_requested(&self.pod) {
                return Wake::Deleted;
            }
            let msg = match until {
                Some(t) => match tokio::time::timeout_at(t, self.rx.recv()).await {
                    Ok(m) => m,
                    Err(_) => return Wake::Timer,
                },
                None => self.rx.recv().await,
            };
            match msg {
                None | Some(ToPod::Gone) => return Wake::Gone,
                Some(ToPod::Observed(p)) => self.pod = *p,
                Some(ToPod::Bind(_) | ToPod::Unschedulable(_)) => {}
            }
        }
    }

    /// After the pod ended: confirm its deletion when requested, until it is gone.
    async fn idle(&mut self, mut delete_sent: bool) {
        loop {
            if deletion_requested(&self.pod) && !delete_sent {
                self.force_delete().await;
                delete_sent = true;
            }
            match self.rx.recv().await {
                None | Some(ToPod::Gone) => return,
                Some(ToPod::Observed(p)) => self.pod = *p,
                Some(_) => {}
            }
        }
    }

    async fn force_delete(&mut self) {
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match retry("delete", || self.api.delete(&self.name, &dp)).await {
            Ok(_) => tracing::info!(pod = %self.key(), "kubelet-sim: deleted (grace 0)"),
            Err(e) if matches!(code(&e), Some(404 | 409)) => {}
            Err(e) => tracing::warn!(pod = %self.key(), error = %e, "kubelet-sim: delete failed"),
        }
    }

    // ----- status patches

    async fn patch_status(&mut self, status: Value) -> bool {
        let patch = Patch::Merge(json!({"metadata": {"uid": self.uid}, "status": status}));
        let pp = PatchParams::default();
        match retry("patch status", || {
            self.api.patch_status(&self.name, &pp, &patch)
        })
        .await
        {
            Ok(_) => true,
            Err(e) => {
                if code(&e) != Some(404) {
                    tracing::warn!(pod = %self.key(), error = %e, "kubelet-sim: status patch failed");
                }
                false
            }
        }
    }

    fn host_ip(&self, node: usize) -> String {
        self.shared.nodes[node].ip.clone()
    }

    fn pod_ip(&self, node: usize) -> String {
        let h = Sha256::digest(self.uid.as_bytes());
        format!("10.244.{}.{}", node % 256, 2 + (h[0] as usize % 250))
    }

    async fn patch_pending(
        &mut self,
        facts: &[ContainerFacts],
        node: usize,
        start: Timestamp,
        statuses: Vec<Value>,
    ) {
        let at = ts(now());
        let msg = unready_message(facts);
        let host_ip = self.host_ip(node);
        let status = json!({
            "phase": "Pending",
            "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}],
            "startTime": ts(start),
            "conditions": conditions(false, false, Some("ContainersNotReady"), Some(&msg), &at),
            "containerStatuses": statuses,
        });
        self.patch_status(status).await;
    }

    async fn patch_creating(&mut self, facts: &[ContainerFacts], node: usize, start: Timestamp) {
        let statuses = facts
            .iter()
            .map(|f| {
                json!({
                    "name": f.name, "image": f.image, "imageID": "", "ready": false, "started": false,
                    "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}},
                })
            })
            .collect();
        tracing::debug!(pod = %self.key(), "kubelet-sim: ContainerCreating");
        self.patch_pending(facts, node, start, statuses).await;
    }

    async fn patch_running(
        &mut self,
        facts: &[ContainerFacts],
        node: usize,
        start: Timestamp,
        started: Timestamp,
    ) {
        let at = ts(started);
        let host_ip = self.host_ip(node);
        let pod_ip = self.pod_ip(node);
        let statuses: Vec<Value> = facts
            .iter()
            .map(|f| {
                json!({
                    "name": f.name, "image": f.image, "imageID": f.image_id, "containerID": f.container_id,
                    "ready": true, "started": true, "restartCount": 0,
                    "state": {"running": {"startedAt": at}},
                })
            })
            .collect();
        let status = json!({
            "phase": "Running",
            "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}],
            "podIP": pod_ip,
            "podIPs": [{"ip": pod_ip}],
            "startTime": ts(start),
            "conditions": conditions(true, true, None, None, &at),
            "containerStatuses": statuses,
        });
        tracing::info!(pod = %self.key(), node = %self.shared.nodes[node].name, "kubelet-sim: Running");
        self.patch_status(status).await;
    }

    async fn patch_terminated(
        &mut self,
        facts: &[ContainerFacts],
        node: usize,
        start: Timestamp,
        running_since: Option<Timestamp>,
        exits: &[Exit],
        pod_reason: Option<(&str, &str)>,
    ) {
        let finished = ts(now());
        let statuses: Vec<Value> = facts
            .iter()
            .zip(exits)
            .map(|(f, e)| {
                let mut terminated = json!({"exitCode": e.code, "reason": e.reason, "finishedAt": finished});
                if let Some(s) = running_since {
                    terminated["startedAt"] = json!(ts(s));
                    terminated["containerID"] = json!(f.container_id);
                }
                if let Some(m) = e.message.as_deref().filter(|m| !m.is_empty()) {
                    terminated["message"] = json!(m);
                }
                let mut cs = json!({
                    "name": f.name, "image": f.image, "imageID": "", "ready": false, "started": false,
                    "restartCount": 0, "state": {"terminated": terminated},
                });
                if running_since.is_some() {
                    cs["imageID"] = json!(f.image_id);
                    cs["containerID"] = json!(f.container_id);
                }
                cs
            })
            .collect();
        let succeeded = pod_reason.is_none() && exits.iter().all(|e| e.code == 0);
        let phase = if succeeded { "Succeeded" } else { "Failed" };
        let host_ip = self.host_ip(node);
        let mut status = json!({
            "phase": phase,
            "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}],
            "startTime": ts(start),
            "conditions": conditions(false, false, Some(if succeeded { "PodCompleted" } else { "PodFailed" }), None, &finished),
            "containerStatuses": statuses,
        });
        if running_since.is_some() {
            let pod_ip = self.pod_ip(node);
            status["podIP"] = json!(pod_ip);
            status["podIPs"] = json!([{"ip": pod_ip}]);
        }
        if let Some((reason, message)) = pod_reason {
            status["reason"] = json!(reason);
            status["message"] = json!(message);
            // The kubelet marks a pod it ends for node pressure or shutdown (not for its deadline).
            if reason != "DeadlineExceeded"
                && let Some(list) = status["conditions"].as_array_mut()
            {
                list.push(condition(
                    "DisruptionTarget",
                    true,
                    Some("TerminationByKubelet"),
                    Some(message),
                    &finished,
                ));
            }
        }
        tracing::info!(pod = %self.key(), %phase, exit_codes = ?exits.iter().map(|e| e.code).collect::<Vec<_>>(), "kubelet-sim: terminated");
        self.patch_status(status).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_normalized_like_containerd() {
        let p = |s: &str| parse_image(s);
        assert_eq!(
            p("busybox"),
            ("docker.io/library/busybox".into(), None, None)
        );
        assert_eq!(
            p("busybox:1.36"),
            (
                "docker.io/library/busybox".into(),
                Some("1.36".into()),
                None
            )
        );
        assert_eq!(
            p("pytorch/pytorch:2.3"),
            ("docker.io/pytorch/pytorch".into(), Some("2.3".into()), None)
        );
        assert_eq!(
            p("127.0.0.1:5000/ml/train:v1"),
            ("127.0.0.1:5000/ml/train".into(), Some("v1".into()), None)
        );
        assert_eq!(p("localhost/x"), ("localhost/x".into(), None, None));
        assert_eq!(
            p("ghcr.io/org/trainer:v2@sha256:abc"),
            (
                "ghcr.io/org/trainer".into(),
                Some("v2".into()),
                Some("sha256:abc".into())
            )
        );
        assert_eq!(
            p("registry:5000/img"),
            ("registry:5000/img".into(), None, None)
        );
    }

    #[test]
    fn timestamps_are_second_precision_utc() {
        let t: Timestamp = "2024-05-06T07:08:09.123456Z".parse().expect("ts");
        assert_eq!(ts(t), "2024-05-06T07:08:09Z");
    }
}
