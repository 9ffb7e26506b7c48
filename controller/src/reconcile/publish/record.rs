//! The signed record of a run, persisted in a ConfigMap owned by the run before any registry
//! write, so that a crash or an outage never makes the controller sign twice (ECDSA signatures
//! are randomized: a second signature would be a different envelope).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::{Resource, ResourceExt};
use tracing::warn;

use crate::api::TrainingRun;
use crate::engine::{self, SignedRecord};
use crate::labels;
use crate::reconcile::context::{Error, kube_err};
use crate::reconcile::workers::owned_by;

/// Name of the ConfigMap holding a run's signed record.
pub fn config_map_name(run: &TrainingRun) -> String {
    format!("{}-provenance", run.name_any())
}

/// The record persisted for this run, if any (only a ConfigMap the run owns counts).
pub async fn existing(
    run: &TrainingRun,
    api: &Api<ConfigMap>,
) -> Result<Option<SignedRecord>, Error> {
    let Some(cm) = api
        .get_opt(&config_map_name(run))
        .await
        .map_err(kube_err("get provenance ConfigMap"))?
    else {
        return Ok(None);
    };
    if !owned_by(&cm, run) {
        return Ok(None);
    }
    let data = cm.data.unwrap_or_default();
    match engine::from_config_map_data(&data) {
        Ok(record) => Ok(Some(record)),
        Err(e) => {
            warn!(error = %e, "persisted provenance record unreadable; ignoring it");
            Ok(None)
        }
    }
}

/// Create the ConfigMap holding `record` (as `data`, from [`engine::to_config_map_data`]). If it
/// already exists and the run owns it (another attempt won the race), what it holds is the
/// record; if someone else owns it, None.
pub async fn persist(
    run: &TrainingRun,
    namespace: &str,
    api: &Api<ConfigMap>,
    record: SignedRecord,
    data: BTreeMap<String, String>,
) -> Result<Option<SignedRecord>, Error> {
    let name = config_map_name(run);
    let cm_labels = BTreeMap::from([
        (labels::RUN.to_string(), run.name_any()),
        (labels::RUN_UID.to_string(), run.uid().unwrap_or_default()),
        (labels::MANAGED_BY.to_string(), labels::MANAGER.to_string()),
        (
            "provenant.dev/component".to_string(),
            "provenance".to_string(),
        ),
    ]);
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.to_string()),
            labels: Some(cm_labels),
            annotations: Some(BTreeMap::from([
                (
                    "provenant.dev/envelope-digest".to_string(),
                    record.envelope_digest(),
                ),
                ("provenant.dev/key-id".to_string(), record.key_id.clone()),
            ])),
            owner_references: run.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &cm).await {
        Ok(_) => Ok(Some(record)),
        Err(kube::Error::Api(s)) if s.code == 409 => existing(run, api).await,
        Err(e) => Err(kube_err(format!("create ConfigMap {name}"))(e)),
    }
}
