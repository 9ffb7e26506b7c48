//! Client-side admission: evaluates a TrainingRun against the generated CRD schema exactly as the
//! API server would (OpenAPI keywords, then CEL `x-kubernetes-validations`, transition rules with
//! the old object). `provenant attest` uses it where there is no API server, and the unit tests use
//! it to prove that the schema in `crds/` refuses each bad input with a message naming the field.

use std::fmt;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::{Value, json};

use super::TrainingRun;

/// One refused field: the path as `kubectl` prints it (`spec.datasets[0].digest`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// A TrainingRun the schema refuses, with every reason.
#[derive(Debug, thiserror::Error)]
#[error("invalid TrainingRun: {}", .errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct InvalidTrainingRun {
    pub errors: Vec<FieldError>,
}

/// The schema could not be compiled (a bug in the generated CRD, never user input).
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("the generated TrainingRun CRD has no openAPIV3Schema")]
    Missing,
    #[error("the generated TrainingRun schema does not compile: {0}")]
    OpenApi(String),
    #[error("the generated TrainingRun CEL rules do not compile: {0}")]
    Cel(String),
}

/// The TrainingRun admission checks, compiled once.
pub struct Admission {
    /// The CRD's structural schema as the API server sees it (used for CEL).
    structural: Value,
    cel: kube_cel::CompiledSchema,
    openapi: jsonschema::Validator,
}

impl Admission {
    /// Compile the checks from the schema `provenant crds` generates.
    pub fn new() -> Result<Self, SchemaError> {
        Self::for_crd(&TrainingRun::crd())
    }

    /// The checks of another CRD provenant generates (`MaterialRevocation::crd()`).
    pub fn for_crd(crd: &CustomResourceDefinition) -> Result<Self, SchemaError> {
        let schema = crd
            .spec
            .versions
            .first()
            .and_then(|v| v.schema.as_ref())
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .ok_or(SchemaError::Missing)?;
        let structural =
            serde_json::to_value(schema).map_err(|e| SchemaError::OpenApi(e.to_string()))?;
        Self::from_structural_schema(structural)
    }

    /// Compile the checks from a CRD version's `openAPIV3Schema` (as JSON).
    pub fn from_structural_schema(structural: Value) -> Result<Self, SchemaError> {
        let cel = kube_cel::compile_schema(&structural);
        if cel.has_errors() {
            let errors: Vec<String> = cel
                .compilation_errors()
                .iter()
                .map(|e| format!("{e:?}"))
                .collect();
            return Err(SchemaError::Cel(errors.join("; ")));
        }
        let mut json_schema = structural.clone();
        strict_json_schema(&mut json_schema, true);
        let openapi = jsonschema::validator_for(&json_schema)
            .map_err(|e| SchemaError::OpenApi(e.to_string()))?;
        Ok(Admission {
            structural,
            cel,
            openapi,
        })
    }

    /// The schema the checks were compiled from.
    pub fn schema(&self) -> &Value {
        &self.structural
    }

    /// Check a new object (`old` = None) or an update of `old`.
    pub fn check(&self, object: &Value, old: Option<&Value>) -> Result<(), InvalidTrainingRun> {
        let mut errors: Vec<FieldError> = self
            .openapi
            .iter_errors(object)
            .map(|e| FieldError {
                field: kubectl_path(e.instance_path().as_str()),
                message: e.to_string(),
            })
            .collect();
        // The API server skips CEL when the structural checks already failed for a field; we
        // report both, which only ever adds detail.
        if let Err(cel_errors) =
            kube_cel::Validator::new().validate_compiled(&self.cel, object, old)
        {
            for e in cel_errors.into_vec() {
                // Root rules report their `fieldPath` as written (`.spec`).
                let field = match e.field_path.trim_start_matches('.') {
                    "" => "<root>".to_string(),
                    path => path.to_string(),
                };
                errors.push(FieldError {
                    field,
                    message: e.message.clone(),
                });
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(InvalidTrainingRun { errors })
        }
    }

    /// Check a typed run (serialized as the API server would receive it).
    pub fn check_run(
        &self,
        run: &TrainingRun,
        old: Option<&TrainingRun>,
    ) -> Result<(), InvalidTrainingRun> {
        let to_value = |r: &TrainingRun| {
            serde_json::to_value(r).map_err(|e| InvalidTrainingRun {
                errors: vec![FieldError {
                    field: "<root>".into(),
                    message: format!("cannot serialize: {e}"),
                }],
            })
        };
        let object = to_value(run)?;
        let old = old.map(to_value).transpose()?;
        self.check(&object, old.as_ref())
    }
}

/// `/spec/datasets/0/digest` → `spec.datasets[0].digest`.
fn kubectl_path(pointer: &str) -> String {
    let mut out = String::new();
    for part in pointer.split('/').filter(|p| !p.is_empty()) {
        let part = part.replace("~1", "/").replace("~0", "~");
        if part.chars().all(|c| c.is_ascii_digit()) {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&part);
        }
    }
    if out.is_empty() { "<root>".into() } else { out }
}

/// Turn the CRD's OpenAPI v3 structural schema into an equivalent JSON Schema: `nullable` becomes a
/// `null` type, and objects with declared properties refuse unknown fields, as the API server does
/// with strict field validation (kubectl's default since Kubernetes 1.27).
fn strict_json_schema(node: &mut Value, root: bool) {
    let Value::Object(map) = node else { return };
    if map.remove("nullable") == Some(Value::Bool(true))
        && let Some(Value::String(t)) = map.get("type").cloned()
    {
        map.insert("type".into(), json!([t, "null"]));
    }
    let preserves = map.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if root && let Some(Value::Object(props)) = map.get_mut("properties") {
        // Every object carries these; the CRD schema leaves them to the API server.
        props.insert("apiVersion".into(), json!({"type": "string"}));
        props.insert("kind".into(), json!({"type": "string"}));
        props.insert("metadata".into(), json!({"type": "object"}));
    }
    if map.contains_key("properties") && !preserves && !map.contains_key("additionalProperties") {
        map.insert("additionalProperties".into(), Value::Bool(false));
    }
    if let Some(Value::Object(props)) = map.get_mut("properties") {
        for child in props.values_mut() {
            strict_json_schema(child, false);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = map.get_mut(key) {
            strict_json_schema(child, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_becomes_kubectl_path() {
        assert_eq!(
            kubectl_path("/spec/datasets/0/digest"),
            "spec.datasets[0].digest"
        );
        assert_eq!(kubectl_path(""), "<root>");
        assert_eq!(
            kubectl_path("/spec/nodeSelector/a~1b"),
            "spec.nodeSelector.a/b"
        );
    }
}
