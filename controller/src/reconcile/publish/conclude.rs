//! What a publish pass concludes from what happened (pure): the run's next status, the Events
//! that tell it, the metric to count, and when to come back.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::events::EventType;

use crate::api::{ProvenanceState, ProvenanceStatus, TrainingRun, TrainingRunStatus};
use crate::engine::SignedRecord;
use crate::reconcile::decide::upsert;

/// Condition types of the publish step.
pub const PROVENANCE_SIGNED: &str = "ProvenanceSigned";
pub const PROVENANCE_ATTACHED: &str = "ProvenanceAttached";
/// Set (and kept) when a persisted record failed its check and was replaced: someone with write
/// access to the controller's namespace edited it, or the key was rotated in between.
pub const PROVENANCE_RECORD_REJECTED: &str = "ProvenanceRecordRejected";

/// Look again after a missing signing key, and after a signing failure.
const KEY_RETRY: Duration = Duration::from_secs(15);
const SIGNING_RETRY: Duration = Duration::from_secs(30);
/// Sign again right after a lost record.
const RECORD_LOST_RETRY: Duration = Duration::from_secs(1);

/// What a publish step asks for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Nothing more to do until the run changes (attached, failed, or a status write that will
    /// bring the run back through the reconciler).
    Done,
    /// Work the run again after this long.
    RetryIn(Duration),
}

/// What happened in a pass, before anything was written.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// An output could not be resolved yet: the registry is unreachable.
    ResolveUnavailable { message: String, wait: Duration },
    /// The registry refused the controller's credentials (401/403) while resolving; tried again
    /// after `wait` (a rotation may be under way). The last refusal is an [`Outcome::Failed`].
    ResolveUnauthorized { message: String, wait: Duration },
    /// Permanently failed before anything was attached (`reason`: a condition reason such as
    /// `OutputNotFound`, `InvalidRun`, `ProvenanceTooLarge`).
    Failed { reason: String, message: String },
    /// The signing key is not loaded (its Secret is missing or unreadable).
    KeyUnavailable { message: String },
    /// Signing failed (`reason`: `SigningFailed`, `StatementUnserializable`).
    SigningFailed { reason: String, message: String },
    /// The run was signed but its persisted record is gone: it is signed anew.
    RecordLost,
    /// The persisted record failed its check (`message` says which): it was deleted, never
    /// attached, and the run is signed anew.
    RecordRejected { message: String },
    /// The record, signed in this pass (`new`) or persisted before, and what attaching it gave.
    Signed {
        record: SignedRecord,
        config_map: String,
        new: bool,
        attach: Attach,
    },
}

/// The result of attaching a signed record.
#[derive(Debug, Clone, PartialEq)]
pub enum Attach {
    Attached(Vec<String>),
    /// The registry is unreachable or overloaded: retried after `wait`.
    Unavailable {
        message: String,
        wait: Duration,
    },
    /// The registry refused: permanent.
    Rejected(String),
    /// The registry refused the controller's credentials (401/403): tried again after `wait`,
    /// or, when `None` (the attempts are spent), failed with `RegistryUnauthorized`.
    Unauthorized {
        message: String,
        wait: Option<Duration>,
    },
}

/// Condition reason (and Event reason) of a registry refusing the controller's credentials.
pub const REGISTRY_UNAUTHORIZED: &str = "RegistryUnauthorized";

/// A metric to count: `provenant_attestations_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    Attached,
    Failed,
}

/// What to write and tell.
#[derive(Debug, Clone, PartialEq)]
pub struct Conclusion {
    pub status: TrainingRunStatus,
    /// (type, reason, note), in order.
    pub events: Vec<(EventType, String, String)>,
    pub counted: Option<Counted>,
    pub next: Next,
}

/// Conclude a pass: `status` is the run's status as this pass left it (outputs verified).
pub fn conclude(
    run: &TrainingRun,
    mut status: TrainingRunStatus,
    outcome: Outcome,
    now: &Time,
) -> Conclusion {
    let generation = run.metadata.generation;
    let mut events = Vec::new();
    let mut counted = None;
    let set = |status: &mut TrainingRunStatus, type_, value, reason: &str, message: &str| {
        upsert(status, type_, value, reason, message, generation, now)
    };
    let next = match outcome {
        Outcome::ResolveUnavailable { message, wait } => {
            set(
                &mut status,
                PROVENANCE_SIGNED,
                "Unknown",
                "RegistryUnavailable",
                &message,
            );
            Next::RetryIn(wait)
        }
        Outcome::ResolveUnauthorized { message, wait } => {
            set(
                &mut status,
                PROVENANCE_SIGNED,
                "Unknown",
                REGISTRY_UNAUTHORIZED,
                &message,
            );
            events.push((EventType::Warning, REGISTRY_UNAUTHORIZED.into(), message));
            Next::RetryIn(wait)
        }
        Outcome::Failed { reason, message } => {
            provenance_of(&mut status).state = ProvenanceState::Failed;
            set(&mut status, PROVENANCE_SIGNED, "False", &reason, &message);
            set(&mut status, PROVENANCE_ATTACHED, "False", &reason, &message);
            counted = Some(Counted::Failed);
            events.push((EventType::Warning, reason, message));
            Next::Done
        }
        Outcome::KeyUnavailable { message } => {
            set(
                &mut status,
                PROVENANCE_SIGNED,
                "False",
                "SigningKeyUnavailable",
                &message,
            );
            events.push((EventType::Warning, "SigningKeyUnavailable".into(), message));
            Next::RetryIn(KEY_RETRY)
        }
        Outcome::SigningFailed { reason, message } => {
            set(&mut status, PROVENANCE_SIGNED, "False", &reason, &message);
            Next::RetryIn(SIGNING_RETRY)
        }
        Outcome::RecordLost => {
            provenance_of(&mut status).state = ProvenanceState::Pending;
            let note = "the ConfigMap holding the signed provenance was deleted; signing again";
            events.push((
                EventType::Warning,
                "ProvenanceRecordLost".into(),
                note.into(),
            ));
            Next::RetryIn(RECORD_LOST_RETRY)
        }
        Outcome::RecordRejected { message } => {
            provenance_of(&mut status).state = ProvenanceState::Pending;
            set(
                &mut status,
                PROVENANCE_RECORD_REJECTED,
                "True",
                "RecordUntrusted",
                &message,
            );
            set(
                &mut status,
                PROVENANCE_SIGNED,
                "False",
                "ProvenanceRecordRejected",
                &message,
            );
            let note = format!("{message}; signing again");
            events.push((EventType::Warning, "ProvenanceRecordRejected".into(), note));
            Next::RetryIn(RECORD_LOST_RETRY)
        }
        Outcome::Signed {
            record,
            config_map,
            new,
            attach,
        } => {
            mark_signed(&mut status, &record, &config_map, generation, now);
            if new {
                let note = format!(
                    "signed with key {}; envelope {} persisted in ConfigMap {config_map}",
                    record.key_id,
                    record.envelope_digest()
                );
                events.push((EventType::Normal, "ProvenanceSigned".into(), note));
            }
            match attach {
                Attach::Attached(references) => {
                    let p = provenance_of(&mut status);
                    p.state = ProvenanceState::Attached;
                    p.attestations = references.clone();
                    p.attached_at = Some(now.clone());
                    let subjects: Vec<String> =
                        record.subjects().iter().map(ToString::to_string).collect();
                    let message = format!("attached to {}", subjects.join(", "));
                    set(
                        &mut status,
                        PROVENANCE_ATTACHED,
                        "True",
                        "Attached",
                        &message,
                    );
                    counted = Some(Counted::Attached);
                    let note = format!("attached: {}", references.join(", "));
                    events.push((EventType::Normal, "ProvenanceAttached".into(), note));
                    Next::Done
                }
                Attach::Unavailable { message, wait } => {
                    set(
                        &mut status,
                        PROVENANCE_ATTACHED,
                        "Unknown",
                        "RegistryUnavailable",
                        &message,
                    );
                    Next::RetryIn(wait)
                }
                Attach::Rejected(message) => {
                    provenance_of(&mut status).state = ProvenanceState::Failed;
                    set(
                        &mut status,
                        PROVENANCE_ATTACHED,
                        "False",
                        "RegistryRejected",
                        &message,
                    );
                    counted = Some(Counted::Failed);
                    events.push((EventType::Warning, "RegistryRejected".into(), message));
                    Next::Done
                }
                Attach::Unauthorized {
                    message,
                    wait: Some(wait),
                } => {
                    set(
                        &mut status,
                        PROVENANCE_ATTACHED,
                        "Unknown",
                        REGISTRY_UNAUTHORIZED,
                        &message,
                    );
                    events.push((EventType::Warning, REGISTRY_UNAUTHORIZED.into(), message));
                    Next::RetryIn(wait)
                }
                Attach::Unauthorized {
                    message,
                    wait: None,
                } => {
                    provenance_of(&mut status).state = ProvenanceState::Failed;
                    set(
                        &mut status,
                        PROVENANCE_ATTACHED,
                        "False",
                        REGISTRY_UNAUTHORIZED,
                        &message,
                    );
                    counted = Some(Counted::Failed);
                    events.push((EventType::Warning, REGISTRY_UNAUTHORIZED.into(), message));
                    Next::Done
                }
            }
        }
    };
    Conclusion {
        status,
        events,
        counted,
        next,
    }
}

fn provenance_of(status: &mut TrainingRunStatus) -> &mut ProvenanceStatus {
    status
        .provenance
        .get_or_insert_with(|| ProvenanceStatus::new(ProvenanceState::Pending))
}

/// The status of a signed run: what was signed, with which key, where the record is.
fn mark_signed(
    status: &mut TrainingRunStatus,
    record: &SignedRecord,
    config_map: &str,
    generation: Option<i64>,
    now: &Time,
) {
    let p = provenance_of(status);
    p.state = ProvenanceState::Signed;
    p.predicate_type = Some(record.predicate_type.clone());
    p.envelope_digest = Some(record.envelope_digest());
    p.key_id = Some(record.key_id.clone());
    p.envelope_config_map = Some(config_map.to_string());
    p.signed_at.get_or_insert_with(|| now.clone());
    let message = format!(
        "envelope {} signed with key {}",
        record.envelope_digest(),
        record.key_id
    );
    upsert(
        status,
        PROVENANCE_SIGNED,
        "True",
        "Signed",
        &message,
        generation,
        now,
    );
    if !status
        .conditions
        .iter()
        .any(|c| c.type_ == PROVENANCE_ATTACHED)
    {
        let pending = "attach pending";
        upsert(
            status,
            PROVENANCE_ATTACHED,
            "Unknown",
            "Pending",
            pending,
            generation,
            now,
        );
    }
}

#[cfg(test)]
mod tests;
