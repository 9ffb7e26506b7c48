//! Placement: where a run's workers go and what they request, resolved from its accelerator
//! request and the accelerator profiles of the controller's configuration. Used to build the pods
//! and recorded in the provenance (the scheduling constraints applied).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;

use crate::api::AcceleratorRequest;
use crate::config::ControllerConfig;

/// Where a run's workers go and what they request, resolved from its accelerator request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Placement {
    /// `(resource name, count per worker)`; None for CPU runs.
    pub resource: Option<(String, i32)>,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
}

/// A run's accelerator request does not fit the configured profiles.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcceleratorError {
    #[error("spec.accelerator.type: unknown accelerator type {requested:?}; this controller knows: {}", known.join(", "))]
    Unknown {
        requested: String,
        known: Vec<String>,
    },
    #[error(
        "spec.accelerator.topology: accelerator type {requested:?} needs a topology (e.g. 2x4), it selects nodes by {label}"
    )]
    TopologyRequired { requested: String, label: String },
    #[error(
        "spec.accelerator.topology: accelerator type {requested:?} has no topology; remove the field"
    )]
    TopologyNotSupported { requested: String },
}

/// Resolve a run's accelerator request (None = CPU) against the controller's accelerator
/// profiles.
pub fn placement(
    config: &ControllerConfig,
    request: Option<&AcceleratorRequest>,
) -> Result<Placement, AcceleratorError> {
    let Some(request) = request else {
        return Ok(Placement::default());
    };
    let profile = config
        .accelerator_profiles
        .get(&request.type_)
        .ok_or_else(|| AcceleratorError::Unknown {
            requested: request.type_.clone(),
            known: config.accelerator_profiles.keys().cloned().collect(),
        })?;
    let mut node_selector = profile.node_selector.clone();
    match (&profile.topology_label, &request.topology) {
        (Some(label), Some(topology)) => {
            node_selector.insert(label.clone(), topology.clone());
        }
        (Some(label), None) => {
            return Err(AcceleratorError::TopologyRequired {
                requested: request.type_.clone(),
                label: label.clone(),
            });
        }
        (None, Some(_)) => {
            return Err(AcceleratorError::TopologyNotSupported {
                requested: request.type_.clone(),
            });
        }
        (None, None) => {}
    }
    Ok(Placement {
        resource: Some((profile.resource_name.clone(), request.count)),
        node_selector,
        tolerations: profile.tolerations.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(t: &str, count: i32, topology: Option<&str>) -> AcceleratorRequest {
        AcceleratorRequest {
            type_: t.into(),
            count,
            topology: topology.map(Into::into),
        }
    }

    #[test]
    fn defaults_cover_nvidia_gke_gpu_and_gke_tpu_labels() {
        let config = ControllerConfig::defaults();
        let a100 = placement(&config, Some(&request("nvidia-a100-80gb", 2, None))).unwrap();
        assert_eq!(a100.resource, Some(("nvidia.com/gpu".into(), 2)));
        assert_eq!(
            a100.node_selector["nvidia.com/gpu.product"],
            "NVIDIA-A100-SXM4-80GB"
        );
        assert_eq!(a100.tolerations[0].key.as_deref(), Some("nvidia.com/gpu"));

        let l4 = placement(&config, Some(&request("gke-nvidia-l4", 1, None))).unwrap();
        assert_eq!(
            l4.node_selector["cloud.google.com/gke-accelerator"],
            "nvidia-l4"
        );

        let tpu = placement(&config, Some(&request("tpu-v5e", 4, Some("4x4")))).unwrap();
        assert_eq!(tpu.resource, Some(("google.com/tpu".into(), 4)));
        assert_eq!(
            tpu.node_selector["cloud.google.com/gke-tpu-accelerator"],
            "tpu-v5-lite-podslice"
        );
        assert_eq!(
            tpu.node_selector["cloud.google.com/gke-tpu-topology"],
            "4x4"
        );
    }

    #[test]
    fn cpu_runs_have_no_accelerator_placement() {
        assert_eq!(
            placement(&ControllerConfig::defaults(), None).unwrap(),
            Placement::default()
        );
    }

    #[test]
    fn unknown_type_and_topology_mismatches_name_the_field() {
        let config = ControllerConfig::defaults();
        let err = placement(&config, Some(&request("nvidia-b300", 1, None))).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("spec.accelerator.type: unknown accelerator type \"nvidia-b300\"")
        );
        assert!(err.to_string().contains("nvidia-l4"), "{err}");
        let err = placement(&config, Some(&request("tpu-v5e", 4, None))).unwrap_err();
        assert!(
            matches!(err, AcceleratorError::TopologyRequired { .. }),
            "{err}"
        );
        let err = placement(&config, Some(&request("nvidia-l4", 1, Some("2x2")))).unwrap_err();
        assert!(
            matches!(err, AcceleratorError::TopologyNotSupported { .. }),
            "{err}"
        );
    }
}
