//! The controller's status write (`reconcile::status::write_status_at`) against an API server: the
//! double under a plain `cargo test`, the real kube-apiserver under `make test`. The status it
//! writes replaces the stored one, so what `status.workerCommon` no longer holds is gone (a merge
//! patch would keep it and give a record a value it never had), and a write at a resourceVersion
//! that is no longer current is refused (409).

#[path = "support/runs.rs"]
mod runs;

use std::sync::Arc;

use anyhow::{Context as _, Result};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kube::runtime::events::{Recorder, Reporter};
use provenant::api::{AcceleratorFacts, TrainingRun, TrainingRunStatus, WorkerRecord};
use provenant::config::ControllerConfig;
use provenant::metrics::Metrics;
use provenant::reconcile::context::Context;
use provenant::reconcile::queue::ProvenanceQueue;
use provenant::reconcile::status::write_status_at;
use provenant_testbed::cluster::Cluster;

fn worker(rank: i32, exit_code: i32, labels: &[(&str, &str)]) -> WorkerRecord {
    WorkerRecord {
        pod_name: format!("w-{rank}"),
        rank,
        exit_code: Some(exit_code),
        accelerator: Some(AcceleratorFacts {
            product: Some("NVIDIA-L4".into()),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_status_write_replaces_the_status_and_is_refused_when_stale() -> Result<()> {
    let cluster = Cluster::start().await?;
    let mut object = runs::cpu_sample();
    object["metadata"] = serde_json::to_value(ObjectMeta {
        name: Some("status".into()),
        ..Default::default()
    })?;
    let run: TrainingRun = serde_json::from_value(object)?;
    let run = cluster
        .api::<TrainingRun>()
        .create(&PostParams::default(), &run)
        .await?;
    let (queue, _queued) = ProvenanceQueue::new();
    let ctx = Context {
        client: cluster.client.clone(),
        config: Arc::new(ControllerConfig::defaults()),
        recorder: Recorder::new(
            cluster.client.clone(),
            Reporter {
                controller: "provenant".into(),
                instance: None,
            },
        ),
        metrics: Metrics::new(),
        publisher: None,
        controller_namespace: cluster.controller_namespace.clone(),
        queue,
        revocations: provenant::reconcile::revocation::Watched::none(),
    };
    let ns = &cluster.namespace;

    // Two workers on like nodes: their exit code and both labels are written once.
    let first = TrainingRunStatus {
        workers: vec![
            worker(0, 0, &[("nvidia.com/a", "1"), ("nvidia.com/b", "2")]),
            worker(1, 0, &[("nvidia.com/a", "1"), ("nvidia.com/b", "2")]),
        ],
        ..Default::default()
    };
    let version = write_status_at(&run, ns, first, run.metadata.resource_version.clone(), &ctx)
        .await?
        .context("a resourceVersion")?;
    let stored = raw_status(&cluster).await?;
    assert_eq!(stored["workerCommon"]["exitCode"], 0, "{stored}");
    assert_eq!(
        stored["workerCommon"]["accelerator"]["labels"]["nvidia.com/b"],
        "2"
    );

    // A third worker failed on a node without label b: neither is common any more.
    let second = TrainingRunStatus {
        workers: vec![
            worker(0, 0, &[("nvidia.com/a", "1"), ("nvidia.com/b", "2")]),
            worker(1, 0, &[("nvidia.com/a", "1"), ("nvidia.com/b", "2")]),
            worker(2, 1, &[("nvidia.com/a", "1")]),
        ],
        ..Default::default()
    };
    write_status_at(&run, ns, second.clone(), Some(version.clone()), &ctx).await?;
    let stored = raw_status(&cluster).await?;
    assert!(
        stored["workerCommon"].get("exitCode").is_none(),
        "a stale exit code kept: {stored}"
    );
    assert!(
        stored["workerCommon"]["accelerator"]["labels"]
            .get("nvidia.com/b")
            .is_none(),
        "a stale label kept: {stored}"
    );
    let read = cluster.api::<TrainingRun>().get("status").await?;
    assert_eq!(
        read.status.context("status")?.workers,
        second.workers,
        "the records read back are the records written"
    );

    // At the first write's resourceVersion, now stale: refused.
    let err = write_status_at(&run, ns, TrainingRunStatus::default(), Some(version), &ctx)
        .await
        .expect_err("a stale write");
    assert!(err.is_conflict(), "{err}");
    Ok(())
}

/// The status as the API server stores it.
async fn raw_status(cluster: &Cluster) -> Result<serde_json::Value> {
    let resource = ApiResource::erase::<TrainingRun>(&());
    let api: Api<DynamicObject> =
        Api::namespaced_with(cluster.client.clone(), &cluster.namespace, &resource);
    Ok(api.get("status").await?.data["status"].clone())
}
