//! The provenance queue: succeeded runs that still owe provenance wait here for their own bounded
//! pool of workers. Resolving and attaching are registry I/O that can take seconds under load; done
//! inside a reconcile they would hold its slot, and runs whose pods just finished would wait behind
//! them before even being recorded. The reconciler only hands the run over ([`ProvenanceQueue::submit`])
//! and returns.
//!
//! One run is worked by one worker at a time. A step that must wait (backoff after a registry
//! error, signing key not loaded yet) sleeps outside the pool, then the run is worked again from the
//! controller's cache, so it always sees the latest object (deleted, changed status).

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::mpsc;
use tracing::{Instrument, info_span, warn};

use super::Context;
use crate::api::TrainingRun;

/// What a provenance step asks for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Nothing more to do until the run changes (attached, failed, or a status write that will
    /// bring the run back through the reconciler).
    Done,
    /// Work the run again after this long.
    RetryIn(Duration),
}

/// Pause after an error of the Kubernetes API during a provenance step (as for reconciles).
const API_ERROR_RETRY: Duration = Duration::from_secs(5);

/// Runs waiting for, or in, a provenance step.
pub struct ProvenanceQueue {
    tx: mpsc::UnboundedSender<ObjectRef<TrainingRun>>,
    /// Queued, in a step, or waiting to retry: such a run is not queued twice.
    active: Mutex<HashSet<ObjectRef<TrainingRun>>>,
}

/// The receiving end, consumed by [`work`].
pub struct Receiver(mpsc::UnboundedReceiver<ObjectRef<TrainingRun>>);

impl ProvenanceQueue {
    pub fn new() -> (Self, Receiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        let queue = ProvenanceQueue {
            tx,
            active: Mutex::new(HashSet::new()),
        };
        (queue, Receiver(rx))
    }

    /// Queue a run for its next provenance step, unless it is already queued, in a step or waiting
    /// to retry (that step will see the latest object anyway). Never blocks.
    pub fn submit(&self, run: &TrainingRun) {
        let key = ObjectRef::from_obj(run);
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        if active.insert(key.clone()) && self.tx.send(key.clone()).is_err() {
            // The workers are gone (shutting down): the next leader picks the run up from its list.
            active.remove(&key);
        }
    }

    fn finished(&self, key: &ObjectRef<TrainingRun>) {
        self.active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

/// Work the queue with at most `workers` steps at once until `halt` resolves; then let the steps
/// in progress finish (a dropped future, on a lost Lease, stops them at once instead).
pub async fn work(
    Receiver(mut rx): Receiver,
    ctx: Arc<Context>,
    runs: Store<TrainingRun>,
    workers: usize,
    halt: impl Future<Output = ()>,
) {
    let workers = workers.max(1);
    let mut ready: VecDeque<ObjectRef<TrainingRun>> = VecDeque::new();
    let mut steps = FuturesUnordered::new();
    let mut waiting = FuturesUnordered::new();
    tokio::pin!(halt);
    loop {
        while steps.len() < workers {
            let Some(key) = ready.pop_front() else { break };
            match runs.get(&key) {
                Some(run) => steps.push(step(run, ctx.clone(), key)),
                // Deleted meanwhile (its finalizer released): nothing left to do.
                None => ctx.queue.finished(&key),
            }
        }
        tokio::select! {
            () = &mut halt => break,
            Some(key) = rx.recv() => ready.push_back(key),
            Some((key, next)) = steps.next(), if !steps.is_empty() => match next {
                Next::Done => ctx.queue.finished(&key),
                Next::RetryIn(wait) => waiting.push(async move {
                    tokio::time::sleep(wait).await;
                    key
                }),
            },
            Some(key) = waiting.next(), if !waiting.is_empty() => ready.push_back(key),
        }
    }
    while steps.next().await.is_some() {}
}

/// One provenance step for the latest version of a run.
async fn step(
    run: Arc<TrainingRun>,
    ctx: Arc<Context>,
    key: ObjectRef<TrainingRun>,
) -> (ObjectRef<TrainingRun>, Next) {
    let namespace = run.namespace().unwrap_or_default();
    let span = info_span!("provenance", namespace = %namespace, run = %run.name_any());
    let status = run.status.clone().unwrap_or_default();
    // The run may have moved on since it was queued (attached, or provenance switched off).
    let Some(attestor) = ctx
        .attestor
        .as_deref()
        .filter(|_| super::decide::owes_provenance(&status, true))
    else {
        return (key, Next::Done);
    };
    let next = match super::provenance::attest_run(&run, &namespace, &ctx, attestor)
        .instrument(span.clone())
        .await
    {
        Ok(next) => next,
        Err(error) => {
            span.in_scope(|| warn!(error = %error, "provenance step failed; retrying"));
            ctx.metrics
                .reconcile_errors
                .with_label_values(&[error.metric_label()])
                .inc();
            Next::RetryIn(API_ERROR_RETRY)
        }
    };
    (key, next)
}
