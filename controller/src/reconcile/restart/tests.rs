//! Restarts and suspension, pass by pass: the pure functions the reconciler calls in order
//! ([`prepare`], then [`super::super::decide::decide_with`]).
use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

use super::*;
use crate::api::{CreatedPod, NamedDigest, Phase, ReportRecord, TrainingRun, TrainingRunStatus};
use crate::reconcile::decide::{Decision, Settings, decide_with};

mod suspension;

const MODEL_A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const MODEL_B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn run(spec: serde_json::Value) -> TrainingRun {
    let mut full = json!({
        "image": "registry.example.com/train:1", "seed": 1, "replicas": 2,
        "output": {"repository": "registry.example.com/models/m"},
    });
    for (k, v) in spec.as_object().cloned().unwrap_or_default() {
        full[k] = v;
    }
    serde_json::from_value(json!({
        "apiVersion": "provenant.dev/v1alpha1", "kind": "TrainingRun",
        "metadata": {"name": "r", "namespace": "ns", "uid": "u-1", "generation": 1},
        "spec": full,
    }))
    .unwrap()
}

fn restarts(max: i32) -> TrainingRun {
    run(json!({"failurePolicy": {"maxRestarts": max, "nonRetriableExitCodes": [42]}}))
}

fn t(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + seconds).unwrap()
}

fn at(seconds: i64) -> Settings {
    Settings {
        now: t(seconds),
        provenance: true,
    }
}

fn pod(name: &str, phase: &str, conditions: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"nodeName": "gpu-1", "containers": []},
        "status": {"phase": phase, "conditions": conditions},
    }))
    .unwrap()
}

fn pods(list: &[(&str, &str)]) -> BTreeMap<String, Pod> {
    list.iter()
        .map(|(n, phase)| (n.to_string(), pod(n, phase, json!([]))))
        .collect()
}

/// A status whose attempt 0 has started at t(0), and the pods `created`.
fn started(run: &TrainingRun, created: &[&str]) -> TrainingRunStatus {
    let mut status = TrainingRunStatus {
        phase: Some(Phase::Running),
        start_time: Some(Time(t(0))),
        worker_pods: created
            .iter()
            .map(|n| CreatedPod {
                name: n.to_string(),
                uid: format!("uid-{n}"),
                images: vec![],
            })
            .collect(),
        ..Default::default()
    };
    assert_eq!(
        prepare(run, &mut status, &BTreeMap::new(), &Time(t(0))),
        Some(0)
    );
    status
}

fn worker(name: &str, attempt: i32, rank: i32, phase: &str, exit: i32) -> WorkerRecord {
    WorkerRecord {
        pod_name: name.into(),
        rank,
        attempt,
        phase: Some(phase.into()),
        exit_code: Some(exit),
        reason: Some(if exit == 0 { "Completed" } else { "Error" }.into()),
        ..Default::default()
    }
}

fn condition<'a>(d: &'a Decision, type_: &str) -> (&'a str, &'a str, &'a str) {
    let c = d
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .expect("condition");
    (c.status.as_str(), c.reason.as_str(), c.message.as_str())
}

#[test]
fn a_failed_worker_restarts_all_workers_as_a_new_attempt() {
    let run = restarts(2);
    let mut status = started(&run, &["r-0", "r-1"]);
    status.workers.push(worker("r-1", 0, 1, "Failed", 3));
    let live = pods(&[("r-0", "Running"), ("r-1", "Failed")]);
    let d = decide_with(&run, status, &live, None, None, at(10));
    assert!(d.stop_workers, "the attempt's workers are stopped");
    assert_eq!(d.status.phase, Some(Phase::Pending));
    let event = d.transition.as_ref().expect("an Event");
    assert_eq!(
        (event.reason.as_str(), event.event_type),
        ("Restarting", EventType::Warning)
    );
    assert!(
        event
            .note
            .contains("worker r-1 (rank 1) failed: exit code 3"),
        "{}",
        event.note
    );
    assert!(
        event.note.contains("as attempt 1 (restart 1 of 2)"),
        "{}",
        event.note
    );
    let a = &d.status.attempts[0];
    assert_eq!(
        (a.reason.as_deref(), a.end_time.is_some()),
        (Some("WorkerFailed"), true)
    );
    // The worker still running is recorded as stopped: every worker of the attempt is kept.
    let stopped = d
        .status
        .workers
        .iter()
        .find(|w| w.pod_name == "r-0")
        .expect("r-0");
    assert_eq!(
        (stopped.reason.as_deref(), stopped.phase.as_deref()),
        (Some("Stopped"), Some("Running"))
    );
    assert_eq!(stopped.node_name.as_deref(), Some("gpu-1"));

    // Not before the stopped worker has stopped: never two attempts at once.
    let mut status = d.status;
    let stopping = pods(&[("r-0", "Running"), ("r-1", "Failed")]);
    assert_eq!(prepare(&run, &mut status, &stopping, &Time(t(11))), None);
    let d = decide_with(&run, status.clone(), &stopping, None, None, at(11));
    assert_eq!(condition(&d, "Succeeded").1, "Restarting");
    assert!(d.stop_workers && d.requeue.is_some());
    let gone = pods(&[("r-1", "Failed")]);
    assert_eq!(prepare(&run, &mut status, &gone, &Time(t(12))), Some(1));
    assert_eq!(status.attempts[1].pods, vec!["r-0-a1", "r-1-a1"]);
    assert_eq!(status.attempts[1].start_time, Some(Time(t(12))));
}

#[test]
fn an_eviction_and_a_lost_worker_restart_too() {
    let run = restarts(1);
    let mut status = started(&run, &["r-0", "r-1"]);
    let mut evicted = worker("r-1", 0, 1, "Failed", 137);
    evicted.reason = Some("Error".into());
    status.workers.push(evicted);
    // The kubelet's (or the eviction API's) DisruptionTarget condition tells an eviction.
    let mut live = pods(&[("r-0", "Running")]);
    let disrupted =
        json!([{"type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet"}]);
    live.insert("r-1".into(), pod("r-1", "Failed", disrupted));
    let d = decide_with(&run, status, &live, None, None, at(10));
    assert_eq!(
        d.status.attempts[0].reason.as_deref(),
        Some("WorkerEvicted")
    );

    let status = started(&run, &["r-0", "r-1"]);
    let lost = Some((
        "WorkerLost".to_string(),
        "worker pod r-1 was deleted".to_string(),
    ));
    let d = decide_with(
        &run,
        status,
        &pods(&[("r-0", "Running")]),
        None,
        lost,
        at(10),
    );
    assert_eq!(d.status.attempts[0].reason.as_deref(), Some("WorkerLost"));
    let gone = d
        .status
        .workers
        .iter()
        .find(|w| w.pod_name == "r-1")
        .expect("r-1");
    assert_eq!(gone.reason.as_deref(), Some("Lost"));
    assert_eq!(d.transition.expect("Event").reason, "Restarting");
}

#[test]
fn no_restart_past_max_restarts_nor_for_a_non_retriable_code() {
    // Attempt 1 of a run allowed one restart fails: the run fails, naming the attempts.
    let run = restarts(1);
    let mut status = started(&run, &["r-0", "r-1"]);
    status.workers.push(worker("r-1", 0, 1, "Failed", 3));
    let d = decide_with(
        &run,
        status,
        &pods(&[("r-1", "Failed")]),
        None,
        None,
        at(10),
    );
    let mut status = d.status;
    assert_eq!(
        prepare(&run, &mut status, &pods(&[("r-1", "Failed")]), &Time(t(11))),
        Some(1)
    );
    status.workers.push(worker("r-0-a1", 1, 0, "Failed", 1));
    let d = decide_with(
        &run,
        status,
        &pods(&[("r-0-a1", "Failed")]),
        None,
        None,
        at(20),
    );
    assert_eq!(d.status.phase, Some(Phase::Failed));
    let (_, reason, message) = condition(&d, "Succeeded");
    assert_eq!(reason, "WorkerFailed");
    assert!(
        message.contains("worker r-0-a1 (rank 0) failed"),
        "{message}"
    );
    assert!(
        message.contains("no restart left: 2 attempts, spec.failurePolicy.maxRestarts is 1"),
        "{message}"
    );
    assert_eq!(d.status.attempts[1].reason.as_deref(), Some("WorkerFailed"));

    // A non-retriable exit code fails at once, restarts left or not.
    let run = restarts(5);
    let mut status = started(&run, &["r-0", "r-1"]);
    status.workers.push(worker("r-0", 0, 0, "Failed", 42));
    let d = decide_with(
        &run,
        status,
        &pods(&[("r-0", "Failed")]),
        None,
        None,
        at(10),
    );
    assert_eq!(d.status.phase, Some(Phase::Failed));
    let (_, _, message) = condition(&d, "Succeeded");
    assert!(
        message.contains("exit code 42 is non-retriable"),
        "{message}"
    );

    // No failurePolicy: today's behaviour, message unchanged.
    let run = run_without_policy();
    let mut status = started(&run, &["r-0", "r-1"]);
    status.workers.push(worker("r-0", 0, 0, "Failed", 3));
    let d = decide_with(&run, status, &pods(&[]), None, None, at(10));
    let (_, _, message) = condition(&d, "Succeeded");
    assert_eq!(
        message,
        "worker r-0 (rank 0) failed: exit code 3, reason Error, on node none"
    );
}

fn run_without_policy() -> TrainingRun {
    run(json!({}))
}

#[test]
fn the_deadline_is_never_restarted() {
    let run = run(json!({"failurePolicy": {"maxRestarts": 3}, "activeDeadlineSeconds": 60}));
    let mut status = started(&run, &["r-0", "r-1"]);
    let mut w = worker("r-0", 0, 0, "Failed", 137);
    w.reason = Some("DeadlineExceeded".into());
    status.workers.push(w);
    let d = decide_with(&run, status, &pods(&[]), None, None, at(61));
    assert_eq!(condition(&d, "Succeeded").1, "DeadlineExceeded");
    assert_eq!(d.status.phase, Some(Phase::Failed));
}

#[test]
fn materials_and_outputs_come_from_the_final_attempt_only() {
    let run = restarts(1);
    let output = |digest: &str| ReportRecord {
        outputs: vec![format!("registry.example.com/models/m@{digest}")],
        datasets: vec![NamedDigest {
            name: "d".into(),
            digest: digest.into(),
        }],
        ..Default::default()
    };
    let mut status = started(&run, &["r-0", "r-1"]);
    // Attempt 0's rank 0 finished and reported a model before rank 1 failed.
    let mut early = worker("r-0", 0, 0, "Succeeded", 0);
    early.report = Some(output(MODEL_A));
    status.workers = vec![early, worker("r-1", 0, 1, "Failed", 3)];
    let d = decide_with(&run, status, &pods(&[]), None, None, at(10));
    let mut status = d.status;
    assert_eq!(
        prepare(&run, &mut status, &pods(&[]), &Time(t(11))),
        Some(1)
    );
    let mut last = worker("r-0-a1", 1, 0, "Succeeded", 0);
    last.report = Some(output(MODEL_B));
    status.workers.push(last);
    status.workers.push(worker("r-1-a1", 1, 1, "Succeeded", 0));
    let d = decide_with(&run, status, &pods(&[]), None, None, at(20));
    assert_eq!(d.status.phase, Some(Phase::Succeeded));
    let outputs: Vec<&str> = d.status.outputs.iter().map(|o| o.digest.as_str()).collect();
    assert_eq!(outputs, vec![MODEL_B]);
    let datasets = &d.status.materials.as_ref().expect("materials").datasets;
    assert!(
        datasets.iter().all(|m| !format!("{m:?}").contains(MODEL_A)),
        "{datasets:?}"
    );
    let (_, _, message) = condition(&d, "Succeeded");
    assert_eq!(message, "all 2 workers of attempt 1 succeeded");
    assert_eq!(d.status.workers.len(), 4, "every attempt's workers stay");
    assert_eq!(d.status.attempts[1].reason.as_deref(), Some("Succeeded"));
}

#[test]
fn no_attempt_past_what_the_status_can_record() {
    let mut big = restarts(5);
    big.spec.replicas = 1024;
    let created: Vec<String> = (0..2048).map(|i| format!("r-x{i}")).collect();
    let created: Vec<&str> = created.iter().map(String::as_str).collect();
    let mut status = started(&big, &created);
    status.workers.push(worker("r-1", 0, 1, "Failed", 3));
    let d = decide_with(&big, status, &pods(&[]), None, None, at(10));
    assert_eq!(d.status.phase, Some(Phase::Failed));
    let (_, _, message) = condition(&d, "Succeeded");
    assert!(message.contains("past 2048 worker pods"), "{message}");
}

/// The pass that suspended the run deleted its workers but could not write the status (a
/// conflict): the next pass finds them gone, and suspends; nothing is lost or restarted.
#[test]
fn tampering_and_refused_reports_are_never_restarted() {
    let run = restarts(5);
    let status = started(&run, &["r-0", "r-1"]);
    let refusal = (
        "WorkerTampered".to_string(),
        "pod r-0 was replaced".to_string(),
    );
    let d = crate::reconcile::decide::refuse(&run, status.clone(), refusal, at(10));
    assert_eq!(d.status.phase, Some(Phase::Failed));
    assert_eq!(
        d.status.attempts[0].reason.as_deref(),
        Some("WorkerTampered")
    );
    let mut s = status.clone();
    let mut failure = Some(("InvalidWorkloadReport".to_string(), "bad".to_string()));
    assert!(interrupt(&run, &mut s, &pods(&[]), &mut failure, at(10)).is_none());
    assert_eq!(
        failure.map(|f| f.0).as_deref(),
        Some("InvalidWorkloadReport")
    );
}

#[test]
fn an_attempt_message_fits_the_schema_whatever_the_workload_wrote() {
    let run = restarts(1);
    let mut status = started(&run, &["r-0", "r-1"]);
    let mut failed = worker("r-1", 0, 1, "Failed", 1);
    // A refused report quotes the workload's value: a status with it whole would be refused
    // (attempts[].message is at most 4,096 characters) and retried forever.
    failed.report_error = Some(format!("BadDigest: {}", "x".repeat(6000)));
    status.workers.push(failed);
    let d = decide_with(
        &run,
        status,
        &pods(&[("r-1", "Failed")]),
        None,
        None,
        at(10),
    );
    let message = d.status.attempts[0].message.as_deref().expect("message");
    assert!(
        message.chars().count() <= 4096,
        "{} characters",
        message.len()
    );
    assert!(
        message.starts_with("worker r-1 (rank 1) failed"),
        "{message}"
    );
}

#[test]
fn images_come_from_every_attempt_reports_from_the_final_one() {
    let run = restarts(1);
    let mut status = started(&run, &["r-0", "r-1"]);
    let ran = |name: &str, attempt, rank, digest: &str| {
        let mut w = worker(
            name,
            attempt,
            rank,
            if attempt == 0 { "Failed" } else { "Succeeded" },
            if attempt == 0 { 1 } else { 0 },
        );
        w.containers = vec![crate::api::ContainerRecord {
            name: "trainer".into(),
            image: "registry.example.com/train:1".into(),
            digest: Some(digest.into()),
            image_id: None,
        }];
        w
    };
    status.workers.push(ran("r-1", 0, 1, MODEL_A));
    let d = decide_with(
        &run,
        status,
        &pods(&[("r-1", "Failed")]),
        None,
        None,
        at(10),
    );
    let mut status = d.status;
    assert_eq!(
        prepare(&run, &mut status, &pods(&[]), &Time(t(11))),
        Some(1)
    );
    status.workers.push(ran("r-0-a1", 1, 0, MODEL_B));
    status.workers.push(ran("r-1-a1", 1, 1, MODEL_B));
    let live = pods(&[("r-0-a1", "Succeeded"), ("r-1-a1", "Succeeded")]);
    let d = decide_with(&run, status, &live, None, None, at(20));
    assert_eq!(d.status.phase, Some(Phase::Succeeded));
    let images: Vec<&str> = d
        .status
        .materials
        .as_ref()
        .expect("materials")
        .images
        .iter()
        .map(|i| i.digest.as_str())
        .collect();
    assert_eq!(
        images,
        [MODEL_A, MODEL_B],
        "the tag moved between attempts: both recorded"
    );
}
