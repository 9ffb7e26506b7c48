//! The signed record of a run, persisted before any registry write, so that a crash or an outage
//! never makes the controller sign twice (ECDSA signatures are randomized: a second signature
//! would be a different envelope).
//!
//! Records live in a ConfigMap in the **controller's namespace**, `provenance-<run UID>`, where
//! tenants cannot write: one planted in a run's namespace is never read (docs/security.md). The
//! publish pass still checks a record before using it ([`crate::engine::check_record`]). The
//! envelope is stored once, gzip-compressed (`binaryData`), which keeps a 1,024-worker run well
//! inside the API server's 1 MiB limit for a ConfigMap; a record that still does not fit is an
//! error, never a truncated record. Records are deleted with their run ([`remove`], and [`sweep`]
//! for runs deleted while no controller was watching).

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::api::TrainingRun;
use crate::engine::{ModelSignature, SignedRecord, SubjectSignature};
use crate::labels;
use crate::lineage::{self, LineageEntry};
use crate::observe::sha256_digest;
use crate::reconcile::context::{Error, kube_err};

/// The API server refuses a ConfigMap whose values add up to more than this (bytes).
pub const CONFIG_MAP_LIMIT: usize = 1024 * 1024;
/// `binaryData` key of the gzip-compressed envelope.
const ENVELOPE_KEY: &str = "envelope.json.gz";
/// `data` key of the rest of the record.
const RECORD_KEY: &str = "record.json";
/// `component` label value of records.
const COMPONENT: &str = "provenance";
/// Refuse to inflate an envelope beyond this: a record is the controller's own, but a bounded
/// read costs nothing.
const MAX_ENVELOPE: u64 = 64 * 1024 * 1024;

/// Name of the ConfigMap holding a run's signed record (in the controller's namespace).
pub fn config_map_name(run: &TrainingRun) -> String {
    format!("provenance-{}", run.uid().unwrap_or_default())
}

/// `record.json`: the record but its envelope, and the envelope's digest to check it against.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    predicate_type: String,
    key_id: String,
    envelope_digest: String,
    signatures: Vec<SubjectSignature>,
    /// The model signatures (each envelope embedded); absent in records written before them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    model_signatures: Vec<ModelSignature>,
}

/// The record does not fit in a ConfigMap.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the signed record takes {size} bytes (envelope gzip-compressed), over the API server's limit of {limit} bytes for a ConfigMap"
)]
pub struct TooLarge {
    pub size: usize,
    pub limit: usize,
}

/// What persisting found.
#[derive(Debug)]
pub enum Persisted {
    /// Created: the record is the one just signed.
    Created,
    /// A record for this run was there already (another pass won the race); as read.
    Exists(Result<SignedRecord, String>),
    TooLarge(TooLarge),
}

/// The ConfigMap of `record` for `run`.
pub fn encode(
    run: &TrainingRun,
    namespace: &str,
    record: &SignedRecord,
) -> Result<ConfigMap, TooLarge> {
    let stored = Stored {
        predicate_type: record.predicate_type.clone(),
        key_id: record.key_id.clone(),
        envelope_digest: record.envelope_digest(),
        signatures: record.signatures.clone(),
        model_signatures: record.model_signatures.clone(),
    };
    // Writing plain data into memory cannot fail.
    let text = serde_json::to_string_pretty(&stored).expect("a record serializes");
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&record.envelope).expect("writing to memory");
    let envelope = gz.finish().expect("writing to memory");
    let size = text.len() + envelope.len();
    if size > CONFIG_MAP_LIMIT {
        return Err(TooLarge {
            size,
            limit: CONFIG_MAP_LIMIT,
        });
    }
    Ok(ConfigMap {
        metadata: ObjectMeta {
            name: Some(config_map_name(run)),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([
                (labels::RUN.to_string(), run.name_any()),
                (labels::RUN_UID.to_string(), run.uid().unwrap_or_default()),
                (
                    labels::RUN_NAMESPACE.to_string(),
                    run.namespace().unwrap_or_default(),
                ),
                (labels::COMPONENT.to_string(), COMPONENT.to_string()),
                (labels::MANAGED_BY.to_string(), labels::MANAGER.to_string()),
            ])),
            annotations: Some(
                [
                    (
                        "provenant.dev/envelope-digest".to_string(),
                        stored.envelope_digest.clone(),
                    ),
                    ("provenant.dev/key-id".to_string(), record.key_id.clone()),
                ]
                .into_iter()
                .chain(
                    lineage::records::annotation(&record.envelope)
                        .map(|entry| (lineage::records::ANNOTATION.to_string(), entry)),
                )
                .collect(),
            ),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(RECORD_KEY.to_string(), text)])),
        binary_data: Some(BTreeMap::from([(
            ENVELOPE_KEY.to_string(),
            ByteString(envelope),
        )])),
        ..Default::default()
    })
}

/// The record a ConfigMap holds, or why it is unreadable (in words for the run's condition).
pub fn decode(cm: &ConfigMap) -> Result<SignedRecord, String> {
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(RECORD_KEY))
        .ok_or_else(|| format!("it has no {RECORD_KEY}"))?;
    let stored: Stored =
        serde_json::from_str(text).map_err(|e| format!("its {RECORD_KEY} does not parse: {e}"))?;
    let gz = cm
        .binary_data
        .as_ref()
        .and_then(|d| d.get(ENVELOPE_KEY))
        .ok_or_else(|| format!("it has no {ENVELOPE_KEY}"))?;
    let mut envelope = Vec::new();
    GzDecoder::new(gz.0.as_slice())
        .take(MAX_ENVELOPE + 1)
        .read_to_end(&mut envelope)
        .map_err(|e| format!("its {ENVELOPE_KEY} does not inflate: {e}"))?;
    if envelope.len() as u64 > MAX_ENVELOPE {
        return Err(format!("its envelope inflates beyond {MAX_ENVELOPE} bytes"));
    }
    let digest = sha256_digest(&envelope);
    if digest != stored.envelope_digest {
        return Err(format!(
            "its envelope hashes to {digest}, its {RECORD_KEY} says {}",
            stored.envelope_digest
        ));
    }
    Ok(SignedRecord {
        predicate_type: stored.predicate_type,
        key_id: stored.key_id,
        envelope,
        signatures: stored.signatures,
        model_signatures: stored.model_signatures,
    })
}

/// The record persisted for this run, as read (None: there is none).
pub async fn existing(
    run: &TrainingRun,
    api: &Api<ConfigMap>,
) -> Result<Option<Result<SignedRecord, String>>, Error> {
    let name = config_map_name(run);
    let cm = api
        .get_opt(&name)
        .await
        .map_err(kube_err(format!("get provenance record {name}")))?;
    Ok(cm.map(|cm| decode(&cm)))
}

/// Create the ConfigMap holding `record`, in `namespace` (the controller's).
pub async fn persist(
    run: &TrainingRun,
    namespace: &str,
    api: &Api<ConfigMap>,
    record: &SignedRecord,
) -> Result<Persisted, Error> {
    let cm = match encode(run, namespace, record) {
        Ok(cm) => cm,
        Err(too_large) => return Ok(Persisted::TooLarge(too_large)),
    };
    let name = config_map_name(run);
    match api.create(&PostParams::default(), &cm).await {
        Ok(_) => Ok(Persisted::Created),
        Err(kube::Error::Api(s)) if s.code == 409 => match existing(run, api).await? {
            Some(found) => Ok(Persisted::Exists(found)),
            // Deleted again meanwhile: the next pass starts over.
            None => Err(kube_err(format!("create provenance record {name}"))(
                kube::Error::Api(s),
            )),
        },
        // The API server's own size check (its limit may be lower than ours).
        Err(kube::Error::Api(s))
            if s.code == 413 || (s.code == 422 && s.message.contains("Too long")) =>
        {
            Ok(Persisted::TooLarge(TooLarge {
                size: cm_size(&cm),
                limit: CONFIG_MAP_LIMIT,
            }))
        }
        Err(e) => Err(kube_err(format!("create provenance record {name}"))(e)),
    }
}

/// Every record's lineage entry, and each record whose lineage could not be read (name, why).
/// Reads the records' metadata only (the annotation [`lineage::records::ANNOTATION`]), a page of
/// 1,000 at a time; each page is parsed on the blocking pool while the next one is fetched
/// (parsing is most of the client's time at 100,000 records: docs/benchmarks.md). A record
/// without the annotation is fetched and read from its envelope.
pub async fn lineage_entries(
    api: &Api<ConfigMap>,
) -> Result<(Vec<LineageEntry>, Vec<(String, String)>), Error> {
    let selector = format!("{}={COMPONENT}", labels::COMPONENT);
    let mut params = ListParams::default().labels(&selector).limit(1000);
    let client = api.clone().into_client();
    let request = kube::core::Request::new(api.resource_url());
    let list_error = |why: String| Error::Records(format!("list: {why}"));
    let mut parsing = Vec::new();
    loop {
        let req = request
            .list_metadata(&params)
            .map_err(|e| list_error(e.to_string()))?;
        let body = client
            .request_text(req)
            .await
            .map_err(kube_err("list provenance records"))?
            .into_bytes();
        let next = lineage::records::next_page(&body).map_err(list_error)?;
        parsing.push(tokio::task::spawn_blocking(move || {
            lineage::records::page(&body)
        }));
        match next {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    let (mut entries, mut unreadable) = (Vec::new(), Vec::new());
    for parsed in parsing {
        let page = parsed
            .await
            .map_err(|e| list_error(format!("parsing a page stopped: {e}")))?
            .map_err(list_error)?;
        entries.extend(page.entries);
        unreadable.extend(page.unreadable);
        for (name, record_labels) in page.unannotated {
            let read = match api.get_opt(&name).await {
                Ok(Some(cm)) => decode(&cm)
                    .and_then(|r| lineage::records::from_envelope(&r.envelope))
                    .map(|e| lineage::records::named(e, &record_labels)),
                Ok(None) => continue, // deleted meanwhile
                Err(e) => Err(format!("cannot be read: {e}")),
            };
            match read {
                Ok(entry) => entries.push(entry),
                Err(why) => unreadable.push((name, why)),
            }
        }
    }
    Ok((entries, unreadable))
}

fn cm_size(cm: &ConfigMap) -> usize {
    let data: usize = cm.data.iter().flatten().map(|(_, v)| v.len()).sum();
    let binary: usize = cm
        .binary_data
        .iter()
        .flatten()
        .map(|(_, v)| v.0.len())
        .sum();
    data + binary
}

/// Delete a run's record (gone already is fine).
pub async fn remove(api: &Api<ConfigMap>, name: &str) -> Result<(), Error> {
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(kube_err(format!("delete provenance record {name}"))(e)),
    }
}

/// Delete the records whose run no longer exists (`live`: the UIDs of the runs that do, from a
/// synced cache), of runs in `scope` when given. Returns how many were deleted.
pub async fn sweep(
    api: &Api<ConfigMap>,
    live: &HashSet<String>,
    scope: Option<&str>,
) -> Result<usize, Error> {
    let selector = format!("{}={COMPONENT}", labels::COMPONENT);
    let records = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(kube_err("list provenance records"))?;
    let mut deleted = 0;
    for cm in records.items {
        let uid = cm
            .labels()
            .get(labels::RUN_UID)
            .cloned()
            .unwrap_or_default();
        let namespace = cm.labels().get(labels::RUN_NAMESPACE).map(String::as_str);
        if live.contains(&uid) || scope.is_some_and(|s| namespace != Some(s)) {
            continue;
        }
        remove(api, &cm.name_any()).await?;
        info!(record = %cm.name_any(), run_uid = %uid, "deleted the provenance record of a deleted run");
        deleted += 1;
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::CosignKey;

    fn run() -> TrainingRun {
        serde_saphyr::from_str(include_str!("../../../tests/fixtures/succeeded-run.yaml"))
            .expect("fixture")
    }

    fn record(envelope: Vec<u8>) -> SignedRecord {
        SignedRecord {
            predicate_type: "https://slsa.dev/provenance/v1".into(),
            key_id: CosignKey::ephemeral()
                .expect("key")
                .public_key()
                .key_id()
                .into(),
            envelope,
            signatures: vec![],
            model_signatures: vec![],
        }
    }

    #[test]
    fn a_record_round_trips_to_the_same_envelope_bytes() {
        let record = record(br#"{"payloadType":"x","payload":"e30=","signatures":[]}"#.to_vec());
        let cm = encode(&run(), "provenant-system", &record).expect("fits");
        assert_eq!(
            cm.metadata.name.as_deref(),
            Some("provenance-6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f")
        );
        assert_eq!(cm.labels()[labels::RUN_NAMESPACE], "ml-team");
        assert!(
            cm.metadata.owner_references.is_none(),
            "no cross-namespace owner"
        );
        assert_eq!(decode(&cm).expect("reads"), record);
    }

    #[test]
    fn model_signatures_round_trip_with_the_record() {
        use crate::engine::{Model, sign_models};
        use crate::storage::{ModelLayer, Subject};
        let key = CosignKey::ephemeral().expect("key");
        let mut record =
            record(br#"{"payloadType":"x","payload":"e30=","signatures":[]}"#.to_vec());
        let model = Model {
            subject: Subject::new("reg.io/m", format!("sha256:{}", "a".repeat(64))),
            files: vec![ModelLayer {
                title: "w.bin".into(),
                digest: format!("sha256:{}", "b".repeat(64)),
                size: 1,
            }],
        };
        record.model_signatures = sign_models(&[model], &key).expect("signs");
        let cm = encode(&run(), "ns", &record).expect("fits");
        let back = decode(&cm).expect("reads");
        assert_eq!(back.model_signatures, record.model_signatures);
        assert_eq!(
            back.model_signatures[0].bundle().expect("bundle"),
            record.model_signatures[0].bundle().expect("bundle"),
            "the same bundle, hence the same referrer, after a restart"
        );
    }

    #[test]
    fn a_large_envelope_is_stored_once_and_compressed() {
        // 1,024 workers' worth of statement, base64 in the envelope as DSSE has it: ~1.8 MB.
        use base64::Engine as _;
        let workers: String = (0..1024)
            .map(|i| format!(r#"{{"name":"worker/run-{i}","uri":"k8s://ns/pods/run-{i}","digest":{{"sha256":"{i:064x}"}},"annotations":{{"observed":{{"node":"gpu-node-{i}","phase":"Succeeded","rank":{i},"containers":[{{"image":"reg.io/train@sha256:{:064x}","name":"trainer"}}],"accelerator":{{"product":"NVIDIA-A100-SXM4-80GB","count":"8","allocated":4}}}},"reported":{{"metrics":{{"loss":0.{i}}}}}}}}},"#, 7))
            .collect();
        let payload = base64::engine::general_purpose::STANDARD.encode(workers.repeat(4));
        let envelope =
            format!(r#"{{"payload":"{payload}","payloadType":"application/vnd.in-toto+json"}}"#);
        assert!(envelope.len() > 1_500_000, "{}", envelope.len());
        let record = record(envelope.into_bytes());
        let cm = encode(&run(), "ns", &record).expect("fits compressed");
        assert!(cm_size(&cm) < CONFIG_MAP_LIMIT / 4, "{}", cm_size(&cm));
        assert_eq!(decode(&cm).expect("reads").envelope, record.envelope);
    }

    #[test]
    fn a_record_that_cannot_fit_is_refused_with_its_size_and_the_limit() {
        use sha2::Digest as _;
        // Incompressible bytes (a hash chain) beyond the limit.
        let mut bytes = Vec::new();
        let mut block = b"seed".to_vec();
        while bytes.len() < CONFIG_MAP_LIMIT + 4096 {
            block = sha2::Sha256::digest(&block).to_vec();
            bytes.extend_from_slice(&block);
        }
        let err = encode(&run(), "ns", &record(bytes)).expect_err("too large");
        assert_eq!(err.limit, CONFIG_MAP_LIMIT);
        assert!(err.size > CONFIG_MAP_LIMIT);
        assert!(err.to_string().contains("limit of 1048576 bytes"), "{err}");
    }

    #[test]
    fn a_record_carries_its_lineage_in_an_annotation() {
        let key = CosignKey::ephemeral().expect("key");
        let payload = include_bytes!("../../../tests/golden/statement.json");
        let envelope = crate::signing::sign_envelope(
            &key,
            crate::signing::IN_TOTO_PAYLOAD_TYPE,
            payload.trim_ascii(),
        )
        .expect("signs")
        .to_json()
        .expect("json");
        let cm = encode(&run(), "ns", &record(envelope.clone())).expect("fits");
        let text = &cm.annotations()[lineage::records::ANNOTATION];
        let entry = lineage::records::from_annotation(text, cm.labels()).expect("reads");
        assert_eq!(entry.run.name, cm.labels()[labels::RUN]);
        assert_eq!(entry.run.namespace, "ml-team");
        assert_eq!(entry.envelope_digest, Some(sha256_digest(&envelope)));
        assert_eq!(
            entry.models[0].repository,
            "registry.example.com/models/resnet50-finetuned"
        );
        assert!(
            entry
                .facts(lineage::Kind::Dataset)
                .any(|f| f.name == "imagenet-subset" && f.sources == ["declared"])
        );
        // A record whose envelope holds no statement has no annotation.
        let plain = encode(&run(), "ns", &record(br#"{"payload":"e30="}"#.to_vec())).expect("fits");
        assert!(
            !plain
                .annotations()
                .contains_key(lineage::records::ANNOTATION)
        );
    }

    #[test]
    fn an_edited_record_does_not_read() {
        let record = record(br#"{"payload":"e30="}"#.to_vec());
        let mut cm = encode(&run(), "ns", &record).expect("fits");
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(br#"{"payload":"e31="}"#).expect("memory");
        cm.binary_data.as_mut().expect("binary").insert(
            ENVELOPE_KEY.into(),
            ByteString(gz.finish().expect("memory")),
        );
        let err = decode(&cm).expect_err("digest differs");
        assert!(err.contains("hashes to"), "{err}");
        cm.data = None;
        assert!(
            decode(&cm)
                .expect_err("no record.json")
                .contains("record.json")
        );
    }
}
