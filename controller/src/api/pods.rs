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
}
