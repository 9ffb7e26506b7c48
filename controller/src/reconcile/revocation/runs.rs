//! The `Revoked` condition and Event on each affected TrainingRun that still exists (by its
//! namespace, name and UID: a name reused by a later run is not that run). The condition is
//! written alone (a JSON patch of `status.conditions`, conditional on the resourceVersion read),
//! so nothing else of the run's status is touched.

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use serde_json::json;

use crate::api::{AffectedRun, TrainingRun};
use crate::reconcile::context::{Context, Error, kube_err};
use crate::reconcile::{decide, status};

/// Condition type on an affected run.
pub const REVOKED: &str = "Revoked";
/// Event reason (and condition reason) once a revocation is withdrawn.
pub const REINSTATED: &str = "MaterialReinstated";

/// What to say on the run.
pub struct Mark<'a> {
    /// `True` (revoked) or `False` (reinstated).
    pub value: &'a str,
    pub reason: &'a str,
    pub message: &'a str,
    /// Only a condition whose message contains this is changed to `False` (another revocation's
    /// mark stays).
    pub only_if_mentions: Option<&'a str>,
}

/// Set the condition on `run` unless it already says the same; an Event when it changed.
/// Returns whether it changed. A run that is gone (or is another run of the same name) is left.
pub async fn mark(ctx: &Context, run: &AffectedRun, mark: &Mark<'_>) -> Result<bool, Error> {
    if run.namespace.is_empty() || run.name.is_empty() {
        return Ok(false);
    }
    let api: Api<TrainingRun> = Api::namespaced(ctx.client.clone(), &run.namespace);
    for _ in 0..3 {
        let Some(current) = api
            .get_opt(&run.name)
            .await
            .map_err(kube_err(format!("get run {}/{}", run.namespace, run.name)))?
        else {
            return Ok(false);
        };
        if current.uid().as_deref() != Some(run.uid.as_str()) {
            return Ok(false);
        }
        let mut status = current.status.clone().unwrap_or_default();
        let existing = status.conditions.iter().find(|c| c.type_ == REVOKED);
        let unchanged = existing
            .is_some_and(|c| c.status == mark.value && c.message == mark.message)
            || (mark.value == "False" && existing.is_none_or(|c| c.status == "False"))
            || mark
                .only_if_mentions
                .is_some_and(|needle| existing.is_some_and(|c| !c.message.contains(needle)));
        if unchanged {
            return Ok(false);
        }
        decide::upsert(
            &mut status,
            REVOKED,
            mark.value,
            mark.reason,
            mark.message,
            current.metadata.generation,
            &status::now(),
        );
        let conditions = serde_json::to_value(&status.conditions).map_err(|e| Error::Encode {
            what: "the Revoked condition",
            reason: e.to_string(),
        })?;
        let (path, value) = if current.status.is_some() {
            ("/status/conditions", conditions)
        } else {
            ("/status", json!({"conditions": conditions}))
        };
        let ops = json!([
            {"op": "replace", "path": "/metadata/resourceVersion", "value": current.resource_version()},
            {"op": "add", "path": path, "value": value},
        ]);
        let patch = serde_json::from_value(ops).map_err(|e| Error::Encode {
            what: "the Revoked condition patch",
            reason: e.to_string(),
        })?;
        match api
            .patch_status(
                &run.name,
                &PatchParams::default(),
                &Patch::Json::<()>(patch),
            )
            .await
        {
            Ok(_) => {
                let type_ = if mark.value == "True" {
                    EventType::Warning
                } else {
                    EventType::Normal
                };
                status::publish_action(
                    ctx,
                    &current,
                    type_,
                    "Revocation",
                    mark.reason,
                    mark.message,
                )
                .await;
                return Ok(true);
            }
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(false),
            Err(e) => {
                return Err(kube_err(format!(
                    "write the Revoked condition of {}/{}",
                    run.namespace, run.name
                ))(e));
            }
        }
    }
    Err(Error::Stale)
}
