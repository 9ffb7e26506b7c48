//! The I/O of a publish pass: resolve the outputs and sign (then persist) the statement, and
//! attach a signed record. Each returns what happened; [`super::conclude`] decides what it means.

use std::time::Instant;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::Api;

use super::conclude::{Attach, Outcome, REGISTRY_UNAUTHORIZED};
use super::record::{self, Persisted};
use crate::api::{TrainingRun, TrainingRunStatus};
use crate::engine::{self, EngineError, SignedRecord};
use crate::execute::placement;
use crate::observe::report::inside;
use crate::provenance;
use crate::reconcile::context::{Context, Error};
use crate::reconcile::fairness::{is_unauthorized, registry_host};
use crate::reconcile::publisher::Publisher;
use crate::signing::PublicKey;
use crate::storage::{ErrorKind, StorageError, Subject};

/// Resolve every output in the registry (marking it verified), build the statement from the
/// spec and the verified status, sign it and persist the record. `Ok(Err(outcome))` when the run
/// must wait or failed permanently.
pub async fn sign(
    run: &TrainingRun,
    status: &mut TrainingRunStatus,
    ctx: &Context,
    publisher: &Publisher,
    records: &Api<ConfigMap>,
    credentials: Option<&str>,
) -> Result<Result<SignedRecord, Outcome>, Error> {
    let failed = |reason: &str, message: String| {
        Ok(Err(Outcome::Failed {
            reason: reason.to_string(),
            message,
        }))
    };

    // Always re-checked here, never taken from the status (which others could have written):
    // the repository must be inside spec.output.repository and the manifest must resolve.
    let store = publisher.store_for(credentials);
    let allowed = run.spec.output.repository.clone();
    for output in status.outputs.iter_mut() {
        if !inside(&output.repository, &allowed) {
            let message = format!(
                "output {} is outside spec.output.repository {allowed}",
                output.uri
            );
            return failed("OutputOutsideRepository", message);
        }
        output.verified = false;
        let subject = Subject::new(output.repository.clone(), output.digest.clone());
        match store.resolve(&subject).await {
            Ok(_) => output.verified = true,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return failed("OutputNotFound", format!("output {subject}: {e}"));
            }
            Err(e) if e.kind() == ErrorKind::DigestMismatch => {
                return failed("OutputDigestMismatch", format!("output {subject}: {e}"));
            }
            Err(e) if is_unauthorized(e.status()) => {
                let (message, wait) = refused(run, publisher, &e);
                return match wait {
                    Some(wait) => Ok(Err(Outcome::ResolveUnauthorized { message, wait })),
                    None => failed(REGISTRY_UNAUTHORIZED, message),
                };
            }
            Err(e) if e.is_transient() => {
                let wait = publisher.backoff(&run.uid().unwrap_or_default());
                let message = format!(
                    "cannot resolve {subject} yet, retrying in {}s: {e}",
                    wait.as_secs()
                );
                return Ok(Err(Outcome::ResolveUnavailable { message, wait }));
            }
            Err(e) => return failed("OutputUnresolvable", format!("output {subject}: {e}")),
        }
    }

    // Build the statement from the spec and the recorded (now verified) status.
    let placement = match placement(&ctx.config, run.spec.accelerator.as_ref()) {
        Ok(p) => p,
        Err(e) => return failed("InvalidRun", e.to_string()),
    };
    let mut verified = run.clone();
    verified.status = Some(status.clone());
    let statement = match provenance::statement_for_run(&verified, &placement, &publisher.builder) {
        Ok(s) => s,
        Err(e) => return failed(e.reason(), e.to_string()),
    };

    let signer = match publisher.key.get() {
        Ok(signer) => signer,
        Err(message) => return Ok(Err(Outcome::KeyUnavailable { message })),
    };
    let started = Instant::now();
    let record = match engine::sign(&statement, signer.as_ref()) {
        Ok(record) => record,
        Err(e) => {
            let outcome = Outcome::SigningFailed {
                reason: e.reason().to_string(),
                message: e.to_string(),
            };
            return Ok(Err(outcome));
        }
    };
    ctx.metrics
        .signing_duration
        .observe(started.elapsed().as_secs_f64());

    // Persisted before any registry write.
    match record::persist(run, &ctx.controller_namespace, records, &record).await? {
        Persisted::Created => Ok(Ok(record)),
        // Another pass persisted first: that record is the one, if it checks out.
        Persisted::Exists(found) => {
            let vetted = vet(run, status, publisher, found);
            if let Err(Outcome::RecordRejected { .. }) = &vetted {
                record::remove(records, &record::config_map_name(run)).await?;
            }
            Ok(vetted)
        }
        Persisted::TooLarge(e) => failed("ProvenanceTooLarge", e.to_string()),
    }
}

/// A persisted record as read, if it is the controller's own for this run
/// ([`engine::check_record`]); else why not, as the outcome of the pass.
#[expect(
    clippy::result_large_err,
    reason = "built once per pass, and what the pass concludes from"
)]
pub fn vet(
    run: &TrainingRun,
    status: &TrainingRunStatus,
    publisher: &Publisher,
    found: Result<SignedRecord, String>,
) -> Result<SignedRecord, Outcome> {
    let signer = publisher
        .key
        .get()
        .map_err(|message| Outcome::KeyUnavailable { message })?;
    let key =
        PublicKey::from_pem(signer.public_key_pem()).map_err(|e| Outcome::KeyUnavailable {
            message: format!("the signing key's public half does not load: {e}"),
        })?;
    let subjects: Vec<Subject> = status
        .outputs
        .iter()
        .filter(|o| inside(&o.repository, &run.spec.output.repository))
        .map(|o| Subject::new(o.repository.clone(), o.digest.clone()))
        .collect();
    let uid = run.uid().unwrap_or_default();
    found
        .and_then(|record| {
            engine::check_record(&record, &key, &uid, &subjects)
                .map(|()| record)
                .map_err(|e| e.0)
        })
        .map_err(|why| Outcome::RecordRejected {
            message: format!(
                "the persisted provenance record {} was not used: {why}",
                record::config_map_name(run)
            ),
        })
}

/// Attach a signed record to every subject in the registry.
pub async fn attach(
    run: &TrainingRun,
    record: &SignedRecord,
    publisher: &Publisher,
    credentials: Option<&str>,
) -> Attach {
    let store = publisher.store_for(credentials);
    match engine::attach(record, store.as_ref(), publisher.encoding).await {
        Ok(references) => Attach::Attached(references),
        Err(EngineError::Storage(e)) if is_unauthorized(e.status()) => {
            let (message, wait) = refused(run, publisher, &e);
            Attach::Unauthorized { message, wait }
        }
        Err(EngineError::Storage(e)) if e.is_transient() => {
            let wait = publisher.backoff(&run.uid().unwrap_or_default());
            let message = format!("attach pending, retrying in {}s: {e}", wait.as_secs());
            Attach::Unavailable { message, wait }
        }
        Err(e) => Attach::Rejected(format!("the registry refused the attestation: {e}")),
    }
}

/// A pass of `run` met 401/403 (`e`): the message naming the registry host (of the reference
/// refused) and how many tries are left, and the wait before the next (`None`: the run fails).
fn refused(
    run: &TrainingRun,
    publisher: &Publisher,
    e: &StorageError,
) -> (String, Option<std::time::Duration>) {
    let (n, wait) = publisher.refused(&run.uid().unwrap_or_default());
    let of = publisher.unauthorized_attempts();
    let host = registry_host(e.target());
    let head = format!("registry {host} refused the controller's credentials: {e}");
    let message = match wait {
        Some(wait) => format!(
            "{head}; attempt {n} of {of}, retrying in {}s (credentials may be rotating)",
            wait.as_secs()
        ),
        None => format!(
            "{head}; gave up after {n} attempts (check provenance.registry.credentialsSecret and the registry's access policy)"
        ),
    };
    (message, wait)
}
