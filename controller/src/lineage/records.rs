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

/// One page of the records' metadata as the API server lists it (`PartialObjectMetadataList`),
/// read for lineage: each record's entry, the records without the annotation (to be read from
/// their envelope), and the continue token.
#[derive(Debug, Default)]
pub struct Page {
    pub entries: Vec<LineageEntry>,
    /// Records whose annotation does not read: (name, why).
    pub unreadable: Vec<(String, String)>,
    /// Records without the annotation: (name, labels).
    pub unannotated: Vec<(String, BTreeMap<String, String>)>,
    /// Where the next page starts; None on the last one.
    pub next: Option<String>,
}

/// Only what lineage reads of a listed record: deserializing into these instead of kube's
/// `ObjectMeta` skips every other field (managedFields, other annotations) without allocating,
/// which took `provenant lineage` over 100,000 records from 1.0 s to 0.6 s of parsing
/// (docs/benchmarks.md, "Lineage at scale").
mod wire {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    /// `items` is `null` in an empty `PartialObjectMetadataList`; labels and annotations may
    /// be too: every collection is an Option.
    #[derive(Deserialize)]
    pub struct List {
        #[serde(default)]
        pub metadata: ListMeta,
        #[serde(default)]
        pub items: Option<Vec<Item>>,
    }

    #[derive(Deserialize, Default)]
    pub struct ListMeta {
        #[serde(rename = "continue", default)]
        pub continue_: Option<String>,
    }

    #[derive(Deserialize)]
    pub struct Item {
        pub metadata: Meta,
    }

    #[derive(Deserialize)]
    pub struct Meta {
        #[serde(default)]
        pub name: String,
        #[serde(default)]
        pub labels: Option<Labels>,
        #[serde(default)]
        pub annotations: Option<Annotations>,
    }

    /// The two labels [`super::named`] reads.
    #[derive(Deserialize, Default)]
    pub struct Labels {
        #[serde(rename = "provenant.dev/run", default)]
        pub run: Option<String>,
        #[serde(rename = "provenant.dev/run-namespace", default)]
        pub run_namespace: Option<String>,
    }

    impl Labels {
        pub fn into_map(self) -> BTreeMap<String, String> {
            [
                (crate::labels::RUN, self.run),
                (crate::labels::RUN_NAMESPACE, self.run_namespace),
            ]
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_string(), v?)))
            .collect()
        }
    }

    #[derive(Deserialize, Default)]
    pub struct Annotations {
        #[serde(rename = "provenant.dev/lineage", default)]
        pub lineage: Option<String>,
    }

    /// The continue token alone (the rest is scanned, not kept).
    #[derive(Deserialize)]
    pub struct Head {
        #[serde(default)]
        pub metadata: ListMeta,
    }
}

/// The continue token of a listed page, without reading its items into memory.
pub fn next_page(body: &[u8]) -> Result<Option<String>, String> {
    let head: wire::Head = serde_json::from_slice(body)
        .map_err(|e| format!("a page of records does not parse: {e}"))?;
    Ok(head.metadata.continue_.filter(|c| !c.is_empty()))
}

/// Read a listed page of record metadata.
pub fn page(body: &[u8]) -> Result<Page, String> {
    let list: wire::List = serde_json::from_slice(body)
        .map_err(|e| format!("a page of records does not parse: {e}"))?;
    let mut page = Page {
        next: list.metadata.continue_.filter(|c| !c.is_empty()),
        ..Page::default()
    };
    let items = list.items.unwrap_or_default();
    page.entries.reserve(items.len());
    for item in items {
        let meta = item.metadata;
        let labels = meta.labels.unwrap_or_default();
        match meta.annotations.and_then(|a| a.lineage) {
            Some(text) => match serde_json::from_str::<LineageEntry>(&text) {
                Ok(mut entry) => {
                    if let Some(name) = labels.run {
                        entry.run.name = name;
                    }
                    if entry.run.namespace.is_empty()
                        && let Some(ns) = labels.run_namespace
                    {
                        entry.run.namespace = ns;
                    }
                    page.entries.push(entry)
                }
                Err(e) => page.unreadable.push((
                    meta.name,
                    format!("its {ANNOTATION} annotation does not parse: {e}"),
                )),
            },
            None => page.unannotated.push((meta.name, labels.into_map())),
        }
    }
    Ok(page)
}
