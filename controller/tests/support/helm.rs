//! Running the pinned helm (hack/tools) and kubectl on charts/provenant and config/default, and
//! the rendered objects as JSON values.

#![allow(dead_code)] // each test target uses its part

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Map, Value};

pub const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/provenant");
pub const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// Every non-default value at once: monitoring on, a forced PodDisruptionBudget, the
/// NetworkPolicy on, more replicas, a pinned image, other Secret names.
pub const FULL_VALUES: &str = r#"
image:
  repository: registry.example.com/provenant
  tag: v9.9.9
  digest: sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
  pullPolicy: Always
replicas: 3
resources:
  requests: {cpu: 200m, memory: 256Mi}
  limits: {memory: 1Gi}
signingKeySecret: prod-signing-key
revocationSelector: provenant.dev/install=prod
rbac:
  extraSecretNames: [spare-credentials]
monitoring:
  serviceMonitor: {enabled: true, labels: {release: kube-prometheus-stack}}
  prometheusRule: {enabled: true, labels: {release: kube-prometheus-stack}}
podDisruptionBudget:
  enabled: true
  maxUnavailable: 1
networkPolicy:
  enabled: true
  apiServer: {cidrs: [10.0.0.1/32, 172.18.0.2/32], ports: [443, 6443]}
  registries: {cidrs: [192.0.2.0/24], ports: [443, 5000]}
  metrics:
    from:
      - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}
config:
  provenance:
    enabled: true
    registry:
      credentialsSecret: prod-registry
    repositoryPolicy:
      - namespaces: [team-a]
        repositories: [registry.example.com/team-a]
        credentialsSecret: team-a-registry
"#;

/// Runs the pinned helm with `args`.
pub fn helm(args: &[&str]) -> Output {
    let helm = provenant_testbed::tools::path("helm").unwrap();
    Command::new(helm)
        .args(args)
        .output()
        .expect("running helm")
}

/// Writes `values` into `dir` and returns the file's path.
pub fn values_file(dir: &Path, values: &str) -> String {
    let path = dir.join("values.yaml");
    std::fs::write(&path, values).unwrap();
    path.to_str().unwrap().to_owned()
}

/// `helm template RELEASE charts/provenant -n NAMESPACE [-f values] [--set ...]`: the output, or
/// helm's stderr.
pub fn template(
    release: &str,
    namespace: &str,
    values: Option<&str>,
    extra: &[&str],
) -> Result<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["template", release, CHART, "--namespace", namespace];
    let file;
    if let Some(values) = values {
        file = values_file(dir.path(), values);
        args.extend(["--values", &file]);
    }
    args.extend(extra);
    let out = helm(&args);
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The objects of a multi-document YAML stream (documents that hold only comments are skipped).
pub fn objects(text: &str) -> Vec<Value> {
    let mut docs = vec![String::new()];
    for line in text.lines() {
        if line == "---" {
            docs.push(String::new());
        } else {
            let doc = docs.last_mut().unwrap();
            doc.push_str(line);
            doc.push('\n');
        }
    }
    docs.iter()
        .map(|doc| serde_saphyr::from_str::<Value>(doc).unwrap_or_else(|e| panic!("{e}: {doc}")))
        .filter(|v| !v.is_null())
        .collect()
}

/// `kubectl kustomize config/default` with the pinned kubectl.
pub fn kustomize_default() -> Vec<Value> {
    let kubectl = provenant_testbed::tools::path("kubectl").unwrap();
    let out = Command::new(kubectl)
        .args(["kustomize", &format!("{ROOT}/config/default")])
        .output()
        .expect("running kubectl kustomize");
    assert!(
        out.status.success(),
        "kubectl kustomize failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    objects(&String::from_utf8(out.stdout).unwrap())
}

pub fn find<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

pub fn one<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

/// Removes `key` from the map at `value` (if it is one); true if it was there.
pub fn remove(value: &mut Value, key: &str) -> bool {
    value
        .as_object_mut()
        .is_some_and(|m| m.remove(key).is_some())
}

/// Removes the map at `parent[key]` if it is empty.
pub fn drop_empty(parent: &mut Value, key: &str) {
    if parent[key].as_object().is_some_and(Map::is_empty) {
        remove(parent, key);
    }
}

pub fn key(o: &Value) -> String {
    format!(
        "{} {}/{}",
        o["kind"].as_str().unwrap_or("?"),
        o["metadata"]["namespace"].as_str().unwrap_or(""),
        o["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// The paths where `a` and `b` differ, each with both values.
pub fn differences(a: &Value, b: &Value, path: String, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                let (x, y) = (
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                );
                differences(x, y, format!("{path}/{k}"), out);
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                differences(x, y, format!("{path}/{i}"), out);
            }
        }
        // kustomize writes the CRDs' `minimum: 1.0` as 1: the same number.
        (Value::Number(x), Value::Number(y)) if x.as_f64() == y.as_f64() => {}
        _ if a != b => out.push(format!("{path}: chart {a}, expected {b}")),
        _ => {}
    }
}
