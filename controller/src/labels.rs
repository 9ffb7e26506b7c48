//! Label, annotation, finalizer and environment names provenant writes, in one place.

/// Finalizer that keeps a finished run until its provenance is done.
pub const FINALIZER: &str = "provenant.dev/provenance";
/// Label on worker pods and the rendezvous Service: the run's name.
pub const RUN: &str = "provenant.dev/run";
/// Label on worker pods and the rendezvous Service: the run's UID (names are reused, UIDs are not).
pub const RUN_UID: &str = "provenant.dev/run-uid";
/// Label: the namespace of the run an object in the controller's namespace belongs to.
pub const RUN_NAMESPACE: &str = "provenant.dev/run-namespace";
/// Label: what a provenant object is (`provenance`: a run's persisted signed record).
pub const COMPONENT: &str = "provenant.dev/component";
/// Label on worker pods: the worker's rank.
pub const RANK: &str = "provenant.dev/rank";
/// Standard label naming the managing controller.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY`].
pub const MANAGER: &str = "provenant";

/// Name of the training container in every worker pod.
pub const TRAINER_CONTAINER: &str = "trainer";
/// Port of the rendezvous Service (PyTorch's default `MASTER_PORT`).
pub const RENDEZVOUS_PORT: i32 = 29500;

/// Environment given to every worker.
pub mod env {
    pub const RANK: &str = "RANK";
    pub const WORLD_SIZE: &str = "WORLD_SIZE";
    pub const MASTER_ADDR: &str = "MASTER_ADDR";
    pub const MASTER_PORT: &str = "MASTER_PORT";
    pub const SEED: &str = "PROVENANT_SEED";
    pub const HYPERPARAMETERS: &str = "PROVENANT_HYPERPARAMETERS";
    /// Where the workload may push its model (the run's `spec.output.repository`).
    pub const OUTPUT_REPOSITORY: &str = "PROVENANT_OUTPUT_REPOSITORY";
    pub const RUN_NAME: &str = "PROVENANT_RUN_NAME";
    /// Where to write the workload report (the termination message file).
    pub const REPORT_PATH: &str = "PROVENANT_REPORT_PATH";
}

/// Default termination message path, the workload's report channel.
pub const REPORT_PATH: &str = "/dev/termination-log";
