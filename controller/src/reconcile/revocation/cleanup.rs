//! A revocation deleted (a false alarm): a signed reinstatement on each model revoked before,
//! the runs' condition cleared; the finalizer goes once every model is done.

use std::collections::HashSet;

use kube::ResourceExt;
use kube::runtime::controller::Action;

use super::{RevocationError, attest, give, producer, signed};
use crate::api::MaterialRevocation;
use crate::reconcile::context::Context;
use crate::reconcile::status;
use tracing::info;

use super::{affected, backoff_key, credentials, lineage, runs};
use crate::api::AffectedRun;
use crate::lineage::{Hit, ModelRef};
use crate::provenance::revocation::State;

pub(super) async fn cleanup(
    revocation: &MaterialRevocation,
    ctx: &Context,
) -> Result<Action, RevocationError> {
    let name = revocation.name_any();
    let what = signed(revocation);
    let uid = what.revocation.uid.clone();
    let time = revocation
        .metadata
        .deletion_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .unwrap_or_else(|| status::now().0.to_string());
    let (index, _) = lineage(ctx).await?;
    let mut hits = affected::find(&index, &revocation.spec.material);
    let listed = revocation
        .status
        .iter()
        .flat_map(|s| s.affected_models.iter());
    // Models listed before whose record is gone meanwhile are reinstated too (with no path).
    let known: HashSet<String> = hits.iter().map(|h| h.model.reference()).collect();
    let attached_before: HashSet<&str> = listed
        .clone()
        .filter(|m| m.attached)
        .map(|m| m.model.as_str())
        .collect();
    for model in listed.clone().filter(|m| !known.contains(&m.model)) {
        if let Some((repository, digest)) = model.model.rsplit_once('@') {
            hits.push(Hit {
                model: ModelRef {
                    repository: repository.into(),
                    digest: digest.into(),
                },
                path: Vec::new(),
            });
        }
    }
    let runs_listed: Vec<AffectedRun> = listed.filter_map(|m| m.run.clone()).collect();

    let mut failures = Vec::new();
    let mut reinstated = 0;
    for hit in &hits {
        let run = producer(&index, hit);
        let secret = credentials(ctx, run.as_ref(), &hit.model);
        let revoked = attached_before.contains(hit.model.reference().as_str())
            || match &ctx.publisher {
                Some(p) => {
                    match attest::was_revoked(
                        p,
                        &ctx.revocations.attached,
                        secret.as_deref(),
                        hit,
                        &uid,
                    )
                    .await
                    {
                        Ok(revoked) => revoked,
                        Err(e) => {
                            failures.push(format!("{}: {e}", hit.model.reference()));
                            continue;
                        }
                    }
                }
                None => false,
            };
        if !revoked {
            continue;
        }
        let statement = attest::Statement {
            state: State::Reinstated,
            revocation: &what.revocation,
            material: &what.material,
            time: &time,
        };
        match give(ctx, run.as_ref(), hit, &statement).await {
            Ok(()) => reinstated += 1,
            Err(e) => failures.push(format!("{}: {e}", hit.model.reference())),
        }
    }
    if let Some(first) = failures.first() {
        return Err(RevocationError::Attest {
            failed: failures.len(),
            total: hits.len(),
            state: "reinstatement",
            first: first.clone(),
        });
    }

    let message = format!(
        "MaterialRevocation {name} was withdrawn (deleted): the model is reinstated ({})",
        what.revocation.reason
    );
    let mention = format!("MaterialRevocation {name}:");
    let mut runs: Vec<AffectedRun> = hits.iter().filter_map(|h| producer(&index, h)).collect();
    runs.extend(runs_listed);
    let mut seen = HashSet::new();
    for run in runs.iter().filter(|r| seen.insert(r.uid.clone())) {
        let mark = runs::Mark {
            value: "False",
            reason: runs::REINSTATED,
            message: &message,
            only_if_mentions: Some(&mention),
        };
        runs::mark(ctx, run, &mark).await?;
    }
    ctx.revocations.attached.forget(&uid);
    ctx.revocations
        .marked
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|(r, _, _)| *r != uid);
    if let Some(p) = &ctx.publisher {
        p.forget(&backoff_key(revocation));
    }
    info!(revocation = %name, reinstated, "revocation withdrawn: models reinstated");
    Ok(Action::await_change())
}
