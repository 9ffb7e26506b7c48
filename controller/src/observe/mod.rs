//! Observe: what the controller records as each worker terminates. Facts it saw itself (pod
//! status, node labels) are *observed*; what the workload wrote in its termination message is
//! *reported*; the spec is *declared*. The three stay distinguishable all the way into the
//! provenance. Pure functions over Kubernetes objects, no API calls.

pub mod accelerator;
pub mod host;
pub mod materials;
pub mod report;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ContainerStatus, Node, Pod};
use sha2::{Digest, Sha256};

use crate::api::{ContainerRecord, WorkerRecord};
use crate::labels;

/// The trainer container's termination, if it has terminated.
pub fn trainer_termination(
    pod: &Pod,
) -> Option<&k8s_openapi::api::core::v1::ContainerStateTerminated> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == labels::TRAINER_CONTAINER)?
        .state
        .as_ref()?
        .terminated
        .as_ref()
}

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The manifest digest in a kubelet `imageID` (`docker-pullable://repo@sha256:..` or
/// `repo@sha256:..`). A bare `sha256:..` is the image *config* id (an image loaded locally, not
/// pulled by digest): not a registry digest, so not recorded as one (the raw `imageID` is kept).
pub fn digest_from_image_id(image_id: &str) -> Option<String> {
    let (_, digest) = image_id.rsplit_once('@')?;
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then(|| digest.to_string())
}

/// Record a terminated (or terminating) worker: the pod as the kubelet left it, and the node's
/// accelerator facts at this moment. `resource` is the extended resource of the run's profile.
pub fn worker_record(pod: &Pod, node: Option<&Node>, resource: Option<&str>) -> WorkerRecord {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let rank = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(labels::RANK))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let terminated = trainer_termination(pod);
    let statuses: Vec<&ContainerStatus> = status
        .and_then(|s| s.container_statuses.as_ref())
        .map(|v| v.iter().collect())
        .unwrap_or_default();

    let containers = spec
        .map(|s| {
            s.containers
                .iter()
                .map(|c| {
                    let st = statuses.iter().find(|s| s.name == c.name);
                    let image_id = st.map(|s| s.image_id.clone()).filter(|i| !i.is_empty());
                    ContainerRecord {
                        name: c.name.clone(),
                        image: c.image.clone().unwrap_or_default(),
                        digest: image_id.as_deref().and_then(digest_from_image_id),
                        image_id,
                    }
                })
                .collect()
        })
        .unwrap_or_default();

    let allocated = resource.and_then(|r| {
        spec?
            .containers
            .iter()
            .find(|c| c.name == labels::TRAINER_CONTAINER)
            .and_then(|c| {
                let limits = c.resources.as_ref()?.limits.as_ref()?;
                limits.get(r)?.0.parse::<i64>().ok()
            })
    });
    let accelerator = node.and_then(|n| {
        let empty = BTreeMap::new();
        let labels = n.metadata.labels.as_ref().unwrap_or(&empty);
        let capacity: Option<BTreeMap<String, String>> = n
            .status
            .as_ref()
            .and_then(|s| s.capacity.as_ref())
            .map(|c| c.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect());
        accelerator::facts_from_node(labels, capacity.as_ref(), allocated)
    });
    let message = terminated
        .and_then(|t| t.message.as_deref())
        .filter(|m| !m.trim().is_empty());

    WorkerRecord {
        pod_name: name,
        rank,
        // From the pod name, by the caller (labels can be edited, names cannot).
        attempt: 0,
        node_name: spec.and_then(|s| s.node_name.clone()),
        phase: status.and_then(|s| s.phase.clone()),
        exit_code: terminated.map(|t| t.exit_code),
        // A pod-level reason (DeadlineExceeded, Evicted, ...) explains more than the container's
        // (a killed container just says Error).
        reason: status
            .and_then(|s| s.reason.clone())
            .or_else(|| terminated.and_then(|t| t.reason.clone())),
        started_at: terminated.and_then(|t| t.started_at.clone()),
        finished_at: terminated.and_then(|t| t.finished_at.clone()),
        containers,
        accelerator,
        report_digest: message.map(|m| sha256_digest(m.as_bytes())),
        report: None,
        report_error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_id_forms() {
        let hex = "a".repeat(64);
        assert_eq!(
            digest_from_image_id(&format!("docker-pullable://reg.io/x@sha256:{hex}")),
            Some(format!("sha256:{hex}"))
        );
        assert_eq!(
            digest_from_image_id(&format!("reg.io/x@sha256:{hex}")),
            Some(format!("sha256:{hex}"))
        );
        assert_eq!(
            digest_from_image_id(&format!("sha256:{hex}")),
            None,
            "a config id, not a manifest digest"
        );
        assert_eq!(digest_from_image_id("reg.io/x:latest"), None);
        assert_eq!(digest_from_image_id("sha256:abc"), None);
    }

    #[test]
    fn record_of_a_finished_gpu_worker() {
        let hex = "b".repeat(64);
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "bert-1", "labels": {"provenant.dev/rank": "1"}},
            "spec": {"nodeName": "gpu-1", "containers": [{"name": "trainer", "image": "reg.io/train:v1",
                "resources": {"limits": {"nvidia.com/gpu": "8"}}}]},
            "status": {"phase": "Succeeded", "containerStatuses": [{"name": "trainer", "image": "reg.io/train:v1",
                "imageID": format!("reg.io/train@sha256:{hex}"), "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed", "message": "{\"metrics\":{}}",
                    "startedAt": "2026-11-22T01:00:00Z", "finishedAt": "2026-11-22T02:00:00Z"}}}]}
        }))
        .unwrap();
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "gpu-1", "labels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu.count": "8"}}
        }))
        .unwrap();
        let r = worker_record(&pod, Some(&node), Some("nvidia.com/gpu"));
        assert_eq!(
            (r.pod_name.as_str(), r.rank, r.node_name.as_deref()),
            ("bert-1", 1, Some("gpu-1"))
        );
        assert_eq!(
            (r.exit_code, r.reason.as_deref(), r.phase.as_deref()),
            (Some(0), Some("Completed"), Some("Succeeded"))
        );
        assert_eq!(r.containers[0].digest, Some(format!("sha256:{hex}")));
        assert_eq!(r.containers[0].image, "reg.io/train:v1");
        let acc = r.accelerator.unwrap();
        assert_eq!(
            (acc.product.as_deref(), acc.allocated),
            (Some("NVIDIA-H100-80GB-HBM3"), Some(8))
        );
        assert_eq!(r.report_digest, Some(sha256_digest(b"{\"metrics\":{}}")));
        assert!(r.started_at.is_some() && r.finished_at.is_some());
    }
}
