//! The workload report: the JSON a worker writes to its termination message file
//! (`/dev/termination-log`, also in `PROVENANT_REPORT_PATH`). Documented in
//! docs/workload-report.md. The workload is not trusted: the report is size-capped, parsed
//! strictly, and everything in it is recorded as *reported*.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// Largest report accepted, in bytes. The kubelet itself truncates termination messages at 4096
/// bytes, so a larger one cannot have come through a real kubelet intact.
pub const MAX_REPORT_BYTES: usize = 4096;
/// At most this many entries per list / metrics map.
pub const MAX_ENTRIES: usize = 64;
const MAX_METRIC_NAME: usize = 128;

static DIGEST: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(crate::api::DIGEST_PATTERN).expect("static regex"));
static REPOSITORY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(crate::api::REPOSITORY_PATTERN).expect("static regex"));
static DATASET_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(crate::api::DNS_LABEL_PATTERN).expect("static regex"));

/// What a worker reported, after validation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadReport {
    /// Model artifacts the worker pushed.
    #[serde(default)]
    pub outputs: Vec<ReportedOutput>,
    /// Digests of the datasets the worker read.
    #[serde(default)]
    pub datasets: Vec<ReportedDataset>,
    /// Evaluation metrics, name → number.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
}

/// An output as reported: `<repository>[:tag]@sha256:<hex>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportedOutput {
    pub uri: String,
}

/// A dataset digest as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportedDataset {
    pub name: String,
    pub digest: String,
}

/// A parsed output reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRef {
    pub uri: String,
    pub repository: String,
    pub digest: String,
}

/// Why a report was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("report is {size} bytes, over the {max}-byte cap")]
    TooLarge { size: usize, max: usize },
    #[error("report is not valid JSON for the workload report format: {0}")]
    Malformed(String),
    #[error("{field}: {value:?} is not a sha256 digest (sha256:<64 lowercase hex>)")]
    BadDigest { field: String, value: String },
    #[error("{field}: {value:?} is not a repository@sha256:<hex> reference")]
    BadOutput { field: String, value: String },
    #[error("{field}: {value:?} is not a valid dataset name (DNS label)")]
    BadName { field: String, value: String },
    #[error("{field}: more than {max} entries")]
    TooMany { field: String, max: usize },
    #[error("{field}: output {uri:?} is outside spec.output.repository {repository:?}")]
    OutputOutsideRepository {
        field: String,
        uri: String,
        repository: String,
    },
}

impl ReportError {
    /// Condition reason (CamelCase, stable).
    pub fn reason(&self) -> &'static str {
        match self {
            ReportError::OutputOutsideRepository { .. } => "OutputOutsideRepository",
            _ => "InvalidWorkloadReport",
        }
    }
}

/// Parse and validate a termination message. An empty message means "no report".
/// `repository` is the run's `spec.output.repository`: outputs must be inside it.
pub fn parse(
    message: &str,
    repository: &str,
) -> Result<Option<(WorkloadReport, Vec<OutputRef>)>, ReportError> {
    if message.len() > MAX_REPORT_BYTES {
        return Err(ReportError::TooLarge {
            size: message.len(),
            max: MAX_REPORT_BYTES,
        });
    }
    if message.trim().is_empty() {
        return Ok(None);
    }
    let report: WorkloadReport =
        serde_json::from_str(message).map_err(|e| ReportError::Malformed(e.to_string()))?;
    for (field, len) in [
        ("outputs", report.outputs.len()),
        ("datasets", report.datasets.len()),
        ("metrics", report.metrics.len()),
    ] {
        if len > MAX_ENTRIES {
            return Err(ReportError::TooMany {
                field: field.into(),
                max: MAX_ENTRIES,
            });
        }
    }
    for (i, d) in report.datasets.iter().enumerate() {
        if !DATASET_NAME.is_match(&d.name) || d.name.len() > 63 {
            return Err(ReportError::BadName {
                field: format!("datasets[{i}].name"),
                value: d.name.clone(),
            });
        }
        if !DIGEST.is_match(&d.digest) {
            return Err(ReportError::BadDigest {
                field: format!("datasets[{i}].digest"),
                value: d.digest.clone(),
            });
        }
    }
    for name in report.metrics.keys() {
        if name.is_empty() || name.len() > MAX_METRIC_NAME {
            return Err(ReportError::Malformed(format!(
                "metrics: name {name:?} must be 1 to {MAX_METRIC_NAME} characters"
            )));
        }
    }
    let mut outputs = Vec::with_capacity(report.outputs.len());
    for (i, o) in report.outputs.iter().enumerate() {
        let field = format!("outputs[{i}].uri");
        let parsed = parse_output(&o.uri).ok_or_else(|| ReportError::BadOutput {
            field: field.clone(),
            value: o.uri.clone(),
        })?;
        if !inside(&parsed.repository, repository) {
            return Err(ReportError::OutputOutsideRepository {
                field,
                uri: o.uri.clone(),
                repository: repository.to_string(),
            });
        }
        outputs.push(parsed);
    }
    Ok(Some((report, outputs)))
}

/// `<repository>[:tag]@sha256:<hex>` → its parts; None when malformed or not pinned by digest.
pub fn parse_output(uri: &str) -> Option<OutputRef> {
    let (name, digest) = uri.split_once('@')?;
    if !DIGEST.is_match(digest) {
        return None;
    }
    // A tag is allowed but ignored: the digest is what was produced. The tag's ':' comes after
    // the last '/', a registry port's before it.
    let repository = match name.rfind(':') {
        Some(colon) if !name[colon..].contains('/') => &name[..colon],
        _ => name,
    };
    REPOSITORY.is_match(repository).then(|| OutputRef {
        uri: uri.to_string(),
        repository: repository.to_string(),
        digest: digest.to_string(),
    })
}

/// The run's repository itself, or a repository below it (`<repository>/<more>`).
pub fn inside(candidate: &str, repository: &str) -> bool {
    candidate == repository
        || candidate
            .strip_prefix(repository)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPO: &str = "registry.example.com/models/bert";
    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn full_report_parses() {
        let msg = format!(
            r#"{{"outputs":[{{"uri":"{REPO}:v3@{D}"}}],"datasets":[{{"name":"wiki","digest":"{D}"}}],"metrics":{{"accuracy":0.91,"loss":0.2}}}}"#
        );
        let (report, outputs) = parse(&msg, REPO).unwrap().unwrap();
        assert_eq!(outputs[0].repository, REPO);
        assert_eq!(outputs[0].digest, D);
        assert_eq!(report.datasets[0].name, "wiki");
        assert_eq!(report.metrics["accuracy"], 0.91);
    }

    #[test]
    fn empty_message_is_no_report() {
        assert_eq!(parse("", REPO).unwrap(), None);
        assert_eq!(parse("  \n", REPO).unwrap(), None);
    }

    #[test]
    fn sub_repositories_are_inside_and_ports_are_not_tags() {
        let uri = format!("{REPO}/checkpoints@{D}");
        assert!(
            parse(&format!(r#"{{"outputs":[{{"uri":"{uri}"}}]}}"#), REPO)
                .unwrap()
                .is_some()
        );
        let o = parse_output(&format!("localhost:5000/m@{D}")).unwrap();
        assert_eq!(o.repository, "localhost:5000/m");
    }

    #[test]
    fn each_bad_report_has_its_reason() {
        let cases = [
            (
                "this is not json".to_string(),
                "InvalidWorkloadReport",
                "not valid JSON",
            ),
            (
                "x".repeat(MAX_REPORT_BYTES + 1),
                "InvalidWorkloadReport",
                "over the 4096-byte cap",
            ),
            (
                r#"{"datasets":[{"name":"wiki","digest":"md5:abc"}]}"#.into(),
                "InvalidWorkloadReport",
                "datasets[0].digest",
            ),
            (
                format!(r#"{{"outputs":[{{"uri":"{REPO}:latest"}}]}}"#),
                "InvalidWorkloadReport",
                "outputs[0].uri",
            ),
            (
                format!(r#"{{"outputs":[{{"uri":"evil.example.com/x@{D}"}}]}}"#),
                "OutputOutsideRepository",
                "outside spec.output.repository",
            ),
            (
                format!(r#"{{"outputs":[{{"uri":"{REPO}-evil@{D}"}}]}}"#),
                "OutputOutsideRepository",
                "outside",
            ),
            (
                r#"{"metrics":{"acc":"high"}}"#.into(),
                "InvalidWorkloadReport",
                "not valid JSON",
            ),
            (
                r#"{"output":[]}"#.into(),
                "InvalidWorkloadReport",
                "unknown field `output`",
            ),
            (r#"[1,2]"#.into(), "InvalidWorkloadReport", "not valid JSON"),
        ];
        for (msg, reason, hint) in cases {
            let err = parse(&msg, REPO).unwrap_err();
            assert_eq!(err.reason(), reason, "{msg:.60}: {err}");
            assert!(err.to_string().contains(hint), "{msg:.60}: {err}");
        }
    }
}
