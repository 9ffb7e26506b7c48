//! Accelerator facts of a node, read from the labels GPU feature discovery (NVIDIA GPU Operator)
//! and GKE put on accelerator nodes. Only what the node says is recorded; nothing is inferred.

use std::collections::BTreeMap;

use crate::api::AcceleratorFacts;

/// Label prefixes and keys that describe accelerators; all of them are kept verbatim as evidence.
const EVIDENCE_PREFIXES: [&str; 5] = [
    "nvidia.com/",
    "cloud.google.com/gke-accelerator",
    "cloud.google.com/gke-tpu",
    "cloud.google.com/gke-gpu",
    "google.com/tpu",
];
const INSTANCE_TYPE: [&str; 2] = [
    "node.kubernetes.io/instance-type",
    "beta.kubernetes.io/instance-type",
];

/// Read the facts from a node's labels (and its capacity, for the count when no label says it).
/// `allocated` is the accelerator count the worker's pod requested.
pub fn facts_from_node(
    labels: &BTreeMap<String, String>,
    capacity: Option<&BTreeMap<String, String>>,
    allocated: Option<i64>,
) -> Option<AcceleratorFacts> {
    let get = |key: &str| labels.get(key).cloned();
    let first = |keys: &[&str]| keys.iter().find_map(|k| get(k));
    let version = |major: &str, minor: &str, rev: Option<&str>| {
        let major = get(major)?;
        let minor = get(minor)?;
        Some(match rev.and_then(get) {
            Some(rev) => format!("{major}.{minor}.{rev}"),
            None => format!("{major}.{minor}"),
        })
    };

    let evidence: BTreeMap<String, String> = labels
        .iter()
        .filter(|(k, _)| {
            EVIDENCE_PREFIXES.iter().any(|p| k.starts_with(p))
                || INSTANCE_TYPE.contains(&k.as_str())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();

    let capacity_count = capacity.and_then(|c| {
        ["nvidia.com/gpu", "google.com/tpu", "amd.com/gpu"]
            .iter()
            .find_map(|r| c.get(*r).filter(|q| q.as_str() != "0").cloned())
    });

    let facts = AcceleratorFacts {
        product: first(&[
            "nvidia.com/gpu.product",
            "cloud.google.com/gke-tpu-accelerator",
            "cloud.google.com/gke-accelerator",
        ]),
        count: first(&[
            "nvidia.com/gpu.count",
            "cloud.google.com/gke-accelerator-count",
        ])
        .or(capacity_count),
        memory: get("nvidia.com/gpu.memory"),
        driver_version: get("nvidia.com/cuda.driver-version.full")
            .or_else(|| {
                version(
                    "nvidia.com/cuda.driver.major",
                    "nvidia.com/cuda.driver.minor",
                    Some("nvidia.com/cuda.driver.rev"),
                )
            })
            .or_else(|| get("cloud.google.com/gke-gpu-driver-version")),
        cuda_version: get("nvidia.com/cuda.runtime-version.full").or_else(|| {
            version(
                "nvidia.com/cuda.runtime.major",
                "nvidia.com/cuda.runtime.minor",
                None,
            )
        }),
        tpu_topology: get("cloud.google.com/gke-tpu-topology"),
        instance_type: first(&INSTANCE_TYPE),
        allocated,
        labels: evidence,
    };
    let says_nothing =
        facts.product.is_none() && facts.count.is_none() && facts.allocated.is_none();
    (!says_nothing).then_some(facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn gpu_feature_discovery_labels() {
        let node = labels(&[
            ("nvidia.com/gpu.product", "NVIDIA-A100-SXM4-80GB"),
            ("nvidia.com/gpu.count", "8"),
            ("nvidia.com/gpu.memory", "81920"),
            ("nvidia.com/cuda.driver.major", "550"),
            ("nvidia.com/cuda.driver.minor", "54"),
            ("nvidia.com/cuda.driver.rev", "15"),
            ("nvidia.com/cuda.runtime.major", "12"),
            ("nvidia.com/cuda.runtime.minor", "4"),
            ("node.kubernetes.io/instance-type", "p4de.24xlarge"),
            ("kubernetes.io/hostname", "gpu-node-1"),
        ]);
        let f = facts_from_node(&node, None, Some(8)).unwrap();
        assert_eq!(f.product.as_deref(), Some("NVIDIA-A100-SXM4-80GB"));
        assert_eq!(f.count.as_deref(), Some("8"));
        assert_eq!(f.memory.as_deref(), Some("81920"));
        assert_eq!(f.driver_version.as_deref(), Some("550.54.15"));
        assert_eq!(f.cuda_version.as_deref(), Some("12.4"));
        assert_eq!(f.instance_type.as_deref(), Some("p4de.24xlarge"));
        assert_eq!(f.allocated, Some(8));
        assert_eq!(
            f.labels.len(),
            9,
            "every accelerator label is kept, unrelated ones are not"
        );
        assert!(!f.labels.contains_key("kubernetes.io/hostname"));
    }

    #[test]
    fn gke_tpu_labels() {
        let node = labels(&[
            (
                "cloud.google.com/gke-tpu-accelerator",
                "tpu-v5-lite-podslice",
            ),
            ("cloud.google.com/gke-tpu-topology", "4x4"),
            ("cloud.google.com/gke-accelerator-count", "4"),
            ("node.kubernetes.io/instance-type", "ct5lp-hightpu-4t"),
        ]);
        let f = facts_from_node(&node, None, Some(4)).unwrap();
        assert_eq!(f.product.as_deref(), Some("tpu-v5-lite-podslice"));
        assert_eq!(f.tpu_topology.as_deref(), Some("4x4"));
        assert_eq!(f.count.as_deref(), Some("4"));
        assert_eq!(f.driver_version, None);
    }

    #[test]
    fn gke_gpu_label_and_capacity_count() {
        let node = labels(&[("cloud.google.com/gke-accelerator", "nvidia-l4")]);
        let capacity = labels(&[("cpu", "8"), ("nvidia.com/gpu", "1")]);
        let f = facts_from_node(&node, Some(&capacity), Some(1)).unwrap();
        assert_eq!(f.product.as_deref(), Some("nvidia-l4"));
        assert_eq!(f.count.as_deref(), Some("1"));
    }

    #[test]
    fn cpu_node_says_nothing() {
        let node = labels(&[("node.kubernetes.io/instance-type", "n2-standard-8")]);
        assert_eq!(facts_from_node(&node, None, None), None);
    }
}
