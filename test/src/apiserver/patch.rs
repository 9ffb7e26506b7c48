//! PATCH bodies by content type.
//!
//! JSON merge patch (RFC 7386) and JSON patch (RFC 6902, including `test`) are exact.
//! Strategic merge patch is applied as a merge patch: lists are replaced, not merged by key,
//! and `$patch`/`$setElementOrder`/`$retainKeys` directives are dropped. Server-side apply is
//! also a merge patch of the applied configuration: there is no field ownership, so it never
//! reports SSA conflicts and never removes fields a manager stopped applying.

use serde_json::Value;

use super::errors::{ApiError, ApiResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchType {
    Merge,
    Json,
    Strategic,
    Apply,
}

impl PatchType {
    /// From a `Content-Type` (parameters such as `charset` ignored); 415 for anything else.
    pub fn from_content_type(ct: &str) -> ApiResult<Self> {
        let mime = ct.split(';').next().unwrap_or_default().trim();
        match mime {
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(PatchType::Apply),
            _ => Err(ApiError::unsupported_media_type(ct)),
        }
    }
}

/// A decoded patch body.
#[derive(Debug, Clone)]
pub(crate) enum Patch {
    Merge(Value),
    Json(json_patch::Patch),
    Apply(Value),
}

impl Patch {
    pub fn decode(ty: PatchType, body: &[u8]) -> ApiResult<Self> {
        match ty {
            PatchType::Merge | PatchType::Strategic => {
                let mut v: Value = serde_json::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
                if !v.is_object() {
                    return Err(ApiError::bad_request(
                        "error decoding patch: patch must be a JSON object",
                    ));
                }
                if ty == PatchType::Strategic {
                    strip_directives(&mut v);
                }
                Ok(Patch::Merge(v))
            }
            PatchType::Json => serde_json::from_slice::<json_patch::Patch>(body)
                .map(Patch::Json)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}"))),
            PatchType::Apply => {
                let v = decode_json_or_yaml(body)?;
                if !v.is_object() {
                    return Err(ApiError::bad_request(
                        "error decoding YAML: apply configuration must be an object",
                    ));
                }
                for field in ["apiVersion", "kind"] {
                    if v.get(field)
                        .and_then(Value::as_str)
                        .is_none_or(str::is_empty)
                    {
                        return Err(ApiError::bad_request(format!(
                            "error decoding apply configuration: {field} must be set"
                        )));
                    }
                }
                Ok(Patch::Apply(v))
            }
        }
    }

    /// Applies the patch to (a copy of) the current object.
    pub fn apply_to(&self, current: &Value) -> ApiResult<Value> {
        let mut doc = current.clone();
        match self {
            Patch::Merge(p) | Patch::Apply(p) => json_patch::merge(&mut doc, p),
            Patch::Json(p) => {
                for (i, op) in p.iter().enumerate() {
                    // The real server's JSON-patch library treats a missing path as `null` in
                    // `test` (kube's finalizer helper relies on it: `test /metadata/finalizers
                    // null` on an object without finalizers).
                    if let json_patch::PatchOperation::Test(t) = op
                        && t.value.is_null()
                        && doc.pointer(t.path.as_str()).is_none()
                    {
                        continue;
                    }
                    json_patch::patch(&mut doc, std::slice::from_ref(op)).map_err(|e| {
                        // the real server answers 422 for a failed `test` and for bad paths
                        ApiError::unprocessable(format!(
                            "the server rejected our request due to an error in our request: \
                             operation '/{i}' failed at path '{}': {}",
                            e.path, e.kind
                        ))
                    })?;
                }
            }
        }
        Ok(doc)
    }
}

/// Parses a request body that is JSON or YAML (YAML is a superset, but JSON is tried first
/// because it is the common case and faster).
pub(crate) fn decode_json_or_yaml(body: &[u8]) -> ApiResult<Value> {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        return Ok(v);
    }
    let text = std::str::from_utf8(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    serde_saphyr::from_str::<Value>(text)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
}

/// Drops strategic-merge directives (`$patch`, `$setElementOrder/...`, `$retainKeys`, ...),
/// which would otherwise be stored as fields.
fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|k, _| !k.starts_with('$'));
            map.values_mut().for_each(strip_directives);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_directives),
        _ => {}
    }
}
