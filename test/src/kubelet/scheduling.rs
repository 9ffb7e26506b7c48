//! Pure scheduling logic of the simulator: quantities, node selectors and required node affinity,
//! taints and tolerations, resource fit. No I/O; unit-tested below.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    NodeSelectorRequirement, NodeSelectorTerm, Pod, ResourceRequirements, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Resource amounts in milli-units (`cpu: "500m"` → 500, `nvidia.com/gpu: 4` → 4000).
pub type Resources = BTreeMap<String, i128>;

/// Parses a Kubernetes quantity (`4`, `500m`, `16Gi`, `1.5`, `2e3`, `1k`, ...) into milli-units,
/// rounded up. `None` when it does not parse or overflows.
pub fn parse_quantity(s: &str) -> Option<i128> {
    let s = s.trim();
    let (negative, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(num_end);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return None;
    }
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    let digits = format!("{int_part}{frac_part}");
    if digits.len() > 30 {
        return None;
    }
    let mantissa: i128 = digits.parse().ok()?;
    // value = mantissa * num / den, den includes 10^frac_len.
    let pow10 = |e: u32| 10i128.checked_pow(e);
    let (mut num, mut den): (i128, i128) = match suffix {
        "" => (1, 1),
        "n" => (1, 1_000_000_000),
        "u" => (1, 1_000_000),
        "m" => (1, 1_000),
        "k" => (1_000, 1),
        "M" => (1_000_000, 1),
        "G" => (pow10(9)?, 1),
        "T" => (pow10(12)?, 1),
        "P" => (pow10(15)?, 1),
        "E" => (pow10(18)?, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        exp if exp.starts_with(['e', 'E']) => {
            let e: i32 = exp[1..].parse().ok()?;
            if e >= 0 {
                (pow10(e.unsigned_abs())?, 1)
            } else {
                (1, pow10(e.unsigned_abs())?)
            }
        }
        _ => return None,
    };
    den = den.checked_mul(pow10(frac_part.len() as u32)?)?;
    num = num.checked_mul(1000)?;
    let total = mantissa.checked_mul(num)?;
    let milli = (total + den - 1) / den; // ceil, total >= 0
    Some(if negative { -milli } else { milli })
}

fn add_quantities(into: &mut Resources, map: Option<&BTreeMap<String, Quantity>>) {
    for (k, q) in map.into_iter().flatten() {
        if let Some(v) = parse_quantity(&q.0) {
            *into.entry(k.clone()).or_default() += v;
        }
    }
}

/// Requests of one container: `requests`, falling back to `limits` per resource (the API server
/// defaults requests to limits, in particular for extended resources that only allow limits).
fn container_requests(r: Option<&ResourceRequirements>) -> Resources {
    let mut out = Resources::new();
    if let Some(r) = r {
        add_quantities(&mut out, r.limits.as_ref());
        for (k, q) in r.requests.iter().flatten() {
            if let Some(v) = parse_quantity(&q.0) {
                out.insert(k.clone(), v);
            }
        }
    }
    out
}

/// Effective requests of a pod, as the scheduler computes them: sum over containers, max with
/// each init container, plus overhead; pod-level `resources` override per resource. Always
/// includes `pods: 1`.
pub fn pod_requests(pod: &Pod) -> Resources {
    let mut total = Resources::new();
    let Some(spec) = &pod.spec else {
        total.insert("pods".into(), 1000);
        return total;
    };
    for c in &spec.containers {
        for (k, v) in container_requests(c.resources.as_ref()) {
            *total.entry(k).or_default() += v;
        }
    }
    for c in spec.init_containers.iter().flatten() {
        for (k, v) in container_requests(c.resources.as_ref()) {
            let e = total.entry(k).or_default();
            *e = (*e).max(v);
        }
    }
    if let Some(pod_level) = &spec.resources {
        for (k, v) in container_requests(Some(pod_level)) {
            total.insert(k, v);
        }
    }
    add_quantities(&mut total, spec.overhead.as_ref());
    total.insert("pods".into(), 1000);
    total
}

/// Adds `b` to `a`.
pub fn add(a: &mut Resources, b: &Resources) {
    for (k, v) in b {
        *a.entry(k.clone()).or_default() += v;
    }
}

/// A node as the scheduler sees it.
#[derive(Debug, Clone)]
pub struct NodeView<'a> {
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub taints: &'a [Taint],
    pub allocatable: &'a Resources,
}

fn requirement_matches(req: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = req.values.as_deref().unwrap_or_default();
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => !value.is_some_and(|v| values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        op @ ("Gt" | "Lt") => {
            let (Some(v), [bound]) = (value, values) else {
                return false;
            };
            match (v.parse::<i64>(), bound.parse::<i64>()) {
                (Ok(v), Ok(b)) => {
                    if op == "Gt" {
                        v > b
                    } else {
                        v < b
                    }
                }
                _ => false,
            }
        }
        _ => false,
    }
}

fn term_matches(term: &NodeSelectorTerm, node: &NodeView<'_>) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false; // an empty term matches no objects
    }
    exprs
        .iter()
        .all(|r| requirement_matches(r, node.labels.get(&r.key).map(String::as_str)))
        && fields
            .iter()
            .all(|r| r.key == "metadata.name" && requirement_matches(r, Some(node.name)))
}

/// Whether the node satisfies the pod's `nodeSelector` and required node affinity.
pub fn node_matches(pod: &Pod, node: &NodeView<'_>) -> bool {
    let Some(spec) = &pod.spec else { return true };
    for (k, v) in spec.node_selector.iter().flatten() {
        if node.labels.get(k) != Some(v) {
            return false;
        }
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    match required {
        None => true,
        Some(sel) => sel
            .node_selector_terms
            .iter()
            .any(|t| term_matches(t, node)),
    }
}

/// Kubernetes' `Toleration.ToleratesTaint`.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = t.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    if let Some(key) = t.key.as_deref().filter(|k| !k.is_empty())
        && key != taint.key
    {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

/// The first `NoSchedule`/`NoExecute` taint of the node that the pod does not tolerate.
pub fn untolerated_taint<'a>(pod: &Pod, taints: &'a [Taint]) -> Option<&'a Taint> {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default();
    taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .find(|taint| !tolerations.iter().any(|t| tolerates(t, taint)))
}

/// Why a pod does not fit a node, in the scheduler's words.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Misfit {
    Selector,
    Taint(String),
    Insufficient(String),
}

impl std::fmt::Display for Misfit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Misfit::Selector => write!(f, "node(s) didn't match Pod's node affinity/selector"),
            Misfit::Taint(t) => write!(f, "node(s) had untolerated taint {{{t}}}"),
            Misfit::Insufficient(r) if r == "pods" => write!(f, "Too many pods"),
            Misfit::Insufficient(r) => write!(f, "Insufficient {r}"),
        }
    }
}

/// Checks one node: selector/affinity, taints, then free capacity (`allocatable - used`) for
/// every resource the pod requests.
pub fn check_node(
    pod: &Pod,
    requests: &Resources,
    node: &NodeView<'_>,
    used: &Resources,
) -> Result<(), Misfit> {
    if !node_matches(pod, node) {
        return Err(Misfit::Selector);
    }
    if let Some(t) = untolerated_taint(pod, node.taints) {
        let value = t.value.as_deref().unwrap_or("");
        return Err(Misfit::Taint(if value.is_empty() {
            t.key.clone()
        } else {
            format!("{}: {value}", t.key)
        }));
    }
    for (resource, want) in requests {
        if *want <= 0 {
            continue;
        }
        let have = node.allocatable.get(resource).copied().unwrap_or(0);
        let taken = used.get(resource).copied().unwrap_or(0);
        if taken + want > have {
            return Err(Misfit::Insufficient(resource.clone()));
        }
    }
    Ok(())
}

/// Picks the first node (in scenario order) the pod fits on, or the scheduler-style message
/// (`0/3 nodes are available: 1 Insufficient nvidia.com/gpu, 2 node(s) didn't match ...`).
pub fn pick_node(
    pod: &Pod,
    requests: &Resources,
    nodes: &[NodeView<'_>],
    used: &[Resources],
) -> Result<usize, String> {
    let mut reasons: BTreeMap<Misfit, usize> = BTreeMap::new();
    for (i, node) in nodes.iter().enumerate() {
        let empty = Resources::new();
        match check_node(pod, requests, node, used.get(i).unwrap_or(&empty)) {
            Ok(()) => return Ok(i),
            Err(m) => *reasons.entry(m).or_default() += 1,
        }
    }
    let detail = reasons
        .iter()
        .map(|(m, n)| format!("{n} {m}"))
        .collect::<Vec<_>>()
        .join(", ");
    Err(format!("0/{} nodes are available: {detail}.", nodes.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": spec,
        }))
        .expect("valid pod")
    }

    fn gpu_pod(gpus: u32) -> Pod {
        pod(json!({"containers": [{"name": "c", "image": "i",
            "resources": {"limits": {"nvidia.com/gpu": gpus.to_string()}}}]}))
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn res(pairs: &[(&str, &str)]) -> Resources {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), parse_quantity(v).expect("quantity")))
            .collect()
    }

    fn taint(key: &str, value: Option<&str>, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: value.map(Into::into),
            effect: effect.into(),
            time_added: None,
        }
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("4"), Some(4000));
        assert_eq!(parse_quantity("500m"), Some(500));
        assert_eq!(parse_quantity("1.5"), Some(1500));
        assert_eq!(parse_quantity("0.0001"), Some(1), "rounded up");
        assert_eq!(parse_quantity("1Ki"), Some(1024 * 1000));
        assert_eq!(parse_quantity("16Gi"), Some(16 * (1i128 << 30) * 1000));
        assert_eq!(parse_quantity("2k"), Some(2_000_000));
        assert_eq!(parse_quantity("1e3"), Some(1_000_000));
        assert_eq!(parse_quantity("1E-3"), Some(1));
        assert_eq!(parse_quantity("128974848"), Some(128_974_848_000));
        assert_eq!(parse_quantity("-1"), Some(-1000));
        for bad in ["", "abc", "1.2.3", "5X", ".", "1ii"] {
            assert_eq!(parse_quantity(bad), None, "{bad}");
        }
    }

    #[test]
    fn requests_sum_containers_max_init_and_default_to_limits() {
        let p = pod(json!({
            "containers": [
                {"name": "a", "image": "i", "resources": {"requests": {"cpu": "1"}, "limits": {"cpu": "2", "nvidia.com/gpu": "2"}}},
                {"name": "b", "image": "i", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}},
            ],
            "initContainers": [{"name": "init", "image": "i", "resources": {"requests": {"cpu": "4"}}}],
            "overhead": {"memory": "1Mi"},
        }));
        let r = pod_requests(&p);
        assert_eq!(r["cpu"], 4000);
        assert_eq!(r["nvidia.com/gpu"], 2000);
        assert_eq!(r["memory"], ((1i128 << 30) + (1 << 20)) * 1000);
        assert_eq!(r["pods"], 1000);
    }

    #[test]
    fn node_selector_and_affinity() {
        let l = labels(&[
            ("nvidia.com/gpu.product", "A100"),
            ("zone", "a"),
            ("gpus", "8"),
        ]);
        let node = NodeView {
            name: "n1",
            labels: &l,
            taints: &[],
            allocatable: &Resources::new(),
        };
        assert!(node_matches(&pod(json!({"containers": []})), &node));
        assert!(node_matches(
            &pod(json!({"containers": [], "nodeSelector": {"zone": "a"}})),
            &node
        ));
        assert!(!node_matches(
            &pod(json!({"containers": [], "nodeSelector": {"zone": "b"}})),
            &node
        ));
        assert!(!node_matches(
            &pod(json!({"containers": [], "nodeSelector": {"missing": "x"}})),
            &node
        ));

        let aff = |terms: serde_json::Value| {
            pod(json!({"containers": [], "affinity": {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}}))
        };
        let expr = |key: &str, op: &str, values: &[&str]| json!({"key": key, "operator": op, "values": values});
        assert!(node_matches(
            &aff(
                json!([{"matchExpressions": [expr("nvidia.com/gpu.product", "In", &["H100", "A100"])]}])
            ),
            &node
        ));
        assert!(!node_matches(
            &aff(
                json!([{"matchExpressions": [expr("nvidia.com/gpu.product", "NotIn", &["A100"])]}])
            ),
            &node
        ));
        assert!(node_matches(
            &aff(json!([{"matchExpressions": [expr("nope", "NotIn", &["A100"])]}])),
            &node
        ));
        assert!(node_matches(
            &aff(json!([{"matchExpressions": [expr("zone", "Exists", &[])]}])),
            &node
        ));
        assert!(!node_matches(
            &aff(json!([{"matchExpressions": [expr("zone", "DoesNotExist", &[])]}])),
            &node
        ));
        assert!(node_matches(
            &aff(json!([{"matchExpressions": [expr("gpus", "Gt", &["4"])]}])),
            &node
        ));
        assert!(!node_matches(
            &aff(json!([{"matchExpressions": [expr("gpus", "Lt", &["4"])]}])),
            &node
        ));
        // terms are ORed, expressions ANDed
        assert!(node_matches(
            &aff(json!([
                {"matchExpressions": [expr("zone", "In", &["b"])]},
                {"matchExpressions": [expr("zone", "In", &["a"]), expr("gpus", "Exists", &[])]},
            ])),
            &node
        ));
        assert!(!node_matches(
            &aff(json!([
                {"matchExpressions": [expr("zone", "In", &["a"]), expr("gpus", "DoesNotExist", &[])]},
            ])),
            &node
        ));
        assert!(node_matches(
            &aff(json!([{"matchFields": [expr("metadata.name", "In", &["n1"])]}])),
            &node
        ));
        assert!(
            !node_matches(&aff(json!([{}])), &node),
            "empty term matches nothing"
        );
        assert!(
            !node_matches(&aff(json!([])), &node),
            "no terms match nothing"
        );
    }

    #[test]
    fn taints_and_tolerations() {
        let gpu = taint("nvidia.com/gpu", Some("present"), "NoSchedule");
        let tol =
            |v: serde_json::Value| -> Toleration { serde_json::from_value(v).expect("toleration") };
        assert!(tolerates(
            &tol(json!({"key": "nvidia.com/gpu", "operator": "Exists"})),
            &gpu
        ));
        assert!(tolerates(
            &tol(json!({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"})),
            &gpu
        ));
        assert!(!tolerates(
            &tol(json!({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute"})),
            &gpu
        ));
        assert!(tolerates(
            &tol(json!({"key": "nvidia.com/gpu", "operator": "Equal", "value": "present"})),
            &gpu
        ));
        assert!(
            tolerates(
                &tol(json!({"key": "nvidia.com/gpu", "value": "present"})),
                &gpu
            ),
            "default operator is Equal"
        );
        assert!(!tolerates(
            &tol(json!({"key": "nvidia.com/gpu", "operator": "Equal", "value": "other"})),
            &gpu
        ));
        assert!(!tolerates(
            &tol(json!({"key": "other", "operator": "Exists"})),
            &gpu
        ));
        assert!(
            tolerates(&tol(json!({"operator": "Exists"})), &gpu),
            "empty key + Exists tolerates all"
        );

        let taints = [
            taint("soft", None, "PreferNoSchedule"),
            gpu.clone(),
            taint("tpu", None, "NoExecute"),
        ];
        let p = |tols: serde_json::Value| pod(json!({"containers": [], "tolerations": tols}));
        assert_eq!(
            untolerated_taint(&p(json!([])), &taints).map(|t| t.key.as_str()),
            Some("nvidia.com/gpu")
        );
        assert_eq!(
            untolerated_taint(
                &p(json!([{"key": "nvidia.com/gpu", "operator": "Exists"}])),
                &taints
            )
            .map(|t| t.key.as_str()),
            Some("tpu")
        );
        assert!(untolerated_taint(&p(json!([{"operator": "Exists"}])), &taints).is_none());
        assert!(
            untolerated_taint(&p(json!([])), &taints[..1]).is_none(),
            "PreferNoSchedule is ignored"
        );
    }

    #[test]
    fn capacity_and_messages() {
        let gpu_labels = labels(&[("pool", "gpu")]);
        let cpu_labels = labels(&[("pool", "cpu")]);
        let gpu_alloc = res(&[("cpu", "32"), ("pods", "110"), ("nvidia.com/gpu", "4")]);
        let cpu_alloc = res(&[("cpu", "32"), ("pods", "110")]);
        let nodes = [
            NodeView {
                name: "cpu",
                labels: &cpu_labels,
                taints: &[],
                allocatable: &cpu_alloc,
            },
            NodeView {
                name: "gpu-0",
                labels: &gpu_labels,
                taints: &[],
                allocatable: &gpu_alloc,
            },
            NodeView {
                name: "gpu-1",
                labels: &gpu_labels,
                taints: &[],
                allocatable: &gpu_alloc,
            },
        ];
        let p = gpu_pod(4);
        let req = pod_requests(&p);
        let mut used = vec![Resources::new(); 3];
        let first = pick_node(&p, &req, &nodes, &used).expect("fits");
        assert_eq!(first, 1);
        add(&mut used[first], &req);
        let second = pick_node(&p, &req, &nodes, &used).expect("fits");
        assert_eq!(second, 2);
        add(&mut used[second], &req);
        let err = pick_node(&p, &req, &nodes, &used).expect_err("full");
        assert_eq!(
            err,
            "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
        );

        let small = gpu_pod(1);
        let sel = pod(json!({"containers": [], "nodeSelector": {"pool": "tpu"}}));
        assert_eq!(
            pick_node(&sel, &pod_requests(&sel), &nodes, &used).expect_err("no match"),
            "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."
        );
        let tainted = [taint("nvidia.com/gpu", Some("present"), "NoSchedule")];
        let tainted_nodes = [NodeView {
            taints: &tainted,
            ..nodes[1].clone()
        }];
        assert_eq!(
            pick_node(
                &small,
                &pod_requests(&small),
                &tainted_nodes,
                &[Resources::new()]
            )
            .expect_err("taint"),
            "0/1 nodes are available: 1 node(s) had untolerated taint {nvidia.com/gpu: present}."
        );
        // CPU-only pods fit anywhere with room.
        let cpu = pod(
            json!({"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "31"}}}]}),
        );
        assert_eq!(pick_node(&cpu, &pod_requests(&cpu), &nodes, &used), Ok(0));
        let huge = pod(
            json!({"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "33"}}}]}),
        );
        assert!(
            pick_node(&huge, &pod_requests(&huge), &nodes, &used)
                .unwrap_err()
                .contains("3 Insufficient cpu")
        );
    }
}
