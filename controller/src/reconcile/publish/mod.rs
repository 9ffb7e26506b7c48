//! Publish a succeeded run's provenance, on the publish workers (apart from the reconciles, so
//! registry I/O never holds a reconcile slot): resolve its outputs in the registry, build and
//! sign the statement, persist the signed record before any registry write, attach it.
//!
//! `Pending` → signed and persisted → `Signed` → attached → `Attached`. One pass goes as far as
//! it can: gather (the persisted record), do the steps ([`steps`]), conclude ([`conclude`],
//! pure), then write the status once and tell (events, metrics). A crash or an outage at any
//! point resumes from what was persisted: the same envelope is attached, never a new signature.
//! Transient registry errors retry with capped exponential backoff; permanent ones end in
//! `Failed` with the registry's message.

pub mod conclude;
pub mod record;
mod steps;

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use tracing::{Instrument, debug, info, info_span, warn};

use super::contain;
use super::context::{Context, Error};
use super::fairness::{Bucket, HostSlots, registry_host};
use super::publisher::Publisher;
use super::queue::Receiver;
use super::{decide, status};
use crate::api::{ProvenanceState, TrainingRun};
use crate::repository_policy;
pub use conclude::{Attach, Next, Outcome, PROVENANCE_ATTACHED, PROVENANCE_SIGNED};

/// Pause after an error of the Kubernetes API during a pass (as for reconciles).
const API_ERROR_RETRY: Duration = Duration::from_secs(5);
/// How often the records of deleted runs are looked for (runs deleted after their finalizer was
/// released, or while no controller ran).
const SWEEP_INTERVAL: Duration = Duration::from_secs(600);

/// Until `halt` resolves: once the cache of runs has synced, and then every [`SWEEP_INTERVAL`],
/// delete the persisted records of runs that no longer exist. `scope`: the one namespace this
/// controller watches, if it watches one (records of other namespaces are left alone).
pub async fn sweep_records(
    ctx: Arc<Context>,
    runs: Store<TrainingRun>,
    scope: Option<String>,
    halt: impl Future<Output = ()>,
) {
    tokio::pin!(halt);
    let sweeps = async {
        if runs.wait_until_ready().await.is_err() {
            return;
        }
        let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ctx.controller_namespace);
        loop {
            // A record is only ever written for a run already in this cache, so a record whose
            // run is missing from it belongs to a deleted run.
            let live = runs
                .state()
                .iter()
                .filter_map(|r| r.uid())
                .collect::<std::collections::HashSet<_>>();
            match record::sweep(&api, &live, scope.as_deref()).await {
                Ok(0) => {}
                Ok(n) => info!(
                    deleted = n,
                    "deleted the provenance records of deleted runs"
                ),
                Err(e) => warn!(error = %e, "cannot sweep provenance records; retrying later"),
            }
            tokio::time::sleep(SWEEP_INTERVAL).await;
        }
    };
    tokio::select! {
        () = &mut halt => {}
        () = sweeps => {}
    }
}

/// Work the queue with at most `workers` passes at once until `halt` resolves; then let the passes
/// in progress finish (a dropped future, on a lost Lease, stops them at once instead). One run is
/// worked by one worker at a time; a pass that must wait sleeps outside the pool, then the run is
/// worked again from the controller's cache, so it always sees the latest object. At most
/// `provenance.registry.concurrencyPerHost` passes talk to one registry host at once (and, when
/// set, `concurrencyPerNamespace` run for one namespace): the runs of a host at its limit are
/// parked without a worker until one of its passes ends, so a dead registry holds its share of
/// the workers and the other tenants' runs get the rest.
pub async fn work(
    Receiver(mut rx): Receiver,
    ctx: Arc<Context>,
    runs: Store<TrainingRun>,
    workers: usize,
    halt: impl Future<Output = ()>,
) {
    let workers = workers.max(1);
    let registry = &ctx.config.provenance.registry;
    let (per_host, per_namespace) = (
        registry.concurrency_per_host(workers),
        registry.concurrency_per_namespace,
    );
    let mut slots = HostSlots::default();
    let mut ready: VecDeque<ObjectRef<TrainingRun>> = VecDeque::new();
    let mut passes = FuturesUnordered::new();
    let mut waiting = FuturesUnordered::new();
    tokio::pin!(halt);
    loop {
        while passes.len() < workers {
            let Some(key) = ready.pop_front() else { break };
            match runs.get(&key) {
                Some(run) => {
                    // Outputs are always inside spec.output.repository: one host per run.
                    let host = registry_host(&run.spec.output.repository);
                    let mut buckets = vec![Bucket::host(&host, per_host)];
                    if let Some(limit) = per_namespace {
                        let namespace = run.namespace().unwrap_or_default();
                        buckets.push(Bucket::namespace(&namespace, limit as usize));
                    }
                    match slots.admit(&buckets, key) {
                        Some(key) => passes.push(pass_of(run, ctx.clone(), key, buckets)),
                        None => {
                            debug!(%host, "registry host or namespace at its limit; run parked")
                        }
                    }
                }
                // Deleted meanwhile (its finalizer released): nothing left to do.
                None => ctx.queue.finished(&key),
            }
        }
        tokio::select! {
            () = &mut halt => break,
            Some(key) = rx.recv() => ready.push_back(key),
            Some((key, buckets, next)) = passes.next(), if !passes.is_empty() => {
                ready.extend(slots.release(&buckets));
                match next {
                    Next::Done => ctx.queue.finished(&key),
                    Next::RetryIn(wait) => waiting.push(async move {
                        tokio::time::sleep(wait).await;
                        key
                    }),
                }
            }
            Some(key) = waiting.next(), if !waiting.is_empty() => ready.push_back(key),
        }
    }
    while passes.next().await.is_some() {}
}

/// One pass for the latest version of a run, unless it no longer owes its provenance; its
/// `buckets` (registry host, namespace) are handed back with the result, to free their slots.
async fn pass_of(
    run: Arc<TrainingRun>,
    ctx: Arc<Context>,
    key: ObjectRef<TrainingRun>,
    buckets: Vec<Bucket>,
) -> (ObjectRef<TrainingRun>, Vec<Bucket>, Next) {
    let namespace = run.namespace().unwrap_or_default();
    let span = info_span!("provenance", namespace = %namespace, run = %run.name_any());
    let recorded = run.status.clone().unwrap_or_default();
    // The run may have moved on since it was queued (attached, or provenance switched off).
    let Some(publisher) = ctx
        .publisher
        .as_deref()
        .filter(|_| decide::owes_provenance(&recorded, true))
    else {
        return (key, buckets, Next::Done);
    };
    // A panic stays with this run (contain.rs): the workers of every run share this task.
    let next = match contain::contain("provenance", pass(&run, &namespace, &ctx, publisher))
        .instrument(span.clone())
        .await
    {
        Ok(next) => next,
        Err(error @ Error::Panicked { .. }) => {
            ctx.metrics
                .reconcile_errors
                .with_label_values(&[error.metric_label()])
                .inc();
            Next::RetryIn(contain::PANIC_RETRY)
        }
        Err(error) => {
            span.in_scope(|| warn!(error = %error, "provenance step failed; retrying"));
            ctx.metrics
                .reconcile_errors
                .with_label_values(&[error.metric_label()])
                .inc();
            Next::RetryIn(API_ERROR_RETRY)
        }
    };
    (key, buckets, next)
}

/// Drive a succeeded run's provenance as far as it goes now. Returns when to come back.
pub async fn pass(
    run: &TrainingRun,
    namespace: &str,
    ctx: &Context,
    publisher: &Publisher,
) -> Result<Next, Error> {
    let uid = run.uid().unwrap_or_default();
    if publisher.attached(&uid) {
        // Already attached by this process; the cache will catch up with the status.
        return Ok(Next::Done);
    }
    let mut current = run.status.clone().unwrap_or_default();
    let state = current
        .provenance
        .as_ref()
        .map_or(ProvenanceState::Pending, |p| p.state);
    // Records live in the controller's namespace, where tenants cannot write (record.rs).
    let records: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ctx.controller_namespace);
    let config_map = record::config_map_name(run);

    // Issue 14 (2): checked again before any registry request (the configuration may have
    // changed since the run started), and the rule decides whose credentials are used.
    let granted = repository_policy::grant(
        &ctx.config.provenance.repository_policy,
        namespace,
        &run.spec.output.repository,
    );
    let (credentials, refused) = match granted {
        Ok(grant) => (grant.credentials_secret, None),
        Err(message) => (None, Some(message)),
    };
    let found = record::existing(run, &records).await?;
    let signed = match (state, found) {
        _ if refused.is_some() => Err(Outcome::Failed {
            reason: repository_policy::NOT_ALLOWED.to_string(),
            message: refused.unwrap_or_default(),
        }),
        // Signed before a crash, maybe with the status not updated: reuse, never sign again, but
        // only a record that proves to be the controller's own for this run.
        (ProvenanceState::Pending | ProvenanceState::Signed, Some(found)) => {
            match steps::vet(run, &current, publisher, found) {
                Ok(record) => Ok((record, false)),
                Err(outcome) => {
                    if matches!(outcome, Outcome::RecordRejected { .. }) {
                        record::remove(&records, &config_map).await?;
                    }
                    Err(outcome)
                }
            }
        }
        (ProvenanceState::Pending, None) => steps::sign(
            run,
            &mut current,
            ctx,
            publisher,
            &records,
            credentials.as_deref(),
        )
        .await?
        .map(|record| (record, true)),
        // Someone deleted the persisted record: the envelope cannot be recovered, so the run is
        // signed anew (the only way forward), loudly.
        (ProvenanceState::Signed, None) => {
            warn!(
                config_map,
                "persisted provenance record is gone; signing again"
            );
            Err(Outcome::RecordLost)
        }
        _ => return Ok(Next::Done),
    };
    let outcome = match signed {
        Ok((record, new)) => {
            let attach = steps::attach(run, &record, publisher, credentials.as_deref()).await;
            Outcome::Signed {
                record,
                config_map,
                new,
                attach,
            }
        }
        Err(outcome) => outcome,
    };
    let attached = matches!(
        &outcome,
        Outcome::Signed {
            attach: Attach::Attached(_),
            ..
        }
    );
    let conclusion = conclude::conclude(run, current, outcome, &status::now());
    status::write_status(run, namespace, conclusion.status.clone(), ctx).await?;

    if attached {
        // Only once the status says so: a failed write must let the next pass retry.
        publisher.mark_attached(&uid);
    }
    if matches!(conclusion.next, Next::Done) {
        publisher.forget(&uid);
    }
    match conclusion.counted {
        Some(conclude::Counted::Attached) => {
            ctx.metrics
                .attestations
                .with_label_values(&["attached"])
                .inc();
            if let Some(done) = conclusion.status.completion_time.as_ref() {
                let lag = (Timestamp::now() - done.0)
                    .total(jiff::Unit::Second)
                    .unwrap_or(0.0)
                    .max(0.0);
                ctx.metrics.provenance_lag.observe(lag);
            }
        }
        Some(conclude::Counted::Failed) => {
            ctx.metrics
                .attestations
                .with_label_values(&["failed"])
                .inc();
        }
        None => {}
    }
    for (type_, reason, note) in &conclusion.events {
        info!(reason, "{note}");
        status::publish(ctx, run, *type_, reason, note).await;
    }
    if let Next::RetryIn(wait) = conclusion.next {
        info!(retry_in = ?wait, "provenance not finished yet; will retry");
    }
    Ok(conclusion.next)
}
