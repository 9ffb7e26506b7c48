//! The writes that report on a run: its status (the status subresource), its finalizer, its
//! Events.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::context::{Context, Error, kube_err};
use crate::api::{TrainingRun, TrainingRunStatus};
use crate::labels;

pub fn now() -> Time {
    Time(Timestamp::now())
}

/// Write the whole status (the status subresource). The status is rebuilt from the stored one
/// plus what was observed, so writing all of it is idempotent.
pub async fn write_status(
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
///
/// The status replaces the stored one (a JSON patch `add /status`), never merges into it: a
/// merge patch keeps every key it does not mention, and `status.workerCommon` loses keys as
/// workers are recorded (api/compact.rs), so a kept key would give a record a value it never had.
pub async fn write_status_at(
    run: &TrainingRun,
    namespace: &str,
    mut status: TrainingRunStatus,
    version: Option<String>,
    ctx: &Context,
) -> Result<Option<String>, Error> {
    status.observed_generation = run.metadata.generation;
    let api: Api<TrainingRun> = Api::namespaced(ctx.client.clone(), namespace);
    let encode = |e: serde_json::Error| Error::Encode {
        what: "the status patch",
        reason: e.to_string(),
    };
    let status = serde_json::to_value(&status).map_err(encode)?;
    let mut ops = vec![json!({"op": "add", "path": "/status", "value": status})];
    if let Some(rv) = &version {
        // The write is then conditional on it, as an update is.
        ops.insert(
            0,
            json!({"op": "replace", "path": "/metadata/resourceVersion", "value": rv}),
        );
    }
    let patch = serde_json::from_value(serde_json::Value::Array(ops)).map_err(encode)?;
    let written = api
        .patch_status(
            &run.name_any(),
            &PatchParams::default(),
            &Patch::Json::<()>(patch),
        )
        .await
        .map_err(kube_err("write status"))?;
    Ok(written.resource_version())
}

/// The run's resourceVersion on the API server now (`None`: the run is gone).
pub async fn latest_version(
    run: &TrainingRun,
    namespace: &str,
    ctx: &Context,
) -> Result<Option<String>, Error> {
    let api: Api<TrainingRun> = Api::namespaced(ctx.client.clone(), namespace);
    let latest = api
        .get_opt(&run.name_any())
        .await
        .map_err(kube_err("get the run"))?;
    Ok(latest.and_then(|r| r.resource_version()))
}

/// Record the worker pods just created (`status` holds them in `workerPods`) at once: a created
/// pod whose UID is not recorded would be taken for someone else's (`WorkerTampered`). A conflict
/// caused by a change to the run's metadata (labels, annotations) is retried at the new version;
/// one where the status itself changed means this pass read a stale run, and it fails.
pub async fn record_created(
    run: &TrainingRun,
    namespace: &str,
    status: &TrainingRunStatus,
    mut version: Option<String>,
    ctx: &Context,
) -> Result<Option<String>, Error> {
    let read = run.status.clone().unwrap_or_default();
    let api: Api<TrainingRun> = Api::namespaced(ctx.client.clone(), namespace);
    for _ in 0..3 {
        match write_status_at(run, namespace, status.clone(), version.clone(), ctx).await {
            Err(e) if e.is_conflict() => {
                let latest = api
                    .get(&run.name_any())
                    .await
                    .map_err(kube_err("get the run"))?;
                // What is recorded must be what this pass read, or it would be lost.
                let theirs = latest.status.clone().unwrap_or_default();
                if theirs.worker_pods != read.worker_pods
                    || theirs.workers != read.workers
                    || theirs.attempts != read.attempts
                {
                    return Err(e);
                }
                version = latest.resource_version();
            }
            other => return other,
        }
    }
    write_status_at(run, namespace, status.clone(), version, ctx).await
}

/// Add the provenance finalizer. Returns the run's resourceVersion afterwards (`None` if it is
/// gone).
pub async fn ensure_finalizer(
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

/// Remove the provenance finalizer, if the run has it, at resourceVersion `version` (the one the
/// caller last read or wrote).
pub async fn release_finalizer(
    run: &TrainingRun,
    namespace: &str,
    version: Option<String>,
    ctx: &Context,
) -> Result<(), Error> {
    if !run.finalizers().iter().any(|f| f == labels::FINALIZER) {
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

/// Publish an Event; failures are logged, never fatal (events are best effort).
pub async fn publish(ctx: &Context, run: &TrainingRun, type_: EventType, reason: &str, note: &str) {
    publish_action(ctx, run, type_, "Reconcile", reason, note).await;
}

/// [`publish`] with its own `action`: Events of the same reason and action are one series (the
/// first note kept), so a step whose notes must stay apart from the transitions' names its own.
pub async fn publish_action(
    ctx: &Context,
    run: &TrainingRun,
    type_: EventType,
    action: &str,
    reason: &str,
    note: &str,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1024).collect()),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &run.object_ref(&())).await {
        warn!(error = %e, reason, "cannot publish event");
    }
}
