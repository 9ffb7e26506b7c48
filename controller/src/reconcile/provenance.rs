//! Resolve, attest and report for a succeeded run: the Kubernetes side of the provenance engine.
//!
//! `Pending` → resolve the outputs in the registry → build and sign the statement → persist the
//! signed record in a ConfigMap owned by the run (before any registry write) → `Signed` → attach
//! in the registry → `Attached`. A crash or an outage at any point resumes from the last state
//! recorded; the persisted record is reused, so the same envelope is attached, never a new
//! signature. Transient registry errors retry with capped exponential backoff; permanent ones end in
//! `Failed` with the registry's message.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use super::context::{Context, Error, kube_err};
use super::queue::Next;
use super::status::{now, publish, write_status};
use crate::api::{ProvenanceState, ProvenanceStatus, TrainingRun, TrainingRunStatus};
use crate::attest::{self, SignedRecord};
use crate::labels;
use crate::provenance::{self, BuilderIdentity};
use crate::secrets::{RegistryCredentials, SigningKey};
use crate::storage::{
    AttestationStore, ErrorKind, RegistryOptions, RegistryStore, RetryPolicy, Subject,
};

/// Condition types of this step.
pub const PROVENANCE_SIGNED: &str = "ProvenanceSigned";
pub const PROVENANCE_ATTACHED: &str = "ProvenanceAttached";

/// What the attest step needs besides the client.
pub struct Attestor {
    pub key: Arc<SigningKey>,
    pub credentials: Arc<RegistryCredentials>,
    pub builder: BuilderIdentity,
    insecure: Vec<String>,
    attempts: u32,
    observer: Option<crate::storage::Observer>,
    store: Mutex<Option<(u64, Arc<dyn AttestationStore>)>>,
    /// Consecutive transient failures per run UID, for the backoff between reconciles.
    failures: Mutex<HashMap<String, u32>>,
    /// Runs this process attached: a reconcile started from a cache that has not seen the
    /// `Attached` status yet must not attach (and read every tag) again.
    attached: Mutex<HashSet<String>>,
}

impl Attestor {
    pub fn new(
        key: Arc<SigningKey>,
        credentials: Arc<RegistryCredentials>,
        builder: BuilderIdentity,
        insecure: Vec<String>,
        attempts: u32,
        observer: Option<crate::storage::Observer>,
    ) -> Self {
        Attestor {
            key,
            credentials,
            builder,
            insecure,
            attempts,
            observer,
            store: Mutex::new(None),
            failures: Mutex::new(HashMap::new()),
            attached: Mutex::new(HashSet::new()),
        }
    }

    /// The registry store for the current credentials (rebuilt when they change).
    pub fn store(&self) -> Arc<dyn AttestationStore> {
        let (generation, credentials) = self.credentials.get();
        let mut cached = self.store.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((g, store)) = cached.as_ref()
            && *g == generation
        {
            return store.clone();
        }
        let store: Arc<dyn AttestationStore> = Arc::new(RegistryStore::new(RegistryOptions {
            insecure_registries: self.insecure.clone(),
            credentials,
            retry: RetryPolicy {
                attempts: self.attempts.max(1),
                ..RetryPolicy::default()
            },
            observer: self.observer.clone(),
            ..RegistryOptions::default()
        }));
        *cached = Some((generation, store.clone()));
        store
    }

    fn backoff(&self, uid: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(uid.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        // 2 s, 4 s, ... capped at 5 minutes.
        Duration::from_secs((1u64 << (*n).min(9)).min(300))
    }

    fn forget(&self, uid: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
    }
}

/// [`super::decide::upsert`] at the current time.
fn upsert(
    status: &mut TrainingRunStatus,
    type_: &str,
    value: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) {
    super::decide::upsert(status, type_, value, reason, message, generation, &now());
}

/// Name of the ConfigMap holding a run's signed record.
pub fn record_config_map(run: &TrainingRun) -> String {
    format!("{}-provenance", run.name_any())
}

fn provenance_status(status: &mut TrainingRunStatus) -> &mut ProvenanceStatus {
    status.provenance.get_or_insert_with(|| ProvenanceStatus {
        state: ProvenanceState::Pending,
        predicate_type: None,
        envelope_digest: None,
        key_id: None,
        envelope_config_map: None,
        attestations: vec![],
        signed_at: None,
        attached_at: None,
    })
}

/// Drive a succeeded run's provenance one step further (on a provenance worker, see
/// [`super::queue`]). Returns when to come back.
pub async fn attest_run(
    run: &TrainingRun,
    namespace: &str,
    ctx: &Context,
    attestor: &Attestor,
) -> Result<Next, Error> {
    let mut status = run.status.clone().unwrap_or_default();
    let uid = run.uid().unwrap_or_default();
    let state = status
        .provenance
        .as_ref()
        .map_or(ProvenanceState::Pending, |p| p.state);
    let cm_api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), namespace);

    if attestor
        .attached
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains(&uid)
    {
        // Already attached by this process; the cache will catch up with the status.
        return Ok(Next::Done);
    }
    let record = match state {
        ProvenanceState::Pending => match existing_record(run, &cm_api).await? {
            // Signed before a crash, the status not yet updated: reuse, never sign again.
            Some(record) => {
                mark_signed(run, &mut status, &record);
                write_status(run, namespace, status.clone(), ctx).await?;
                record
            }
            None => {
                match sign_and_persist(run, namespace, &mut status, ctx, attestor, &cm_api).await? {
                    Ok(record) => record,
                    Err(next) => return Ok(next),
                }
            }
        },
        ProvenanceState::Signed => match existing_record(run, &cm_api).await? {
            Some(record) => record,
            None => {
                // Someone deleted the persisted record: the envelope cannot be recovered, so the
                // run is signed anew (the only way forward), loudly.
                warn!(
                    config_map = record_config_map(run),
                    "persisted provenance record is gone; signing again"
                );
                publish(
                    ctx,
                    run,
                    EventType::Warning,
                    "ProvenanceRecordLost",
                    "the ConfigMap holding the signed provenance was deleted; signing again",
                )
                .await;
                provenance_status(&mut status).state = ProvenanceState::Pending;
                write_status(run, namespace, status, ctx).await?;
                return Ok(Next::RetryIn(Duration::from_secs(1)));
            }
        },
        _ => return Ok(Next::Done),
    };

    // Attach.
    let store = attestor.store();
    match attest::attach(&record, store.as_ref()).await {
        Ok(references) => {
            attestor.forget(&uid);
            let p = provenance_status(&mut status);
            p.state = ProvenanceState::Attached;
            p.attestations = references.clone();
            p.attached_at = Some(now());
            upsert(
                &mut status,
                PROVENANCE_ATTACHED,
                "True",
                "Attached",
                &format!(
                    "attached to {}",
                    record
                        .subjects()
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                run.metadata.generation,
            );
            write_status(run, namespace, status.clone(), ctx).await?;
            // Only once the status says so: a failed write must let the next reconcile retry.
            attestor
                .attached
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(uid.clone());
            ctx.metrics
                .attestations
                .with_label_values(&["attached"])
                .inc();
            if let Some(done) = status.completion_time.as_ref() {
                let lag = (Timestamp::now() - done.0)
                    .total(jiff::Unit::Second)
                    .unwrap_or(0.0)
                    .max(0.0);
                ctx.metrics.provenance_lag.observe(lag);
            }
            info!(references = ?references, "provenance attached");
            publish(
                ctx,
                run,
                EventType::Normal,
                "ProvenanceAttached",
                &format!("attached: {}", references.join(", ")),
            )
            .await;
            Ok(Next::Done)
        }
        Err(attest::AttestError::Storage(e)) if e.is_transient() => {
            let wait = attestor.backoff(&uid);
            upsert(
                &mut status,
                PROVENANCE_ATTACHED,
                "Unknown",
                "RegistryUnavailable",
                &format!("attach pending, retrying in {}s: {e}", wait.as_secs()),
                run.metadata.generation,
            );
            write_status(run, namespace, status, ctx).await?;
            warn!(error = %e, retry_in = ?wait, "registry unavailable; attach pending");
            Ok(Next::RetryIn(wait))
        }
        Err(e) => {
            attestor.forget(&uid);
            provenance_status(&mut status).state = ProvenanceState::Failed;
            let message = format!("the registry refused the attestation: {e}");
            upsert(
                &mut status,
                PROVENANCE_ATTACHED,
                "False",
                "RegistryRejected",
                &message,
                run.metadata.generation,
            );
            write_status(run, namespace, status, ctx).await?;
            ctx.metrics
                .attestations
                .with_label_values(&["failed"])
                .inc();
            publish(ctx, run, EventType::Warning, "RegistryRejected", &message).await;
            Ok(Next::Done)
        }
    }
}

/// Resolve the outputs, build and sign the statement, persist it. Err(next) when the run must
/// wait (key or registry unavailable) or failed permanently (status already written).
async fn sign_and_persist(
    run: &TrainingRun,
    namespace: &str,
    status: &mut TrainingRunStatus,
    ctx: &Context,
    attestor: &Attestor,
    cm_api: &Api<ConfigMap>,
) -> Result<Result<SignedRecord, Next>, Error> {
    let uid = run.uid().unwrap_or_default();
    let generation = run.metadata.generation;

    // Resolve: every output must exist in the registry with the reported digest.
    let store = attestor.store();
    // Always re-checked here, never taken from the status (which others could have written):
    // the repository must be inside spec.output.repository and the manifest must resolve.
    let allowed = run.spec.output.repository.clone();
    for output in status.outputs.iter_mut() {
        let inside =
            output.repository == allowed || output.repository.starts_with(&format!("{allowed}/"));
        if !inside {
            let message = format!(
                "output {} is outside spec.output.repository {allowed}",
                output.uri
            );
            return fail(
                run,
                namespace,
                status.clone(),
                ctx,
                "OutputOutsideRepository",
                &message,
            )
            .await
            .map(Err);
        }
        output.verified = false;
        let subject = Subject::new(output.repository.clone(), output.digest.clone());
        match store.resolve(&subject).await {
            Ok(_) => output.verified = true,
            Err(e) if e.kind() == ErrorKind::NotFound || e.kind() == ErrorKind::DigestMismatch => {
                let reason = if e.kind() == ErrorKind::NotFound {
                    "OutputNotFound"
                } else {
                    "OutputDigestMismatch"
                };
                let message = format!("output {subject}: {e}");
                return fail(run, namespace, status.clone(), ctx, reason, &message)
                    .await
                    .map(Err);
            }
            Err(e) if e.is_transient() => {
                let wait = attestor.backoff(&uid);
                let mut status = status.clone();
                upsert(
                    &mut status,
                    PROVENANCE_SIGNED,
                    "Unknown",
                    "RegistryUnavailable",
                    &format!(
                        "cannot resolve {subject} yet, retrying in {}s: {e}",
                        wait.as_secs()
                    ),
                    generation,
                );
                write_status(run, namespace, status, ctx).await?;
                return Ok(Err(Next::RetryIn(wait)));
            }
            Err(e) => {
                let message = format!("output {subject}: {e}");
                return fail(
                    run,
                    namespace,
                    status.clone(),
                    ctx,
                    "OutputUnresolvable",
                    &message,
                )
                .await
                .map(Err);
            }
        }
    }

    // Build the statement from the spec and the recorded (now verified) status.
    let placement = match ctx.config.placement(run.spec.accelerator.as_ref()) {
        Ok(p) => p,
        Err(e) => {
            return fail(
                run,
                namespace,
                status.clone(),
                ctx,
                "InvalidRun",
                &e.to_string(),
            )
            .await
            .map(Err);
        }
    };
    let mut verified = run.clone();
    verified.status = Some(status.clone());
    let statement = match provenance::statement_for_run(&verified, &placement, &attestor.builder) {
        Ok(s) => s,
        Err(e) => {
            return fail(
                run,
                namespace,
                status.clone(),
                ctx,
                e.reason(),
                &e.to_string(),
            )
            .await
            .map(Err);
        }
    };

    // Sign.
    let signer = match attestor.key.get() {
        Ok(signer) => signer,
        Err(reason) => {
            let mut status = status.clone();
            upsert(
                &mut status,
                PROVENANCE_SIGNED,
                "False",
                "SigningKeyUnavailable",
                &reason,
                generation,
            );
            write_status(run, namespace, status, ctx).await?;
            publish(
                ctx,
                run,
                EventType::Warning,
                "SigningKeyUnavailable",
                &reason,
            )
            .await;
            return Ok(Err(Next::RetryIn(Duration::from_secs(15))));
        }
    };
    let started = Instant::now();
    let record = match attest::sign(&statement, signer.as_ref()) {
        Ok(record) => record,
        Err(e) => {
            let mut status = status.clone();
            upsert(
                &mut status,
                PROVENANCE_SIGNED,
                "False",
                e.reason(),
                &e.to_string(),
                generation,
            );
            write_status(run, namespace, status, ctx).await?;
            return Ok(Err(Next::RetryIn(Duration::from_secs(30))));
        }
    };
    ctx.metrics
        .signing_duration
        .observe(started.elapsed().as_secs_f64());

    // Persist before any registry write.
    let Some(record) = persist(run, namespace, cm_api, record).await? else {
        let message = format!(
            "ConfigMap {} exists and does not belong to this run: delete or rename it, then recreate the run",
            record_config_map(run)
        );
        return fail(
            run,
            namespace,
            status.clone(),
            ctx,
            "ProvenanceRecordConflict",
            &message,
        )
        .await
        .map(Err);
    };
    mark_signed(run, status, &record);
    write_status(run, namespace, status.clone(), ctx).await?;
    publish(
        ctx,
        run,
        EventType::Normal,
        "ProvenanceSigned",
        &format!(
            "signed with key {}; envelope {} persisted in ConfigMap {}",
            record.key_id,
            record.envelope_digest(),
            record_config_map(run)
        ),
    )
    .await;
    Ok(Ok(record))
}

fn mark_signed(run: &TrainingRun, status: &mut TrainingRunStatus, record: &SignedRecord) {
    let p = provenance_status(status);
    p.state = ProvenanceState::Signed;
    p.predicate_type = Some(record.predicate_type.clone());
    p.envelope_digest = Some(record.envelope_digest());
    p.key_id = Some(record.key_id.clone());
    p.envelope_config_map = Some(record_config_map(run));
    p.signed_at.get_or_insert_with(now);
    upsert(
        status,
        PROVENANCE_SIGNED,
        "True",
        "Signed",
        &format!(
            "envelope {} signed with key {}",
            record.envelope_digest(),
            record.key_id
        ),
        run.metadata.generation,
    );
    if !status
        .conditions
        .iter()
        .any(|c| c.type_ == PROVENANCE_ATTACHED)
    {
        upsert(
            status,
            PROVENANCE_ATTACHED,
            "Unknown",
            "Pending",
            "attach pending",
            run.metadata.generation,
        );
    }
}

async fn fail(
    run: &TrainingRun,
    namespace: &str,
    mut status: TrainingRunStatus,
    ctx: &Context,
    reason: &str,
    message: &str,
) -> Result<Next, Error> {
    provenance_status(&mut status).state = ProvenanceState::Failed;
    upsert(
        &mut status,
        PROVENANCE_SIGNED,
        "False",
        reason,
        message,
        run.metadata.generation,
    );
    upsert(
        &mut status,
        PROVENANCE_ATTACHED,
        "False",
        reason,
        message,
        run.metadata.generation,
    );
    write_status(run, namespace, status, ctx).await?;
    ctx.metrics
        .attestations
        .with_label_values(&["failed"])
        .inc();
    publish(ctx, run, EventType::Warning, reason, message).await;
    Ok(Next::Done)
}

/// The record persisted for this run, if any (only a ConfigMap the run owns counts).
async fn existing_record(
    run: &TrainingRun,
    api: &Api<ConfigMap>,
) -> Result<Option<SignedRecord>, Error> {
    let Some(cm) = api
        .get_opt(&record_config_map(run))
        .await
        .map_err(kube_err("get provenance ConfigMap"))?
    else {
        return Ok(None);
    };
    if !super::workers::owned_by(&cm, run) {
        return Ok(None);
    }
    let data = cm.data.unwrap_or_default();
    match attest::from_config_map_data(&data) {
        Ok(record) => Ok(Some(record)),
        Err(e) => {
            warn!(error = %e, "persisted provenance record unreadable; ignoring it");
            Ok(None)
        }
    }
}

/// Create the ConfigMap; if it already exists (another attempt won the race), use what it holds.
async fn persist(
    run: &TrainingRun,
    namespace: &str,
    api: &Api<ConfigMap>,
    record: SignedRecord,
) -> Result<Option<SignedRecord>, Error> {
    let name = record_config_map(run);
    let mut cm_labels = BTreeMap::from([
        (labels::RUN.to_string(), run.name_any()),
        (labels::RUN_UID.to_string(), run.uid().unwrap_or_default()),
        (labels::MANAGED_BY.to_string(), labels::MANAGER.to_string()),
    ]);
    cm_labels.insert("provenant.dev/component".into(), "provenance".into());
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
        data: Some(attest::to_config_map_data(&record)),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &cm).await {
        Ok(_) => Ok(Some(record)),
        // Ours (another attempt won the race): use what it holds. Someone else's: None.
        Err(kube::Error::Api(s)) if s.code == 409 => existing_record(run, api).await,
        Err(e) => Err(kube_err(format!("create ConfigMap {name}"))(e)),
    }
}
