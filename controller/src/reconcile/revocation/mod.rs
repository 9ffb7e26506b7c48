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
mod apply;
mod attest;
mod cleanup;
pub mod refuse;
pub mod runs;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event, finalizer};
use kube::runtime::reflector::Store;
use tracing::warn;

use super::context::{Context, Error};
use super::publish::record;
use crate::api::{AffectedRun, MaterialRevocation, TrainingRunSpec};
use crate::lineage::{Hit, LineageIndex, ModelRef};
use crate::metrics::reason;
use crate::provenance::revocation::{Material, RevocationRef, State};
use crate::repository_policy;
use attest::{Attached, AttestError};

/// Finalizer on every MaterialRevocation: its deletion reinstates the models first.
pub const FINALIZER: &str = "provenant.dev/revocation";
/// How often a revocation is searched again without a new record (a safety net: a record event
/// missed while the watch reconnected).
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
            RevocationError::Finalizer(_) => reason::FINALIZER,
            RevocationError::Attest { .. } => reason::REVOCATION_ATTEST,
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
            Event::Apply(r) => apply::apply(&r, &ctx).await,
            Event::Cleanup(r) => cleanup::cleanup(&r, &ctx).await,
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

pub(super) fn backoff_key(revocation: &MaterialRevocation) -> String {
    format!("revocation/{}", revocation.uid().unwrap_or_default())
}

/// What the statements of one revocation share.
pub(super) struct Signed {
    pub(super) revocation: RevocationRef,
    pub(super) material: Material,
}

pub(super) fn signed(revocation: &MaterialRevocation) -> Signed {
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
pub(super) async fn lineage(ctx: &Context) -> Result<(LineageIndex, Vec<(String, String)>), Error> {
    let records: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ctx.controller_namespace);
    let (entries, unreadable) = record::lineage_entries(&records).await?;
    for (name, why) in &unreadable {
        warn!(record = %name, reason = %why, "a record's lineage cannot be read");
    }
    Ok((LineageIndex::new(entries), unreadable))
}

/// The run that produced the model of `hit` (the last step, or for a revoked model itself the
/// run that recorded it).
pub(super) fn producer(index: &LineageIndex, hit: &Hit) -> Option<AffectedRun> {
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
pub(super) fn credentials(
    ctx: &Context,
    run: Option<&AffectedRun>,
    model: &ModelRef,
) -> Option<String> {
    let namespace = run.map_or("", |r| r.namespace.as_str());
    repository_policy::grant(
        &ctx.config.provenance.repository_policy,
        namespace,
        &model.repository,
    )
    .ok()
    .and_then(|g| g.credentials_secret)
}
/// Sign and attach one model's statement (once), counted in the metrics.
pub(super) async fn give(
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
