//! The decision of a reconcile pass, as pure functions: from the run, its recorded status (with
//! the workers this pass just observed) and its live pods to the next status and what to do about
//! it (stop the workers, publish a transition, release the finalizer, look again later). The
//! reconciler gathers the inputs and acts on the [`Decision`]; every phase change and failure
//! reason is decided here and unit-tested below.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::runtime::events::EventType;

use super::restart;
use crate::api::{
    Phase, ProvenanceState, ProvenanceStatus, TrainingRun, TrainingRunStatus, WorkerRecord,
};
use crate::execute::queueing;
use crate::observe::materials;

/// Condition types of a run's execution.
pub const SUCCEEDED: &str = "Succeeded";
pub const MATERIALS_RECORDED: &str = "MaterialsRecorded";

/// Look again this long after a pass that is blocked on something outside our control.
const BLOCKED_RETRY: Duration = Duration::from_secs(30);
/// Look again at least this often while the run has no deadline (pod changes wake us anyway).
const IDLE_RETRY: Duration = Duration::from_secs(300);

/// Why a run cannot go on: a condition reason (CamelCase, stable) and a human message.
pub type Reason = (String, String);

/// A phase change, as the Event that tells it.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub from: Phase,
    pub to: Phase,
    pub event_type: EventType,
    pub reason: String,
    pub note: String,
}

/// What a reconcile pass does next.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The status to write: the recorded one, this pass's observations and its conclusions.
    pub status: TrainingRunStatus,
    /// The run ended: stop the workers still running (recorded workers stay in the status).
    pub stop_workers: bool,
    /// The phase changed.
    pub transition: Option<Transition>,
    /// Nothing is left to do for the run: release the finalizer after the status is written.
    pub release_finalizer: bool,
    /// Look again after this long; `None`: only when the run or its pods change.
    pub requeue: Option<Duration>,
}

/// What a pass knows besides the run: the time, and whether this controller attests.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub now: Timestamp,
    /// Provenance is enabled (a succeeded run then owes its provenance).
    pub provenance: bool,
}

/// The pass of a started run: `status` holds every recorded worker (those of this pass
/// included), `pods` the live worker pods, `blocked` why workers could not be created.
pub fn decide(
    run: &TrainingRun,
    status: TrainingRunStatus,
    pods: &BTreeMap<String, Pod>,
    blocked: Option<Reason>,
    settings: Settings,
) -> Decision {
    decide_with(run, status, pods, blocked, None, settings)
}

/// [`decide`], with `lost`: a worker of the running attempt gone before it finished
/// ([`super::integrity::lost`]). Only the running (or last) attempt's workers and pods decide
/// the phase; [`restart`] ends an attempt early (restart, suspension).
pub fn decide_with(
    run: &TrainingRun,
    mut status: TrainingRunStatus,
    all_pods: &BTreeMap<String, Pod>,
    blocked: Option<Reason>,
    lost: Option<Reason>,
    settings: Settings,
) -> Decision {
    let old = status.phase.unwrap_or_default();
    let now = Time(settings.now);
    let (attempt, open) = (restart::current(&status), restart::is_open(&status));
    let pods = &restart::pods_of(run, all_pods, attempt);
    let workers = restart::workers_of(&status, attempt);
    let (mut phase, mut failure) = match (open, lost) {
        (false, _) => (Phase::Pending, None),
        (true, lost) => match phase_of_workers(run, pods, &workers) {
            (phase, None) if phase != Phase::Succeeded && lost.is_some() => (Phase::Failed, lost),
            other => other,
        },
    };
    let deadline = deadline(run, &status, settings.now);
    if failure.is_none() && phase != Phase::Succeeded && deadline.is_some_and(|d| settings.now >= d)
    {
        let secs = run.spec.active_deadline_seconds.unwrap_or_default();
        phase = Phase::Failed;
        failure = Some((
            "DeadlineExceeded".into(),
            format!("the run exceeded spec.activeDeadlineSeconds ({secs}s)"),
        ));
    }
    if let Some(d) = restart::interrupt(run, &mut status, all_pods, &mut failure, settings) {
        return d;
    }
    if failure.is_some() {
        phase = Phase::Failed;
    } else if !open {
        return restart::waiting(run, status, all_pods, settings);
    }
    match (phase, failure) {
        (Phase::Failed, failure) => finish(&mut status, failure, &now, settings.provenance),
        (Phase::Succeeded, _) => {
            // Reports from the final attempt only: a failed attempt's report never becomes a
            // material or a subject. Images from every attempt: the kubelets observed them, and
            // an earlier attempt's image (a tag that moved) shaped the checkpoints the final one
            // resumed from.
            let reports = materials::reports_of(&workers);
            match materials::merge(&run.spec.datasets, &status.workers, &reports) {
                Ok(m) => {
                    status.materials = Some(m);
                    status.outputs = materials::outputs(&reports);
                    finish(&mut status, None, &now, settings.provenance);
                }
                Err(e) => {
                    let failure = (e.reason().to_string(), e.to_string());
                    finish(&mut status, Some(failure), &now, settings.provenance);
                }
            }
        }
        (phase, _) => {
            status.phase = Some(phase);
            let (reason, message) = blocked
                .clone()
                .unwrap_or_else(|| progress(run, pods, phase));
            let generation = run.metadata.generation;
            upsert(
                &mut status,
                SUCCEEDED,
                "Unknown",
                &reason,
                &message,
                generation,
                &now,
            );
            let waiting = "waiting for the workers to finish";
            upsert(
                &mut status,
                MATERIALS_RECORDED,
                "Unknown",
                "Pending",
                waiting,
                generation,
                &now,
            );
        }
    }
    let terminal = is_terminal(&status);
    let requeue = if terminal {
        None
    } else if blocked.is_some() {
        Some(blocked_retry(&status, deadline, settings.now))
    } else {
        // Pod changes wake us up; the deadline is the one thing nothing else will announce.
        Some(deadline.map_or(IDLE_RETRY, |d| {
            Duration::from_secs((d - settings.now).get_seconds().clamp(1, 3600) as u64)
        }))
    };
    Decision {
        transition: transition(run, &status, old),
        stop_workers: terminal,
        release_finalizer: terminal && provenance_done(&status, settings.provenance),
        requeue,
        status,
    }
}

/// When to try again while workers cannot be created (a quota, a name taken): half the time
/// since the run started, from 1 s to [`BLOCKED_RETRY`], so retries back off geometrically without
/// a counter to store; never past the deadline, which fails the run when it comes.
fn blocked_retry(
    status: &TrainingRunStatus,
    deadline: Option<Timestamp>,
    now: Timestamp,
) -> Duration {
    let waited = status
        .start_time
        .as_ref()
        .map_or(0, |s| (now - s.0).get_seconds().max(0)) as u64;
    let backoff = Duration::from_secs(waited / 2).clamp(Duration::from_secs(1), BLOCKED_RETRY);
    match deadline {
        Some(d) => backoff.min(Duration::from_secs(
            (d - now).get_seconds().clamp(1, 3600) as u64
        )),
        None => backoff,
    }
}

/// The run cannot run at all (refused namespace, no placement for its accelerator): it fails
/// with `reason`, and its workers, if any were started (a profile removed after the start), are
/// stopped.
pub fn refuse(
    run: &TrainingRun,
    mut status: TrainingRunStatus,
    reason: Reason,
    settings: Settings,
) -> Decision {
    let old = status.phase.unwrap_or_default();
    let started = status.start_time.is_some();
    finish(
        &mut status,
        Some(reason),
        &Time(settings.now),
        settings.provenance,
    );
    Decision {
        transition: transition(run, &status, old),
        stop_workers: started,
        release_finalizer: provenance_done(&status, settings.provenance),
        requeue: None,
        status,
    }
}

/// The phase the recorded workers and the live pods (of one attempt) imply, and the failure if
/// it is `Failed`.
fn phase_of_workers(
    run: &TrainingRun,
    pods: &BTreeMap<String, Pod>,
    workers: &[WorkerRecord],
) -> (Phase, Option<Reason>) {
    // A failed worker is the run's failure whatever its termination message says: a crashing
    // trainer often leaves an error text there, not a report. The refused report stays in
    // workers[].reportError and is named in the message.
    // The first to fail (a worker killed because another failed ends later, with 137).
    let failed = workers
        .iter()
        .filter(|w| w.phase.as_deref() == Some("Failed"));
    if let Some(w) = failed.min_by_key(|w| w.finished_at.as_ref().map(|t| t.0)) {
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
        return (Phase::Failed, Some((reason.into(), message)));
    }
    if let Some(w) = workers.iter().find(|w| w.report_error.is_some()) {
        let err = w.report_error.clone().unwrap_or_default();
        let (reason, detail) = err
            .split_once(": ")
            .unwrap_or(("InvalidWorkloadReport", err.as_str()));
        let message = format!("worker {} reported: {detail}", w.pod_name);
        return (Phase::Failed, Some((reason.to_string(), message)));
    }
    let replicas = run.spec.replicas.max(1) as usize;
    let succeeded = workers
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
    (phase, None)
}

/// The `Succeeded=Unknown` condition of a run under way.
fn progress(run: &TrainingRun, pods: &BTreeMap<String, Pod>, phase: Phase) -> Reason {
    let replicas = run.spec.replicas;
    match phase {
        Phase::Running => (
            "Running".into(),
            format!("{} of {replicas} workers running", running(pods)),
        ),
        _ => queueing::waiting_for_admission(run, pods).unwrap_or_else(|| {
            (
                "Pending".into(),
                format!("{} of {replicas} workers scheduled or running", pods.len()),
            )
        }),
    }
}

/// The Event of a phase change, if the phase changed.
pub(super) fn transition(
    run: &TrainingRun,
    status: &TrainingRunStatus,
    from: Phase,
) -> Option<Transition> {
    let to = status.phase.unwrap_or_default();
    if to == from {
        return None;
    }
    let condition = status.conditions.iter().find(|c| c.type_ == SUCCEEDED);
    let (reason, message) = condition.map_or(("", ""), |c| (c.reason.as_str(), c.message.as_str()));
    let (event_type, reason, note) = match to {
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
    Some(Transition {
        from,
        to,
        event_type,
        reason: reason.to_string(),
        note,
    })
}

/// Pods counted as running.
pub fn running(pods: &BTreeMap<String, Pod>) -> usize {
    pods.values()
        .filter(|p| pod_phase(p) == Some("Running"))
        .count()
}

fn pod_phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.phase.as_deref()
}

/// The pod's containers have ended (its phase is Succeeded or Failed).
pub fn is_terminated(pod: &Pod) -> bool {
    matches!(pod_phase(pod), Some("Succeeded" | "Failed"))
}

fn is_terminal(status: &TrainingRunStatus) -> bool {
    matches!(status.phase, Some(Phase::Succeeded | Phase::Failed))
}

/// When the run's `activeDeadlineSeconds` run out: counted from `status.startTime` across
/// attempts, without the time the run spent suspended (as of `now`).
pub fn deadline(
    run: &TrainingRun,
    status: &TrainingRunStatus,
    now: Timestamp,
) -> Option<Timestamp> {
    let secs = run.spec.active_deadline_seconds? + restart::suspended_secs(status, now);
    let start = status.start_time.as_ref()?.0;
    start
        .checked_add(jiff::SignedDuration::from_secs(secs))
        .ok()
}

/// Set the terminal phase and conditions: succeeded when `failure` is None.
fn finish(status: &mut TrainingRunStatus, failure: Option<Reason>, now: &Time, provenance: bool) {
    let phase = if failure.is_none() {
        Phase::Succeeded
    } else {
        Phase::Failed
    };
    status.phase = Some(phase);
    status.completion_time.get_or_insert_with(|| now.clone());
    let attempt = restart::current(status);
    match &failure {
        None => restart::close(status, "Succeeded", "all its workers succeeded", now),
        Some((reason, message)) => restart::close(status, reason, message, now),
    }
    match &failure {
        None => {
            let n = restart::workers_of(status, attempt).len();
            let datasets = status.materials.as_ref().map_or(0, |m| m.datasets.len());
            let images = status.materials.as_ref().map_or(0, |m| m.images.len());
            let recorded = format!(
                "{n} workers, {datasets} datasets, {images} images, {} outputs recorded",
                status.outputs.len()
            );
            let all = if status.attempts.len() > 1 {
                format!("all {n} workers of attempt {attempt} succeeded")
            } else {
                format!("all {n} workers succeeded")
            };
            upsert(
                status,
                SUCCEEDED,
                "True",
                "AllWorkersSucceeded",
                &all,
                None,
                now,
            );
            upsert(
                status,
                MATERIALS_RECORDED,
                "True",
                "Recorded",
                &recorded,
                None,
                now,
            );
        }
        Some((reason, message)) => {
            upsert(status, SUCCEEDED, "False", reason, message, None, now);
            upsert(
                status,
                MATERIALS_RECORDED,
                "False",
                reason,
                message,
                None,
                now,
            );
        }
    }
    status.provenance = Some(ProvenanceStatus::new(
        if phase == Phase::Succeeded && provenance {
            ProvenanceState::Pending
        } else {
            ProvenanceState::Disabled
        },
    ));
}

/// Insert or update a condition; `lastTransitionTime` moves only when the status value changes.
/// `generation` defaults to the status's `observedGeneration`.
pub fn upsert(
    status: &mut TrainingRunStatus,
    type_: &str,
    value: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) {
    let generation = generation.or(status.observed_generation);
    match status.conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != value {
                c.last_transition_time = now.clone();
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
            last_transition_time: now.clone(),
            observed_generation: generation,
        }),
    }
}

/// This succeeded run still owes its provenance (signing or attaching).
pub fn owes_provenance(status: &TrainingRunStatus, provenance: bool) -> bool {
    provenance
        && status.phase == Some(Phase::Succeeded)
        && status
            .provenance
            .as_ref()
            .is_some_and(|p| matches!(p.state, ProvenanceState::Pending | ProvenanceState::Signed))
}

/// The finalizer rule: it stays until nothing is left to attest (a failed run, provenance
/// disabled or switched off since, attached, or failed permanently).
pub fn provenance_done(status: &TrainingRunStatus, provenance: bool) -> bool {
    match status.phase {
        Some(Phase::Failed) => true,
        // Provenance switched off since the run finished: nothing will ever attest it.
        Some(Phase::Succeeded) if !provenance => true,
        Some(Phase::Succeeded) => status.provenance.as_ref().is_some_and(|p| {
            matches!(
                p.state,
                ProvenanceState::Attached | ProvenanceState::Failed | ProvenanceState::Disabled
            )
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
