//! in-toto Statement v1 and SLSA Provenance v1 as serde types, with the specs' field names.
//! Field order is declaration order and every map is sorted (`BTreeMap`, [`JsonMap`]: serde_json's
//! map is a `BTreeMap` as long as its `preserve_order` feature is off, which a test below guards,
//! and [`Object`]: written from views whose fields are declared in key order, which the tests of
//! `fields.rs` guard), so one statement always serializes to the same bytes.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

/// A JSON object, keys sorted.
pub type JsonMap = serde_json::Map<String, Value>;

/// A JSON object whose content is provenant's own (`externalParameters`, `internalParameters`,
/// annotations), held as the compact JSON it was written as. Built once from a typed view of the
/// run (`fields.rs`) and copied into the statement's bytes: going through a `serde_json::Value`
/// tree instead (build, write, drop) made statement build + sign 1.7 ms at 64 workers and 26 ms at
/// 1,024 (bench, 2026-12-03), over the 1 ms / 10 ms targets of docs/benchmarks.md. Read back
/// (`verify`) with [`Object::get`].
#[derive(Clone, Serialize)]
#[serde(transparent)]
pub struct Object(Box<RawValue>);

impl Object {
    /// The object a view serializes to (an error if it is not an object, or not JSON).
    pub fn of(view: &impl Serialize) -> serde_json::Result<Object> {
        Self::checked(serde_json::value::to_raw_value(view)?)
    }

    fn checked(raw: Box<RawValue>) -> serde_json::Result<Object> {
        if raw.get().trim_start().starts_with('{') {
            Ok(Object(raw))
        } else {
            Err(serde_json::Error::custom("expected a JSON object"))
        }
    }

    /// `{}`.
    pub fn empty() -> Object {
        Object(RawValue::from_string("{}".to_string()).expect("`{}` is JSON"))
    }

    pub fn is_empty(&self) -> bool {
        self.0.get() == "{}"
    }

    /// The JSON text, as written.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// The object's entries (parsed on each call: reading is rare, writing is the hot path).
    pub fn to_map(&self) -> serde_json::Result<JsonMap> {
        serde_json::from_str(self.0.get())
    }

    /// The value of `key`, if the object has it.
    pub fn get(&self, key: &str) -> Option<Value> {
        self.to_map().ok()?.remove(key)
    }
}

impl Default for Object {
    fn default() -> Self {
        Object::empty()
    }
}

impl PartialEq for Object {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl fmt::Debug for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.get())
    }
}

impl<'de> Deserialize<'de> for Object {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Object::checked(Box::<RawValue>::deserialize(deserializer)?).map_err(D::Error::custom)
    }
}

/// `_type` of an in-toto Statement v1.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// `predicateType` of SLSA Provenance v1.
pub const SLSA_PROVENANCE_V1: &str = "https://slsa.dev/provenance/v1";

/// An in-toto Statement v1 carrying a SLSA Provenance v1 predicate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    #[serde(rename = "_type")]
    pub type_: String,
    pub subject: Vec<ResourceDescriptor>,
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    pub predicate: Provenance,
}

/// SLSA Provenance v1 predicate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Provenance {
    pub build_definition: BuildDefinition,
    pub run_details: RunDetails,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildDefinition {
    pub build_type: String,
    pub external_parameters: Object,
    #[serde(default, skip_serializing_if = "Object::is_empty")]
    pub internal_parameters: Object,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resolved_dependencies: Vec<ResourceDescriptor>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunDetails {
    pub builder: Builder,
    pub metadata: BuildMetadata,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub byproducts: Vec<ResourceDescriptor>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Builder {
    pub id: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub version: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildMetadata {
    pub invocation_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_on: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_on: Option<String>,
}

/// in-toto ResourceDescriptor v1 (subjects, resolved dependencies, byproducts).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceDescriptor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub digest: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Object::is_empty")]
    pub annotations: Object,
}

impl Statement {
    /// The canonical bytes: compact JSON, fields in declaration order, maps sorted.
    pub fn to_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_maps_are_written_with_sorted_keys() {
        // With serde_json's `preserve_order` feature (enabled by any crate in the build) maps would
        // keep insertion order and the statement bytes would change.
        let map: JsonMap = serde_json::from_str(r#"{"b":1,"a":{"d":2,"c":3}}"#).expect("parses");
        assert_eq!(
            serde_json::to_string(&map).expect("serializes"),
            r#"{"a":{"c":3,"d":2},"b":1}"#
        );
    }

    #[test]
    fn objects_are_kept_as_written_and_refuse_other_json() {
        let object: Object = serde_json::from_str(r#"{"b": [1], "a": "x"}"#).expect("an object");
        assert_eq!(object.as_str(), r#"{"b": [1], "a": "x"}"#);
        assert_eq!(object.get("a"), Some(Value::from("x")));
        assert_eq!(object.get("c"), None);
        let err = serde_json::from_str::<Object>("[1]").expect_err("not an object");
        assert!(err.to_string().contains("expected a JSON object"), "{err}");
        assert!(Object::of(&"text").is_err());
        assert!(Object::default().is_empty());
        assert_eq!(
            serde_json::to_string(&Object::default()).expect("writes"),
            "{}"
        );
    }
}
