//! The provenance queue: succeeded runs that still owe provenance wait here for the publish
//! workers ([`super::publish::work`]). Resolving and attaching are registry I/O that can take
//! seconds under load; done inside a reconcile they would hold its slot, and runs whose pods just
//! finished would wait behind them before even being recorded. The reconciler only hands the run
//! over ([`ProvenanceQueue::submit`]) and returns.

use std::collections::HashSet;
use std::sync::Mutex;

use kube::runtime::reflector::ObjectRef;
use tokio::sync::mpsc;

use crate::api::TrainingRun;

/// Runs waiting for, or in, a provenance step.
pub struct ProvenanceQueue {
    tx: mpsc::UnboundedSender<ObjectRef<TrainingRun>>,
    /// Queued, in a step, or waiting to retry: such a run is not queued twice.
    active: Mutex<HashSet<ObjectRef<TrainingRun>>>,
}

/// The receiving end, consumed by [`super::publish::work`].
pub struct Receiver(pub(super) mpsc::UnboundedReceiver<ObjectRef<TrainingRun>>);

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

    /// The run left the publish workers (done, or deleted): it may be queued again.
    pub(super) fn finished(&self, key: &ObjectRef<TrainingRun>) {
        self.active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}
