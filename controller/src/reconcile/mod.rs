//! Reconcile: the lifecycle of one TrainingRun. Execute (create the workers), observe (record each
//! worker as it terminates), decide the phase, report (status, conditions, events). The pure
//! parts live in [`crate::execute`] and [`crate::observe`]; this module does the API calls.
//!
//! The provenance of succeeded runs (resolve, attest, report) is driven by [`provenance`].
//!
//! The status is the run's memory: worker records are only ever added, so a restart, a deleted
//! pod or garbage collection never loses what was observed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, instrument, warn};

use crate::api::{
    NamedDigest, Phase, ProvenanceState, ProvenanceStatus, ReportRecord, TrainingRun,
    TrainingRunStatus, WorkerRecord,
};
use crate::config::ControllerConfig;
use crate::execute::{self, WorkerPlan};
use crate::labels;

pub mod provenance;
pub mod queue;

use self::provenance::Attestor;
use crate::metrics::Metrics;
use crate::observe::{self, materials, report};

/// Field manager of every write provenant makes.
pub const FIELD_MANAGER: &str = "provenant";

/// Condition types.
pub mod condition {
    pub const SUCCEEDED: &str = "Succeeded";
    pub const MATERIALS_RECORDED: &str = "MaterialsRecorded";
}

/// Everything a reconcile needs.
pub struct Context {
    pub client: kube::Client,
    pub config: Arc<ControllerConfig>,
    pub recorder: Recorder,
    pub metrics: Metrics,
    /// Signs and attaches provenance; None when provenance is disabled.
    pub attestor: Option<Arc<Attestor>>,
    /// The controller's own namespace (signing key, credentials): no run may execute there.
    pub controller_namespace: String,
    /// Succeeded runs handed over to the provenance workers.
    pub queue: queue::ProvenanceQueue,
}

/// A reconcile failed; it is retried. Variant names read well as metric labels.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API request failed ({action}): {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
    #[error("TrainingRun has no namespace")]
    NoNamespace,
}

impl Error {
    /// The `reason` label of `provenant_reconcile_errors_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { .. } if self.is_conflict() => "Conflict",
            Error::Kube { .. } => "KubeApi",
            Error::NoNamespace => "NoNamespace",
        }
    }

    /// A write refused because the object changed since it was read (HTTP 409): the cached copy
    /// was stale. Routine under load; the newer version is on its way through the watch.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Kube { source: kube::Error::Api(s), .. } if s.code == 409)
    }
}

pub(super) fn kube_err(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let action = action.into();
    move |source| Error::Kube { action, source }
}

/// Entry point called by the kube-runtime Controller.
#[instrument(skip_all, fields(namespace = run.namespace().unwrap_or_default(), run = run.name_any()))]
pub async fn reconcile(run: Arc<TrainingRun>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_timer();
    let namespace = run.namespace().ok_or(Error::NoNamespace)?;
    if run.metadata.deletion_timestamp.is_some() {
        cleanup(&run, &namespace, &ctx).await
    } else {
        apply(&run, &namespace, &ctx).await
    }
}

/// Failed reconciles are counted and retried after a short pause. A conflict (stale cache) is
/// retried at once and logged at info: it is not a fault, and waiting 5 s would only delay the run.
pub fn error_policy(run: Arc<TrainingRun>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_errors
        .with_label_values(&[error.metric_label()])
        .inc();
    let (namespace, name) = (run.namespace().unwrap_or_default(), run.name_any());
    if error.is_conflict() {
        info!(namespace, name, error = %error, "object changed meanwhile; reconciling again");
        return Action::requeue(CONFLICT_RETRY);
    }
    warn!(namespace, name, error = %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// Retry delay after a conflict: long enough for the watch to deliver the newer version.
const CONFLICT_RETRY: Duration = Duration::from_millis(200);

/// What this reconcile decided about the run.
struct Outcome {
    phase: Phase,
    /// (reason, message) of a failure.
    failure: Option<(String, String)>,
    /// Waiting on something outside our control (reason, message).
    blocked: Option<(String, String)>,
}

async fn apply(run: &TrainingRun, namespace: &str, ctx: &Context) -> Result<Action, Error> {
    let status = run.status.clone().unwrap_or_default();
    let old_phase = status.phase.unwrap_or_default();
    if matches!(old_phase, Phase::Succeeded | Phase::Failed) {
        if owes_provenance(&status, ctx).is_some() {
            // Registry I/O happens on the provenance workers, never in a reconcile slot.
            ctx.queue.submit(run);
            return Ok(Action::await_change());
        }
        release_finalizer_if_done(run, namespace, &status, run.resource_version(), ctx).await?;
        return Ok(Action::await_change());
    }

    // Pods can mount any Secret of their namespace: a run in the controller's namespace could
    // read the signing key or use the controller's service account. Refused outright.
    if namespace == ctx.controller_namespace {
        let message = format!(
            "TrainingRuns may not run in {namespace}, the controller's namespace: its Secrets hold the signing key; use another namespace"
        );
        let mut status = status;
        finish(
            &mut status,
            Phase::Failed,
            Some(("ForbiddenNamespace".into(), message.clone())),
            ctx,
        );
        write_status(run, namespace, status, ctx).await?;
        publish(ctx, run, EventType::Warning, "ForbiddenNamespace", &message).await;
        return Ok(Action::await_change());
    }

    let plan = match execute::plan(run, &ctx.config) {
        Ok(plan) => plan,
        Err(e) => {
            // A configuration change after the start (a profile removed) must not leave the
            // workers running unobserved: stop them too.
            if status.start_time.is_some() {
                let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
                let pods = list_workers(&pods_api, run).await?;
                stop_workers(&pods_api, &pods).await;
            }
            let mut status = status;
            finish(
                &mut status,
                Phase::Failed,
                Some((e.reason().to_string(), e.to_string())),
                ctx,
            );
            write_status(run, namespace, status, ctx).await?;
            publish(ctx, run, EventType::Warning, e.reason(), &e.to_string()).await;
            return Ok(Action::await_change());
        }
    };

    // The version of the run this pass read, carried through its own writes: the status writes
    // below are conditional on it, so a pass working from a stale cache (our last write not seen
    // yet) gets a 409 and starts again instead of recording the same workers twice or writing
    // back an older status.
    let mut version = ensure_finalizer(run, namespace, ctx).await?;
    let mut status = status;
    if status.start_time.is_none() {
        // Written before any pod exists: from here on the spec is immutable (CRD rule), so the pods
        // can never disagree with the spec they were built from.
        status.start_time = Some(now());
        status.phase = Some(Phase::Pending);
        version = write_status_at(run, namespace, status.clone(), version, ctx).await?;
    }

    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let mut pods = list_workers(&pods_api, run).await?;

    let blocked = create_missing(run, namespace, &plan, &mut pods, &status, ctx).await?;
    let resource = ctx
        .config
        .placement(run.spec.accelerator.as_ref())
        .ok()
        .and_then(|p| p.resource.map(|(name, _)| name));
    let observed = observe_workers(run, &pods, &mut status, resource.as_deref(), ctx).await?;

    let mut outcome = decide(run, &pods, &status);
    if outcome.failure.is_none() {
        outcome.blocked = blocked;
    }
    let deadline = deadline(run, &status);
    if outcome.failure.is_none()
        && !matches!(outcome.phase, Phase::Succeeded)
        && deadline.is_some_and(|d| Timestamp::now() >= d)
    {
        let secs = run.spec.active_deadline_seconds.unwrap_or_default();
        outcome.phase = Phase::Failed;
        outcome.failure = Some((
            "DeadlineExceeded".into(),
            format!("the run exceeded spec.activeDeadlineSeconds ({secs}s)"),
        ));
    }

    match outcome.phase {
        Phase::Succeeded => {
            let workers = status.workers.clone();
            let reports = materials::reports_of(&workers);
            match materials::merge(&run.spec.datasets, &workers, &reports) {
                Ok(m) => {
                    status.materials = Some(m);
                    status.outputs = materials::outputs(&reports);
                    finish(&mut status, Phase::Succeeded, None, ctx);
                }
                Err(e) => {
                    finish(
                        &mut status,
                        Phase::Failed,
                        Some((e.reason().into(), e.to_string())),
                        ctx,
                    );
                }
            }
        }
        Phase::Failed => finish(&mut status, Phase::Failed, outcome.failure.clone(), ctx),
        phase => {
            status.phase = Some(phase);
            let (reason, message) = outcome.blocked.clone().unwrap_or_else(|| match phase {
                Phase::Running => (
                    "Running".into(),
                    format!(
                        "{} of {} workers running",
                        running(&pods),
                        run.spec.replicas
                    ),
                ),
                _ => (
                    "Pending".into(),
                    format!(
                        "{} of {} workers scheduled or running",
                        pods.len(),
                        run.spec.replicas
                    ),
                ),
            });
            set_condition(
                &mut status,
                condition::SUCCEEDED,
                "Unknown",
                &reason,
                &message,
                run,
            );
            set_condition(
                &mut status,
                condition::MATERIALS_RECORDED,
                "Unknown",
                "Pending",
                "waiting for the workers to finish",
                run,
            );
        }
    }

    let new_phase = status.phase.unwrap_or_default();
    let terminal = matches!(new_phase, Phase::Succeeded | Phase::Failed);
    if terminal {
        // Stop what still runs: a distributed job cannot go on without a worker, and the
        // accelerators are expensive. Recorded workers stay in the status.
        stop_workers(&pods_api, &pods).await;
    }
    let version = write_status_at(run, namespace, status.clone(), version, ctx).await?;

    // Counted and logged once recorded: a failed status write observes the same workers again.
    ctx.metrics.workers_observed.inc_by(observed.len() as u64);
    for record in &observed {
        info!(pod = %record.pod_name, phase = record.phase.as_deref().unwrap_or("?"), exit_code = ?record.exit_code, "worker recorded");
        let note = format!(
            "worker {} (rank {}) finished: {} exit code {} on node {}",
            record.pod_name,
            record.rank,
            record.phase.as_deref().unwrap_or("?"),
            record.exit_code.map_or("?".into(), |c| c.to_string()),
            record.node_name.as_deref().unwrap_or("?")
        );
        publish(ctx, run, EventType::Normal, "WorkerFinished", &note).await;
    }
    if new_phase != old_phase {
        report_transition(run, &status, old_phase, ctx).await;
    }
    if terminal {
        // At the version just written: the cached run is older than our own write.
        release_finalizer_if_done(run, namespace, &status, version, ctx).await?;
        return Ok(Action::await_change());
    }
    if outcome.blocked.is_some() {
        return Ok(Action::requeue(Duration::from_secs(30)));
    }
    // Pod changes wake us up; the deadline is the one thing nothing else will announce.
    Ok(match deadline {
        Some(d) => {
            let wait = (d - Timestamp::now()).get_seconds().clamp(1, 3600) as u64;
            Action::requeue(Duration::from_secs(wait))
        }
        None => Action::requeue(Duration::from_secs(300)),
    })
}

/// The run's worker pods, by name: labelled with its UID and owned by it. Listed from the API
/// server (not a cache), so a pod just created by a previous reconcile is always seen.
async fn list_workers(
    pods_api: &Api<Pod>,
    run: &TrainingRun,
) -> Result<BTreeMap<String, Pod>, Error> {
    let selector = format!("{}={}", labels::RUN_UID, run.uid().unwrap_or_default());
    Ok(pods_api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(kube_err("list worker pods"))?
        .items
        .into_iter()
        .filter(|p| owned_by(p, run))
        .map(|p| (p.name_any(), p))
        .collect())
}

/// Create the pods (and Service) that do not exist yet. Returns a blocking reason when a pod or
/// Service of the same name exists but belongs to someone else: it is reported, never adopted.
async fn create_missing(
    run: &TrainingRun,
    namespace: &str,
    plan: &WorkerPlan,
    pods: &mut BTreeMap<String, Pod>,
    status: &TrainingRunStatus,
    ctx: &Context,
) -> Result<Option<(String, String)>, Error> {
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let recorded: Vec<&str> = status.workers.iter().map(|w| w.pod_name.as_str()).collect();
    let mut created = 0;
    let mut conflicts = Vec::new();
    for pod in &plan.pods {
        let name = pod.name_any();
        if pods.contains_key(&name) || recorded.contains(&name.as_str()) {
            continue;
        }
        match pods_api.create(&PostParams::default(), pod).await {
            Ok(p) => {
                created += 1;
                pods.insert(name, p);
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let existing = pods_api
                    .get_opt(&name)
                    .await
                    .map_err(kube_err("get conflicting pod"))?;
                match existing {
                    Some(p) if owned_by(&p, run) => {
                        pods.insert(name, p);
                    }
                    _ => conflicts.push(name),
                }
            }
            Err(e) => return Err(kube_err(format!("create pod {name}"))(e)),
        }
    }
    if let Some(svc) = &plan.service {
        let svc_api: Api<Service> = Api::namespaced(ctx.client.clone(), namespace);
        let name = svc.name_any();
        match svc_api.create(&PostParams::default(), svc).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let existing = svc_api
                    .get_opt(&name)
                    .await
                    .map_err(kube_err("get rendezvous service"))?;
                if !existing.is_some_and(|s| owned_by(&s, run)) {
                    conflicts.push(format!("service/{name}"));
                }
            }
            Err(e) => return Err(kube_err(format!("create service {name}"))(e)),
        }
    }
    if created > 0 {
        info!(created, "created worker pods");
        publish(
            ctx,
            run,
            EventType::Normal,
            "Created",
            &format!("created {created} worker pod(s)"),
        )
        .await;
    }
    if conflicts.is_empty() {
        return Ok(None);
    }
    let message = format!(
        "{} exist(s) but do(es) not belong to this run (different owner); delete them or rename the run",
        conflicts.join(", ")
    );
    publish(ctx, run, EventType::Warning, "PodConflict", &message).await;
    Ok(Some(("PodConflict".into(), message)))
}

/// Record every terminated worker not recorded yet. Returns the new records.
async fn observe_workers(
    run: &TrainingRun,
    pods: &BTreeMap<String, Pod>,
    status: &mut TrainingRunStatus,
    resource: Option<&str>,
    ctx: &Context,
) -> Result<Vec<WorkerRecord>, Error> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let mut new = Vec::new();
    for (name, pod) in pods {
        if status.workers.iter().any(|w| &w.pod_name == name) || !is_terminated(pod) {
            continue;
        }
        // The node's labels as they are now, when the worker has just finished.
        let node = match pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
            Some(node_name) => nodes
                .get_opt(node_name)
                .await
                .map_err(kube_err(format!("get node {node_name}")))?,
            None => None,
        };
        let mut record = observe::worker_record(pod, node.as_ref(), resource);
        let message = observe::trainer_termination(pod)
            .and_then(|t| t.message.clone())
            .unwrap_or_default();
        match report::parse(&message, &run.spec.output.repository) {
            Ok(Some((parsed, outputs))) => {
                record.report = Some(ReportRecord {
                    outputs: outputs.into_iter().map(|o| o.uri).collect(),
                    datasets: parsed
                        .datasets
                        .into_iter()
                        .map(|d| NamedDigest {
                            name: d.name,
                            digest: d.digest,
                        })
                        .collect(),
                    metrics: parsed.metrics,
                });
            }
            Ok(None) => {}
            Err(e) => {
                record.report_error = Some(format!("{}: {e}", e.reason()));
            }
        }
        status.workers.push(record.clone());
        new.push(record);
    }
    status.workers.sort_by_key(|w| w.rank);
    Ok(new)
}

/// The phase the recorded workers and live pods imply.
fn decide(run: &TrainingRun, pods: &BTreeMap<String, Pod>, status: &TrainingRunStatus) -> Outcome {
    let blocked = None;
    // A failed worker is the run's failure whatever its termination message says: a crashing
    // trainer often leaves an error text there, not a report. The refused report stays in
    // workers[].reportError and is named in the message.
    if let Some(w) = status
        .workers
        .iter()
        .find(|w| w.phase.as_deref() == Some("Failed"))
    {
        let mut message = format!(
            "worker {} (rank {}) failed: exit code {}, reason {}, on node {}",
            w.pod_name,
            w.rank,
            w.exit_code.map_or("none".into(), |c| c.to_string()),
            w.reason.as_deref().unwrap_or("unknown"),
            w.node_name.as_deref().unwrap_or("none")
        );
        if let Some(err) = &w.report_error {
            message.push_str(&format!(
                "; its termination message is not a report ({err})"
            ));
        }
        // The kubelet enforces the pod's activeDeadlineSeconds (the run's deadline) itself.
        let reason = if w.reason.as_deref() == Some("DeadlineExceeded") {
            "DeadlineExceeded"
        } else {
            "WorkerFailed"
        };
        return Outcome {
            phase: Phase::Failed,
            failure: Some((reason.into(), message)),
            blocked,
        };
    }
    if let Some(w) = status.workers.iter().find(|w| w.report_error.is_some()) {
        let err = w.report_error.clone().unwrap_or_default();
        let (reason, detail) = err
            .split_once(": ")
            .unwrap_or(("InvalidWorkloadReport", err.as_str()));
        return Outcome {
            phase: Phase::Failed,
            failure: Some((
                reason.to_string(),
                format!("worker {} reported: {detail}", w.pod_name),
            )),
            blocked,
        };
    }
    let replicas = run.spec.replicas.max(1) as usize;
    let succeeded = status
        .workers
        .iter()
        .filter(|w| w.phase.as_deref() == Some("Succeeded"))
        .count();
    let phase = if succeeded >= replicas {
        Phase::Succeeded
    } else if pods.len() + succeeded >= replicas && running(pods) + succeeded >= replicas {
        Phase::Running
    } else {
        Phase::Pending
    };
    Outcome {
        phase,
        failure: None,
        blocked,
    }
}

fn running(pods: &BTreeMap<String, Pod>) -> usize {
    pods.values()
        .filter(|p| pod_phase(p) == Some("Running"))
        .count()
}

fn pod_phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.phase.as_deref()
}

fn is_terminated(pod: &Pod) -> bool {
    matches!(pod_phase(pod), Some("Succeeded" | "Failed"))
}

pub(super) fn owned_by<K: Resource>(obj: &K, run: &TrainingRun) -> bool {
    let uid = run.uid();
    obj.meta()
        .owner_references
        .iter()
        .flatten()
        .any(|o| Some(&o.uid) == uid.as_ref() && o.kind == "TrainingRun")
}

fn deadline(run: &TrainingRun, status: &TrainingRunStatus) -> Option<Timestamp> {
    let secs = run.spec.active_deadline_seconds?;
    let start = status.start_time.as_ref()?.0;
    start
        .checked_add(jiff::SignedDuration::from_secs(secs))
        .ok()
}

/// Set the terminal phase and conditions.
fn finish(
    status: &mut TrainingRunStatus,
    phase: Phase,
    failure: Option<(String, String)>,
    ctx: &Context,
) {
    status.phase = Some(phase);
    status.completion_time.get_or_insert_with(now);
    let generation = None;
    match &failure {
        None => {
            let n = status.workers.len();
            let datasets = status.materials.as_ref().map_or(0, |m| m.datasets.len());
            let images = status.materials.as_ref().map_or(0, |m| m.images.len());
            upsert(
                status,
                condition::SUCCEEDED,
                "True",
                "AllWorkersSucceeded",
                &format!("all {n} workers succeeded"),
                generation,
            );
            upsert(
                status,
                condition::MATERIALS_RECORDED,
                "True",
                "Recorded",
                &format!(
                    "{n} workers, {datasets} datasets, {images} images, {} outputs recorded",
                    status.outputs.len()
                ),
                generation,
            );
        }
        Some((reason, message)) => {
            upsert(
                status,
                condition::SUCCEEDED,
                "False",
                reason,
                message,
                generation,
            );
            upsert(
                status,
                condition::MATERIALS_RECORDED,
                "False",
                reason,
                message,
                generation,
            );
        }
    }
    status.provenance = Some(ProvenanceStatus {
        state: if phase == Phase::Succeeded && ctx.config.provenance.enabled {
            ProvenanceState::Pending
        } else {
            ProvenanceState::Disabled
        },
        predicate_type: None,
        envelope_digest: None,
        key_id: None,
        envelope_config_map: None,
        attestations: vec![],
        signed_at: None,
        attached_at: None,
    });
}

fn set_condition(
    status: &mut TrainingRunStatus,
    type_: &str,
    value: &str,
    reason: &str,
    message: &str,
    run: &TrainingRun,
) {
    upsert(
        status,
        type_,
        value,
        reason,
        message,
        run.metadata.generation,
    );
}

/// Insert or update a condition; `lastTransitionTime` moves only when the status value changes.
pub(super) fn upsert(
    status: &mut TrainingRunStatus,
    type_: &str,
    value: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) {
    let generation = generation.or(status.observed_generation);
    match status.conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != value {
                c.last_transition_time = now();
            }
            c.status = value.into();
            c.reason = reason.into();
            c.message = message.into();
            c.observed_generation = generation;
        }
        None => status.conditions.push(Condition {
            type_: type_.into(),
            status: value.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: now(),
            observed_generation: generation,
        }),
    }
}

pub(super) fn now() -> Time {
    Time(Timestamp::now())
}

/// Write the whole status (the status subresource). The status is rebuilt from the stored one
/// plus what was observed, so writing all of it is idempotent.
pub(super) async fn write_status(
    run: &TrainingRun,
    namespace: &str,
    status: TrainingRunStatus,
    ctx: &Context,
) -> Result<(), Error> {
    write_status_at(run, namespace, status, None, ctx).await?;
    Ok(())
}

/// [`write_status`], only if the run is still at resourceVersion `version` (when given): a 409
/// otherwise. Returns the run's resourceVersion after the write.
async fn write_status_at(
    run: &TrainingRun,
    namespace: &str,
    mut status: TrainingRunStatus,
    version: Option<String>,
    ctx: &Context,
) -> Result<Option<String>, Error> {
    status.observed_generation = run.metadata.generation;
    let api: Api<TrainingRun> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = match &version {
        Some(rv) => json!({ "metadata": {"resourceVersion": rv}, "status": status }),
        None => json!({ "status": status }),
    };
    let written = api
        .patch_status(
            &run.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(kube_err("write status"))?;
    Ok(written.resource_version())
}

/// Returns the run's resourceVersion afterwards (`None` if it is gone).
async fn ensure_finalizer(
    run: &TrainingRun,
    namespace: &str,
    ctx: &Context,
) -> Result<Option<String>, Error> {
    if run.finalizers().iter().any(|f| f == labels::FINALIZER) {
        return Ok(run.resource_version());
    }
    let mut finalizers = run.finalizers().to_vec();
    finalizers.push(labels::FINALIZER.into());
    patch_finalizers(run, namespace, finalizers, run.resource_version(), ctx).await
}

/// Optimistic: the resourceVersion in the patch (`version`, the one the finalizers were read at)
/// makes a concurrent change a 409 and a retry, never a lost finalizer of someone else's.
/// Returns the run's resourceVersion afterwards.
async fn patch_finalizers(
    run: &TrainingRun,
    namespace: &str,
    finalizers: Vec<String>,
    version: Option<String>,
    ctx: &Context,
) -> Result<Option<String>, Error> {
    let api: Api<TrainingRun> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": version}});
    match api
        .patch(
            &run.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(written) => Ok(written.resource_version()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(e) => Err(kube_err("update finalizers")(e)),
    }
}

/// The finalizer goes once nothing is left to do for the run's provenance.
async fn release_finalizer_if_done(
    run: &TrainingRun,
    namespace: &str,
    status: &TrainingRunStatus,
    version: Option<String>,
    ctx: &Context,
) -> Result<(), Error> {
    if !run.finalizers().iter().any(|f| f == labels::FINALIZER) || !provenance_done(status, ctx) {
        return Ok(());
    }
    let finalizers: Vec<String> = run
        .finalizers()
        .iter()
        .filter(|f| *f != labels::FINALIZER)
        .cloned()
        .collect();
    patch_finalizers(run, namespace, finalizers, version, ctx).await?;
    info!("released the provenance finalizer");
    Ok(())
}

/// The attestor, when this succeeded run still owes its provenance (signing or attaching).
pub(super) fn owes_provenance<'a>(
    status: &TrainingRunStatus,
    ctx: &'a Context,
) -> Option<&'a Attestor> {
    let attestor = ctx.attestor.as_deref()?;
    let pending = status.phase == Some(Phase::Succeeded)
        && status
            .provenance
            .as_ref()
            .is_some_and(|p| matches!(p.state, ProvenanceState::Pending | ProvenanceState::Signed));
    pending.then_some(attestor)
}

/// Nothing left to attest: a failed run, provenance disabled, attached, or failed permanently.
fn provenance_done(status: &TrainingRunStatus, ctx: &Context) -> bool {
    match status.phase {
        Some(Phase::Failed) => true,
        // Provenance switched off since the run finished: nothing will ever attest it.
        Some(Phase::Succeeded) if ctx.attestor.is_none() => true,
        Some(Phase::Succeeded) => status.provenance.as_ref().is_some_and(|p| {
            matches!(
                p.state,
                ProvenanceState::Attached | ProvenanceState::Failed | ProvenanceState::Disabled
            )
        }),
        _ => false,
    }
}

/// Deleting the run: stop its workers, then let it go unless a finished run still owes its
/// provenance. Never waits for pods to disappear (a node-less cluster never confirms the kill).
async fn cleanup(run: &TrainingRun, namespace: &str, ctx: &Context) -> Result<Action, Error> {
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let pods = list_workers(&pods_api, run).await?;
    stop_workers(&pods_api, &pods).await;
    let status = run.status.clone().unwrap_or_default();
    // A finished run keeps its finalizer until its provenance is done, even while being deleted.
    if owes_provenance(&status, ctx).is_some() {
        ctx.queue.submit(run);
        return Ok(Action::await_change());
    }
    let finished = matches!(status.phase, Some(Phase::Succeeded | Phase::Failed));
    if run.finalizers().iter().any(|f| f == labels::FINALIZER)
        && (!finished || provenance_done(&status, ctx))
    {
        let finalizers: Vec<String> = run
            .finalizers()
            .iter()
            .filter(|f| *f != labels::FINALIZER)
            .cloned()
            .collect();
        patch_finalizers(run, namespace, finalizers, run.resource_version(), ctx).await?;
        info!(
            pods = pods.len(),
            "run deleted: workers stopped, finalizer released"
        );
    }
    Ok(Action::await_change())
}

/// Delete the pods that have not terminated. Errors are logged: a pod that cannot be deleted now
/// is retried by the next reconcile, and must not block recording the run.
async fn stop_workers(pods_api: &Api<Pod>, pods: &BTreeMap<String, Pod>) {
    for (name, pod) in pods {
        if is_terminated(pod) || pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        match pods_api.delete(name, &DeleteParams::background()).await {
            Ok(_) => info!(pod = %name, "stopped worker"),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => warn!(pod = %name, error = %e, "cannot delete worker pod"),
        }
    }
}

async fn report_transition(
    run: &TrainingRun,
    status: &TrainingRunStatus,
    old: Phase,
    ctx: &Context,
) {
    let new = status.phase.unwrap_or_default();
    let cond = status
        .conditions
        .iter()
        .find(|c| c.type_ == condition::SUCCEEDED);
    let (reason, message) = cond.map_or(("", ""), |c| (c.reason.as_str(), c.message.as_str()));
    let (kind, reason, note) = match new {
        Phase::Running => (
            EventType::Normal,
            "Running",
            format!("all {} workers running", run.spec.replicas),
        ),
        Phase::Succeeded => (
            EventType::Normal,
            "Succeeded",
            format!("{message}; materials recorded"),
        ),
        Phase::Failed => (EventType::Warning, reason, message.to_string()),
        Phase::Pending => (
            EventType::Normal,
            "Pending",
            "waiting for workers".to_string(),
        ),
    };
    info!(from = ?old, to = ?new, reason, "phase changed");
    publish(ctx, run, kind, reason, &note).await;
}

/// Publish an Event; failures are logged, never fatal (events are best effort).
pub(super) async fn publish(
    ctx: &Context,
    run: &TrainingRun,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1024).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &run.object_ref(&())).await {
        warn!(error = %e, reason, "cannot publish event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> Error {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": code, "reason": "Conflict", "message": "the object has been modified",
        }))
        .expect("a Status");
        kube_err("update finalizers")(kube::Error::Api(Box::new(status)))
    }

    #[test]
    fn conflicts_are_told_apart_from_api_failures() {
        let conflict = api_error(409);
        assert!(conflict.is_conflict());
        assert_eq!(conflict.metric_label(), "Conflict");
        assert!(
            conflict.to_string().contains("update finalizers"),
            "{conflict}"
        );
        for code in [403, 404, 500, 503] {
            let other = api_error(code);
            assert!(!other.is_conflict(), "{code}");
            assert_eq!(other.metric_label(), "KubeApi", "{code}");
        }
        assert!(!Error::NoNamespace.is_conflict());
    }
}
