//! The annotations of a worker's byproduct ([`worker_annotations`]): what the controller
//! observed of the worker (node, containers and their digests, accelerator facts, exit) apart from
//! what its workload reported. Same rule as the other views of `fields`: fields in key order.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::api::{AcceleratorFacts, ContainerRecord, NamedDigest, ReportRecord, WorkerRecord};
use crate::provenance::statement::Object;

/// The annotations of a worker's byproduct: what the controller observed apart from what the
/// workload reported.
#[derive(Serialize)]
struct WorkerAnnotations<'a> {
    observed: ObservedWorker<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reported: Option<ReportedWorker<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ObservedWorker<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    accelerator: Option<Accelerator<'a>>,
    /// `status.attempts[].index` of the worker's attempt; absent for attempt 0 (so a run
    /// recorded before attempts existed gives the same statement).
    #[serde(skip_serializing_if = "is_first")]
    attempt: i32,
    containers: Vec<Container<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    phase: Option<&'a str>,
    rank: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Container<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<&'a str>,
    image: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    image_id: Option<&'a str>,
    name: &'a str,
}

/// A node's accelerator facts when the worker finished.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Accelerator<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    allocated: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cuda_version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    driver_version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    instance_type: Option<&'a str>,
    /// Every accelerator label of the node, verbatim.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    product: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tpu_topology: Option<&'a str>,
}

/// The workload's report (all three keys always present).
#[derive(Serialize)]
struct ReportedWorker<'a> {
    datasets: Vec<ReportedDataset<'a>>,
    /// Evaluation metrics; a non-finite value is written as `null`.
    metrics: &'a BTreeMap<String, f64>,
    outputs: &'a [String],
}

#[derive(Serialize)]
struct ReportedDataset<'a> {
    digest: &'a str,
    name: &'a str,
}

fn is_first(attempt: &i32) -> bool {
    *attempt == 0
}

fn container(c: &ContainerRecord) -> Container<'_> {
    let ContainerRecord {
        name,
        image,
        digest,
        image_id,
    } = c;
    Container {
        digest: digest.as_deref(),
        image,
        image_id: image_id.as_deref(),
        name,
    }
}

fn accelerator(facts: &AcceleratorFacts) -> Accelerator<'_> {
    let AcceleratorFacts {
        product,
        count,
        memory,
        driver_version,
        cuda_version,
        tpu_topology,
        instance_type,
        allocated,
        labels,
    } = facts;
    Accelerator {
        allocated: *allocated,
        count: count.as_deref(),
        cuda_version: cuda_version.as_deref(),
        driver_version: driver_version.as_deref(),
        instance_type: instance_type.as_deref(),
        labels,
        memory: memory.as_deref(),
        product: product.as_deref(),
        tpu_topology: tpu_topology.as_deref(),
    }
}

fn reported(report: &ReportRecord) -> ReportedWorker<'_> {
    let ReportRecord {
        outputs,
        datasets,
        metrics,
    } = report;
    ReportedWorker {
        datasets: datasets
            .iter()
            .map(|d| {
                let NamedDigest { name, digest } = d;
                ReportedDataset { digest, name }
            })
            .collect(),
        metrics,
        outputs,
    }
}

/// The annotations of `w`'s byproduct. Not recorded there: `pod_name` and `report_digest` (the
/// descriptor's name and digest) and `report_error` (why a report was refused; the run's
/// conditions carry it).
pub(in crate::provenance) fn worker_annotations(w: &WorkerRecord) -> serde_json::Result<Object> {
    let WorkerRecord {
        pod_name: _,
        rank,
        attempt,
        node_name,
        phase,
        exit_code,
        reason,
        started_at,
        finished_at,
        containers,
        accelerator: facts,
        report_digest: _,
        report,
        report_error: _,
    } = w;
    Object::of(&WorkerAnnotations {
        observed: ObservedWorker {
            accelerator: facts.as_ref().map(accelerator),
            attempt: *attempt,
            containers: containers.iter().map(container).collect(),
            exit_code: *exit_code,
            finished_at: finished_at
                .as_ref()
                .map(|t| crate::provenance::rfc3339(&t.0)),
            node: node_name.as_deref(),
            phase: phase.as_deref(),
            rank: *rank,
            reason: reason.as_deref(),
            started_at: started_at
                .as_ref()
                .map(|t| crate::provenance::rfc3339(&t.0)),
        },
        reported: report.as_ref().map(reported),
    })
}
