//! What a worker pod may do on its node. The training workload and anyone with `edit` in the
//! run's namespace are untrusted (docs/security.md), so a worker gets no more than Pod Security
//! `restricted` allows, except the user it runs as: `runAsNonRoot` only when the spec asks, since
//! most training images run as root and `baseline` namespaces accept them. Volumes are limited to
//! the configured allowlist ([`crate::config::WorkersConfig`]); hostPath is refused by the CRD
//! itself. Pure: the pods ([`super::plan`]) and the provenance (`internalParameters`) are built
//! from the same [`WorkerSecurity`].

use k8s_openapi::api::core::v1::{
    Capabilities, PodSecurityContext, SeccompProfile, SecurityContext, Volume,
};
use serde::Serialize;

use crate::api::TrainingRunSpec;
use crate::api::volumes::volume_type;
use crate::config::ControllerConfig;

/// The security settings applied to every worker of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerSecurity {
    /// `automountServiceAccountToken` of the pods (`spec.automountServiceAccountToken`).
    pub automount_service_account_token: bool,
    /// The training container's `securityContext`.
    pub container_security_context: SecurityContext,
    /// The pods' `securityContext`.
    pub pod_security_context: PodSecurityContext,
    /// The volume types the run uses (`spec.volumes`), sorted, once each.
    pub volume_types: Vec<String>,
}

/// A volume of the spec whose type the configuration does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "spec.volumes[{index}] ({name}): volume type {type_} is not allowed on this cluster (allowed: {allowed}); ask the cluster administrator or use another volume type"
)]
pub struct VolumeNotAllowed {
    pub index: usize,
    pub name: String,
    pub type_: String,
    pub allowed: String,
}

/// The security settings of `spec`'s workers.
pub fn worker_security(spec: &TrainingRunSpec) -> WorkerSecurity {
    let mut volume_types: Vec<String> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| volume_type(v).to_string())
        .collect();
    volume_types.sort();
    volume_types.dedup();
    WorkerSecurity {
        automount_service_account_token: spec.automount_service_account_token,
        container_security_context: SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                add: None,
                drop: Some(vec!["ALL".into()]),
            }),
            ..Default::default()
        },
        pod_security_context: PodSecurityContext {
            // Left unset (not false) unless asked: the image's own user decides, as without us.
            run_as_non_root: spec.run_as_non_root.then_some(true),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..Default::default()
        },
        volume_types,
    }
}

impl VolumeNotAllowed {
    /// Condition reason of a run refused for it.
    pub const REASON: &'static str = "VolumeTypeNotAllowed";
}

/// The first volume of `volumes` whose type is not in the configuration's allowlist.
pub fn check_volumes(
    volumes: Option<&Vec<Volume>>,
    config: &ControllerConfig,
) -> Result<(), VolumeNotAllowed> {
    let allowed = &config.workers.allowed_volume_types;
    for (index, volume) in volumes.into_iter().flatten().enumerate() {
        let type_ = volume_type(volume);
        if !allowed.iter().any(|a| a == type_) {
            return Err(VolumeNotAllowed {
                index,
                name: volume.name.clone(),
                type_: type_.to_string(),
                allowed: allowed.join(", "),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> TrainingRunSpec {
        let base = "image: reg.io/train@sha256:aa\nseed: 1\noutput: {repository: reg.io/m}\n";
        serde_saphyr::from_str(&format!("{base}{yaml}")).unwrap()
    }

    #[test]
    fn workers_get_no_token_no_privileges_and_the_runtime_seccomp_profile() {
        let s = worker_security(&spec(""));
        assert!(!s.automount_service_account_token);
        let c = &s.container_security_context;
        assert_eq!(c.allow_privilege_escalation, Some(false));
        assert_eq!(
            c.capabilities.as_ref().unwrap().drop,
            Some(vec!["ALL".to_string()])
        );
        assert_eq!(c.privileged, None);
        let p = &s.pod_security_context;
        assert_eq!(p.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
        assert_eq!(p.run_as_non_root, None);
        assert!(s.volume_types.is_empty());

        let s = worker_security(&spec(
            "automountServiceAccountToken: true\nrunAsNonRoot: true\nvolumes: [{name: a, emptyDir: {}}, {name: b, persistentVolumeClaim: {claimName: c}}, {name: c, emptyDir: {}}]\n",
        ));
        assert!(s.automount_service_account_token);
        assert_eq!(s.pod_security_context.run_as_non_root, Some(true));
        assert_eq!(s.volume_types, ["emptyDir", "persistentVolumeClaim"]);
    }

    #[test]
    fn volumes_outside_the_allowlist_are_named() {
        let config = ControllerConfig::defaults();
        let ok = spec(
            "volumes: [{name: data, persistentVolumeClaim: {claimName: c}}, {name: shm, emptyDir: {medium: Memory}}]\n",
        );
        assert_eq!(check_volumes(ok.volumes.as_ref(), &config), Ok(()));

        let bad = spec(
            "volumes: [{name: shm, emptyDir: {}}, {name: shared, nfs: {server: 10.0.0.1, path: /x}}]\n",
        );
        let err = check_volumes(bad.volumes.as_ref(), &config).unwrap_err();
        assert_eq!((err.index, err.type_.as_str()), (1, "nfs"));
        let message = err.to_string();
        assert!(
            message.starts_with("spec.volumes[1] (shared): volume type nfs is not allowed"),
            "{message}"
        );
        assert!(message.contains("persistentVolumeClaim"), "{message}");

        // The controller refuses hostPath too, should the CRD rule ever be bypassed.
        let host = spec("volumes: [{name: root, hostPath: {path: /}}]\n");
        let err = check_volumes(host.volumes.as_ref(), &config).unwrap_err();
        assert_eq!(err.type_, "hostPath");
    }
}
