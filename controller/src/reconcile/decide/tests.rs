//! The decisions of a reconcile pass, case by case.
use super::*;
use crate::api::{NamedDigest, ReportRecord, WorkerRecord};
use serde_json::json;

const DIGEST_A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const DIGEST_B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

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

fn t(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + seconds).unwrap()
}

/// A started run's status: Pending since t(0).
fn started() -> TrainingRunStatus {
    TrainingRunStatus {
        phase: Some(Phase::Pending),
        start_time: Some(Time(t(0))),
        ..Default::default()
    }
}

fn pods(phases: &[&str]) -> BTreeMap<String, Pod> {
    phases
        .iter()
        .enumerate()
        .map(|(i, phase)| {
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"name": format!("r-{i}")}, "status": {"phase": phase},
            }))
            .unwrap();
            (format!("r-{i}"), pod)
        })
        .collect()
}

fn worker(rank: i32, phase: &str) -> WorkerRecord {
    WorkerRecord {
        pod_name: format!("r-{rank}"),
        rank,
        node_name: Some("gpu-0".into()),
        phase: Some(phase.into()),
        exit_code: Some(if phase == "Succeeded" { 0 } else { 3 }),
        reason: Some(
            if phase == "Succeeded" {
                "Completed"
            } else {
                "Error"
            }
            .into(),
        ),
        ..Default::default()
    }
}

fn with_workers(workers: Vec<WorkerRecord>) -> TrainingRunStatus {
    TrainingRunStatus {
        workers,
        ..started()
    }
}

fn at(seconds: i64) -> Settings {
    Settings {
        now: t(seconds),
        provenance: true,
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
fn phases_follow_the_workers() {
    // (pods, recorded workers, phase, Succeeded condition reason)
    let cases: Vec<(Vec<&str>, Vec<WorkerRecord>, Phase, &str)> = vec![
        (vec![], vec![], Phase::Pending, "Pending"),
        (
            vec!["Pending", "Pending"],
            vec![],
            Phase::Pending,
            "Pending",
        ),
        (
            vec!["Running", "Pending"],
            vec![],
            Phase::Pending,
            "Pending",
        ),
        (
            vec!["Running", "Running"],
            vec![],
            Phase::Running,
            "Running",
        ),
        (
            vec!["Succeeded", "Running"],
            vec![worker(0, "Succeeded")],
            Phase::Running,
            "Running",
        ),
        (
            vec!["Succeeded", "Succeeded"],
            vec![worker(0, "Succeeded"), worker(1, "Succeeded")],
            Phase::Succeeded,
            "AllWorkersSucceeded",
        ),
        // Recorded workers count even when their pods are gone (garbage collected).
        (
            vec![],
            vec![worker(0, "Succeeded"), worker(1, "Succeeded")],
            Phase::Succeeded,
            "AllWorkersSucceeded",
        ),
        (
            vec!["Failed", "Running"],
            vec![worker(0, "Failed")],
            Phase::Failed,
            "WorkerFailed",
        ),
    ];
    for (pod_phases, workers, phase, reason) in cases {
        let d = decide(
            &run(json!({})),
            with_workers(workers),
            &pods(&pod_phases),
            None,
            at(10),
        );
        assert_eq!(d.status.phase, Some(phase), "{pod_phases:?}");
        assert_eq!(condition(&d, SUCCEEDED).1, reason, "{pod_phases:?}");
        let terminal = matches!(phase, Phase::Succeeded | Phase::Failed);
        assert_eq!(d.stop_workers, terminal);
        assert_eq!(d.requeue.is_none(), terminal, "{pod_phases:?}");
    }
}

#[test]
fn transitions_are_told_once_with_their_event() {
    let d = decide(
        &run(json!({})),
        started(),
        &pods(&["Running", "Running"]),
        None,
        at(10),
    );
    let t = d.transition.expect("Pending → Running");
    assert_eq!((t.from, t.to), (Phase::Pending, Phase::Running));
    assert_eq!(
        (t.event_type, t.reason.as_str()),
        (EventType::Normal, "Running")
    );
    assert_eq!(t.note, "all 2 workers running");
    // Already Running: nothing to tell.
    let running = TrainingRunStatus {
        phase: Some(Phase::Running),
        ..started()
    };
    let d = decide(
        &run(json!({})),
        running,
        &pods(&["Running", "Running"]),
        None,
        at(10),
    );
    assert_eq!(d.transition, None);

    let failed = with_workers(vec![worker(0, "Failed")]);
    let d = decide(
        &run(json!({})),
        failed,
        &pods(&["Failed", "Running"]),
        None,
        at(10),
    );
    let t = d.transition.expect("Pending → Failed");
    assert_eq!(
        (t.event_type, t.reason.as_str()),
        (EventType::Warning, "WorkerFailed")
    );
    assert!(
        t.note
            .contains("worker r-0 (rank 0) failed: exit code 3, reason Error, on node gpu-0"),
        "{}",
        t.note
    );
}

#[test]
fn failure_reasons() {
    let mut deadline = worker(1, "Failed");
    deadline.reason = Some("DeadlineExceeded".into());
    let mut crashed_with_text = worker(1, "Failed");
    crashed_with_text.report_error = Some("InvalidWorkloadReport: not JSON".into());
    let mut bad_report = worker(1, "Succeeded");
    bad_report.report_error =
        Some("OutputOutsideRepository: registry.example.com/other@sha256:ab".into());
    let cases = [
        (deadline, "DeadlineExceeded", "reason DeadlineExceeded"),
        (
            crashed_with_text,
            "WorkerFailed",
            "its termination message is not a report (InvalidWorkloadReport: not JSON)",
        ),
        (
            bad_report,
            "OutputOutsideRepository",
            "worker r-1 reported: registry.example.com/other@sha256:ab",
        ),
    ];
    for (w, reason, message) in cases {
        let status = with_workers(vec![worker(0, "Succeeded"), w]);
        let d = decide(&run(json!({})), status, &pods(&[]), None, at(10));
        assert_eq!(d.status.phase, Some(Phase::Failed));
        let (value, got, text) = condition(&d, SUCCEEDED);
        assert_eq!((value, got), ("False", reason));
        assert!(text.contains(message), "{text}");
        assert_eq!(condition(&d, MATERIALS_RECORDED).1, reason);
        assert!(d.status.completion_time.is_some());
        assert_eq!(
            d.status.provenance.as_ref().unwrap().state,
            ProvenanceState::Disabled,
            "a failed run owes no provenance"
        );
        assert!(d.release_finalizer);
    }
}

#[test]
fn the_deadline_fails_a_run_and_sets_the_next_look() {
    let run = run(json!({"activeDeadlineSeconds": 60}));
    let running = pods(&["Running", "Running"]);
    let d = decide(&run, started(), &running, None, at(45));
    assert_eq!(d.status.phase, Some(Phase::Running));
    assert_eq!(
        d.requeue,
        Some(Duration::from_secs(15)),
        "wake up at the deadline"
    );
    let d = decide(&run, started(), &running, None, at(61));
    assert_eq!(d.status.phase, Some(Phase::Failed));
    let (_, reason, message) = condition(&d, SUCCEEDED);
    assert_eq!(reason, "DeadlineExceeded");
    assert_eq!(message, "the run exceeded spec.activeDeadlineSeconds (60s)");
    assert!(d.stop_workers);
    // Finished in time: the deadline does not matter any more.
    let done = with_workers(vec![worker(0, "Succeeded"), worker(1, "Succeeded")]);
    let d = decide(&run, done, &pods(&[]), None, at(61));
    assert_eq!(d.status.phase, Some(Phase::Succeeded));
}

#[test]
fn blocked_runs_say_why_and_look_again_soon() {
    let conflict = ("PodConflict".to_string(), "r-0 exists".to_string());
    let d = decide(
        &run(json!({})),
        started(),
        &pods(&[]),
        Some(conflict),
        at(10),
    );
    assert_eq!(
        condition(&d, SUCCEEDED),
        ("Unknown", "PodConflict", "r-0 exists")
    );
    // Half the time waited so far (10 s): retries back off as the wait goes on, up to a cap.
    assert_eq!(d.requeue, Some(Duration::from_secs(5)));
    let quota = (
        "PodCreationForbidden".to_string(),
        "exceeded quota".to_string(),
    );
    let retry = |r: &TrainingRun, secs| {
        decide(r, started(), &pods(&[]), Some(quota.clone()), at(secs)).requeue
    };
    let plain = run(json!({}));
    assert_eq!(retry(&plain, 0), Some(Duration::from_secs(1)));
    assert_eq!(retry(&plain, 3600), Some(BLOCKED_RETRY));
    // Never past the deadline, and at the deadline the run fails (its pods are stopped).
    let bounded = run(json!({"activeDeadlineSeconds": 40}));
    assert_eq!(retry(&bounded, 36), Some(Duration::from_secs(4)));
    let d = decide(
        &bounded,
        started(),
        &pods(&["Pending"]),
        Some(quota.clone()),
        at(40),
    );
    assert_eq!(condition(&d, SUCCEEDED).1, "DeadlineExceeded");
    assert!(d.stop_workers && d.requeue.is_none());
    // No deadline, not blocked: the idle look.
    let d = decide(&run(json!({})), started(), &pods(&[]), None, at(10));
    assert_eq!(d.requeue, Some(IDLE_RETRY));
}

#[test]
fn success_records_materials_and_outputs_and_keeps_the_finalizer_for_provenance() {
    let run =
        run(json!({"datasets": [{"name": "wiki", "uri": "gs://d/wiki", "digest": DIGEST_A}]}));
    let mut rank0 = worker(0, "Succeeded");
    rank0.report = Some(ReportRecord {
        outputs: vec![format!("registry.example.com/models/m@{DIGEST_B}")],
        datasets: vec![NamedDigest {
            name: "wiki".into(),
            digest: DIGEST_A.into(),
        }],
        ..Default::default()
    });
    let status = with_workers(vec![rank0, worker(1, "Succeeded")]);
    for (provenance, state, release) in [
        (true, ProvenanceState::Pending, false),
        (false, ProvenanceState::Disabled, true),
    ] {
        let settings = Settings {
            now: t(10),
            provenance,
        };
        let d = decide(&run, status.clone(), &pods(&[]), None, settings);
        assert_eq!(d.status.phase, Some(Phase::Succeeded));
        let materials = d.status.materials.as_ref().unwrap();
        assert_eq!(materials.datasets[0].digest.as_deref(), Some(DIGEST_A));
        assert_eq!(d.status.outputs.len(), 1);
        assert_eq!(d.status.outputs[0].digest, DIGEST_B);
        assert_eq!(
            condition(&d, MATERIALS_RECORDED),
            (
                "True",
                "Recorded",
                "2 workers, 1 datasets, 0 images, 1 outputs recorded"
            )
        );
        assert_eq!(d.status.provenance.as_ref().unwrap().state, state);
        assert_eq!(d.release_finalizer, release);
        assert_eq!(d.transition.as_ref().unwrap().reason, "Succeeded");
    }
}

#[test]
fn a_report_that_contradicts_a_declared_digest_fails_the_run() {
    let run =
        run(json!({"datasets": [{"name": "wiki", "uri": "gs://d/wiki", "digest": DIGEST_A}]}));
    let mut rank0 = worker(0, "Succeeded");
    rank0.report = Some(ReportRecord {
        datasets: vec![NamedDigest {
            name: "wiki".into(),
            digest: DIGEST_B.into(),
        }],
        ..Default::default()
    });
    let status = with_workers(vec![rank0, worker(1, "Succeeded")]);
    let d = decide(&run, status, &pods(&[]), None, at(10));
    assert_eq!(d.status.phase, Some(Phase::Failed));
    assert_eq!(condition(&d, SUCCEEDED).1, "DatasetDigestMismatch");
    assert!(
        d.status.materials.is_none(),
        "nothing contradicted is recorded"
    );
}

#[test]
fn a_refused_run_fails_and_stops_only_workers_it_started() {
    let reason = ("ForbiddenNamespace".to_string(), "not here".to_string());
    let never_started = TrainingRunStatus::default();
    let d = refuse(&run(json!({})), never_started, reason.clone(), at(10));
    assert_eq!(d.status.phase, Some(Phase::Failed));
    assert_eq!(
        condition(&d, SUCCEEDED),
        ("False", "ForbiddenNamespace", "not here")
    );
    assert!(!d.stop_workers);
    assert!(d.release_finalizer);
    assert_eq!(d.transition.unwrap().event_type, EventType::Warning);
    let d = refuse(&run(json!({})), started(), reason, at(10));
    assert!(d.stop_workers, "workers of a started run are stopped");
}

#[test]
fn the_finalizer_rule() {
    let with = |phase: Option<Phase>, state: Option<ProvenanceState>| TrainingRunStatus {
        phase,
        provenance: state.map(ProvenanceStatus::new),
        ..Default::default()
    };
    use ProvenanceState::*;
    // (phase, provenance state, provenance enabled) → (owes provenance, finalizer may go)
    let cases = [
        (None, None, true, false, false),
        (Some(Phase::Pending), None, true, false, false),
        (Some(Phase::Running), None, true, false, false),
        (Some(Phase::Failed), Some(Disabled), true, false, true),
        (Some(Phase::Succeeded), Some(Pending), true, true, false),
        (Some(Phase::Succeeded), Some(Signed), true, true, false),
        (Some(Phase::Succeeded), Some(Attached), true, false, true),
        (Some(Phase::Succeeded), Some(Failed), true, false, true),
        (Some(Phase::Succeeded), Some(Disabled), true, false, true),
        // Provenance switched off after the run finished: nothing will ever attest it.
        (Some(Phase::Succeeded), Some(Pending), false, false, true),
        (Some(Phase::Succeeded), Some(Signed), false, false, true),
    ];
    for (phase, state, enabled, owes, done) in cases {
        let status = with(phase, state);
        assert_eq!(
            owes_provenance(&status, enabled),
            owes,
            "{phase:?} {state:?} {enabled}"
        );
        assert_eq!(
            provenance_done(&status, enabled),
            done,
            "{phase:?} {state:?} {enabled}"
        );
    }
}

#[test]
fn a_condition_moves_its_transition_time_only_when_its_value_changes() {
    let mut status = started();
    upsert(
        &mut status,
        SUCCEEDED,
        "Unknown",
        "Pending",
        "a",
        Some(1),
        &Time(t(1)),
    );
    upsert(
        &mut status,
        SUCCEEDED,
        "Unknown",
        "Running",
        "b",
        Some(1),
        &Time(t(2)),
    );
    assert_eq!(status.conditions[0].last_transition_time, Time(t(1)));
    assert_eq!(status.conditions[0].reason, "Running");
    upsert(
        &mut status,
        SUCCEEDED,
        "True",
        "AllWorkersSucceeded",
        "c",
        Some(1),
        &Time(t(3)),
    );
    assert_eq!(status.conditions[0].last_transition_time, Time(t(3)));
    assert_eq!(status.conditions.len(), 1);
}
