//! `spec.podTemplate` and `spec.framework`: what a run adds to its worker pods beyond the
//! container (labels, annotations and placement that cluster add-ons read), and which
//! distributed-training environment provenant sets (execute/rendezvous.rs).
//!
//! Keys provenant, Kueue or the kubelet's security machinery read are refused twice: by CEL in the
//! CRD (the API server refuses the run) and by [`reserved_key`] when the pods are planned (a run
//! stored before the rule, `provenant validate`). A tenant with `edit` must not be able to change
//! what the recorded `workerSecurity` says through an annotation.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, TopologySpreadConstraint};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which distributed-training environment provenant gives every worker
/// (docs/trainingrun.md#framework-environment).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Framework {
    /// `MASTER_ADDR`, `MASTER_PORT`, `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `NNODES`, `NODE_RANK` and
    /// torchrun's `PET_*` defaults.
    #[default]
    Pytorch,
    /// `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`.
    Jax,
    /// Only provenant's own `PROVENANT_*` (and the TPU variables on multi-host TPU).
    None,
}

impl Framework {
    /// The name as written in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            Framework::Pytorch => "pytorch",
            Framework::Jax => "jax",
            Framework::None => "none",
        }
    }

    pub(crate) fn is_default(&self) -> bool {
        *self == Framework::default()
    }
}

/// The part of a pod template a run may set on its workers: metadata that cluster add-ons read,
/// and placement. Everything else of the pod comes from the rest of the spec.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplate {
    /// Labels and annotations added to every worker pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<PodTemplateMetadata>,
    /// Affinity and topology spread constraints of every worker pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<PodTemplatePlacement>,
}

// The CEL below only uses startsWith, `in` and one anchored regex over at most 64 keys, which the
// API server's cost estimator accepts (test/scenarios/admission.rs installs the CRD on it). Each
// condition is written once and used twice: the rule refuses any key it holds for, the message
// names the first such key. Keep them in step with `reserved_key`.
macro_rules! provenant_key {
    () => {
        "k.startsWith('provenant.dev/') || k.matches('^[^/]*[.]provenant[.]dev/')"
    };
}
macro_rules! kueue_key {
    () => {
        "k in ['kueue.x-k8s.io/queue-name', 'kueue.x-k8s.io/pod-group-name', 'kueue.x-k8s.io/pod-group-total-count', 'kueue.x-k8s.io/retriable-in-group', 'kueue.x-k8s.io/prebuilt-workload-name']"
    };
}
macro_rules! managed_by_key {
    () => {
        "k == 'app.kubernetes.io/managed-by'"
    };
}
macro_rules! security_key {
    () => {
        "k.startsWith('container.apparmor.security.beta.kubernetes.io/') || k.startsWith('seccomp.security.alpha.kubernetes.io/') || k.startsWith('container.seccomp.security.alpha.kubernetes.io/') || k.startsWith('io.kubernetes.cri-o.') || k.startsWith('io.kubernetes.cri.') || k.startsWith('io.katacontainers.')"
    };
}
/// `self.all(k, !(<condition>))`.
macro_rules! refuse {
    ($condition:expr) => {
        concat!("self.all(k, !(", $condition, "))")
    };
}
/// A message expression naming the first key `<condition>` holds for, then `$why`.
macro_rules! naming {
    ($condition:expr, $why:literal) => {
        Message::Expression(concat!("self.filter(k, ", $condition, ")[0] + ': ", $why, "'").into())
    };
}

/// Labels and annotations of the worker pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplateMetadata {
    /// Labels added to every worker pod (at most 64, values at most 63 characters). Keys under
    /// `provenant.dev/` (or a subdomain), `app.kubernetes.io/managed-by` and Kueue's
    /// `kueue.x-k8s.io/queue-name`, `pod-group-name`, `pod-group-total-count` are set by
    /// provenant and refused here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 64), transform = bounded_values::<63>)]
    #[x_kube(
        validation = Rule::new(refuse!(provenant_key!())).message(naming!(provenant_key!(), "keys under provenant.dev/ (or a subdomain of it) are set by provenant and cannot be given here")),
        validation = Rule::new(refuse!(kueue_key!())).message(naming!(kueue_key!(), "set by provenant from spec.queueName: use spec.queueName")),
        validation = Rule::new(refuse!(managed_by_key!())).message(naming!(managed_by_key!(), "set by provenant and cannot be given here")),
    )]
    pub labels: Option<BTreeMap<String, String>>,

    /// Annotations added to every worker pod (at most 64, values at most 8192 characters), e.g.
    /// `gke-gcsfuse/volumes: "true"` for GKE's Cloud Storage FUSE CSI driver. Refused: keys under
    /// `provenant.dev/`, Kueue's pod-group keys, and the annotations that change a container's
    /// isolation behind the recorded `workerSecurity` (AppArmor, seccomp, CRI-O, containerd CRI
    /// and Kata runtime annotations; docs/security.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 64), transform = bounded_values::<8192>)]
    #[x_kube(
        validation = Rule::new(refuse!(provenant_key!())).message(naming!(provenant_key!(), "keys under provenant.dev/ (or a subdomain of it) are set by provenant and cannot be given here")),
        validation = Rule::new(refuse!(kueue_key!())).message(naming!(kueue_key!(), "set by provenant from spec.queueName: use spec.queueName")),
        validation = Rule::new(refuse!(security_key!())).message(naming!(security_key!(), "AppArmor, seccomp and container runtime annotations would change the isolation of the workers behind the recorded workerSecurity and cannot be given here")),
    )]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// Placement of the worker pods, passed to every pod as written.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplatePlacement {
    /// Node affinity, pod affinity and pod anti-affinity of every worker. Required node affinity
    /// applies on top of the accelerator profile's node selector and `spec.nodeSelector` (a node
    /// must satisfy both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// Topology spread constraints of every worker (at most 16). Select the run's own workers
    /// with the label `provenant.dev/run: <run name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
}

/// Bounds the values of a string map (`additionalProperties.maxLength`).
fn bounded_values<const N: usize>(schema: &mut schemars::Schema) {
    if let Some(values) = schema
        .pointer_mut("/additionalProperties")
        .and_then(serde_json::Value::as_object_mut)
    {
        values.insert("maxLength".into(), N.into());
    }
}

/// Where a refused key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataKind {
    Labels,
    Annotations,
}

impl MetadataKind {
    /// The spec field.
    pub fn field(self) -> &'static str {
        match self {
            MetadataKind::Labels => "spec.podTemplate.metadata.labels",
            MetadataKind::Annotations => "spec.podTemplate.metadata.annotations",
        }
    }
}

/// Why `key` may not be given in podTemplate `kind`, if it may not (the CEL rules above, as Rust).
pub fn reserved_key(kind: MetadataKind, key: &str) -> Option<&'static str> {
    let prefix = key.split_once('/').map(|(p, _)| p);
    if prefix.is_some_and(|p| p == "provenant.dev" || p.ends_with(".provenant.dev")) {
        return Some("keys under provenant.dev/ (or a subdomain of it) are set by provenant");
    }
    if [
        "kueue.x-k8s.io/queue-name",
        "kueue.x-k8s.io/pod-group-name",
        "kueue.x-k8s.io/pod-group-total-count",
        "kueue.x-k8s.io/retriable-in-group",
        "kueue.x-k8s.io/prebuilt-workload-name",
    ]
    .contains(&key)
    {
        return Some("Kueue's pod-group keys are set by provenant: use spec.queueName");
    }
    match kind {
        MetadataKind::Labels if key == "app.kubernetes.io/managed-by" => {
            Some("app.kubernetes.io/managed-by is set by provenant")
        }
        MetadataKind::Annotations
            if [
                "container.apparmor.security.beta.kubernetes.io/",
                "seccomp.security.alpha.kubernetes.io/",
                "container.seccomp.security.alpha.kubernetes.io/",
                "io.kubernetes.cri-o.",
                "io.kubernetes.cri.",
                "io.katacontainers.",
            ]
            .iter()
            .any(|p| key.starts_with(p)) =>
        {
            Some(
                "it would change the workers' isolation behind the recorded workerSecurity (docs/security.md)",
            )
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_keys_match_the_cel_rules() {
        use MetadataKind::*;
        for (kind, key) in [
            (Labels, "provenant.dev/run"),
            (Annotations, "provenant.dev/anything"),
            (Labels, "x.provenant.dev/y"),
            (Labels, "kueue.x-k8s.io/queue-name"),
            (Annotations, "kueue.x-k8s.io/pod-group-total-count"),
            (Labels, "app.kubernetes.io/managed-by"),
            (
                Annotations,
                "container.apparmor.security.beta.kubernetes.io/trainer",
            ),
            (Annotations, "seccomp.security.alpha.kubernetes.io/pod"),
            (Annotations, "io.kubernetes.cri-o.Devices"),
        ] {
            assert!(reserved_key(kind, key).is_some(), "{key} accepted");
        }
        for (kind, key) in [
            (Annotations, "gke-gcsfuse/volumes"),
            (Labels, "notprovenant.dev/x"),
            (Labels, "team"),
            (Labels, "provenant.dev.example.com/x"),
            (Annotations, "app.kubernetes.io/managed-by"),
        ] {
            assert_eq!(reserved_key(kind, key), None, "{key} refused");
        }
    }
}
