//! provenant: runs ML training on Kubernetes accelerator pools and attaches signed SLSA
//! provenance to the models it produces. The flow of a run (DESIGN.md):
//! submit ([`api`]) → execute → observe → resolve → attest → report. The controller
//! ([`controller`]) and the CLI share everything below it.

pub mod api;
pub mod cli;
pub mod client;
pub mod config;
pub mod controller;
pub mod crdgen;
pub mod engine;
pub mod execute;
pub mod hashing;
pub mod labels;
pub mod lineage;
pub mod local;
pub mod metrics;
pub mod names;
pub mod observe;
pub mod provenance;
pub mod reconcile;
pub mod repository_policy;
pub mod secrets;
pub mod server;
pub mod signing;
pub mod storage;
pub mod telemetry;
pub mod terminal;
pub mod verify;
