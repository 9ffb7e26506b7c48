//! in-toto Statement v1 and SLSA Provenance v1 as serde types, with the specs' field names.
//! Field order is declaration order and maps are sorted, so one statement always serializes to the
//! same bytes.
//!
//! The objects of the predicate whose content is provenant's own (`externalParameters`,
//! `internalParameters`, the annotations of each worker's byproduct) are [`JsonObject`]s: JSON
//! text, serialized once, when the statement is built, from typed views of the run
//! (`fields.rs`), and copied as they are when the statement is serialized.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

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
    pub external_parameters: JsonObject,
    #[serde(default, skip_serializing_if = "JsonObject::is_empty")]
    pub internal_parameters: JsonObject,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resolved_dependencies: Vec<ResourceDescriptor>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunDetails {
    pub builder: Builder,
    pub metadata: BuildMetadata,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub byproducts: Vec<Byproduct>,
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

/// in-toto ResourceDescriptor v1. The annotations are a sorted map of JSON values, or, in
/// [`Byproduct`]s, a [`JsonObject`] provenant wrote from a typed view.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    bound(serialize = "A: Serialize + Annotations")
)]
pub struct ResourceDescriptor<A = BTreeMap<String, Value>> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub digest: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Annotations::is_empty")]
    pub annotations: A,
}

/// A `runDetails.byproducts` entry: provenant writes one per worker, its annotations
/// `{"observed": {...}, "reported": {...}}`.
pub type Byproduct = ResourceDescriptor<JsonObject>;

/// What a descriptor's annotations can be; empty ones are left out.
pub trait Annotations {
    fn is_empty(&self) -> bool;
}

impl Annotations for BTreeMap<String, Value> {
    fn is_empty(&self) -> bool {
        BTreeMap::is_empty(self)
    }
}

impl Annotations for JsonObject {
    fn is_empty(&self) -> bool {
        JsonObject::is_empty(self)
    }
}

/// A JSON object, as compact JSON text with its keys sorted: what provenant writes for the objects
/// whose content is its own. Built with [`JsonObject::from_fields`] from a typed view of the run
/// (serialized once, at build time, without an intermediate `serde_json::Value`); read from any
/// statement as the text a sorted `serde_json::Value` would give. Serializing copies the text
/// verbatim, with serde_json's serializer too.
#[derive(Clone, PartialEq, Eq)]
pub struct JsonObject(String);

impl JsonObject {
    /// The JSON of `fields`, which must serialize to a JSON object (a struct or a string-keyed
    /// map), its keys in sorted order for the canonical form.
    pub fn from_fields<T: Serialize + ?Sized>(fields: &T) -> serde_json::Result<Self> {
        // Written into a scratch buffer, then copied into a string of the exact length.
        super::json::with_scratch(|buffer| {
            super::json::append(buffer, fields)?;
            if buffer.first() != Some(&b'{') {
                return Err(serde::ser::Error::custom("not a JSON object"));
            }
            // Written by serde_json or by its byte-identical writer: UTF-8 JSON.
            let text = std::str::from_utf8(buffer).map_err(serde::ser::Error::custom)?;
            Ok(JsonObject(text.to_owned()))
        })
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        &self.0
    }

    /// `{}`.
    pub fn is_empty(&self) -> bool {
        self.0 == "{}"
    }

    /// The object as a `serde_json::Value` map.
    pub fn to_map(&self) -> serde_json::Map<String, Value> {
        serde_json::from_str(&self.0).unwrap_or_default()
    }
}

impl Default for JsonObject {
    fn default() -> Self {
        JsonObject("{}".into())
    }
}

impl std::fmt::Debug for JsonObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for JsonObject {
    /// The text, verbatim (serde_json's `RawValue` protocol, see `json::serialize_raw`). It is
    /// valid JSON by construction (only [`JsonObject::from_fields`] makes one), so it is not
    /// parsed again.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        super::json::serialize_raw(&self.0, serializer)
    }
}

impl<'de> Deserialize<'de> for JsonObject {
    /// Any JSON object, normalized (compact, keys sorted).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = serde_json::Map::<String, Value>::deserialize(deserializer)?;
        JsonObject::from_fields(&map).map_err(serde::de::Error::custom)
    }
}

impl Statement {
    /// The canonical bytes: compact JSON, fields in declaration order, maps sorted.
    /// The bytes are `serde_json::to_vec(self)`'s, written by a faster writer (`json.rs`).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size_hint());
        self.write_into(&mut out);
        out
    }

    /// Append [`Statement::to_bytes`] to `out` (reserve [`Statement::size_hint`] first to write
    /// without growing it).
    pub fn write_into(&self, out: &mut Vec<u8>) {
        // Serializing plain structs, strings and JSON values cannot fail (a non-finite metric is
        // written as `null`, as `serde_json::Value` holds it).
        let start = out.len();
        if super::json::append(out, self).is_err() {
            out.truncate(start);
        }
    }

    /// About the length of [`Statement::to_bytes`], a little over for a statement provenant
    /// built: the pre-serialized objects plus an allowance per descriptor. Sizing the buffer once
    /// matters for large statements: growing one by doubling copies it and, past the allocator's
    /// mmap threshold, maps fresh pages on every statement.
    pub fn size_hint(&self) -> usize {
        let descriptor = |d: &ResourceDescriptor| {
            let annotations: usize = d
                .annotations
                .iter()
                .map(|(k, v)| k.len() + 8 + if v.is_string() { 160 } else { 64 })
                .sum();
            320 + annotations
        };
        let definition = &self.predicate.build_definition;
        let details = &self.predicate.run_details;
        let byproducts: usize = details
            .byproducts
            .iter()
            .map(|b| 320 + b.annotations.get().len())
            .sum();
        1024 + self.subject.iter().map(descriptor).sum::<usize>()
            + definition.external_parameters.get().len()
            + definition.internal_parameters.get().len()
            + definition
                .resolved_dependencies
                .iter()
                .map(descriptor)
                .sum::<usize>()
            + byproducts
    }
}
