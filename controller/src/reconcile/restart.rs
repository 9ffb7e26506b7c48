//! Restarts and suspension, as pure functions (docs/trainingrun.md, "Restarts and suspension").
//!
//! A run goes through attempts (`status.attempts`): all its workers, created together. A worker
//! of the running attempt that fails, is evicted or is lost ends the attempt when restarts remain
//! (`spec.failurePolicy`); `spec.suspend` ends it too. The attempt's workers are then stopped, and
//! the next attempt starts only once none of them still runs: two attempts' workers never run at
//! once (they share their rendezvous DNS names). Only the running attempt's workers decide the
//! run's phase and, on success, its materials and outputs; the workers of every attempt stay in
//! `status.workers` (and the provenance's byproducts).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::events::EventType;

use super::decide::{
    Decision, MATERIALS_RECORDED, Reason, SUCCEEDED, Settings, Transition, is_terminated, upsert,
};
use crate::api::{
    Attempt, MAX_RECORDED_PODS, MAX_SUSPENSIONS, Phase, SUSPENDED, Suspension, TrainingRun,
    TrainingRunStatus, WorkerRecord,
};
use crate::execute::attempt::{of_pod, pod_name};

/// Condition type: the run is suspended (`spec.suspend`).
pub const SUSPENDED_CONDITION: &str = "Suspended";
/// Look again this soon while an ended attempt's workers are stopping (their deletions wake us
/// anyway; a node-less cluster never confirms them).
const STOPPING_RETRY: Duration = Duration::from_secs(5);

/// The attempt whose workers decide the run: the one running, or the last one.
pub fn current(status: &TrainingRunStatus) -> i32 {
    status.attempts.last().map_or(0, |a| a.index)
}

/// An attempt is under way (none recorded: a run started before attempts were recorded, whose
/// workers are attempt 0).
pub fn is_open(status: &TrainingRunStatus) -> bool {
    status.attempts.last().is_none_or(|a| a.end_time.is_none())
}

/// The recorded workers of attempt `k`.
pub fn workers_of(status: &TrainingRunStatus, k: i32) -> Vec<WorkerRecord> {
    status
        .workers
        .iter()
        .filter(|w| w.attempt == k)
        .cloned()
        .collect()
}

/// The live pods of attempt `k`.
pub fn pods_of(run: &TrainingRun, pods: &BTreeMap<String, Pod>, k: i32) -> BTreeMap<String, Pod> {
    let name = run.name_any();
    pods.iter()
        .filter(|(p, _)| of_pod(&name, p).is_some_and(|(a, _)| a == k))
        .map(|(n, p)| (n.clone(), p.clone()))
        .collect()
}

/// Restarts used so far: attempts ended by a worker (suspensions are not counted).
pub fn restarts_used(status: &TrainingRunStatus) -> i32 {
    let ended = status.attempts.iter().filter(|a| a.end_time.is_some());
    ended
        .filter(|a| a.reason.as_deref() != Some(SUSPENDED))
        .count() as i32
}

/// Seconds the run spent suspended since `status.startTime`, up to `now` (an open suspension
/// counts until now): the deadline does not run while the run is suspended.
pub fn suspended_secs(status: &TrainingRunStatus, now: jiff::Timestamp) -> i64 {
    let Some(start) = status.start_time.as_ref().map(|t| t.0) else {
        return 0;
    };
    status
        .suspensions
        .iter()
        .filter_map(|s| {
            let from = s.start_time.as_ref()?.0.max(start);
            let to = s.end_time.as_ref().map_or(now, |t| t.0);
            Some((to - from).get_seconds().max(0))
        })
        .sum()
}

/// Before the workers are created: end a suspension the spec no longer asks for, and start the
/// next attempt when none runs, the run is not suspended, and no worker of an earlier attempt
/// still runs. Returns the attempt whose workers are to exist, if any.
pub fn prepare(
    run: &TrainingRun,
    status: &mut TrainingRunStatus,
    pods: &BTreeMap<String, Pod>,
    now: &Time,
) -> Option<i32> {
    if run.spec.suspend {
        return None;
    }
    if let Some(s) = status
        .suspensions
        .last_mut()
        .filter(|s| s.end_time.is_none())
    {
        s.end_time = Some(now.clone());
        let resumed = "spec.suspend was cleared: the workers run again";
        upsert(
            status,
            SUSPENDED_CONDITION,
            "False",
            "Resumed",
            resumed,
            None,
            now,
        );
    }
    let next = match status.attempts.last() {
        Some(a) if a.end_time.is_none() => return Some(a.index),
        Some(a) => a.index + 1,
        None => 0,
    };
    // Never two attempts at once: the last one's workers must have stopped (or be gone).
    if next > 0 && pods.values().any(|p| !is_terminated(p)) {
        return None;
    }
    let name = run.name_any();
    status.attempts.push(Attempt {
        index: next,
        start_time: Some(if next == 0 {
            status.start_time.clone().unwrap_or_else(|| now.clone())
        } else {
            now.clone()
        }),
        pods: (0..run.spec.replicas.max(1))
            .map(|rank| pod_name(&name, next, rank))
            .collect(),
        ..Default::default()
    });
    Some(next)
}

/// The most bytes of an attempt's message kept (`attempts[].message` is at most 4,096
/// characters; the cut adds a short note).
const ATTEMPT_MESSAGE_BYTES: usize = 4000;

/// End the running attempt, if one runs, with `reason` (the run ended).
pub fn close(status: &mut TrainingRunStatus, reason: &str, message: &str, now: &Time) {
    if let Some(a) = status.attempts.last_mut().filter(|a| a.end_time.is_none()) {
        a.end_time = Some(now.clone());
        a.reason = Some(reason.into());
        // Within the schema's 4,096 characters: a failure message quotes the workload's refused
        // report, and a status the API server refuses would be retried forever.
        a.message = Some(super::create_errors::bounded(
            message,
            ATTEMPT_MESSAGE_BYTES,
        ));
    }
}

/// A run created suspended: no worker, no `startTime`, until it is resumed.
pub fn before_start(
    run: &TrainingRun,
    mut status: TrainingRunStatus,
    settings: Settings,
) -> Decision {
    let now = Time(settings.now);
    let old = status.phase.unwrap_or_default();
    if status
        .suspensions
        .last()
        .is_none_or(|s| s.end_time.is_some())
    {
        status.suspensions.push(Suspension {
            start_time: Some(now.clone()),
            end_time: None,
        });
    }
    let message = "spec.suspend is true: no worker is created until it is cleared";
    suspended(run, &mut status, message, &now);
    Decision {
        transition: super::decide::transition(run, &status, old),
        stop_workers: false,
        release_finalizer: false,
        requeue: None,
        status,
    }
}

fn suspended(run: &TrainingRun, status: &mut TrainingRunStatus, message: &str, now: &Time) {
    let generation = run.metadata.generation;
    status.phase = Some(Phase::Pending);
    upsert(
        status,
        SUSPENDED_CONDITION,
        "True",
        SUSPENDED,
        message,
        generation,
        now,
    );
    upsert(
        status, SUCCEEDED, "Unknown", SUSPENDED, message, generation, now,
    );
    let waiting = "waiting for the workers to finish";
    upsert(
        status,
        MATERIALS_RECORDED,
        "Unknown",
        "Pending",
        waiting,
        generation,
        now,
    );
}

/// What ends the running attempt before its workers finish, if anything: a failure with
/// restarts left (→ restart), or `spec.suspend` (→ suspend). A failure that is not restarted gets
/// why added to its message (`failure`) and is left to the caller, which fails the run.
pub fn interrupt(
    run: &TrainingRun,
    status: &mut TrainingRunStatus,
    pods: &BTreeMap<String, Pod>,
    failure: &mut Option<Reason>,
    settings: Settings,
) -> Option<Decision> {
    if !is_open(status) {
        return None;
    }
    let k = current(status);
    let old = status.phase.unwrap_or_default();
    let now = Time(settings.now);
    let policy = run.spec.failure_policy.clone().unwrap_or_default();
    // Suspending deletes the workers: if the pass that did so could not record it (a conflict),
    // the next one finds them gone, which is the suspension, not a lost worker.
    if run.spec.suspend && failure.as_ref().is_some_and(|(r, _)| r == "WorkerLost") {
        *failure = None;
    }
    if let Some((reason, message)) = failure.as_mut() {
        if reason != "WorkerFailed" && reason != "WorkerLost" {
            return None;
        }
        // The worker the failure names (the first to fail: decide::phase_of_workers).
        let failed = status
            .workers
            .iter()
            .filter(|w| w.attempt == k && w.phase.as_deref() == Some("Failed"))
            .min_by_key(|w| w.finished_at.as_ref().map(|t| t.0))
            .cloned();
        if let Some(code) = failed.as_ref().and_then(|w| w.exit_code)
            && policy.non_retriable(code)
        {
            message.push_str(&format!(
                "; exit code {code} is non-retriable (spec.failurePolicy.nonRetriableExitCodes): not restarted"
            ));
            return None;
        }
        let used = restarts_used(status);
        let room = room_for_another(run, status);
        if used >= policy.max_restarts || !room {
            if !room && used < policy.max_restarts {
                message.push_str(&format!(
                    "; not restarted: another attempt would take the run past {MAX_RECORDED_PODS} worker pods, the most its status can record"
                ));
            } else if policy.max_restarts > 0 {
                message.push_str(&format!(
                    "; no restart left: {} attempts, spec.failurePolicy.maxRestarts is {}",
                    k + 1,
                    policy.max_restarts
                ));
            }
            return None;
        }
        let class = match &failed {
            Some(w) if evicted(w, pods) => "WorkerEvicted",
            Some(_) => "WorkerFailed",
            None => "WorkerLost",
        };
        let note = format!(
            "{message}; restarting all {} workers as attempt {} (restart {} of {})",
            run.spec.replicas,
            k + 1,
            used + 1,
            policy.max_restarts
        );
        end(run, status, pods, class, message, &now);
        status.phase = Some(Phase::Pending);
        let generation = run.metadata.generation;
        upsert(
            status,
            SUCCEEDED,
            "Unknown",
            "Restarting",
            &note,
            generation,
            &now,
        );
        return Some(Decision {
            transition: Some(Transition {
                from: old,
                to: Phase::Pending,
                event_type: EventType::Warning,
                reason: "Restarting".into(),
                note,
            }),
            stop_workers: true,
            release_finalizer: false,
            requeue: Some(STOPPING_RETRY),
            status: std::mem::take(status),
        });
    }
    if !run.spec.suspend {
        return None;
    }
    if !room_for_another(run, status) {
        *failure = Some((
            "TooManySuspensions".into(),
            format!(
                "suspended, the run could not resume: another attempt would take it past {MAX_RECORDED_PODS} worker pods, the most its status can record; create a new TrainingRun"
            ),
        ));
        return None;
    }
    if status.suspensions.len() >= MAX_SUSPENSIONS {
        *failure = Some((
            "TooManySuspensions".into(),
            format!(
                "the run was suspended {MAX_SUSPENSIONS} times already, the most a run's status records; create a new TrainingRun"
            ),
        ));
        return None;
    }
    let message = format!("spec.suspend was set: the workers of attempt {k} were stopped");
    end(run, status, pods, SUSPENDED, &message, &now);
    status.suspensions.push(Suspension {
        start_time: Some(now.clone()),
        end_time: None,
    });
    suspended(run, status, &message, &now);
    Some(Decision {
        transition: Some(Transition {
            from: old,
            to: Phase::Pending,
            event_type: EventType::Normal,
            reason: SUSPENDED.into(),
            note: message,
        }),
        stop_workers: true,
        release_finalizer: false,
        requeue: None,
        status: std::mem::take(status),
    })
}

/// Another attempt's pods still fit the status ([`MAX_RECORDED_PODS`]).
fn room_for_another(run: &TrainingRun, status: &TrainingRunStatus) -> bool {
    status.worker_pods.len() as i64 + i64::from(run.spec.replicas.max(1))
        <= i64::from(MAX_RECORDED_PODS)
}

/// Between attempts (none runs): suspended, or waiting for the last attempt's workers to stop.
pub fn waiting(
    run: &TrainingRun,
    mut status: TrainingRunStatus,
    pods: &BTreeMap<String, Pod>,
    settings: Settings,
) -> Decision {
    let now = Time(settings.now);
    let old = status.phase.unwrap_or_default();
    let stopping = pods.values().filter(|p| !is_terminated(p)).count();
    if run.spec.suspend {
        // Set between attempts (after a restart was recorded, before the next attempt): a
        // suspension like any other, recorded and kept off the deadline.
        if status
            .suspensions
            .last()
            .is_none_or(|s| s.end_time.is_some())
        {
            if status.suspensions.len() >= MAX_SUSPENSIONS {
                let reason = (
                    "TooManySuspensions".to_string(),
                    format!(
                        "the run was suspended {MAX_SUSPENSIONS} times already, the most a run's status records; create a new TrainingRun"
                    ),
                );
                return super::decide::refuse(run, status, reason, settings);
            }
            status.suspensions.push(Suspension {
                start_time: Some(now.clone()),
                end_time: None,
            });
        }
        let message = "spec.suspend is true: no worker runs until it is cleared";
        suspended(run, &mut status, message, &now);
    } else {
        let k = current(&status);
        let message = format!(
            "waiting for {stopping} worker(s) of attempt {k} to stop before attempt {} starts",
            k + 1
        );
        status.phase = Some(Phase::Pending);
        let generation = run.metadata.generation;
        upsert(
            &mut status,
            SUCCEEDED,
            "Unknown",
            "Restarting",
            &message,
            generation,
            &now,
        );
    }
    Decision {
        transition: super::decide::transition(run, &status, old),
        stop_workers: stopping > 0,
        release_finalizer: false,
        requeue: (stopping > 0 || !run.spec.suspend).then_some(STOPPING_RETRY),
        status,
    }
}

/// The worker was evicted or preempted (its node shut down, a spot VM reclaimed): the pod's
/// reason, or the `DisruptionTarget` condition the kubelet or the eviction API sets.
fn evicted(w: &WorkerRecord, pods: &BTreeMap<String, Pod>) -> bool {
    let by_reason = matches!(
        w.reason.as_deref(),
        Some("Evicted" | "Preempted" | "Terminated" | "Shutdown" | "NodeShutdown" | "NodeLost")
    );
    let conditions = pods
        .get(&w.pod_name)
        .and_then(|p| p.status.as_ref())
        .and_then(|s| s.conditions.as_ref());
    by_reason
        || conditions
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "DisruptionTarget" && c.status == "True")
}

/// End the running attempt with `reason`, recording its workers that have no record yet: those
/// still running as `Stopped` (as last seen), those gone as `Lost`. Every worker of every attempt
/// is in `status.workers`, so in the provenance's byproducts.
fn end(
    run: &TrainingRun,
    status: &mut TrainingRunStatus,
    pods: &BTreeMap<String, Pod>,
    reason: &str,
    message: &str,
    now: &Time,
) {
    let k = current(status);
    let name = run.name_any();
    let created: Vec<String> = status
        .worker_pods
        .iter()
        .map(|c| c.name.clone())
        .filter(|p| of_pod(&name, p).is_some_and(|(a, _)| a == k))
        .collect();
    for pod_name in created {
        if status.workers.iter().any(|w| w.pod_name == pod_name) {
            continue;
        }
        let rank = of_pod(&name, &pod_name).map_or(0, |(_, r)| r);
        let live = pods.get(&pod_name);
        let spec = live.and_then(|p| p.spec.as_ref());
        let pod_status = live.and_then(|p| p.status.as_ref());
        let started_at = pod_status
            .and_then(|s| s.container_statuses.as_ref())
            .into_iter()
            .flatten()
            .find_map(|c| c.state.as_ref()?.running.as_ref()?.started_at.clone());
        status.workers.push(WorkerRecord {
            pod_name,
            rank,
            attempt: k,
            node_name: spec.and_then(|s| s.node_name.clone()),
            phase: pod_status.and_then(|s| s.phase.clone()),
            reason: Some(if live.is_some() { "Stopped" } else { "Lost" }.into()),
            started_at,
            finished_at: Some(now.clone()),
            ..Default::default()
        });
    }
    status.workers.sort_by_key(|w| (w.attempt, w.rank));
    close(status, reason, message, now);
}

#[cfg(test)]
mod tests;
