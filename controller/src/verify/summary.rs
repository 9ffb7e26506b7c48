//! The summary of a verified statement: what `provenant verify` prints about a model.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::datasets;

/// What a security engineer wants to read about a verified model.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub models: Vec<String>,
    pub build_type: String,
    pub builder: String,
    pub invocation: String,
    pub started_on: Option<String>,
    pub finished_on: Option<String>,
    /// name → (digest or "-", who vouched for it: `declared+reported`, ...)
    pub datasets: Vec<(String, String, String)>,
    pub images: Vec<String>,
    pub code: Option<String>,
    pub base_model: Option<String>,
    pub seed: Option<Value>,
    pub hyperparameters: Option<Value>,
    /// worker → accelerator description
    pub accelerators: Vec<(String, String)>,
    /// worker → metrics
    pub metrics: BTreeMap<String, Value>,
}

/// Pull the summary out of a statement (best effort: missing fields stay empty).
pub fn summarize(statement: &Value) -> Summary {
    let p = &statement["predicate"];
    let deps = p["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let digest = |d: &Value| -> String {
        d["digest"]
            .as_object()
            .and_then(|m| m.iter().next())
            .map(|(k, v)| format!("{k}:{}", v.as_str().unwrap_or("")))
            .unwrap_or_else(|| "-".into())
    };
    let mut s = Summary {
        models: statement["subject"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| format!("{}@{}", s["name"].as_str().unwrap_or("?"), digest(s)))
            .collect(),
        build_type: p["buildDefinition"]["buildType"]
            .as_str()
            .unwrap_or_default()
            .into(),
        builder: p["runDetails"]["builder"]["id"]
            .as_str()
            .unwrap_or_default()
            .into(),
        invocation: p["runDetails"]["metadata"]["invocationId"]
            .as_str()
            .unwrap_or_default()
            .into(),
        started_on: p["runDetails"]["metadata"]["startedOn"]
            .as_str()
            .map(Into::into),
        finished_on: p["runDetails"]["metadata"]["finishedOn"]
            .as_str()
            .map(Into::into),
        seed: p["buildDefinition"]["externalParameters"]
            .get("seed")
            .cloned(),
        hyperparameters: p["buildDefinition"]["externalParameters"]
            .get("hyperparameters")
            .cloned(),
        datasets: datasets::evidence(statement)
            .iter()
            .map(|d| {
                let digest = d.digest.clone().unwrap_or_else(|| "-".into());
                (d.name.clone(), digest, d.sources())
            })
            .collect(),
        ..Default::default()
    };
    for d in &deps {
        let name = d["name"].as_str().unwrap_or_default();
        if name == "image" {
            s.images.push(format!(
                "{} {}",
                d["uri"].as_str().unwrap_or("?"),
                digest(d)
            ));
        } else if name == "code" {
            s.code = Some(format!(
                "{} {}",
                d["uri"].as_str().unwrap_or("?"),
                digest(d)
            ));
        } else if name == "baseModel" {
            s.base_model = Some(format!(
                "{} {}",
                d["uri"].as_str().unwrap_or("?"),
                digest(d)
            ));
        }
    }
    for b in p["runDetails"]["byproducts"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let worker = b["name"]
            .as_str()
            .unwrap_or("?")
            .trim_start_matches("worker/")
            .to_string();
        let acc = &b["annotations"]["observed"]["accelerator"];
        let text = if acc.is_object() {
            let field = |k: &str| {
                acc[k]
                    .as_str()
                    .map(String::from)
                    .or_else(|| acc[k].as_i64().map(|n| n.to_string()))
            };
            let mut parts = vec![field("product").unwrap_or_else(|| "unknown accelerator".into())];
            if let Some(n) = field("allocated") {
                parts.push(format!("x{n}"));
            }
            if let Some(d) = field("driverVersion") {
                parts.push(format!("driver {d}"));
            }
            if let Some(c) = field("cudaVersion") {
                parts.push(format!("CUDA {c}"));
            }
            if let Some(t) = field("tpuTopology") {
                parts.push(format!("topology {t}"));
            }
            parts.join(", ")
        } else {
            "none (CPU)".into()
        };
        s.accelerators.push((worker.clone(), text));
        if let Some(m) = b["annotations"]["reported"]
            .get("metrics")
            .filter(|m| m.as_object().is_some_and(|o| !o.is_empty()))
        {
            s.metrics.insert(worker, m.clone());
        }
    }
    s
}
