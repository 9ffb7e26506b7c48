//! How `status.workers` is written: what every record shares is written once, in
//! `status.workerCommon`, and left out of each record. The workers of a run mostly share their
//! image, exit, and node facts (a GPU node's GPU feature discovery labels alone take ~2 KB), so a
//! 1,024-worker GPU run's status takes ~0.3 MB this way instead of ~2.6 MB, which etcd (1.5 MiB
//! per request) would refuse.
//!
//! Exact, never lossy: a record read back is the record written, field for field (in memory the
//! controller only ever sees whole records; the statement is built from them). The rule, for
//! readers of the raw object: a field a record leaves out has the value `workerCommon` gives it,
//! and an object field (`accelerator`, its `labels`, `report`, ...) is the record's own keys plus
//! those of `workerCommon`. Generic over the record's JSON, so a field added to
//! [`WorkerRecord`] is covered without a change here.

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::WorkerRecord;

/// Fields never factored out: they name the record (and the schema requires them).
pub const OWN: [&str; 2] = ["podName", "rank"];

/// `status.workers` and `status.workerCommon` as written.
#[derive(Serialize, Deserialize, JsonSchema, Default, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Workers {
    /// One record per worker pod, filled as the pods terminate. A record leaves out the fields
    /// it shares with every other record: those are in `workerCommon`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<WorkerRecord>")]
    pub workers: Vec<Map<String, Value>>,
    /// What every record in `workers` has in common, written once. A record without one of these
    /// fields has it with this value; an object field (`accelerator`, `accelerator.labels`,
    /// `report`, ...) is the record's own keys plus these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "common_schema")]
    pub worker_common: Option<Map<String, Value>>,
}

/// The schema of `workerCommon`: a worker record without its name and rank, every field optional.
fn common_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = WorkerRecord::json_schema(generator);
    schema.remove("required");
    if let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        for own in OWN {
            properties.remove(own);
        }
    }
    schema.insert(
        "description".into(),
        "What every record in `workers` has in common, written once. A record without one of these fields has it with this value; an object field (`accelerator`, `accelerator.labels`, `report`, ...) is the record's own keys plus these.".into(),
    );
    schema
}

impl Workers {
    /// The written form of `records`.
    pub fn compact(records: &[WorkerRecord]) -> serde_json::Result<Workers> {
        let records = records
            .iter()
            .map(|r| match serde_json::to_value(r)? {
                Value::Object(map) => Ok(map),
                _ => Err(serde::ser::Error::custom(
                    "a worker record is a JSON object",
                )),
            })
            .collect::<serde_json::Result<Vec<_>>>()?;
        if records.len() < 2 {
            return Ok(Workers {
                workers: records,
                worker_common: None,
            });
        }
        let all: Vec<&Map<String, Value>> = records.iter().collect();
        let mut common = shared(&all);
        for own in OWN {
            common.remove(own);
        }
        if common.is_empty() {
            return Ok(Workers {
                workers: records,
                worker_common: None,
            });
        }
        let workers = records.iter().map(|r| without(r, &common)).collect();
        Ok(Workers {
            workers,
            worker_common: Some(common),
        })
    }

    /// The whole records.
    pub fn expand(self) -> serde_json::Result<Vec<WorkerRecord>> {
        let common = self.worker_common.unwrap_or_default();
        self.workers
            .into_iter()
            .map(|mut record| {
                with(&mut record, &common);
                serde_json::from_value(Value::Object(record))
            })
            .collect()
    }
}

/// The fields every one of `records` has with the same value; for an object field they all have
/// (but with different values), the keys shared inside it, recursively.
fn shared(records: &[&Map<String, Value>]) -> Map<String, Value> {
    let mut common = Map::new();
    let Some((first, rest)) = records.split_first() else {
        return common;
    };
    for (key, value) in *first {
        let Some(others) = rest.iter().map(|r| r.get(key)).collect::<Option<Vec<_>>>() else {
            continue;
        };
        if others.iter().all(|v| *v == value) {
            common.insert(key.clone(), value.clone());
        } else if let Some(objects) = std::iter::once(value)
            .chain(others)
            .map(Value::as_object)
            .collect::<Option<Vec<_>>>()
        {
            let inner = shared(&objects);
            if !inner.is_empty() {
                common.insert(key.clone(), Value::Object(inner));
            }
        }
    }
    common
}

/// `record` without what `common` gives it.
fn without(record: &Map<String, Value>, common: &Map<String, Value>) -> Map<String, Value> {
    record
        .iter()
        .filter_map(|(key, value)| match (common.get(key), value) {
            (None, _) => Some((key.clone(), value.clone())),
            (Some(c), _) if c == value => None,
            (Some(Value::Object(c)), Value::Object(own)) => {
                let rest = without(own, c);
                // Empty only when `own` equals `c` (its keys include all of `c`'s).
                (!rest.is_empty()).then(|| (key.clone(), Value::Object(rest)))
            }
            // Not produced by `shared`: keep the record's own value.
            (Some(_), _) => Some((key.clone(), value.clone())),
        })
        .collect()
}

/// Put back into `record` what `common` gives it (its own values win).
fn with(record: &mut Map<String, Value>, common: &Map<String, Value>) {
    for (key, c) in common {
        match (record.get_mut(key), c) {
            (None, _) => {
                record.insert(key.clone(), c.clone());
            }
            (Some(Value::Object(own)), Value::Object(c)) => with(own, c),
            (Some(_), _) => {}
        }
    }
}

/// `#[serde(flatten, with = "compact")]` of `TrainingRunStatus::workers`.
pub fn serialize<S: Serializer>(
    records: &[WorkerRecord],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    Workers::compact(records)
        .map_err(serde::ser::Error::custom)?
        .serialize(serializer)
}

/// `#[serde(flatten, with = "compact")]` of `TrainingRunStatus::workers`.
pub fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<WorkerRecord>, D::Error> {
    Workers::deserialize(deserializer)?
        .expand()
        .map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests;
