//! The lineage of a signed record, kept beside it: the controller writes each record's
//! [`LineageEntry`] (derived from the statement it just signed) into the record ConfigMap's
//! annotation [`ANNOTATION`], so that lineage over all records reads only object metadata
//! (`list` of `PartialObjectMetadata`), never 100,000 compressed envelopes. Records are in the
//! controller's namespace, where tenants cannot write (docs/security.md); a record without the
//! annotation (written before it, or too large for it) is read from its envelope instead.

use std::collections::BTreeMap;

use serde_json::Value;

use super::entry::LineageEntry;
use crate::labels;
use crate::observe::sha256_digest;
use crate::signing::dsse::Envelope;

/// Annotation of a record ConfigMap holding its lineage entry (compact JSON).
pub const ANNOTATION: &str = "provenant.dev/lineage";
/// Larger entries are not annotated (the API server allows 256 KiB of annotations in all).
pub const MAX_ANNOTATION: usize = 64 * 1024;

/// The lineage entry of an envelope's statement (not verified here: the caller signed it, or
/// verifies it), with the envelope's digest.
pub fn from_envelope(envelope: &[u8]) -> Result<LineageEntry, String> {
    let parsed = Envelope::from_json(envelope).map_err(|e| format!("not a DSSE envelope: {e}"))?;
    let payload = parsed
        .payload_bytes()
        .map_err(|e| format!("its payload does not decode: {e}"))?;
    let statement: Value =
        serde_json::from_slice(&payload).map_err(|e| format!("its payload is not JSON: {e}"))?;
    let mut entry = LineageEntry::from_statement(&statement).map_err(|e| e.to_string())?;
    entry.envelope_digest = Some(sha256_digest(envelope));
    Ok(entry)
}

/// The annotation value for a record's envelope; None when it has no lineage or is too large.
pub fn annotation(envelope: &[u8]) -> Option<String> {
    let entry = from_envelope(envelope).ok()?;
    serde_json::to_string(&entry)
        .ok()
        .filter(|text| text.len() <= MAX_ANNOTATION)
}

/// The entry an annotation holds, with the run's name and namespace from the record's labels
/// (statements carry the UID only).
pub fn from_annotation(
    text: &str,
    record_labels: &BTreeMap<String, String>,
) -> Result<LineageEntry, String> {
    let entry: LineageEntry = serde_json::from_str(text)
        .map_err(|e| format!("its {ANNOTATION} annotation does not parse: {e}"))?;
    Ok(named(entry, record_labels))
}

/// `entry` with the run's name (and namespace, if the statement had none) from record labels.
pub fn named(mut entry: LineageEntry, record_labels: &BTreeMap<String, String>) -> LineageEntry {
    if let Some(name) = record_labels.get(labels::RUN) {
        entry.run.name = name.clone();
    }
    if entry.run.namespace.is_empty()
        && let Some(ns) = record_labels.get(labels::RUN_NAMESPACE)
    {
        entry.run.namespace = ns.clone();
    }
    entry
}
