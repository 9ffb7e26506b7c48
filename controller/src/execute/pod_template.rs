//! `spec.podTemplate` on the worker pods: labels and annotations added to provenant's own,
//! affinity and topology spread constraints as written. Reserved keys are refused here too
//! (the CRD refuses them first), so a run stored before the rule cannot set them either.

use k8s_openapi::api::core::v1::Pod;

use crate::api::{MetadataKind, PodTemplate, reserved_key};

use super::PlanError;

/// Refuses the first reserved label or annotation key of `template`, naming field and key.
pub fn check(template: Option<&PodTemplate>) -> Result<(), PlanError> {
    let Some(metadata) = template.and_then(|t| t.metadata.as_ref()) else {
        return Ok(());
    };
    for (kind, map) in [
        (MetadataKind::Labels, &metadata.labels),
        (MetadataKind::Annotations, &metadata.annotations),
    ] {
        for key in map.iter().flat_map(|m| m.keys()) {
            if let Some(reason) = reserved_key(kind, key) {
                return Err(PlanError::ReservedPodKey {
                    field: kind.field(),
                    key: key.clone(),
                    reason,
                });
            }
        }
    }
    Ok(())
}

/// Adds `template` to a worker pod provenant built. Provenant's labels stay as they are: after
/// [`check`], no template key collides with them.
pub fn apply(template: Option<&PodTemplate>, pod: &mut Pod) {
    let Some(template) = template else {
        return;
    };
    if let Some(metadata) = &template.metadata {
        for (given, into) in [
            (&metadata.labels, &mut pod.metadata.labels),
            (&metadata.annotations, &mut pod.metadata.annotations),
        ] {
            for (key, value) in given.iter().flatten() {
                into.get_or_insert_with(Default::default)
                    .entry(key.clone())
                    .or_insert_with(|| value.clone());
            }
        }
    }
    if let (Some(placement), Some(spec)) = (&template.spec, pod.spec.as_mut()) {
        spec.affinity = placement.affinity.clone();
        spec.topology_spread_constraints = placement.topology_spread_constraints.clone();
    }
}
