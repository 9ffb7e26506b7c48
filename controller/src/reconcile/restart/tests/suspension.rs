//! `spec.suspend`: before the start, during an attempt, between attempts; the suspensions it
//! records and what they do to the deadline.

use super::*;

#[test]
fn a_suspended_run_stops_its_attempt_and_resumes_with_a_new_one() {
    let mut run = restarts(0);
    let status = started(&run, &["r-0", "r-1"]);
    run.spec.suspend = true;
    let live = pods(&[("r-0", "Running"), ("r-1", "Running")]);
    let mut s = status.clone();
    assert_eq!(
        prepare(&run, &mut s, &live, &Time(t(5))),
        None,
        "no worker while suspended"
    );
    let d = decide_with(&run, status, &live, None, None, at(10));
    assert!(d.stop_workers);
    assert_eq!(d.status.attempts[0].reason.as_deref(), Some(SUSPENDED));
    assert_eq!(condition(&d, SUSPENDED_CONDITION).0, "True");
    assert_eq!(d.transition.as_ref().expect("Event").reason, "Suspended");
    assert_eq!(d.status.suspensions.len(), 1);
    // Suspended: it waits, and the deadline does not run.
    let d = decide_with(&run, d.status, &pods(&[]), None, None, at(100));
    assert_eq!(d.status.phase, Some(Phase::Pending));
    assert_eq!(d.requeue, None);
    // Resumed: the suspension ends, attempt 1 starts; a suspension is not a restart.
    run.spec.suspend = false;
    let mut status = d.status;
    assert_eq!(
        prepare(&run, &mut status, &pods(&[]), &Time(t(110))),
        Some(1)
    );
    assert_eq!(status.suspensions[0].end_time, Some(Time(t(110))));
    assert_eq!(restarts_used(&status), 0);
    assert_eq!(suspended_secs(&status, t(200)), 100);
    let (_, reason, _) = {
        let c = status
            .conditions
            .iter()
            .find(|c| c.type_ == SUSPENDED_CONDITION)
            .expect("c");
        (c.status.clone(), c.reason.clone(), ())
    };
    assert_eq!(reason, "Resumed");
}

#[test]
fn a_run_created_suspended_gets_no_start_time() {
    let run = run(json!({"suspend": true}));
    let d = before_start(&run, TrainingRunStatus::default(), at(0));
    assert_eq!(d.status.start_time, None);
    assert_eq!(d.status.phase, Some(Phase::Pending));
    assert_eq!(condition(&d, SUSPENDED_CONDITION).1, SUSPENDED);
    assert!(!d.stop_workers);
    // Passes while suspended keep the one open suspension.
    let d = before_start(&run, d.status, at(5));
    assert_eq!(d.status.suspensions.len(), 1);
    // Time suspended before the start is not deducted from a deadline that starts later.
    let mut status = d.status;
    status.suspensions[0].end_time = Some(Time(t(50)));
    status.start_time = Some(Time(t(50)));
    assert_eq!(suspended_secs(&status, t(60)), 0);
}

#[test]
fn suspensions_are_bounded() {
    let mut run = restarts(0);
    let mut status = started(&run, &["r-0", "r-1"]);
    status.suspensions = vec![Suspension::default(); MAX_SUSPENSIONS];
    run.spec.suspend = true;
    let d = decide_with(
        &run,
        status,
        &pods(&[("r-0", "Running")]),
        None,
        None,
        at(10),
    );
    assert_eq!(d.status.phase, Some(Phase::Failed));
    assert_eq!(condition(&d, "Succeeded").1, "TooManySuspensions");
}

#[test]
fn workers_gone_while_suspending_are_the_suspension() {
    let mut run = restarts(0);
    let status = started(&run, &["r-0", "r-1"]);
    run.spec.suspend = true;
    let lost = Some((
        "WorkerLost".to_string(),
        "worker pod r-0 was deleted".to_string(),
    ));
    let d = decide_with(&run, status, &pods(&[]), None, lost, at(10));
    assert_eq!(d.status.phase, Some(Phase::Pending));
    assert_eq!(d.status.attempts[0].reason.as_deref(), Some(SUSPENDED));
    assert_eq!(restarts_used(&d.status), 0);
}

/// Tampering and refusals reach the run through `decide::refuse`, never a restart; and a failure
/// that is not a worker's (a refused report) is not restarted either.
#[test]
fn a_suspension_set_between_attempts_is_recorded_and_stops_the_deadline() {
    let mut run = run(json!({"activeDeadlineSeconds": 100,
                             "failurePolicy": {"maxRestarts": 1}}));
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
    assert_eq!(condition(&d, "Succeeded").1, "Restarting");
    // Suspended before attempt 1 starts: recorded, and 400 s later the deadline has not passed.
    run.spec.suspend = true;
    let d = decide_with(&run, d.status, &pods(&[]), None, None, at(20));
    assert_eq!(d.status.suspensions.len(), 1, "{:?}", d.status.suspensions);
    assert_eq!(condition(&d, SUSPENDED_CONDITION).0, "True");
    let d = decide_with(&run, d.status, &pods(&[]), None, None, at(420));
    assert_eq!(
        d.status.phase,
        Some(Phase::Pending),
        "{:?}",
        d.status.conditions
    );
    assert_eq!(
        d.status.suspensions.len(),
        1,
        "one open suspension, not one per pass"
    );
    // Resumed: the suspension ends, Resumed, and attempt 1 starts.
    run.spec.suspend = false;
    let mut status = d.status;
    assert_eq!(
        prepare(&run, &mut status, &pods(&[]), &Time(t(430))),
        Some(1)
    );
    assert_eq!(status.suspensions[0].end_time, Some(Time(t(430))));
    let resumed = status
        .conditions
        .iter()
        .find(|c| c.type_ == SUSPENDED_CONDITION)
        .expect("Suspended condition");
    assert_eq!(
        (resumed.status.as_str(), resumed.reason.as_str()),
        ("False", "Resumed")
    );
}
