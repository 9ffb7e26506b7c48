//! Restarts and suspension: `spec.failurePolicy`, and the `status.attempts` and
//! `status.suspensions` that record them (docs/trainingrun.md, "Restarts and suspension").

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Upper bound on `spec.failurePolicy.maxRestarts`.
pub const MAX_RESTARTS: i32 = 100;
/// How many times a run may be suspended; the next suspension of a started run fails it
/// (`TooManySuspensions`): every suspension adds an attempt and a suspension to the status.
pub const MAX_SUSPENSIONS: usize = 100;
/// Upper bound on `status.attempts`: every restart and every suspension of a started run ends one.
pub const MAX_ATTEMPTS: usize = MAX_RESTARTS as usize + 1 + MAX_SUSPENSIONS;

/// Most worker pods a run may create over all its attempts: every one is recorded in the status
/// (`workerPods`, `workers`), which must stay within etcd's 1.5 MiB request limit (two attempts of
/// 1,024 GPU workers take ~1.2 MB). A restart or resume past it fails the run instead.
pub const MAX_RECORDED_PODS: i32 = 2 * super::MAX_REPLICAS;

/// Attempt reason of a suspended attempt (not counted against `maxRestarts`).
pub const SUSPENDED: &str = "Suspended";

/// What to do when a worker fails: JobSet-style, a failed, evicted or lost worker restarts all
/// the workers as a new attempt, up to `maxRestarts` times.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailurePolicy {
    /// How many times the run may restart all its workers after one fails (0 to 100; default 0:
    /// the first failure fails the run). A worker that fails (non-zero exit, OOMKilled), is
    /// evicted or preempted, or is deleted before it finished stops every worker of its attempt;
    /// once none runs, all are created again under new names.
    #[serde(default)]
    #[schemars(range(min = 0, max = MAX_RESTARTS))]
    pub max_restarts: i32,

    /// Exit codes (1 to 255, at most 32) that fail the run at once, whatever restarts remain:
    /// errors a restart cannot fix (a bad configuration, a missing dataset).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(range(min = 1, max = 255)))]
    pub non_retriable_exit_codes: Vec<i32>,
}

/// One attempt of a run: all its workers, created together.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// 0 for the first attempt. Workers of attempt 0 are `<run>-<rank>`, of attempt k ≥ 1
    /// `<run>-<rank>-a<k>`.
    pub index: i32,
    /// When the controller started the attempt (before creating its workers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the attempt ended; absent while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Time>,
    /// Why it ended: `Succeeded`, `WorkerFailed`, `WorkerEvicted`, `WorkerLost`, `Suspended`, or
    /// the run's failure reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub reason: Option<String>,
    /// What ended it, in words (the worker, its exit code, its node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub message: Option<String>,
    /// The attempt's worker pods, by rank.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024), inner(length(max = 63)))]
    pub pods: Vec<String>,
}

/// A time the run was suspended (`spec.suspend: true`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Suspension {
    /// When the controller saw `spec.suspend` set.
    pub start_time: Option<Time>,
    /// When it saw it cleared; absent while the run is suspended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Time>,
}

impl FailurePolicy {
    /// `code` fails the run whatever restarts remain.
    pub fn non_retriable(&self, code: i32) -> bool {
        self.non_retriable_exit_codes.contains(&code)
    }
}
