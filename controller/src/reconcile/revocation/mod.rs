//! The MaterialRevocation controller (docs/lineage.md, "Revocation lifecycle"), run beside the
//! TrainingRun one while leading, with a finalizer so that a deletion is acted on:
//! - apply: search the lineage of every signed record for the models that depend on the revoked
//!   material ([`affected`]), give each a signed revocation attestation ([`attest`]), mark their
//!   runs ([`runs`]), and write the status (count, list, paths, what is attached, errors).
//!   Re-run whenever a new record appears (a run that was already running when the revocation
//!   was created), and every [`RECHECK`] as a safety net.
//! - cleanup (deleted: a false alarm): a signed reinstatement on each model revoked before, the
//!   runs' condition cleared, then the finalizer goes.
//!
//! New runs that declare a revoked material are refused by the TrainingRun reconcile
//! ([`refuse`], through [`Watched::refusal`]). Registry errors are retried with backoff on this
//! controller's own queue and reported in the status; TrainingRun reconciles never wait on them.

pub mod affected;
mod attest;
pub mod refuse;
pub mod runs;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event, finalizer};
use kube::runtime::reflector::Store;
use serde_json::json;
use tracing::{info, warn};

use super::context::{Context, Error, kube_err};
use super::publish::record;
use super::status;
use crate::api::{
    AffectedRun, MaterialRevocation, MaterialRevocationStatus, TrainingRunSpec,
    revocation::MAX_LISTED,
};
use crate::lineage::{Hit, LineageIndex, ModelRef};
use crate::provenance::revocation::{Material, RevocationRef, State};
use crate::repository_policy;
use attest::{Attached, AttestError};

/// Finalizer on every MaterialRevocation: its deletion reinstates the models first.
pub const FINALIZER: &str = "provenant.dev/revocation";
/// How often a revocation is searched again without a new record (records deleted, runs whose
/// condition was overwritten).
pub const RECHECK: Duration = Duration::from_secs(600);
/// How long a run's reconcile waits for the cache of revocations to fill after a start.
const CACHE_WAIT: Duration = Duration::from_secs(10);

/// The revocations the controller watches, and what it did about them in this process.
pub struct Watched {
    store: Option<Store<MaterialRevocation>>,
    attached: Attached,
    /// (revocation uid, run uid, condition value) already written.
    marked: Mutex<HashSet<(String, String, String)>>,
}

impl Watched {
    pub fn new(store: Store<MaterialRevocation>) -> Self {
        Watched {
            store: Some(store),
            attached: Attached::default(),
            marked: Mutex::new(HashSet::new()),
        }
    }

    /// No revocations are watched (a reconcile test without the revocation controller).
    pub fn none() -> Self {
        Watched {
            store: None,
            attached: Attached::default(),
            marked: Mutex::new(HashSet::new()),
        }
    }

    /// Why a run with `spec` may not start, if it declares a revoked material. Waits for the
    /// cache after a start: a run must not slip through because it was not filled yet.
    pub async fn refusal(&self, spec: &TrainingRunSpec) -> Result<Option<String>, Error> {
        let Some(store) = &self.store else {
            return Ok(None);
        };
        if tokio::time::timeout(CACHE_WAIT, store.wait_until_ready())
            .await
            .map_or(true, |r| r.is_err())
        {
            return Err(Error::RevocationsNotSynced);
        }
        let all = store.state();
        Ok(refuse::check(spec, all.iter().map(|r| r.as_ref())))
    }

    /// Revocations in force (not being deleted), for the metrics.
    pub fn active(&self) -> usize {
        self.store.as_ref().map_or(0, |s| {
            s.state()
                .iter()
                .filter(|r| r.metadata.deletion_timestamp.is_none())
                .count()
        })
    }

    fn marked_once(&self, revocation: &str, run: &str, value: &str) -> bool {
        let mut marked = self.marked.lock().unwrap_or_else(|e| e.into_inner());
        !marked.insert((revocation.into(), run.into(), value.into()))
    }
}

/// Why a pass failed; retried. Variant names read well as metric labels.
#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    #[error(transparent)]
    Kube(#[from] Error),
    #[error("finalizer {FINALIZER}: {0}")]
    Finalizer(String),
    #[error("{failed} of {total} models did not get their {state} attestation yet; first: {first}")]
    Attest {
        failed: usize,
        total: usize,
        state: &'static str,
        first: String,
    },
}

impl RevocationError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            RevocationError::Kube(e) => e.metric_label(),
            RevocationError::Finalizer(_) => "Finalizer",
            RevocationError::Attest { .. } => "RevocationAttest",
        }
    }
}

/// Entry point called by the kube-runtime Controller.
pub async fn reconcile(
    revocation: Arc<MaterialRevocation>,
    ctx: Arc<Context>,
) -> Result<Action, RevocationError> {
    let api: Api<MaterialRevocation> = Api::all(ctx.client.clone());
    let result = finalizer(&api, FINALIZER, revocation, |event| async {
        match event {
            Event::Apply(r) => apply(&r, &ctx).await,
            Event::Cleanup(r) => cleanup(&r, &ctx).await,
        }
    })
    .await;
    ctx.metrics
        .revocations_active
        .set(ctx.revocations.active() as i64);
    result.map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => RevocationError::Finalizer(other.to_string()),
    })
}

/// Failed passes are counted and retried with the registry backoff (`retryInitialSeconds`,
/// doubling up to `retryMaxSeconds`).
pub fn error_policy(
    revocation: Arc<MaterialRevocation>,
    error: &RevocationError,
    ctx: Arc<Context>,
) -> Action {
    ctx.metrics
        .reconcile_errors
        .with_label_values(&[error.metric_label()])
        .inc();
    warn!(revocation = %revocation.name_any(), error = %error, "revocation pass failed; retrying");
    let delay = ctx.publisher.as_ref().map_or(Duration::from_secs(5), |p| {
        p.backoff(&backoff_key(&revocation))
    });
    Action::requeue(delay)
}

fn backoff_key(revocation: &MaterialRevocation) -> String {
    format!("revocation/{}", revocation.uid().unwrap_or_default())
}

/// What the statements of one revocation share.
struct Signed {
    revocation: RevocationRef,
    material: Material,
}

fn signed(revocation: &MaterialRevocation) -> Signed {
    Signed {
        revocation: RevocationRef {
            name: revocation.name_any(),
            uid: revocation.uid().unwrap_or_default(),
            reason: revocation.spec.reason.clone(),
            advisory: revocation.spec.advisory.clone(),
        },
        material: Material {
            type_: affected::predicate_type(revocation.spec.material.type_),
            digest: revocation.spec.material.digest.clone(),
        },
    }
}

/// The lineage of every signed record, indexed; and how many records could not be read.
async fn lineage(ctx: &Context) -> Result<(LineageIndex, Vec<(String, String)>), Error> {
    let records: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ctx.controller_namespace);
    let (entries, unreadable) = record::lineage_entries(&records).await?;
    for (name, why) in &unreadable {
        warn!(record = %name, reason = %why, "a record's lineage cannot be read");
    }
    Ok((LineageIndex::new(entries), unreadable))
}

/// The run that produced the model of `hit` (the last step, or for a revoked model itself the
/// run that recorded it).
fn producer(index: &LineageIndex, hit: &Hit) -> Option<AffectedRun> {
    let run = match hit.path.last() {
        Some(step) => step.run.clone(),
        None => index.upstream(&hit.model.digest)?.run,
    };
    Some(AffectedRun {
        namespace: run.namespace,
        name: run.name,
        uid: run.invocation_id,
    })
}

/// The credentials the repositoryPolicy gives the producing run's namespace for the model's
/// repository (the ones its provenance was attached with); the default ones otherwise.
fn credentials(ctx: &Context, run: Option<&AffectedRun>, model: &ModelRef) -> Option<String> {
    let namespace = run.map_or("", |r| r.namespace.as_str());
    repository_policy::grant(
        &ctx.config.provenance.repository_policy,
        namespace,
        &model.repository,
    )
    .ok()
    .and_then(|g| g.credentials_secret)
}

async fn apply(revocation: &MaterialRevocation, ctx: &Context) -> Result<Action, RevocationError> {
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

/// Sign and attach one model's statement (once), counted in the metrics.
async fn give(
    ctx: &Context,
    run: Option<&AffectedRun>,
    hit: &Hit,
    statement: &attest::Statement<'_>,
) -> Result<(), AttestError> {
    let Some(publisher) = &ctx.publisher else {
        return Err(AttestError::Key(
            "provenance is disabled in the controller configuration: nothing can be signed".into(),
        ));
    };
    let secret = credentials(ctx, run, &hit.model);
    let result = attest::attest(
        publisher,
        &ctx.revocations.attached,
        secret.as_deref(),
        hit,
        statement,
    )
    .await;
    let label = match (&result, statement.state) {
        (Ok(true), State::Revoked) => Some("revoked"),
        (Ok(true), State::Reinstated) => Some("reinstated"),
        (Ok(false), _) => None,
        (Err(_), _) => Some("failed"),
    };
    if let Some(label) = label {
        ctx.metrics
            .revocation_attestations
            .with_label_values(&[label])
            .inc();
    }
    result.map(|_| ())
}

async fn cleanup(
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
