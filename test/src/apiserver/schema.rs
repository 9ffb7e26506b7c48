//! What the real server does to a custom resource with its structural `openAPIV3Schema` before
//! storing it, in one walk: prune unknown fields (honouring `x-kubernetes-preserve-unknown-fields`,
//! `additionalProperties` and `x-kubernetes-embedded-resource`), drop `null`s of non-nullable
//! fields, apply `default`s, then check `type`, `required` and `enum`.
//!
//! Pruning matters most: a controller that writes a status field its CRD does not declare must see
//! it vanish here exactly as in a cluster. The checks are the cheap, common part of OpenAPI
//! validation only; formats, patterns, bounds and CEL rules are not evaluated.

use serde_json::{Map, Value};

use super::errors::Cause;

/// `metadata` fields of `ObjectMeta`; anything else in `metadata` is dropped, as the real
/// server's decoder does.
pub(crate) const OBJECT_META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

pub(crate) fn prune_metadata(meta: &mut Map<String, Value>) {
    meta.retain(|k, _| OBJECT_META_FIELDS.contains(&k.as_str()));
}

/// What the real server's JSON decoding does to every number of a custom resource: it reads a
/// number as an int64 when its text is an integer that fits, else as a float64, and writes a
/// float64 in Go's shortest form, in plain digits below 1e21. So an integral float comes back as
/// an integer (`1.0` → `1`, `1e3` → `1000`, `12345678901234567890` → `12345678901234567000`);
/// other floats keep their float64 value.
pub(crate) fn normalise_numbers(value: &mut Value) {
    match value {
        Value::Number(n) if !n.is_i64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if f.fract() == 0.0 && f.abs() < 1e21 {
                // Rust's `Display` of an f64 is the same shortest round-trip form in plain digits.
                if let Ok(stored) = f.to_string().parse() {
                    *n = stored;
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalise_numbers),
        Value::Object(map) => map.values_mut().for_each(normalise_numbers),
        _ => {}
    }
}

/// Outcome of [`apply_schema`]: the paths pruned (for `fieldValidation=Strict`) and the
/// validation failures.
#[derive(Debug, Default)]
pub(crate) struct SchemaReport {
    pub pruned: Vec<String>,
    pub errors: Vec<Cause>,
}

/// Prunes, defaults and checks a whole custom resource against its version's schema.
pub(crate) fn apply_schema(obj: &mut Value, schema: &Value) -> SchemaReport {
    let mut report = SchemaReport::default();
    let Value::Object(map) = obj else {
        return report;
    };
    let props = schema.get("properties").and_then(Value::as_object);
    // The root always keeps apiVersion/kind/metadata whatever the schema says.
    let keys: Vec<String> = map.keys().cloned().collect();
    for k in keys {
        if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        match props.and_then(|p| p.get(&k)) {
            Some(sub) => {
                let drop = map
                    .get_mut(&k)
                    .is_some_and(|v| walk(v, sub, &k, &mut report));
                if drop {
                    map.remove(&k);
                }
            }
            None if preserves(schema) => {}
            None => {
                map.remove(&k);
                report.pruned.push(k);
            }
        }
    }
    if let Some(props) = props {
        apply_defaults(map, props, "", &mut report);
    }
    check_required(map, schema, "", &mut report);
    report
}

fn preserves(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn type_error(path: &str, expected: &str, value: &Value) -> Cause {
    let shown = match value {
        Value::String(_) => "\"string\"",
        Value::Number(_) => "\"number\"",
        Value::Bool(_) => "\"boolean\"",
        Value::Array(_) => "\"array\"",
        Value::Object(_) => "\"object\"",
        Value::Null => "\"null\"",
    };
    Cause {
        reason: "FieldValueTypeInvalid",
        message: format!(
            "Invalid value: {shown}: {path} in body must be of type {expected}: {shown}"
        ),
        field: path.to_string(),
    }
}

/// Walks one value; returns true when the value must be removed from its parent (a `null`
/// in a non-nullable field).
fn walk(value: &mut Value, schema: &Value, path: &str, report: &mut SchemaReport) -> bool {
    if value.is_null() {
        return schema.get("nullable").and_then(Value::as_bool) != Some(true);
    }
    let int_or_string = schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true);
    if let Some(ty) = schema.get("type").and_then(Value::as_str) {
        let ok = match ty {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string() || (int_or_string && is_integer(value)),
            "integer" => is_integer(value) || (int_or_string && value.is_string()),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            _ => true,
        };
        if !ok {
            report.errors.push(type_error(path, ty, value));
            return false;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let list = allowed
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        report.errors.push(Cause {
            reason: "FieldValueNotSupported",
            message: format!("Unsupported value: {value}: supported values: {list}"),
            field: path.to_string(),
        });
    }
    match value {
        Value::Object(map) => walk_object(map, schema, path, report),
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                let mut i = 0;
                items.retain_mut(|item| {
                    let p = format!("{path}[{i}]");
                    i += 1;
                    // a null array item of a non-nullable schema is dropped like a field
                    !walk(item, item_schema, &p, report)
                });
            }
        }
        _ => {}
    }
    false
}

fn is_integer(v: &Value) -> bool {
    match v {
        Value::Number(n) => {
            n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => false,
    }
}

fn walk_object(
    map: &mut Map<String, Value>,
    schema: &Value,
    path: &str,
    report: &mut SchemaReport,
) {
    let embedded = schema
        .get("x-kubernetes-embedded-resource")
        .and_then(Value::as_bool)
        == Some(true);
    let props = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties");
    let preserve = preserves(schema);
    let keys: Vec<String> = map.keys().cloned().collect();
    for k in keys {
        let child_path = join(path, &k);
        if embedded && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            if k == "metadata"
                && let Some(Value::Object(m)) = map.get_mut(&k)
            {
                prune_metadata(m);
            }
            continue;
        }
        let sub = props.and_then(|p| p.get(&k)).or(match additional {
            Some(Value::Object(_)) => additional,
            _ => None,
        });
        match sub {
            Some(sub) => {
                let drop = map
                    .get_mut(&k)
                    .is_some_and(|v| walk(v, sub, &child_path, report));
                if drop {
                    map.remove(&k);
                }
            }
            None if preserve || additional == Some(&Value::Bool(true)) => {}
            None => {
                map.remove(&k);
                report.pruned.push(child_path);
            }
        }
    }
    if let Some(props) = props {
        apply_defaults(map, props, path, report);
    }
    check_required(map, schema, path, report);
}

fn apply_defaults(
    map: &mut Map<String, Value>,
    props: &Map<String, Value>,
    path: &str,
    report: &mut SchemaReport,
) {
    for (k, sub) in props {
        if map.contains_key(k) {
            continue;
        }
        if let Some(default) = sub.get("default") {
            let mut v = default.clone();
            let p = join(path, k);
            if !walk(&mut v, sub, &p, report) {
                map.insert(k.clone(), v);
            }
        }
    }
}

fn check_required(map: &Map<String, Value>, schema: &Value, path: &str, report: &mut SchemaReport) {
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for r in required.iter().filter_map(Value::as_str) {
            if !map.contains_key(r) {
                report.errors.push(Cause {
                    reason: "FieldValueRequired",
                    message: "Required value".to_string(),
                    field: join(path, r),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_come_back_as_the_real_server_writes_them() {
        // What kube-apiserver v1.36.3 returned for this object, spelling aside (`1e+21`, `1e20`).
        let mut v: Value = serde_json::from_str(
            r#"{"a": 1.0, "b": [1e3, 0.5, -2.0, 1.5e-7, 0.10], "c": {"d": 9007199254740993,
                "e": 1e21, "f": 12345678901234567890, "g": 1e20, "h": 123456789.123456789}}"#,
        )
        .unwrap();
        normalise_numbers(&mut v);
        let stored: Value = serde_json::from_str(
            r#"{"a":1,"b":[1000,0.5,-2,1.5e-7,0.1],"c":{"d":9007199254740993,"e":1e+21,
                "f":12345678901234567000,"g":100000000000000000000,"h":123456789.12345679}}"#,
        )
        .unwrap();
        assert_eq!(v, stored);
        assert_eq!(v["a"].as_i64(), Some(1));
        assert_eq!(v["c"]["f"].as_u64(), Some(12345678901234567000));
    }

    #[test]
    fn prunes_defaults_and_checks() {
        let schema = json!({
            "type": "object",
            "properties": {
                "spec": {"type": "object", "required": ["image"], "properties": {
                    "image": {"type": "string"},
                    "replicas": {"type": "integer", "default": 1},
                    "params": {"type": "object", "additionalProperties": {"type": "string"}},
                    "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    "opt": {"type": "string"},
                }},
                "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
            }
        });
        let mut obj = json!({
            "apiVersion": "x/v1", "kind": "X", "metadata": {"name": "a"},
            "spec": {"image": "i", "unknown": 1, "params": {"a": "b"}, "free": {"x": {"y": 1}}, "opt": null},
            "status": {"phase": "Running", "extra": true},
            "other": 1,
        });
        let report = apply_schema(&mut obj, &schema);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(
            obj,
            json!({
                "apiVersion": "x/v1", "kind": "X", "metadata": {"name": "a"},
                "spec": {"image": "i", "replicas": 1, "params": {"a": "b"}, "free": {"x": {"y": 1}}},
                "status": {"phase": "Running"},
            })
        );
        let mut bad = json!({"spec": {"replicas": "two"}});
        let report = apply_schema(&mut bad, &schema);
        let fields: Vec<_> = report.errors.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["spec.replicas", "spec.image"]);
    }
}
