//! `internalParameters.attempts` and `internalParameters.suspensions`: how the run went (each
//! attempt, why it ended; each time it was suspended). The workers of every attempt are the
//! byproducts; the subject and the reported materials come from the final attempt only.

use serde::Serialize;

use crate::api::{Attempt, Suspension, TrainingRunStatus};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct AttemptParameter<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    end_time: Option<String>,
    index: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_time: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SuspensionParameter {
    #[serde(skip_serializing_if = "Option::is_none")]
    end_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_time: Option<String>,
}

fn time(t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> Option<String> {
    t.as_ref().map(|t| crate::provenance::rfc3339(&t.0))
}

/// Every attempt of the run (a run recorded before attempts were: none).
pub(super) fn attempts(status: &TrainingRunStatus) -> Vec<AttemptParameter<'_>> {
    status
        .attempts
        .iter()
        .map(|a| {
            // `pods`: the byproducts name every worker with its attempt.
            let Attempt {
                index,
                start_time,
                end_time,
                reason,
                message,
                pods: _,
            } = a;
            AttemptParameter {
                end_time: time(end_time),
                index: *index,
                message: message.as_deref(),
                reason: reason.as_deref(),
                start_time: time(start_time),
            }
        })
        .collect()
}

/// Every time the run was suspended.
pub(super) fn suspensions(status: &TrainingRunStatus) -> Vec<SuspensionParameter> {
    status
        .suspensions
        .iter()
        .map(|s| {
            let Suspension {
                start_time,
                end_time,
            } = s;
            SuspensionParameter {
                end_time: time(end_time),
                start_time: time(start_time),
            }
        })
        .collect()
}
