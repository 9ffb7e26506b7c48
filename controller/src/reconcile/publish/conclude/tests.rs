//! Each outcome of a publish pass, concluded.

use super::*;
use crate::api::Phase;
use crate::engine::SubjectSignature;
use jiff::Timestamp;
use serde_json::json;

fn run() -> TrainingRun {
    serde_json::from_value(json!({
        "apiVersion": "provenant.dev/v1alpha1", "kind": "TrainingRun",
        "metadata": {"name": "bert", "namespace": "ns", "uid": "u-1", "generation": 1},
        "spec": {"image": "i", "seed": 1, "output": {"repository": "reg.example/models/bert"}},
    }))
    .unwrap()
}

fn succeeded() -> TrainingRunStatus {
    TrainingRunStatus {
        phase: Some(Phase::Succeeded),
        provenance: Some(ProvenanceStatus::new(ProvenanceState::Pending)),
        ..Default::default()
    }
}

fn record() -> SignedRecord {
    SignedRecord {
        predicate_type: "https://slsa.dev/provenance/v1".into(),
        key_id: "k1".into(),
        envelope:
            br#"{"payloadType":"application/vnd.in-toto+json","payload":"e30=","signatures":[]}"#
                .to_vec(),
        signatures: vec![SubjectSignature {
            repository: "reg.example/models/bert".into(),
            digest: format!("sha256:{}", "a".repeat(64)),
            payload: "e30=".into(),
            signature: "MEUC".into(),
        }],
        model_signatures: vec![],
    }
}

fn now() -> Time {
    Time(Timestamp::from_second(1_800_000_000).unwrap())
}

fn condition<'a>(c: &'a Conclusion, type_: &str) -> Option<(&'a str, &'a str, &'a str)> {
    c.status
        .conditions
        .iter()
        .find(|x| x.type_ == type_)
        .map(|x| (x.status.as_str(), x.reason.as_str(), x.message.as_str()))
}

fn state(c: &Conclusion) -> ProvenanceState {
    c.status.provenance.as_ref().unwrap().state
}

fn signed(new: bool, attach: Attach) -> Outcome {
    Outcome::Signed {
        record: record(),
        config_map: "bert-provenance".into(),
        new,
        attach,
    }
}

#[test]
fn signed_and_attached_in_one_pass() {
    let refs = vec!["reg.example/models/bert:sha256-aa.att".to_string()];
    let c = conclude(
        &run(),
        succeeded(),
        signed(true, Attach::Attached(refs.clone())),
        &now(),
    );
    assert_eq!(state(&c), ProvenanceState::Attached);
    let p = c.status.provenance.as_ref().unwrap();
    assert_eq!(p.attestations, refs);
    assert_eq!(p.key_id.as_deref(), Some("k1"));
    assert_eq!(p.envelope_config_map.as_deref(), Some("bert-provenance"));
    assert!(p.signed_at.is_some() && p.attached_at.is_some());
    assert_eq!(condition(&c, PROVENANCE_SIGNED).unwrap().1, "Signed");
    let (value, reason, message) = condition(&c, PROVENANCE_ATTACHED).unwrap();
    assert_eq!((value, reason), ("True", "Attached"));
    assert_eq!(
        message,
        format!(
            "attached to reg.example/models/bert@sha256:{}",
            "a".repeat(64)
        )
    );
    let reasons: Vec<&str> = c.events.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(reasons, ["ProvenanceSigned", "ProvenanceAttached"]);
    assert_eq!(c.counted, Some(Counted::Attached));
    assert_eq!(c.next, Next::Done);
}

#[test]
fn a_reused_record_is_not_announced_as_signed_again() {
    let c = conclude(
        &run(),
        succeeded(),
        signed(false, Attach::Attached(vec![])),
        &now(),
    );
    let reasons: Vec<&str> = c.events.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(reasons, ["ProvenanceAttached"]);
}

#[test]
fn a_registry_outage_at_attach_keeps_the_signature_and_retries() {
    let wait = Duration::from_secs(4);
    let attach = Attach::Unavailable {
        message: "attach pending, retrying in 4s: connection refused".into(),
        wait,
    };
    let c = conclude(&run(), succeeded(), signed(true, attach), &now());
    assert_eq!(state(&c), ProvenanceState::Signed);
    assert_eq!(
        condition(&c, PROVENANCE_ATTACHED),
        Some((
            "Unknown",
            "RegistryUnavailable",
            "attach pending, retrying in 4s: connection refused"
        ))
    );
    assert_eq!(condition(&c, PROVENANCE_SIGNED).unwrap().0, "True");
    assert_eq!(c.counted, None);
    assert_eq!(c.next, Next::RetryIn(wait));
}

#[test]
fn a_refusal_by_the_registry_fails_the_provenance() {
    let c = conclude(
        &run(),
        succeeded(),
        signed(false, Attach::Rejected("denied".into())),
        &now(),
    );
    assert_eq!(state(&c), ProvenanceState::Failed);
    assert_eq!(
        condition(&c, PROVENANCE_ATTACHED),
        Some(("False", "RegistryRejected", "denied"))
    );
    assert_eq!(c.events.last().unwrap().0, EventType::Warning);
    assert_eq!(c.counted, Some(Counted::Failed));
    assert_eq!(c.next, Next::Done);
}

#[test]
fn failures_before_signing() {
    for reason in [
        "OutputNotFound",
        "OutputDigestMismatch",
        "OutputOutsideRepository",
        "OutputUnresolvable",
        "InvalidRun",
        "ProvenanceRecordConflict",
    ] {
        let outcome = Outcome::Failed {
            reason: reason.into(),
            message: format!("{reason} happened"),
        };
        let c = conclude(&run(), succeeded(), outcome, &now());
        assert_eq!(state(&c), ProvenanceState::Failed, "{reason}");
        for type_ in [PROVENANCE_SIGNED, PROVENANCE_ATTACHED] {
            assert_eq!(condition(&c, type_).unwrap().0, "False", "{reason}");
            assert_eq!(condition(&c, type_).unwrap().1, reason);
        }
        assert_eq!(
            c.events,
            vec![(
                EventType::Warning,
                reason.to_string(),
                format!("{reason} happened")
            )]
        );
        assert_eq!(c.counted, Some(Counted::Failed));
        assert_eq!(c.next, Next::Done);
    }
}

#[test]
fn waits_that_come_back_later() {
    let wait = Duration::from_secs(8);
    let cases = [
        (
            Outcome::ResolveUnavailable {
                message: "cannot resolve x yet".into(),
                wait,
            },
            ("Unknown", "RegistryUnavailable"),
            Next::RetryIn(wait),
            0,
        ),
        (
            Outcome::KeyUnavailable {
                message: "Secret provenant-signing-key not found".into(),
            },
            ("False", "SigningKeyUnavailable"),
            Next::RetryIn(KEY_RETRY),
            1,
        ),
        (
            Outcome::SigningFailed {
                reason: "StatementUnserializable".into(),
                message: "bad".into(),
            },
            ("False", "StatementUnserializable"),
            Next::RetryIn(SIGNING_RETRY),
            0,
        ),
    ];
    for (outcome, (value, reason), next, events) in cases {
        let c = conclude(&run(), succeeded(), outcome, &now());
        let got = condition(&c, PROVENANCE_SIGNED).unwrap();
        assert_eq!((got.0, got.1), (value, reason));
        assert_eq!(state(&c), ProvenanceState::Pending, "still owed");
        assert_eq!(c.next, next);
        assert_eq!(c.events.len(), events, "{reason}");
        assert_eq!(c.counted, None);
    }
}

#[test]
fn a_lost_record_sends_the_run_back_to_signing() {
    let mut status = succeeded();
    status.provenance = Some(ProvenanceStatus::new(ProvenanceState::Signed));
    let c = conclude(&run(), status, Outcome::RecordLost, &now());
    assert_eq!(state(&c), ProvenanceState::Pending);
    assert_eq!(c.events[0].1, "ProvenanceRecordLost");
    assert_eq!(c.next, Next::RetryIn(RECORD_LOST_RETRY));
}

#[test]
fn a_rejected_record_is_told_kept_in_a_condition_and_the_run_signed_anew() {
    let mut status = succeeded();
    status.provenance = Some(ProvenanceStatus::new(ProvenanceState::Signed));
    let message =
        "the persisted provenance record provenance-u-1 was not used: its envelope does not verify"
            .to_string();
    let outcome = Outcome::RecordRejected {
        message: message.clone(),
    };
    let c = conclude(&run(), status, outcome, &now());
    assert_eq!(state(&c), ProvenanceState::Pending);
    assert_eq!(c.events[0].0, EventType::Warning);
    assert_eq!(c.events[0].1, "ProvenanceRecordRejected");
    assert_eq!(
        condition(&c, PROVENANCE_RECORD_REJECTED),
        Some(("True", "RecordUntrusted", message.as_str()))
    );
    assert_eq!(c.next, Next::RetryIn(RECORD_LOST_RETRY));
    // Signed anew in the next pass: the rejection stays on record.
    let again = conclude(
        &run(),
        c.status,
        signed(true, Attach::Attached(vec![])),
        &now(),
    );
    assert_eq!(
        condition(&again, PROVENANCE_RECORD_REJECTED).map(|c| c.0),
        Some("True")
    );
    assert_eq!(
        condition(&again, PROVENANCE_SIGNED).map(|c| c.1),
        Some("Signed")
    );
}

#[test]
fn refused_credentials_are_retried_then_fail_with_their_reason() {
    let wait = Duration::from_secs(4);
    let message = "registry reg.example refused the controller's credentials";

    // Resolving: retried, told, nothing failed yet.
    let c = conclude(
        &run(),
        succeeded(),
        Outcome::ResolveUnauthorized {
            message: message.into(),
            wait,
        },
        &now(),
    );
    assert_eq!(c.next, Next::RetryIn(wait));
    assert_eq!(state(&c), ProvenanceState::Pending);
    assert_eq!(
        condition(&c, PROVENANCE_SIGNED),
        Some(("Unknown", "RegistryUnauthorized", message))
    );
    assert_eq!(c.counted, None);
    assert_eq!(c.events[0].1, "RegistryUnauthorized");

    // Attaching: retried while attempts remain (the signature is kept)...
    let c = conclude(
        &run(),
        succeeded(),
        signed(
            false,
            Attach::Unauthorized {
                message: message.into(),
                wait: Some(wait),
            },
        ),
        &now(),
    );
    assert_eq!(c.next, Next::RetryIn(wait));
    assert_eq!(state(&c), ProvenanceState::Signed);
    assert_eq!(
        condition(&c, PROVENANCE_ATTACHED),
        Some(("Unknown", "RegistryUnauthorized", message))
    );
    // ...then fails for good.
    let c = conclude(
        &run(),
        succeeded(),
        signed(
            false,
            Attach::Unauthorized {
                message: message.into(),
                wait: None,
            },
        ),
        &now(),
    );
    assert_eq!(c.next, Next::Done);
    assert_eq!(state(&c), ProvenanceState::Failed);
    assert_eq!(
        condition(&c, PROVENANCE_ATTACHED),
        Some(("False", "RegistryUnauthorized", message))
    );
    assert_eq!(c.counted, Some(Counted::Failed));
}
