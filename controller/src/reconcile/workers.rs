//! A run's worker pods through the API: list them, create the missing ones (execute), record each
//! as it terminates (observe), stop them. What to create and what to record are decided by the
//! pure functions of [`crate::execute`] and [`crate::observe`].

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use super::context::{Context, Error, kube_err};
use super::create_errors::{Refusal, classify};
use super::decide::{Reason, is_terminated};
use super::status::{publish, publish_action};
use crate::api::{
    CreatedPod, NamedDigest, ReportRecord, TrainingRun, TrainingRunStatus, WorkerRecord,
};
use crate::execute::WorkerPlan;
use crate::execute::attempt::of_pod;
use crate::labels;
use crate::observe::{self, report};

/// `obj` is owned by `run` (by UID, so a run deleted and created again owns nothing old).
pub fn owned_by<K: Resource>(obj: &K, run: &TrainingRun) -> bool {
    let uid = run.uid();
    obj.meta()
        .owner_references
        .iter()
        .flatten()
        .any(|o| Some(&o.uid) == uid.as_ref() && o.kind == "TrainingRun")
}

/// The run's worker pods, by name: labelled with its UID and owned by it. Listed from the API
/// server (not a cache), so a pod just created by a previous reconcile is always seen.
pub async fn list(pods_api: &Api<Pod>, run: &TrainingRun) -> Result<BTreeMap<String, Pod>, Error> {
    let selector = format!("{}={}", labels::RUN_UID, run.uid().unwrap_or_default());
    Ok(pods_api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(kube_err("list worker pods"))?
        .items
        .into_iter()
        .filter(|p| owned_by(p, run))
        .map(|p| (p.name_any(), p))
        .collect())
}

/// Why a pass could not create every worker.
#[derive(Debug, Clone, PartialEq)]
pub enum Blocked {
    /// Retried later (a name taken by someone else, a quota): the run stays Pending.
    Waiting(Reason),
    /// The API server refused for good: the run fails and its pods are deleted.
    Refused(Reason),
}

/// Create the pods (and Service) that were never created, recording each pod's UID in
/// `status.workerPods` (the caller writes it at once, whatever else happened). A pod once created
/// is never created again (a lost worker ends its attempt: [`super::restart`]). Returns why the
/// workers are not all there: a pod or Service of the same name that belongs to someone else
/// (reported, never adopted), or a create the API server refused ([`create_errors`]); a refusal
/// stops this pass's creates and is told in a Warning Event.
pub async fn create_missing(
    run: &TrainingRun,
    namespace: &str,
    plan: &WorkerPlan,
    pods: &mut BTreeMap<String, Pod>,
    status: &mut TrainingRunStatus,
    ctx: &Context,
) -> Result<Option<Blocked>, Error> {
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let mut created = 0;
    let mut conflicts = Vec::new();
    let mut refusal = None;
    for pod in &plan.pods {
        let name = pod.name_any();
        let ever_created = status.worker_pods.iter().any(|c| c.name == name)
            || status.workers.iter().any(|w| w.pod_name == name);
        if pods.contains_key(&name) || ever_created {
            continue;
        }
        match pods_api.create(&PostParams::default(), pod).await {
            Ok(p) => {
                created += 1;
                status.worker_pods.push(CreatedPod::of(&p));
                pods.insert(name, p);
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let existing = pods_api
                    .get_opt(&name)
                    .await
                    .map_err(kube_err("get conflicting pod"))?;
                match existing {
                    // Someone else created a pod claiming to be this worker: never adopted; the
                    // next pass sees it listed without a recorded UID (WorkerTampered).
                    Some(p) if owned_by(&p, run) => {}
                    _ => conflicts.push(name),
                }
            }
            // Not `?`: the pods created before it must still be recorded.
            Err(e) => {
                refusal = Some(classify("PodCreation", &format!("pod {name}"), &e));
                break;
            }
        }
    }
    if let (Some(svc), None) = (&plan.service, &refusal) {
        let svc_api: Api<Service> = Api::namespaced(ctx.client.clone(), namespace);
        let name = svc.name_any();
        match svc_api.create(&PostParams::default(), svc).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let existing = svc_api
                    .get_opt(&name)
                    .await
                    .map_err(kube_err("get rendezvous service"))?;
                if !existing.is_some_and(|s| owned_by(&s, run)) {
                    conflicts.push(format!("service/{name}"));
                }
            }
            Err(e) => {
                refusal = Some(classify("ServiceCreation", &format!("service {name}"), &e));
            }
        }
    }
    if created > 0 {
        info!(created, "created worker pods");
        let note = format!("created {created} worker pod(s)");
        publish(ctx, run, EventType::Normal, "Created", &note).await;
    }
    match refusal {
        // A permanent refusal is told by the run's failure (its transition Event).
        Some(Refusal::Permanent(reason)) => {
            warn!(reason = %reason.0, message = %reason.1, "worker creation refused");
            return Ok(Some(Blocked::Refused(reason)));
        }
        Some(Refusal::Transient(reason)) => {
            warn!(reason = %reason.0, message = %reason.1, "worker creation refused for now");
            // Its own series: the failure that may follow (same reason) keeps its own note.
            let (r, note) = (&reason.0, &reason.1);
            publish_action(ctx, run, EventType::Warning, "CreateWorkers", r, note).await;
            return Ok(Some(Blocked::Waiting(reason)));
        }
        None => {}
    }
    if conflicts.is_empty() {
        return Ok(None);
    }
    let message = format!(
        "{} exist(s) but do(es) not belong to this run (different owner); delete them or rename the run",
        conflicts.join(", ")
    );
    publish(ctx, run, EventType::Warning, "PodConflict", &message).await;
    Ok(Some(Blocked::Waiting(("PodConflict".into(), message))))
}

/// Record every terminated worker not recorded yet into `status`. Returns the new records.
pub async fn observe(
    run: &TrainingRun,
    pods: &BTreeMap<String, Pod>,
    status: &mut TrainingRunStatus,
    resource: Option<&str>,
    ctx: &Context,
) -> Result<Vec<WorkerRecord>, Error> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let mut new = Vec::new();
    for (name, pod) in pods {
        if status.workers.iter().any(|w| &w.pod_name == name) || !is_terminated(pod) {
            continue;
        }
        // The node's labels as they are now, when the worker has just finished.
        let node = match pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
            Some(node_name) => nodes
                .get_opt(node_name)
                .await
                .map_err(kube_err(format!("get node {node_name}")))?,
            None => None,
        };
        let mut record = observe::worker_record(pod, node.as_ref(), resource);
        record.attempt = of_pod(&run.name_any(), name).map_or(0, |(attempt, _)| attempt);
        let message = observe::trainer_termination(pod)
            .and_then(|t| t.message.clone())
            .unwrap_or_default();
        match report::parse(&message, &run.spec.output.repository) {
            Ok(Some((parsed, outputs))) => {
                record.report = Some(ReportRecord {
                    outputs: outputs.into_iter().map(|o| o.uri).collect(),
                    datasets: parsed
                        .datasets
                        .into_iter()
                        .map(|d| NamedDigest {
                            name: d.name,
                            digest: d.digest,
                        })
                        .collect(),
                    metrics: parsed.metrics,
                });
            }
            Ok(None) => {}
            Err(e) => {
                record.report_error = Some(format!("{}: {e}", e.reason()));
            }
        }
        status.workers.push(record.clone());
        new.push(record);
    }
    status.workers.sort_by_key(|w| (w.attempt, w.rank));
    Ok(new)
}

/// Delete the pods that have not terminated. Errors are logged: a pod that cannot be deleted now
/// is retried by the next reconcile, and must not block recording the run.
pub async fn stop(pods_api: &Api<Pod>, pods: &BTreeMap<String, Pod>) {
    for (name, pod) in pods {
        if is_terminated(pod) || pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        match pods_api.delete(name, &DeleteParams::background()).await {
            Ok(_) => info!(pod = %name, "stopped worker"),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => warn!(pod = %name, error = %e, "cannot delete worker pod"),
        }
    }
}
