//! Which pods are the run's workers (pure). Anyone with `edit` in the namespace can create a pod
//! with the run's labels and owner reference, delete a worker and create their own under its name,
//! or change a running worker's image (`kubectl set image`). The controller records the UID of
//! every pod it creates (`status.workerPods`) and trusts only those, as it created them:
//!
//! - a pod claiming to be a worker whose UID was not recorded, or whose container images differ
//!   from those the pod was created with (the rest of its containers is immutable), or that got an
//!   ephemeral container, or whose kubelet-reported image digest differs from a digest-pinned
//!   `spec.image`: `WorkerTampered`;
//! - a created worker of the running attempt gone before it was recorded as finished: `WorkerLost`
//!   ([`lost`]). Never re-created under its name: it ends the attempt, and the next attempt (if
//!   `spec.failurePolicy` allows one) creates all the workers again, under new names, each with
//!   its own recorded UID.
//!
//! Tampering fails the run, so nothing of it is ever signed (docs/security.md); a lost worker
//! fails it unless restarts remain.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use super::decide::Reason;
use crate::api::{CreatedPod, TrainingRunStatus, images};
use crate::execute::WorkerPlan;
use crate::observe::digest_from_image_id;

fn tampered(message: String) -> Option<Reason> {
    Some(("WorkerTampered".to_string(), message))
}

/// Why the live `pods` (listed by the run's labels and owner) cannot be the workers the
/// controller created from `plan` (the running attempt's) or for an earlier attempt
/// (`status.attempts[].pods`), if they cannot. `image` is the run's `spec.image`.
pub fn check(
    plan: &WorkerPlan,
    image: &str,
    pods: &BTreeMap<String, Pod>,
    status: &TrainingRunStatus,
) -> Option<Reason> {
    let pinned = image.rsplit_once('@').map(|(_, digest)| digest);
    let earlier: std::collections::BTreeSet<&String> =
        status.attempts.iter().flat_map(|a| &a.pods).collect();
    for (name, pod) in pods {
        let uid = pod.uid().unwrap_or_default();
        let Some(created) = status.worker_pods.iter().find(|c| &c.name == name) else {
            return tampered(format!(
                "pod {name} (UID {uid}) claims to be a worker of this run, but the controller did not create it"
            ));
        };
        if created.uid != uid {
            return tampered(format!(
                "worker pod {name} was replaced: the controller created UID {}, the pod now is UID {uid}",
                created.uid
            ));
        }
        if !plan.pods.iter().any(|p| p.name_any() == *name) && !earlier.contains(name) {
            return tampered(format!("pod {name} is not one of the run's workers"));
        }
        if let Some(why) = changed(created, pod) {
            return tampered(format!("worker pod {name}: {why}"));
        }
        if let Some(pinned) = pinned {
            let statuses = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref());
            for st in statuses.into_iter().flatten() {
                let ran = digest_from_image_id(&st.image_id);
                if ran.as_deref().is_some_and(|ran| ran != pinned) {
                    return tampered(format!(
                        "worker pod {name}: container {} ran image {}, but spec.image is pinned to {pinned}",
                        st.name, st.image_id
                    ));
                }
            }
        }
    }
    None
}

/// A worker of the running attempt the controller created that is gone before it was recorded
/// as finished, if one is. Workers of ended attempts may go: their attempt is over.
pub fn lost(status: &TrainingRunStatus, pods: &BTreeMap<String, Pod>) -> Option<Reason> {
    let running = match status.attempts.last() {
        Some(a) if a.end_time.is_some() => return None,
        Some(a) => Some(&a.pods),
        // Started before attempts were recorded: every created worker is attempt 0's.
        None => None,
    };
    for created in &status.worker_pods {
        if running.is_some_and(|names| !names.contains(&created.name)) {
            continue;
        }
        let finished = status.workers.iter().any(|w| w.pod_name == created.name);
        if !finished && !pods.contains_key(&created.name) {
            return Some((
                "WorkerLost".to_string(),
                format!(
                    "worker pod {} (UID {}) was deleted before it finished; it is never re-created under its name (a restart creates all the workers again, under new names)",
                    created.name, created.uid
                ),
            ));
        }
    }
    None
}

/// What differs between the pod as the controller created it and the live pod. The API server
/// lets nothing of a pod's containers change but their images, and lets ephemeral containers
/// (`kubectl debug`, which share the worker's processes and files) be added.
fn changed(created: &CreatedPod, live: &Pod) -> Option<String> {
    let now = images(live);
    if let Some((was, is)) = created.images.iter().zip(&now).find(|(was, is)| was != is) {
        return Some(format!("container image changed from {was} to {is}"));
    }
    if created.images.len() != now.len() {
        return Some(format!(
            "containers {} where the controller created {}",
            now.join(", "),
            created.images.join(", ")
        ));
    }
    let debug = live
        .spec
        .as_ref()
        .and_then(|s| s.ephemeral_containers.as_ref());
    if let Some(c) = debug.and_then(|d| d.first()) {
        return Some(format!(
            "an ephemeral container {} (image {}) was added",
            c.name,
            c.image.as_deref().unwrap_or("none")
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::{CreatedPod, TrainingRun, WorkerRecord};

    const PINNED: &str =
        "reg.io/train@sha256:1111111111111111111111111111111111111111111111111111111111111111";

    fn plan() -> WorkerPlan {
        let run: TrainingRun = serde_json::from_value(json!({
            "apiVersion": "provenant.dev/v1alpha1", "kind": "TrainingRun",
            "metadata": {"name": "bert", "namespace": "ns", "uid": "run-uid"},
            "spec": {"image": PINNED, "seed": 1, "replicas": 2, "command": ["python"],
                     "output": {"repository": "reg.io/models/bert"}},
        }))
        .expect("a run");
        crate::execute::plan(&run, &crate::config::ControllerConfig::defaults()).expect("a plan")
    }

    /// The pod of `rank` as the API server returns it: the built one, with a UID.
    fn live(plan: &WorkerPlan, rank: usize, uid: &str) -> Pod {
        let mut pod = plan.pods[rank].clone();
        pod.metadata.uid = Some(uid.into());
        pod
    }

    fn status(created: &[(&str, &str)]) -> TrainingRunStatus {
        let plan = plan();
        TrainingRunStatus {
            worker_pods: created
                .iter()
                .map(|(name, uid)| {
                    let rank: usize = name.rsplit('-').next().unwrap_or("0").parse().unwrap_or(0);
                    CreatedPod::of(&live(&plan, rank, uid))
                })
                .collect(),
            ..Default::default()
        }
    }

    fn pods(list: Vec<Pod>) -> BTreeMap<String, Pod> {
        list.into_iter().map(|p| (p.name_any(), p)).collect()
    }

    #[test]
    fn the_pods_the_controller_created_pass() {
        let plan = plan();
        let pods = pods(vec![live(&plan, 0, "u0"), live(&plan, 1, "u1")]);
        let status = status(&[("bert-0", "u0"), ("bert-1", "u1")]);
        assert_eq!(check(&plan, PINNED, &pods, &status), None);
    }

    #[test]
    fn a_pod_the_controller_did_not_create_is_tampering() {
        let plan = plan();
        // Not recorded at all (created by someone else under a worker's name).
        let (reason, message) = check(
            &plan,
            PINNED,
            &pods(vec![live(&plan, 0, "u0")]),
            &status(&[]),
        )
        .expect("refused");
        assert_eq!(reason, "WorkerTampered");
        assert!(message.contains("did not create it"), "{message}");
        // Deleted and replaced: same name, another UID.
        let (_, message) = check(
            &plan,
            PINNED,
            &pods(vec![live(&plan, 0, "tenant")]),
            &status(&[("bert-0", "u0")]),
        )
        .expect("refused");
        assert!(message.contains("was replaced"), "{message}");
    }

    #[test]
    fn a_changed_image_or_an_added_debug_container_is_tampering() {
        let plan = plan();
        let created = status(&[("bert-0", "u0")]);
        let mut pod = live(&plan, 0, "u0");
        pod.spec.as_mut().expect("spec").containers[0].image = Some("reg.io/other:latest".into());
        let (reason, message) = check(&plan, PINNED, &pods(vec![pod]), &created).expect("refused");
        assert_eq!(reason, "WorkerTampered");
        assert!(
            message.contains("image changed from trainer=reg.io/train@sha256:1111"),
            "{message}"
        );
        assert!(
            message.contains("to trainer=reg.io/other:latest"),
            "{message}"
        );
        let mut pod = live(&plan, 0, "u0");
        pod.spec.as_mut().expect("spec").ephemeral_containers = Some(vec![
            serde_json::from_value(json!({"name": "debugger", "image": "busybox"}))
                .expect("a container"),
        ]);
        let (_, message) = check(&plan, PINNED, &pods(vec![pod]), &created).expect("refused");
        assert!(
            message.contains("ephemeral container debugger"),
            "{message}"
        );
    }

    /// Admission may change a pod at creation (a sidecar injected, an image pinned): what the API
    /// server created is the reference, not what the controller asked for.
    #[test]
    fn the_pod_as_admitted_is_the_reference() {
        let plan = plan();
        let mut admitted = live(&plan, 0, "u0");
        let spec = admitted.spec.as_mut().expect("spec");
        spec.containers.push(
            serde_json::from_value(json!({"name": "istio-proxy", "image": "istio/proxyv2:1.24"}))
                .expect("a container"),
        );
        let created = TrainingRunStatus {
            worker_pods: vec![CreatedPod::of(&admitted)],
            ..Default::default()
        };
        assert_eq!(check(&plan, PINNED, &pods(vec![admitted]), &created), None);
    }

    #[test]
    fn an_image_digest_other_than_the_pinned_one_is_tampering() {
        let plan = plan();
        let mut pod = live(&plan, 0, "u0");
        let other = format!("reg.io/train@sha256:{}", "2".repeat(64));
        pod.status = Some(
            serde_json::from_value(json!({
                "containerStatuses": [{"name": "trainer", "image": PINNED, "imageID": other,
                    "ready": false, "restartCount": 0}],
            }))
            .expect("a status"),
        );
        let (_, message) = check(
            &plan,
            PINNED,
            &pods(vec![pod]),
            &status(&[("bert-0", "u0")]),
        )
        .expect("refused");
        assert!(message.contains("is pinned to sha256:1111"), "{message}");
    }

    #[test]
    fn a_created_worker_gone_before_it_finished_is_lost_one_that_finished_is_not() {
        let plan = plan();
        let mut status = status(&[("bert-0", "u0"), ("bert-1", "u1")]);
        let only_rank1 = pods(vec![live(&plan, 1, "u1")]);
        assert_eq!(check(&plan, PINNED, &only_rank1, &status), None);
        let (reason, message) = lost(&status, &only_rank1).expect("lost");
        assert_eq!(reason, "WorkerLost");
        assert!(message.contains("bert-0 (UID u0)"), "{message}");
        // Recorded as finished, then garbage-collected: nothing lost.
        status.workers.push(WorkerRecord {
            pod_name: "bert-0".into(),
            ..Default::default()
        });
        assert_eq!(lost(&status, &only_rank1), None);
    }

    /// After a restart the first attempt's workers (kept, terminated) are still the run's, and a
    /// worker of an ended attempt that goes is not lost; attempt 1's are judged as usual.
    #[test]
    fn earlier_attempts_workers_pass_and_only_the_running_attempt_can_lose_one() {
        use crate::api::Attempt;
        let first = plan();
        let second = crate::execute::attempt::for_attempt(first.clone(), 1, None);
        let mut status = status(&[("bert-0", "u0"), ("bert-1", "u1")]);
        status.attempts = vec![
            Attempt {
                index: 0,
                end_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    jiff::Timestamp::UNIX_EPOCH,
                )),
                pods: vec!["bert-0".into(), "bert-1".into()],
                ..Default::default()
            },
            Attempt {
                index: 1,
                pods: vec!["bert-0-a1".into(), "bert-1-a1".into()],
                ..Default::default()
            },
        ];
        let mut a1 = second.pods[0].clone();
        a1.metadata.uid = Some("v0".into());
        status.worker_pods.push(CreatedPod::of(&a1));
        let both = pods(vec![live(&first, 0, "u0"), a1.clone()]);
        assert_eq!(check(&second, PINNED, &both, &status), None);
        // bert-1 (attempt 0) is gone: its attempt is over. bert-0-a1 gone would be lost.
        assert_eq!(lost(&status, &both), None);
        let (reason, message) = lost(&status, &pods(vec![live(&first, 0, "u0")])).expect("lost");
        assert_eq!(reason, "WorkerLost");
        assert!(message.contains("bert-0-a1 (UID v0)"), "{message}");
        // A pod under a later attempt's name the controller did not create: tampering.
        let mut forged = second.pods[1].clone();
        forged.metadata.uid = Some("tenant".into());
        let (reason, _) = check(&second, PINNED, &pods(vec![forged]), &status).expect("refused");
        assert_eq!(reason, "WorkerTampered");
    }
}
