//! A revocation created (or searched again): find the affected models, attest each, mark their
//! runs, write the status.

use std::collections::HashSet;

use kube::ResourceExt;
use kube::runtime::controller::Action;

use super::{RevocationError, attest, give, producer, signed};
use crate::api::MaterialRevocation;
use crate::reconcile::context::Context;
use crate::reconcile::status;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tracing::info;

use super::{RECHECK, affected, backoff_key, lineage, refuse, runs};
use crate::api::{MaterialRevocationStatus, revocation::MAX_LISTED};
use crate::provenance::revocation::State;
use crate::reconcile::context::{Error, kube_err};

pub(super) async fn apply(
    revocation: &MaterialRevocation,
    ctx: &Context,
) -> Result<Action, RevocationError> {
    let name = revocation.name_any();
    let what = signed(revocation);
    let time = revocation
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .unwrap_or_else(|| status::now().0.to_string());
    let (index, unreadable) = lineage(ctx).await?;
    let hits = affected::find(&index, &revocation.spec.material);
    let before: HashSet<&str> = revocation
        .status
        .iter()
        .flat_map(|s| s.affected_models.iter())
        .filter(|m| m.attached)
        .map(|m| m.model.as_str())
        .collect();

    let mut failures = Vec::new();
    let mut listed = Vec::with_capacity(hits.len());
    for hit in &hits {
        let run = producer(&index, hit);
        let mut attached = before.contains(hit.model.reference().as_str());
        if !attached {
            let statement = attest::Statement {
                state: State::Revoked,
                revocation: &what.revocation,
                material: &what.material,
                time: &time,
            };
            match give(ctx, run.as_ref(), hit, &statement).await {
                Ok(()) => attached = true,
                Err(e) => failures.push(format!("{}: {e}", hit.model.reference())),
            }
        }
        let mut entry = affected::listed(&revocation.spec.material, hit, attached);
        entry.run = run;
        if let Some(run) = &entry.run
            && !ctx
                .revocations
                .marked_once(&what.revocation.uid, &run.uid, "True")
        {
            let message = affected::run_message(
                &name,
                &revocation.spec.reason,
                revocation.spec.advisory.as_deref(),
                &entry.path,
            );
            let mark = runs::Mark {
                value: "True",
                reason: refuse::REASON,
                message: &message,
                only_if_mentions: None,
            };
            if let Err(e) = runs::mark(ctx, run, &mark).await {
                // Tried again on the next pass.
                ctx.revocations
                    .marked
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&(
                        what.revocation.uid.clone(),
                        run.uid.clone(),
                        "True".to_string(),
                    ));
                return Err(e.into());
            }
        }
        listed.push(entry);
    }

    let total = hits.len();
    let (affected_models, truncated) = affected::bounded(listed, MAX_LISTED);
    let mut conditions = revocation
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let material = format!("{} {}", what.material.type_.word(), what.material.digest);
    let unreadable = if unreadable.is_empty() {
        String::new()
    } else {
        format!(
            "; {} records could not be read (first: {})",
            unreadable.len(),
            unreadable[0].0
        )
    };
    let found = format!(
        "{total} models depend on {material} among {} recorded runs{unreadable}",
        index.len()
    );
    let found_reason = if total == 0 {
        "NoAffectedModels"
    } else {
        "AffectedModelsFound"
    };
    upsert(
        &mut conditions,
        revocation,
        "Found",
        "True",
        found_reason,
        &found,
    );
    let (value, reason, message) = match failures.first() {
        None => (
            "True",
            "Attached",
            format!("{total} models carry the signed revocation attestation"),
        ),
        Some(first) => (
            "False",
            "AttachFailed",
            format!(
                "{} of {total} models do not carry the revocation attestation yet (retrying); first: {first}",
                failures.len()
            ),
        ),
    };
    upsert(
        &mut conditions,
        revocation,
        "Attested",
        value,
        reason,
        &message,
    );
    let status = MaterialRevocationStatus {
        conditions,
        affected_count: Some(total as i64),
        affected_models,
        truncated,
        found_at: Some(status::now()),
        observed_generation: revocation.metadata.generation,
    };
    write_status(revocation, &status, ctx).await?;
    info!(revocation = %name, affected = total, failed = failures.len(), "revocation searched and attested");
    match failures.first() {
        Some(first) => Err(RevocationError::Attest {
            failed: failures.len(),
            total,
            state: "revocation",
            first: first.clone(),
        }),
        None => {
            if let Some(p) = &ctx.publisher {
                p.forget(&backoff_key(revocation));
            }
            Ok(Action::requeue(RECHECK))
        }
    }
}

/// Insert or update a condition; `lastTransitionTime` moves only when its status changes.
fn upsert(
    conditions: &mut Vec<Condition>,
    revocation: &MaterialRevocation,
    type_: &str,
    value: &str,
    reason: &str,
    message: &str,
) {
    let now = status::now();
    let generation = revocation.metadata.generation;
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != value {
                c.last_transition_time = now;
            }
            c.status = value.into();
            c.reason = reason.into();
            c.message = message.into();
            c.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: type_.into(),
            status: value.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: now,
            observed_generation: generation,
        }),
    }
}

/// Replace the whole status (a JSON patch `add /status`: a merge would keep a stale
/// `truncated`).
async fn write_status(
    revocation: &MaterialRevocation,
    status: &MaterialRevocationStatus,
    ctx: &Context,
) -> Result<(), Error> {
    let api: Api<MaterialRevocation> = Api::all(ctx.client.clone());
    let value = serde_json::to_value(status).map_err(|e| Error::Encode {
        what: "the revocation status",
        reason: e.to_string(),
    })?;
    let patch = serde_json::from_value(json!([{"op": "add", "path": "/status", "value": value}]))
        .map_err(|e| Error::Encode {
        what: "the revocation status patch",
        reason: e.to_string(),
    })?;
    api.patch_status(
        &revocation.name_any(),
        &PatchParams::default(),
        &Patch::Json::<()>(patch),
    )
    .await
    .map_err(kube_err(format!(
        "write the status of MaterialRevocation {}",
        revocation.name_any()
    )))?;
    Ok(())
}
