//! `status.workerPods`: which pods are the run's workers. Labels and owner references can be
//! written by anyone with `edit` in the namespace; the UID the API server gave the pod the
//! controller created cannot.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A worker pod as the controller created it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedPod {
    /// `<run>-<rank>`.
    #[schemars(length(max = 63))]
    pub name: String,
    /// `metadata.uid` of the pod the controller's create returned.
    #[schemars(length(max = 36))]
    pub uid: String,
    /// `name=image` of each container (init containers first) as the API server created the pod,
    /// after admission: a pod's containers are immutable but for their image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(max = 600)))]
    pub images: Vec<String>,
}

impl CreatedPod {
    /// The record of `pod` as the API server returned it from the controller's create.
    pub fn of(pod: &k8s_openapi::api::core::v1::Pod) -> CreatedPod {
        CreatedPod {
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            images: images(pod),
        }
    }
}

/// `name=image` of each container of `pod`, init containers first.
pub fn images(pod: &k8s_openapi::api::core::v1::Pod) -> Vec<String> {
    let spec = pod.spec.as_ref();
    spec.and_then(|s| s.init_containers.as_ref())
        .into_iter()
        .flatten()
        .chain(spec.map(|s| &s.containers).into_iter().flatten())
        .map(|c| format!("{}={}", c.name, c.image.as_deref().unwrap_or_default()))
        .collect()
}
