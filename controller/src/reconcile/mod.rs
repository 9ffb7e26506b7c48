//! Reconcile: the lifecycle of one TrainingRun. A pass executes (creates the missing workers,
//! [`workers`]), observes (records each worker as it terminates), decides the next status and
//! what to do about it ([`decide`], pure), then acts on that decision ([`status`]: the status
//! write, events, the finalizer). The provenance of succeeded runs (resolve, attest, report) is
//! handed to the publish workers ([`queue`], [`publish`]).
//!
//! The status is the run's memory: worker records are only ever added, so a restart, a deleted
//! pod or garbage collection never loses what was observed.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use tracing::{info, instrument, warn};

use crate::api::{Phase, TrainingRun, TrainingRunStatus, WorkerRecord};
use crate::execute::{self, placement};
use crate::repository_policy;

pub mod contain;
pub mod context;
pub mod create_errors;
pub mod decide;
pub mod fairness;
pub mod integrity;
pub mod publish;
pub mod publisher;
pub mod queue;
pub mod restart;
pub mod revocation;
pub mod status;
pub mod workers;

pub use context::{Context, Error, FIELD_MANAGER};
use decide::{Decision, Settings};

/// Entry point called by the kube-runtime Controller.
#[instrument(skip_all, fields(namespace = run.namespace().unwrap_or_default(), run = run.name_any()))]
pub async fn reconcile(run: Arc<TrainingRun>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_timer();
    // A panic stays with this run (contain.rs): the pass shares its task with every other run.
    contain::contain("reconcile", async {
        let namespace = run.namespace().ok_or(Error::NoNamespace)?;
        if run.metadata.deletion_timestamp.is_some() {
            cleanup(&run, &namespace, &ctx).await
        } else {
            apply(&run, &namespace, &ctx).await
        }
    })
    .await
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
    if matches!(error, Error::Panicked { .. }) {
        // Logged at ERROR where it was caught.
        return Action::requeue(contain::PANIC_RETRY);
    }
    warn!(namespace, name, error = %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// Retry delay after a conflict: long enough for the watch to deliver the newer version.
const CONFLICT_RETRY: Duration = Duration::from_millis(200);

fn settings(ctx: &Context) -> Settings {
    Settings {
        now: Timestamp::now(),
        provenance: ctx.publisher.is_some(),
    }
}

async fn apply(run: &TrainingRun, namespace: &str, ctx: &Context) -> Result<Action, Error> {
    let recorded = run.status.clone().unwrap_or_default();
    if matches!(recorded.phase, Some(Phase::Succeeded | Phase::Failed)) {
        return finished(run, namespace, &recorded, ctx).await;
    }

    // Pods can mount any Secret of their namespace: a run in the controller's namespace could
    // read the signing key or use the controller's service account. Refused outright.
    if namespace == ctx.controller_namespace {
        let message = format!(
            "TrainingRuns may not run in {namespace}, the controller's namespace: its Secrets hold the signing key; use another namespace"
        );
        let reason = ("ForbiddenNamespace".to_string(), message);
        let decision = decide::refuse(run, recorded, reason, settings(ctx));
        return act(run, namespace, decision, Pass::default(), ctx).await;
    }
    // Issue 14 (2): a repository its namespace may not use is refused before any pod starts.
    if let Err(message) = repository_policy::grant(
        &ctx.config.provenance.repository_policy,
        namespace,
        &run.spec.output.repository,
    ) {
        warn!(repository = %run.spec.output.repository, "refused by the repositoryPolicy");
        let reason = (repository_policy::NOT_ALLOWED.to_string(), message);
        let decision = decide::refuse(run, recorded, reason, settings(ctx));
        return act(run, namespace, decision, Pass::default(), ctx).await;
    }
    let plan = match execute::plan(run, &ctx.config) {
        Ok(plan) => plan,
        // A configuration change after the start (a profile removed) must not leave the workers
        // running unobserved: the decision stops them too.
        Err(e) => {
            let reason = (e.reason().to_string(), e.to_string());
            let decision = decide::refuse(run, recorded, reason, settings(ctx));
            return act(run, namespace, decision, Pass::default(), ctx).await;
        }
    };

    // Issue 16: a run that declares a revoked material never starts (checked before the first
    // pod only: a run already under way is found by the revocation once it has its record).
    if recorded.worker_pods.is_empty()
        && recorded.workers.is_empty()
        && let Some(message) = ctx.revocations.refusal(&run.spec).await?
    {
        warn!(message = %message, "refused: declares a revoked material");
        let reason = (revocation::refuse::REASON.to_string(), message);
        let decision = decide::refuse(run, recorded, reason, settings(ctx));
        return act(run, namespace, decision, Pass::default(), ctx).await;
    }

    // Volume types are checked before the first pod only: a run already under way keeps going
    // when the allowlist changes (or the controller is upgraded) while it runs.
    if recorded.worker_pods.is_empty()
        && recorded.workers.is_empty()
        && let Err(e) = execute::check_volumes(run.spec.volumes.as_ref(), &ctx.config)
    {
        let reason = (execute::VolumeNotAllowed::REASON.to_string(), e.to_string());
        let decision = decide::refuse(run, recorded, reason, settings(ctx));
        return act(run, namespace, decision, Pass::default(), ctx).await;
    }

    // The version of the run this pass read, carried through its own writes: the status writes
    // are conditional on it, so a pass working from a stale cache (our last write not seen yet)
    // gets a 409 and starts again instead of recording the same workers twice or writing back an
    // older status.
    let mut version = status::ensure_finalizer(run, namespace, ctx).await?;
    let mut current = recorded;
    if run.spec.suspend && current.start_time.is_none() {
        // Created suspended: no pod and no startTime (the spec stays editable) until resumed.
        let decision = restart::before_start(run, current, settings(ctx));
        let pass = Pass {
            version,
            ..Pass::default()
        };
        return act(run, namespace, decision, pass, ctx).await;
    }
    if current.start_time.is_none() {
        // Written before any pod exists: from here on the spec is immutable (CRD rule), so the pods
        // can never disagree with the spec they were built from.
        current.start_time = Some(status::now());
        current.phase = Some(Phase::Pending);
        version = status::write_status_at(run, namespace, current.clone(), version, ctx).await?;
    }

    // Only the pods the controller created, as it created them, are the run's workers.
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let mut pods = workers::list(&pods_api, run).await?;
    // The attempt whose workers are to exist now (none while suspended or between attempts).
    let attempt = restart::prepare(run, &mut current, &pods, &status::now());
    let left = decide::deadline(run, &current, Timestamp::now())
        .map(|d| (d - Timestamp::now()).get_seconds());
    let index = attempt.unwrap_or_else(|| restart::current(&current));
    let plan = execute::attempt::for_attempt(plan, index, left.filter(|_| index > 0));
    if let Some(reason) = integrity::check(&plan, &run.spec.image, &pods, &current) {
        // Acted on only when this pass saw the latest run: from a stale cache (its own last
        // status write not seen yet) it would take its own new pods for someone else's.
        if status::latest_version(run, namespace, ctx).await? != version {
            return Err(Error::Stale);
        }
        warn!(reason = %reason.0, message = %reason.1, "the run's workers cannot be trusted");
        let decision = decide::refuse(run, current, reason, settings(ctx));
        let pass = Pass {
            version,
            pods: Some(pods),
            observed: Vec::new(),
        };
        return act(run, namespace, decision, pass, ctx).await;
    }

    // Execute (recording each new pod's UID at once), then observe.
    let lost = integrity::lost(&current, &pods);
    let known = current.worker_pods.len();
    let blocked = match attempt {
        Some(_) if lost.is_none() => {
            workers::create_missing(run, namespace, &plan, &mut pods, &mut current, ctx).await?
        }
        _ => None,
    };
    if current.worker_pods.len() > known {
        version = status::record_created(run, namespace, &current, version, ctx).await?;
    }
    let blocked = match blocked {
        // The API server will never take these workers: fail now and delete those created, so
        // no accelerator is held for a run that cannot start.
        Some(workers::Blocked::Refused(reason)) => {
            let decision = decide::refuse(run, current, reason, settings(ctx));
            let pass = Pass {
                version,
                pods: Some(pods),
                observed: Vec::new(),
            };
            return act(run, namespace, decision, pass, ctx).await;
        }
        Some(workers::Blocked::Waiting(reason)) => Some(reason),
        None => None,
    };
    let resource = placement(&ctx.config, run.spec.accelerator.as_ref())
        .ok()
        .and_then(|p| p.resource.map(|(name, _)| name));
    let observed = workers::observe(run, &pods, &mut current, resource.as_deref(), ctx).await?;

    let decision = decide::decide_with(run, current, &pods, blocked, lost, settings(ctx));
    let pass = Pass {
        version,
        pods: Some(pods),
        observed,
    };
    act(run, namespace, decision, pass, ctx).await
}

/// What a pass carries from gathering to acting.
#[derive(Default)]
struct Pass {
    /// The run's resourceVersion the status write is conditional on (`None`: unconditional).
    version: Option<String>,
    /// The live worker pods, when listed.
    pods: Option<std::collections::BTreeMap<String, Pod>>,
    /// Workers recorded by this pass.
    observed: Vec<WorkerRecord>,
}

/// Carry out a decision: stop the workers, write the status, tell what happened (metrics, logs,
/// Events), release the finalizer.
async fn act(
    run: &TrainingRun,
    namespace: &str,
    decision: Decision,
    mut pass: Pass,
    ctx: &Context,
) -> Result<Action, Error> {
    // A run that ends stops its workers first: a distributed job cannot go on without a worker,
    // and the accelerators are expensive. A run that goes on (a restart, a suspension) stops them
    // only once the attempt's end is recorded: a pass whose write fails then stops nothing, and
    // the next one decides again from what it finds (not from workers it killed itself).
    let ends = matches!(
        decision.status.phase,
        Some(Phase::Succeeded | Phase::Failed)
    );
    if decision.stop_workers && ends {
        // Only from the latest run: a pass working from a stale cache would kill the workers,
        // fail to write (409), and the next pass would find them gone (`WorkerLost`) instead of
        // the reason this one had.
        if pass.version.is_some()
            && status::latest_version(run, namespace, ctx).await? != pass.version
        {
            return Err(Error::Stale);
        }
        stop(run, namespace, pass.pods.take(), ctx).await?;
    }
    let version = match status::write_status_at(
        run,
        namespace,
        decision.status,
        pass.version.clone(),
        ctx,
    )
    .await
    {
        // What this pass observed cannot be stored (worker reports are the workload's): the run
        // fails for good with what was stored before, instead of retrying forever.
        Err(e) if e.is_too_large() => {
            warn!(error = %e, "the run's status is too large to store; failing the run");
            let reason = (
                "StatusTooLarge".to_string(),
                format!(
                    "the run's status, with the workers recorded now, is too large to store ({e}); worker reports must stay small (docs/workload-report.md)"
                ),
            );
            let recorded = run.status.clone().unwrap_or_default();
            let refused = decide::refuse(run, recorded, reason, settings(ctx));
            let pass = Pass {
                version: pass.version,
                pods: None,
                observed: Vec::new(),
            };
            return Box::pin(act(run, namespace, refused, pass, ctx)).await;
        }
        other => other?,
    };
    if decision.stop_workers && !ends {
        stop(run, namespace, pass.pods.take(), ctx).await?;
    }

    // Counted and logged once recorded: a failed status write observes the same workers again.
    ctx.metrics
        .workers_observed
        .inc_by(pass.observed.len() as u64);
    for record in &pass.observed {
        info!(pod = %record.pod_name, phase = record.phase.as_deref().unwrap_or("?"), exit_code = ?record.exit_code, "worker recorded");
        let note = format!(
            "worker {} (rank {}) finished: {} exit code {} on node {}",
            record.pod_name,
            record.rank,
            record.phase.as_deref().unwrap_or("?"),
            record.exit_code.map_or("?".into(), |c| c.to_string()),
            record.node_name.as_deref().unwrap_or("?")
        );
        status::publish(ctx, run, EventType::Normal, "WorkerFinished", &note).await;
    }
    if let Some(t) = &decision.transition {
        info!(from = ?t.from, to = ?t.to, reason = %t.reason, "phase changed");
        status::publish(ctx, run, t.event_type, &t.reason, &t.note).await;
    }
    if decision.release_finalizer {
        // At the version just written: the cached run is older than our own write.
        status::release_finalizer(run, namespace, version, ctx).await?;
    }
    Ok(decision
        .requeue
        .map_or_else(Action::await_change, Action::requeue))
}

/// Stop the run's workers still running (`pods`, or listed now). Recorded workers stay in the
/// status.
async fn stop(
    run: &TrainingRun,
    namespace: &str,
    pods: Option<std::collections::BTreeMap<String, Pod>>,
    ctx: &Context,
) -> Result<(), Error> {
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let pods = match pods {
        Some(pods) => pods,
        None => workers::list(&pods_api, run).await?,
    };
    workers::stop(&pods_api, &pods).await;
    Ok(())
}

/// A run that has finished: hand it to the provenance workers while it owes its provenance,
/// else let its finalizer go.
async fn finished(
    run: &TrainingRun,
    namespace: &str,
    recorded: &TrainingRunStatus,
    ctx: &Context,
) -> Result<Action, Error> {
    let provenance = ctx.publisher.is_some();
    if decide::owes_provenance(recorded, provenance) {
        // Registry I/O happens on the provenance workers, never in a reconcile slot.
        ctx.queue.submit(run);
    } else if decide::provenance_done(recorded, provenance) {
        status::release_finalizer(run, namespace, run.resource_version(), ctx).await?;
    }
    Ok(Action::await_change())
}

/// Deleting the run: stop its workers, then let it go unless a finished run still owes its
/// provenance. Never waits for pods to disappear (a node-less cluster never confirms the kill).
async fn cleanup(run: &TrainingRun, namespace: &str, ctx: &Context) -> Result<Action, Error> {
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let pods = workers::list(&pods_api, run).await?;
    workers::stop(&pods_api, &pods).await;
    let recorded = run.status.clone().unwrap_or_default();
    let provenance = ctx.publisher.is_some();
    // A finished run keeps its finalizer until its provenance is done, even while being deleted.
    if decide::owes_provenance(&recorded, provenance) {
        ctx.queue.submit(run);
        return Ok(Action::await_change());
    }
    let finished = matches!(recorded.phase, Some(Phase::Succeeded | Phase::Failed));
    if !finished || decide::provenance_done(&recorded, provenance) {
        // The signed record lives in the controller's namespace: no owner reference collects it.
        let records = Api::namespaced(ctx.client.clone(), &ctx.controller_namespace);
        publish::record::remove(&records, &publish::record::config_map_name(run)).await?;
        status::release_finalizer(run, namespace, run.resource_version(), ctx).await?;
        info!(pods = pods.len(), "run deleted: workers stopped");
    }
    Ok(Action::await_change())
}
