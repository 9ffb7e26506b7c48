//! kyverno-not-revoked.yaml through the Kyverno CLI on the real API server, for
//! admission_kyverno.rs: the workloads that serve the models, and what `kyverno apply --cluster`
//! decided for each.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use provenant_testbed::registry::ModelRef;
use provenant_testbed::tools;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const NOT_REVOKED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../config/policies/kyverno-not-revoked.yaml"
);

/// A model reference with a digest of its own (no registry: this policy reads only the cluster).
pub fn model(name: &str) -> ModelRef {
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(name.as_bytes())));
    let repository = format!("registry.example.com/models/{name}");
    ModelRef {
        registry: "registry.example.com".into(),
        reference: format!("{repository}@{digest}"),
        repo: format!("models/{name}"),
        repository,
        tag: "v1".into(),
        digest,
        manifest: Vec::new(),
        layers: Vec::new(),
    }
}

/// The run named `name` (its own UID), which did not read [`DATASET`]: its `imagenet-subset` has
/// another digest, in the spec and in what was recorded.
pub fn another_dataset(name: &str) -> impl FnOnce(&mut Value) {
    let name = name.to_string();
    move |run: &mut Value| {
        run["metadata"]["name"] = json!(name);
        run["metadata"]["uid"] = json!(format!("uid-{name}"));
        let other = format!("sha256:{}", "0".repeat(64));
        run["spec"]["datasets"][0]["digest"] = json!(other);
        run["status"]["materials"]["datasets"][0]["digest"] = json!(other);
    }
}

/// What each workload of the namespace came to: `Kind/name` → (`pass`, `fail` or `error`, the
/// message).
pub type Results = BTreeMap<String, (String, String)>;

/// `kyverno apply kyverno-not-revoked.yaml --cluster -n NAMESPACE`, as the user of `kubeconfig`:
/// the CLI lists the namespace's workloads and evaluates the rule's API call against the API
/// server, as Kyverno's background scan does (the admission webhook runs the same engine on the
/// object being admitted).
pub fn scan(kubeconfig: &Path, namespace: &str) -> Result<Results> {
    let out = Command::new(tools::path("kyverno")?)
        .args(["apply", NOT_REVOKED, "--cluster", "--kubeconfig"])
        .arg(kubeconfig)
        .args([
            "-n",
            namespace,
            "--policy-report",
            "--output-format",
            "json",
        ])
        .output()
        .context("running kyverno")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The report is the one JSON line; the deprecation warning is printed before it.
    let Some(report) = stdout.lines().find(|l| l.starts_with('{')) else {
        bail!(
            "kyverno apply --cluster printed no report: exit {:?}\n{stdout}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let report: Value = serde_json::from_str(report).context("kyverno's policy report")?;
    let mut results = Results::new();
    for result in report["results"].as_array().into_iter().flatten() {
        let resource = &result["resources"][0];
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        results.insert(
            format!("{}/{}", text(&resource["kind"]), text(&resource["name"])),
            (text(&result["result"]), text(&result["message"])),
        );
    }
    eprintln!("$ kyverno apply kyverno-not-revoked.yaml --cluster -n {namespace}\n{results:#?}");
    Ok(results)
}

/// The workloads: the base model and its fine-tune served four ways, the unrelated model one.
pub fn workloads(base: &ModelRef, ft: &ModelRef, other: &ModelRef) -> Value {
    let pod = |name: &str, spec: Value| json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec});
    let server = json!({"name": "server", "image": "busybox:1"});
    json!({"apiVersion": "v1", "kind": "List", "items": [
        pod("serve-base", json!({"containers": [{"name": "model", "image": base.reference}]})),
        // By tag and digest, in an init container.
        pod("warm-ft", json!({
            "initContainers": [{"name": "fetch", "image": format!("{}:v1@{}", ft.repository, ft.digest)}],
            "containers": [server],
        })),
        pod("mount-ft", json!({
            "volumes": [{"name": "model", "image": {"reference": ft.reference}}],
            "containers": [server],
        })),
        pod("serve-other", json!({"containers": [{"name": "model", "image": other.reference}, server]})),
        // Kyverno's autogen rule checks the pod template (no pod is created: 0 replicas).
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "serve-base"}, "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "serve-base"}},
            "template": {"metadata": {"labels": {"app": "serve-base"}},
                         "spec": {"containers": [{"name": "model", "image": base.reference}]}},
        }},
    ]})
}

/// Every workload admitted.
pub fn all_pass(results: &Results) -> bool {
    results.len() == 5 && results.values().all(|(r, _)| r == "pass")
}
